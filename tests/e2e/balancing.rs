//! Weighted forwarding between target groups, weighted targets within a group, least outstanding.
//!
//! Smooth weighted round robin is deterministic: with one worker and sequential requests, every aligned
//! window of (sum of weights) requests holds each choice exactly weight times.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::client::{self, served_sequence, tally};
use crate::support::config::{
    forward, forward_to, listener, service, target_group, target_group_with, targets,
};
use crate::support::servers::Tracking;
use crate::support::{eventually, free_port, Echo, Options, Trellis};

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_string(), *n))
        .collect()
}

/// Asserts each aligned window of `window` picks holds exactly `want`.
fn assert_windows(seq: &[String], window: usize, want: &BTreeMap<String, usize>) {
    for (i, chunk) in seq.chunks(window).enumerate() {
        assert_eq!(&tally(chunk), want, "window {i} of {window}: {chunk:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_weights_split_exactly() {
    let (a, b, c) = (
        Echo::start("a").await,
        Echo::start("b").await,
        Echo::start("c").await,
    );
    let port = free_port();
    let cfg = [
        service("shop", &["*"]),
        listener(port, &forward(&[("tg-a", 90), ("tg-b", 10), ("tg-c", 0)])),
        target_group("tg-a", &targets(&[a.addr()])),
        target_group("tg-b", &targets(&[b.addr()])),
        target_group("tg-c", &targets(&[c.addr()])),
    ]
    .concat();
    let _trellis = Trellis::start_with(&cfg, &[port], Options::single_worker()).await;

    let seq = served_sequence(&client::http1(), port, "/", 200).await;
    assert_windows(&seq, 100, &counts(&[("a", 90), ("b", 10)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_weights_within_a_group_are_exact_and_smooth() {
    let (a, b, z) = (
        Echo::start("a").await,
        Echo::start("b").await,
        Echo::start("z").await,
    );
    let port = free_port();
    let weighted = format!(
        "[\"{}\", {{ address = \"{}\", weight = 3 }}, {{ address = \"{}\", weight = 0 }}]",
        a.addr(),
        b.addr(),
        z.addr()
    );
    let cfg = [
        service("shop", &["*"]),
        listener(port, &forward_to("web")),
        target_group("web", &weighted),
    ]
    .concat();
    let _trellis = Trellis::start_with(&cfg, &[port], Options::single_worker()).await;

    let seq = served_sequence(&client::http1(), port, "/", 40).await;
    assert_eq!(tally(&seq), counts(&[("a", 10), ("b", 30)]), "{seq:?}");
    // Smooth, not clumped: every aligned window of 4 picks has exactly one `a`.
    assert_windows(&seq, 4, &counts(&[("a", 1), ("b", 3)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_outstanding_avoids_the_busy_target() {
    let (one, two) = (Tracking::start("one").await, Tracking::start("two").await);
    let port = free_port();
    let cfg = [
        service("shop", &["*"]),
        listener(port, &forward_to("web")),
        target_group_with(
            "web",
            &targets(&[one.addr(), two.addr()]),
            "algorithm = \"least_outstanding\"",
        ),
    ]
    .concat();
    let _trellis = Trellis::start_with(&cfg, &[port], Options::single_worker()).await;

    // One slow request, held in flight by its backend for 3s.
    let slow =
        tokio::spawn(async move { client::get(&client::http1(), port, "/?delay=3000").await });
    eventually(
        Duration::from_secs(5),
        "the slow request to reach a backend",
        || {
            let n = one.arrived() + two.arrived();
            async move { (n == 1).then_some(()) }
        },
    )
    .await;
    let idle = if one.arrived() == 1 {
        &two.name
    } else {
        &one.name
    };

    // While it is in flight, every new request goes to the other target.
    let seq = served_sequence(&client::http1(), port, "/", 10).await;
    assert_eq!(tally(&seq), counts(&[(idle, 10)]), "{seq:?}");

    let slow = slow.await.expect("slow request task");
    assert_eq!(slow.status, 200);
    assert_ne!(
        &slow.served_by(),
        idle,
        "the slow request was served by the busy target"
    );
}
