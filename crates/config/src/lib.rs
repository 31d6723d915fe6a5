//! trellis-config: the configuration file → raw serde structs → validated, immutable [`Config`].
//!
//! One entry point ([`load`] / [`parse`]) is shared by `trellis check`, start-up and reload, so the three can
//! never disagree about what a valid file is.
//!
//! Pipeline: `toml_edit` parses the text keeping spans; `spans` indexes every key path's location;
//! `sections` deserializes each section and array element on its own (so one bad unit does not hide the
//! others); `validate` turns raw structs into the model, collecting every problem.
#![forbid(unsafe_code)]

mod cron;
mod diag;
mod error;
mod jwt;
mod keys;
mod model;
mod raw;
mod redirect;
mod sections;
mod spans;
mod summary;
mod tls;
mod transform;
mod validate;

pub use cron::CronFields;
pub use error::{ConfigError, Diagnostic};
pub use jwt::{JwtKey, JwtKeys};
pub use keys::{known_keys, KeyKind};
pub use model::*;
pub use redirect::{Piece, RedirectPort, RedirectProtocol, Template};
pub use tls::{certificates, TlsMaterial};
pub use transform::HeaderEdits;

use std::path::Path;

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Validates configuration text; `path` names the file in diagnostics and resolves relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    parse_as(text, path, None)
}

/// Validates the fleet's shared configuration `text` as node `node` (a node file, with `[fleet]`) serves
/// it: the node's `[admin]`, `[access_log]`, `[limits]` and `[fleet]` apply, and `text` may not have
/// them. `name` names the text in diagnostics; relative paths resolve from it, so give a path in the node
/// file's directory.
pub fn parse_shared(text: &str, name: &Path, node: &Config) -> Result<Config, ConfigError> {
    parse_as(text, name, Some(node))
}

fn parse_as(text: &str, path: &Path, node: Option<&Config>) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let doc = match toml_edit::ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            // A syntax error stops the parser, so it is the only diagnostic there can be.
            let mut d = diag::Diags::new(file, None);
            d.syntax(text, &e);
            return Err(ConfigError::Invalid(d.into_sorted()));
        }
    };
    let mut d = diag::Diags::new(file, Some(text));
    let raw = sections::split(doc.into_table(), &mut d);
    let config = validate::validate(raw, path, &mut d, node);
    if d.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(d.into_sorted()))
    }
}
