//! The parts of a docker-compose file the deploy tests look at, typed. Keys not named here are allowed
//! (compose has many), but the ones named must have the shape written here: the long `depends_on` form,
//! list-form `command`, `entrypoint` and `healthcheck.test`, short-form `ports` and `volumes`, map-form
//! service `networks`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Compose {
    pub services: BTreeMap<String, Service>,
    #[serde(default)]
    pub volumes: BTreeMap<String, serde::de::IgnoredAny>,
    #[serde(default)]
    pub networks: BTreeMap<String, Network>,
}

/// A top-level network; only its addressing is looked at.
#[derive(Debug, Deserialize)]
pub struct Network {
    pub ipam: Option<Ipam>,
}

#[derive(Debug, Deserialize)]
pub struct Ipam {
    #[serde(default)]
    pub config: Vec<IpamConfig>,
}

#[derive(Debug, Deserialize)]
pub struct IpamConfig {
    /// `A.B.C.D/N`: the fixed addresses of services must be in it.
    pub subnet: String,
    /// `A.B.C.D/N`: where containers without a fixed address get theirs.
    pub ip_range: Option<String>,
}

/// A service's attachment to a network (`networks: {NAME: {ipv4_address: ...}}`; `NAME: {}` or `NAME:`
/// for none).
#[derive(Debug, Default, Deserialize)]
pub struct ServiceNetwork {
    pub ipv4_address: Option<Ipv4Addr>,
}

#[derive(Debug, Deserialize)]
pub struct Service {
    pub image: Option<String>,
    pub build: Option<Build>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub pull_policy: Option<String>,
    /// A service with profiles is started only when one of them is asked for (`--profile`).
    #[serde(default)]
    pub profiles: Vec<String>,
    pub network_mode: Option<String>,
    #[serde(default)]
    pub networks: BTreeMap<String, Option<ServiceNetwork>>,
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub depends_on: BTreeMap<String, DependsOn>,
    pub healthcheck: Option<Healthcheck>,
    pub restart: Option<String>,
    pub stop_grace_period: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Build {
    pub context: String,
    pub dockerfile: String,
}

#[derive(Debug, Deserialize)]
pub struct DependsOn {
    pub condition: String,
}

#[derive(Debug, Deserialize)]
pub struct Healthcheck {
    pub test: Vec<String>,
}

/// One short-form volume, `SOURCE:TARGET[:MODE]`.
#[derive(Debug)]
pub struct Mount {
    /// A path (`./x`, `/x`) for a bind mount, else the name of a named volume.
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

impl Mount {
    pub fn is_bind(&self) -> bool {
        self.source.starts_with('.') || self.source.starts_with('/')
    }
}

impl Compose {
    pub fn read(path: &Path) -> Compose {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("{} does not parse as expected: {e}", path.display()))
    }

    pub fn service(&self, name: &str) -> &Service {
        self.services
            .get(name)
            .unwrap_or_else(|| panic!("no service {name:?} in the compose file"))
    }
}

impl Service {
    pub fn mounts(&self) -> Vec<Mount> {
        self.volumes
            .iter()
            .map(|v| {
                let parts: Vec<&str> = v.split(':').collect();
                let (source, target, mode) = match parts.as_slice() {
                    [s, t] => (*s, *t, ""),
                    [s, t, m] => (*s, *t, *m),
                    _ => panic!("volume {v:?} is not SOURCE:TARGET[:MODE]"),
                };
                Mount {
                    source: source.to_owned(),
                    target: target.to_owned(),
                    read_only: mode.split(',').any(|m| m == "ro"),
                }
            })
            .collect()
    }

    /// The container ports of `ports` (`[IP:]HOST:CONTAINER[/tcp]`).
    pub fn published_container_ports(&self) -> Vec<u16> {
        self.ports
            .iter()
            .map(|p| {
                let p = p.strip_suffix("/tcp").unwrap_or(p);
                let container = p.rsplit(':').next().unwrap_or(p);
                container
                    .parse()
                    .unwrap_or_else(|_| panic!("port mapping {p:?}: no container port"))
            })
            .collect()
    }

    /// `ports` as (host port, container port), each written `[IP:]HOST:CONTAINER[/tcp]`.
    pub fn published(&self) -> Vec<(u16, u16)> {
        self.ports
            .iter()
            .map(|p| {
                let p = p.strip_suffix("/tcp").unwrap_or(p);
                let mut parts = p.rsplit(':');
                let mut port = |what: &str| -> u16 {
                    parts
                        .next()
                        .and_then(|x| x.parse().ok())
                        .unwrap_or_else(|| panic!("port mapping {p:?}: no {what} port"))
                };
                let container = port("container");
                (port("host"), container)
            })
            .collect()
    }

    /// The fixed addresses of the service, by network.
    pub fn fixed_addresses(&self) -> BTreeMap<&str, Ipv4Addr> {
        self.networks
            .iter()
            .filter_map(|(name, n)| Some((name.as_str(), n.as_ref()?.ipv4_address?)))
            .collect()
    }
}

/// Whether `ip` is in `cidr` (`A.B.C.D/N`).
pub fn cidr_contains(cidr: &str, ip: Ipv4Addr) -> bool {
    let (net, len) = cidr
        .split_once('/')
        .unwrap_or_else(|| panic!("{cidr:?} is not A.B.C.D/N"));
    let net: Ipv4Addr = net
        .parse()
        .unwrap_or_else(|_| panic!("{cidr:?}: bad address"));
    let len: u32 = len
        .parse()
        .unwrap_or_else(|_| panic!("{cidr:?}: bad length"));
    assert!(len <= 32, "{cidr:?}: bad length");
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

/// A bind mount's host path, resolved against the compose file's directory as compose does.
pub fn host_path(compose_dir: &Path, source: &str) -> PathBuf {
    compose_dir.join(source)
}
