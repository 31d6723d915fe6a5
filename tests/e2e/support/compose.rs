//! The parts of a docker-compose file the deploy tests look at, typed. Keys not named here are allowed
//! (compose has many), but the ones named must have the shape written here: the long `depends_on` form,
//! list-form `command` and `healthcheck.test`, short-form `ports` and `volumes`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Compose {
    pub services: BTreeMap<String, Service>,
    #[serde(default)]
    pub volumes: BTreeMap<String, serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
pub struct Service {
    pub image: Option<String>,
    pub build: Option<Build>,
    pub command: Option<Vec<String>>,
    pub network_mode: Option<String>,
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
}

/// A bind mount's host path, resolved against the compose file's directory as compose does.
pub fn host_path(compose_dir: &Path, source: &str) -> PathBuf {
    compose_dir.join(source)
}
