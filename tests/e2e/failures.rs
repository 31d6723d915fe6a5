//! Upstream failures: refused connects, empty groups, targets that answer too late or never.

use std::time::{Duration, Instant};

use crate::support::client::{self, served_sequence, tally};
use crate::support::config::targets;
use crate::support::servers::{self, closed_port_addr};
use crate::support::{Echo, Trellis};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_target_refused_is_502_connect_failed() {
    let refused = targets(&[closed_port_addr(), closed_port_addr()]);
    let (_trellis, port) = Trellis::shop_to_web(&refused, "").await;
    let http = client::http1();
    for _ in 0..3 {
        client::get(&http, port, "/")
            .await
            .assert_trellis_error(502, "connect_failed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connect_is_retried_on_another_target() {
    let live = Echo::start("live").await;
    let (_trellis, port) =
        Trellis::shop_to_web(&targets(&[closed_port_addr(), live.addr()]), "").await;

    // Round robin sends about half of these to the refused target first: each must be retried.
    let seq = served_sequence(&client::http1(), port, "/", 20).await;
    assert_eq!(tally(&seq).get("live"), Some(&20), "{seq:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_without_targets_is_503_no_targets() {
    let (_trellis, port) = Trellis::shop_to_web("[]", "").await;
    let reply = client::get(&client::http1(), port, "/").await;
    reply.assert_trellis_error(503, "no_targets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_that_never_answers_is_504_after_response_timeout() {
    let silent = servers::silent().await;
    let (_trellis, port) =
        Trellis::shop_to_web(&targets(&[silent.addr()]), "response_timeout = \"300ms\"").await;

    let started = Instant::now();
    let reply = client::get(&client::http1(), port, "/").await;
    let took = started.elapsed();
    reply.assert_trellis_error(504, "upstream_timeout");
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(5),
        "504 after {took:?}, response_timeout is 300ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answer_times_out_but_fast_one_passes() {
    let echo = Echo::start("slowpoke").await;
    let (_trellis, port) =
        Trellis::shop_to_web(&targets(&[echo.addr()]), "response_timeout = \"300ms\"").await;
    let http = client::http1();

    let started = Instant::now();
    let late = client::get(&http, port, "/?delay=2000").await;
    let took = started.elapsed();
    late.assert_trellis_error(504, "upstream_timeout");
    assert!(
        took < Duration::from_millis(1900),
        "504 only after {took:?}"
    );

    let quick = client::get(&http, port, "/?delay=50").await;
    assert_eq!(
        (quick.status, quick.served_by().as_str()),
        (200, "slowpoke"),
        "{quick:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_retried_at_most_twice() {
    let live = Echo::start("fourth").await;
    let refused = [closed_port_addr(), closed_port_addr(), closed_port_addr()];
    let all = [
        refused[0].clone(),
        refused[1].clone(),
        refused[2].clone(),
        live.addr(),
    ];
    let (_trellis, port) = Trellis::shop_to_web(&targets(&all), "").await;
    let http = client::http1();

    // Equal weights walk the targets in order: the first request tries the three refused ones (the
    // first attempt and two retries) and gives up before reaching the live fourth; the next request
    // starts at the fourth.
    client::get(&http, port, "/")
        .await
        .assert_trellis_error(502, "connect_failed");
    let next = client::get(&http, port, "/").await;
    assert_eq!(
        (next.status, next.served_by().as_str()),
        (200, "fourth"),
        "{next:?}"
    );
}
