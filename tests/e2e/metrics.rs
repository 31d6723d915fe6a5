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
