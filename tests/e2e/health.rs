//! Active health checks, target states, fail-open and passive ejection, seen from outside: through
//! `/v1/status`, `/metrics`, the log, and where requests land.

use std::time::{Duration, Instant};

use crate::support::client::{self, get, served_sequence, tally};
use crate::support::config::{
    checked_target_group, forward_to, listener, rule, service, target_group, targets,
};
use crate::support::servers::{closed_port_addr, silent, Switchable};
use crate::support::{eventually, free_port, Echo, Trellis};

/// Probes every 200ms, each given 100ms; two failures make a target unhealthy, two passes healthy again.
const FAST_CHECK: &str = "path = \"/health\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\n\
                          healthy_threshold = 2\nunhealthy_threshold = 2\nmatcher = \"200-299\"";

const WAIT: Duration = Duration::from_secs(10);

fn one_group(port: u16, group: &str) -> String {
    format!(
        "{}{}",
        service("web", &["*"]),
        listener(port, &forward_to(group))
    )
}

#[tokio::test]
async fn refused_silent_and_failing_targets_go_unhealthy_with_their_reason() {
    let good = Switchable::start("good").await;
    let failing = Switchable::start("failing").await;
    failing.set_health(500);
    let quiet = silent().await;
    let refused = closed_port_addr();
    let addrs = [good.addr(), failing.addr(), quiet.addr(), refused.clone()];
    let port = free_port();
    let config =
        one_group(port, "web") + &checked_target_group("web", &targets(&addrs), FAST_CHECK, "");
    let trellis = Trellis::start(&config, &[port]).await;

    let t = trellis
        .wait_state("web", &good.addr(), "healthy", WAIT)
        .await;
    assert_eq!(t["reason"], "status 200");
    let t = trellis
        .wait_state("web", &failing.addr(), "unhealthy", WAIT)
        .await;
    assert_eq!(t["reason"], "status 500 not in 200-299");
    assert!(
        failing.health_checks() >= 2,
        "unhealthy only after unhealthy_threshold probes"
    );
    let t = trellis
        .wait_state("web", &quiet.addr(), "unhealthy", WAIT)
        .await;
    assert_eq!(t["reason"], "timeout after 100ms");
    let t = trellis.wait_state("web", &refused, "unhealthy", WAIT).await;
    assert_eq!(t["reason"], "connect refused");
    assert!(t["in_state_seconds"].as_f64().is_some() && t["since"].is_string());

    // Only the healthy target takes traffic.
    let seq = served_sequence(&client::http1(), port, "/", 20).await;
    assert!(seq.iter().all(|s| s == "good"), "{seq:?}");
    assert_eq!(failing.requests(), 0);

    let healthy =
        |addr: &str| format!("trellis_target_healthy{{target=\"{addr}\",target_group=\"web\"}}");
    assert_eq!(trellis.metric(&healthy(&good.addr())).await, Some(1.0));
    assert_eq!(trellis.metric(&healthy(&refused)).await, Some(0.0));
    let flips = format!(
        "trellis_target_health_transitions_total{{state=\"unhealthy\",target=\"{refused}\",target_group=\"web\"}}"
    );
    assert_eq!(trellis.metric(&flips).await, Some(1.0));
}

#[tokio::test]
async fn a_flapping_target_follows_the_thresholds_and_gets_traffic_back() {
    let steady = Switchable::start("steady").await;
    let flappy = Switchable::start("flappy").await;
    let port = free_port();
    let check = FAST_CHECK.replace("healthy_threshold = 2", "healthy_threshold = 3");
    let config = one_group(port, "web")
        + &checked_target_group("web", &targets(&[steady.addr(), flappy.addr()]), &check, "");
    let trellis = Trellis::start(&config, &[port]).await;
    let c = client::http1();
    trellis
        .wait_state("web", &steady.addr(), "healthy", WAIT)
        .await;
    trellis
        .wait_state("web", &flappy.addr(), "healthy", WAIT)
        .await;

    for round in 0..2 {
        flappy.set_health(503);
        let before = flappy.health_checks();
        let t = trellis
            .wait_state("web", &flappy.addr(), "unhealthy", WAIT)
            .await;
        assert_eq!(t["reason"], "status 503 not in 200-299", "round {round}");
        assert!(flappy.health_checks() - before >= 2, "round {round}");
        let served = flappy.requests();
        let seq = served_sequence(&c, port, "/", 10).await;
        assert!(seq.iter().all(|s| s == "steady"), "round {round}: {seq:?}");
        assert_eq!(flappy.requests(), served);

        flappy.set_health(200);
        let before = flappy.health_checks();
        let t = trellis
            .wait_state("web", &flappy.addr(), "healthy", WAIT)
            .await;
        assert_eq!(t["reason"], "status 200");
        assert!(
            flappy.health_checks() - before >= 3,
            "healthy again only after healthy_threshold passes"
        );
        let seq = served_sequence(&c, port, "/", 10).await;
        assert_eq!(
            tally(&seq).get("flappy"),
            Some(&5),
            "round {round}: {seq:?}"
        );
    }
    let entered_healthy = format!(
        "trellis_target_health_transitions_total{{state=\"healthy\",target=\"{}\",target_group=\"web\"}}",
        flappy.addr()
    );
    assert_eq!(trellis.metric(&entered_healthy).await, Some(3.0));
}

#[tokio::test]
async fn a_group_with_no_healthy_target_fails_open_and_says_so_once() {
    let a = Switchable::start("a").await;
    let b = Switchable::start("b").await;
    a.set_health(500);
    b.set_health(500);
    let port = free_port();
    let config = one_group(port, "web")
        + &checked_target_group("web", &targets(&[a.addr(), b.addr()]), FAST_CHECK, "");
    let trellis = Trellis::start(&config, &[port]).await;
    trellis
        .wait_state("web", &a.addr(), "unhealthy", WAIT)
        .await;
    trellis
        .wait_state("web", &b.addr(), "unhealthy", WAIT)
        .await;

    // Both are unhealthy by their checks, but serve traffic: fail-open routes over both.
    let seq = served_sequence(&client::http1(), port, "/", 10).await;
    assert_eq!(tally(&seq).len(), 2, "{seq:?}");
    let status = trellis.status().await;
    assert_eq!(status["target_groups"][0]["failing_open"], true);
    let fail_open = "trellis_target_group_fail_open_total{target_group=\"web\"}";
    assert!(trellis.metric(fail_open).await.unwrap() >= 10.0);
    let logged = |stderr: &str| {
        stderr
            .matches("failing open over all registered targets")
            .count()
    };
    assert_eq!(logged(&trellis.stderr()), 1, "{}", trellis.stderr());

    // One recovers: traffic goes to it alone, and the end of fail-open is logged once too.
    a.set_health(200);
    trellis.wait_state("web", &a.addr(), "healthy", WAIT).await;
    let seq = served_sequence(&client::http1(), port, "/", 10).await;
    assert!(seq.iter().all(|s| s == "a"), "{seq:?}");
    assert_eq!(
        trellis.stderr().matches("no longer failing open").count(),
        1
    );
}

#[tokio::test]
async fn consecutive_5xx_eject_a_target_between_probes_until_its_time_is_up() {
    let good = Switchable::start("good").await;
    let bad = Switchable::start("bad").await;
    let port = free_port();
    // Probes every 30s: whatever happens in this test happens between two of them.
    let check = "path = \"/health\"\ninterval = \"30s\"\nhealthy_threshold = 2";
    let outlier = "[target_group.outlier_detection]\nconsecutive_failures = 3\n\
                   base_ejection_time = \"1s\"\nmax_ejection_percent = 50\n";
    let config = one_group(port, "web")
        + &checked_target_group("web", &targets(&[good.addr(), bad.addr()]), check, "")
        + outlier;
    let trellis = Trellis::start(&config, &[port]).await;
    trellis
        .wait_state("web", &good.addr(), "healthy", WAIT)
        .await;
    trellis
        .wait_state("web", &bad.addr(), "healthy", WAIT)
        .await;

    bad.set_traffic(500);
    let c = client::http1();
    let mut fives = 0;
    for _ in 0..20 {
        if get(&c, port, "/").await.status == 500 {
            fives += 1;
        }
    }
    assert_eq!(fives, 3, "three 500s in a row eject the target");
    let t = trellis.target("web", &bad.addr()).await;
    assert_eq!(t["ejected"], true, "{t:#}");
    assert_eq!(t["state"], "healthy", "its probes still pass: {t:#}");
    let ejections = format!(
        "trellis_target_ejections_total{{target=\"{}\",target_group=\"web\"}}",
        bad.addr()
    );
    assert_eq!(trellis.metric(&ejections).await, Some(1.0));

    // Fixed, it comes back by itself after base_ejection_time.
    bad.set_traffic(200);
    let ejected_at = Instant::now();
    eventually(WAIT, "the ejection to end", || async {
        (trellis.target("web", &bad.addr()).await["ejected"] == false).then_some(())
    })
    .await;
    assert!(ejected_at.elapsed() < Duration::from_secs(3));
    let seq = served_sequence(&c, port, "/", 10).await;
    assert_eq!(tally(&seq).get("bad"), Some(&5), "{seq:?}");
}

#[tokio::test]
async fn checks_off_is_unavailable_and_routed_and_an_unreferenced_group_is_unused() {
    let used = Echo::start("used").await;
    let idle = Switchable::start("idle").await;
    let port = free_port();
    let config = format!(
        "{}{}{}{}{}",
        service("web", &["*"]),
        listener(port, &forward_to("open")),
        rule(
            "never",
            1,
            "{ path = { exact = \"/never\" } }",
            "{ fixed_response = { status = 404 } }"
        ),
        target_group("open", &targets(&[used.addr()])),
        checked_target_group("spare", &targets(&[idle.addr()]), FAST_CHECK, ""),
    );
    let trellis = Trellis::start(&config, &[port]).await;
    let t = trellis.target("open", &used.addr()).await;
    assert_eq!(t["state"], "unavailable");
    assert_eq!(t["reason"], "health checks are disabled");
    let t = trellis.target("spare", &idle.addr()).await;
    assert_eq!(t["state"], "unused");
    assert_eq!(
        t["reason"],
        "no rule or default action forwards to this target group"
    );
    assert_eq!(get(&client::http1(), port, "/").await.status, 200);
    // Unused groups are not probed: four intervals pass without a check.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(idle.health_checks(), 0);
}

#[tokio::test]
async fn a_backend_killed_under_load_costs_no_request_and_comes_back_healthy() {
    let mut backends = [
        Some(Echo::start("one").await),
        Some(Echo::start("two").await),
        Some(Echo::start("three").await),
    ];
    let addrs: Vec<String> = backends.iter().flatten().map(Echo::addr).collect();
    let victim_port = backends[1].as_ref().unwrap().port;
    let victim = addrs[1].clone();
    let port = free_port();
    let interval = Duration::from_millis(300);
    let healthy_threshold = 2;
    let check = "path = \"/healthz\"\ninterval = \"300ms\"\ntimeout = \"200ms\"\n\
                 healthy_threshold = 2\nunhealthy_threshold = 2";
    let config = one_group(port, "web") + &checked_target_group("web", &targets(&addrs), check, "");
    let trellis = Trellis::start(&config, &[port]).await;
    for a in &addrs {
        trellis.wait_state("web", a, "healthy", WAIT).await;
    }

    // 8 clients, 125 requests each, keep-alive; the victim dies after a third of them.
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let sent = sent.clone();
        clients.push(tokio::spawn(async move {
            let c = client::http1();
            let mut failures = Vec::new();
            for _ in 0..125 {
                let reply = get(&c, port, "/").await;
                if reply.status != 200 {
                    failures.push(reply);
                }
                sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            failures
        }));
    }
    eventually(WAIT, "a third of the requests", || async {
        (sent.load(std::sync::atomic::Ordering::SeqCst) >= 333).then_some(())
    })
    .await;
    backends[1].take().unwrap().kill().await;
    let sent_at_kill = sent.load(std::sync::atomic::Ordering::SeqCst);
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.expect("client task"));
    }
    assert!(failures.is_empty(), "client-visible errors: {failures:#?}");
    assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), 1000);
    assert!(
        sent_at_kill < 900,
        "the load ran on after the kill ({sent_at_kill} sent before)"
    );
    let retried = trellis
        .metric("trellis_retries_total{reason=\"connect\",target_group=\"web\"}")
        .await
        .unwrap_or(0.0)
        + trellis
            .metric("trellis_retries_total{reason=\"reset\",target_group=\"web\"}")
            .await
            .unwrap_or(0.0);
    eprintln!("killed after {sent_at_kill} requests; {retried} retried");
    trellis.wait_state("web", &victim, "unhealthy", WAIT).await;

    // Back on the same port: healthy within healthy_threshold × interval plus one interval.
    let revived = Echo::start_on("two-again", victim_port).await;
    let back = Instant::now();
    trellis.wait_state("web", &victim, "healthy", WAIT).await;
    let took = back.elapsed();
    let bound = interval * (healthy_threshold + 1);
    // On top of the bound: each probe's own duration (the next delay starts after it) and timer lateness
    // on a loaded two-core machine; the exact bound is proven under simulated time in trellis-health.
    assert!(
        took <= bound + Duration::from_millis(250),
        "healthy after {took:?}, bound {bound:?}"
    );
    let seq = served_sequence(&client::http1(), port, "/", 9).await;
    assert_eq!(tally(&seq).get("two-again"), Some(&3), "{seq:?}");
    drop(revived);
}
