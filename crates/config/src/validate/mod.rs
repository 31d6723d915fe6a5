//! Raw structs → validated model. Every check reports into [`Diags`] and carries on; the caller rejects the
//! file if anything was reported.

mod auth;
mod fields;
mod fleet;
mod policy;
mod rate_limit;
mod redirect;
mod rules;
mod scaling;
mod service;
mod target_group;
mod traffic;
mod transform;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use crate::diag::Diags;
use crate::model::*;
use crate::raw::{RawAccessLog, RawAdmin, RawLimits};
use crate::sections::RawDoc;

/// What later sections need to know about earlier ones.
pub(crate) struct Ctx<'a> {
    /// Directory of the configuration file, for relative paths.
    pub base: &'a Path,
    /// Every target group name in the file, with its protocol (`None` if the group itself is broken).
    pub target_groups: HashMap<String, Option<TargetProtocol>>,
    /// Every `[[auth_policy]]` name in the file.
    pub auth_policies: std::collections::HashSet<String>,
    /// The request headers each auth policy reads (lower-case; `authorization` when it asks who the
    /// caller is), which a rule's transform may not change.
    pub policy_headers: HashMap<String, Vec<String>>,
    /// `[network] auth_policy`, as written.
    pub network_policy: Option<String>,
}

/// Validates a whole file (`node` is `None`), or the fleet's shared configuration as node `node` serves
/// it: its node-local sections are then the node's own, and the shared text may not have any.
pub(crate) fn validate(
    mut doc: RawDoc,
    source: &Path,
    d: &mut Diags,
    node: Option<&Config>,
) -> Config {
    let base = source.parent().unwrap_or(Path::new(""));
    let (admin, fleet, access_log, limits) = match node {
        None => {
            let fleet = doc.fleet.take().map(|f| fleet::fleet(d, f, base));
            if fleet.is_some() {
                for section in fleet::present(&doc, fleet::SHARED) {
                    d.err(
                        section,
                        format!(
                            "`{section}` is shared by the fleet: a node file holds only [fleet], [admin], \
                             [access_log] and [limits]; apply the rest to the fleet with `trellis fleet apply`"
                        ),
                    );
                }
            }
            let admin = admin(d, doc.admin.take().unwrap_or_default(), base);
            let access_log = access_log(d, doc.access_log.take().unwrap_or_default(), base);
            let limits = limits(
                d,
                "limits",
                &doc.limits.take().unwrap_or_default(),
                Limits::default(),
            );
            (admin, fleet, access_log, limits)
        }
        Some(node) => {
            for section in fleet::present(&doc, fleet::NODE_LOCAL) {
                d.err(
                    section,
                    format!(
                        "`{section}` is node-local: set it in each node's file, not in the fleet's configuration"
                    ),
                );
            }
            (
                node.admin.clone(),
                node.fleet.clone(),
                node.access_log.clone(),
                node.limits,
            )
        }
    };

    let target_groups = target_group::target_groups(d, &doc.target_groups, base);
    let auth_policies = auth::policies(d, &doc.auth_policies);
    let mut ctx = Ctx {
        base,
        target_groups: HashMap::new(),
        auth_policies: auth_policies.iter().map(|p| p.name.clone()).collect(),
        policy_headers: auth_policies.iter().map(auth::headers_read).collect(),
        network_policy: doc.network.as_ref().and_then(|n| n.auth_policy.clone()),
    };
    for name in doc.broken_target_groups {
        ctx.target_groups.insert(name, None);
    }
    for tg in &target_groups {
        ctx.target_groups.insert(tg.name.clone(), Some(tg.protocol));
    }
    let mut services = service::services(d, &ctx, &doc.services, limits);
    // A fleet node serves every listener on its own address.
    if let (Some(_), Some(bind)) = (node, fleet.as_ref().and_then(|f| f.bind)) {
        for listener in services.iter_mut().flat_map(|s| s.listeners.iter_mut()) {
            listener.bind = bind;
        }
    }
    let scaling_groups = scaling::scaling_groups(d, &ctx, &doc.scaling_groups);
    if node.is_some() {
        // What a fleet does not run yet is refused rather than silently skipped.
        for (i, group) in scaling_groups.iter().enumerate() {
            match group.warm_pool {
                Some(_) if matches!(group.launch, Launch::Command(_)) => d.err(
                    &format!("scaling_group[{i}].warm_pool"),
                    "warm pools with the command provider run on a single node only for now, not in fleet mode",
                ),
                Some(pool) if pool.reuse_on_scale_in => d.err(
                    &format!("scaling_group[{i}].warm_pool.reuse_on_scale_in"),
                    "reuse_on_scale_in runs on a single node only for now, not in fleet mode",
                ),
                _ => {}
            }
            // A fleet's nodes know only the current launch: a refresh there fails instead of rolling
            // back, and saying otherwise in the file would be a promise not kept.
            if doc
                .scaling_groups
                .get(i)
                .and_then(Option::as_ref)
                .and_then(|g| g.instance_refresh.as_ref())
                .is_some_and(|r| r.auto_rollback == Some(true))
            {
                d.err(
                    &format!("scaling_group[{i}].instance_refresh.auto_rollback"),
                    "a fleet does not roll a refresh back (its nodes know only the current launch): leave it out or set it to false",
                );
            }
            // Hooks run on the node that runs the instance; a machine of the command provider has none.
            if !group.lifecycle_hooks.is_empty() && matches!(group.launch, Launch::Command(_)) {
                d.err(
                    &format!("scaling_group[{i}].lifecycle_hook[0]"),
                    "lifecycle hooks with the command provider run on a single node only for now, not in fleet mode",
                );
            }
        }
    }
    let network = auth::network(d, doc.network, &ctx.auth_policies);
    let jwt_issuers = auth::jwt_issuers(d, &ctx, &doc.jwt_issuers);

    Config {
        source: source.to_path_buf(),
        admin,
        fleet,
        access_log,
        limits,
        services,
        target_groups,
        scaling_groups,
        network,
        auth_policies,
        jwt_issuers,
    }
}

fn admin(d: &mut Diags, raw: RawAdmin, base: &Path) -> Admin {
    let default = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9901);
    let listen = match &raw.listen {
        None => default,
        Some(s) => s.parse::<SocketAddr>().unwrap_or_else(|_| {
            d.err(
                "admin.listen",
                format!("{s:?} is not an address with a port, such as \"127.0.0.1:9901\""),
            );
            default
        }),
    };
    let token_file = raw
        .token_file
        .as_deref()
        .map(|t| fields::file_path(d, "admin.token_file", t, base));
    if !listen.ip().is_loopback() && token_file.is_none() {
        d.err(
            "admin.listen",
            format!("{listen} is not a loopback address, so admin.token_file is required"),
        );
    }
    Admin { listen, token_file }
}

fn access_log(d: &mut Diags, raw: RawAccessLog, base: &Path) -> AccessLog {
    let destination = match raw.destination.as_deref() {
        None | Some("stdout") => LogDestination::Stdout,
        Some("off") => LogDestination::Off,
        Some(p) => LogDestination::File(fields::file_path(d, "access_log.destination", p, base)),
    };
    AccessLog { destination }
}

/// `[limits]` or a listener's `limits = {...}`: keys present override `base`.
pub(crate) fn limits(d: &mut Diags, path: &str, raw: &RawLimits, base: Limits) -> Limits {
    let max = fields::int_in(
        d,
        &format!("{path}.max_header_bytes"),
        raw.max_header_bytes,
        base.max_header_bytes as i64,
        // hyper cannot buffer less than 8 KiB for a request head.
        8192,
        1_048_576,
    );
    Limits {
        header_timeout: fields::positive_duration(
            d,
            &format!("{path}.header_timeout"),
            &raw.header_timeout,
            base.header_timeout,
        ),
        idle_timeout: fields::positive_duration(
            d,
            &format!("{path}.idle_timeout"),
            &raw.idle_timeout,
            base.idle_timeout,
        ),
        max_header_bytes: usize::try_from(max).unwrap_or(base.max_header_bytes),
        body_timeout: fields::positive_duration(
            d,
            &format!("{path}.body_timeout"),
            &raw.body_timeout,
            base.body_timeout,
        ),
        send_timeout: fields::positive_duration(
            d,
            &format!("{path}.send_timeout"),
            &raw.send_timeout,
            base.send_timeout,
        ),
        tunnel_idle_timeout: fields::positive_duration(
            d,
            &format!("{path}.tunnel_idle_timeout"),
            &raw.tunnel_idle_timeout,
            base.tunnel_idle_timeout,
        ),
    }
}

/// `(lo, hi)` bounds of durations used in several places.
pub(crate) const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
