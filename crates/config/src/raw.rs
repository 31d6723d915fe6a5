//! The file as written: serde structs that mirror the TOML keys one to one.
//!
//! Every key is optional here and integers are `i64`, so that a missing key or an out-of-range number is
//! reported by validation with a clear message (and alongside every other problem) rather than by serde
//! stopping at the first one. `deny_unknown_fields` everywhere: a misspelled key is an error, not a default.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawAdmin {
    pub listen: Option<String>,
    pub token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawFleet {
    pub endpoints: Option<Vec<String>>,
    pub prefix: Option<String>,
    pub node: Option<String>,
    pub bind: Option<String>,
    pub lease_ttl: Option<String>,
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawAccessLog {
    pub destination: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawLimits {
    pub header_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_header_bytes: Option<i64>,
    pub body_timeout: Option<String>,
    pub send_timeout: Option<String>,
    pub tunnel_idle_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawService {
    pub name: Option<String>,
    pub hosts: Option<Vec<String>>,
    pub auth_policy: Option<String>,
    pub rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    pub listener: Vec<RawListener>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawListener {
    pub name: Option<String>,
    pub protocol: Option<String>,
    pub port: Option<i64>,
    pub bind: Option<String>,
    pub tls: Option<RawTls>,
    pub limits: Option<RawLimits>,
    #[serde(default)]
    pub rule: Vec<RawRule>,
    pub default_action: Option<RawAction>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table { cert, key } (and for mutual TLS client_ca, client_auth)"
)]
pub(crate) struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub client_ca: Option<String>,
    pub client_auth: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawRule {
    pub name: Option<String>,
    pub priority: Option<i64>,
    #[serde(rename = "match")]
    pub matcher: Option<RawMatch>,
    pub action: Option<RawAction>,
    pub rate_limit: Option<RawRateLimit>,
    pub transform: Option<RawTransform>,
}

/// `rate_limit = { requests_per_second, burst, key }` on a service or a rule.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table { requests_per_second, burst, key }"
)]
pub(crate) struct RawRateLimit {
    pub requests_per_second: Option<f64>,
    pub burst: Option<i64>,
    pub key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawMatch {
    pub method: Option<String>,
    pub path: Option<RawPathMatch>,
    pub headers: Option<Vec<RawHeaderMatch>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table { exact or prefix, case_sensitive }"
)]
pub(crate) struct RawPathMatch {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub case_sensitive: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table { name, exact or prefix or contains, case_sensitive }"
)]
pub(crate) struct RawHeaderMatch {
    pub name: Option<String>,
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub contains: Option<String>,
    pub case_sensitive: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table { forward }, { fixed_response } or { redirect }"
)]
pub(crate) struct RawAction {
    pub forward: Option<Vec<RawForward>>,
    pub fixed_response: Option<RawFixedResponse>,
    pub redirect: Option<RawRedirect>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table { target_group, weight }")]
pub(crate) struct RawForward {
    pub target_group: Option<String>,
    pub weight: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table { status, body, content_type }"
)]
pub(crate) struct RawFixedResponse {
    pub status: Option<i64>,
    pub body: Option<String>,
    pub content_type: Option<String>,
}

/// ALB's redirect action: every part but `status` defaults to the request's own.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table { status, protocol, host, port, path, query }"
)]
pub(crate) struct RawRedirect {
    pub status: Option<i64>,
    pub protocol: Option<String>,
    pub host: Option<String>,
    pub port: Option<String>,
    pub path: Option<String>,
    pub query: Option<String>,
}

/// `transform = { path_prefix, request_headers, response_headers }` on a rule.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table { path_prefix, request_headers, response_headers }"
)]
pub(crate) struct RawTransform {
    pub path_prefix: Option<String>,
    pub request_headers: Option<RawRequestHeaders>,
    pub response_headers: Option<RawResponseHeaders>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table { set, add, remove }")]
pub(crate) struct RawRequestHeaders {
    pub set: Option<BTreeMap<String, String>>,
    pub add: Option<BTreeMap<String, String>>,
    pub remove: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table { set, remove }")]
pub(crate) struct RawResponseHeaders {
    pub set: Option<BTreeMap<String, String>>,
    pub remove: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawTargetGroup {
    pub name: Option<String>,
    pub protocol: Option<String>,
    pub protocol_version: Option<String>,
    pub algorithm: Option<String>,
    pub targets: Option<Vec<RawTarget>>,
    pub deregistration_delay: Option<String>,
    pub response_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    /// `protocol = "https"` only: how targets' certificates are verified.
    pub ca: Option<String>,
    pub sni: Option<String>,
    pub insecure_skip_verify: Option<bool>,
    pub health_check: Option<RawHealthCheck>,
    pub outlier_detection: Option<RawOutlier>,
    pub retry: Option<RawRetry>,
    pub concurrency: Option<RawConcurrency>,
    pub stickiness: Option<RawStickiness>,
    pub slow_start: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawStickiness {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub duration: Option<String>,
    pub cookie_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawRetry {
    pub attempts: Option<i64>,
    pub on: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
    pub per_try_timeout: Option<String>,
    pub budget_percent: Option<i64>,
    pub max_replay_body: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawConcurrency {
    pub max_per_target: Option<i64>,
    pub queue: Option<i64>,
    pub queue_timeout: Option<String>,
}

/// `"127.0.0.1:9001"` or `{ address = "127.0.0.1:9002", weight = 3 }`.
#[derive(Debug)]
pub(crate) struct RawTarget {
    pub address: Option<String>,
    pub weight: Option<i64>,
}

/// The table form of [`RawTarget`] (also what `keys::known_keys` reads its keys from).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTargetTable {
    address: Option<String>,
    weight: Option<i64>,
}

// Hand-written rather than `#[serde(untagged)]`: untagged enums turn every mistake inside the table into
// "data did not match any variant", losing the unknown key's name.
impl<'de> Deserialize<'de> for RawTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawTarget;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an address string or a table { address, weight }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawTarget, E> {
                Ok(RawTarget {
                    address: Some(s.to_string()),
                    weight: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawTarget, A::Error> {
                let t = RawTargetTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawTarget {
                    address: t.address,
                    weight: t.weight,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawHealthCheck {
    pub enabled: Option<bool>,
    pub protocol: Option<String>,
    pub path: Option<String>,
    pub port: Option<i64>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub healthy_threshold: Option<i64>,
    pub unhealthy_threshold: Option<i64>,
    pub matcher: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawOutlier {
    pub enabled: Option<bool>,
    pub consecutive_failures: Option<i64>,
    pub base_ejection_time: Option<String>,
    pub max_ejection_time: Option<String>,
    pub max_ejection_percent: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawScalingGroup {
    pub name: Option<String>,
    pub target_group: Option<String>,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub desired: Option<i64>,
    pub health_check_grace_period: Option<String>,
    pub cooldown: Option<String>,
    pub scale_in_window: Option<String>,
    pub max_instance_lifetime: Option<String>,
    pub scale_to_zero: Option<RawScaleToZero>,
    pub instance_refresh: Option<RawInstanceRefresh>,
    pub warm_pool: Option<RawWarmPool>,
    pub instance_warmup: Option<String>,
    pub evaluation_period: Option<String>,
    pub termination_policy: Option<String>,
    pub launch: Option<RawLaunch>,
    #[serde(default)]
    pub policy: Vec<RawPolicy>,
    #[serde(default)]
    pub lifecycle_hook: Vec<RawLifecycleHook>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table { idle, wake_timeout }")]
pub(crate) struct RawScaleToZero {
    pub idle: Option<String>,
    pub wake_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table { min_healthy_percent, max_healthy_percent, auto_rollback, on_launch_change }"
)]
pub(crate) struct RawInstanceRefresh {
    pub min_healthy_percent: Option<i64>,
    pub max_healthy_percent: Option<i64>,
    pub auto_rollback: Option<bool>,
    pub on_launch_change: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table { size, reuse_on_scale_in }")]
pub(crate) struct RawWarmPool {
    pub size: Option<i64>,
    pub reuse_on_scale_in: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawLifecycleHook {
    pub name: Option<String>,
    pub transition: Option<String>,
    pub command: Option<Vec<String>>,
    pub timeout: Option<String>,
    pub default_result: Option<String>,
}

/// Both providers' keys in one struct: which ones are present is checked against `provider` in validation,
/// so the message can say "`launch` belongs to the command provider" instead of just "unknown key".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawLaunch {
    pub provider: Option<String>,
    // process
    pub command: Option<Vec<String>>,
    pub ports: Option<String>,
    pub env: Option<BTreeMap<String, String>>,
    pub workdir: Option<String>,
    pub log_dir: Option<String>,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<String>,
    // command
    pub launch: Option<Vec<String>>,
    pub terminate: Option<Vec<String>>,
    pub list: Option<Vec<String>>,
    pub hook_timeout: Option<String>,
}

/// All policy types' keys; as with [`RawLaunch`], the ones that do not belong to `type` are reported.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawPolicy {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub metric: Option<String>,
    pub target: Option<f64>,
    pub disable_scale_in: Option<bool>,
    pub adjustment_type: Option<String>,
    pub steps: Option<Vec<RawStep>>,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub desired: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table { lower, upper, adjustment }"
)]
pub(crate) struct RawStep {
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    pub adjustment: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table { auth_policy }")]
pub(crate) struct RawNetwork {
    pub auth_policy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table { name, statement = [...] }")]
pub(crate) struct RawAuthPolicy {
    pub name: Option<String>,
    #[serde(default)]
    pub statement: Vec<RawStatement>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table { effect, principals, source_cidrs, methods, paths, headers, query }"
)]
pub(crate) struct RawStatement {
    pub effect: Option<String>,
    pub principals: Option<Vec<String>>,
    pub source_cidrs: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
    pub paths: Option<Vec<String>>,
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    pub query: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table { issuer, audiences, jwks_file or key_file }"
)]
pub(crate) struct RawJwtIssuer {
    pub issuer: Option<String>,
    pub audiences: Option<Vec<String>>,
    pub jwks_file: Option<String>,
    pub key_file: Option<String>,
}
