//! The routing snapshot: everything a request needs to find its way, immutable, swapped whole.

mod action;
mod hosts;
#[cfg(test)]
mod limit_tests;
mod redirect;
mod route_metrics;
mod rules;
mod transform;

pub use action::{Action, Fixed};
pub use hosts::HostTable;
pub use redirect::{host_without_port, Origin, Redirect};
pub use route_metrics::{class_index, RouteMetrics};
pub use rules::Conditions;
#[cfg(feature = "fuzzing")]
pub use rules::TextMatcher;
pub use transform::Transform;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, Method};
use trellis_config::{Config, Limits, ListenerProtocol, RateLimit};
use trellis_targets::TargetRegistry;

use crate::access_log::AccessLog;
use crate::auth::{Policy, Verifier};
use crate::metrics::ProxyMetrics;
use crate::rate_limit::{Limit, LimitId, RateLimiter, RouteLimits};
use crate::tls::ServiceTls;
use crate::upstream::{Group, PoolRegistry, TlsClient};

pub struct Snapshot {
    ports: Box<[PortRoutes]>,
    /// By slot: a group keeps its slot for the daemon's life, so compiled routes stay valid across
    /// snapshots. `None` for groups no longer configured.
    groups: Box<[Option<Arc<Group>>]>,
    /// What this snapshot was built from; the next build reuses every part whose configuration is equal.
    source: Arc<Config>,
    /// (service, listener) → compiled routes, for reuse.
    compiled: HashMap<(String, String), Arc<ServiceRoutes>>,
    /// Every rate limiter, by the limit it enforces: handed on to the next snapshot while the limit's
    /// configuration is unchanged, so that a reload keeps everybody's buckets.
    limiters: HashMap<LimitId, Arc<RateLimiter>>,
    /// Where access log entries go; `None` when the log is off.
    pub(crate) access_log: Option<Arc<AccessLog>>,
    /// `[network] auth_policy`: every request must pass it.
    pub network_policy: Option<Arc<Policy>>,
    /// JWT issuers, for policies that ask who the caller is.
    pub verifier: Verifier,
}

/// Stable slot numbers of target groups by name (see [`Snapshot`]); never reused, so a compiled rule can
/// never point at another group.
#[derive(Default)]
pub struct GroupSlots {
    slots: std::sync::Mutex<HashMap<String, usize>>,
}

impl GroupSlots {
    fn slot(&self, name: &str) -> usize {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = slots.len();
        *slots.entry(name.to_string()).or_insert(next)
    }
}

/// What a snapshot build needs besides the configuration.
pub struct Parts<'a> {
    /// The TLS client of each `https` group, by name (see [`crate::upstream::TlsClient::for_group`]).
    pub tls: &'a HashMap<String, Arc<TlsClient>>,
    pub targets: &'a TargetRegistry,
    pub pools: &'a PoolRegistry,
    pub metrics: &'a ProxyMetrics,
    pub slots: &'a GroupSlots,
}

/// Everything served on one bound address: the services that share it, told apart by host.
pub struct PortRoutes {
    pub addr: SocketAddr,
    pub protocol: ListenerProtocol,
    /// Connection limits come from the first listener declared on the address: they apply before
    /// a request head (and so its host) is known.
    pub limits: Limits,
    hosts: HostTable,
    services: Box<[Arc<ServiceRoutes>]>,
    /// Each service's auth policy, parallel to `services` (built fresh with every snapshot, as policies
    /// change independently of listeners).
    policies: Box<[Option<Arc<Policy>>]>,
    /// Requests whose host no service on the port answers to.
    pub unmatched: Arc<RouteMetrics>,
}

/// One service's listener on a port.
pub struct ServiceRoutes {
    pub service: Arc<str>,
    pub listener: Arc<str>,
    /// On https listeners: the service's certificate and TLS settings.
    pub tls: Option<ServiceTls>,
    rules: Box<[Rule]>,
    default_action: Action,
    default_metrics: Arc<RouteMetrics>,
    /// The service's rate limit, for requests that take the default action.
    default_limits: RouteLimits,
}

pub struct Rule {
    conditions: Conditions,
    action: Action,
    pub metrics: Arc<RouteMetrics>,
    /// The service's rate limit, then the rule's.
    limits: RouteLimits,
    transform: Option<Transform>,
}

/// Where a request goes, what it is counted as, and the rate limits it must pass first.
pub struct Route<'a> {
    pub action: &'a Action,
    pub metrics: &'a Arc<RouteMetrics>,
    pub limits: &'a RouteLimits,
    /// What the matched rule changes in the request and the response.
    pub transform: Option<&'a Transform>,
    /// The rule matched the path's parameter-stripped view, not the path itself.
    pub stripped: bool,
}

impl Snapshot {
    /// Builds the snapshot of `config`. Whatever `previous` built from an equal configuration is reused
    /// as it is: a target group whose settings, targets and TLS client are unchanged keeps its balancer
    /// (and its pools, while they are still the registry's), and a listener whose rules are unchanged
    /// keeps its compiled rules. A reload that touches one service of five hundred therefore compiles one
    /// service, and a target registration rebuilds one group.
    pub fn build(config: Arc<Config>, previous: Option<&Snapshot>, parts: &Parts<'_>) -> Self {
        let mut groups: Vec<Option<Arc<Group>>> = Vec::new();
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        for tg in &config.target_groups {
            let slot = parts.slots.slot(&tg.name);
            let tls = parts.tls.get(&tg.name);
            let wake = config
                .scaling_groups
                .iter()
                .find(|sg| sg.target_group == tg.name)
                .and_then(|sg| sg.scale_to_zero)
                .map(|z| z.wake_timeout);
            let reused = previous
                .and_then(|p| {
                    let before = p.source.target_groups.iter().find(|g| g.name == tg.name)?;
                    (before == tg)
                        .then(|| p.groups.get(slot).cloned().flatten())
                        .flatten()
                })
                .filter(|g| {
                    let same_tls = match (&g.tls, tls) {
                        (None, None) => true,
                        (Some(a), Some(b)) => a.same_as(b),
                        _ => false,
                    };
                    same_tls && parts.pools.holds(&tg.name, &g.pools) && g.wake_timeout == wake
                });
            let group = reused.unwrap_or_else(|| {
                Arc::new(Group::build(
                    tg,
                    tls.cloned(),
                    parts.targets,
                    parts.pools,
                    parts.metrics,
                    wake,
                ))
            });
            if groups.len() <= slot {
                groups.resize(slot + 1, None);
            }
            groups[slot] = Some(group);
            by_name.insert(tg.name.as_str(), slot);
        }
        let lookup = |name: &str| by_name.get(name).copied();
        let compiled_policies: HashMap<&str, Arc<Policy>> = config
            .auth_policies
            .iter()
            .map(|p| (p.name.as_str(), Arc::new(Policy::compile(p))))
            .collect();
        let network_policy = config
            .network
            .auth_policy
            .as_ref()
            .and_then(|name| compiled_policies.get(name.as_str()).cloned());
        let verifier = Verifier::new(&config.jwt_issuers);
        let mut ports: Vec<PortRoutes> = Vec::new();
        let mut compiled = HashMap::new();
        let now = Instant::now();
        let mut limiters = HashMap::new();
        let mut limiter = |id: LimitId, config: &RateLimit| {
            let limiter = previous
                .and_then(|p| p.limiters.get(&id))
                .filter(|l| l.config() == config)
                .cloned()
                .unwrap_or_else(|| Arc::new(RateLimiter::new(config, now)));
            limiters.insert(id, limiter.clone());
            limiter
        };
        for service in &config.services {
            let service_limiter = service
                .rate_limit
                .as_ref()
                .map(|c| limiter(LimitId::Service(service.name.clone()), c));
            for l in &service.listeners {
                // Resolved whether or not the routes below are reused: the next snapshot hands them on.
                let rule_limiters: Vec<Option<Arc<RateLimiter>>> = l
                    .rules
                    .iter()
                    .map(|r| {
                        let id = LimitId::Rule {
                            service: service.name.clone(),
                            listener: l.name.clone(),
                            rule: r.name.clone(),
                        };
                        r.rate_limit.as_ref().map(|c| limiter(id, c))
                    })
                    .collect();
                let addr = l.socket_addr();
                let index = match ports.iter().position(|p| p.addr == addr) {
                    Some(i) => i,
                    None => {
                        ports.push(PortRoutes {
                            addr,
                            protocol: l.protocol,
                            limits: l.limits,
                            hosts: HostTable::default(),
                            services: Box::new([]),
                            policies: Box::new([]),
                            unmatched: Arc::new(RouteMetrics::new(
                                parts.metrics,
                                "-",
                                &l.name,
                                "-",
                            )),
                        });
                        ports.len() - 1
                    }
                };
                let key = (service.name.clone(), l.name.clone());
                let reused = previous.and_then(|p| {
                    let before_service =
                        p.source.services.iter().find(|s| s.name == service.name)?;
                    let before = before_service.listeners.iter().find(|b| b.name == l.name)?;
                    // Equal limits are the same limiters (handed on above), so the routes still hold
                    // the right ones.
                    (before == l && before_service.rate_limit == service.rate_limit)
                        .then(|| p.compiled.get(&key).cloned())
                        .flatten()
                });
                let limits = |rule: &str, own: Option<&Arc<RateLimiter>>| {
                    let limit = |limiter: &Arc<RateLimiter>, scope: &str| Limit {
                        limiter: limiter.clone(),
                        refused: parts.metrics.rate_limited.with_label_values(&[
                            &service.name,
                            &l.name,
                            rule,
                            scope,
                        ]),
                    };
                    RouteLimits {
                        service: service_limiter.as_ref().map(|s| limit(s, "service")),
                        rule: own.map(|r| limit(r, "rule")),
                    }
                };
                let routes = reused.unwrap_or_else(|| {
                    Arc::new(ServiceRoutes {
                        service: service.name.as_str().into(),
                        listener: l.name.as_str().into(),
                        tls: l.tls.as_ref().and_then(ServiceTls::build),
                        rules: l
                            .rules
                            .iter()
                            .zip(&rule_limiters)
                            .map(|(r, own)| Rule {
                                conditions: Conditions::compile(&r.matcher),
                                action: Action::build(&r.action, &service.name, &lookup),
                                metrics: Arc::new(RouteMetrics::new(
                                    parts.metrics,
                                    &service.name,
                                    &l.name,
                                    &r.name,
                                )),
                                limits: limits(&r.name, own.as_ref()),
                                transform: r
                                    .transform
                                    .as_ref()
                                    .map(|t| Transform::build(t, &r.matcher)),
                            })
                            .collect(),
                        default_action: Action::build(&l.default_action, &service.name, &lookup),
                        default_metrics: Arc::new(RouteMetrics::new(
                            parts.metrics,
                            &service.name,
                            &l.name,
                            "default",
                        )),
                        default_limits: limits("default", None),
                    })
                });
                compiled.insert(key, routes.clone());
                let port = &mut ports[index];
                let mut services = std::mem::take(&mut port.services).into_vec();
                port.hosts.add(&service.hosts, services.len());
                services.push(routes);
                port.services = services.into_boxed_slice();
                let mut policies = std::mem::take(&mut port.policies).into_vec();
                policies.push(
                    service
                        .auth_policy
                        .as_ref()
                        .and_then(|name| compiled_policies.get(name.as_str()).cloned()),
                );
                port.policies = policies.into_boxed_slice();
            }
        }
        Snapshot {
            ports: ports.into_boxed_slice(),
            groups: groups.into_boxed_slice(),
            source: config,
            compiled,
            limiters,
            access_log: None,
            network_policy,
            verifier,
        }
    }

    /// Every rate limiter, with the limit it enforces.
    pub(crate) fn limiters(&self) -> impl Iterator<Item = (&LimitId, &Arc<RateLimiter>)> {
        self.limiters.iter()
    }

    /// The addresses to listen on.
    pub fn ports(&self) -> &[PortRoutes] {
        &self.ports
    }

    pub fn port(&self, addr: SocketAddr) -> Option<&PortRoutes> {
        self.ports.iter().find(|p| p.addr == addr)
    }

    /// Every group with a TLS client, by name: what the next build may reuse.
    pub(crate) fn tls_clients(&self) -> HashMap<&str, &Arc<TlsClient>> {
        self.groups
            .iter()
            .flatten()
            .filter_map(|g| Some((&*g.name, g.tls.as_ref()?)))
            .collect()
    }

    /// The group in `slot` (a slot from one of this snapshot's compiled actions always has one).
    #[inline]
    pub fn group(&self, slot: usize) -> Option<&Arc<Group>> {
        self.groups.get(slot).and_then(Option::as_ref)
    }
}

impl PortRoutes {
    pub fn service(&self, host: Option<&[u8]>) -> Option<&ServiceRoutes> {
        self.hosts.lookup(host).map(|i| &*self.services[i])
    }

    /// The service for a Host, with its auth policy.
    pub fn service_and_policy(
        &self,
        host: Option<&[u8]>,
    ) -> Option<(&ServiceRoutes, Option<&Policy>)> {
        let i = self.hosts.lookup(host)?;
        Some((&*self.services[i], self.policies[i].as_deref()))
    }

    /// The TLS settings for a ClientHello's server name: the service the name belongs to (exact, then
    /// wildcard, then `hosts = ["*"]`). Without a name, the `*` service or else the first service on the
    /// port, so that clients connecting by address get a certificate; an unknown name without a `*`
    /// service gets none, and the handshake fails.
    pub fn tls_for(&self, server_name: Option<&str>) -> Option<&ServiceTls> {
        let index = match server_name {
            Some(name) => self.hosts.lookup(Some(name.as_bytes()))?,
            None => self.hosts.lookup(None).unwrap_or(0),
        };
        self.services.get(index)?.tls.as_ref()
    }
}

impl ServiceRoutes {
    /// The listener's default action: all a `tls_passthrough` listener has.
    pub fn default_action(&self) -> &Action {
        &self.default_action
    }

    /// The first rule (by priority) whose conditions all hold, else the listener's default action. A
    /// rule's path condition holds on the path or on its parameter-stripped view (`unparameterised`, see
    /// [`crate::head::path::without_parameters`]); the route says which, so that a transform rewrites
    /// the view trellis decided on.
    #[inline]
    pub fn route(
        &self,
        method: &Method,
        path: &str,
        unparameterised: Option<&str>,
        headers: &HeaderMap,
    ) -> Route<'_> {
        for rule in self.rules.iter() {
            let holds = |path| rule.conditions.matches(method, path, headers);
            let stripped = if holds(path) {
                false
            } else if unparameterised.is_some_and(holds) {
                true
            } else {
                continue;
            };
            return Route {
                action: &rule.action,
                metrics: &rule.metrics,
                limits: &rule.limits,
                transform: rule.transform.as_ref(),
                stripped,
            };
        }
        Route {
            action: &self.default_action,
            metrics: &self.default_metrics,
            limits: &self.default_limits,
            transform: None,
            stripped: false,
        }
    }
}
