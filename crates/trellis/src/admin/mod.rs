//! The admin listener (`[admin].listen`): `/healthz`, `/metrics`, `/v1/status`. Loopback by default; it
//! never shares a port with traffic, so a flood on a listener cannot starve the operator's view.

mod status;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus::{Encoder, TextEncoder};
use tokio::net::TcpListener;
use trellis_config::Config;
use trellis_targets::TargetRegistry;

/// What the admin API reads.
pub struct Admin {
    pub config: Arc<Config>,
    pub targets: Arc<TargetRegistry>,
    pub prometheus: prometheus::Registry,
}

/// Binds the admin listener and serves it in the background; returns the bound address.
pub async fn start(admin: Arc<Admin>) -> anyhow::Result<SocketAddr> {
    let listen = admin.config.admin.listen;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} for the admin API"))?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let admin = admin.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(handle(&admin, req)) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn handle(admin: &Admin, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let route = match path {
        "/healthz" | "/metrics" | "/v1/status" => path,
        _ => return error(StatusCode::NOT_FOUND, &format!("no such endpoint: {path}")),
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{route} only answers GET"),
        );
    }
    match route {
        "/healthz" => respond(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into()),
        "/metrics" => metrics(admin),
        _ => {
            let body = status::status(admin).to_string();
            respond(StatusCode::OK, "application/json", body.into())
        }
    }
}

fn metrics(admin: &Admin) -> Response<Full<Bytes>> {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    if let Err(e) = encoder.encode(&admin.prometheus.gather(), &mut body) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }
    respond(StatusCode::OK, encoder.format_type(), body.into())
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": message }).to_string();
    respond(status, "application/json", body.into())
}

fn respond(status: StatusCode, content_type: &str, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    if let Ok(ct) = content_type.parse() {
        resp.headers_mut().insert(CONTENT_TYPE, ct);
    }
    resp
}
