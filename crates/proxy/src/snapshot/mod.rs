//! The routing snapshot: everything a request needs to find its way, immutable, swapped whole.

mod action;
mod hosts;
mod rules;

pub use action::{Action, Fixed};
pub use hosts::HostTable;
pub use rules::Conditions;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, Method};
use trellis_config::{Config, Limits, ListenerProtocol};
use trellis_targets::TargetRegistry;

use crate::metrics::ProxyMetrics;
use crate::upstream::{Group, PoolRegistry};

pub struct Snapshot {
    ports: Box<[PortRoutes]>,
    groups: HashMap<String, Arc<Group>>,
}

/// Everything served on one bound address: the services that share it, told apart by host.
pub struct PortRoutes {
    pub addr: SocketAddr,
    pub protocol: ListenerProtocol,
    /// Connection limits come from the first listener declared on the address: they apply before
    /// a request head (and so its host) is known.
    pub limits: Limits,
    hosts: HostTable,
    services: Box<[ServiceRoutes]>,
}

/// One service's listener on a port.
pub struct ServiceRoutes {
    pub service: Arc<str>,
    pub listener: Arc<str>,
    rules: Box<[Rule]>,
    default_action: Action,
}

pub struct Rule {
    pub name: Arc<str>,
    conditions: Conditions,
    action: Action,
}

impl Snapshot {
    pub fn build(
        config: &Config,
        targets: &TargetRegistry,
        pools: &PoolRegistry,
        metrics: &ProxyMetrics,
    ) -> Self {
        let groups: HashMap<String, Arc<Group>> = config
            .target_groups
            .iter()
            .map(|tg| {
                (
                    tg.name.clone(),
                    Arc::new(Group::build(tg, targets, pools, metrics)),
                )
            })
            .collect();
        let lookup = |name: &str| groups.get(name).cloned();
        let mut ports: Vec<PortRoutes> = Vec::new();
        for service in &config.services {
            for l in &service.listeners {
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
                        });
                        ports.len() - 1
                    }
                };
                let port = &mut ports[index];
                let routes = ServiceRoutes {
                    service: service.name.as_str().into(),
                    listener: l.name.as_str().into(),
                    rules: l
                        .rules
                        .iter()
                        .map(|r| Rule {
                            name: r.name.as_str().into(),
                            conditions: Conditions::compile(&r.matcher),
                            action: Action::build(&r.action, &service.name, &lookup),
                        })
                        .collect(),
                    default_action: Action::build(&l.default_action, &service.name, &lookup),
                };
                let mut services = std::mem::take(&mut port.services).into_vec();
                port.hosts.add(&service.hosts, services.len());
                services.push(routes);
                port.services = services.into_boxed_slice();
            }
        }
        Snapshot {
            ports: ports.into_boxed_slice(),
            groups,
        }
    }

    /// The addresses to listen on.
    pub fn ports(&self) -> &[PortRoutes] {
        &self.ports
    }

    pub fn port(&self, addr: SocketAddr) -> Option<&PortRoutes> {
        self.ports.iter().find(|p| p.addr == addr)
    }

    pub fn group(&self, name: &str) -> Option<&Arc<Group>> {
        self.groups.get(name)
    }
}

impl PortRoutes {
    pub fn service(&self, host: Option<&[u8]>) -> Option<&ServiceRoutes> {
        self.hosts.lookup(host).map(|i| &self.services[i])
    }
}

impl ServiceRoutes {
    /// The first rule (by priority) whose conditions all hold, else the listener's default action.
    #[inline]
    pub fn route(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> (Option<&Rule>, &Action) {
        for rule in self.rules.iter() {
            if rule.conditions.matches(method, path, headers) {
                return (Some(rule), &rule.action);
            }
        }
        (None, &self.default_action)
    }
}
