//! The deploy files — `deploy/docker/Dockerfile`, `.dockerignore`, `deploy/compose/` — checked against the
//! real binary. There is no Docker engine here, so the image is never built; instead every value the image
//! or the compose file hands to trellis (the shipped configurations, the CMD and HEALTHCHECK argument
//! vectors, the ports) is read from the files themselves and given to the real `trellis` on loopback, and
//! the build context `.dockerignore` leaves is rebuilt and loaded by cargo.

mod compose;
mod context;
mod fleet_compose;
mod healthcheck;
mod image;
mod loadtest;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use toml_edit::{value, DocumentMut, Item, Value};

use crate::support::dockerfile::{exec_form, Dockerfile, Stage};
use crate::support::process::ChildGuard;
use crate::support::trellis::{bin, check};
use crate::support::{accepts, eventually, free_port};

/// Where the image installs the binary; ENTRYPOINT and both healthchecks name it.
const IMAGE_BIN: &str = "/usr/local/bin/trellis";
/// trellis's default `--shutdown-grace`: `docker stop` must wait longer than this.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(10);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// The Dockerfile's runtime stage, read once per test.
struct Image {
    file: Dockerfile,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    /// HEALTHCHECK's command, without the `CMD` word.
    healthcheck: Vec<String>,
}

impl Image {
    fn load() -> Image {
        let file = Dockerfile::read(&repo().join("deploy/docker/Dockerfile"));
        let runtime = file.runtime();
        let exec = |keyword: &str| {
            let ins = runtime
                .last(keyword)
                .unwrap_or_else(|| panic!("the runtime stage has no {keyword}"));
            exec_form(ins, &ins.args)
        };
        let (entrypoint, cmd) = (exec("ENTRYPOINT"), exec("CMD"));
        let check = runtime.last("HEALTHCHECK").expect("a HEALTHCHECK");
        let (_options, command) = check
            .args
            .split_once("CMD ")
            .unwrap_or_else(|| panic!("HEALTHCHECK {} has no CMD", check.args));
        let healthcheck = exec_form(check, command);
        Image {
            file,
            entrypoint,
            cmd,
            healthcheck,
        }
    }

    fn runtime(&self) -> &Stage {
        self.file.runtime()
    }

    /// The value of a flag of the CMD (`--config`, `--state-dir`).
    fn cmd_flag(&self, long: &str) -> String {
        flag_value(&self.cmd, long)
            .unwrap_or_else(|| panic!("CMD {:?} has no {long}", self.cmd))
            .to_owned()
    }

    /// The file of the build context that the runtime stage copies to `container_path`.
    fn context_file(&self, container_path: &str) -> PathBuf {
        let stage = self.runtime();
        let workdir = stage.workdir();
        let source = stage
            .copies()
            .into_iter()
            .filter(|c| c.from.is_none())
            .find_map(|c| {
                let hit = c
                    .sources
                    .iter()
                    .find(|s| c.target_of(s, &workdir) == Path::new(container_path));
                hit.cloned()
            })
            .unwrap_or_else(|| {
                panic!("nothing from the build context is copied to {container_path}")
            });
        repo().join(source)
    }

    /// `trellis ARGS...` as the container runs it, with container paths replaced by host ones.
    fn host_cmd(&self, config: &Path, state_dir: &Path) -> Vec<String> {
        let mut args = self.cmd.clone();
        replace_flag(&mut args, "--config", &config.display().to_string());
        replace_flag(&mut args, "--state-dir", &state_dir.display().to_string());
        args
    }
}

/// `--flag VALUE` or `--flag=VALUE` (and `-c` for `--config`).
fn flag_value<'a>(args: &'a [String], long: &str) -> Option<&'a str> {
    let short = (long == "--config").then_some("-c");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == long || Some(a.as_str()) == short {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(long)?.strip_prefix('=')
        }
    })
}

fn replace_flag(args: &mut [String], long: &str, new: &str) {
    let short = (long == "--config").then_some("-c");
    let i = args
        .iter()
        .position(|a| a == long || Some(a.as_str()) == short)
        .unwrap_or_else(|| panic!("{args:?} has no {long} VALUE"));
    args[i + 1] = new.to_owned();
}

fn assert_check_passes(path: &Path) {
    let out = check(path);
    assert!(
        out.status.success(),
        "trellis check {} failed:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn load(path: &Path) -> trellis_config::Config {
    trellis_config::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn listener_ports(config: &trellis_config::Config) -> BTreeSet<u16> {
    let listeners = config.services.iter().flat_map(|s| &s.listeners);
    listeners.map(|l| l.port).collect()
}

/// Every listener binds all addresses: a published port arrives at the container's own address, which a
/// loopback-bound listener never sees.
fn assert_listeners_reachable_from_outside(config: &trellis_config::Config) {
    for service in &config.services {
        for l in &service.listeners {
            assert!(
                l.bind.is_unspecified(),
                "{}/{} binds {}: a published port would not reach it",
                service.name,
                l.name,
                l.bind
            );
        }
    }
}

/// The `--admin` of a healthcheck command as an address.
fn admin_flag(command: &[String]) -> SocketAddr {
    let admin =
        flag_value(command, "--admin").unwrap_or_else(|| panic!("{command:?} names no --admin"));
    admin
        .trim_start_matches("http://")
        .parse()
        .unwrap_or_else(|_| panic!("--admin {admin} is not IP:PORT"))
}

/// `trellis` started with the image's CMD (paths mapped to a temporary directory), on a copy of a
/// configuration whose ports were moved to free loopback ones.
struct Running {
    child: ChildGuard,
    /// The file's listener port -> the port the copy listens on.
    ports: BTreeMap<u16, u16>,
    admin: u16,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start(image: &Image, config_text: &str) -> Running {
        let (text, ports, admin) = on_loopback(config_text);
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("trellis.toml");
        std::fs::write(&config, text).expect("write config");
        // Made beforehand, as the image does; trellis would make it, but must not need to.
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("state dir");
        let mut cmd = Command::new(bin());
        cmd.args(image.host_cmd(&config, &state));
        let mut child = ChildGuard::spawn("trellis (image CMD)", cmd);
        for port in ports.values().copied().chain([admin]) {
            eventually(WAIT, &format!("trellis accepting on {port}"), || {
                if let Some(status) = child.try_exit() {
                    panic!("trellis exited: {status}\n{}", child.report());
                }
                async move { accepts(port).await.then_some(()) }
            })
            .await;
        }
        Running {
            child,
            ports,
            admin,
            config,
            _dir: dir,
        }
    }

    fn port(&self, file_port: u16) -> u16 {
        self.ports[&file_port]
    }
}

/// The configuration with every listener on 127.0.0.1 and a free port (one per distinct port of the file)
/// and the admin API on 127.0.0.1 and a free port. Returns the text, the port map and the admin port.
fn on_loopback(text: &str) -> (String, BTreeMap<u16, u16>, u16) {
    let mut doc: DocumentMut = text.parse().expect("the configuration parses as TOML");
    let mut ports = BTreeMap::new();
    if let Some(services) = doc
        .get_mut("service")
        .and_then(Item::as_array_of_tables_mut)
    {
        for service in services.iter_mut() {
            let listeners = service
                .get_mut("listener")
                .and_then(Item::as_array_of_tables_mut);
            for listener in listeners.into_iter().flat_map(|l| l.iter_mut()) {
                let port = listener["port"].as_integer().expect("listener port");
                let port = u16::try_from(port).expect("port fits u16");
                let new = *ports.entry(port).or_insert_with(free_port);
                listener["port"] = value(i64::from(new));
                listener["bind"] = value("127.0.0.1");
            }
        }
    }
    let admin = free_port();
    doc["admin"]["listen"] = value(format!("127.0.0.1:{admin}"));
    (doc.to_string(), ports, admin)
}

/// Moves every target `from` to `to` and shortens health-check intervals (so a target turns healthy in
/// well under a second; path, matcher and thresholds stay the file's).
fn retarget(text: &str, from: SocketAddr, to: SocketAddr) -> String {
    let mut doc: DocumentMut = text.parse().expect("the configuration parses as TOML");
    let groups = doc
        .get_mut("target_group")
        .and_then(Item::as_array_of_tables_mut);
    let mut moved = 0;
    for group in groups.into_iter().flat_map(|g| g.iter_mut()) {
        if let Some(targets) = group.get_mut("targets").and_then(Item::as_array_mut) {
            for target in targets.iter_mut() {
                let address = match target {
                    Value::String(s) => s,
                    Value::InlineTable(t) => match t.get_mut("address") {
                        Some(Value::String(s)) => s,
                        _ => panic!("target without an address: {t}"),
                    },
                    other => panic!("target {other} is neither a string nor a table"),
                };
                if address.value().parse::<SocketAddr>().ok() == Some(from) {
                    *address = toml_edit::Formatted::new(to.to_string());
                    moved += 1;
                }
            }
        }
        if let Some(check) = group.get_mut("health_check").and_then(Item::as_table_mut) {
            check["interval"] = value("200ms");
            check["timeout"] = value("100ms");
        }
    }
    assert!(moved > 0, "no target {from} in the configuration");
    doc.to_string()
}

/// Runs a healthcheck command as docker would (compose's `CMD` word dropped, the image's binary mapped to
/// the real one, `--admin` moved to `admin`).
async fn run_healthcheck(command: &[String], admin: SocketAddr) -> Output {
    let command = match command.split_first() {
        Some((first, rest)) if first == "CMD" => rest, // compose's form; the Dockerfile's has no CMD word
        _ => command,
    };
    let (binary, rest) = command.split_first().expect("a healthcheck command");
    assert_eq!(binary, IMAGE_BIN, "the healthcheck runs the image's binary");
    let mut args = rest.to_vec();
    replace_flag(&mut args, "--admin", &admin.to_string());
    tokio::process::Command::new(bin())
        .args(&args)
        .output()
        .await
        .expect("run the healthcheck")
}

fn exit_code(what: &str, out: &Output) -> Option<i32> {
    eprintln!(
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.code()
}
