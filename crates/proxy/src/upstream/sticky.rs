//! Session affinity (`[target_group.stickiness]`), as ALB does it: a cookie names the target a client's
//! earlier request went to, and its next ones go there too while that target can take them.
//!
//! `lb_cookie`: trellis sets its cookie on every response (refreshing its expiry). `app_cookie`: trellis
//! sets its cookie only on responses that set the application's `cookie_name`, so a session lasts as
//! long as the application says. Either way the cookie holds a hash of the group and the target's
//! address, not the address: clients learn nothing of the network behind trellis, and the same target
//! has the same cookie on every trellis node and after restarts.

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue};
use prometheus::IntCounter;
use sha2::{Digest, Sha256};
use trellis_config::{Stickiness, StickinessKind};
use trellis_targets::Target;

use crate::metrics::ProxyMetrics;

pub struct Sticky {
    /// The cookie trellis reads and sets.
    cookie: String,
    /// `app_cookie`: the application's cookie whose setting makes trellis set its own.
    app_cookie: Option<String>,
    /// Parallel to the group's targets: the cookie's value naming each.
    tokens: Box<[String]>,
    /// Parallel to the group's targets: the whole `set-cookie` value, built once.
    set_cookie: Box<[HeaderValue]>,
    pub hits: IntCounter,
    pub misses: IntCounter,
    pub new: IntCounter,
}

/// What a request's cookie says.
pub enum Lookup {
    /// No cookie of ours.
    None,
    /// The target it names (an index into the group's targets).
    Target(usize),
    /// A cookie naming a target the group no longer has.
    Stale,
}

impl Sticky {
    pub fn build(
        group: &str,
        stickiness: &Stickiness,
        targets: &[Target],
        metrics: &ProxyMetrics,
    ) -> Sticky {
        let safe: String = group
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let (cookie, app_cookie) = match &stickiness.kind {
            StickinessKind::LbCookie => (format!("trellis-tg-{safe}"), None),
            StickinessKind::AppCookie { cookie_name } => {
                (format!("trellis-app-{safe}"), Some(cookie_name.clone()))
            }
        };
        let tokens: Box<[String]> = targets
            .iter()
            .map(|t| token(group, &t.address.to_string()))
            .collect();
        let max_age = stickiness.duration.as_secs();
        let set_cookie = tokens
            .iter()
            .map(|token| {
                let value = format!("{cookie}={token}; Max-Age={max_age}; Path=/; HttpOnly");
                HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static(""))
            })
            .collect();
        let result = |r: &str| metrics.sticky.with_label_values(&[group, r]);
        Sticky {
            cookie,
            app_cookie,
            tokens,
            set_cookie,
            hits: result("hit"),
            misses: result("miss"),
            new: result("new"),
        }
    }

    /// The target the request's cookie names.
    pub fn lookup(&self, headers: &HeaderMap) -> Lookup {
        let Some(value) = cookie_value(headers, &self.cookie) else {
            return Lookup::None;
        };
        match self.tokens.iter().position(|t| t.as_bytes() == value) {
            Some(index) => Lookup::Target(index),
            None => Lookup::Stale,
        }
    }

    /// Adds the cookie naming target `index` to a response from it, when this kind of stickiness
    /// sets one there.
    pub fn stick(&self, index: usize, response: &mut HeaderMap) {
        if let Some(app) = &self.app_cookie {
            let sets_it = response
                .get_all(SET_COOKIE)
                .iter()
                .any(|v| set_cookie_name(v.as_bytes()) == Some(app.as_bytes()));
            if !sets_it {
                return;
            }
        }
        if let Some(value) = self.set_cookie.get(index) {
            response.append(SET_COOKIE, value.clone());
        }
    }
}

/// A target's cookie value: 16 hex digits of a hash of the group and its address.
fn token(group: &str, address: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"trellis-sticky\0");
    hash.update(group.as_bytes());
    hash.update(b"\0");
    hash.update(address.as_bytes());
    hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The value of cookie `name` in the request's `cookie` headers (HTTP/2 may send several).
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers.get_all(COOKIE).iter().find_map(|v| {
        v.as_bytes().split(|b| *b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
    })
}

/// The name of the cookie a `set-cookie` value sets.
fn set_cookie_name(value: &[u8]) -> Option<&[u8]> {
    let eq = value.iter().position(|b| *b == b'=')?;
    Some(value[..eq].trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others_and_across_headers() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("a=1; trellis-tg-web=abc ;b=2"),
        );
        assert_eq!(cookie_value(&h, "trellis-tg-web"), Some(&b"abc"[..]));
        assert_eq!(cookie_value(&h, "trellis-tg-we"), None);
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1"));
        h.append(COOKIE, HeaderValue::from_static("trellis-tg-web=xyz"));
        assert_eq!(cookie_value(&h, "trellis-tg-web"), Some(&b"xyz"[..]));
        assert_eq!(
            set_cookie_name(b"SESSIONID=42; Path=/; HttpOnly"),
            Some(&b"SESSIONID"[..])
        );
    }

    #[test]
    fn tokens_are_stable_opaque_and_distinct() {
        let a = token("web", "10.0.0.1:8080");
        assert_eq!(a, token("web", "10.0.0.1:8080"));
        assert_eq!(a.len(), 16);
        assert!(!a.contains("10.0.0.1"));
        assert_ne!(a, token("web", "10.0.0.2:8080"));
        assert_ne!(a, token("api", "10.0.0.1:8080"));
    }
}
