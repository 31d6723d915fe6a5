//! `trellis check`: the same validation as start-up and reload, with every error printed.

use std::path::Path;
use std::process::ExitCode;

pub fn check(path: &Path) -> ExitCode {
    match trellis_config::load(path) {
        Ok(config) => {
            println!("{}", config.summary());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}
