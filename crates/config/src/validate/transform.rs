//! A rule's `transform`. What trellis decides on is what the target gets (see README, "Request
//! normalisation"), so a transform may change neither what trellis routed, authorised or rate-limited
//! the request on, nor what trellis sets itself: those headers are refused here, by name.

use std::collections::BTreeMap;

use super::fields::{self, Unique};
use super::Ctx;
use crate::diag::Diags;
use crate::model::{Action, Rule, StringMatchKind};
use crate::raw::{RawService, RawTransform};
use crate::transform::{HeaderEdits, Transform};

/// Longest `path_prefix`, as a path match's.
const MAX_PREFIX: usize = 200;

/// Header names trellis decides on for the requests of one listener, each with who does: its rules'
/// header matches, the rate limits' header keys, the auth policies' header conditions and bearer
/// tokens.
#[derive(Default, Clone)]
pub(crate) struct Decided(Vec<(String, String)>);

impl Decided {
    pub(crate) fn add(&mut self, name: &str, who: String) {
        let name = name.to_ascii_lowercase();
        if self.why(&name).is_none() {
            self.0.push((name, who));
        }
    }

    fn why(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, w)| w.as_str())
    }
}

/// What trellis decides on for every request of a service, whichever listener and rule: its rate
/// limit's key and what its auth policies (and the network's) read.
pub(crate) fn for_service(ctx: &Ctx, raw: &RawService) -> Decided {
    let mut decided = Decided::default();
    match raw.rate_limit.as_ref().and_then(|r| r.key.as_deref()) {
        Some("identity") => decided.add(
            "authorization",
            "the service's rate limit counts by the caller's identity, which may be its bearer token"
                .into(),
        ),
        Some(key) => {
            if let Some(name) = key.strip_prefix("header:") {
                decided.add(name, "the service's rate limit counts by it".into());
            }
        }
        None => {}
    }
    let policies = [ctx.network_policy.as_deref(), raw.auth_policy.as_deref()];
    for name in policies.into_iter().flatten() {
        for header in ctx.policy_headers.get(name).into_iter().flatten() {
            decided.add(header, format!("auth policy {name:?} reads it"));
        }
    }
    decided
}

/// Why trellis alone may set, frame or route on a header: `None` for the ones a transform may touch.
fn owned(name: &str) -> Option<&'static str> {
    Some(match name {
        "connection" | "keep-alive" | "proxy-connection" | "te" | "trailer"
        | "transfer-encoding" | "upgrade" | "http2-settings" => {
            "is hop-by-hop: it describes one connection, not the request"
        }
        "host" => "is what trellis routed on, and the target gets exactly that",
        "content-length" => "frames the body, which trellis forwards as it came",
        "x-request-id" => "is set by trellis (or kept from the client) and logged",
        n if n.starts_with("x-forwarded-") => "is set by trellis",
        n if n.starts_with("x-trellis-") => "is trellis's own",
        _ => return None,
    })
}

/// `rule` is the rule the transform is on (its match and action, already validated).
pub(crate) fn transform(
    d: &mut Diags,
    path: &str,
    raw: &RawTransform,
    rule: &Rule,
    decided: &Decided,
) -> Transform {
    if !matches!(rule.action, Action::Forward(_)) {
        d.err(
            path,
            "a transform changes what a target gets, and this rule's action answers the request \
             itself: only rules that forward take one",
        );
    }
    let path_prefix = raw.path_prefix.as_ref().map(|pp| {
        let pp_path = format!("{path}.path_prefix");
        let prefix_match = rule
            .matcher
            .path
            .as_ref()
            .is_some_and(|m| m.kind == StringMatchKind::Prefix);
        if !prefix_match {
            d.err(
                &pp_path,
                "path_prefix replaces what the rule's match.path.prefix matched, and this rule has \
                 no prefix match",
            );
        }
        if let Err(why) = canonical_prefix(pp) {
            d.err(&pp_path, format!("{pp:?} {why}"));
        }
        pp.clone()
    });
    let request_headers = raw
        .request_headers
        .as_ref()
        .map(|h| {
            let lists = [("set", &h.set), ("add", &h.add)];
            edits(
                d,
                &format!("{path}.request_headers"),
                &lists,
                &h.remove,
                Some(decided),
            )
        })
        .unwrap_or_default();
    let response_headers = raw
        .response_headers
        .as_ref()
        .map(|h| {
            let lists = [("set", &h.set)];
            edits(
                d,
                &format!("{path}.response_headers"),
                &lists,
                &h.remove,
                None,
            )
        })
        .unwrap_or_default();
    Transform {
        path_prefix,
        request_headers,
        response_headers,
    }
}

/// `set`/`add` tables and the `remove` list; `decided` is `None` for responses (trellis decides on
/// nothing in them).
fn edits(
    d: &mut Diags,
    path: &str,
    lists: &[(&str, &Option<BTreeMap<String, String>>)],
    remove: &Option<Vec<String>>,
    decided: Option<&Decided>,
) -> HeaderEdits {
    let mut seen = Unique::new();
    let mut name_ok = |d: &mut Diags, key: &str, written: &str, owner: String| -> Option<String> {
        let name = written.to_ascii_lowercase();
        let problem = if !fields::header_name(&name) {
            Some(format!("{written:?} is not a valid HTTP header name"))
        } else if let Some(why) = owned(&name) {
            Some(format!("{name} {why}; a transform may not change it"))
        } else {
            decided.and_then(|d| d.why(&name)).map(|who| {
                format!(
                    "{who}: a transform may not change it, or the target would get another \
                     request than the one trellis decided on"
                )
            })
        };
        if let Some(message) = problem {
            d.err(key, message);
            return None;
        }
        seen.check(d, key, name.clone(), owner, |first| {
            format!("{name} is already in {first}")
        });
        Some(name)
    };
    let mut out = HeaderEdits::default();
    for (list, entries) in lists {
        for (written, value) in entries.iter().flatten() {
            let key = format!("{path}.{list}.{written}");
            let Some(name) = name_ok(d, &key, written, format!("{path}.{list}")) else {
                continue;
            };
            if value.chars().any(|c| c.is_control() && c != '\t') {
                d.err(&key, format!("{value:?} has a control character"));
            } else if value.trim() != value {
                d.err(
                    &key,
                    format!("{value:?} has surrounding spaces, which HTTP drops"),
                );
            }
            let target = if *list == "set" {
                &mut out.set
            } else {
                &mut out.add
            };
            target.push((name, value.clone()));
        }
    }
    for (i, written) in remove.iter().flatten().enumerate() {
        let key = format!("{path}.remove[{i}]");
        if let Some(name) = name_ok(d, &key, written, format!("{path}.remove")) {
            out.remove.push(name);
        }
    }
    out
}

/// `path_prefix` must be a path in the form trellis normalises every request's to (see
/// `head::path` in the proxy): it starts with `/`, has no empty, `.` or `..` segment, no `;`
/// parameters, and only the escapes normalisation keeps, so what the target gets is still that form.
fn canonical_prefix(p: &str) -> Result<(), String> {
    let n = p.chars().count();
    if n == 0 || n > MAX_PREFIX {
        return Err(format!("must be 1..={MAX_PREFIX} characters, not {n}"));
    }
    if !p.starts_with('/') {
        return Err("must start with \"/\"".into());
    }
    if let Some(c) = p
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || "-._~!$&'()*+,=:@/%".contains(c)))
    {
        return Err(format!(
            "has {c:?}: a path prefix has letters, digits, \"/\" and -._~!$&'()*+,=:@ (percent-encode the rest)"
        ));
    }
    if p.contains("//") || p[1..].split('/').any(|s| s == "." || s == "..") {
        return Err("has an empty, \".\" or \"..\" segment".into());
    }
    let b = p.as_bytes();
    for (i, _) in b.iter().enumerate().filter(|(_, &c)| c == b'%') {
        let hex = |j: usize| b.get(j).copied().filter(u8::is_ascii_hexdigit);
        let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
            return Err("has a \"%\" not followed by two hex digits".into());
        };
        let byte = u8::from_str_radix(&format!("{}{}", hi as char, lo as char), 16).unwrap_or(0);
        if byte.is_ascii_alphanumeric() || b"-._~/\\\0".contains(&byte) {
            return Err(format!(
                "has %{}{}: write it unescaped, or not at all (%2F, %5C and %00 are refused in paths)",
                hi as char, lo as char
            ));
        }
        if hi.is_ascii_lowercase() || lo.is_ascii_lowercase() {
            return Err(
                "has an escape with lower-case hex digits: write them in upper case".into(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        for ok in ["/", "/v2", "/v2/", "/a%20b/", "/a.b/~x"] {
            assert_eq!(canonical_prefix(ok), Ok(()), "{ok}");
        }
        for bad in [
            "", "v2", "//", "/a//b", "/./", "/a/..", "/a%2Fb", "/%70", "/a%2", "/a b", "/a;x",
            "/a%2f", "/a?b", "/a#b", "/%c3%a9",
        ] {
            assert!(canonical_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn owned_names() {
        for name in [
            "host",
            "connection",
            "te",
            "trailer",
            "content-length",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-request-id",
            "x-trellis-target",
        ] {
            assert!(owned(name).is_some(), "{name}");
        }
        assert!(owned("x-env").is_none());
        assert!(owned("server").is_none());
    }
}
