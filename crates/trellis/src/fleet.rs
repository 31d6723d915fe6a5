//! `trellis fleet`: the fleet's shared configuration in etcd.

use std::path::Path;
use std::process::ExitCode;

/// `trellis fleet apply FILE`: validates FILE as `trellis check` does (and refuses node-local sections,
/// which belong in each node's file), then writes it as the fleet's configuration with one
/// compare-and-swap on the revision it read. Prints the new revision.
pub fn apply(file: &Path, endpoints: &[String], prefix: &str) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    // What a node brings itself (admin, access log, limits) is default here: the file must not have it.
    let node = match trellis_config::parse("", file) {
        Ok(node) => node,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let config = match trellis_config::parse_shared(&text, file, &node) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = trellis_proxy::check_target_tls(&config) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    let name = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let applied = trellis_fleet::Applied { name, text };
    let result = crate::runtime(Some(1))
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(async {
                let store = trellis_fleet::Store::connect(endpoints, prefix).await?;
                let current = store.load().await?;
                store.apply(&applied, current.config_revision).await
            })
            .map_err(|e| e.to_string())
        });
    match result {
        Ok(revision) => {
            println!(
                "applied {} to {prefix} at revision {revision}: {}",
                file.display(),
                config.summary()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("trellis: {e}");
            ExitCode::FAILURE
        }
    }
}
