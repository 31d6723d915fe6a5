//! Raw TCP conversations, for what an HTTP client library would refuse to send or hide.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a connection ended while we were reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The peer closed (FIN).
    Eof,
    /// The peer reset the connection.
    Reset,
    /// Nothing ended it before the deadline.
    StillOpen,
}

pub async fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to trellis")
}

/// Connects and writes `bytes`.
pub async fn send(port: u16, bytes: &[u8]) -> TcpStream {
    let mut stream = connect(port).await;
    stream.write_all(bytes).await.expect("write request");
    stream
}

/// Reads until the peer ends the connection or `within` passes. Returns what was read, how it ended and
/// when (measured from the call).
pub async fn read_until_end(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, End, Duration) {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + within;
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (data, End::StillOpen, start.elapsed()),
            Ok(Ok(0)) => return (data, End::Eof, start.elapsed()),
            Ok(Ok(n)) => data.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => return (data, End::Reset, start.elapsed()),
        }
    }
}

/// Reads a response head (up to and including the blank line) within 5s; returns it and any bytes
/// that followed it.
pub async fn read_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let read = async {
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let rest = data.split_off(end + 4);
                return (String::from_utf8_lossy(&data).into_owned(), rest);
            }
            let n = stream.read(&mut buf).await.expect("read response head");
            assert!(
                n > 0,
                "connection closed before a full response head: {data:?}"
            );
            data.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("response head within 5s")
}

/// Reads one whole response whose length is given by `content-length`; returns its head and body.
pub async fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let (head, mut body) = read_head(stream).await;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no content-length in {head:?}"));
    let mut rest = vec![0u8; length.saturating_sub(body.len())];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut rest))
        .await
        .expect("response body within 5s")
        .expect("read response body");
    body.extend_from_slice(&rest);
    (head, body)
}

/// The status code of a response that starts `HTTP/1.x NNN`.
pub fn status_of(response: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(response);
    text.strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1 response: {text:?}"))
}

/// Sends `request` on a fresh connection and returns the status of the answer (read to the end of the
/// connection or 5s, whichever is first).
pub async fn exchange_status(port: u16, request: &[u8]) -> u16 {
    let mut stream = send(port, request).await;
    let (data, _, _) = read_until_end(&mut stream, Duration::from_secs(5)).await;
    assert!(
        !data.is_empty(),
        "no answer to {:?}",
        String::from_utf8_lossy(&request[..request.len().min(80)])
    );
    status_of(&data)
}
