//! An entry on its way: begun when the request is routed, finished when its response body is done.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{self, HeaderValue};
use http::Request;

use super::entry::copy_text;
use super::{AccessLog, Entry};
use crate::headers::X_REQUEST_ID;
use crate::snapshot::RouteMetrics;
use crate::tls::TlsInfo;
use crate::upload::Upload;

/// An entry being filled, with where it goes.
pub struct Pending {
    entry: Box<Entry>,
    sink: Arc<AccessLog>,
    /// The request body's progress, when it has one.
    request: Option<Arc<Upload>>,
    /// When the request head was handed to the target.
    sent_at: Option<Instant>,
    /// When the target's response head arrived.
    head_at: Option<Instant>,
}

impl Pending {
    pub fn begin<B>(
        sink: &Arc<AccessLog>,
        req: &Request<B>,
        source: std::net::SocketAddr,
        tls: Option<&TlsInfo>,
        started: Instant,
    ) -> Pending {
        let mut entry = sink.entry();
        if let Some(tls) = tls {
            entry.server_name = tls.sni.clone();
            entry.tls_version = Some(tls.version);
        }
        let headers = req.headers();
        entry.start_time = SystemTime::now();
        entry.started = started;
        entry.source = source;
        entry.method = req.method().clone();
        entry.version = req.version();
        let uri = req.uri();
        entry
            .path
            .push_str(uri.path_and_query().map_or(uri.path(), |pq| pq.as_str()));
        match (headers.get(header::HOST), uri.authority()) {
            (Some(host), _) => copy_text(&mut entry.host, host.as_bytes()),
            (None, Some(authority)) => entry.host.push_str(authority.as_str()),
            (None, None) => {}
        }
        if let Some(agent) = headers.get(header::USER_AGENT) {
            copy_text(&mut entry.user_agent, agent.as_bytes());
        }
        if let Some(id) = headers.get(&X_REQUEST_ID) {
            copy_text(&mut entry.request_id, id.as_bytes());
        }
        Pending {
            entry,
            sink: sink.clone(),
            request: None,
            sent_at: None,
            head_at: None,
        }
    }

    /// The route that answered: its names go in the entry.
    pub fn route(&mut self, route: &RouteMetrics) {
        self.entry.service = Some(route.service.clone());
        self.entry.listener = Some(route.listener.clone());
        self.entry.rule = Some(route.rule.clone());
    }

    /// The path (and query) the target gets, when a rule's transform rewrote the request's.
    pub fn rewritten(&mut self, uri: &http::Uri) {
        self.entry.path.clear();
        self.entry
            .path
            .push_str(uri.path_and_query().map_or(uri.path(), |pq| pq.as_str()));
    }

    /// Why an auth policy denied the request.
    pub fn denied(&mut self, reason: &str) {
        self.entry.auth_denied_reason.push_str(reason);
    }

    pub fn answered(&mut self, status: u16, failure: Option<&'static str>) {
        self.entry.status = status;
        self.entry.failure = failure;
    }

    /// The target group the request is forwarded to.
    pub fn group(&mut self, group: &Arc<str>) {
        self.entry.target_group = Some(group.clone());
    }

    /// What forwarding learned: the target, the id the target was given, the timings.
    pub fn forwarded(&mut self, trace: Trace) {
        self.entry.target = trace.target;
        self.entry.tries = trace.tries;
        self.entry.queue_wait = trace.queue_wait;
        if let Some(id) = trace.request_id {
            self.entry.request_id.clear();
            copy_text(&mut self.entry.request_id, id.as_bytes());
        }
        self.request = trace.request;
        self.sent_at = trace.sent_at;
        self.head_at = trace.head_at;
    }

    /// The response is done (or the client went away): completes the entry and queues it.
    pub fn finish(mut self, bytes_sent: u64) {
        let now = Instant::now();
        let entry = &mut self.entry;
        entry.bytes_sent = bytes_sent;
        entry.duration = now.saturating_duration_since(entry.started);
        let mut request_done = self.sent_at;
        if let Some(request) = &self.request {
            entry.bytes_received = request.bytes();
            if let Some(ended) = request.ended() {
                request_done = request_done.max(Some(ended.into_std()));
            }
        }
        entry.request_to_target =
            request_done.map(|at| at.saturating_duration_since(entry.started));
        entry.response_from_target = self.head_at.map(|at| now.saturating_duration_since(at));
        self.sink.send(self.entry);
    }
}

/// What the forwarding of one request observed, for its access log entry.
#[derive(Default)]
pub struct Trace {
    pub target: Option<std::net::SocketAddr>,
    /// Tries made (targets the request was sent to, or attempted); 0: never forwarded.
    pub tries: u8,
    /// Time spent waiting for a concurrency slot, when the request had to.
    pub queue_wait: Option<std::time::Duration>,
    pub request_id: Option<HeaderValue>,
    pub request: Option<Arc<Upload>>,
    pub sent_at: Option<Instant>,
    pub head_at: Option<Instant>,
}
