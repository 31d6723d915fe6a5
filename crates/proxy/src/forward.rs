//! The request path: host → service → rule → action → group → target → exchange → response.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use trellis_targets::{Ejection, InFlight, Tried};

use crate::body::{ProxyBody, RequestBody, UpstreamBody};
use crate::error::Failure;
use crate::headers::{self, X_TRELLIS_ERROR};
use crate::retry::{Replay, MAX_RETRIES};
use crate::server::ConnContext;
use crate::snapshot::{Action, Fixed};
use crate::upstream::{exchange, ExchangeError, Group};

/// Answers one request. Never fails: every failure becomes a response trellis writes itself.
pub async fn handle(
    conn: Arc<ConnContext>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    // Routing happens under the one snapshot load of this request; only the chosen group and the route's
    // counters (Arcs) are carried past it, so a reload during a slow exchange frees the old snapshot as
    // soon as it can.
    let (group, target_header, metrics) = {
        let snapshot = conn.proxy.snapshot();
        let Some(port) = snapshot.port(conn.listen) else {
            return Ok(failure(Failure::NoService));
        };
        let Some(service) = port.service(host(&req)) else {
            let resp = failure(Failure::NoService);
            port.unmatched.record(resp.status(), started);
            return Ok(resp);
        };
        let (action, metrics) = service.route(req.method(), req.uri().path(), req.headers());
        match action {
            Action::Fixed(fixed) => {
                let resp = fixed_response(fixed);
                metrics.record(resp.status(), started);
                return Ok(resp);
            }
            Action::Forward(forward) => match forward
                .pick()
                .and_then(|to| Some((snapshot.group(to.slot)?.clone(), to.target_header.clone())))
            {
                Some((group, header)) => (group, header, metrics.clone()),
                None => {
                    let resp = failure(Failure::NoTargets);
                    metrics.record(resp.status(), started);
                    return Ok(resp);
                }
            },
        }
    };
    let resp = forward(&conn, req, &group, &target_header).await;
    metrics.record(resp.status(), started);
    Ok(resp)
}

/// The request's host: `:authority` (HTTP/2, absolute-form) or the Host header.
fn host<B>(req: &Request<B>) -> Option<&[u8]> {
    match req.uri().authority() {
        Some(a) => Some(a.as_str().as_bytes()),
        None => req.headers().get(header::HOST).map(|h| h.as_bytes()),
    }
}

async fn forward(
    conn: &ConnContext,
    mut req: Request<Incoming>,
    group: &Group,
    target_header: &HeaderValue,
) -> Response<ProxyBody> {
    let upgrade = !group.http2 && headers::is_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    headers::to_target(&mut req, &conn.client, target_header, group.http2, upgrade);
    let mut req = req.map(RequestBody::from_client);
    let replay = Replay::of(&req, upgrade);

    let mut tried = Tried::default();
    let mut retry_reason = None;
    loop {
        let Some(pick) = group.balancer.pick(&tried) else {
            return failure(if tried.is_empty() {
                Failure::NoTargets
            } else {
                Failure::ConnectFailed
            });
        };
        match retry_reason {
            None => note_fail_open(group, pick.failed_open),
            Some(counter) => counter_of(group, counter).inc(),
        }
        tried.insert(pick.index);
        let target = &group.balancer.targets()[pick.index];
        let in_flight = target.begin();
        match exchange(group, &group.pools[pick.index], req).await {
            Ok((mut resp, sender)) => {
                if resp.status().is_server_error() {
                    record_failure(group, pick.index);
                } else {
                    target.stats.record_success();
                }
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(client_side) = client_upgrade {
                        let target_side = hyper::upgrade::on(&mut resp);
                        let closed = group.pools[pick.index].closed();
                        conn.tasks
                            .spawn(tunnel(client_side, target_side, in_flight, closed));
                        headers::from_target(resp.headers_mut(), true);
                        return resp.map(|_| ProxyBody::empty());
                    }
                }
                headers::from_target(resp.headers_mut(), false);
                return resp.map(|body| {
                    ProxyBody::Upstream(UpstreamBody {
                        body,
                        _in_flight: in_flight,
                        sender,
                        ended: false,
                    })
                });
            }
            Err(ExchangeError::Connect(unsent, error)) => {
                record_failure(group, pick.index);
                tracing::debug!(group = %group.name, target = %target.address, ?error, "connect failed");
                if tried.len() > MAX_RETRIES {
                    return failure(Failure::ConnectFailed);
                }
                req = unsent;
                retry_reason = Some(RetryReason::Connect);
            }
            Err(ExchangeError::Timeout) => {
                record_failure(group, pick.index);
                return failure(Failure::UpstreamTimeout);
            }
            Err(ExchangeError::Reset(error)) => {
                record_failure(group, pick.index);
                tracing::debug!(group = %group.name, target = %target.address, %error, "exchange with target failed");
                match &replay {
                    Some(replay) if tried.len() <= MAX_RETRIES => {
                        req = replay.request();
                        retry_reason = Some(RetryReason::Reset);
                    }
                    _ => return failure(Failure::UpstreamReset),
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
enum RetryReason {
    Connect,
    Reset,
}

fn counter_of(group: &Group, reason: RetryReason) -> &prometheus::IntCounter {
    match reason {
        RetryReason::Connect => &group.metrics.retry_connect,
        RetryReason::Reset => &group.metrics.retry_reset,
    }
}

/// Counts requests routed while the group has no routable target, and logs when that starts and ends.
#[inline]
fn note_fail_open(group: &Group, failed_open: bool) {
    if failed_open {
        group.metrics.fail_open.inc();
    }
    if group.stats.note_failing_open(failed_open) {
        if failed_open {
            tracing::warn!(target_group = %group.name, "no healthy target: failing open over all registered targets");
        } else {
            tracing::info!(target_group = %group.name, "healthy targets again: no longer failing open");
        }
    }
}

/// A failed exchange counts toward passive ejection; an ejected target comes back by itself later.
fn record_failure(group: &Group, index: usize) {
    let target = &group.balancer.targets()[index];
    match target.stats.record_failure(&group.outlier, Instant::now()) {
        None => {}
        Some(Ejection::OverBudget) => {
            tracing::debug!(target_group = %group.name, target = %target.address, "not ejected: max_ejection_percent of the group is already ejected");
        }
        Some(Ejection::Ejected { time, serial }) => {
            group.metrics.ejections[index].inc();
            let (name, address, stats) = (group.name.clone(), target.address, target.stats.clone());
            tracing::warn!(target_group = %name, target = %address, failures = group.outlier.consecutive_failures, ejected_for = %humantime::format_duration(time), "target ejected after consecutive failures");
            tokio::spawn(async move {
                tokio::time::sleep(time).await;
                if stats.end_ejection(serial, Instant::now()) {
                    tracing::info!(target_group = %name, target = %address, "ejection over: target back in rotation");
                }
            });
        }
    }
}

/// After a `101`, both sides become one byte stream until either closes.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    target: hyper::upgrade::OnUpgrade,
    in_flight: InFlight,
    closed: tokio_util::sync::CancellationToken,
) {
    if let (Ok(client), Ok(target)) = tokio::join!(client, target) {
        let (mut client, mut target) = (TokioIo::new(client), TokioIo::new(target));
        // A draining target's tunnels end at its deregistration deadline.
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut target) => {}
            _ = closed.cancelled() => {}
        }
    }
    drop(in_flight);
}

fn fixed_response(fixed: &Fixed) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(fixed.body.clone()));
    *resp.status_mut() = fixed.status;
    if let Some(ct) = &fixed.content_type {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    }
    resp
}

fn failure(f: Failure) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(f.body()));
    *resp.status_mut() = f.status();
    let h = resp.headers_mut();
    h.insert(X_TRELLIS_ERROR.clone(), f.header_value());
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
