//! The health checker end to end: `apply` a configuration, let the probers probe real loopback
//! servers, and watch the targets' states, reasons and metrics follow.
//!
//! Exactness: a prober sends its next probe only after the previous result was counted, so each
//! server logs, with every request, the target's state at that moment — the state after exactly the
//! earlier probes. The flows below are asserted on that log, not on timing.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use support::{closed_port, eventually, parse, service, target_group, Server};
use trellis_config::Config;
use trellis_health::HealthChecker;
use trellis_targets::{TargetRegistry, TargetState, TargetView};

/// Fast checks: every 100ms, 50ms to answer.
const FAST: &str = "interval = \"100ms\"\ntimeout = \"50ms\"";

/// Long enough for four probes at [`FAST`]'s interval: only ever used to show that none came.
const FOUR_INTERVALS: Duration = Duration::from_millis(400);

struct Harness {
    registry: Arc<TargetRegistry>,
    prometheus: prometheus::Registry,
    checker: HealthChecker,
}

impl Harness {
    fn new() -> Harness {
        let registry = Arc::new(TargetRegistry::default());
        let prometheus = prometheus::Registry::new();
        let checker = HealthChecker::new(Arc::clone(&registry), &prometheus).unwrap();
        Harness {
            registry,
            prometheus,
            checker,
        }
    }

    fn apply(&self, config: &Config) {
        self.checker.apply(config);
    }

    fn view(&self, group: &str, addr: SocketAddr) -> TargetView {
        self.registry.stats(group, addr).view()
    }

    fn state(&self, group: &str, addr: SocketAddr) -> TargetState {
        self.view(group, addr).health.state
    }

    /// Makes `server` log the state of target (`group`, its address) with every request.
    fn watch(&self, group: &str, server: &Server) {
        server.watch(self.registry.stats(group, server.addr));
    }

    /// Waits for the target to reach `state`; returns its view then.
    async fn wait_state(&self, group: &str, addr: SocketAddr, state: TargetState) -> TargetView {
        eventually(&format!("{group}/{addr} to be {state}"), || {
            let view = self.view(group, addr);
            (view.health.state == state).then_some(view)
        })
        .await
    }

    fn metrics(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.prometheus.gather())
            .unwrap()
    }

    /// Waits until the metrics text has `line`.
    async fn wait_metric(&self, line: &str) {
        eventually(&format!("metric line {line:?}"), || {
            self.metrics().lines().any(|l| l == line).then_some(())
        })
        .await
    }
}

/// One group `web` of `targets`, forwarded to by the listener, with these health check lines.
fn web(targets: &[SocketAddr], health_check: &str) -> Config {
    parse(&(service(&["web"]) + &target_group("web", targets, health_check)))
}

fn states(log: &[support::Seen]) -> Vec<TargetState> {
    log.iter().map(|s| s.state.expect("watched")).collect()
}

fn healthy_gauge(group: &str, addr: SocketAddr, value: u8) -> String {
    format!("trellis_target_healthy{{target=\"{addr}\",target_group=\"{group}\"}} {value}")
}

#[tokio::test]
async fn a_passing_target_is_healthy_after_one_probe() {
    let h = Harness::new();
    let server = Server::http(200).await;
    h.watch("web", &server);
    h.apply(&web(
        &[server.addr],
        &format!("{FAST}\nhealthy_threshold = 5"),
    ));

    // Nothing has run yet: a new checked target waits in `initial`.
    let view = h.view("web", server.addr);
    assert_eq!(view.health.state, TargetState::Initial);
    assert_eq!(
        view.health.reason,
        "waiting for the first health check to pass"
    );
    assert!(!h.registry.stats("web", server.addr).is_routable());

    let view = h.wait_state("web", server.addr, TargetState::Healthy).await;
    assert_eq!(view.health.reason, "status 200");
    let (last, _) = view.health.last_probe.expect("a probe was counted");
    assert!(last.passed);
    assert_eq!(last.detail, "status 200");
    assert!(h.registry.stats("web", server.addr).is_routable());

    // From `initial`, one pass is enough whatever healthy_threshold says.
    let log = server.wait_requests(2).await;
    assert_eq!(
        states(&log[..2]),
        [TargetState::Initial, TargetState::Healthy]
    );
    let line = log[0].request_line();
    assert_eq!(line, "GET / HTTP/1.1");
}

#[tokio::test]
async fn a_failing_target_is_unhealthy_after_exactly_the_threshold() {
    let h = Harness::new();
    let server = Server::http(500).await;
    h.watch("web", &server);
    h.apply(&web(
        &[server.addr],
        &format!("{FAST}\nunhealthy_threshold = 3\nmatcher = \"200-299\""),
    ));

    let view = h
        .wait_state("web", server.addr, TargetState::Unhealthy)
        .await;
    assert_eq!(view.health.reason, "status 500 not in 200-299");

    // Probes 1 and 2 found it `initial`, and so did probe 3; probe 4 found it `unhealthy`.
    let log = server.wait_requests(4).await;
    assert_eq!(
        states(&log[..4]),
        [
            TargetState::Initial,
            TargetState::Initial,
            TargetState::Initial,
            TargetState::Unhealthy,
        ]
    );
    // Failures go on being counted afresh after the flip.
    let view = h.view("web", server.addr);
    assert_eq!(view.health.state, TargetState::Unhealthy);
    assert_eq!(view.health.consecutive_passes, 0);
    assert!(!h.registry.stats("web", server.addr).is_routable());
}

#[tokio::test]
async fn a_flapping_target_follows_both_thresholds() {
    let h = Harness::new();
    let server = Server::http(200).await;
    h.watch("web", &server);
    h.apply(&web(
        &[server.addr],
        &format!("{FAST}\nhealthy_threshold = 3\nunhealthy_threshold = 2"),
    ));

    h.wait_state("web", server.addr, TargetState::Healthy).await;
    server.set_status(500);
    let view = h
        .wait_state("web", server.addr, TargetState::Unhealthy)
        .await;
    assert_eq!(view.health.reason, "status 500 not in 200");
    server.set_status(200);
    let view = h.wait_state("web", server.addr, TargetState::Healthy).await;
    assert_eq!(view.health.reason, "status 200");

    // Replay the log: which probe saw which state, and what it was answered.
    let first_500 = server
        .log()
        .iter()
        .position(|s| s.status == 500)
        .expect("a 500 was served");
    let back_to_200 = first_500
        + server.log()[first_500..]
            .iter()
            .position(|s| s.status == 200)
            .expect("a 200 was served again");
    let log = server.wait_requests(back_to_200 + 4).await;
    let seen = states(&log);

    // Healthy, then two 500s in a row: still healthy after the first, unhealthy after the second.
    assert_eq!(seen[first_500], TargetState::Healthy);
    assert_eq!(log[first_500 + 1].status, 500);
    assert_eq!(seen[first_500 + 1], TargetState::Healthy);
    assert_eq!(seen[first_500 + 2], TargetState::Unhealthy);
    // Unhealthy, then three 200s in a row: healthy only after the third.
    assert!(log[back_to_200..back_to_200 + 3]
        .iter()
        .all(|s| s.status == 200));
    assert_eq!(
        seen[back_to_200..back_to_200 + 4],
        [
            TargetState::Unhealthy,
            TargetState::Unhealthy,
            TargetState::Unhealthy,
            TargetState::Healthy,
        ]
    );
}

#[tokio::test]
async fn a_refused_target_is_unhealthy() {
    let h = Harness::new();
    let addr = closed_port();
    h.apply(&web(&[addr], &format!("{FAST}\nunhealthy_threshold = 2")));
    let view = h.wait_state("web", addr, TargetState::Unhealthy).await;
    assert_eq!(view.health.reason, "connect refused");
    let (last, _) = view.health.last_probe.expect("a probe was counted");
    assert_eq!(
        (last.passed, last.detail.as_str()),
        (false, "connect refused")
    );
}

#[tokio::test]
async fn disabled_and_unused_groups_are_not_probed() {
    let h = Harness::new();
    let off = Server::http(200).await;
    let spare = Server::http(200).await;
    let config = parse(
        &(service(&["off"])
            + &target_group("off", &[off.addr], &format!("{FAST}\nenabled = false"))
            + &target_group("spare", &[spare.addr], FAST)),
    );
    h.apply(&config);

    let view = h.view("off", off.addr);
    assert_eq!(view.health.state, TargetState::Unavailable);
    assert_eq!(view.health.reason, "health checks are disabled");
    assert!(
        h.registry.stats("off", off.addr).is_routable(),
        "unavailable is routed as healthy"
    );
    let view = h.view("spare", spare.addr);
    assert_eq!(view.health.state, TargetState::Unused);
    assert_eq!(
        view.health.reason,
        "no rule or default action forwards to this target group"
    );
    assert!(!h.registry.stats("spare", spare.addr).is_routable());

    tokio::time::sleep(FOUR_INTERVALS).await;
    assert_eq!(off.connections(), 0, "checks are off");
    assert_eq!(spare.connections(), 0, "no rule uses the group");
    assert_eq!(h.state("off", off.addr), TargetState::Unavailable);
    assert_eq!(h.state("spare", spare.addr), TargetState::Unused);
}

#[tokio::test]
async fn checks_turned_on_start_over_from_initial() {
    let h = Harness::new();
    let server = Server::http(200).await;
    h.watch("web", &server);
    h.apply(&web(&[server.addr], &format!("{FAST}\nenabled = false")));
    assert_eq!(h.state("web", server.addr), TargetState::Unavailable);

    h.apply(&web(&[server.addr], FAST));
    let view = h.view("web", server.addr);
    assert_eq!(view.health.state, TargetState::Initial);
    assert_eq!(
        view.health.reason,
        "waiting for the first health check to pass"
    );
    let view = h.wait_state("web", server.addr, TargetState::Healthy).await;
    assert_eq!(view.health.reason, "status 200");
    assert_eq!(server.log()[0].state, Some(TargetState::Initial));
}

#[tokio::test]
async fn a_removed_target_is_no_longer_probed() {
    let h = Harness::new();
    let gone = Server::http(200).await;
    let kept = Server::http(200).await;
    h.apply(&web(&[gone.addr, kept.addr], FAST));
    h.wait_state("web", gone.addr, TargetState::Healthy).await;
    h.wait_state("web", kept.addr, TargetState::Healthy).await;
    h.wait_metric(&healthy_gauge("web", gone.addr, 1)).await;

    h.apply(&web(&[kept.addr], FAST));
    // A probe written just before the prober stopped may still be read by the server: let it land.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (gone_before, kept_before) = (gone.connections(), kept.connections());
    tokio::time::sleep(FOUR_INTERVALS).await;
    assert_eq!(
        gone.connections(),
        gone_before,
        "the removed target's prober stopped"
    );
    assert!(
        kept.connections() >= kept_before + 2,
        "the kept target is still probed: {kept_before} → {}",
        kept.connections()
    );

    // Its series went with it; the kept target's stays.
    let text = h.metrics();
    assert!(
        !text.contains(&format!("target=\"{}\"", gone.addr)),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == healthy_gauge("web", kept.addr, 1)),
        "{text}"
    );
}

#[tokio::test]
async fn a_group_no_rule_uses_any_more_is_unused_and_not_probed() {
    let h = Harness::new();
    let server = Server::http(200).await;
    let other = Server::http(200).await;
    let groups = |forward: &[&str]| {
        parse(
            &(service(forward)
                + &target_group("web", &[server.addr], FAST)
                + &target_group("other", &[other.addr], FAST)),
        )
    };
    h.apply(&groups(&["web", "other"]));
    h.wait_state("web", server.addr, TargetState::Healthy).await;

    h.apply(&groups(&["other"]));
    let view = h.view("web", server.addr);
    assert_eq!(view.health.state, TargetState::Unused);
    assert_eq!(
        view.health.reason,
        "no rule or default action forwards to this target group"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = server.connections();
    tokio::time::sleep(FOUR_INTERVALS).await;
    assert_eq!(server.connections(), before);
    assert_eq!(h.state("web", server.addr), TargetState::Unused);
    h.wait_metric(&healthy_gauge("web", server.addr, 0)).await;
}

#[tokio::test]
async fn new_check_settings_restart_the_prober_and_keep_the_state() {
    let h = Harness::new();
    let server = Server::http(200).await;
    h.apply(&web(&[server.addr], &format!("{FAST}\npath = \"/old\"")));
    h.wait_state("web", server.addr, TargetState::Healthy).await;

    h.apply(&web(&[server.addr], &format!("{FAST}\npath = \"/new\"")));
    assert_eq!(h.state("web", server.addr), TargetState::Healthy);
    let on = |log: &[support::Seen], path: &str| {
        log.iter()
            .filter(|s| s.request_line() == format!("GET {path} HTTP/1.1"))
            .count()
    };
    eventually("a probe of the new path", || {
        (on(&server.log(), "/new") > 0).then_some(())
    })
    .await;
    let old = on(&server.log(), "/old");
    tokio::time::sleep(FOUR_INTERVALS).await;
    let log = server.log();
    assert_eq!(on(&log, "/old"), old, "the old prober stopped");
    assert_eq!(on(&log, "/old") + on(&log, "/new"), log.len());
    assert_eq!(h.state("web", server.addr), TargetState::Healthy);
}

#[tokio::test]
async fn metrics_follow_the_states() {
    let h = Harness::new();
    let up = Server::http(200).await;
    let down = closed_port();
    let off = Server::http(200).await;
    let config = parse(
        &(service(&["web", "off"])
            + &target_group(
                "web",
                &[up.addr, down],
                &format!("{FAST}\nunhealthy_threshold = 1"),
            )
            + &target_group("off", &[off.addr], "enabled = false")),
    );
    h.apply(&config);

    // Right after apply: checked targets wait in `initial` (0), unavailable ones are routed (1).
    let text = h.metrics();
    for line in [
        healthy_gauge("web", up.addr, 0),
        healthy_gauge("web", down, 0),
        healthy_gauge("off", off.addr, 1),
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }

    h.wait_state("web", up.addr, TargetState::Healthy).await;
    h.wait_state("web", down, TargetState::Unhealthy).await;
    h.wait_metric(&healthy_gauge("web", up.addr, 1)).await;
    h.wait_metric(&healthy_gauge("web", down, 0)).await;

    let text = h.metrics();
    for line in [
        healthy_gauge("off", off.addr, 1),
        format!(
            "trellis_target_health_transitions_total{{state=\"healthy\",target=\"{}\",target_group=\"web\"}} 1",
            up.addr
        ),
        format!(
            "trellis_target_health_transitions_total{{state=\"unhealthy\",target=\"{down}\",target_group=\"web\"}} 1"
        ),
        format!(
            "trellis_target_health_transitions_total{{state=\"unavailable\",target=\"{}\",target_group=\"off\"}} 1",
            off.addr
        ),
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    let count = |result: &str| -> u64 {
        let prefix =
            format!("trellis_health_checks_total{{result=\"{result}\",target_group=\"web\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {prefix:?} in\n{text}"))
            .parse()
            .unwrap()
    };
    assert!(count("pass") >= 1);
    assert!(count("fail") >= 1);
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("trellis_health_checks_total{")
                && l.contains("target_group=\"off\"")),
        "the disabled group is never probed:\n{text}"
    );
}
