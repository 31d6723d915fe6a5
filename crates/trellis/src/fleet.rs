//! `trellis fleet`: the fleet's shared configuration in etcd, and who serves it.

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

/// `trellis fleet status`: the applied configuration, every live node with the revision it serves and
/// its last contact, and each scaling group's owner.
pub fn status(endpoints: &[String], prefix: &str, json: bool) -> ExitCode {
    let result = crate::runtime(Some(1))
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(async {
                let store = trellis_fleet::Store::connect(endpoints, prefix).await?;
                Ok::<_, trellis_fleet::FleetError>((store.load().await?, store.nodes().await?))
            })
            .map_err(|e| e.to_string())
        });
    let (loaded, nodes) = match result {
        Ok(found) => found,
        Err(e) => {
            eprintln!("trellis: {e}");
            return ExitCode::FAILURE;
        }
    };
    let now = trellis_fleet::now();
    if json {
        let value = serde_json::json!({
            "prefix": prefix,
            "revision": loaded.revision,
            "truth_revision": loaded.truth_revision,
            "config": loaded.config.as_ref().map(|c| serde_json::json!({
                "name": c.name,
                "revision": loaded.config_revision,
            })),
            "registrations": loaded.registrations.len(),
            "nodes": nodes.iter().map(|n| serde_json::json!({
                "node": n.node,
                "revision": n.revision,
                "stale": n.stale,
                "last_contact_seconds": now.saturating_sub(n.contact),
            })).collect::<Vec<_>>(),
            // Scaling groups are not run in fleet mode yet.
            "owners": {},
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    match &loaded.config {
        Some(c) => println!(
            "fleet {prefix}: {} applied at revision {}; {} registered target{}; etcd at revision {}",
            c.name,
            loaded.config_revision,
            loaded.registrations.len(),
            if loaded.registrations.len() == 1 { "" } else { "s" },
            loaded.revision
        ),
        None => println!(
            "fleet {prefix}: no configuration applied yet (trellis fleet apply FILE); etcd at revision {}",
            loaded.revision
        ),
    }
    println!(
        "\n{:<24} {:>10}  {:<14} NOTE",
        "NODE", "REVISION", "LAST CONTACT"
    );
    for n in &nodes {
        let behind = if n.revision < loaded.truth_revision {
            "behind"
        } else {
            ""
        };
        let note = if n.stale {
            "serving its disk copy"
        } else {
            behind
        };
        println!(
            "{:<24} {:>10}  {:<14} {note}",
            n.node,
            n.revision,
            format!("{}s ago", now.saturating_sub(n.contact))
        );
    }
    if nodes.is_empty() {
        println!("(no node is running)");
    }
    println!("\nscaling groups: none (not run in fleet mode yet)");
    ExitCode::SUCCESS
}
