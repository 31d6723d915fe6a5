//! The request path: host → service → rule → action → group → target → exchange → response.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use trellis_targets::{Ejection, Tried};

use crate::access_log::{Pending, Trace};
use crate::auth::{self, Caller};
use crate::body::{ProxyBody, RequestBody, Tally, UpstreamBody};
use crate::error::Failure;
use crate::headers::{self, X_TRELLIS_ERROR};

use crate::rate_limit::{retry_after_secs, KeyParts};
use crate::retry::{budget_second, Replay, RetryReason, MAX_RETRIES};
use crate::server::ConnContext;
use crate::snapshot::{host_without_port, Action, Fixed, Origin, Redirect, Route, RouteMetrics};
use crate::tunnel::{tunnel, TunnelLimits};
use crate::upload::Overdue;
use crate::upstream::{
    admit, admit_queued, admit_sticky, exchange, Admitted, ExchangeError, Exchanged, Group, Lookup,
    Timing,
};

/// Answers one request. Never fails: every failure becomes a response trellis writes itself.
pub async fn handle(
    conn: Arc<ConnContext>,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    // Routing happens under the one snapshot load of this request; only the chosen group, the route's
    // counters and the log's sink (Arcs) are carried past it, so a reload during a slow exchange frees
    // the old snapshot as soon as it can.
    let (group, target_header, route, log, response_edits, slot) = {
        let snapshot = conn.proxy.snapshot();
        let Some(port) = snapshot.port(conn.listen) else {
            return Ok(failure(Failure::NoService));
        };
        // One view of the request from here on, the target's included (see `head`); a request that has
        // none is refused, and logged as it came.
        let canonical = crate::head::canonicalize(&mut req);
        let log = snapshot
            .access_log
            .as_ref()
            .map(|sink| Pending::begin(sink, &req, conn.peer, conn.tls.as_ref(), started));
        if let Err(f) = canonical {
            return Ok(answer(failure(f), &port.unmatched, started, log, Some(f)));
        }
        let host = req.headers().get(header::HOST).map(HeaderValue::as_bytes);
        let Some((service, policy)) = port.service_and_policy(host) else {
            let f = Failure::NoService;
            return Ok(answer(failure(f), &port.unmatched, started, log, Some(f)));
        };
        if let Some(tls) = &conn.tls {
            // The Host belongs to a service this connection's certificate was not chosen for.
            if service.tls.as_ref().map(|t| t.cert) != Some(tls.cert) {
                let f = Failure::Misdirected;
                return Ok(answer(failure(f), &port.unmatched, started, log, Some(f)));
            }
        }
        let path = req.uri().path();
        let unparameterised = crate::head::path::without_parameters(path);
        let route = service.route(
            req.method(),
            path,
            unparameterised.as_deref(),
            req.headers(),
        );
        // Who is calling: the mTLS identity at hand, a bearer token verified only if something asks.
        let tls_identity = conn.tls.as_ref().and_then(|t| t.identity.as_ref());
        let mut caller = Caller::new(&req, conn.peer.ip(), tls_identity, &snapshot.verifier);
        if snapshot.network_policy.is_some() || policy.is_some() {
            let policies = [snapshot.network_policy.as_deref(), policy];
            if let Err(reason) = auth::check(policies, &req, &mut caller) {
                let mut log = log;
                if let Some(entry) = &mut log {
                    entry.denied(&reason);
                }
                let f = Failure::AccessDenied;
                return Ok(answer(failure(f), route.metrics, started, log, Some(f)));
            }
        }
        // After auth: a limit keyed by identity only ever sees identities that were verified.
        if !route.limits.is_empty() {
            let identity = if route.limits.keyed_by_identity() {
                caller.identities().next()
            } else {
                None
            };
            let parts = KeyParts {
                ip: conn.peer.ip(),
                identity,
                headers: req.headers(),
            };
            if let Err(wait) = route.limits.check(&parts, started) {
                let f = Failure::RateLimited;
                return Ok(answer(
                    rate_limited(wait),
                    route.metrics,
                    started,
                    log,
                    Some(f),
                ));
            }
        }
        let Route {
            action,
            metrics: route,
            transform,
            stripped,
            ..
        } = route;
        match action {
            Action::Fixed(fixed) => {
                return Ok(answer(fixed_response(fixed), route, started, log, None));
            }
            Action::Redirect(redirect) => {
                return Ok(match redirected(redirect, &req, &conn) {
                    Ok(resp) => answer(resp, route, started, log, None),
                    Err(f) => answer(failure(f), route, started, log, Some(f)),
                });
            }
            Action::Forward(forward) => match forward.pick().and_then(|to| {
                let group = snapshot.group(to.slot)?.clone();
                Some((group, to.target_header.clone(), to.slot))
            }) {
                Some((group, header, slot)) => {
                    let mut log = log;
                    if let Some(t) = transform {
                        let view = unparameterised.as_deref().filter(|_| stripped);
                        if let Err(f) = t.apply_request(&mut req, view) {
                            return Ok(answer(failure(f), route, started, log, Some(f)));
                        }
                        if let (true, Some(entry)) = (t.rewrites_path(), &mut log) {
                            entry.rewritten(req.uri());
                        }
                    }
                    if let Some(entry) = &mut log {
                        entry.group(&group.name);
                    }
                    let response_edits = transform.and_then(|t| t.response.clone());
                    (group, header, route.clone(), log, response_edits, slot)
                }
                None => {
                    let f = Failure::NoTargets;
                    return Ok(answer(failure(f), route, started, log, Some(f)));
                }
            },
        }
    };
    // From here the client may go away before an answer; the guard counts and logs that as a 499.
    let mut unanswered = Unanswered {
        route: Some(route),
        log,
        trace: Trace::default(),
        started,
    };
    let logging = unanswered.log.is_some();
    // A group that scaled to zero: the request waits while it wakes.
    let group = match group.wake_timeout {
        Some(timeout) if !group.has_routable_target() => {
            match Box::pin(woken(&conn, slot, &group.name, timeout)).await {
                Some(group) => group,
                None => {
                    let f = Failure::Waking;
                    let (route, log) = unanswered.answered();
                    return Ok(answer(failure(f), &route, started, log, Some(f)));
                }
            }
        }
        _ => group,
    };
    let to = To {
        group: &group,
        target_header: &target_header,
        route: unanswered.route.as_deref().expect("set until answered"),
    };
    let (resp, failed) = match forward(&conn, req, to, &mut unanswered.trace, logging).await {
        Ok(mut resp) => {
            // Only on the target's answer: trellis's own (below) keep their headers.
            if let Some(edits) = &response_edits {
                edits.apply(resp.headers_mut());
            }
            (resp, None)
        }
        Err(f) => (failure(f), Some(f)),
    };
    group.metrics.record(resp.status(), started);
    let (route, log) = unanswered.answered();
    Ok(answer(resp, &route, started, log, failed))
}

/// Wakes the scaling group behind target group `name` and waits, up to `timeout`, until the group in
/// slot `slot` has a target that can take a request; that group, or `None` if it did not wake in time.
/// Polled: waking takes a process start and a health check (hundreds of milliseconds at least), and
/// the wait is for the target's health, which no snapshot swap announces.
async fn woken(
    conn: &ConnContext,
    slot: usize,
    name: &str,
    timeout: Duration,
) -> Option<Arc<Group>> {
    conn.proxy.wake(name);
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    let mut woken_at = start;
    loop {
        if let Some(group) = conn.proxy.snapshot().group(slot) {
            if group.has_routable_target() {
                return Some(group.clone());
            }
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return None;
        }
        // Again every second while it waits: a wake-up lost on its way (a fleet's store that did not
        // answer) is sent again, and the group sees a request still waiting.
        if now - woken_at >= Duration::from_secs(1) {
            conn.proxy.wake(name);
            woken_at = now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Counts an answered request, and hands its access log entry to the response body to finish.
fn answer(
    resp: Response<ProxyBody>,
    route: &Arc<RouteMetrics>,
    started: Instant,
    log: Option<Pending>,
    failed: Option<Failure>,
) -> Response<ProxyBody> {
    route.record(resp.status(), started);
    let log = log.map(|mut entry| {
        entry.route(route);
        entry.answered(resp.status().as_u16(), failed.map(Failure::code));
        entry
    });
    let route = route.clone();
    resp.map(|body| body.with_tally(Tally { route, log }))
}

/// A request being forwarded. Dropped before it was answered means the client closed the connection
/// while waiting: counted and logged as nginx does, with status 499, and with what forwarding got to
/// (the target, the request id it was sent with).
struct Unanswered {
    /// `None` once answered.
    route: Option<Arc<RouteMetrics>>,
    log: Option<Pending>,
    trace: Trace,
    started: Instant,
}

impl Unanswered {
    /// The route and the log entry (with what forwarding observed), to answer with.
    fn answered(&mut self) -> (Arc<RouteMetrics>, Option<Pending>) {
        // Only `handle` calls this, once, after which it no longer awaits.
        let route = self.route.take().expect("answered once");
        let mut log = self.log.take();
        if let Some(log) = &mut log {
            log.forwarded(std::mem::take(&mut self.trace));
        }
        (route, log)
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(route) = self.route.take() {
            let status = StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST);
            route.record(status, self.started);
            if let Some(mut entry) = self.log.take() {
                entry.forwarded(std::mem::take(&mut self.trace));
                entry.route(&route);
                entry.answered(status.as_u16(), Some("client_closed"));
                entry.finish(0);
            }
        }
    }
}

/// Where a request goes: the group chosen by its route, and the route it came by.
struct To<'a> {
    group: &'a Group,
    target_header: &'a HeaderValue,
    route: &'a RouteMetrics,
}

async fn forward(
    conn: &ConnContext,
    mut req: Request<Incoming>,
    to: To<'_>,
    trace: &mut Trace,
    logging: bool,
) -> Result<Response<ProxyBody>, Failure> {
    let group = to.group;
    let upgrade = !group.http2 && headers::is_websocket_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let (body, upload) = RequestBody::from_client(body, to.route);
    let mut req = Request::from_parts(parts, body);
    let chunked = req.body().unknown_length();
    headers::to_target(
        &mut req,
        &conn.client,
        to.target_header,
        group.http2,
        upgrade,
        chunked,
    );
    // The verified client certificate's identity (mutual TLS); any the client sent itself was removed.
    if let Some(identity) = conn.tls.as_ref().and_then(|t| t.identity.clone()) {
        req.headers_mut()
            .insert(headers::X_TRELLIS_IDENTITY.clone(), identity);
    }
    if logging {
        trace.request_id = req.headers().get(&headers::X_REQUEST_ID).cloned();
        trace.request = upload.clone();
    }
    let policy = group.retry.as_ref();
    let timing = Timing {
        upload: upload.as_deref(),
        body_timeout: conn.limits.body_timeout,
        response_timeout: policy.map_or(group.response_timeout, |p| p.per_try_timeout),
    };
    let replay = match policy {
        None => Replay::of(&req, upgrade),
        Some(policy) => {
            // A body that may have to go again is read whole first (as nginx buffers request bodies);
            // boxed, as bodiless requests (most) never get here.
            let has_body = !matches!(req.body(), RequestBody::Empty);
            let body = if has_body && !upgrade && policy.allows(req.method()) {
                let limit = policy.max_replay_body;
                Box::pin(req.body_mut().read_whole(limit, conn.limits.body_timeout)).await?
            } else {
                None
            };
            Replay::by_policy(&req, upgrade, policy, body)
        }
    };
    let max_tries = 1 + policy.map_or(MAX_RETRIES, |p| p.attempts);
    let budget_second = policy.map(|_| {
        let second = budget_second(Instant::now());
        group.stats.retry_budget.request(second);
        second
    });
    // Whether another try may be made (`reason` says why): tries left, and the budget agrees.
    let may_retry = |tries: usize, reason: RetryReason| -> bool {
        if tries >= max_tries {
            return false;
        }
        let (Some(policy), Some(second)) = (policy, budget_second) else {
            return true;
        };
        if group
            .stats
            .retry_budget
            .try_retry(second, policy.budget_percent)
        {
            return true;
        }
        group.metrics.retries_refused.inc();
        tracing::debug!(target_group = %group.name, reason = reason.label(), "retry refused: the group's retry budget is spent");
        false
    };

    // Stickiness: the target the request's cookie names, for its first try.
    let mut sticky_to = None;
    if let Some(sticky) = &group.sticky {
        match sticky.lookup(req.headers()) {
            Lookup::Target(index) => sticky_to = Some(index),
            Lookup::Stale => sticky.misses.inc(),
            Lookup::None => sticky.new.inc(),
        }
    }

    let mut tried = Tried::default();
    let mut tries = 0;
    let mut retry_reason = None;
    loop {
        let stuck = sticky_to.take().map(|index| admit_sticky(group, index));
        if let (Some(stuck), Some(sticky)) = (&stuck, &group.sticky) {
            // Gone, unhealthy, draining or full: balanced instead, and the cookie follows the new one.
            if stuck.is_some() {
                &sticky.hits
            } else {
                &sticky.misses
            }
            .inc();
        }
        let mut admitted = match stuck.flatten() {
            Some((pick, in_flight)) => Admitted::Target(pick, in_flight),
            None => next_target(group, &tried, trace).await,
        };
        if matches!(admitted, Admitted::NoTarget) && policy.is_some() && !tried.is_empty() {
            // Every target has had a try: a policy's further tries go round them again.
            tried.clear();
            admitted = next_target(group, &tried, trace).await;
        }
        let (pick, in_flight) = match admitted {
            Admitted::Target(pick, in_flight) => (pick, in_flight),
            Admitted::Overloaded => return Err(Failure::Overloaded),
            Admitted::NoTarget if tries == 0 => return Err(Failure::NoTargets),
            Admitted::NoTarget => return Err(Failure::ConnectFailed),
        };
        match retry_reason {
            None => note_fail_open(group, pick.failed_open),
            Some(reason) => group.metrics.retry(reason).inc(),
        }
        tried.insert(pick.index);
        tries += 1;
        trace.tries = tries as u8;
        let target = &group.balancer.targets()[pick.index];
        trace.target = Some(target.address);
        match exchange(group, &group.pools[pick.index], req, timing).await {
            Ok(Exchanged {
                mut response,
                sender,
                sent_at,
            }) => {
                trace.sent_at = Some(sent_at);
                trace.head_at = logging.then(Instant::now);
                if response.status().is_server_error() {
                    record_failure(group, pick.index);
                    let again = policy.and_then(|p| p.on_status(response.status()));
                    if let (Some(reason), Some(replay)) = (again, &replay) {
                        if may_retry(tries, reason) {
                            // The answer is dropped unread, and its connection with it.
                            req = replay.request();
                            retry_reason = Some(reason);
                            continue;
                        }
                    }
                } else {
                    target.stats.record_success();
                }
                if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                    // Only the WebSocket upgrade asked for becomes a tunnel; a target switching to
                    // anything else (or unasked) is broken, and its answer cannot be passed on.
                    let switch = headers::is_websocket_switch(response.headers());
                    let (Some(client_side), true) = (client_upgrade, switch) else {
                        record_failure(group, pick.index);
                        return Err(Failure::UpstreamReset);
                    };
                    let target_side = hyper::upgrade::on(&mut response);
                    let closed = group.pools[pick.index].closed();
                    let limits = TunnelLimits {
                        idle: conn.limits.tunnel_idle_timeout,
                        send: conn.limits.send_timeout,
                    };
                    conn.tasks
                        .spawn(tunnel(client_side, target_side, in_flight, closed, limits));
                    headers::from_target(response.headers_mut(), true);
                    return Ok(response.map(|_| ProxyBody::empty()));
                }
                headers::from_target(response.headers_mut(), false);
                if let Some(sticky) = &group.sticky {
                    sticky.stick(pick.index, response.headers_mut());
                }
                return Ok(response.map(|body| {
                    ProxyBody::upstream(UpstreamBody {
                        body,
                        _in_flight: in_flight,
                        sender,
                        ended: false,
                    })
                }));
            }
            Err(ExchangeError::Connect(unsent, error)) => {
                group.metrics.connection_errors.inc();
                record_failure(group, pick.index);
                tracing::debug!(target_group = %group.name, target = %target.address, %error, "connect failed");
                if !may_retry(tries, RetryReason::Connect) {
                    return Err(Failure::ConnectFailed);
                }
                req = unsent;
                retry_reason = Some(RetryReason::Connect);
            }
            // A slow or broken client is the client's fault, never the target's.
            Err(ExchangeError::Timeout(Overdue::Client)) => return Err(Failure::ClientTimeout),
            Err(ExchangeError::Reset(_)) if upload.as_ref().is_some_and(|u| u.failed()) => {
                return Err(Failure::BadRequest(
                    "the request body was malformed or cut short",
                ));
            }
            Err(ExchangeError::Timeout(Overdue::Target)) => {
                group.metrics.timeouts.inc();
                record_failure(group, pick.index);
                let again = policy.is_some_and(|p| p.on.timeout);
                match &replay {
                    Some(replay) if again && may_retry(tries, RetryReason::Timeout) => {
                        req = replay.request();
                        retry_reason = Some(RetryReason::Timeout);
                    }
                    _ => return Err(Failure::UpstreamTimeout),
                }
            }
            Err(ExchangeError::Reset(error)) => {
                record_failure(group, pick.index);
                tracing::debug!(group = %group.name, target = %target.address, %error, "exchange with target failed");
                let again = policy.is_none_or(|p| p.on.reset);
                match &replay {
                    Some(replay) if again && may_retry(tries, RetryReason::Reset) => {
                        req = replay.request();
                        retry_reason = Some(RetryReason::Reset);
                    }
                    _ => return Err(Failure::UpstreamReset),
                }
            }
        }
    }
}

/// The target for the next try: at once when one can take it, else after a wait in the group's queue
/// (boxed: most requests never wait, and their future should not carry the queue's state).
async fn next_target(group: &Group, tried: &Tried, trace: &mut Trace) -> Admitted {
    match admit(group, tried) {
        Some(admitted) => admitted,
        None => Box::pin(admit_queued(group, tried, &mut trace.queue_wait)).await,
    }
}

/// Counts requests routed while the group has no routable target, and logs when that starts and ends.
#[inline]
pub(crate) fn note_fail_open(group: &Group, failed_open: bool) {
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
pub(crate) fn record_failure(group: &Group, index: usize) {
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

fn fixed_response(fixed: &Fixed) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(fixed.body.clone()));
    *resp.status_mut() = fixed.status;
    if let Some(ct) = &fixed.content_type {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    }
    resp
}

/// A redirect's answer: its status, the `location` filled in from the canonical request, no body.
fn redirected<B>(
    redirect: &Redirect,
    req: &Request<B>,
    conn: &ConnContext,
) -> Result<Response<ProxyBody>, Failure> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let origin = Origin {
        https: conn.tls.is_some(),
        host: host_without_port(host),
        port: conn.listen.port(),
        path: req.uri().path(),
        query: req.uri().query().unwrap_or_default(),
    };
    let location = redirect.location(&origin).ok_or(Failure::BadRequest(
        "the request has no host to redirect to",
    ))?;
    let location = HeaderValue::try_from(location)
        .map_err(|_| Failure::BadRequest("the redirect location is not a valid header"))?;
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = redirect.status;
    let h = resp.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    Ok(resp)
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
    match f {
        // RFC 9110 §15.5.6: a 405 says what is allowed; every method but CONNECT is forwarded.
        Failure::MethodNotAllowed => {
            h.insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH"),
            );
        }
        // The request (or its body) may be half read: the connection cannot carry another one.
        Failure::BadRequest(_) | Failure::ClientTimeout => {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    resp
}

/// `429` with `retry-after`: the whole seconds until the limit has a token for this caller again.
fn rate_limited(wait: Duration) -> Response<ProxyBody> {
    let mut resp = failure(Failure::RateLimited);
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs(wait)),
    );
    resp
}
