//! A backend that records exactly what it received, byte for byte, so a test can check what trellis
//! forwarded (not only what it answered). HTTP/1.1 over a raw socket: no client library between the
//! wire and the record to normalise anything away.
//!
//! It answers every request `200 ok` (keep-alive), except that a request asking to upgrade to `h2c`
//! gets `101 Switching Protocols`, as an h2c-capable server would grant it.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    /// The head, request line and header lines as sent (without the blank line).
    pub head: String,
    /// The body, decoded from chunked framing when it was chunked.
    pub body: Vec<u8>,
}

impl Received {
    pub fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }
}

pub struct Recorder {
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    accept: JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Recorder {
    pub async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind recorder");
        let port = listener.local_addr().expect("local_addr").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, log.clone()));
            }
        });
        Recorder {
            port,
            received,
            accept,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Everything received so far, taken (the next call sees only what comes after).
    pub fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.received.lock().unwrap())
    }
}

async fn serve(mut stream: TcpStream, log: Arc<Mutex<Vec<Received>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = read_until(&mut stream, &mut buf, b"\r\n\r\n").await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let mut received = Received {
            head,
            body: Vec::new(),
        };
        let length = received
            .headers("content-length")
            .first()
            .and_then(|v| v.parse::<usize>().ok());
        let chunked = received
            .headers("transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            loop {
                let Some(line_end) = read_until(&mut stream, &mut buf, b"\r\n").await else {
                    return;
                };
                let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
                buf.drain(..line_end + 2);
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .unwrap_or(0);
                if size == 0 {
                    // No trailers: an empty line; else trailer lines ending with an empty one.
                    let Some(end) = read_until(&mut stream, &mut buf, b"\r\n").await else {
                        return;
                    };
                    let consumed = if end == 0 {
                        2
                    } else {
                        let Some(end) = read_until(&mut stream, &mut buf, b"\r\n\r\n").await else {
                            return;
                        };
                        end + 4
                    };
                    buf.drain(..consumed);
                    break;
                }
                if !fill(&mut stream, &mut buf, size + 2).await {
                    return;
                }
                received.body.extend_from_slice(&buf[..size]);
                buf.drain(..size + 2);
            }
        } else if let Some(n) = length {
            if !fill(&mut stream, &mut buf, n).await {
                return;
            }
            received.body = buf.drain(..n).collect();
        }
        let h2c = received
            .headers("upgrade")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("h2c"));
        log.lock().unwrap().push(received);
        let answer: &[u8] = if h2c {
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
        };
        if stream.write_all(answer).await.is_err() || h2c {
            return;
        }
    }
}

/// Reads until `buf` holds `pattern`; returns where it starts. `None` when the peer closed first.
async fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, pattern: &[u8]) -> Option<usize> {
    loop {
        if let Some(at) = buf.windows(pattern.len()).position(|w| w == pattern) {
            return Some(at);
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads until `buf` holds at least `n` bytes; false when the peer closed first.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> bool {
    while buf.len() < n {
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
    true
}
