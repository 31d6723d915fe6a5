//! Rate limiters across snapshots: handed on while their limit is unchanged, fresh when it changes,
//! one per service whatever its listeners.

use std::path::Path;
use std::sync::Arc;

use http::{HeaderMap, Method};
use trellis_targets::TargetRegistry;

use super::Snapshot;
use crate::rate_limit::{LimitId, RateLimiter};
use crate::Proxy;

const BASE: &str = r#"
[access_log]
destination = "off"

[[service]]
name = "s"
hosts = ["*"]
rate_limit = { requests_per_second = 100 }
  [[service.listener]]
  name = "a"
  protocol = "http"
  port = 8080
  default_action = { fixed_response = { status = 200 } }
    [[service.listener.rule]]
    name = "api"
    priority = 10
    match = { path = { prefix = "/api/" } }
    action = { fixed_response = { status = 200 } }
    rate_limit = { requests_per_second = 5, key = "header:x-key" }
  [[service.listener]]
  name = "b"
  protocol = "http"
  port = 8081
  default_action = { fixed_response = { status = 200 } }
"#;

fn config(text: &str) -> Arc<trellis_config::Config> {
    Arc::new(trellis_config::parse(text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}")))
}

fn limiter(s: &Snapshot, id: &LimitId) -> Arc<RateLimiter> {
    s.limiters()
        .find(|(i, _)| *i == id)
        .map(|(_, l)| l.clone())
        .unwrap_or_else(|| panic!("no limiter {id:?}"))
}

/// The limiters a request to `path` on `port` passes: (service's, rule's).
fn route_limiters(
    s: &Snapshot,
    port: u16,
    path: &str,
) -> (Option<Arc<RateLimiter>>, Option<Arc<RateLimiter>>) {
    let addr = ([0, 0, 0, 0], port).into();
    let service = s.port(addr).unwrap().service(Some(b"x")).unwrap();
    let route = service.route(&Method::GET, path, None, &HeaderMap::new());
    (
        route.limits.service.as_ref().map(|l| l.limiter.clone()),
        route.limits.rule.as_ref().map(|l| l.limiter.clone()),
    )
}

fn ids() -> (LimitId, LimitId) {
    (
        LimitId::Service("s".into()),
        LimitId::Rule {
            service: "s".into(),
            listener: "a".into(),
            rule: "api".into(),
        },
    )
}

#[test]
fn one_service_limiter_for_every_listener_and_route() {
    let proxy = Proxy::new(
        config(BASE),
        Arc::new(TargetRegistry::default()),
        &prometheus::Registry::new(),
    )
    .unwrap();
    let s = proxy.snapshot();
    let (service, rule) = ids();
    let (svc, api) = (limiter(&s, &service), limiter(&s, &rule));
    assert_eq!(s.limiters().count(), 2);
    let (a_api_svc, a_api_rule) = route_limiters(&s, 8080, "/api/x");
    assert!(Arc::ptr_eq(&a_api_svc.unwrap(), &svc));
    assert!(Arc::ptr_eq(&a_api_rule.unwrap(), &api));
    let (a_default, none) = route_limiters(&s, 8080, "/");
    assert!(Arc::ptr_eq(&a_default.unwrap(), &svc));
    assert!(none.is_none(), "the default action has no rule limit");
    let (b_default, _) = route_limiters(&s, 8081, "/api/x");
    assert!(
        Arc::ptr_eq(&b_default.unwrap(), &svc),
        "shared by listener b"
    );
}

#[test]
fn reloads_hand_on_unchanged_limiters_and_replace_changed_ones() {
    let proxy = Proxy::new(
        config(BASE),
        Arc::new(TargetRegistry::default()),
        &prometheus::Registry::new(),
    )
    .unwrap();
    let (service, rule) = ids();
    let first = proxy.snapshot();
    let (svc, api) = (limiter(&first, &service), limiter(&first, &rule));

    // The same file: the same limiters.
    proxy.swap(proxy.build(config(BASE)).unwrap());
    let s = proxy.snapshot();
    assert!(Arc::ptr_eq(&limiter(&s, &service), &svc));
    assert!(Arc::ptr_eq(&limiter(&s, &rule), &api));

    // Another rule on the listener (its routes are compiled again): both limiters kept.
    let more = BASE.replace(
        "  [[service.listener]]\n  name = \"b\"",
        "    [[service.listener.rule]]\n    name = \"other\"\n    priority = 20\n    match = { path = { prefix = \"/o\" } }\n    action = { fixed_response = { status = 204 } }\n  [[service.listener]]\n  name = \"b\"",
    );
    assert_ne!(more, BASE);
    proxy.swap(proxy.build(config(&more)).unwrap());
    let s = proxy.snapshot();
    assert!(Arc::ptr_eq(&limiter(&s, &service), &svc));
    assert!(Arc::ptr_eq(&limiter(&s, &rule), &api));
    assert!(Arc::ptr_eq(
        &route_limiters(&s, 8080, "/api/").1.unwrap(),
        &api
    ));

    // The service's limit changed: a fresh service limiter, in every route, even those of listeners
    // whose own configuration did not change; the rule's is kept.
    let faster = more.replace("requests_per_second = 100", "requests_per_second = 200");
    proxy.swap(proxy.build(config(&faster)).unwrap());
    let s = proxy.snapshot();
    let svc2 = limiter(&s, &service);
    assert!(!Arc::ptr_eq(&svc2, &svc));
    assert_eq!(svc2.config().requests_per_second, 200.0);
    assert!(Arc::ptr_eq(&limiter(&s, &rule), &api));
    for (port, path) in [(8080, "/api/x"), (8080, "/"), (8081, "/")] {
        let (route_svc, _) = route_limiters(&s, port, path);
        assert!(Arc::ptr_eq(&route_svc.unwrap(), &svc2), "{port}{path}");
    }

    // The rule's key changed: a fresh rule limiter.
    let by_ip = faster.replace(", key = \"header:x-key\"", "");
    proxy.swap(proxy.build(config(&by_ip)).unwrap());
    let s = proxy.snapshot();
    assert!(!Arc::ptr_eq(&limiter(&s, &rule), &api));
    assert!(Arc::ptr_eq(&limiter(&s, &service), &svc2));

    // Limits removed: no limiters, no limits on the routes.
    let none = by_ip
        .replace("rate_limit = { requests_per_second = 200 }\n", "")
        .replace("    rate_limit = { requests_per_second = 5 }\n", "");
    proxy.swap(proxy.build(config(&none)).unwrap());
    let s = proxy.snapshot();
    assert_eq!(s.limiters().count(), 0);
    let (a, b) = route_limiters(&s, 8080, "/api/x");
    assert!(a.is_none() && b.is_none());
}
