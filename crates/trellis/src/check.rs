//! `trellis check`: the same validation as start-up and reload, with every error printed.

use std::path::Path;
use std::process::ExitCode;

use trellis_config::Config;

pub fn check(path: &Path) -> ExitCode {
    let config = match trellis_config::load(path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    // The `ca` files of https target groups are read and parsed when their TLS clients are built, as at
    // start and reload.
    if let Err(error) = trellis_proxy::check_target_tls(&config) {
        eprintln!("{error}");
        return ExitCode::FAILURE;
    }
    for name in unverified(&config) {
        eprintln!("warning: target group {name}: certificate verification is OFF (insecure_skip_verify = true)");
    }
    println!("{}", config.summary());
    ExitCode::SUCCESS
}

/// The target groups whose targets' certificates are not verified (`insecure_skip_verify = true`).
pub fn unverified(config: &Config) -> impl Iterator<Item = &str> {
    config
        .target_groups
        .iter()
        .filter(|tg| tg.tls.as_ref().is_some_and(|tls| !tls.verify))
        .map(|tg| tg.name.as_str())
}
