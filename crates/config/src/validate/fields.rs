//! Field-level checks shared by every section: each one reports into [`Diags`] and returns a usable value
//! (the default on error), so validation carries on and finds the next problem. A file with any error is
//! rejected as a whole, so these stand-in values never escape.

use std::collections::HashMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diag::Diags;
use crate::model::HostPattern;

pub(crate) fn missing(d: &mut Diags, path: &str) {
    d.err(path, "missing required key");
}

/// A required string; reports it when absent.
pub(crate) fn required<'r>(d: &mut Diags, path: &str, raw: &'r Option<String>) -> &'r str {
    match raw {
        Some(s) => s,
        None => {
            missing(d, path);
            ""
        }
    }
}

/// A name: required, non-empty, no surrounding whitespace, at most 100 characters.
pub(crate) fn name(d: &mut Diags, path: &str, raw: &Option<String>) -> String {
    let s = required(d, path, raw);
    if raw.is_some()
        && (s.is_empty()
            || s.trim() != s
            || s.chars().count() > 100
            || s.chars().any(char::is_control))
    {
        d.err(
            path,
            format!("{s:?} is not a valid name (1..=100 characters, no surrounding spaces)"),
        );
    }
    s.to_string()
}

pub(crate) fn int_in(
    d: &mut Diags,
    path: &str,
    raw: Option<i64>,
    default: i64,
    lo: i64,
    hi: i64,
) -> i64 {
    match raw {
        None => default,
        Some(v) if (lo..=hi).contains(&v) => v,
        Some(v) => {
            d.err(path, format!("{v} is outside {lo}..={hi}"));
            default
        }
    }
}

/// A required integer in `lo..=hi`.
pub(crate) fn required_int_in(
    d: &mut Diags,
    path: &str,
    raw: Option<i64>,
    lo: i64,
    hi: i64,
) -> i64 {
    if raw.is_none() {
        missing(d, path);
    }
    int_in(d, path, raw, lo, lo, hi)
}

/// Integers that fit the model's narrower types after a range check.
pub(crate) fn to_u16(v: i64) -> u16 {
    u16::try_from(v).unwrap_or(0)
}

pub(crate) fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

pub(crate) fn duration(
    d: &mut Diags,
    path: &str,
    raw: &Option<String>,
    default: Duration,
) -> Duration {
    let Some(text) = raw else { return default };
    match humantime::parse_duration(text.trim()) {
        Ok(v) => v,
        Err(e) => {
            d.err(
                path,
                format!("{text:?} is not a duration ({e}); write e.g. \"500ms\", \"5s\", \"2m\""),
            );
            default
        }
    }
}

pub(crate) fn duration_in(
    d: &mut Diags,
    path: &str,
    raw: &Option<String>,
    default: Duration,
    lo: Duration,
    hi: Duration,
) -> Duration {
    let v = duration(d, path, raw, default);
    if raw.is_some() && !(lo..=hi).contains(&v) {
        d.err(
            path,
            format!(
                "{} is outside {}..={}",
                fmt_duration(v),
                fmt_duration(lo),
                fmt_duration(hi)
            ),
        );
        return default;
    }
    v
}

/// A duration that must not be zero (timeouts).
pub(crate) fn positive_duration(
    d: &mut Diags,
    path: &str,
    raw: &Option<String>,
    default: Duration,
) -> Duration {
    let v = duration(d, path, raw, default);
    if v.is_zero() {
        d.err(path, "must be greater than 0s");
        return default;
    }
    v
}

pub(crate) fn fmt_duration(v: Duration) -> String {
    if v.is_zero() {
        "0s".to_string()
    } else {
        humantime::format_duration(v).to_string()
    }
}

/// One of a fixed set of lower-case words.
pub(crate) fn choice<T: Copy>(
    d: &mut Diags,
    path: &str,
    raw: &Option<String>,
    default: T,
    table: &[(&str, T)],
) -> T {
    let Some(text) = raw else { return default };
    if let Some((_, v)) = table.iter().find(|(w, _)| w == text) {
        return *v;
    }
    let names: Vec<String> = table.iter().map(|(w, _)| format!("{w:?}")).collect();
    d.err(path, format!("{text:?} is not one of {}", names.join(", ")));
    default
}

/// Remembers names (or any key) seen in a scope and reports the second use of one.
pub(crate) struct Unique<K> {
    seen: HashMap<K, String>,
}

impl<K: std::hash::Hash + Eq> Unique<K> {
    pub(crate) fn new() -> Self {
        Unique {
            seen: HashMap::new(),
        }
    }

    /// Records `key` as used by `owner`; on a repeat reports `message(first_owner)` at `path`.
    pub(crate) fn check(
        &mut self,
        d: &mut Diags,
        path: &str,
        key: K,
        owner: impl Display,
        message: impl Fn(&str) -> String,
    ) {
        match self.seen.get(&key) {
            Some(first) => d.err(path, message(first)),
            None => {
                self.seen.insert(key, owner.to_string());
            }
        }
    }
}

/// Relative paths name files beside the configuration file, so a config works from any working directory.
pub(crate) fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// A non-empty path string, resolved.
pub(crate) fn file_path(d: &mut Diags, path: &str, raw: &str, base: &Path) -> PathBuf {
    if raw.trim().is_empty() {
        d.err(path, "must not be empty");
    }
    resolve(base, raw)
}

/// `shop.internal`, `*.shop.internal` or `*`; lower-cased.
pub(crate) fn host_pattern(raw: &str) -> Result<HostPattern, String> {
    let host = raw.to_ascii_lowercase();
    if host == "*" {
        return Ok(HostPattern::Any);
    }
    if let Some(suffix) = host.strip_prefix("*.") {
        return if dns_name(suffix) {
            Ok(HostPattern::Suffix(format!(".{suffix}")))
        } else {
            Err(format!("{raw:?} is not a valid host pattern (write \"name.example\", \"*.example\" or \"*\")"))
        };
    }
    if dns_name(&host) {
        Ok(HostPattern::Exact(host))
    } else {
        Err(format!(
            "{raw:?} is not a valid host pattern (write \"name.example\", \"*.example\" or \"*\")"
        ))
    }
}

/// Letters, digits, `-` and `_` in dot-separated labels of 1..=63 characters, at most 253 in all.
pub(crate) fn dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// An HTTP header field name: an RFC 9110 token.
pub(crate) fn header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            host_pattern("Shop.Internal"),
            Ok(HostPattern::Exact("shop.internal".into()))
        );
        assert_eq!(
            host_pattern("*.shop.internal"),
            Ok(HostPattern::Suffix(".shop.internal".into()))
        );
        assert_eq!(host_pattern("*"), Ok(HostPattern::Any));
        for bad in [
            "",
            "a..b",
            "-a.b",
            "a b",
            "*.",
            "**",
            "a.*.b",
            "shop.internal:80",
            "x.",
            "*.*",
        ] {
            assert!(host_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_names() {
        assert!(header_name("x-canary"));
        assert!(!header_name("x canary"));
        assert!(!header_name("x:y"));
        assert!(!header_name(""));
    }
}
