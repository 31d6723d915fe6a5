//! Downstream limits: oversized heads, malformed requests, slow and idle clients.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::support::config::{fixed, listener, listener_with, service};
use crate::support::raw::{self, End};
use crate::support::{free_port, Trellis};

/// One service answering `200 ok` on `port`, with `extra` appended to the file.
async fn fixed_ok(port: u16, extra: &str) -> Trellis {
    let cfg = [
        service("shop", &["*"]),
        listener(port, &fixed(200, "ok")),
        extra.to_owned(),
    ]
    .concat();
    Trellis::start(&cfg, &[port]).await
}

/// `GET /` with one `x-big` header of `size` bytes.
fn request_with_header_of(size: usize) -> Vec<u8> {
    let mut req = b"GET / HTTP/1.1\r\nHost: shop.internal\r\nConnection: close\r\nX-Big: ".to_vec();
    req.resize(req.len() + size, b'a');
    req.extend_from_slice(b"\r\n\r\n");
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_head_over_64_kib_is_431() {
    let port = free_port();
    let _trellis = fixed_ok(port, "").await;
    assert_eq!(
        raw::exchange_status(port, &request_with_header_of(60_000)).await,
        200
    );
    assert_eq!(
        raw::exchange_status(port, &request_with_header_of(70_000)).await,
        431
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_line_is_400() {
    let port = free_port();
    let _trellis = fixed_ok(port, "").await;
    assert_eq!(raw::exchange_status(port, b"GARBAGE\r\n\r\n").await, 400);
}

/// Opens a connection, sends an unfinished head and reports how and when the connection ended.
async fn stall_head(port: u16, within: Duration) -> (End, Duration, Vec<u8>) {
    let mut stream = raw::send(port, b"GET / HTTP/1.1\r\n").await;
    let (data, end, after) = raw::read_until_end(&mut stream, within).await;
    (end, after, data)
}

fn assert_cut_off(port: u16, (end, after, data): &(End, Duration, Vec<u8>)) {
    assert_ne!(
        *end,
        End::StillOpen,
        "port {port}: slow client still connected after {after:?}"
    );
    assert!(
        *after >= Duration::from_millis(400),
        "port {port}: cut off after only {after:?} (header_timeout 500ms)"
    );
    if !data.is_empty() {
        // A server may say why it hangs up; if it does, it is a 408.
        assert_eq!(
            raw::status_of(data),
            408,
            "port {port}: {:?}",
            String::from_utf8_lossy(data)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_head_is_cut_off_after_header_timeout() {
    let (global, patient_port) = (free_port(), free_port());
    let cfg = [
        service("global", &["*"]),
        listener(global, &fixed(200, "ok")),
        service("patient", &["*"]),
        listener_with(
            patient_port,
            &fixed(200, "ok"),
            "limits = { header_timeout = \"10s\" }",
        ),
        "[limits]\nheader_timeout = \"500ms\"\n".to_owned(),
    ]
    .concat();
    let _trellis = Trellis::start(&cfg, &[global, patient_port]).await;

    let (cut, patient) = tokio::join!(
        stall_head(global, Duration::from_secs(5)),
        stall_head(patient_port, Duration::from_millis(1500)),
    );
    assert_cut_off(global, &cut);
    assert_eq!(
        patient.0,
        End::StillOpen,
        "a 10s header_timeout cut a client off after {:?}",
        patient.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_listener_header_timeout_overrides_the_default() {
    let (tight, relaxed) = (free_port(), free_port());
    let cfg = [
        service("tight", &["*"]),
        listener_with(
            tight,
            &fixed(200, "ok"),
            "limits = { header_timeout = \"500ms\" }",
        ),
        service("relaxed", &["*"]),
        listener(relaxed, &fixed(200, "ok")),
    ]
    .concat();
    let _trellis = Trellis::start(&cfg, &[tight, relaxed]).await;

    let (cut, kept) = tokio::join!(
        stall_head(tight, Duration::from_secs(5)),
        stall_head(relaxed, Duration::from_millis(1500)),
    );
    assert_cut_off(tight, &cut);
    assert_eq!(
        kept.0,
        End::StillOpen,
        "the default 10s header_timeout cut a client off after {:?}",
        kept.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let port = free_port();
    let _trellis = fixed_ok(port, "[limits]\nidle_timeout = \"500ms\"\n").await;

    let mut stream = raw::connect(port).await;
    for _ in 0..2 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: shop.internal\r\n\r\n")
            .await
            .expect("write request");
        let (head, body) = raw::read_response(&mut stream).await;
        assert_eq!(
            (raw::status_of(head.as_bytes()), &body[..]),
            (200, &b"ok"[..]),
            "{head}"
        );
    }
    // The second answer came on the same connection; now it sits idle until trellis closes it.
    let (data, end, after) = raw::read_until_end(&mut stream, Duration::from_secs(5)).await;
    assert!(
        data.is_empty(),
        "unexpected bytes on an idle connection: {data:?}"
    );
    assert_ne!(
        end,
        End::StillOpen,
        "idle connection still open after {after:?} (idle_timeout 500ms)"
    );
    assert!(
        after >= Duration::from_millis(400),
        "idle connection closed after only {after:?}"
    );
}
