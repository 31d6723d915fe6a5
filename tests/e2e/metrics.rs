//! `/metrics` after known traffic: exact counters, labels from the configuration.

use crate::support::client::{self, get, send};
use crate::support::config::{fixed, forward_to, listener, rule, service, target_group, targets};
use crate::support::{free_port, Echo, Trellis};

#[tokio::test]
async fn request_counters_follow_service_listener_rule_and_status_class() {
    let echo = Echo::start("m").await;
    let port = free_port();
    let config = [
        service("shop", &["shop.internal"]),
        listener(port, &forward_to("g")),
        rule(
            "api",
            10,
            "{ path = { prefix = \"/api/\" } }",
            &forward_to("g"),
        ),
        rule(
            "gone",
            20,
            "{ path = { exact = \"/old\" } }",
            &fixed(410, "gone"),
        ),
        target_group("g", &targets(&[echo.addr()])),
    ]
    .concat();
    let trellis = Trellis::start(&config, &[port]).await;
    let c = client::http1();
    let at = |path: &str| {
        c.get(client::url(port, path))
            .header("host", "shop.internal")
    };
    for _ in 0..3 {
        assert_eq!(send(at("/api/x")).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(send(at("/old")).await.status, 410);
    }
    for _ in 0..4 {
        assert_eq!(send(at("/")).await.status, 200);
    }
    assert_eq!(send(at("/?status=503")).await.status, 503);
    for _ in 0..2 {
        // No service answers to this host.
        assert_eq!(get(&c, port, "/").await.status, 404);
    }

    let sample = |labels: &str| format!("trellis_requests_total{{{labels}}}");
    let expect = [
        (
            "code_class=\"2xx\",listener=\"web\",rule=\"api\",service=\"shop\"",
            3.0,
        ),
        (
            "code_class=\"4xx\",listener=\"web\",rule=\"gone\",service=\"shop\"",
            2.0,
        ),
        (
            "code_class=\"2xx\",listener=\"web\",rule=\"default\",service=\"shop\"",
            4.0,
        ),
        (
            "code_class=\"5xx\",listener=\"web\",rule=\"default\",service=\"shop\"",
            1.0,
        ),
        (
            "code_class=\"4xx\",listener=\"web\",rule=\"-\",service=\"-\"",
            2.0,
        ),
        (
            "code_class=\"5xx\",listener=\"web\",rule=\"api\",service=\"shop\"",
            0.0,
        ),
    ];
    for (labels, value) in expect {
        assert_eq!(
            trellis.metric(&sample(labels)).await,
            Some(value),
            "{labels}"
        );
    }
    let count = "trellis_request_duration_seconds_count{listener=\"web\",service=\"shop\"}";
    assert_eq!(trellis.metric(count).await, Some(10.0));
    let address = format!("address=\"127.0.0.1:{port}\"");
    let accepted = trellis
        .metric(&format!("trellis_connections_total{{{address}}}"))
        .await
        .unwrap();
    assert!(accepted >= 1.0);
    let open = trellis
        .metric(&format!("trellis_connections_active{{{address}}}"))
        .await
        .unwrap();
    assert!((1.0..=accepted).contains(&open), "{open} of {accepted}");
}

#[tokio::test]
async fn bytes_group_counters_errors_timeouts_and_target_states() {
    let echo = Echo::start("b").await;
    let silent = crate::support::servers::silent().await;
    let dead = crate::support::servers::closed_port_addr();
    let port = free_port();
    let check = "path = \"/health\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\nhealthy_threshold = 2\nunhealthy_threshold = 2";
    let config = [
        service("shop", &["*"]),
        listener(port, &forward_to("g")),
        rule(
            "gone",
            10,
            "{ path = { exact = \"/old\" } }",
            &fixed(410, "gone"),
        ),
        rule(
            "dead",
            20,
            "{ path = { prefix = \"/dead\" } }",
            &forward_to("dead"),
        ),
        rule(
            "slow",
            30,
            "{ path = { prefix = \"/slow\" } }",
            &forward_to("slow"),
        ),
        crate::support::config::checked_target_group("g", &targets(&[echo.addr()]), check, ""),
        target_group("dead", &targets(std::slice::from_ref(&dead))),
        crate::support::config::target_group_with(
            "slow",
            &targets(&[silent.addr()]),
            "response_timeout = \"200ms\"",
        ),
    ]
    .concat();
    let trellis = Trellis::start(&config, &[port]).await;
    trellis
        .wait_state(
            "g",
            &echo.addr(),
            "healthy",
            std::time::Duration::from_secs(10),
        )
        .await;
    let c = client::http1();
    let mut sent = 0;
    for body in ["abcde", "fghij"] {
        let reply = send(c.post(client::url(port, "/echo")).body(body)).await;
        assert_eq!(reply.status, 200);
        sent += reply.body.len();
    }
    let gone = send(c.get(client::url(port, "/old"))).await;
    assert_eq!(gone.status, 410);
    sent += gone.body.len();
    let dead_reply = send(c.get(client::url(port, "/dead"))).await;
    dead_reply.assert_trellis_error(502, "connect_failed");
    sent += dead_reply.body.len();
    let slow_reply = send(c.get(client::url(port, "/slow"))).await;
    slow_reply.assert_trellis_error(504, "upstream_timeout");
    sent += slow_reply.body.len();

    let labels = "listener=\"web\",service=\"shop\"";
    let expect = [
        (format!("trellis_bytes_received_total{{{labels}}}"), 10.0),
        (format!("trellis_bytes_sent_total{{{labels}}}"), sent as f64),
        (
            "trellis_target_group_requests_total{code_class=\"2xx\",target_group=\"g\"}".into(),
            2.0,
        ),
        (
            "trellis_target_group_requests_total{code_class=\"5xx\",target_group=\"dead\"}".into(),
            1.0,
        ),
        (
            "trellis_target_group_requests_total{code_class=\"5xx\",target_group=\"slow\"}".into(),
            1.0,
        ),
        (
            "trellis_target_group_request_duration_seconds_count{target_group=\"g\"}".into(),
            2.0,
        ),
        (
            "trellis_target_connection_errors_total{target_group=\"dead\"}".into(),
            1.0,
        ),
        (
            "trellis_target_connection_errors_total{target_group=\"g\"}".into(),
            0.0,
        ),
        (
            "trellis_request_timeouts_total{target_group=\"slow\"}".into(),
            1.0,
        ),
        (
            "trellis_request_timeouts_total{target_group=\"dead\"}".into(),
            0.0,
        ),
        (
            "trellis_target_group_targets{state=\"healthy\",target_group=\"g\"}".into(),
            1.0,
        ),
        (
            "trellis_target_group_targets{state=\"unhealthy\",target_group=\"g\"}".into(),
            0.0,
        ),
        (
            "trellis_target_group_targets{state=\"unavailable\",target_group=\"dead\"}".into(),
            1.0,
        ),
        ("trellis_build_info{version=\"0.1.0\"}".into(), 1.0),
    ];
    for (sample, value) in expect {
        assert_eq!(trellis.metric(&sample).await, Some(value), "{sample}");
    }
    let rss = trellis
        .metric("process_resident_memory_bytes")
        .await
        .expect("process metrics");
    assert!(rss > 1_000_000.0, "{rss}");
    // The allocator's own figures: what it holds is resident, and within what the process has.
    let allocated = trellis.metric("trellis_memory_allocated_bytes").await;
    let resident = trellis.metric("trellis_memory_resident_bytes").await;
    let (Some(allocated), Some(resident)) = (allocated, resident) else {
        panic!("allocator metrics: {allocated:?} {resident:?}");
    };
    assert!(
        allocated > 100_000.0 && allocated <= resident && resident <= rss,
        "allocated {allocated}, allocator resident {resident}, process {rss}"
    );

    // The status page's numbers: requests and 5xx per group, requests per target.
    let status = trellis.status().await;
    let group = |name: &str| {
        status["target_groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .unwrap()
            .clone()
    };
    let traffic = group("g")["traffic"].clone();
    assert_eq!(
        (&traffic["requests"], &traffic["errors"]),
        (&serde_json::json!(2), &serde_json::json!(0))
    );
    // The latency histogram the page takes its p50 and p99 from: cumulative, ending in an unbounded
    // bucket that holds every request.
    let latency = &traffic["latency_seconds"];
    let counts: Vec<u64> = latency["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    let le = latency["le"].as_array().unwrap();
    assert_eq!(counts.len(), le.len(), "{latency}");
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{latency}");
    assert_eq!(
        (counts.last(), le.last()),
        (Some(&2), Some(&serde_json::Value::Null))
    );
    assert_eq!(group("g")["targets"][0]["requests"], 2);
    let dead = group("dead")["traffic"].clone();
    assert_eq!(
        (dead["requests"].as_u64(), dead["errors"].as_u64()),
        (Some(1), Some(1))
    );
    // Its status and the sample's time on the server's clock, for rates that do not depend on the
    // browser's.
    assert!(status["sampled_ms"].as_f64().is_some(), "{status}");
    assert!(status["trellis"]["uptime_seconds"].as_f64().unwrap() >= 0.0);
}
