//! `[[service.listener.rule]]`: priority, `match`, `action` (also used for `default_action`) and
//! `transform`.

use std::collections::HashMap;

use super::fields::{self, Unique};
use super::transform::{self, Decided};
use super::Ctx;
use crate::diag::Diags;
use crate::model::*;
use crate::raw::{RawAction, RawHeaderMatch, RawMatch, RawPathMatch, RawRule};

const METHODS: &[&str] = &[
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT", "TRACE", "PATCH",
];

/// Rules sorted by priority, lowest first. `on` is the listener's protocol and port; `decided`, the
/// header names trellis decides on for the listener's service (its rate limit and auth policies).
pub(crate) fn rules(
    d: &mut Diags,
    ctx: &Ctx,
    path: &str,
    raws: &[RawRule],
    on: (ListenerProtocol, u16),
    decided: &Decided,
) -> Vec<Rule> {
    let mut names = Unique::new();
    let mut priorities: HashMap<u16, String> = HashMap::new();
    let mut out = Vec::new();
    for (k, raw) in raws.iter().enumerate() {
        let rp = format!("{path}.rule[{k}]");
        let p = |key: &str| format!("{rp}.{key}");
        let name = fields::name(d, &p("name"), &raw.name);
        names.check(d, &p("name"), name.clone(), &rp, |first| {
            format!("{name:?} is already used by {first}")
        });
        let priority = fields::to_u16(fields::required_int_in(
            d,
            &p("priority"),
            raw.priority,
            1,
            2000,
        ));
        if raw.priority.is_some_and(|v| i64::from(priority) == v) {
            match priorities.get(&priority) {
                Some(owner) => d.err(
                    &p("priority"),
                    format!("{priority} is already used by rule {owner:?}"),
                ),
                None => {
                    priorities.insert(priority, name.clone());
                }
            }
        }
        let matcher = raw
            .matcher
            .as_ref()
            .map(|m| matcher(d, &p("match"), m))
            .unwrap_or_default();
        let action = match &raw.action {
            Some(a) => action(d, ctx, &p("action"), a, on),
            None => {
                fields::missing(d, &p("action"));
                Action::Forward(Vec::new())
            }
        };
        let rate_limit = raw
            .rate_limit
            .as_ref()
            .map(|r| super::rate_limit::rate_limit(d, &p("rate_limit"), r));
        out.push(Rule {
            name,
            priority,
            matcher,
            action,
            rate_limit,
            transform: None,
        });
    }
    // Transforms once every rule is known: whichever rule matches, all the listener's rules decided
    // on their headers (the ones that did not match, by not matching).
    let mut decided = decided.clone();
    for rule in &out {
        for h in &rule.matcher.headers {
            decided.add(&h.name, format!("rule {:?} matches on it", rule.name));
        }
        match rule.rate_limit.as_ref().map(|r| &r.key) {
            Some(RateLimitKey::Header(name)) => {
                decided.add(name, format!("rule {:?}'s rate limit counts by it", rule.name));
            }
            Some(RateLimitKey::Identity) => decided.add(
                "authorization",
                format!(
                    "rule {:?}'s rate limit counts by the caller's identity, which may be its bearer token",
                    rule.name
                ),
            ),
            _ => {}
        }
    }
    for (k, raw) in raws.iter().enumerate() {
        if let Some(t) = &raw.transform {
            let tp = format!("{path}.rule[{k}].transform");
            out[k].transform = Some(transform::transform(d, &tp, t, &out[k], &decided));
        }
    }
    out.sort_by_key(|r| r.priority);
    out
}

fn matcher(d: &mut Diags, path: &str, raw: &RawMatch) -> Match {
    let method = raw.method.as_ref().map(|m| {
        let upper = m.to_ascii_uppercase();
        if !METHODS.contains(&upper.as_str()) {
            d.err(
                &format!("{path}.method"),
                format!("{m:?} is not one of {}", METHODS.join(" ")),
            );
        }
        upper
    });
    let path_match = raw
        .path
        .as_ref()
        .and_then(|p| path_matcher(d, &format!("{path}.path"), p));
    let mut headers = Vec::new();
    if let Some(list) = &raw.headers {
        if list.len() > 5 {
            d.err(
                &format!("{path}.headers"),
                format!("{} header matches, at most 5 are allowed", list.len()),
            );
        }
        for (i, h) in list.iter().enumerate() {
            if let Some(h) = header_matcher(d, &format!("{path}.headers[{i}]"), h) {
                headers.push(h);
            }
        }
    }
    Match {
        method,
        path: path_match,
        headers,
    }
}

/// The one present of several alternative keys, or a report that there is not exactly one.
fn exactly_one<'r>(
    d: &mut Diags,
    path: &str,
    options: &[(&str, StringMatchKind, &'r Option<String>)],
) -> Option<(StringMatchKind, &'r String)> {
    let present: Vec<_> = options
        .iter()
        .filter_map(|(_, k, v)| v.as_ref().map(|v| (*k, v)))
        .collect();
    if present.len() == 1 {
        return present.into_iter().next();
    }
    let names: Vec<&str> = options.iter().map(|(n, _, _)| *n).collect();
    d.err(path, format!("needs exactly one of {}", names.join(", ")));
    None
}

fn check_len(d: &mut Diags, path: &str, value: &str, max: usize) {
    let n = value.chars().count();
    if n == 0 || n > max {
        d.err(path, format!("must be 1..={max} characters, not {n}"));
    }
}

fn path_matcher(d: &mut Diags, path: &str, raw: &RawPathMatch) -> Option<PathMatch> {
    let options = [
        ("exact", StringMatchKind::Exact, &raw.exact),
        ("prefix", StringMatchKind::Prefix, &raw.prefix),
    ];
    let (kind, value) = exactly_one(d, path, &options)?;
    let key = format!(
        "{path}.{}",
        if kind == StringMatchKind::Exact {
            "exact"
        } else {
            "prefix"
        }
    );
    check_len(d, &key, value, 200);
    if !value.starts_with('/') {
        d.err(&key, format!("{value:?} must start with \"/\""));
    }
    Some(PathMatch {
        kind,
        value: value.clone(),
        case_sensitive: raw.case_sensitive.unwrap_or(false),
    })
}

fn header_matcher(d: &mut Diags, path: &str, raw: &RawHeaderMatch) -> Option<HeaderMatch> {
    let name_path = format!("{path}.name");
    let name = fields::required(d, &name_path, &raw.name).to_ascii_lowercase();
    if raw.name.is_some() {
        check_len(d, &name_path, &name, 100);
        if !name.is_empty() && !fields::header_name(&name) {
            d.err(
                &name_path,
                format!("{name:?} is not a valid HTTP header name"),
            );
        }
    }
    let options = [
        ("exact", StringMatchKind::Exact, &raw.exact),
        ("prefix", StringMatchKind::Prefix, &raw.prefix),
        ("contains", StringMatchKind::Contains, &raw.contains),
    ];
    let (kind, value) = exactly_one(d, path, &options)?;
    let which = match kind {
        StringMatchKind::Exact => "exact",
        StringMatchKind::Prefix => "prefix",
        StringMatchKind::Contains => "contains",
    };
    check_len(d, &format!("{path}.{which}"), value, 200);
    Some(HeaderMatch {
        name,
        kind,
        value: value.clone(),
        case_sensitive: raw.case_sensitive.unwrap_or(false),
    })
}

/// `on`: the listener's protocol and port.
pub(crate) fn action(
    d: &mut Diags,
    ctx: &Ctx,
    path: &str,
    raw: &RawAction,
    on: (ListenerProtocol, u16),
) -> Action {
    let protocol = on.0;
    let passthrough = |d: &mut Diags, key: &str| {
        if protocol == ListenerProtocol::TlsPassthrough {
            d.err(
                key,
                "a tls_passthrough listener can only forward: it does not speak HTTP",
            );
        }
    };
    match (&raw.forward, &raw.fixed_response, &raw.redirect) {
        (Some(list), None, None) => {
            Action::Forward(forward(d, ctx, &format!("{path}.forward"), list, protocol))
        }
        (None, None, Some(r)) => {
            let rp = format!("{path}.redirect");
            passthrough(d, &rp);
            Action::Redirect(super::redirect::redirect(d, &rp, r, on))
        }
        (None, Some(fr), None) => {
            let fp = format!("{path}.fixed_response");
            passthrough(d, &fp);
            let status = fields::to_u16(fields::required_int_in(
                d,
                &format!("{fp}.status"),
                fr.status,
                100,
                599,
            ));
            Action::FixedResponse(FixedResponse {
                status,
                body: fr.body.clone(),
                content_type: fr.content_type.clone(),
            })
        }
        _ => {
            d.err(
                path,
                "an action needs exactly one of forward, fixed_response or redirect",
            );
            Action::Forward(Vec::new())
        }
    }
}

fn forward(
    d: &mut Diags,
    ctx: &Ctx,
    path: &str,
    list: &[crate::raw::RawForward],
    protocol: ListenerProtocol,
) -> Vec<WeightedTargetGroup> {
    if list.is_empty() {
        d.err(path, "must name at least one target group");
    }
    let mut seen = Unique::new();
    let mut out = Vec::new();
    for (i, f) in list.iter().enumerate() {
        let fp = format!("{path}[{i}]");
        let tgp = format!("{fp}.target_group");
        let weight = fields::to_u16(fields::int_in(
            d,
            &format!("{fp}.weight"),
            f.weight,
            1,
            0,
            999,
        ));
        let name = fields::required(d, &tgp, &f.target_group).to_string();
        if f.target_group.is_none() {
            continue;
        }
        seen.check(d, &tgp, name.clone(), format!("forward[{i}]"), |first| {
            format!("{name:?} is already listed in {first}")
        });
        match ctx.target_groups.get(&name) {
            None => d.err(&tgp, format!("unknown target group {name:?}")),
            Some(Some(tg)) => {
                let tcp = *tg == TargetProtocol::Tcp;
                if tcp && protocol != ListenerProtocol::TlsPassthrough {
                    d.err(&tgp, format!("target group {name:?} is tcp; only tls_passthrough listeners can forward to it"));
                } else if !tcp && protocol == ListenerProtocol::TlsPassthrough {
                    d.err(
                        &tgp,
                        format!(
                            "a tls_passthrough listener needs a tcp target group, {name:?} is not"
                        ),
                    );
                }
            }
            Some(None) => {} // the group itself is broken and already reported
        }
        out.push(WeightedTargetGroup {
            target_group: name,
            weight,
        });
    }
    if !out.is_empty()
        && out.iter().all(|w| w.weight == 0)
        && list.iter().all(|f| f.weight.is_some())
    {
        d.err(
            path,
            "every weight is 0, so no target group would take traffic",
        );
    }
    out
}
