//! One access log entry, and its JSON line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{Method, Version};
use serde::Serialize;

/// What the request path knows about one request. Entries are recycled: the writer hands each back
/// after formatting it, so that in steady state filling one allocates nothing, and the text fields are
/// copies in buffers that keep their capacity. (Keeping the request's own header values instead would
/// hold on to the connection's read buffer until the writer got to them, and make hyper allocate a new
/// one for every request.)
pub struct Entry {
    pub start_time: SystemTime,
    pub started: Instant,
    pub source: SocketAddr,
    pub target: Option<SocketAddr>,
    /// Tries made: more than 1 when the request was retried; 0 when it was never forwarded.
    pub tries: u8,
    /// Time waited for a concurrency slot; `None` when the request did not wait.
    pub queue_wait: Option<Duration>,
    pub method: Method,
    /// Path and query.
    pub path: String,
    pub version: Version,
    pub status: u16,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Start to the last byte sent to the client (or the client going away).
    pub duration: Duration,
    /// Start to the last byte of the request handed to the target.
    pub request_to_target: Option<Duration>,
    /// The target's response head to the last byte sent to the client.
    pub response_from_target: Option<Duration>,
    /// Empty when absent, as the next three.
    pub host: String,
    pub user_agent: String,
    pub request_id: String,
    pub server_name: Option<Arc<str>>,
    pub tls_version: Option<&'static str>,
    pub service: Option<Arc<str>>,
    pub listener: Option<Arc<str>>,
    pub rule: Option<Arc<str>>,
    pub target_group: Option<Arc<str>>,
    /// Why trellis answered itself (the `x-trellis-error` code), or `client_closed`.
    pub failure: Option<&'static str>,
    /// Which statement of which auth policy denied the request, or that none allowed it.
    pub auth_denied_reason: String,
}

impl Default for Entry {
    fn default() -> Self {
        Entry {
            start_time: SystemTime::UNIX_EPOCH,
            started: Instant::now(),
            source: SocketAddr::from(([0, 0, 0, 0], 0)),
            target: None,
            tries: 0,
            queue_wait: None,
            method: Method::GET,
            path: String::new(),
            version: Version::HTTP_11,
            status: 0,
            bytes_received: 0,
            bytes_sent: 0,
            duration: Duration::ZERO,
            request_to_target: None,
            response_from_target: None,
            host: String::new(),
            user_agent: String::new(),
            request_id: String::new(),
            server_name: None,
            tls_version: None,
            service: None,
            listener: None,
            rule: None,
            target_group: None,
            failure: None,
            auth_denied_reason: String::new(),
        }
    }
}

impl Entry {
    /// Readies a used entry for the next request: text buffers keep their capacity, shared names are
    /// let go.
    pub fn recycle(&mut self) {
        self.target = None;
        self.tries = 0;
        self.queue_wait = None;
        self.path.clear();
        self.host.clear();
        self.user_agent.clear();
        self.request_id.clear();
        self.request_to_target = None;
        self.response_from_target = None;
        self.bytes_received = 0;
        self.bytes_sent = 0;
        self.server_name = None;
        self.tls_version = None;
        self.service = None;
        self.listener = None;
        self.rule = None;
        self.target_group = None;
        self.failure = None;
        self.auth_denied_reason.clear();
    }
}

/// Copies a header value into `out`; bytes that are not UTF-8 are replaced, never dropped silently.
pub fn copy_text(out: &mut String, value: &[u8]) {
    match std::str::from_utf8(value) {
        Ok(text) => out.push_str(text),
        Err(_) => out.push_str(&String::from_utf8_lossy(value)),
    }
}

/// The JSON line, with Lattice's field names. Absent strings are `"-"` as in Lattice's and ALB's logs;
/// absent durations are `null`. Durations are milliseconds with microsecond precision: Lattice logs whole
/// milliseconds, which would show most requests on a local network as 0.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    start_time: String,
    source_ip_port: String,
    target_ip_port: String,
    tries: u8,
    queue_wait_duration: Option<f64>,
    request_method: &'a str,
    request_path: &'a str,
    protocol: &'static str,
    response_code: u16,
    bytes_received: u64,
    bytes_sent: u64,
    duration: f64,
    request_to_target_duration: Option<f64>,
    response_from_target_duration: Option<f64>,
    host_header: &'a str,
    server_name_indication: &'a str,
    user_agent: &'a str,
    tls_version: &'static str,
    service_name: &'a str,
    listener_name: &'a str,
    rule_name: &'a str,
    target_group_name: &'a str,
    failure_reason: &'static str,
    auth_denied_reason: &'a str,
    request_id: &'a str,
}

const NONE: &str = "-";

impl Entry {
    /// Appends the entry's JSON line (with its newline) to `out`.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        let line = Line {
            start_time: humantime::format_rfc3339_millis(self.start_time).to_string(),
            source_ip_port: self.source.to_string(),
            target_ip_port: self
                .target
                .map_or_else(|| NONE.to_string(), |t| t.to_string()),
            tries: self.tries,
            queue_wait_duration: self.queue_wait.map(millis),
            request_method: self.method.as_str(),
            request_path: or_none(&self.path),
            protocol: protocol(self.version),
            response_code: self.status,
            bytes_received: self.bytes_received,
            bytes_sent: self.bytes_sent,
            duration: millis(self.duration),
            request_to_target_duration: self.request_to_target.map(millis),
            response_from_target_duration: self.response_from_target.map(millis),
            host_header: or_none(&self.host),
            server_name_indication: self.server_name.as_deref().unwrap_or(NONE),
            user_agent: or_none(&self.user_agent),
            tls_version: self.tls_version.unwrap_or(NONE),
            service_name: self.service.as_deref().unwrap_or(NONE),
            listener_name: self.listener.as_deref().unwrap_or(NONE),
            rule_name: self.rule.as_deref().unwrap_or(NONE),
            target_group_name: self.target_group.as_deref().unwrap_or(NONE),
            failure_reason: self.failure.unwrap_or(NONE),
            auth_denied_reason: or_none(&self.auth_denied_reason),
            request_id: or_none(&self.request_id),
        };
        // Serializing plain strings and numbers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &line);
        out.push(b'\n');
    }
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "-",
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_nanos() / 1000) as f64 / 1000.0
}

fn or_none(text: &str) -> &str {
    if text.is_empty() {
        NONE
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        let mut user_agent = String::new();
        copy_text(&mut user_agent, b"curl/8 \"quoted\" \xff");
        Entry {
            start_time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            started: Instant::now(),
            source: "127.0.0.1:50000".parse().unwrap(),
            target: Some("127.0.0.1:8081".parse().unwrap()),
            tries: 2,
            queue_wait: Some(Duration::from_micros(2_500)),
            method: Method::POST,
            path: "/api/items?page=2".into(),
            version: Version::HTTP_11,
            status: 201,
            bytes_received: 12,
            bytes_sent: 345,
            duration: Duration::from_micros(1_234),
            request_to_target: Some(Duration::from_micros(210)),
            response_from_target: Some(Duration::from_micros(15)),
            host: "shop.internal".into(),
            user_agent,
            request_id: "abc".into(),
            server_name: None,
            tls_version: None,
            service: Some("shop".into()),
            listener: Some("web".into()),
            rule: Some("api".into()),
            target_group: Some("api".into()),
            failure: None,
            auth_denied_reason: String::new(),
        }
    }

    #[test]
    fn line_has_lattice_field_names_and_values() {
        let mut out = Vec::new();
        entry().write_line(&mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["startTime"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["sourceIpPort"], "127.0.0.1:50000");
        assert_eq!(v["targetIpPort"], "127.0.0.1:8081");
        assert_eq!(v["tries"], 2);
        assert_eq!(v["queueWaitDuration"], 2.5);
        assert_eq!(v["requestMethod"], "POST");
        assert_eq!(v["requestPath"], "/api/items?page=2");
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["responseCode"], 201);
        assert_eq!(v["bytesReceived"], 12);
        assert_eq!(v["bytesSent"], 345);
        assert_eq!(v["duration"], 1.234);
        assert_eq!(v["requestToTargetDuration"], 0.21);
        assert_eq!(v["responseFromTargetDuration"], 0.015);
        assert_eq!(v["hostHeader"], "shop.internal");
        assert_eq!(v["userAgent"], "curl/8 \"quoted\" \u{fffd}");
        assert_eq!(v["serverNameIndication"], "-");
        assert_eq!(v["tlsVersion"], "-");
        assert_eq!(v["serviceName"], "shop");
        assert_eq!(v["listenerName"], "web");
        assert_eq!(v["ruleName"], "api");
        assert_eq!(v["targetGroupName"], "api");
        assert_eq!(v["failureReason"], "-");
        assert_eq!(v["requestId"], "abc");
        assert_eq!(v["authDeniedReason"], "-");
        assert_eq!(v.as_object().unwrap().len(), 25);
    }

    #[test]
    fn absent_values() {
        let mut e = entry();
        e.target = None;
        e.target_group = None;
        e.request_to_target = None;
        e.response_from_target = None;
        e.host.clear();
        e.failure = Some("no_service");
        let mut out = Vec::new();
        e.write_line(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["targetIpPort"], "-");
        assert_eq!(v["targetGroupName"], "-");
        assert_eq!(v["hostHeader"], "-");
        assert!(v["requestToTargetDuration"].is_null());
        assert!(v["responseFromTargetDuration"].is_null());
        assert_eq!(v["failureReason"], "no_service");
    }

    #[test]
    fn a_recycled_entry_keeps_nothing_of_its_request() {
        let mut e = entry();
        e.recycle();
        let mut out = Vec::new();
        e.write_line(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        for key in [
            "targetIpPort",
            "requestPath",
            "hostHeader",
            "userAgent",
            "serviceName",
            "listenerName",
            "ruleName",
            "targetGroupName",
            "failureReason",
            "authDeniedReason",
            "requestId",
        ] {
            assert_eq!(v[key], "-", "{key}");
        }
        assert_eq!(v["bytesReceived"], 0);
        assert!(v["requestToTargetDuration"].is_null());
    }
}
