//! Idle HTTP/1.1 keep-alive connections park: after a second without a request they let go of every
//! buffer and hold their socket only, then take up the next request (or several, pipelined) as if
//! nothing happened, and still close after `idle_timeout`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::config::{forward_to, listener_with, service, target_group_with, targets};
use crate::support::raw::{self, End};
use crate::support::{eventually, free_port, Echo, Trellis};

async fn parked(trellis: &Trellis, port: u16, n: f64) {
    let metric = format!("trellis_connections_parked{{address=\"127.0.0.1:{port}\"}}");
    eventually(
        Duration::from_secs(10),
        &format!("{n} parked connections"),
        || async { (trellis.metric(&metric).await == Some(n)).then_some(()) },
    )
    .await;
}

/// Reads until `n` whole responses (each with a content-length) have arrived; their status codes.
async fn responses(stream: &mut tokio::net::TcpStream, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    while statuses.len() < n {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("responses within 5s")
            .expect("read");
        assert!(read > 0, "closed after {} of {n} responses", statuses.len());
        data.extend_from_slice(&buf[..read]);
        // Take every complete response off the front.
        while let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if data.len() < end + 4 + length {
                break;
            }
            statuses.push(raw::status_of(&data[..end]));
            data.drain(..end + 4 + length);
        }
    }
    statuses
}

#[tokio::test]
async fn an_idle_keep_alive_connection_parks_and_takes_up_what_comes_next() {
    let echo = Echo::start("a").await;
    let port = free_port();
    let config = [
        service("app", &["*"]),
        listener_with(port, &forward_to("g"), "limits = { idle_timeout = \"4s\" }"),
        target_group_with("g", &targets(&[echo.addr()]), ""),
    ]
    .concat();
    let trellis = Trellis::start(&config, &[port]).await;
    let mut stream = raw::connect(port).await;
    stream
        .write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(responses(&mut stream, 1).await, [200]);
    parked(&trellis, port, 1.0).await;

    // A request with a body on the parked connection: taken up at once.
    stream
        .write_all(b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    assert_eq!(responses(&mut stream, 1).await, [200]);
    parked(&trellis, port, 1.0).await;

    // Pipelined, in one write, the second head cut in two: every byte is served, in order.
    stream
        .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHo")
        .await
        .unwrap();
    assert_eq!(responses(&mut stream, 1).await, [200]);
    // Longer than the connection takes to park (nothing to await: a connection with a part of a head
    // buffered parks and takes the part up again at once, never counted as parked).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.write_all(b"st: x\r\n\r\n").await.unwrap();
    assert_eq!(responses(&mut stream, 1).await, [200]);

    // Idle for idle_timeout, parked or not: closed, with nothing said.
    parked(&trellis, port, 1.0).await;
    let (data, end, _) = raw::read_until_end(&mut stream, Duration::from_secs(10)).await;
    assert!(data.is_empty(), "{:?}", String::from_utf8_lossy(&data));
    assert!(matches!(end, End::Eof), "closed, not reset: {end:?}");
    parked(&trellis, port, 0.0).await;
}

#[tokio::test]
async fn a_parked_connection_is_closed_at_once_when_trellis_stops() {
    let echo = Echo::start("a").await;
    let port = free_port();
    let config = [
        service("app", &["*"]),
        listener_with(port, &forward_to("g"), ""),
        target_group_with("g", &targets(&[echo.addr()]), ""),
    ]
    .concat();
    let mut trellis = Trellis::start(&config, &[port]).await;
    let mut stream = raw::connect(port).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(responses(&mut stream, 1).await, [200]);
    parked(&trellis, port, 1.0).await;

    // Nothing in flight on it: the graceful stop does not wait for it, and the client sees a clean close.
    trellis.signal(libc::SIGTERM);
    let status = trellis.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0), "{}", trellis.stderr());
    let (data, end, _) = raw::read_until_end(&mut stream, Duration::from_secs(5)).await;
    assert!(
        data.is_empty() && matches!(end, End::Eof),
        "{end:?} {data:?}"
    );
}

/// A listener of the service "app" named `name` on `port`, forwarding to "g", with `limits`.
fn named_listener(name: &str, port: u16, limits: &str) -> String {
    format!(
        "[[service.listener]]\nname = \"{name}\"\nprotocol = \"http\"\nport = {port}\nbind = \"127.0.0.1\"\n\
         default_action = {}\n{limits}\n",
        forward_to("g")
    )
}

#[tokio::test]
async fn parked_connections_resume_under_a_reloaded_listener_and_close_with_a_removed_one() {
    let echo = Echo::start("a").await;
    let (kept, removed) = (free_port(), free_port());
    let group = target_group_with("g", &targets(&[echo.addr()]), "");
    let config = [
        service("app", &["*"]),
        named_listener("kept", kept, ""),
        named_listener("removed", removed, ""),
        group.clone(),
    ]
    .concat();
    let trellis = Trellis::start(&config, &[kept, removed]).await;

    // Twenty parked connections on one address, one on the other.
    let mut many = Vec::new();
    for i in 0..20 {
        let mut stream = raw::connect(kept).await;
        let head = format!("GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        assert_eq!(responses(&mut stream, 1).await, [200]);
        many.push(stream);
    }
    let mut lone = raw::connect(removed).await;
    lone.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(responses(&mut lone, 1).await, [200]);
    parked(&trellis, kept, 20.0).await;
    parked(&trellis, removed, 1.0).await;

    // The kept listener's head limit shrinks; the other listener goes away.
    trellis.write_config(
        &[
            service("app", &["*"]),
            named_listener("kept", kept, "limits = { max_header_bytes = 8192 }"),
            group,
        ]
        .concat(),
    );
    assert_eq!(trellis.reload().await.0, 200);

    // A removed listener's parked connection is closed, cleanly.
    let (data, end, _) = raw::read_until_end(&mut lone, Duration::from_secs(5)).await;
    assert!(data.is_empty() && matches!(end, End::Eof), "{end:?}");
    parked(&trellis, removed, 0.0).await;

    // Each parked connection is woken alone, in whatever order its bytes come, and takes up its
    // request under the listener's limits as they are now.
    let big = "v".repeat(9000);
    for (i, stream) in many.iter_mut().enumerate().rev() {
        let head = if i % 2 == 0 {
            format!("GET /{i} HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n")
        } else {
            format!("GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n")
        };
        stream.write_all(head.as_bytes()).await.unwrap();
        let expected = if i % 2 == 0 { 431 } else { 200 };
        assert_eq!(responses(stream, 1).await, [expected], "connection {i}");
    }
    // The ones still open park again.
    let open = many.len() / 2;
    parked(&trellis, kept, open as f64).await;
}
