//! `[target_group.concurrency]`: at most `max_per_target` requests in flight to a target; the ones over
//! it wait in the group's queue (up to `queue` of them, for up to `queue_timeout`), the rest are refused
//! at once with `503` `x-trellis-error: overloaded`.

use std::time::Duration;

use crate::support::client;
use crate::support::config::targets;
use crate::support::servers::Tracking;
use crate::support::{eventually, Trellis};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_slow_requests_against_two_slots_and_a_queue_of_three() {
    let slow = Tracking::start("slow").await;
    let (trellis, port) = Trellis::shop_to_web(
        &targets(&[slow.addr()]),
        "concurrency = { max_per_target = 2, queue = 3, queue_timeout = \"1s\" }\n",
    )
    .await;
    let metric = |name: &str| format!("{name}{{target_group=\"web\"}}");
    let refused = |reason: &str| {
        format!("trellis_requests_overloaded_total{{reason=\"{reason}\",target_group=\"web\"}}")
    };

    // Two in flight first (held for 3 s), so that the other eight find both slots taken.
    let mut held = Vec::new();
    for _ in 0..2 {
        let http = client::http1();
        held.push(tokio::spawn(async move {
            client::get(&http, port, "/?delay=3000").await
        }));
    }
    eventually(
        Duration::from_secs(5),
        "two requests at the target",
        || async { (slow.arrived() == 2).then_some(()) },
    )
    .await;
    let mut rest = Vec::new();
    for _ in 0..8 {
        let http = client::http1();
        rest.push(tokio::spawn(async move {
            client::get(&http, port, "/?delay=3000").await
        }));
    }
    // Three wait, visible in metrics and in the status.
    eventually(Duration::from_secs(5), "three waiting", || async {
        (trellis.metric(&metric("trellis_requests_waiting")).await == Some(3.0)).then_some(())
    })
    .await;
    let status = trellis.status().await;
    assert_eq!(
        status["target_groups"][0]["concurrency"],
        serde_json::json!({"max_per_target": 2, "queue": 3, "queue_timeout": "1s", "waiting": 3})
    );
    let mut statuses = Vec::new();
    for reply in rest {
        let reply = reply.await.expect("request task");
        reply.assert_trellis_error(503, "overloaded");
        statuses.push(reply.status);
    }
    for reply in held {
        assert_eq!(reply.await.expect("request task").status, 200);
    }
    assert_eq!(statuses.len(), 8);
    // Three waited their second in the queue, five found it full.
    assert_eq!(trellis.metric(&refused("queue_timeout")).await, Some(3.0));
    assert_eq!(trellis.metric(&refused("queue_full")).await, Some(5.0));
    assert_eq!(
        trellis
            .metric(&metric("trellis_requests_queued_total"))
            .await,
        Some(3.0)
    );
    assert_eq!(
        trellis.metric(&metric("trellis_requests_waiting")).await,
        Some(0.0)
    );
    // The target never saw more than its two.
    assert_eq!(slow.arrived(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_take_the_slots_as_they_free_up() {
    let one = Tracking::start("one").await;
    let (trellis, port) = Trellis::shop_to_web(
        &targets(&[one.addr()]),
        "concurrency = { max_per_target = 1, queue = 10, queue_timeout = \"30s\" }\n",
    )
    .await;
    let mut replies = Vec::new();
    for _ in 0..4 {
        let http = client::http1();
        replies.push(tokio::spawn(async move {
            client::get(&http, port, "/?delay=100").await
        }));
    }
    for reply in replies {
        assert_eq!(reply.await.expect("request task").status, 200);
    }
    assert_eq!(one.arrived(), 4);
    let queued = trellis
        .metric("trellis_requests_queued_total{target_group=\"web\"}")
        .await
        .unwrap_or(0.0);
    assert!(queued >= 1.0, "{queued}");
    // The access log says how long each waited.
    eventually(Duration::from_secs(5), "4 access log lines", || async {
        (trellis.access_log_lines().len() >= 4).then_some(())
    })
    .await;
    let waits: Vec<f64> = trellis
        .access_log_lines()
        .iter()
        .filter_map(|l| l["queueWaitDuration"].as_f64())
        .collect();
    assert_eq!(waits.len() as f64, queued, "{waits:?}");
    assert!(waits.iter().all(|w| *w > 0.0), "{waits:?}");
}
