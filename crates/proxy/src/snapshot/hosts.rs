//! Host demultiplexing: which service on a port answers a request, by its Host (or `:authority`).

use std::collections::HashMap;

use trellis_config::HostPattern;

/// Host name → index of a service, built once per snapshot for one port.
#[derive(Debug, Default)]
pub struct HostTable {
    exact: HashMap<Box<str>, usize>,
    /// `.shop.internal` suffixes, longest first so the most specific wildcard wins.
    suffixes: Vec<(Box<str>, usize)>,
    any: Option<usize>,
}

impl HostTable {
    /// Adds a service's host patterns; the first service to claim a pattern keeps it.
    pub fn add(&mut self, patterns: &[HostPattern], service: usize) {
        for p in patterns {
            match p {
                HostPattern::Exact(h) => {
                    self.exact.entry(h.as_str().into()).or_insert(service);
                }
                HostPattern::Suffix(s) => {
                    if !self.suffixes.iter().any(|(x, _)| **x == **s) {
                        self.suffixes.push((s.as_str().into(), service));
                    }
                }
                HostPattern::Any => {
                    self.any.get_or_insert(service);
                }
            }
        }
        self.suffixes
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
    }

    /// The service for a raw Host value: port stripped, case-insensitive; exact, then wildcard, then `*`.
    pub fn lookup(&self, host: Option<&[u8]>) -> Option<usize> {
        let Some(host) = host.map(strip_port) else {
            return self.any;
        };
        // Host names are short; fold case on the stack to avoid an allocation per request.
        let mut buf = [0u8; 256];
        let host = if host.len() <= buf.len() {
            let b = &mut buf[..host.len()];
            b.copy_from_slice(host);
            b.make_ascii_lowercase();
            b.strip_suffix(b".").unwrap_or(b)
        } else {
            return self.any;
        };
        let Ok(host) = std::str::from_utf8(host) else {
            return self.any;
        };
        if let Some(&i) = self.exact.get(host) {
            return Some(i);
        }
        for (suffix, i) in &self.suffixes {
            if host.len() > suffix.len() && host.ends_with(&**suffix) {
                return Some(*i);
            }
        }
        self.any
    }
}

/// `shop.internal:8080` → `shop.internal`; `[::1]:80` → `[::1]`.
fn strip_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&c| c == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().rposition(|&c| c == b':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> HostTable {
        let mut t = HostTable::default();
        t.add(
            &[
                HostPattern::Exact("shop.internal".into()),
                HostPattern::Suffix(".shop.internal".into()),
            ],
            0,
        );
        t.add(&[HostPattern::Exact("api.shop.internal".into())], 1);
        t.add(&[HostPattern::Suffix(".deep.shop.internal".into())], 2);
        t
    }

    #[test]
    fn exact_then_wildcard_then_any() {
        let mut t = table();
        assert_eq!(t.lookup(Some(b"shop.internal")), Some(0));
        assert_eq!(t.lookup(Some(b"API.Shop.Internal:8080")), Some(1));
        assert_eq!(t.lookup(Some(b"www.shop.internal")), Some(0));
        assert_eq!(
            t.lookup(Some(b"a.deep.shop.internal")),
            Some(2),
            "longest wildcard wins"
        );
        assert_eq!(t.lookup(Some(b"other")), None);
        assert_eq!(t.lookup(None), None);
        t.add(&[HostPattern::Any], 3);
        assert_eq!(t.lookup(Some(b"other")), Some(3));
        assert_eq!(t.lookup(Some(b"shop.internal.")), Some(0), "trailing dot");
    }

    #[test]
    fn ports_and_ipv6_are_stripped() {
        assert_eq!(strip_port(b"a:1"), b"a");
        assert_eq!(strip_port(b"[::1]:80"), b"[::1]");
        assert_eq!(strip_port(b"[::1]"), b"[::1]");
        assert_eq!(strip_port(b"a"), b"a");
    }
}
