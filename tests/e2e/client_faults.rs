//! A broken or slow client is the client's fault: `400`/`408`, never a failure of a healthy target
//! (never a step toward its passive ejection). And a client that stops reading, goes silent on HTTP/2
//! or leaves a WebSocket tunnel idle does not hold its connection (and an upstream one) forever.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::config::{forward_to, listener_with, service, target_group_with, targets};
use crate::support::raw::{self, End};
use crate::support::servers::upgrade_echo;
use crate::support::{eventually, free_port, Echo, Trellis};

/// One service on `port` forwarding to `target`, with listener `limits` and group `group_extra`; the
/// target is ejected after 2 failures in a row, alone as it is.
async fn setup(port: u16, target: &str, limits: &str, group_extra: &str) -> Trellis {
    let group = format!(
        "{group_extra}\n[target_group.outlier_detection]\nconsecutive_failures = 2\n\
         max_ejection_percent = 100\nbase_ejection_time = \"60s\"\n"
    );
    let config = [
        service("app", &["*"]),
        listener_with(port, &forward_to("g"), &format!("limits = {{ {limits} }}")),
        target_group_with("g", &targets(&[target.to_string()]), &group),
    ]
    .concat();
    Trellis::start(&config, &[port]).await
}

/// Waits until the open connections on the port are `n`. (The gauge's series exists from the start's
/// readiness probe, at 0: a test waits for 1 before it waits for 0.)
async fn gauged(trellis: &Trellis, active: &str, n: f64) {
    eventually(
        Duration::from_secs(10),
        &format!("{n} open connections"),
        || async { (trellis.metric(active).await == Some(n)).then_some(()) },
    )
    .await;
}

fn ejections(target: &str) -> String {
    format!("trellis_target_ejections_total{{target=\"{target}\",target_group=\"g\"}}")
}

/// The status of the answer to `request` (read until the connection ends), or `None` if it ended
/// without one.
async fn status_of(
    port: u16,
    request: &[u8],
    then: impl AsyncFnOnce(&mut tokio::net::TcpStream),
) -> Option<u16> {
    let mut stream = raw::send(port, request).await;
    then(&mut stream).await;
    let (data, _, _) = raw::read_until_end(&mut stream, Duration::from_secs(10)).await;
    (!data.is_empty()).then(|| raw::status_of(&data))
}

#[tokio::test]
async fn malformed_or_cut_bodies_are_the_clients_fault_and_never_eject_the_target() {
    let echo = Echo::start("a").await;
    let port = free_port();
    let trellis = setup(port, &echo.addr(), "", "").await;
    for _ in 0..6 {
        // A chunk size that is not hex.
        let status = status_of(
            port,
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nxx\r\n",
            async |_| {},
        )
        .await;
        assert_eq!(status, Some(400));
        // A body cut short: the client goes away mid-upload.
        let mut stream = raw::send(
            port,
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789",
        )
        .await;
        stream.shutdown().await.expect("half-close");
        let (data, _, _) = raw::read_until_end(&mut stream, Duration::from_secs(10)).await;
        if !data.is_empty() {
            assert_eq!(raw::status_of(&data), 400);
        }
    }
    let reply = crate::support::client::get(&crate::support::client::http1(), port, "/").await;
    assert_eq!(reply.status, 200, "the target still serves");
    assert_eq!(
        trellis
            .metric(&ejections(&echo.addr()))
            .await
            .unwrap_or(0.0),
        0.0
    );
    let log = eventually(Duration::from_secs(5), "a logged 400", || async {
        trellis
            .stdout()
            .lines()
            .find(|l| l.contains("\"responseCode\":400"))
            .map(str::to_string)
    })
    .await;
    assert!(log.contains("bad_request"), "{log}");
}

#[tokio::test]
async fn a_slow_upload_is_408_and_the_response_timeout_starts_once_the_body_is_sent() {
    let echo = Echo::start("a").await;
    let port = free_port();
    let trellis = setup(
        port,
        &echo.addr(),
        "body_timeout = \"1s\"",
        "response_timeout = \"500ms\"",
    )
    .await;

    // Stalled uploads, three at once: each 408 after body_timeout, none held against the target.
    let stalled = (0..3).map(|_| {
        status_of(
            port,
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234",
            async |_| {},
        )
    });
    for status in futures_util::future::join_all(stalled).await {
        assert_eq!(status, Some(408));
    }
    assert_eq!(
        trellis
            .metric(&ejections(&echo.addr()))
            .await
            .unwrap_or(0.0),
        0.0
    );

    // An upload that takes three times response_timeout but never stops for body_timeout is served:
    // the client is pacing itself, which is the point of this test.
    let started = Instant::now();
    let status = status_of(
        port,
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
        async |stream| {
            for byte in b"hello" {
                tokio::time::sleep(Duration::from_millis(300)).await;
                stream.write_all(&[*byte]).await.expect("upload");
            }
        },
    )
    .await;
    assert_eq!(status, Some(200));
    assert!(started.elapsed() > Duration::from_millis(1500));

    // The target's deadline being far away does not delay the client's.
    drop(trellis);
    let port = free_port();
    let trellis = setup(
        port,
        &echo.addr(),
        "body_timeout = \"1s\"",
        "response_timeout = \"60s\"",
    )
    .await;
    let started = Instant::now();
    let status = status_of(
        port,
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234",
        async |_| {},
    )
    .await;
    assert_eq!(status, Some(408));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(trellis);
    let port = free_port();
    let _trellis = setup(port, &echo.addr(), "", "response_timeout = \"500ms\"").await;

    // A target that does not answer within response_timeout after the body is still a 504.
    let status = status_of(
        port,
        b"POST /x?delay=2000 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        async |_| {},
    )
    .await;
    assert_eq!(status, Some(504));
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_after_send_timeout() {
    let echo = Echo::start("a").await;
    let port = free_port();
    let trellis = setup(port, &echo.addr(), "send_timeout = \"1s\"", "").await;
    let active = format!("trellis_connections_active{{address=\"127.0.0.1:{port}\"}}");
    // 2 GB: far more than the socket buffers hold; this client never reads a byte of it.
    let mut stream = raw::send(port, b"GET /?bytes=2000000000 HTTP/1.1\r\nHost: a\r\n\r\n").await;
    gauged(&trellis, &active, 1.0).await;
    gauged(&trellis, &active, 0.0).await;
    // What was buffered drains, then the connection ends: long before 2 GB.
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => total += n,
            Err(_) => panic!("the connection is still open after {total} bytes"),
        }
    }
    assert!(total < 200_000_000, "{total} bytes");
}

#[tokio::test]
async fn an_http2_client_that_grants_no_window_is_closed_after_send_timeout() {
    let echo = Echo::start("a").await;
    let port = free_port();
    let trellis = setup(port, &echo.addr(), "send_timeout = \"1s\"", "").await;
    let active = format!("trellis_connections_active{{address=\"127.0.0.1:{port}\"}}");
    // The response head is read, its body never: the stream's window (64 KiB) fills and stays full,
    // while the connection itself reads and answers everything else.
    let mut h2 = crate::support::client::h2_connect(port).await;
    h2.ready().await.expect("ready");
    let response = h2
        .send_request(crate::support::client::get_request(
            &format!("http://a:{port}/?bytes=200000000"),
            &[],
        ))
        .await
        .expect("response head");
    assert_eq!(response.status(), 200);
    gauged(&trellis, &active, 1.0).await;
    gauged(&trellis, &active, 0.0).await;
    drop(response);
}

#[tokio::test]
async fn a_silent_http2_client_is_closed_after_the_idle_goaway() {
    let echo = Echo::start("a").await;
    let port = free_port();
    let trellis = setup(
        port,
        &echo.addr(),
        "idle_timeout = \"300ms\", header_timeout = \"500ms\"",
        "",
    )
    .await;
    let active = format!("trellis_connections_active{{address=\"127.0.0.1:{port}\"}}");
    // A real HTTP/2 client makes one request, then its connection is no longer driven: it keeps the
    // socket open and answers nothing, not the PING that comes with trellis's idle GOAWAY.
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("handshake");
    let (silence, silenced) = tokio::sync::oneshot::channel::<()>();
    let driver = tokio::spawn(async move {
        tokio::pin!(conn);
        tokio::select! {
            _ = &mut conn => {}
            _ = silenced => std::future::pending::<()>().await,
        }
    });
    let reply = crate::support::client::h2_send(
        &mut h2,
        crate::support::client::get_request(&format!("http://a:{port}/"), &[]),
    )
    .await;
    assert_eq!(reply.status, 200);
    gauged(&trellis, &active, 1.0).await;
    let _ = silence.send(());
    gauged(&trellis, &active, 0.0).await;
    driver.abort();

    // The same without a single request: the preface and an empty SETTINGS, then nothing.
    let mut stream = raw::send(
        port,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    )
    .await;
    let (_, end, after) = raw::read_until_end(&mut stream, Duration::from_secs(10)).await;
    assert_ne!(end, End::StillOpen, "open after {after:?}");
}

#[tokio::test]
async fn an_idle_websocket_tunnel_closes_after_tunnel_idle_timeout() {
    let backend = upgrade_echo().await;
    let port = free_port();
    let _trellis = setup(port, &backend.addr(), "tunnel_idle_timeout = \"500ms\"", "").await;
    let mut stream = raw::send(
        port,
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    let (head, _) = raw::read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Traffic keeps it open...
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stream.write_all(b"ping").await.expect("write");
        let mut back = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
            .await
            .expect("echo within 5s")
            .expect("echo");
        assert_eq!(&back, b"ping");
    }
    // ...silence closes it.
    let (_, end, after) = raw::read_until_end(&mut stream, Duration::from_secs(10)).await;
    assert_ne!(end, End::StillOpen, "open after {after:?}");
}
