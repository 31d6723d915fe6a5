//! `[network]`, `[[auth_policy]]` and `[[jwt_issuer]]`.

use std::collections::HashSet;
use std::net::IpAddr;

use super::fields::{self, Unique};
use super::Ctx;
use crate::diag::Diags;
use crate::model::*;
use crate::raw::{RawAuthPolicy, RawJwtIssuer, RawNetwork, RawStatement};

const METHODS: &[&str] = &[
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT", "TRACE", "PATCH",
];

pub(crate) fn policies(d: &mut Diags, raws: &[Option<RawAuthPolicy>]) -> Vec<AuthPolicy> {
    let mut names = Unique::new();
    let mut out = Vec::new();
    for (i, raw) in raws.iter().enumerate() {
        let Some(raw) = raw else { continue };
        let path = format!("auth_policy[{i}]");
        let name = fields::name(d, &format!("{path}.name"), &raw.name);
        names.check(d, &format!("{path}.name"), name.clone(), &path, |first| {
            format!("{name:?} is already used by {first}")
        });
        if raw.statement.is_empty() {
            d.err(
                &path,
                "a policy needs at least one [[auth_policy.statement]] (with none, it would deny everything)",
            );
        }
        let statements = raw
            .statement
            .iter()
            .enumerate()
            .map(|(j, s)| statement(d, &format!("{path}.statement[{j}]"), s))
            .collect();
        out.push(AuthPolicy { name, statements });
    }
    out
}

/// The policy's name and the request headers its statements read: their `headers` conditions, and
/// `authorization` when one names `principals` (a JWT bearer token may be the caller's identity).
pub(crate) fn headers_read(policy: &AuthPolicy) -> (String, Vec<String>) {
    let mut names: Vec<String> = Vec::new();
    for s in &policy.statements {
        if !s.principals.is_empty() {
            names.push("authorization".into());
        }
        names.extend(s.headers.iter().map(|(name, _)| name.clone()));
    }
    (policy.name.clone(), names)
}

fn statement(d: &mut Diags, path: &str, raw: &RawStatement) -> Statement {
    let effect = match raw.effect.as_deref() {
        Some("allow") => Effect::Allow,
        Some("deny") => Effect::Deny,
        Some(other) => {
            d.err(
                &format!("{path}.effect"),
                format!("{other:?} is not one of \"allow\", \"deny\""),
            );
            Effect::Deny
        }
        None => {
            fields::missing(d, &format!("{path}.effect"));
            Effect::Deny
        }
    };
    let list = |d: &mut Diags, key: &str, values: &Option<Vec<String>>| -> Vec<String> {
        let values = values.clone().unwrap_or_default();
        if values.is_empty() && matches!(raw_field(raw, key), Some(true)) {
            d.err(
                &format!("{path}.{key}"),
                "an empty list matches nothing: leave the key out to match anything",
            );
        }
        values
    };
    let principals = list(d, "principals", &raw.principals);
    for (k, p) in principals.iter().enumerate() {
        if p.is_empty() {
            d.err(&format!("{path}.principals[{k}]"), "must not be empty");
        }
    }
    let source_cidrs = list(d, "source_cidrs", &raw.source_cidrs)
        .iter()
        .enumerate()
        .filter_map(|(k, c)| match cidr(c) {
            Ok(c) => Some(c),
            Err(m) => {
                d.err(&format!("{path}.source_cidrs[{k}]"), m);
                None
            }
        })
        .collect();
    let methods = list(d, "methods", &raw.methods)
        .iter()
        .enumerate()
        .map(|(k, m)| {
            let upper = m.to_ascii_uppercase();
            if !METHODS.contains(&upper.as_str()) {
                d.err(
                    &format!("{path}.methods[{k}]"),
                    format!("{m:?} is not one of {}", METHODS.join(" ")),
                );
            }
            upper
        })
        .collect();
    let paths = list(d, "paths", &raw.paths)
        .iter()
        .enumerate()
        .map(|(k, p)| {
            if !p.starts_with('/') {
                d.err(
                    &format!("{path}.paths[{k}]"),
                    format!("{p:?} must start with /"),
                );
            }
            match p.strip_suffix('*') {
                Some(prefix) if !prefix.contains('*') => PathPattern::Prefix(prefix.to_string()),
                _ if p.contains('*') => {
                    d.err(
                        &format!("{path}.paths[{k}]"),
                        format!("{p:?}: `*` is allowed only at the end (a prefix)"),
                    );
                    PathPattern::Exact(p.clone())
                }
                _ => PathPattern::Exact(p.clone()),
            }
        })
        .collect();
    let headers = raw
        .headers
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| {
            let lower = name.to_ascii_lowercase();
            if http_token(&lower).is_err() {
                d.err(
                    &format!("{path}.headers.{name}"),
                    format!("{name:?} is not a valid header name"),
                );
            }
            (lower, value)
        })
        .collect();
    let query = raw
        .query
        .clone()
        .unwrap_or_default()
        .into_iter()
        .inspect(|(key, _)| {
            if key.is_empty() {
                d.err(&format!("{path}.query"), "a query key must not be empty");
            }
        })
        .collect();
    Statement {
        effect,
        principals,
        source_cidrs,
        methods,
        paths,
        headers,
        query,
    }
}

/// Whether the statement has `key` at all (`Some(true)`), so an empty list can be told from no list.
fn raw_field(raw: &RawStatement, key: &str) -> Option<bool> {
    Some(match key {
        "principals" => raw.principals.is_some(),
        "source_cidrs" => raw.source_cidrs.is_some(),
        "methods" => raw.methods.is_some(),
        "paths" => raw.paths.is_some(),
        _ => return None,
    })
}

fn http_token(name: &str) -> Result<(), ()> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(())
    }
}

/// `10.0.0.0/8`, `::1/128` or an address alone (all its bits).
pub(crate) fn cidr(text: &str) -> Result<Cidr, String> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{text:?} is not an address or CIDR block, such as \"10.0.0.0/8\""))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{text:?}: the prefix length must be 0..={max}"))?,
    };
    Ok(Cidr { addr, prefix })
}

pub(crate) fn network(
    d: &mut Diags,
    raw: Option<RawNetwork>,
    policies: &HashSet<String>,
) -> Network {
    let raw = raw.unwrap_or_default();
    if let Some(name) = &raw.auth_policy {
        reference(d, "network.auth_policy", name, policies);
    }
    Network {
        auth_policy: raw.auth_policy,
    }
}

/// A reference to an `[[auth_policy]]` by name.
pub(crate) fn reference(d: &mut Diags, path: &str, name: &str, policies: &HashSet<String>) {
    if !policies.contains(name) {
        d.err(path, format!("no [[auth_policy]] is named {name:?}"));
    }
}

pub(crate) fn jwt_issuers(
    d: &mut Diags,
    ctx: &Ctx,
    raws: &[Option<RawJwtIssuer>],
) -> Vec<JwtIssuer> {
    let mut issuers = Unique::new();
    let mut out = Vec::new();
    for (i, raw) in raws.iter().enumerate() {
        let Some(raw) = raw else { continue };
        let path = format!("jwt_issuer[{i}]");
        let issuer = fields::required(d, &format!("{path}.issuer"), &raw.issuer).to_string();
        if raw.issuer.is_some() && issuer.trim().is_empty() {
            d.err(&format!("{path}.issuer"), "must not be empty");
        }
        issuers.check(
            d,
            &format!("{path}.issuer"),
            issuer.clone(),
            &path,
            |first| format!("{issuer:?} is already configured by {first}"),
        );
        let audiences = raw.audiences.clone().unwrap_or_default();
        if audiences.is_empty() {
            d.err(
                &format!("{path}.audiences"),
                "name at least one audience: a token must say it is meant for this service",
            );
        }
        let (key_path, jwks) = match (&raw.jwks_file, &raw.key_file) {
            (Some(f), None) => (Some(("jwks_file", f)), true),
            (None, Some(f)) => (Some(("key_file", f)), false),
            (Some(_), Some(_)) => {
                d.err(&path, "set jwks_file or key_file, not both");
                (None, false)
            }
            (None, None) => {
                d.err(
                    &path,
                    "set jwks_file (a JWKS) or key_file (a PEM public key)",
                );
                (None, false)
            }
        };
        let (key_file, keys) = match key_path {
            Some((key, file)) => {
                let key_path = format!("{path}.{key}");
                let file = fields::file_path(d, &key_path, file, ctx.base);
                let keys = match crate::jwt::load(&file, jwks) {
                    Ok(keys) => Some(keys),
                    Err(m) => {
                        d.err(&key_path, m);
                        None
                    }
                };
                (file, keys)
            }
            None => (Default::default(), None),
        };
        out.push(JwtIssuer {
            issuer,
            audiences,
            key_file,
            keys,
        });
    }
    out
}
