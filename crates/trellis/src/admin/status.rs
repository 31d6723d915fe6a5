//! `GET /v1/status`: the configuration as it runs, with every target's state, why, and since when.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use trellis_config::{
    Action, Algorithm, HeaderEdits, HealthCheckProtocol, ListenerProtocol, TargetGroup,
    TargetProtocol, Transform,
};
use trellis_targets::{TargetRegistry, TargetView};

use crate::daemon::{Daemon, Drain, Running};

/// Milliseconds on a monotonic clock (from the first status served); only differences mean anything.
fn sampled() -> Duration {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed()
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

pub fn status(daemon: &Daemon) -> Value {
    let running = daemon.current();
    let config = &running.effective;
    let in_use = config.target_groups_in_use();
    let now = (Instant::now(), SystemTime::now());
    let draining = daemon.draining.list();
    let (ok, failed) = daemon.reload_counts();
    let mut groups: Vec<Value> = config
        .target_groups
        .iter()
        .map(|tg| {
            let leaving: Vec<_> = draining
                .iter()
                .filter(|((g, _), _)| *g == tg.name)
                .collect();
            let mut group = target_group(
                tg,
                in_use.contains(tg.name.as_str()),
                &running,
                &daemon.targets,
                &leaving,
                now,
            );
            let (requests, errors) = daemon.proxy.group_traffic(&tg.name);
            let latency = daemon.proxy.group_latency(&tg.name);
            group["traffic"] = json!({
                "requests": requests,
                "errors": errors,
                // Cumulative, as in /metrics: the page takes the difference between two polls. The
                // last bound is infinite, written as null.
                "latency_seconds": {
                    "le": latency.iter().map(|(le, _)| le.is_finite().then_some(*le)).collect::<Vec<_>>(),
                    "counts": latency.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
                },
            });
            group
        })
        .collect();
    // Groups gone from the configuration whose targets are still draining.
    let mut gone: Vec<&str> = draining
        .iter()
        .map(|((g, _), _)| g.as_str())
        .filter(|g| !config.target_groups.iter().any(|tg| tg.name == *g))
        .collect();
    gone.dedup();
    for name in gone {
        let targets: Vec<Value> = draining
            .iter()
            .filter(|((g, _), _)| g == name)
            .map(|((_, address), drain)| {
                draining_target(*address, drain, &daemon.targets, name, now)
            })
            .collect();
        groups.push(json!({"name": name, "removed": true, "targets": targets}));
    }
    let uptime = now.1.duration_since(daemon.started).unwrap_or_default();
    let mut status = json!({
        "version": env!("CARGO_PKG_VERSION"),
        // The server's monotonic clock, in milliseconds, when these counters were read: rates are
        // counter differences over its differences, whatever the browser's clock does.
        "sampled_ms": round_ms(sampled()),
        "trellis": {
            "version": env!("CARGO_PKG_VERSION"),
            "started_at": humantime::format_rfc3339_seconds(daemon.started).to_string(),
            "uptime_seconds": round(uptime),
        },
        "config": {
            "path": running.file.source.display().to_string(),
            "sha256": running.sha256,
            // Milliseconds: a registration right after a reload is still seen to come after it.
            "loaded_at": humantime::format_rfc3339_millis(running.loaded_at).to_string(),
            "changed_at": humantime::format_rfc3339_millis(running.changed_at).to_string(),
            "reloads": {"ok": ok, "error": failed},
            "state_dir": daemon.state_dir().display().to_string(),
        },
        "services": config.services.iter().map(|s| json!({
            "name": s.name,
            "hosts": s.hosts.iter().map(|h| match h {
                trellis_config::HostPattern::Exact(h) => h.clone(),
                trellis_config::HostPattern::Suffix(s) => format!("*{s}"),
                trellis_config::HostPattern::Any => "*".to_string(),
            }).collect::<Vec<_>>(),
            "listeners": s.listeners.iter().map(|l| json!({
                "name": l.name,
                "protocol": match l.protocol {
                    ListenerProtocol::Http => "http",
                    ListenerProtocol::Https => "https",
                    ListenerProtocol::TlsPassthrough => "tls_passthrough",
                },
                "address": l.socket_addr().to_string(),
                "rules": l.rules.iter().map(|r| {
                    let mut rule = json!({
                        "name": r.name,
                        "priority": r.priority,
                        "action": action(&r.action),
                    });
                    if let Some(t) = &r.transform {
                        rule["transform"] = transform(t);
                    }
                    rule
                }).collect::<Vec<_>>(),
                "default_action": action(&l.default_action),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "target_groups": groups,
        "scaling_groups": daemon
            .scaling
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|g| g.get())
            .collect::<Vec<_>>(),
    });
    if let Some(fleet) = daemon.fleet_status() {
        status["fleet"] = fleet;
    }
    status
}

fn action(a: &Action) -> Value {
    match a {
        Action::Forward(groups) => json!({
            "forward": groups.iter().map(|g| json!({"target_group": g.target_group, "weight": g.weight})).collect::<Vec<_>>()
        }),
        Action::FixedResponse(f) => json!({"fixed_response": {"status": f.status}}),
        Action::Redirect(r) => json!({"redirect": {"status": r.status, "location": r.to_string()}}),
    }
}

/// What a rule's transform changes: the new path prefix, and the header names of each edit.
fn transform(t: &Transform) -> Value {
    let names = |list: &[(String, String)]| list.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    let edits =
        |e: &HeaderEdits| json!({"set": names(&e.set), "add": names(&e.add), "remove": e.remove});
    json!({
        "path_prefix": t.path_prefix,
        "request_headers": edits(&t.request_headers),
        "response_headers": edits(&t.response_headers),
    })
}

fn target_group(
    tg: &TargetGroup,
    in_use: bool,
    running: &Running,
    registry: &TargetRegistry,
    leaving: &[&((String, SocketAddr), Drain)],
    now: (Instant, SystemTime),
) -> Value {
    let hc = &tg.health_check;
    let views: Vec<(SocketAddr, u16, Option<TargetView>)> = tg
        .targets
        .iter()
        .map(|t| {
            let view = registry.get(&tg.name, t.address).map(|s| s.view());
            (t.address, t.weight, view)
        })
        .collect();
    let routable = views
        .iter()
        .filter(|(_, _, v)| {
            v.as_ref()
                .is_some_and(|v| v.health.state.routes() && v.ejected_until.is_none())
        })
        .count();
    json!({
        "name": tg.name,
        "protocol": match tg.protocol {
            TargetProtocol::Http => "http",
            TargetProtocol::Https => "https",
            TargetProtocol::Tcp => "tcp",
        },
        "algorithm": match tg.algorithm {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::LeastOutstanding => "least_outstanding",
        },
        "in_use": in_use,
        // https groups: how targets' certificates are verified (`verify: false` = insecure_skip_verify).
        "tls": tg.tls.as_ref().map(|tls| json!({
            "ca": tls.ca.as_ref().map(|ca| ca.display().to_string()),
            "sni": tls.sni,
            "verify": tls.verify,
        })),
        "health_check": {
            "enabled": hc.enabled,
            "protocol": match hc.protocol {
                HealthCheckProtocol::Http => "http",
                HealthCheckProtocol::Https => "https",
                HealthCheckProtocol::Tcp => "tcp",
            },
            "path": hc.path,
            "port": hc.port,
            "interval": fmt(hc.interval),
            "timeout": fmt(hc.timeout),
            "healthy_threshold": hc.healthy_threshold,
            "unhealthy_threshold": hc.unhealthy_threshold,
            "matcher": hc.matcher.text,
        },
        "retry": tg.retry.as_ref().map(|r| json!({
            "attempts": r.attempts,
            "on": retry_on(r.on),
            "methods": r.methods,
            "per_try_timeout": fmt(r.per_try_timeout.unwrap_or(tg.response_timeout)),
            "budget_percent": r.budget_percent,
            "max_replay_body": r.max_replay_body,
        })),
        "stickiness": tg.stickiness.as_ref().map(|st| json!({
            "type": match st.kind {
                trellis_config::StickinessKind::LbCookie => "lb_cookie",
                trellis_config::StickinessKind::AppCookie { .. } => "app_cookie",
            },
            "cookie_name": match &st.kind {
                trellis_config::StickinessKind::AppCookie { cookie_name } => Some(cookie_name.as_str()),
                trellis_config::StickinessKind::LbCookie => None,
            },
            "duration": fmt(st.duration),
        })),
        "slow_start": fmt(tg.slow_start),
        "concurrency": tg.concurrency.as_ref().map(|c| json!({
            "max_per_target": c.max_per_target,
            "queue": c.queue,
            "queue_timeout": fmt(c.queue_timeout),
            // Requests waiting for a slot now.
            "waiting": registry.group(&tg.name).queue.waiting(),
        })),
        "routable_targets": routable,
        // ALB's behaviour: a group with targets but none routable sends traffic to all of them.
        "failing_open": in_use && routable == 0 && !tg.targets.is_empty(),
        "targets": views.into_iter()
            .map(|(address, weight, view)| {
                let mut t = target(address, weight, view, now);
                t["source"] = json!(running.source(&(tg.name.clone(), address)).as_str());
                t
            })
            .chain(leaving.iter().map(|((_, address), drain)| draining_target(*address, drain, registry, &tg.name, now)))
            .collect::<Vec<_>>(),
    })
}

/// A retry policy's `on`, as written in the configuration.
fn retry_on(on: trellis_config::RetryOn) -> Vec<&'static str> {
    [
        (on.server_error, "5xx"),
        (on.gateway_error, "gateway_error"),
        (on.reset, "reset"),
        (on.timeout, "timeout"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect()
}

fn draining_target(
    address: SocketAddr,
    drain: &Drain,
    registry: &TargetRegistry,
    group: &str,
    now: (Instant, SystemTime),
) -> Value {
    let view = registry.get(group, address).map(|s| s.view());
    let mut t = target(address, drain.weight, view, now);
    t["source"] = json!(drain.source.as_str());
    t["drain_deadline_seconds"] = json!(round(drain.deadline.saturating_duration_since(now.0)));
    t
}

fn target(
    address: SocketAddr,
    weight: u16,
    view: Option<TargetView>,
    (now, wall): (Instant, SystemTime),
) -> Value {
    let Some(v) = view else {
        return json!({"address": address.to_string(), "weight": weight, "state": "initial", "reason": "not yet registered"});
    };
    let in_state = now.saturating_duration_since(v.health.since);
    json!({
        "address": address.to_string(),
        "weight": weight,
        "state": v.health.state.as_str(),
        "reason": v.health.reason,
        "since": humantime::format_rfc3339_seconds(wall - in_state).to_string(),
        "in_state_seconds": round(in_state),
        "in_flight": v.in_flight,
        "requests": v.completed,
        "ejected": v.ejected_until.is_some(),
        "ejected_for_seconds": v.ejected_until.map(|until| round(until.saturating_duration_since(now))),
        "ejections": v.ejections,
        "consecutive_passes": v.health.consecutive_passes,
        "consecutive_failures": v.health.consecutive_failures,
        "last_check": v.health.last_probe.map(|(probe, at)| json!({
            "passed": probe.passed,
            "detail": probe.detail,
            "seconds_ago": round(now.saturating_duration_since(at)),
        })),
    })
}

fn fmt(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn round(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}
