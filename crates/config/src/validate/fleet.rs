//! `[fleet]` of a node file, and what may stand beside it: a node file holds what is the node's own
//! (`[fleet]`, `[admin]`, `[access_log]`, `[limits]`); everything shared comes from the fleet's
//! configuration in etcd, which in turn holds nothing node-local.

use std::path::Path;
use std::time::Duration;

use super::fields;
use crate::diag::Diags;
use crate::model::{Fleet, FleetTls};
use crate::raw::RawFleet;
use crate::sections::RawDoc;

/// The sections that are the fleet's, shared by every node.
pub(crate) const SHARED: &[&str] = &[
    "service",
    "target_group",
    "scaling_group",
    "network",
    "auth_policy",
    "jwt_issuer",
];

/// The sections that are each node's own.
pub(crate) const NODE_LOCAL: &[&str] = &["fleet", "admin", "access_log", "limits"];

const DEFAULT_PREFIX: &str = "/trellis";

pub(crate) fn fleet(d: &mut Diags, raw: RawFleet, base: &Path) -> Fleet {
    let tls_raw = (raw.ca.clone(), raw.cert.clone(), raw.key.clone());
    let endpoints = match raw.endpoints {
        None => {
            fields::missing(d, "fleet.endpoints");
            Vec::new()
        }
        Some(list) if list.is_empty() => {
            d.err(
                "fleet.endpoints",
                "needs at least one etcd member, such as \"http://127.0.0.1:2379\"",
            );
            list
        }
        Some(list) => {
            for e in &list {
                if !is_endpoint(e) {
                    d.err(
                        "fleet.endpoints",
                        format!(
                            "{e:?} is not an etcd client URL such as \"http://127.0.0.1:2379\""
                        ),
                    );
                }
            }
            list
        }
    };
    let prefix = raw.prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_string());
    if !prefix.starts_with('/')
        || prefix.len() < 2
        || prefix.ends_with('/')
        || prefix.contains(char::is_whitespace)
    {
        d.err(
            "fleet.prefix",
            format!("{prefix:?} must start with / and not end with / (such as \"/trellis/prod\")"),
        );
    }
    let node = raw.node.unwrap_or_else(host_name);
    if node.is_empty()
        || node.len() > 63
        || !node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        d.err(
            "fleet.node",
            format!("{node:?} must be 1 to 63 letters, digits, '-', '_' or '.'"),
        );
    }
    let bind = raw.bind.as_deref().and_then(|b| match b.parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            d.err("fleet.bind", format!("{b:?} is not an IP address"));
            None
        }
    });
    let lease_ttl = fields::duration_in(
        d,
        "fleet.lease_ttl",
        &raw.lease_ttl,
        Duration::from_secs(15),
        Duration::from_secs(2),
        Duration::from_secs(120),
    );
    let tls = tls(d, tls_raw, &endpoints, base);
    Fleet {
        endpoints,
        prefix,
        node,
        bind,
        lease_ttl,
        tls,
    }
}

/// `ca` (and, for etcd's `--client-cert-auth`, `cert` and `key`): read and checked now, so a wrong path
/// is a `FILE:LINE` error and not a node that cannot reach its store.
fn tls(
    d: &mut Diags,
    (ca, cert, key): (Option<String>, Option<String>, Option<String>),
    endpoints: &[String],
    base: &Path,
) -> Option<FleetTls> {
    let https = endpoints.iter().any(|e| e.starts_with("https://"));
    let any = ca.is_some() || cert.is_some() || key.is_some();
    if !https {
        if any {
            let key = ["ca", "cert", "key"]
                .into_iter()
                .zip([&ca, &cert, &key])
                .find_map(|(k, v)| v.as_ref().map(|_| k))
                .unwrap_or("ca");
            d.err(
                &format!("fleet.{key}"),
                "TLS to etcd needs https:// endpoints",
            );
        }
        return None;
    }
    if endpoints.iter().any(|e| e.starts_with("http://")) {
        d.err(
            "fleet.endpoints",
            "mixes http:// and https:// members: use https:// for every member",
        );
    }
    let read = |d: &mut Diags, key: &str, path: &str| -> Option<Vec<u8>> {
        let full = fields::resolve(base, path);
        match std::fs::read(&full) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                d.err(
                    &format!("fleet.{key}"),
                    format!("cannot read {}: {e}", full.display()),
                );
                None
            }
        }
    };
    let ca = match &ca {
        None => {
            d.err(
                "fleet.ca",
                "https:// endpoints need `ca`: the PEM file of the CA that signed etcd's certificates",
            );
            None
        }
        Some(path) => read(d, "ca", path).filter(|bytes| {
            let ok = crate::tls::certificates(bytes, Path::new(path)).is_ok();
            if !ok {
                d.err("fleet.ca", format!("{path} holds no PEM certificate"));
            }
            ok
        }),
    };
    let identity = match (&cert, &key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let cert = read(d, "cert", cert);
            let key = read(d, "key", key);
            cert.zip(key)
        }
        (Some(_), None) => {
            d.err(
                "fleet.cert",
                "`cert` needs `key` (the client certificate's private key)",
            );
            None
        }
        (None, Some(_)) => {
            d.err("fleet.key", "`key` needs `cert` (the client certificate)");
            None
        }
    };
    Some(FleetTls { ca: ca?, identity })
}

/// The sections `doc` has, of `names`.
pub(crate) fn present<'a>(doc: &RawDoc, names: &[&'a str]) -> Vec<&'a str> {
    names
        .iter()
        .copied()
        .filter(|name| match *name {
            "service" => !doc.services.is_empty(),
            "target_group" => !doc.target_groups.is_empty(),
            "scaling_group" => !doc.scaling_groups.is_empty(),
            "network" => doc.network.is_some(),
            "auth_policy" => !doc.auth_policies.is_empty(),
            "jwt_issuer" => !doc.jwt_issuers.is_empty(),
            "fleet" => doc.fleet.is_some(),
            "admin" => doc.admin.is_some(),
            "access_log" => doc.access_log.is_some(),
            "limits" => doc.limits.is_some(),
            _ => false,
        })
        .collect()
}

fn is_endpoint(e: &str) -> bool {
    let rest = e
        .strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"));
    rest.is_some_and(|r| {
        let hostport = r.strip_suffix('/').unwrap_or(r);
        !hostport.is_empty()
            && !hostport.contains('/')
            && hostport
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
    })
}

/// This machine's host name, the default node name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "trellis".to_string())
}
