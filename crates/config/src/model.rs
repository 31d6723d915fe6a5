//! The validated, immutable configuration model.
//!
//! Everything here has passed validation: names are unique, references resolve, numbers are in range,
//! defaults are filled in. Later stages (snapshot building, health, scaler) never re-check the file.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use crate::redirect::Redirect;
pub use crate::transform::Transform;

/// A whole, valid configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from (for messages and reloads).
    pub source: PathBuf,
    pub admin: Admin,
    /// `[fleet]`: this node's place in a fleet, whose shared configuration comes from etcd.
    pub fleet: Option<Fleet>,
    pub access_log: AccessLog,
    /// Global defaults for connection limits; each listener carries its resolved copy.
    pub limits: Limits,
    pub services: Vec<Service>,
    pub target_groups: Vec<TargetGroup>,
    pub scaling_groups: Vec<ScalingGroup>,
    /// `[network]`: what applies to every service.
    pub network: Network,
    pub auth_policies: Vec<AuthPolicy>,
    pub jwt_issuers: Vec<JwtIssuer>,
}

/// `[network]`, Lattice's service network: one machine's worth of it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Network {
    /// Name of the `[[auth_policy]]` every request must pass (as well as its service's).
    pub auth_policy: Option<String>,
}

/// `[[auth_policy]]`: statements evaluated as Lattice's and IAM's are: an explicit deny wins over any
/// allow, and a request no statement allows is denied.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthPolicy {
    pub name: String,
    pub statements: Vec<Statement>,
}

/// One statement; every condition present must hold for it to apply.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Statement {
    pub effect: Effect,
    /// Globs (`*` matches any run of characters) over the caller's identities (mTLS, JWT `sub`).
    pub principals: Vec<String>,
    pub source_cidrs: Vec<Cidr>,
    /// Upper-case.
    pub methods: Vec<String>,
    pub paths: Vec<PathPattern>,
    /// (lower-case name, glob over the value); every pair must hold.
    pub headers: Vec<(String, String)>,
    /// (key, value) of the query string, compared as sent; every pair must hold.
    pub query: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Effect {
    #[default]
    Allow,
    Deny,
}

/// `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket arrives as an IPv4-mapped IPv6 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `/exact` or `/prefix*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    Exact(String),
    Prefix(String),
}

/// `[[jwt_issuer]]`: bearer tokens this issuer signs identify their `sub`.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtIssuer {
    /// The `iss` claim.
    pub issuer: String,
    /// A token's `aud` must name one of these.
    pub audiences: Vec<String>,
    /// `jwks_file` or `key_file`.
    pub key_file: PathBuf,
    /// Always `Some` in a configuration that parsed.
    pub keys: Option<crate::jwt::JwtKeys>,
}

impl Config {
    /// Names of the target groups some rule or default action forwards to; the others are `unused`.
    pub fn target_groups_in_use(&self) -> std::collections::HashSet<&str> {
        self.services
            .iter()
            .flat_map(|s| &s.listeners)
            .flat_map(|l| l.rules.iter().map(|r| &r.action).chain([&l.default_action]))
            .filter_map(|a| match a {
                Action::Forward(groups) => Some(groups),
                Action::FixedResponse(_) | Action::Redirect(_) => None,
            })
            .flatten()
            .map(|g| g.target_group.as_str())
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    /// Default `127.0.0.1:9901`.
    pub listen: SocketAddr,
    /// Required when `listen` is not a loopback address.
    pub token_file: Option<PathBuf>,
}

/// `[fleet]` of a node file: where the fleet's truth is, and who this node is.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    /// etcd client URLs (`http://127.0.0.1:2379`); any one reachable member is enough.
    pub endpoints: Vec<String>,
    /// The key namespace, `/trellis` by default; no trailing `/`.
    pub prefix: String,
    /// Unique per node; the host name by default.
    pub node: String,
    /// The address every listener of this node binds, when set.
    pub bind: Option<IpAddr>,
    /// Ownership and liveness lease, 2s..=120s (default 15s).
    pub lease_ttl: Duration,
    /// TLS to etcd (`https://` endpoints), read and checked when the file is loaded.
    pub tls: Option<FleetTls>,
}

/// PEM bytes for TLS to etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetTls {
    /// The CA that signed the members' certificates.
    pub ca: Vec<u8>,
    /// This node's client certificate and key, for etcd's `--client-cert-auth`.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccessLog {
    pub destination: LogDestination,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDestination {
    Stdout,
    Off,
    File(PathBuf),
}

/// Downstream connection limits (`[limits]`, overridable per listener with `listener.limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Whole request head must arrive within this (default 10s); slower clients are cut off.
    pub header_timeout: Duration,
    /// Keep-alive connections with no request in flight close after this (default 60s).
    pub idle_timeout: Duration,
    /// Largest request head in bytes (default 64 KiB); larger gets `431`.
    pub max_header_bytes: usize,
    /// Longest wait for the next bytes of a request body the target is ready to take (default 60s, as
    /// nginx's `client_body_timeout`); then `408`, never blamed on the target.
    pub body_timeout: Duration,
    /// Longest time without progress writing to the client (default 60s, as nginx's `send_timeout`);
    /// then the connection closes and its upstream request is cancelled.
    pub send_timeout: Duration,
    /// An upgraded (WebSocket) tunnel with no bytes either way for this long closes (default 1h).
    pub tunnel_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            body_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            tunnel_idle_timeout: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub hosts: Vec<HostPattern>,
    /// Applies to every request the service answers, on all its listeners (one set of buckets).
    pub rate_limit: Option<RateLimit>,
    pub listeners: Vec<Listener>,
    /// Name of the `[[auth_policy]]` its requests must pass (as well as the network's).
    pub auth_policy: Option<String>,
}

/// A host name a service answers to. Stored lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `shop.internal`
    Exact(String),
    /// `*.shop.internal`, stored as the suffix with its leading dot: `.shop.internal`.
    Suffix(String),
    /// `*`: any host.
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerProtocol {
    Http,
    Https,
    TlsPassthrough,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub name: String,
    pub protocol: ListenerProtocol,
    pub port: u16,
    /// Default `0.0.0.0` (all IPv4 addresses).
    pub bind: IpAddr,
    /// Required for `https`; forbidden otherwise.
    pub tls: Option<TlsFiles>,
    /// `[limits]` with this listener's overrides applied.
    pub limits: Limits,
    /// Sorted by priority, lowest first.
    pub rules: Vec<Rule>,
    pub default_action: Action,
}

impl Listener {
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    /// PEM certificate chain; relative paths are resolved against the config file's directory.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// PEM CA certificates that clients' certificates must chain to (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: `Required` (the default) or `Optional`.
    pub client_auth: Option<ClientAuth>,
    /// The files' contents, read and checked when the configuration was parsed. Always `Some` in a
    /// configuration that parsed without errors.
    pub material: Option<crate::tls::TlsMaterial>,
}

/// Whether a listener with `client_ca` demands a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Handshakes without a valid client certificate fail.
    Required,
    /// Clients may connect without a certificate; one they present must be valid.
    Optional,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    /// 1..=2000, unique within the listener.
    pub priority: u16,
    pub matcher: Match,
    pub action: Action,
    /// Applies to the requests this rule matched (after the service's, when both are set).
    pub rate_limit: Option<RateLimit>,
    /// Only on rules that forward.
    pub transform: Option<Transform>,
}

/// `rate_limit = { requests_per_second, burst, key }`: a token bucket per key.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second: > 0 and at most 1,000,000; fractions allowed (`0.5`: one every 2 s).
    pub requests_per_second: f64,
    /// Bucket size, 1..=1,000,000; default `ceil(requests_per_second)`, at least 1.
    pub burst: u32,
    pub key: RateLimitKey,
}

/// What tells requests apart: each distinct key has its own bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateLimitKey {
    /// The client's IP address (the default).
    SourceIp,
    /// The caller's identity (the mutual TLS client certificate's, else a verified JWT's `sub`); requests
    /// without one share a bucket.
    Identity,
    /// The value of this request header (lower-case name); requests without it share a bucket.
    Header(String),
}

/// Every present condition must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Match {
    /// Upper-case HTTP method, one of Lattice's (CONNECT DELETE GET HEAD OPTIONS POST PUT TRACE) or PATCH.
    pub method: Option<String>,
    pub path: Option<PathMatch>,
    /// At most 5.
    pub headers: Vec<HeaderMatch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringMatchKind {
    Exact,
    Prefix,
    Contains,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathMatch {
    /// `Exact` or `Prefix` only.
    pub kind: StringMatchKind,
    /// Starts with `/`, 1..=200 chars. Stored as written (not lower-cased).
    pub value: String,
    /// Default false.
    pub case_sensitive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    /// Lower-case header name.
    pub name: String,
    pub kind: StringMatchKind,
    /// Stored as written (not lower-cased).
    pub value: String,
    /// Default false.
    pub case_sensitive: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Non-empty; weights 0..=999 (default 1); names resolve to a target group.
    Forward(Vec<WeightedTargetGroup>),
    FixedResponse(FixedResponse),
    /// Answered by trellis, never by a target.
    Redirect(Redirect),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedTargetGroup {
    pub target_group: String,
    pub weight: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedResponse {
    /// 100..=599.
    pub status: u16,
    pub body: Option<String>,
    pub content_type: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetProtocol {
    Http,
    Https,
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    Http1,
    Http2,
    Grpc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Fewest in-flight requests, ties broken by weight.
    LeastOutstanding,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TargetGroup {
    pub name: String,
    pub protocol: TargetProtocol,
    pub protocol_version: ProtocolVersion,
    pub algorithm: Algorithm,
    /// Unique addresses.
    pub targets: Vec<TargetSpec>,
    /// Default 30s.
    pub deregistration_delay: Duration,
    /// Time from request sent to response head received (default 60s); exceeded: `504`.
    pub response_timeout: Duration,
    /// TCP connect, and with `https` the TLS handshake too (default 5s); exceeded: next target.
    pub connect_timeout: Duration,
    /// How targets' certificates are verified: `Some` exactly when `protocol` is `https`.
    pub tls: Option<TargetTls>,
    pub health_check: HealthCheck,
    pub outlier_detection: OutlierDetection,
    /// `None`: only what was never sent (connect failures) and bodiless idempotent requests whose
    /// exchange broke are tried again, on at most 2 other targets.
    pub retry: Option<RetryPolicy>,
    /// `None`: no limit on the requests in flight to a target.
    pub concurrency: Option<Concurrency>,
    /// `None`: every request is balanced on its own.
    pub stickiness: Option<Stickiness>,
    /// A target that becomes routable ramps up to its full weight over this long; zero: at once.
    pub slow_start: Duration,
}

/// `[target_group.stickiness]`: ALB's two kinds of session affinity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stickiness {
    pub kind: StickinessKind,
    /// How long the cookie trellis sets lasts: 1s..=7d, default 1d.
    pub duration: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickinessKind {
    /// trellis sets its own cookie on every response and follows it.
    LbCookie,
    /// trellis sets its cookie when the application sets `cookie_name`, and follows it.
    AppCookie { cookie_name: String },
}

/// `[target_group.retry]`: which failed tries are made again, how often, and within what budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries after the first, 0..=5; default 2.
    pub attempts: u8,
    /// What makes a try fail and be made again (connect failures always do); default reset and
    /// gateway_error.
    pub on: RetryOn,
    /// Methods (upper case) whose requests may be sent again once sent; default the idempotent ones.
    pub methods: Vec<String>,
    /// Each try's limit from the request sent to the response head; default `response_timeout`.
    pub per_try_timeout: Option<Duration>,
    /// Retries within 10 s never exceed this share of the group's requests (with a floor); default 20.
    pub budget_percent: u8,
    /// Request bodies up to this size are kept to be sent again; larger ones are sent once. Default 64 KiB.
    pub max_replay_body: u64,
}

/// The conditions of [`RetryPolicy::on`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOn {
    /// Any 5xx response.
    pub server_error: bool,
    /// 502, 503 and 504 responses.
    pub gateway_error: bool,
    /// The exchange broke after the request was sent, before a response head.
    pub reset: bool,
    /// No response head within the try's timeout.
    pub timeout: bool,
}

/// `[target_group.concurrency]`: requests in flight per target, and the queue for the ones over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concurrency {
    /// 1..=100000.
    pub max_per_target: u32,
    /// Requests that may wait for a slot, for the whole group; 0..=100000, default 0 (refused at once).
    pub queue: u32,
    /// Longest wait in the queue; default 1s.
    pub queue_timeout: Duration,
}

/// TLS to the targets of an `https` group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetTls {
    /// PEM CA certificates to verify targets against (resolved against the config file's directory);
    /// `None`: the system's root certificates.
    pub ca: Option<PathBuf>,
    /// The server name sent and verified (a DNS name, or an IP address written as one); `None`: the
    /// target's IP address.
    pub sni: Option<String>,
    /// `false` with `insecure_skip_verify = true`: any certificate is accepted. Never false with `ca`.
    pub verify: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TargetSpec {
    pub address: SocketAddr,
    /// 0..=999, default 1 (0 = takes no traffic).
    pub weight: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthCheckProtocol {
    Http,
    Https,
    Tcp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    /// Default true.
    pub enabled: bool,
    /// Default `http` (`tcp` for tcp target groups).
    pub protocol: HealthCheckProtocol,
    /// Default "/".
    pub path: String,
    /// Default: the target's own port.
    pub port: Option<u16>,
    /// >= 100ms, <= 300s; default 30s.
    pub interval: Duration,
    /// < interval; default 5s, or half the interval when that is shorter.
    pub timeout: Duration,
    /// 1..=10, default 5.
    pub healthy_threshold: u32,
    /// 1..=10, default 2.
    pub unhealthy_threshold: u32,
    /// Default "200".
    pub matcher: StatusMatcher,
}

/// `"200"`, `"200,202"`, `"200-299"`: a list of inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMatcher {
    pub ranges: Vec<(u16, u16)>,
    /// As written, for messages (`status 500 not in 200-299`).
    pub text: String,
}

impl StatusMatcher {
    pub fn matches(&self, status: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

/// Passive health (`[target_group.outlier_detection]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierDetection {
    /// Default true.
    pub enabled: bool,
    /// Connect errors or 5xx in a row that eject a target; default 5.
    pub consecutive_failures: u32,
    /// Default 30s; multiplied by the number of ejections so far.
    pub base_ejection_time: Duration,
    /// Cap on one ejection; default 300s.
    pub max_ejection_time: Duration,
    /// 0..=100; default 50.
    pub max_ejection_percent: u8,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScalingGroup {
    pub name: String,
    /// Resolves to a target group.
    pub target_group: String,
    pub min: u32,
    pub max: u32,
    /// min <= desired <= max.
    pub desired: u32,
    /// Default 0s.
    pub health_check_grace_period: Duration,
    /// Default 300s.
    pub cooldown: Duration,
    /// Scale-in never goes below the largest capacity any evaluation within this window asked for
    /// (Kubernetes' scale-down stabilization); default 5m, `0s`: only the latest evaluation.
    pub scale_in_window: Duration,
    /// Instances older than this are replaced, launch first, then stop; `None`: they live on.
    pub max_instance_lifetime: Option<Duration>,
    /// With `min = 0`: down to no instance when idle, woken by the next request.
    pub scale_to_zero: Option<ScaleToZero>,
    /// How a refresh replaces the instances (started by a reload that changes `launch`, or through the
    /// API).
    pub instance_refresh: InstanceRefresh,
    /// Instances kept launched, healthy and out of service, for a scale-out that cannot wait for a boot.
    pub warm_pool: Option<WarmPool>,
    /// Default 0s.
    pub instance_warmup: Duration,
    /// How often the policies look at the metrics (each sample covers one period); 100ms..=300s,
    /// default 10s. Not a Lattice key: Auto Scaling's is fixed at a minute.
    pub evaluation_period: Duration,
    /// Default `Oldest`.
    pub termination_policy: TerminationPolicy,
    pub launch: Launch,
    pub policies: Vec<Policy>,
    /// Commands run between launch and service, or between drained and stopped.
    pub lifecycle_hooks: Vec<LifecycleHook>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminationPolicy {
    Oldest,
    Newest,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Launch {
    Process(ProcessLaunch),
    Command(CommandLaunch),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessLaunch {
    /// argv; placeholders `{self}`, `{host}`, `{port}`, `{id}`, `{group}`; non-empty.
    pub command: Vec<String>,
    /// Inclusive port range for `{port}` (required when a `{port}` placeholder is used).
    pub ports: Option<(u16, u16)>,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<PathBuf>,
    pub log_dir: Option<PathBuf>,
    /// Signal number; default SIGTERM (15). Written as "SIGTERM", "TERM", "SIGINT", ...
    pub stop_signal: i32,
    /// Default 10s.
    pub stop_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CommandLaunch {
    /// argv of each hook; non-empty.
    pub launch: Vec<String>,
    pub terminate: Vec<String>,
    pub list: Option<Vec<String>>,
    /// Default 60s.
    pub hook_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    pub kind: PolicyKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalingMetric {
    /// Requests/s per in-service target.
    RequestCountPerTarget,
    InFlightPerTarget,
    /// Average CPU % of the instances (process provider).
    CpuUtilization,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdjustmentType {
    Change,
    Exact,
    Percent,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PolicyKind {
    TargetTracking {
        metric: ScalingMetric,
        /// > 0.
        target: f64,
        /// Default false.
        disable_scale_in: bool,
    },
    Step {
        metric: ScalingMetric,
        adjustment_type: AdjustmentType,
        /// Non-overlapping, sorted by lower bound.
        steps: Vec<Step>,
    },
    Scheduled {
        /// Five-field cron expression, validated.
        cron: String,
        /// IANA name; default "UTC".
        timezone: String,
        min: Option<u32>,
        max: Option<u32>,
        desired: Option<u32>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Inclusive lower bound of the metric; None = unbounded.
    pub lower: Option<f64>,
    /// Exclusive upper bound; None = unbounded.
    pub upper: Option<f64>,
    pub adjustment: i64,
}

/// `[[scaling_group.lifecycle_hook]]`: a command run at a lifecycle transition (EC2 Auto Scaling's
/// lifecycle hooks, with the command in place of a notification and `complete-lifecycle-action`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleHook {
    pub name: String,
    pub transition: HookTransition,
    /// Placeholders `{id}`, `{address}`, `{group}`, `{transition}`.
    pub command: Vec<String>,
    /// Default 5m; then `default_result`.
    pub timeout: Duration,
    /// What a timeout counts as; default abandon.
    pub default_result: HookResult,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookTransition {
    /// After the instance started, before it is registered in its target group.
    Launching,
    /// After it left its target group and drained, while it still runs, before it is stopped.
    Terminating,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookResult {
    Continue,
    Abandon,
}

/// `[scaling_group.instance_refresh]`: EC2 Auto Scaling's instance refresh preferences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceRefresh {
    /// Of desired, the share that stays in service throughout; 0..=100, default 100 (launch before stop;
    /// Auto Scaling's default of 90 drops a one-instance group to zero).
    pub min_healthy_percent: u32,
    /// Of desired, how far a refresh may go above it; 100..=200, default 200.
    pub max_healthy_percent: u32,
    /// A refresh whose new instances fail goes back to the previous launch. Default true.
    pub auto_rollback: bool,
    /// A reload that changes `launch` starts a refresh. Default true.
    pub on_launch_change: bool,
}

impl Default for InstanceRefresh {
    fn default() -> Self {
        InstanceRefresh {
            min_healthy_percent: 100,
            max_healthy_percent: 200,
            auto_rollback: true,
            on_launch_change: true,
        }
    }
}

/// `[scaling_group.warm_pool]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmPool {
    /// Instances kept launched and healthy but out of service; 1..=100.
    pub size: u32,
    /// Scale-in returns instances to the pool (while it has room) instead of stopping them.
    pub reuse_on_scale_in: bool,
}

/// `[scaling_group.scale_to_zero]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleToZero {
    /// No request for this long: desired goes to 0. Default 10m.
    pub idle: Duration,
    /// A request to the group with nothing in service waits this long for it to wake; then 503
    /// `waking`. Default 30s.
    pub wake_timeout: Duration,
}
