//! The admin listener (`[admin].listen`): the status page, health, metrics, status, reload and target
//! registration. It never shares a port with traffic, so a flood on a listener cannot starve the
//! operator's view.

mod guard;
mod page;
mod status;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, SERVER};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus::{Encoder, TextEncoder};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::daemon::{ChangeError, Daemon};

/// Request bodies of the admin API are small JSON objects.
const MAX_BODY: usize = 64 * 1024;

type Reply = Response<Full<Bytes>>;

/// The `Server` header of every answer: how `trellis status` and the other commands tell the admin API
/// from whatever else answers on its port (`ctl::client`). No version: a caller without the token learns
/// no more than that it is trellis.
pub const SERVER_NAME: &str = "trellis-admin";

/// Binds the admin listener and serves it in the background; returns the bound address.
pub async fn start(daemon: Arc<Daemon>) -> anyhow::Result<SocketAddr> {
    let listen = daemon.current().file.admin.listen;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} for the admin API"))?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let daemon = daemon.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let daemon = daemon.clone();
                    async move {
                        let mut reply = handle(&daemon, addr, req).await;
                        reply
                            .headers_mut()
                            .insert(SERVER, HeaderValue::from_static(SERVER_NAME));
                        Ok::<_, Infallible>(reply)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn handle(daemon: &Arc<Daemon>, listen: SocketAddr, req: Request<Incoming>) -> Reply {
    if let Some(reply) = guard::rejection(daemon, listen, &req) {
        return reply;
    }
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    match (&method, segments.as_slice()) {
        (&Method::GET | &Method::HEAD, [""]) => page::page(),
        (&Method::GET | &Method::HEAD, ["healthz"]) => {
            respond(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into())
        }
        (&Method::GET | &Method::HEAD, ["metrics"]) => metrics(daemon),
        (&Method::GET | &Method::HEAD, ["v1", "status"]) => {
            json_reply(StatusCode::OK, &status::status(daemon))
        }
        (&Method::POST, ["v1", "reload"]) => match daemon.reload().await {
            Ok(running) => json_reply(
                StatusCode::OK,
                &json!({
                    "result": "ok",
                    "sha256": running.sha256,
                    "summary": running.file.summary(),
                }),
            ),
            Err(e) => change_error(&e),
        },
        (&Method::POST, ["v1", "target-groups", group, "targets"]) => {
            let group = percent_decode(group);
            register(daemon, &group, req).await
        }
        (&Method::DELETE, ["v1", "target-groups", group, "targets", address]) => {
            let (group, address) = (percent_decode(group), percent_decode(address));
            let Ok(address) = address.parse::<SocketAddr>() else {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("{address:?} is not an ip:port address"),
                );
            };
            match daemon.deregister(&group, address).await {
                Ok(()) => json_reply(
                    StatusCode::OK,
                    &json!({"target_group": group, "address": address.to_string(), "state": "draining"}),
                ),
                Err(e) => change_error(&e),
            }
        }
        (&Method::PUT, ["v1", "scaling-groups", group, "desired"]) => {
            let group = percent_decode(group);
            set_desired(daemon, &group, req).await
        }
        (&Method::PUT, ["v1", "scaling-groups", group, "instances", id, "protection"]) => {
            let (group, id) = (percent_decode(group), percent_decode(id));
            protect(daemon, &group, &id, req).await
        }
        (&Method::POST, ["v1", "scaling-groups", group, "refresh"]) => {
            let group = percent_decode(group);
            start_refresh(daemon, &group, req).await
        }
        (&Method::GET | &Method::HEAD, ["v1", "scaling-groups", group, "refresh"]) => {
            let group = percent_decode(group);
            match scaling_group(daemon, &group) {
                Ok(g) => match g.get().get("instance_refresh") {
                    Some(view) if !view.is_null() => json_reply(StatusCode::OK, view),
                    _ => error(
                        StatusCode::NOT_FOUND,
                        &format!("scaling group {group:?} has had no instance refresh"),
                    ),
                },
                Err(reply) => reply,
            }
        }
        (&Method::DELETE, ["v1", "scaling-groups", group, "refresh"]) => {
            let group = percent_decode(group);
            match scaling_group(daemon, &group) {
                Ok(g) => match g.cancel_refresh().await {
                    Ok(view) => json_reply(StatusCode::OK, &view),
                    Err(refused) => refused_reply(refused),
                },
                Err(reply) => reply,
            }
        }
        (_, segments) => match allowed(segments) {
            Some(allow) => {
                let mut reply = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &format!("{method} is not allowed on {path}"),
                );
                reply
                    .headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(allow));
                reply
            }
            None => error(StatusCode::NOT_FOUND, &format!("no such endpoint: {path}")),
        },
    }
}

/// The methods a path of the admin API takes (the `Allow` header of its `405`), if it is one.
fn allowed(segments: &[&str]) -> Option<&'static str> {
    match segments {
        [""] | ["healthz"] | ["metrics"] | ["v1", "status"] => Some("GET, HEAD"),
        ["v1", "reload"] | ["v1", "target-groups", _, "targets"] => Some("POST"),
        ["v1", "target-groups", _, "targets", _] => Some("DELETE"),
        ["v1", "scaling-groups", _, "desired"]
        | ["v1", "scaling-groups", _, "instances", _, "protection"] => Some("PUT"),
        ["v1", "scaling-groups", _, "refresh"] => Some("GET, HEAD, POST, DELETE"),
        _ => None,
    }
}

/// The request's JSON body, or the 400 to answer.
// The error is the response to send, built only for a bad request; boxing it would gain nothing.
#[allow(clippy::result_large_err)]
async fn json_body(req: Request<Incoming>) -> Result<Value, Reply> {
    json_body_or(req, None).await
}

/// The request's JSON body, `if_empty` when it has none (and that is allowed), or the 400 to answer.
#[allow(clippy::result_large_err)]
async fn json_body_or(req: Request<Incoming>, if_empty: Option<Value>) -> Result<Value, Reply> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {e}"),
            ))
        }
    };
    if let Some(value) = if_empty.filter(|_| body.trim_ascii().is_empty()) {
        return Ok(value);
    }
    serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("the body is not JSON: {e}"),
        )
    })
}

#[allow(clippy::result_large_err)]
fn scaling_group(daemon: &Daemon, name: &str) -> Result<Arc<crate::scaling::GroupHandle>, Reply> {
    daemon
        .scaling
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .find(|g| g.name == name)
        .cloned()
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                &format!("no running scaling group named {name:?}"),
            )
        })
}

async fn set_desired(daemon: &Arc<Daemon>, name: &str, req: Request<Incoming>) -> Reply {
    let group = match scaling_group(daemon, name) {
        Ok(g) => g,
        Err(reply) => return reply,
    };
    let body = match json_body(req).await {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    let Some(desired) = body
        .get("desired")
        .and_then(Value::as_u64)
        .and_then(|d| u32::try_from(d).ok())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "the body needs \"desired\": a non-negative integer",
        );
    };
    match group.set_desired(desired).await {
        Ok((min, desired, max)) => json_reply(
            StatusCode::OK,
            &json!({"scaling_group": name, "desired": desired, "min": min, "max": max}),
        ),
        Err(refused) => refused_reply(refused),
    }
}

/// `POST /v1/scaling-groups/{name}/refresh`: the body (optional) overrides the group's
/// `instance_refresh` keys for this refresh.
async fn start_refresh(daemon: &Arc<Daemon>, name: &str, req: Request<Incoming>) -> Reply {
    let group = match scaling_group(daemon, name) {
        Ok(g) => g,
        Err(reply) => return reply,
    };
    // No body: the group's own settings.
    let body = match json_body_or(req, Some(json!({}))).await {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    let overrides = match crate::scaling::RefreshOverrides::from_json(&body) {
        Ok(o) => o,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    match group.start_refresh(overrides).await {
        Ok(view) => json_reply(StatusCode::CREATED, &view),
        Err(refused) => refused_reply(refused),
    }
}

async fn protect(daemon: &Arc<Daemon>, name: &str, id: &str, req: Request<Incoming>) -> Reply {
    let group = match scaling_group(daemon, name) {
        Ok(g) => g,
        Err(reply) => return reply,
    };
    let body = match json_body(req).await {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    let Some(protected) = body.get("protected").and_then(Value::as_bool) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the body needs \"protected\": true or false",
        );
    };
    match group.protect(id, protected).await {
        Ok(true) => json_reply(
            StatusCode::OK,
            &json!({"scaling_group": name, "instance": id, "protected": protected}),
        ),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            &format!("scaling group {name:?} has no instance {id:?}"),
        ),
        Err(refused) => refused_reply(refused),
    }
}

/// A request the group could not take: stopped (a bug or a race with a reload), or, in fleet mode, the
/// store cannot be written (503, as for registrations).
fn refused_reply(refused: crate::scaling::Refused) -> Reply {
    match refused {
        // Removed by a reload a moment ago, or trellis is shutting down: try again (or not).
        crate::scaling::Refused::Stopped => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the scaling group has stopped (removed by a reload, or trellis is shutting down)",
        ),
        crate::scaling::Refused::Unavailable(message) => {
            error(StatusCode::SERVICE_UNAVAILABLE, &message)
        }
        crate::scaling::Refused::Conflict(message) => error(StatusCode::CONFLICT, &message),
        crate::scaling::Refused::Invalid(message) => error(StatusCode::BAD_REQUEST, &message),
    }
}

async fn register(daemon: &Arc<Daemon>, group: &str, req: Request<Incoming>) -> Reply {
    let parsed = match json_body(req).await {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    let Some(address) = parsed.get("address").and_then(Value::as_str) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the body needs \"address\": \"ip:port\"",
        );
    };
    let Ok(address) = address.parse::<SocketAddr>() else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("{address:?} is not an ip:port address"),
        );
    };
    let weight = match parsed.get("weight") {
        None | Some(Value::Null) => None,
        Some(w) => match w.as_u64().and_then(|w| u16::try_from(w).ok()) {
            Some(w) => Some(w),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("weight {w} is not an integer in 0..=999"),
                )
            }
        },
    };
    match daemon.register(group, address, weight).await {
        Ok((created, weight)) => {
            let state = daemon
                .targets
                .get(group, address)
                .map(|s| s.view().health.state.as_str())
                .unwrap_or("initial");
            json_reply(
                if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                &json!({"target_group": group, "address": address.to_string(), "weight": weight, "state": state}),
            )
        }
        Err(e) => change_error(&e),
    }
}

fn change_error(e: &ChangeError) -> Reply {
    match e {
        ChangeError::Invalid(errors) => json_reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({"error": e.to_string(), "errors": errors}),
        ),
        ChangeError::NotFound(_) => error(StatusCode::NOT_FOUND, &e.to_string()),
        ChangeError::Conflict(_) => error(StatusCode::CONFLICT, &e.to_string()),
        ChangeError::BadRequest(_) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        ChangeError::Failed(_) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        ChangeError::Unavailable(_) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

fn metrics(daemon: &Daemon) -> Reply {
    daemon.refresh_gauges();
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    if let Err(e) = encoder.encode(&daemon.prometheus.gather(), &mut body) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }
    respond(StatusCode::OK, encoder.format_type(), body.into())
}

pub fn error(status: StatusCode, message: &str) -> Reply {
    json_reply(status, &json!({ "error": message }))
}

fn json_reply(status: StatusCode, value: &Value) -> Reply {
    let mut body = value.to_string();
    body.push('\n');
    respond(status, "application/json", body.into())
}

fn respond(status: StatusCode, content_type: &str, body: Bytes) -> Reply {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    if let Ok(ct) = content_type.parse() {
        resp.headers_mut().insert(CONTENT_TYPE, ct);
    }
    resp
}

/// `%XX` escapes in a path segment (`[::1]:80` arrives as `%5B%3A%3A1%5D%3A80`).
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{allowed, percent_decode};

    #[test]
    fn every_path_says_which_methods_it_takes() {
        let allow = |path: &str| allowed(&path.trim_matches('/').split('/').collect::<Vec<_>>());
        assert_eq!(allow("/"), Some("GET, HEAD"));
        assert_eq!(allow("/metrics"), Some("GET, HEAD"));
        assert_eq!(allow("/v1/status"), Some("GET, HEAD"));
        assert_eq!(allow("/v1/reload"), Some("POST"));
        assert_eq!(allow("/v1/target-groups/web/targets"), Some("POST"));
        assert_eq!(
            allow("/v1/target-groups/web/targets/127.0.0.1:80"),
            Some("DELETE")
        );
        assert_eq!(allow("/v1/scaling-groups/web/desired"), Some("PUT"));
        assert_eq!(
            allow("/v1/scaling-groups/web/instances/i-1/protection"),
            Some("PUT")
        );
        assert_eq!(allow("/v1/nothing"), None);
        assert_eq!(allow("/v1/target-groups/web/targets/a/b"), None);
    }

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(percent_decode("%5B%3A%3A1%5D%3A80"), "[::1]:80");
        assert_eq!(percent_decode("127.0.0.1:9001"), "127.0.0.1:9001");
        assert_eq!(percent_decode("bad%zz%4"), "bad%zz%4");
    }
}
