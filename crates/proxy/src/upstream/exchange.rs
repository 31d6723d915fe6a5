//! One request, one target: take a connection, send, wait for the response head.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::RequestBody;
use crate::upload::{Overdue, Upload};

use super::pool::{ConnectError, PooledSender, Sender, TargetPool};
use super::Group;

// The error carries the unsent request back for a retry on another target; boxing it would only add an
// allocation to that path.
#[allow(clippy::large_enum_variant)]
pub enum ExchangeError {
    /// No connection could be made; the request comes back unsent, for another target.
    Connect(Request<RequestBody>, ConnectError),
    /// The request was (maybe partly) sent, then the exchange broke: never resent.
    Reset(hyper::Error),
    /// A deadline passed: the target's (`response_timeout` after the request was sent) or the client's
    /// (`body_timeout` without the body bytes the target waits for).
    Timeout(Overdue),
}

/// What times an exchange: the request body's progress (bodiless requests have none) and the limits.
#[derive(Clone, Copy)]
pub struct Timing<'a> {
    pub upload: Option<&'a Upload>,
    pub body_timeout: Duration,
    /// From the request sent to its response head: the group's `response_timeout`, or a retry
    /// policy's `per_try_timeout`.
    pub response_timeout: Duration,
}

/// A target's answer: its response head, the connection to give back once the body is read (HTTP/1),
/// and when the request was handed to that connection.
pub struct Exchanged {
    pub response: Response<Incoming>,
    pub sender: Option<PooledSender>,
    pub sent_at: Instant,
}

/// Sends `req` to the target behind `pool`. Pooled connections that turn out to have closed while idle
/// give the request back untouched; then the next one, and finally a fresh connection, is tried.
#[allow(clippy::result_large_err)]
pub async fn exchange(
    group: &Group,
    pool: &Arc<TargetPool>,
    mut req: Request<RequestBody>,
    timing: Timing<'_>,
) -> Result<Exchanged, ExchangeError> {
    loop {
        let (sender, fresh) = match pool.idle() {
            Some(s) => (s, false),
            // Boxed: connecting (TCP, TLS, the HTTP handshake) is rare with a pool and its future is
            // large; inline, it would size every request's future, which hyper keeps per connection.
            None => match Box::pin(pool.connect(group.connect_timeout)).await {
                Ok(s) => (s, true),
                Err(e) => return Err(ExchangeError::Connect(req, e)),
            },
        };
        let sent = match sender {
            Sender::H1(mut s) => {
                if let Err(e) = s.ready().await {
                    if fresh {
                        return Err(ExchangeError::Connect(req, ConnectError::Handshake(e)));
                    }
                    continue;
                }
                let sent_at = Instant::now();
                let response = timed(s.try_send_request(req), timing).await;
                let pooled = PooledSender {
                    sender: s,
                    pool: pool.clone(),
                };
                response.map(|r| {
                    r.map(|response| Exchanged {
                        response,
                        sender: Some(pooled),
                        sent_at,
                    })
                })
            }
            Sender::H2(mut s) => {
                let sent_at = Instant::now();
                let response = timed(s.try_send_request(req), timing).await;
                response.map(|r| {
                    r.map(|response| Exchanged {
                        response,
                        sender: None,
                        sent_at,
                    })
                })
            }
        };
        match sent {
            Err(overdue) => return Err(ExchangeError::Timeout(overdue)),
            Ok(Ok(done)) => return Ok(done),
            Ok(Err(mut e)) => match e.take_message() {
                Some(unsent) if !fresh => req = unsent,
                Some(unsent) => {
                    return Err(ExchangeError::Connect(
                        unsent,
                        ConnectError::Handshake(e.into_error()),
                    ))
                }
                None => return Err(ExchangeError::Reset(e.into_error())),
            },
        }
    }
}

/// Runs `send` under the exchange's deadlines: `response_timeout` from when the request (body and
/// all) has gone to the target, and `body_timeout` while the target waits on the client's body.
async fn timed<F: Future>(send: F, timing: Timing<'_>) -> Result<F::Output, Overdue> {
    tokio::pin!(send);
    let sent = tokio::time::Instant::now();
    loop {
        let now = tokio::time::Instant::now();
        let (due, overdue) = match timing.upload {
            Some(upload) => upload.deadline(timing.response_timeout, timing.body_timeout),
            None => (sent + timing.response_timeout, Overdue::Target),
        };
        if due <= now {
            return Err(overdue);
        }
        // While the body is on its way the client may stall at any moment, and its deadline would be
        // earlier than this one: look again within body_timeout, which then finds it on time.
        let wake = match timing.upload {
            Some(upload) if upload.ended().is_none() => due.min(now + timing.body_timeout),
            _ => due,
        };
        tokio::select! {
            out = &mut send => return Ok(out),
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}
