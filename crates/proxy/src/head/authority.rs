//! The request's authority (`Host`, `:authority`, an absolute-form URI's host): checked and put in one
//! form, the one trellis routes on and the target receives.
//!
//! Accepted: a DNS-style name (letters, digits, `-`, `_`, dots between non-empty labels) or an IPv4
//! address, or an IPv6 literal in brackets; then optionally `:` and a port of 1 to 5 digits up to 65535.
//! The form: the name in lower case without a trailing dot, the port as sent. Anything else — userinfo
//! (`user@host`), percent-escapes, spaces, empty labels, an empty port, a bad IPv6 literal — is refused:
//! RFC 9112 §3.2 answers an invalid Host with `400`.

use std::borrow::Cow;
use std::net::Ipv6Addr;

/// Longest host name (RFC 1035), trailing dot excluded.
const MAX_NAME: usize = 253;

/// `value` in canonical form (borrowed when it already is), or `None` when it is not a valid authority.
pub fn canonical(value: &[u8]) -> Option<Cow<'_, [u8]>> {
    let (host, port) = split(value)?;
    if let Some(port) = port {
        if port.is_empty()
            || port.len() > 5
            || !port.iter().all(u8::is_ascii_digit)
            || port.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) > 65535
        {
            return None;
        }
    }
    if host.first() == Some(&b'[') {
        let inner = std::str::from_utf8(&host[1..host.len() - 1]).ok()?;
        inner.parse::<Ipv6Addr>().ok()?;
        return Some(lower(value, host.len(), false));
    }
    let name = host.strip_suffix(b".").unwrap_or(host);
    if name.is_empty() || name.len() > MAX_NAME {
        return None;
    }
    let labels_ok = name.split(|&c| c == b'.').all(|label| {
        !label.is_empty()
            && label
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    });
    if !labels_ok {
        return None;
    }
    Some(lower(value, host.len(), name.len() < host.len()))
}

/// `[v6]:port` → (`[v6]`, `port`); `name:port` → (`name`, `port`); no `:` → (`value`, None).
fn split(value: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    if value.first() == Some(&b'[') {
        let end = value.iter().position(|&c| c == b']')?;
        let (host, rest) = value.split_at(end + 1);
        return match rest {
            [] => Some((host, None)),
            [b':', port @ ..] => Some((host, Some(port))),
            _ => None,
        };
    }
    match value.iter().position(|&c| c == b':') {
        Some(colon) => Some((&value[..colon], Some(&value[colon + 1..]))),
        None => Some((value, None)),
    }
}

/// `value` with its host (the first `host_len` bytes) in lower case and, when `drop_dot`, the dot
/// that ends the host removed. Borrowed when nothing changes.
fn lower(value: &[u8], host_len: usize, drop_dot: bool) -> Cow<'_, [u8]> {
    if !drop_dot && !value[..host_len].iter().any(u8::is_ascii_uppercase) {
        return Cow::Borrowed(value);
    }
    let mut out = Vec::with_capacity(value.len());
    let name_len = if drop_dot { host_len - 1 } else { host_len };
    out.extend(value[..name_len].iter().map(u8::to_ascii_lowercase));
    out.extend_from_slice(&value[host_len..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(v: &str) -> Option<String> {
        canonical(v.as_bytes()).map(|c| String::from_utf8(c.into_owned()).unwrap())
    }

    #[test]
    fn valid_authorities_in_their_one_form() {
        assert_eq!(c("shop.internal").as_deref(), Some("shop.internal"));
        assert!(matches!(canonical(b"a.test:8080"), Some(Cow::Borrowed(_))));
        assert_eq!(
            c("Shop.Internal:8080").as_deref(),
            Some("shop.internal:8080")
        );
        assert_eq!(c("shop.internal.").as_deref(), Some("shop.internal"));
        assert_eq!(c("shop.internal.:80").as_deref(), Some("shop.internal:80"));
        assert_eq!(c("127.0.0.1:9").as_deref(), Some("127.0.0.1:9"));
        assert_eq!(c("[::1]:80").as_deref(), Some("[::1]:80"));
        assert_eq!(c("[2001:DB8::1]").as_deref(), Some("[2001:db8::1]"));
        assert_eq!(c("my_host-1").as_deref(), Some("my_host-1"));
    }

    #[test]
    fn invalid_authorities_are_refused() {
        for bad in [
            "",
            ".",
            ":80",
            "a..b",
            ".a",
            "a b",
            "user@a.test",
            "a.test:",
            "a.test:99999",
            "a.test:123456",
            "a.test:8x",
            "a.test:80:80",
            "a%2etest",
            "a/b",
            "a\\b",
            "[::1",
            "[zz]",
            "[::1]x",
            "a.test,b.test",
            "a.test\t",
        ] {
            assert_eq!(c(bad), None, "{bad:?}");
        }
        assert_eq!(c(&"a".repeat(254)), None);
        assert!(c(&"a".repeat(253)).is_some());
    }

    #[test]
    fn one_host_one_form() {
        assert_eq!(c("A.test:80"), c("a.test.:80"));
        assert_ne!(c("a.test"), c("a.test:80"));
    }
}
