//! `[target_group.retry]`: failed tries made again on other targets, under each try's own timeout, for
//! the methods listed, within the group's retry budget; seen from a real client, counted in metrics and
//! in the access log.

use std::time::{Duration, Instant};

use crate::support::client::{self, tally};
use crate::support::config::targets;
use crate::support::recorder::Recorder;
use crate::support::servers::{self, Switchable, Tracking};
use crate::support::Trellis;

/// Only the retry policy decides here: no ejections (and, from the harness, no health checks).
const QUIET: &str = "outlier_detection = { enabled = false }\n";

/// The JSON access log lines trellis wrote to stdout so far.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_over_a_503_target_and_a_hanging_one_is_answered_by_the_good_one() {
    let failing = Switchable::start("failing").await;
    failing.set_traffic(503);
    let hanging = servers::silent().await;
    let good = Tracking::start("good").await;
    let extra = format!(
        "{QUIET}retry = {{ attempts = 2, on = [\"5xx\", \"reset\", \"timeout\"], per_try_timeout = \"300ms\" }}\n"
    );
    let (trellis, port) = Trellis::shop_to_web(
        &targets(&[failing.addr(), hanging.addr(), good.addr()]),
        &extra,
    )
    .await;

    let http = client::http1();
    let mut served = Vec::new();
    // Four: each may take two retries, and the budget's floor (10 within 10 s) covers eight.
    for i in 0..4 {
        let started = Instant::now();
        let reply = client::get(&http, port, "/").await;
        // Three tries of at most per_try_timeout (300ms) each; without it a try on the hanging target
        // would take response_timeout (60s).
        assert!(started.elapsed() < Duration::from_secs(5), "request {i}");
        assert_eq!(reply.status, 200, "request {i}: {reply:?}");
        served.push(reply.served_by());
    }
    assert_eq!(tally(&served).get("good"), Some(&4), "{served:?}");
    assert!(failing.requests() >= 1, "{}", failing.requests());
    assert_eq!(good.arrived(), 4);
    let metric =
        |reason: &str| format!("trellis_retries_total{{reason=\"{reason}\",target_group=\"web\"}}");
    assert!(trellis.metric(&metric("5xx")).await >= Some(1.0));
    assert!(trellis.metric(&metric("timeout")).await >= Some(1.0));
    // The access log says how many tries each request took, and which target answered.
    crate::support::eventually(Duration::from_secs(5), "4 access log lines", || async {
        (trellis.access_log_lines().len() >= 4).then_some(())
    })
    .await;
    let lines = trellis.access_log_lines();
    assert!(
        lines.iter().all(|l| l["targetIpPort"] == good.addr()),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l["tries"] == 3), "{lines:?}");
    assert!(
        lines.iter().all(|l| l["tries"].as_u64() >= Some(1)),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_sent_again_only_when_its_method_is_listed() {
    let failing = Switchable::start("failing").await;
    failing.set_traffic(503);
    let good = Recorder::start().await;
    let pair = targets(&[failing.addr(), good.addr()]);

    // Default methods (the idempotent ones): a POST that met the 503 gets the 503.
    let (_trellis, port) =
        Trellis::shop_to_web(&pair, &format!("{QUIET}retry = {{ on = [\"5xx\"] }}\n")).await;
    let http = client::http1();
    let mut statuses = Vec::new();
    for i in 0..6 {
        let body = format!("order {i}");
        let reply = client::send(http.post(client::url(port, "/orders")).body(body.clone())).await;
        statuses.push(reply.status);
    }
    let failed = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!(failed, failing.requests(), "{statuses:?}");
    assert!(
        failed > 0,
        "round robin sent some first to the failing target: {statuses:?}"
    );
    assert_eq!(good.take().len(), 6 - failed, "never sent twice");
    drop(_trellis);

    // Listed: every POST is answered by the good target, with its body intact.
    let before = failing.requests();
    let (_trellis, port) = Trellis::shop_to_web(
        &pair,
        &format!("{QUIET}retry = {{ on = [\"5xx\"], methods = [\"GET\", \"POST\"] }}\n"),
    )
    .await;
    for i in 0..6 {
        let body = format!("order {i}");
        let reply = client::send(http.post(client::url(port, "/orders")).body(body.clone())).await;
        assert_eq!(reply.status, 200, "POST {i}");
    }
    assert!(
        failing.requests() > before,
        "some went to the failing target first"
    );
    let received = good.take();
    let mut bodies: Vec<String> = received
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    bodies.sort();
    let expected: Vec<String> = (0..6).map(|i| format!("order {i}")).collect();
    assert_eq!(bodies, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_every_target_fails_retries_within_its_budget() {
    let a = Switchable::start("a").await;
    let b = Switchable::start("b").await;
    a.set_traffic(503);
    b.set_traffic(503);
    let (trellis, port) = Trellis::shop_to_web(
        &targets(&[a.addr(), b.addr()]),
        &format!("{QUIET}retry = {{ attempts = 5, on = [\"5xx\"], budget_percent = 20 }}\n"),
    )
    .await;
    let http = client::http1();
    let requests = 200;
    for i in 0..requests {
        let reply = client::get(&http, port, "/").await;
        // The last try's answer is what the client gets.
        assert_eq!(reply.status, 503, "request {i}");
        assert!(
            reply.header("x-trellis-error").is_none(),
            "the target's own 503"
        );
    }
    let tries = a.requests() + b.requests();
    // Without a budget: 6 tries each, 1,200 in all. With it: 20% more within any 10 s, or the floor
    // of 10 (once more should the run straddle two windows).
    assert!(tries <= requests + requests / 5 + 10, "{tries} tries");
    assert!(tries > requests, "some retries were made: {tries}");
    let refused = trellis
        .metric("trellis_retries_budget_exhausted_total{target_group=\"web\"}")
        .await
        .unwrap_or(0.0);
    assert!(refused > 0.0, "{refused}");
}
