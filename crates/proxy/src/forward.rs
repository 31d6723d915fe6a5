//! The request path: host → service → rule → action → group → target → exchange → response.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use trellis_targets::{InFlight, Tried};

use crate::body::{ProxyBody, UpstreamBody};
use crate::error::Failure;
use crate::headers::{self, X_TRELLIS_ERROR};
use crate::server::ConnContext;
use crate::snapshot::{Action, Fixed};
use crate::upstream::{exchange, ExchangeError, Group};

/// After the first attempt, at most this many other targets are tried when connecting fails.
const MAX_CONNECT_RETRIES: usize = 2;

/// Answers one request. Never fails: every failure becomes a response trellis writes itself.
pub async fn handle(
    conn: Arc<ConnContext>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    // Routing happens under the one snapshot load of this request; only the chosen group (an Arc) is
    // carried past it, so a reload during a slow exchange frees the old snapshot as soon as it can.
    let (group, target_header) = {
        let snapshot = conn.proxy.snapshot();
        let Some(service) = snapshot
            .port(conn.listen)
            .and_then(|p| p.service(host(&req)))
        else {
            return Ok(failure(Failure::NoService));
        };
        let (_rule, action) = service.route(req.method(), req.uri().path(), req.headers());
        match action {
            Action::Fixed(fixed) => return Ok(fixed_response(fixed)),
            Action::Forward(forward) => match forward.pick() {
                Some(to) => (to.group.clone(), to.target_header.clone()),
                None => return Ok(failure(Failure::NoTargets)),
            },
        }
    };
    Ok(forward(&conn, req, &group, &target_header).await)
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

    let mut tried = Tried::default();
    loop {
        let Some(pick) = group.balancer.pick(&tried) else {
            return failure(if tried.is_empty() {
                Failure::NoTargets
            } else {
                Failure::ConnectFailed
            });
        };
        tried.insert(pick.index);
        let in_flight = group.balancer.targets()[pick.index].begin();
        match exchange(group, &group.pools[pick.index], req).await {
            Ok((mut resp, sender)) => {
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(client_side) = client_upgrade {
                        let target_side = hyper::upgrade::on(&mut resp);
                        conn.tasks
                            .spawn(tunnel(client_side, target_side, in_flight));
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
                tracing::debug!(group = %group.name, target = %group.pools[pick.index].address(), ?error, "connect failed");
                req = unsent;
                if tried.len() > MAX_CONNECT_RETRIES {
                    return failure(Failure::ConnectFailed);
                }
            }
            Err(ExchangeError::Timeout) => return failure(Failure::UpstreamTimeout),
            Err(ExchangeError::Reset(error)) => {
                tracing::debug!(group = %group.name, %error, "exchange with target failed");
                return failure(Failure::UpstreamReset);
            }
        }
    }
}

/// After a `101`, both sides become one byte stream until either closes.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    target: hyper::upgrade::OnUpgrade,
    in_flight: InFlight,
) {
    if let (Ok(client), Ok(target)) = tokio::join!(client, target) {
        let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(target))
            .await;
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
