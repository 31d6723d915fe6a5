//! `[[service]]` and `[[service.listener]]`, plus the checks across services that share a port.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::fields::{self, Unique};
use super::transform::Decided;
use super::{limits, rules, Ctx};
use crate::diag::Diags;
use crate::model::*;
use crate::raw::{RawListener, RawService};

pub(crate) fn services(
    d: &mut Diags,
    ctx: &Ctx,
    raws: &[Option<RawService>],
    global: Limits,
) -> Vec<Service> {
    let mut names = Unique::new();
    let mut out = Vec::new();
    // (socket, host) → the service that claimed it first; port → the first listener's protocol.
    let mut hosts: HashMap<(SocketAddr, HostPattern), String> = HashMap::new();
    // Every listener's socket, protocol and path: sockets that overlap must agree on the protocol.
    let mut sockets: Vec<(SocketAddr, ListenerProtocol, String)> = Vec::new();
    for (i, raw) in raws.iter().enumerate() {
        let Some(raw) = raw else { continue };
        let path = format!("service[{i}]");
        let name = fields::name(d, &format!("{path}.name"), &raw.name);
        names.check(d, &format!("{path}.name"), name.clone(), &path, |first| {
            format!("{name:?} is already used by {first}")
        });

        let host_list = host_patterns(d, &path, raw.hosts.as_ref());
        let decided = super::transform::for_service(ctx, raw);
        let listeners = listeners(d, ctx, &path, &raw.listener, global, &decided);
        let rate_limit = raw.rate_limit.as_ref().map(|r| {
            let rp = format!("{path}.rate_limit");
            // A limit that silently did not apply to some of the service's traffic would be worse than
            // none: tls_passthrough connections carry no HTTP request to count.
            if let Some((j, _)) = listeners
                .iter()
                .find(|(_, l)| l.protocol == ListenerProtocol::TlsPassthrough)
            {
                d.err(&rp, format!("rate limits count HTTP requests, and listener[{j}] is tls_passthrough: move it to a service of its own"));
            }
            super::rate_limit::rate_limit(d, &rp, r)
        });

        for (j, l) in listeners.iter() {
            let lp = format!("{path}.listener[{j}]");
            // One socket accepts for every listener on it (the same address, or a wildcard address and
            // a specific one on the same port), so they must speak one protocol, in one service or many.
            let here = l.socket_addr();
            let clash = sockets.iter().find(|(there, proto, _)| {
                *proto != l.protocol
                    && there.port() == here.port()
                    && overlap(there.ip(), here.ip())
            });
            match clash {
                Some((there, proto, owner)) => d.err(
                    &format!("{lp}.protocol"),
                    format!(
                        "port {} is {} on {owner} ({there}); listeners sharing a port must use one protocol",
                        here.port(),
                        proto_name(*proto)
                    ),
                ),
                None => sockets.push((here, l.protocol, lp.clone())),
            }
        }
        // A host may appear once per socket: two services answering the same name there is ambiguous.
        let mut reported = vec![false; host_list.len()];
        for (_, l) in listeners.iter() {
            for (k, (j, host)) in host_list.iter().enumerate() {
                match hosts.get(&(l.socket_addr(), host.clone())) {
                    Some(owner) if *owner != name && !reported[k] => {
                        reported[k] = true;
                        d.err(
                            &format!("{path}.hosts[{j}]"),
                            format!(
                                "host {} is already served on {} by service {owner:?}",
                                show_host(host),
                                l.socket_addr()
                            ),
                        );
                    }
                    Some(_) => {}
                    None => {
                        hosts.insert((l.socket_addr(), host.clone()), name.clone());
                    }
                }
            }
        }
        if let Some(policy) = &raw.auth_policy {
            super::auth::reference(
                d,
                &format!("{path}.auth_policy"),
                policy,
                &ctx.auth_policies,
            );
        }
        out.push(Service {
            name,
            hosts: host_list.into_iter().map(|(_, h)| h).collect(),
            rate_limit,
            listeners: listeners.into_iter().map(|(_, l)| l).collect(),
            auth_policy: raw.auth_policy.clone(),
        });
    }
    out
}

fn proto_name(p: ListenerProtocol) -> &'static str {
    match p {
        ListenerProtocol::Http => "http",
        ListenerProtocol::Https => "https",
        ListenerProtocol::TlsPassthrough => "tls_passthrough",
    }
}

fn show_host(h: &HostPattern) -> String {
    match h {
        HostPattern::Exact(s) => format!("{s:?}"),
        HostPattern::Suffix(s) => format!("\"*{s}\""),
        HostPattern::Any => "\"*\"".to_string(),
    }
}

/// Valid host patterns with their index in the file.
fn host_patterns(
    d: &mut Diags,
    path: &str,
    raw: Option<&Vec<String>>,
) -> Vec<(usize, HostPattern)> {
    let hp = format!("{path}.hosts");
    let Some(raw) = raw else {
        fields::missing(d, &hp);
        return Vec::new();
    };
    if raw.is_empty() {
        d.err(&hp, "must list at least one host (\"*\" for any)");
    }
    let mut seen = Unique::new();
    let mut out = Vec::new();
    for (j, text) in raw.iter().enumerate() {
        let p = format!("{hp}[{j}]");
        match fields::host_pattern(text) {
            Ok(h) => {
                seen.check(d, &p, h.clone(), format!("hosts[{j}]"), |first| {
                    format!("{text:?} is already listed as {first}")
                });
                out.push((j, h));
            }
            Err(msg) => d.err(&p, msg),
        }
    }
    out
}

fn listeners(
    d: &mut Diags,
    ctx: &Ctx,
    path: &str,
    raws: &[RawListener],
    global: Limits,
    decided: &Decided,
) -> Vec<(usize, Listener)> {
    let mut names = Unique::new();
    let mut sockets = Unique::new();
    let mut out = Vec::new();
    for (j, raw) in raws.iter().enumerate() {
        let lp = format!("{path}.listener[{j}]");
        let l = listener(d, ctx, &lp, raw, global, decided);
        names.check(
            d,
            &format!("{lp}.name"),
            l.name.clone(),
            format!("listener {:?}", l.name),
            |first| format!("{:?} is already used by {first}", l.name),
        );
        if raw.port.is_some() {
            sockets.check(
                d,
                &format!("{lp}.port"),
                l.socket_addr(),
                format!("listener {:?}", l.name),
                |first| format!("{} is already used by {first}", l.socket_addr()),
            );
        }
        out.push((j, l));
    }
    if out.is_empty() {
        d.err(path, "a service needs at least one [[service.listener]]");
    }
    out
}

fn listener(
    d: &mut Diags,
    ctx: &Ctx,
    path: &str,
    raw: &RawListener,
    global: Limits,
    decided: &Decided,
) -> Listener {
    let p = |key: &str| format!("{path}.{key}");
    let name = fields::name(d, &p("name"), &raw.name);
    if raw.protocol.is_none() {
        fields::missing(d, &p("protocol"));
    }
    let protocol = fields::choice(
        d,
        &p("protocol"),
        &raw.protocol,
        ListenerProtocol::Http,
        &[
            ("http", ListenerProtocol::Http),
            ("https", ListenerProtocol::Https),
            ("tls_passthrough", ListenerProtocol::TlsPassthrough),
        ],
    );
    let port = fields::to_u16(fields::required_int_in(d, &p("port"), raw.port, 1, 65535));
    let bind = match &raw.bind {
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Some(s) => s.trim().parse().unwrap_or_else(|_| {
            d.err(
                &p("bind"),
                format!("{s:?} is not an IP address, such as \"0.0.0.0\" or \"::1\""),
            );
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        }),
    };
    let tls = match (&raw.tls, protocol) {
        (Some(t), ListenerProtocol::Https) => Some(tls_files(d, &p("tls"), t, ctx)),
        (None, ListenerProtocol::Https) => {
            d.err(
                &p("tls"),
                "an https listener needs tls = { cert = \"...\", key = \"...\" }",
            );
            None
        }
        (Some(_), other) => {
            d.err(
                &p("tls"),
                format!(
                    "tls is only for https listeners, this one is {}",
                    proto_name(other)
                ),
            );
            None
        }
        (None, _) => None,
    };
    let limits = match &raw.limits {
        Some(l) => limits(d, &p("limits"), l, global),
        None => global,
    };
    if protocol == ListenerProtocol::TlsPassthrough && !raw.rule.is_empty() {
        d.err(
            &p("rule[0]"),
            "tls_passthrough listeners cannot have rules: there is no HTTP request to match",
        );
    }
    let rules = rules::rules(d, ctx, path, &raw.rule, (protocol, port), decided);
    let default_action = match &raw.default_action {
        Some(a) => rules::action(d, ctx, &p("default_action"), a, (protocol, port)),
        None => {
            fields::missing(d, &p("default_action"));
            Action::Forward(Vec::new())
        }
    };
    Listener {
        name,
        protocol,
        port,
        bind,
        tls,
        limits,
        rules,
        default_action,
    }
}

/// A listener's `tls = { cert, key, client_ca, client_auth }`, with the files read and checked.
fn tls_files(d: &mut Diags, path: &str, t: &crate::raw::RawTls, ctx: &Ctx) -> TlsFiles {
    let cert = required_file(d, &format!("{path}.cert"), &t.cert, ctx);
    let key = required_file(d, &format!("{path}.key"), &t.key, ctx);
    let client_ca = t
        .client_ca
        .as_ref()
        .map(|ca| fields::file_path(d, &format!("{path}.client_ca"), ca, ctx.base));
    let client_auth = match (t.client_auth.as_deref(), client_ca.is_some()) {
        (Some(other), _) if other != "required" && other != "optional" => {
            d.err(
                &format!("{path}.client_auth"),
                format!("{other:?} is not one of \"required\", \"optional\""),
            );
            None
        }
        (Some(_), false) => {
            d.err(
                &format!("{path}.client_auth"),
                "client_auth needs client_ca: the CA file that client certificates must chain to",
            );
            None
        }
        (None, false) => None,
        (None, true) | (Some("required"), true) => Some(ClientAuth::Required),
        (Some(_), true) => Some(ClientAuth::Optional),
    };
    let complete = t.cert.as_deref().is_some_and(|c| !c.trim().is_empty())
        && t.key.as_deref().is_some_and(|k| !k.trim().is_empty());
    let material = if complete {
        match crate::tls::load(&cert, &key, client_ca.as_deref()) {
            Ok(m) => Some(m),
            Err(problem) => {
                d.err(&format!("{path}.{}", problem.key), problem.message);
                None
            }
        }
    } else {
        None
    };
    TlsFiles {
        cert,
        key,
        client_ca,
        client_auth,
        material,
    }
}

fn required_file(d: &mut Diags, path: &str, raw: &Option<String>, ctx: &Ctx) -> std::path::PathBuf {
    match raw {
        Some(s) => fields::file_path(d, path, s, ctx.base),
        None => {
            fields::missing(d, path);
            std::path::PathBuf::new()
        }
    }
}

/// Whether two listening addresses on one port take some of the same connections: equal, or either
/// is the wildcard (`0.0.0.0`, `::`).
fn overlap(a: std::net::IpAddr, b: std::net::IpAddr) -> bool {
    a == b || a.is_unspecified() || b.is_unspecified()
}
