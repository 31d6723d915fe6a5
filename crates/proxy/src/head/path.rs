//! Path normalisation: the one form of a request path that rules, auth policies, rate limits and the
//! target all see, so no encoding of a path can match differently here than it is served there.
//!
//! What is done (RFC 3986 §6.2.2, as Envoy's `normalize_path` + `merge_slashes`):
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded: `/%70rivate` is
//!   `/private`; other percent-encodings are kept, with upper-case hex digits;
//! - repeated slashes are merged: `//private//x` is `/private/x`;
//! - dot segments are removed: `/./private`, `/static/../private` are `/private`; `..` never climbs
//!   above the root.
//!
//! What is refused (`400`), because some backend would read it as something else than it looks:
//! - `%2F` and `%5C` (an encoded `/` or `\`): many servers decode them into separators, which would
//!   turn one segment into several after the decision was made; keeping them would let
//!   `/public%2F..%2Fprivate` pass a `/private` rule;
//! - a raw `\` (IIS, Windows and some frameworks take it for `/`), `%00` (a C backend ends the path
//!   there), a `%` not followed by two hex digits;
//! - a dot segment with parameters (`..;x`, `.;x`): Tomcat and Spring read `/a/..;/b` as `/b`.

use std::fmt;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `%2F` or `%5C`: an encoded separator.
    EncodedSeparator,
    /// A raw `\`.
    Backslash,
    /// `%00`.
    Nul,
    /// `..;x` or `.;x`.
    DotSegmentParameter,
    /// Not `/...` (origin form).
    NotAbsolute,
}

impl PathError {
    pub fn reason(self) -> &'static str {
        match self {
            PathError::BadEscape => "the path has a % not followed by two hex digits",
            PathError::EncodedSeparator => "the path has an encoded / or \\ (%2F, %5C)",
            PathError::Backslash => "the path has a \\",
            PathError::Nul => "the path has an encoded NUL (%00)",
            PathError::DotSegmentParameter => "the path has a dot segment with parameters (..;)",
            PathError::NotAbsolute => "the path does not start with /",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// The normalised form of `path` (without its query), or `None` when `path` already is normalised
/// (the common case, which allocates nothing).
pub fn normalize(path: &str) -> Result<Option<String>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(bytes)? {
        return Ok(None);
    }
    let decoded = decode_unreserved(bytes)?;
    remove_dot_segments(&decoded).map(Some)
}

/// Whether `path` needs no change; refuses what can be refused without decoding.
fn is_normal(path: &[u8]) -> Result<bool, PathError> {
    let mut normal = true;
    for (i, &c) in path.iter().enumerate() {
        match c {
            b'\\' => return Err(PathError::Backslash),
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    path.get(i + 1).copied().and_then(hex_value),
                    path.get(i + 2).copied().and_then(hex_value),
                ) else {
                    return Err(PathError::BadEscape);
                };
                match hi << 4 | lo {
                    0 => return Err(PathError::Nul),
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    b if is_unreserved(b) => normal = false,
                    // Kept as it is, but with upper-case digits.
                    _ if path[i + 1].is_ascii_lowercase() || path[i + 2].is_ascii_lowercase() => {
                        normal = false
                    }
                    _ => {}
                }
            }
            b'/' if i > 0 && path[i - 1] == b'/' => normal = false,
            b'.' if path[i - 1] == b'/' => {
                let rest = &path[i..];
                let segment = &rest[..rest.iter().position(|&c| c == b'/').unwrap_or(rest.len())];
                if is_dot_segment(segment)? {
                    normal = false;
                }
            }
            _ => {}
        }
    }
    Ok(normal)
}

/// `.` or `..` (a dot segment); refuses one with parameters.
fn is_dot_segment(segment: &[u8]) -> Result<bool, PathError> {
    let name = match segment.iter().position(|&c| c == b';') {
        Some(semi) => {
            let name = &segment[..semi];
            if name == b"." || name == b".." {
                return Err(PathError::DotSegmentParameter);
            }
            name
        }
        None => segment,
    };
    Ok(name == b"." || name == b"..")
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Decodes escapes of unreserved characters; keeps the others with upper-case digits.
fn decode_unreserved(path: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let c = path[i];
        if c == b'\\' {
            return Err(PathError::Backslash);
        }
        if c != b'%' {
            out.push(c);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            path.get(i + 1).copied().and_then(hex_value),
            path.get(i + 2).copied().and_then(hex_value),
        ) else {
            return Err(PathError::BadEscape);
        };
        let byte = hi << 4 | lo;
        match byte {
            0 => return Err(PathError::Nul),
            b'/' | b'\\' => return Err(PathError::EncodedSeparator),
            b if is_unreserved(b) => out.push(b),
            b => out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]),
        }
        i += 3;
    }
    Ok(out)
}

/// Merges slashes and removes dot segments (RFC 3986 §5.2.4, clamped at the root).
fn remove_dot_segments(path: &[u8]) -> Result<String, PathError> {
    let mut segments: Vec<&[u8]> = Vec::new();
    // Whether the path ends in a directory: a trailing `/`, or a last segment that is `.` or `..`.
    let mut directory = false;
    for segment in path.split(|&c| c == b'/').skip(1) {
        directory = true;
        // Decoding may have made one (`%2e%2e;`); refused like a raw one.
        is_dot_segment(segment)?;
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => {
                segments.push(s);
                directory = false;
            }
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if directory || segments.is_empty() {
        out.push(b'/');
    }
    // Only ASCII was changed and whole UTF-8 sequences were kept, so this cannot fail; the input was
    // a `&str` and escapes decode to ASCII only.
    Ok(String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// The path as servlet containers (Tomcat, Jetty, Spring) match it: `/a;x=1/b;y` is `/a/b`. `None`
/// when the path has no parameters. Rules and deny statements match this view too, so a `;` cannot
/// take a request past them to a target that ignores parameters.
pub fn without_parameters(path: &str) -> Option<String> {
    if !path.contains(';') {
        return None;
    }
    let segments: Vec<&str> = path
        .split('/')
        .map(|segment| segment.split(';').next().unwrap_or(""))
        .collect();
    Some(segments.join("/"))
}

/// Whether `path` (already normalised) is in normal form: what the fuzz target and property tests check.
#[cfg(any(test, feature = "fuzzing"))]
pub fn is_normalised(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') || b.windows(2).any(|w| w == b"//") {
        return false;
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let byte = match (
                b.get(i + 1).copied().and_then(hex_value),
                b.get(i + 2).copied().and_then(hex_value),
            ) {
                (Some(hi), Some(lo)) => hi << 4 | lo,
                _ => return false,
            };
            if is_unreserved(byte) || b[i + 1].is_ascii_lowercase() || b[i + 2].is_ascii_lowercase()
            {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn norm(p: &str) -> Result<String, PathError> {
        normalize(p).map(|n| n.unwrap_or_else(|| p.to_string()))
    }

    #[test]
    fn the_variants_of_one_path_are_one_path() {
        for variant in [
            "/private/x",
            "/%70rivate/x",
            "/%70%72%69%76%61%74%65/x",
            "//private/x",
            "/private//x",
            "///private///x",
            "/./private/x",
            "/private/./x",
            "/static/../private/x",
            "/static/%2e%2e/private/x",
            "/static/%2E%2E/private/x",
            "/static/.%2e/private/x",
            "/../private/x",
            "/../../private/x",
            "/a/b/../../private/x",
            "/%2e/private/x",
        ] {
            assert_eq!(norm(variant).as_deref(), Ok("/private/x"), "{variant}");
        }
    }

    #[test]
    fn directories_keep_their_trailing_slash() {
        assert_eq!(norm("/a/").as_deref(), Ok("/a/"));
        assert_eq!(norm("/a/.").as_deref(), Ok("/a/"));
        assert_eq!(norm("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(norm("/..").as_deref(), Ok("/"));
        assert_eq!(norm("/").as_deref(), Ok("/"));
        assert_eq!(norm("//").as_deref(), Ok("/"));
        assert_eq!(normalize("/a/b"), Ok(None), "unchanged: no allocation");
        assert_eq!(
            normalize("/a/.b/..c/"),
            Ok(None),
            "dots inside names are names"
        );
    }

    #[test]
    fn other_escapes_stay_with_upper_case_digits() {
        assert_eq!(norm("/a%20b").as_deref(), Ok("/a%20b"));
        assert_eq!(norm("/a%3fb").as_deref(), Ok("/a%3Fb"));
        assert_eq!(norm("/%25%32%65").as_deref(), Ok("/%252e"));
        assert_eq!(norm("/caf%c3%a9").as_deref(), Ok("/caf%C3%A9"));
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        assert_eq!(norm("/a%2fb"), Err(PathError::EncodedSeparator));
        assert_eq!(norm("/a%2F..%2Fprivate"), Err(PathError::EncodedSeparator));
        assert_eq!(norm("/a%5cb"), Err(PathError::EncodedSeparator));
        assert_eq!(norm("/a\\..\\private"), Err(PathError::Backslash));
        assert_eq!(norm("/a%00.html"), Err(PathError::Nul));
        assert_eq!(norm("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(norm("/a%4"), Err(PathError::BadEscape));
        assert_eq!(
            norm("/static/..;/private"),
            Err(PathError::DotSegmentParameter)
        );
        assert_eq!(
            norm("/static/.;x/private"),
            Err(PathError::DotSegmentParameter)
        );
        assert_eq!(
            norm("/static/%2e%2e;/private"),
            Err(PathError::DotSegmentParameter)
        );
        assert_eq!(norm("*"), Err(PathError::NotAbsolute));
        assert_eq!(
            norm("/a;b/c").as_deref(),
            Ok("/a;b/c"),
            "parameters of names stay"
        );
    }

    proptest! {
        #[test]
        fn normalising_is_idempotent_and_reaches_normal_form(
            p in "/[a-zA-Z0-9./%;_~-]{0,40}"
        ) {
            if let Ok(once) = norm(&p) {
                prop_assert!(is_normalised(&once), "{p:?} -> {once:?}");
                prop_assert_eq!(norm(&once), Ok(once.clone()));
                prop_assert_eq!(normalize(&once), Ok(None));
            }
        }

        #[test]
        fn escapes_of_anything(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            let p: String = bytes.iter().map(|b| format!("/%{b:02x}")).collect::<String>() + "/x";
            if let Ok(once) = norm(&p) {
                prop_assert!(is_normalised(&once), "{p:?} -> {once:?}");
                prop_assert_eq!(norm(&once), Ok(once.clone()));
            }
        }
    }
}
