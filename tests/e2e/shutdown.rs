//! Graceful shutdown on SIGTERM: in-flight requests finish, new connections are refused, exit 0.

use std::time::{Duration, Instant};

use crate::support::client;
use crate::support::config::{fixed, forward_to, listener, service, target_group, targets};
use crate::support::servers::Tracking;
use crate::support::{accepts, eventually, free_port, Options, Trellis};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let backend = Tracking::start("slow").await;
    let port = free_port();
    let cfg = [
        service("shop", &["*"]),
        listener(port, &forward_to("web")),
        target_group("web", &targets(&[backend.addr()])),
    ]
    .concat();
    let opts = Options {
        shutdown_grace: Some("10s"),
        ..Options::default()
    };
    let mut trellis = Trellis::start_with(&cfg, &[port], opts).await;

    // A client that keeps its connection pooled after the answer: an idle keep-alive connection must
    // not hold the exit up.
    let http = client::http1();
    let slow = {
        let http = http.clone();
        tokio::spawn(async move { client::get(&http, port, "/?delay=2000").await })
    };
    eventually(
        Duration::from_secs(5),
        "the slow request to reach the backend",
        || {
            let arrived = backend.arrived();
            async move { (arrived == 1).then_some(()) }
        },
    )
    .await;

    let term_sent = Instant::now();
    trellis.signal(libc::SIGTERM);
    eventually(
        Duration::from_secs(2),
        "the listener to stop accepting after SIGTERM",
        || async { (!accepts(port).await).then_some(()) },
    )
    .await;
    assert!(
        !slow.is_finished(),
        "the slow request ended before its delay"
    );

    let reply = slow.await.expect("slow request task");
    assert_eq!(
        (reply.status, reply.served_by().as_str()),
        (200, "slow"),
        "{reply:?}"
    );
    assert_eq!(reply.text(), "hello\n");

    let status = trellis.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}\n{}",
        trellis.stderr()
    );
    assert!(
        term_sent.elapsed() < Duration::from_secs(5),
        "exit took {:?} after SIGTERM",
        term_sent.elapsed()
    );
    drop(http);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_trellis_exits_zero_promptly_on_sigterm() {
    let port = free_port();
    let cfg = [service("shop", &["*"]), listener(port, &fixed(200, "ok"))].concat();
    let mut trellis = Trellis::start(&cfg, &[port]).await;
    let reply = client::get(&client::http1(), port, "/").await;
    assert_eq!(reply.status, 200);

    let term_sent = Instant::now();
    trellis.signal(libc::SIGTERM);
    let status = trellis.wait_exit(Duration::from_secs(3)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}\n{}",
        trellis.stderr()
    );
    assert!(
        term_sent.elapsed() < Duration::from_secs(2),
        "exit took {:?}",
        term_sent.elapsed()
    );
}
