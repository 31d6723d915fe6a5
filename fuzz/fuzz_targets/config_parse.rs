//! `trellis_config::parse` on any UTF-8 text: it returns a configuration or the list of problems, never
//! panics; every problem names the file (every line of the error as `trellis check` prints it starts
//! with `FILE:`), lines are within the text and in file order; and parsing is deterministic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::{fuzz_target, Corpus};
use trellis_config::{parse, ConfigError};

const FILE: &str = "fuzz.toml";

fuzz_target!(|data: &[u8]| -> Corpus {
    let Ok(text) = std::str::from_utf8(data) else {
        return Corpus::Reject;
    };
    let path = Path::new(FILE);
    match parse(text, path) {
        Ok(config) => {
            assert_eq!(config.source, path);
            let again = parse(text, path).expect("the same text parsed once");
            assert!(again == config, "parse is not deterministic");
        }
        Err(ConfigError::Invalid(diagnostics)) => {
            assert!(!diagnostics.is_empty(), "an error without a diagnostic");
            let lines = text.matches('\n').count() + 1;
            for d in &diagnostics {
                assert_eq!(d.file, FILE);
                if let Some(line) = d.line {
                    assert!((1..=lines).contains(&line), "line {line} of {lines}: {d}");
                }
            }
            assert!(
                diagnostics
                    .windows(2)
                    .all(|w| w[0].line.unwrap_or(0) <= w[1].line.unwrap_or(0)),
                "diagnostics out of file order"
            );
            match parse(text, path) {
                Err(ConfigError::Invalid(again)) => {
                    assert!(again == diagnostics, "parse is not deterministic")
                }
                other => panic!("the same text parsed differently: {other:?}"),
            }
            let shown = ConfigError::Invalid(diagnostics).to_string();
            for line in shown.lines() {
                assert!(
                    line.starts_with("fuzz.toml:"),
                    "a line of the error does not name the file: {line:?}"
                );
            }
        }
        Err(e) => panic!("parse returned an I/O error: {e}"),
    }
    Corpus::Keep
});
