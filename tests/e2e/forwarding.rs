//! What targets receive and what clients get back: identity headers, hop-by-hop stripping, streaming
//! bodies in constant memory, h2c on both sides with trailers, and upgraded connections.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::Full;
use hyper::Request;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::client::{self, get_request, h1_connect, h1_send, h2_connect, h2_send, url};
use crate::support::config::{
    forward_to, listener, rule, service, target_group, target_group_with, targets,
};
use crate::support::rss::RssWatch;
use crate::support::servers;
use crate::support::{free_port, raw, Echo, Trellis};

/// 256 MiB.
const BIG: u64 = 256 * 1024 * 1024;
/// Constant memory: trellis's RSS must stay under this while streaming [`BIG`] bytes.
const RSS_LIMIT_MIB: u64 = 100;

/// Service `shop` (any host) forwarding everything to target group `web` = the given targets.
async fn proxy_to(web: &str, tg_extra: &str) -> (Trellis, u16) {
    let port = free_port();
    let cfg = [
        service("shop", &["*"]),
        listener(port, &forward_to("web")),
        target_group_with("web", web, tg_extra),
    ]
    .concat();
    (Trellis::start(&cfg, &[port]).await, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_set_and_hop_by_hop_removed() {
    let echo = Echo::start("e1").await;
    let (_trellis, port) = proxy_to(&targets(&[echo.addr()]), "").await;

    let (mut conn, _) = h1_connect(port).await;
    let req = get_request(
        "/some/path?echo&x=1",
        &[
            ("host", "shop.internal"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-request-id", "req-123"),
            ("x-trellis-target", "service=forged;target-group=forged"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "secret"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "foo/1"),
            ("x-kept", "yes"),
        ],
    );
    let reply = h1_send(&mut conn, req).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.served_by(), "e1", "response headers reach the client");
    let seen = reply.json();
    let h = &seen["headers"];
    assert_eq!(seen["path"], "/some/path");
    assert_eq!(seen["query"], "echo&x=1");
    assert_eq!(seen["method"], "GET");
    assert_eq!(
        h["x-forwarded-for"],
        json!(["1.2.3.4, 127.0.0.1"]),
        "{seen}"
    );
    assert_eq!(h["x-forwarded-proto"], json!(["http"]), "{seen}");
    assert_eq!(h["x-forwarded-port"], json!([port.to_string()]), "{seen}");
    assert_eq!(h["x-request-id"], json!(["req-123"]), "{seen}");
    assert_eq!(
        h["x-trellis-target"],
        json!(["service=shop;target-group=web"]),
        "{seen}"
    );
    assert_eq!(h["x-kept"], json!(["yes"]), "{seen}");
    for hop in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "x-hop",
        "transfer-encoding",
    ] {
        assert!(
            h.get(hop).is_none(),
            "hop-by-hop header {hop} reached the target: {seen}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_generated_and_forwarded_for_created() {
    let echo = Echo::start("e1").await;
    let (_trellis, port) = proxy_to(&targets(&[echo.addr()]), "").await;
    let http = client::http1();

    let first = client::get(&http, port, "/?echo").await.json();
    let second = client::get(&http, port, "/?echo").await.json();
    assert_eq!(
        first["headers"]["x-forwarded-for"],
        json!(["127.0.0.1"]),
        "{first}"
    );
    let id = |seen: &serde_json::Value| {
        let ids = seen["headers"]["x-request-id"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(ids.len(), 1, "exactly one x-request-id: {seen}");
        ids[0].as_str().expect("string").to_owned()
    };
    let (a, b) = (id(&first), id(&second));
    assert!(!a.is_empty(), "generated x-request-id is empty");
    assert_ne!(a, b, "each request gets its own id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upload_streams_in_constant_memory() {
    let echo = Echo::start("e1").await;
    let (trellis, port) = proxy_to(&targets(&[echo.addr()]), "").await;
    let rss = RssWatch::start(trellis.pid());

    let chunk = Bytes::from(vec![b'u'; 64 * 1024]);
    let chunks = (BIG / chunk.len() as u64) as usize;
    let body = stream::iter((0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let req = client::http1()
        .post(url(port, "/upload?echo"))
        .body(reqwest::Body::wrap_stream(body));
    let reply = client::send(req).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["body_bytes"], json!(BIG));
    rss.assert_below_mib(RSS_LIMIT_MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_download_streams_in_constant_memory() {
    let echo = Echo::start("e1").await;
    let (trellis, port) = proxy_to(&targets(&[echo.addr()]), "").await;
    let rss = RssWatch::start(trellis.pid());

    let mut resp = client::http1()
        .get(url(port, &format!("/download?bytes={BIG}")))
        .send()
        .await
        .expect("download through trellis");
    assert_eq!(resp.status().as_u16(), 200);
    let mut received: u64 = 0;
    while let Some(chunk) = resp.chunk().await.expect("download chunk") {
        received += chunk.len() as u64;
    }
    assert_eq!(received, BIG);
    rss.assert_below_mib(RSS_LIMIT_MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_reach_http1_and_http2_target_groups() {
    let echo = Echo::start("e1").await;
    let port = free_port();
    let cfg = [
        service("shop", &["*"]),
        listener(port, &forward_to("modern")),
        rule(
            "legacy",
            1,
            r#"{ path = { prefix = "/h1" } }"#,
            &forward_to("legacy"),
        ),
        target_group("legacy", &targets(&[echo.addr()])),
        target_group_with(
            "modern",
            &targets(&[echo.addr()]),
            "protocol_version = \"http2\"",
        ),
    ]
    .concat();
    let _trellis = Trellis::start(&cfg, &[port]).await;
    let h2c = client::h2c();

    for (path, target_version) in [("/h2", "HTTP/2.0"), ("/h1", "HTTP/1.1")] {
        let resp = h2c
            .post(url(port, &format!("{path}?echo")))
            .body(vec![7u8; 100_000])
            .send()
            .await
            .expect("h2c request through trellis");
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        assert_eq!(resp.status().as_u16(), 200);
        let body = resp.bytes().await.expect("body");
        let seen: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(seen["version"], target_version, "{path}: {seen}");
        assert_eq!(seen["body_bytes"], 100_000, "{path}: {seen}");
        assert_eq!(seen["path"], path);
        assert_eq!(
            seen["headers"]["x-forwarded-proto"],
            json!(["http"]),
            "{seen}"
        );
    }
    // An HTTP/1.1 target needs exactly one Host, even though the client sent only `:authority`.
    let seen = client::get(&h2c, port, "/h1?echo").await.json();
    let hosts = seen["headers"]["host"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        hosts.len(),
        1,
        "host headers at the HTTP/1.1 target: {seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_target_trailers_reach_the_client() {
    let backend = servers::h2c_with_trailers().await;
    let (_trellis, port) =
        proxy_to(&targets(&[backend.addr()]), "protocol_version = \"http2\"").await;

    let mut h2 = h2_connect(port).await;
    let req = Request::post(format!("http://grpc.internal:{port}/pkg.Svc/Call"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .expect("request");
    let reply = h2_send(&mut h2, req).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("x-backend-protocol"), Some("h2"));
    assert_eq!(reply.text(), "ok");
    let trailers = reply
        .trailers
        .as_ref()
        .unwrap_or_else(|| panic!("no trailers: {reply:?}"));
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    assert_eq!(
        trailers.get("grpc-message").map(|v| v.as_bytes()),
        Some(&b"fine"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_tunnels_bytes_both_ways() {
    let backend = servers::upgrade_echo().await;
    let (_trellis, port) = proxy_to(&targets(&[backend.addr()]), "").await;

    let mut stream = raw::send(
        port,
        b"GET /ws HTTP/1.1\r\nHost: ws.internal\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    let (head, early) = raw::read_head(&mut stream).await;
    assert_eq!(raw::status_of(head.as_bytes()), 101, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    assert!(
        early.is_empty(),
        "bytes after the 101 head before we sent any: {early:?}"
    );

    for message in [
        &b"ping-1"[..],
        &[0u8, 1, 2, 255, 254][..],
        &[b'z'; 100_000][..],
    ] {
        stream
            .write_all(message)
            .await
            .expect("write through tunnel");
        let mut back = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
            .await
            .expect("echo within 5s")
            .expect("read through tunnel");
        assert_eq!(back, message);
    }

    // Closing our side closes the tunnel end to end.
    stream.shutdown().await.expect("shutdown write");
    let (rest, end, _) = raw::read_until_end(&mut stream, Duration::from_secs(5)).await;
    assert!(rest.is_empty(), "unexpected bytes: {rest:?}");
    assert_eq!(end, raw::End::Eof);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_target_group_forwarding_answers_hello() {
    // The simplest end-to-end path, with `target_group` defaults and the echo's plain answer.
    let echo = Echo::start("plain").await;
    let port = free_port();
    let cfg = [
        service("shop", &["*"]),
        listener(port, &forward_to("web")),
        target_group("web", &targets(&[echo.addr()])),
    ]
    .concat();
    let _trellis = Trellis::start(&cfg, &[port]).await;
    let reply = client::get(&client::http1(), port, "/").await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "hello from plain\n")
    );
    let status = client::get(&client::http1(), port, "/?status=418").await;
    assert_eq!(
        status.status, 418,
        "target statuses pass through: {status:?}"
    );
}
