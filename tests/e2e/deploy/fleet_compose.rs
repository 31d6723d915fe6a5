//! deploy/compose/fleet: two trellis nodes in fleet mode, etcd, an `apply` one-shot and plain backends.
//! Checked statically (the compose file and the trellis files it mounts agree on every address, port and
//! prefix), then run on loopback with a real etcd: the backends and nodes from their compose commands,
//! the shared configuration applied as the `apply` service does.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use toml_edit::{value, DocumentMut};

use super::compose::{app_listen, echo_addr, start_app};
use super::{
    admin_flag, assert_check_passes, exit_code, flag_value, listener_ports, load, replace_flag,
    repo, retarget, run_healthcheck, Image, IMAGE_BIN, SHUTDOWN_GRACE,
};
use crate::fleet::fleet_cli;
use crate::support::compose::{cidr_contains, host_path, Compose, Service};
use crate::support::etcd::Etcd;
use crate::support::process::ChildGuard;
use crate::support::trellis::bin;
use crate::support::{accepts, eventually, free_port, instance_ports, tools};

const NODES: [&str; 2] = ["node-a", "node-b"];
/// The backends of the `apps` target group.
const APPS: [&str; 2] = ["app-1", "app-2"];
/// The backend README.md registers by hand through a node's admin API.
const EXTRA_APP: &str = "app-3";
/// The scaling group the demo spreads over both nodes.
const GROUP: &str = "web";
/// The nodes' addresses in the run test, one each as the containers' fixed addresses are (other tests
/// use 127.0.0.2 to .12).
const LOOPBACKS: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 0, 0, 13), Ipv4Addr::new(127, 0, 0, 14)];
/// Fleet convergence (election, placement, launch, first healthy check) on a busy 2-core machine.
const FLEET_WAIT: Duration = Duration::from_secs(40);

fn fleet_dir() -> PathBuf {
    repo().join("deploy/compose/fleet")
}

fn read_compose() -> Compose {
    Compose::read(&fleet_dir().join("docker-compose.yml"))
}

fn command(service: &Service) -> &[String] {
    service
        .command
        .as_deref()
        .expect("the service has a command")
}

/// The service's fixed address (`ipv4_address`); every service named here has exactly one network.
fn fixed_ip(service: &Service) -> Ipv4Addr {
    let fixed = service.fixed_addresses();
    assert_eq!(fixed.len(), 1, "{service:?} has no single fixed address");
    *fixed.values().next().expect("one address")
}

/// The host file a service sees at `container_path`, through its read-only bind mounts.
fn mounted(service: &Service, container_path: &str) -> PathBuf {
    let path = Path::new(container_path);
    service
        .mounts()
        .into_iter()
        .filter(|m| m.is_bind())
        .find_map(|m| {
            let rest = path.strip_prefix(&m.target).ok()?;
            assert!(m.read_only, "{} is mounted read-write", m.target);
            Some(host_path(&fleet_dir(), &m.source).join(rest))
        })
        .unwrap_or_else(|| panic!("no bind mount provides {container_path}"))
}

/// `http://IP:PORT` as an address (etcd's URLs are written with its fixed IP, no names).
fn url_addr(url: &str) -> SocketAddr {
    url.strip_prefix("http://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{url:?} is not http://IP:PORT"))
}

/// The URL etcd tells clients to use: nodes, `apply` and the healthcheck must all name it.
fn etcd_client_url(etcd: &Service) -> &str {
    flag_value(command(etcd), "--advertise-client-urls").expect("etcd --advertise-client-urls")
}

/// The node file a node service runs (the `--config` of its command), on the host.
fn node_file(node: &Service) -> PathBuf {
    mounted(
        node,
        flag_value(command(node), "--config").expect("the node's command has --config"),
    )
}

/// The file `apply` writes into etcd: `fleet apply FILE ...`.
fn apply_file(apply: &Service) -> PathBuf {
    let cmd = command(apply);
    assert_eq!(
        cmd.get(..2),
        Some(&["fleet", "apply"].map(String::from)[..])
    );
    mounted(apply, &cmd[2])
}

/// An app's address as the nodes reach it: its fixed IP and the port of its `--listen`.
fn app_target(app: &Service) -> SocketAddr {
    let listen = app_listen(app);
    let ip = fixed_ip(app);
    assert!(
        listen.ip().is_unspecified() || listen.ip() == IpAddr::V4(ip),
        "the app listens on {listen}, not on its address {ip}"
    );
    SocketAddr::new(IpAddr::V4(ip), listen.port())
}

/// A path the listener's rule sends to the scaling group's target group (its prefix, plus a bit).
fn group_path(shop: &trellis_config::Config) -> String {
    let group = shop
        .scaling_groups
        .iter()
        .find(|g| g.name == GROUP)
        .expect("the scaling group");
    let rules = shop
        .services
        .iter()
        .flat_map(|s| &s.listeners)
        .flat_map(|l| &l.rules);
    rules
        .filter(|r| match &r.action {
            trellis_config::Action::Forward(to) => {
                to.iter().any(|t| t.target_group == group.target_group)
            }
            trellis_config::Action::FixedResponse(_) | trellis_config::Action::Redirect(_) => false,
        })
        .find_map(|r| {
            let path = r.matcher.path.as_ref()?;
            Some(match path.kind {
                trellis_config::StringMatchKind::Prefix => format!("{}hello", path.value),
                _ => path.value.clone(),
            })
        })
        .unwrap_or_else(|| panic!("no path rule forwards to {}", group.target_group))
}

#[test]
fn fleet_compose_agrees_with_the_trellis_files_it_mounts() {
    let image = Image::load();
    let compose = read_compose();
    let (etcd, apply) = (compose.service("etcd"), compose.service("apply"));

    // One network with a subnet: every fixed address in it, outside the range compose hands to the
    // services without one (apply), and unique.
    assert_eq!(compose.networks.len(), 1, "one network");
    let (network, net) = compose.networks.iter().next().expect("a network");
    let ipam = net.ipam.as_ref().expect("the network has ipam");
    assert_eq!(ipam.config.len(), 1, "one ipam config");
    let pool = &ipam.config[0];
    let mut addresses = BTreeSet::new();
    for (name, service) in &compose.services {
        let networks: Vec<&String> = service.networks.keys().collect();
        assert_eq!(networks, [network], "{name} is on the fleet network");
        for ip in service.fixed_addresses().values() {
            assert!(cidr_contains(&pool.subnet, *ip), "{name}: {ip}");
            if let Some(range) = &pool.ip_range {
                assert!(!cidr_contains(range, *ip), "{name}: {ip} is in {range}");
            }
            assert!(addresses.insert(*ip), "{name}: {ip} is taken twice");
        }
    }

    // One image, built once (by node-a) from the Dockerfile the image tests check, runs every trellis
    // service; its ENTRYPOINT is the binary, so their commands are trellis's arguments.
    assert_eq!(image.entrypoint, [IMAGE_BIN]);
    let builders: Vec<&String> = compose
        .services
        .iter()
        .filter(|(_, s)| s.build.is_some())
        .map(|(n, _)| n)
        .collect();
    assert_eq!(builders, ["node-a"], "built once");
    let build = compose.service("node-a").build.as_ref().expect("build");
    assert_eq!(
        host_path(&fleet_dir(), &build.context).canonicalize().ok(),
        Some(repo())
    );
    assert_eq!(build.dockerfile, "deploy/docker/Dockerfile");
    let trellis_image = compose.service("node-a").image.clone();
    assert!(trellis_image.is_some(), "node-a names the image it builds");
    for (name, service) in compose.services.iter().filter(|(n, _)| *n != "etcd") {
        assert_eq!(service.image, trellis_image, "{name} runs trellis's image");
        assert_eq!(service.entrypoint, None, "{name} keeps the ENTRYPOINT");
        if service.build.is_none() {
            assert_eq!(service.pull_policy.as_deref(), Some("never"), "{name}");
        }
    }

    // etcd: clients are told its fixed address, where it listens; its data is a named volume; its
    // healthcheck asks that address (it listens nowhere else).
    let client_url = etcd_client_url(etcd);
    assert_eq!(url_addr(client_url).ip(), IpAddr::V4(fixed_ip(etcd)));
    let listen = flag_value(command(etcd), "--listen-client-urls").expect("--listen-client-urls");
    assert!(listen.split(',').any(|u| u == client_url), "{listen}");
    let data = flag_value(command(etcd), "--data-dir").expect("etcd --data-dir");
    let mounts = etcd.mounts();
    let volume = mounts.iter().find(|m| m.target == data).expect("etcd data");
    assert!(!volume.is_bind() && compose.volumes.contains_key(&volume.source));
    let check = &etcd.healthcheck.as_ref().expect("etcd healthcheck").test;
    assert_eq!(check.first().map(String::as_str), Some("CMD"));
    assert!(
        check.ends_with(&["endpoint", "health"].map(String::from)),
        "{check:?}"
    );
    assert_eq!(flag_value(check, "--endpoints"), Some(client_url));

    // apply: writes shop.toml (valid as `fleet apply` validates it, i.e. `trellis check`) to etcd's
    // client URL, once etcd and both nodes are up (so the first instances go to both nodes).
    assert_eq!(flag_value(command(apply), "--endpoints"), Some(client_url));
    let prefix = flag_value(command(apply), "--prefix").expect("apply --prefix");
    let shop_file = apply_file(apply);
    assert_check_passes(&shop_file);
    let shop = load(&shop_file);
    for name in ["etcd"].into_iter().chain(NODES) {
        let depends = apply.depends_on.get(name);
        assert_eq!(
            depends.map(|d| d.condition.as_str()),
            Some("service_healthy"),
            "apply on {name}"
        );
    }
    assert_eq!(apply.restart.as_deref(), Some("on-failure"), "a one-shot");

    // Nodes: each runs the image's `run` with its own node file and the image's state dir (a volume of
    // its own); the file points at etcd with apply's prefix and binds the node's own address; the
    // published ports are the fleet's listener, each on a host port of its own.
    let listeners = listener_ports(&shop);
    let (mut names, mut host_ports) = (BTreeSet::new(), BTreeSet::new());
    let mut healthcheck = vec!["CMD".to_owned()];
    healthcheck.extend(image.healthcheck.iter().cloned());
    for name in NODES {
        let node = compose.service(name);
        let cmd = command(node);
        assert_eq!(
            cmd.first(),
            image.cmd.first(),
            "{name}: `trellis run`, as CMD"
        );
        let state = image.cmd_flag("--state-dir");
        assert_eq!(
            flag_value(cmd, "--state-dir"),
            Some(state.as_str()),
            "{name}"
        );
        let mounts = node.mounts();
        let volume = mounts.iter().find(|m| m.target == state).expect("state");
        assert!(!volume.is_bind() && compose.volumes.contains_key(&volume.source));
        let file = node_file(node);
        assert_check_passes(&file);
        let config = load(&file);
        assert!(
            config.services.is_empty() && config.target_groups.is_empty(),
            "{name}: a node file serves nothing of its own"
        );
        let fleet = config.fleet.as_ref().expect("a node file has [fleet]");
        assert_eq!(fleet.endpoints, [client_url], "{name} reaches etcd");
        assert_eq!(fleet.prefix, prefix, "{name} serves what apply writes");
        assert_eq!(fleet.bind, Some(IpAddr::V4(fixed_ip(node))), "{name}: bind");
        assert!(
            names.insert(fleet.node.clone()),
            "node {} twice",
            fleet.node
        );

        let published = node.published();
        let containers: BTreeSet<u16> = published.iter().map(|(_, c)| *c).collect();
        assert_eq!(containers, listeners, "{name}: published vs the listeners");
        for (host, _) in published {
            assert!(host_ports.insert(host), "host port {host} published twice");
        }

        let check = &node.healthcheck.as_ref().expect("a node healthcheck").test;
        assert_eq!(check, &healthcheck, "{name} checks as the image does");
        assert_eq!(admin_flag(check), config.admin.listen, "{name}");
        let depends = node.depends_on.get("etcd").expect("a node depends on etcd");
        assert_eq!(depends.condition, "service_healthy");
        let grace = node
            .stop_grace_period
            .as_deref()
            .expect("stop_grace_period");
        let grace = humantime::parse_duration(grace).expect("a duration");
        assert!(
            grace > SHUTDOWN_GRACE,
            "{name}: {grace:?} cuts the drain short"
        );
    }

    // apps: the app services' addresses, and only those; the extra app is registered by hand.
    let group = |name: &str| {
        let found = shop.target_groups.iter().find(|g| g.name == name);
        found.unwrap_or_else(|| panic!("no target group {name}"))
    };
    let targets: BTreeSet<SocketAddr> = group("apps").targets.iter().map(|t| t.address).collect();
    let apps: BTreeSet<SocketAddr> = APPS.map(|a| app_target(compose.service(a))).into();
    assert_eq!(targets, apps, "apps' targets vs the app services");
    for name in APPS.into_iter().chain([EXTRA_APP]) {
        let app = compose.service(name);
        let check = &app.healthcheck.as_ref().expect("an app healthcheck").test;
        assert_eq!(check.get(..3), Some(&healthcheck[..3]), "{check:?}");
        assert_eq!(admin_flag(check).port(), app_listen(app).port(), "{name}");
        assert_eq!(
            app.profiles.is_empty(),
            name != EXTRA_APP,
            "{name}: started by `up`?"
        );
    }
    let extra = app_target(compose.service(EXTRA_APP));
    let all_targets = shop.target_groups.iter().flat_map(|g| &g.targets);
    assert!(all_targets.map(|t| t.address).all(|a| a != extra));

    // The scaling group: at least one instance per node, each listening on its node's address (reachable
    // from the other node), behind a path rule.
    let scaling = shop.scaling_groups.iter().find(|g| g.name == GROUP);
    let scaling = scaling.expect("the scaling group");
    assert!(scaling.min as usize >= NODES.len(), "min {}", scaling.min);
    let web_group = group(&scaling.target_group);
    assert!(
        web_group.targets.is_empty(),
        "the scaling group fills its target group"
    );
    let trellis_config::Launch::Process(launch) = &scaling.launch else {
        panic!("the process provider (the command provider is refused in fleet mode)")
    };
    assert_eq!(
        flag_value(&launch.command, "--listen"),
        Some("{host}:{port}")
    );
    assert!(group_path(&shop).starts_with('/'));

    // Everything is restarted; what trellis depends on has a healthcheck.
    for (name, service) in &compose.services {
        assert_ne!(service.restart.as_deref().unwrap_or("no"), "no", "{name}");
        if name != "apply" {
            assert!(service.healthcheck.is_some(), "{name} has no healthcheck");
        }
    }
}

/// A node run from its compose command, on a copy of its node file moved to loopback.
struct Node {
    name: String,
    bind: Ipv4Addr,
    admin: u16,
    _child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start(service: &Service, etcd: &Etcd, bind: Ipv4Addr) -> Node {
        let mut doc: DocumentMut = std::fs::read_to_string(node_file(service))
            .expect("read the node file")
            .parse()
            .expect("the node file parses as TOML");
        let endpoints: toml_edit::Array = etcd.endpoints.iter().map(String::as_str).collect();
        doc["fleet"]["endpoints"] = value(endpoints);
        doc["fleet"]["bind"] = value(bind.to_string());
        let admin = free_port();
        doc["admin"]["listen"] = value(format!("127.0.0.1:{admin}"));
        let name = doc["fleet"]["node"].as_str().expect("node").to_owned();

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("node.toml");
        std::fs::write(&file, doc.to_string()).expect("write the node file");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("state dir"); // made beforehand, as the image does
        let mut args = command(service).to_vec();
        replace_flag(&mut args, "--config", &file.display().to_string());
        replace_flag(&mut args, "--state-dir", &state.display().to_string());
        let mut cmd = Command::new(bin());
        cmd.args(&args);
        let mut child = ChildGuard::spawn(name.clone(), cmd);
        eventually(super::WAIT, &format!("{name}'s admin API"), || {
            if let Some(status) = child.try_exit() {
                panic!("{name} exited: {status}\n{}", child.report());
            }
            async move { accepts(admin).await.then_some(()) }
        })
        .await;
        Node {
            name,
            bind,
            admin,
            _child: child,
            _dir: dir,
        }
    }

    async fn status(&self) -> Option<Value> {
        let url = format!("http://127.0.0.1:{}/v1/status", self.admin);
        let body = reqwest::get(url).await.ok()?.bytes().await.ok()?;
        serde_json::from_slice(&body).ok()
    }
}

/// Who answers `GET path` on `ip:port` (`x-served-by`), for `n` requests.
async fn served_by(ip: Ipv4Addr, port: u16, path: &str, n: usize) -> BTreeSet<String> {
    let client = reqwest::Client::new();
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let reply = client
            .get(format!("http://{ip}:{port}{path}"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        let name = reply.ok().and_then(|r| {
            let v = r.headers().get("x-served-by")?.to_str().ok()?;
            Some(v.to_owned())
        });
        seen.extend(name);
    }
    seen
}

/// shop.toml on loopback: the apps at `apps` (compose target -> test backend), the listener on `port`,
/// the instances on `ports`, and short health-check intervals and evaluation period so that the fleet
/// settles in seconds (what is checked, and the policies, stay the file's).
fn shop_on_loopback(
    text: &str,
    apps: &[(SocketAddr, SocketAddr)],
    port: u16,
    (lo, hi): (u16, u16),
) -> String {
    let text = apps
        .iter()
        .fold(text.to_owned(), |t, (from, to)| retarget(&t, *from, *to));
    let mut doc: DocumentMut = text.parse().expect("shop.toml parses as TOML");
    doc["service"][0]["listener"][0]["port"] = value(i64::from(port));
    let group = doc["scaling_group"]
        .as_array_of_tables_mut()
        .and_then(|g| g.iter_mut().find(|g| g["name"].as_str() == Some(GROUP)))
        .expect("the scaling group");
    group["launch"]["ports"] = value(format!("{lo}-{hi}"));
    group["evaluation_period"] = value("500ms");
    doc.to_string()
}

/// Runs the `apply` service's command with the file and etcd moved to the test's.
fn run_apply(apply: &Service, file: &Path, etcd: &Etcd, prefix: Option<&str>) {
    let mut args = command(apply).to_vec();
    args[2] = file.display().to_string();
    replace_flag(&mut args, "--endpoints", &etcd.endpoints_arg());
    if let Some(prefix) = prefix {
        replace_flag(&mut args, "--prefix", prefix);
    }
    let out = Command::new(bin()).args(&args).output().expect("run apply");
    assert_eq!(exit_code("fleet apply", &out), Some(0), "{args:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_compose_topology_runs_on_loopback_with_a_real_etcd() {
    let Some(etcd) = Etcd::start(1).await else {
        return;
    };
    let compose = read_compose();
    let apply = compose.service("apply");
    let prefix = flag_value(command(apply), "--prefix").expect("--prefix");

    // etcd's healthcheck, with the machine's etcdctl, answers for the test's etcd.
    let check = &compose
        .service("etcd")
        .healthcheck
        .as_ref()
        .expect("check")
        .test;
    if let Some(etcdctl) = tools::find(&["etcdctl"]) {
        let mut args = check[2..].to_vec(); // without `CMD` and the image's etcdctl
        replace_flag(&mut args, "--endpoints", &etcd.endpoints_arg());
        let out = Command::new(etcdctl).args(&args).output().expect("etcdctl");
        assert_eq!(exit_code("etcd healthcheck", &out), Some(0), "{args:?}");
    }

    // The shipped shop.toml as written is accepted by `fleet apply` (beside the prefix the nodes serve:
    // its addresses are the containers').
    let shipped = apply_file(apply);
    run_apply(apply, &shipped, &etcd, Some("/trellis/shipped-as-written"));

    // The backends from their compose commands, on kernel-chosen loopback ports.
    let mut apps = Vec::new();
    for name in APPS.into_iter().chain([EXTRA_APP]) {
        let service = compose.service(name);
        let echo = start_app(service).await;
        let check = &service.healthcheck.as_ref().expect("check").test;
        let out = run_healthcheck(check, echo_addr(&echo)).await;
        assert_eq!(exit_code(&format!("{name} healthcheck"), &out), Some(0));
        apps.push((name, app_target(service), echo));
    }
    let extra = apps.pop().expect("the extra app");
    let moves: Vec<(SocketAddr, SocketAddr)> = apps
        .iter()
        .map(|(_, from, echo)| (*from, echo_addr(echo)))
        .collect();

    // Both nodes up before the configuration arrives, as the compose file's depends_on orders it: the
    // owner then places the group's first instances one on each node.
    let mut nodes = Vec::new();
    for (name, bind) in NODES.into_iter().zip(LOOPBACKS) {
        let service = compose.service(name);
        let node = Node::start(service, &etcd, bind).await;
        let check = &service.healthcheck.as_ref().expect("check").test;
        let out = run_healthcheck(check, SocketAddr::from(([127, 0, 0, 1], node.admin))).await;
        assert_eq!(exit_code(&format!("{name} healthcheck"), &out), Some(0));
        nodes.push(node);
    }
    eventually(super::WAIT, "both nodes in `trellis fleet status`", || {
        let out = fleet_cli(&etcd, prefix, &["status", "--json"]);
        let fleet: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        let n = fleet.and_then(|f| Some(f["nodes"].as_array()?.len()));
        async move { (n == Some(NODES.len())).then_some(()) }
    })
    .await;

    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let shop = dir.path().join("shop.toml");
    let text = std::fs::read_to_string(&shipped).expect("read shop.toml");
    std::fs::write(
        &shop,
        shop_on_loopback(&text, &moves, port, instance_ports()),
    )
    .expect("write shop.toml");
    run_apply(apply, &shop, &etcd, None);

    // Both nodes serve the apps, each on its own address.
    let app_names: BTreeSet<String> = APPS.map(String::from).into();
    for node in &nodes {
        eventually(
            FLEET_WAIT,
            &format!("{} to serve both apps", node.name),
            || async { (served_by(node.bind, port, "/", 10).await == app_names).then_some(()) },
        )
        .await;
    }

    // The scaling group: min instances in service, one on each node at that node's address, owned by
    // one of them.
    let group = eventually(
        FLEET_WAIT,
        "the scaling group spread over both nodes",
        || async {
            let status = nodes[0].status().await?;
            let group = status["scaling_groups"]
                .as_array()?
                .iter()
                .find(|g| g["name"] == GROUP)?
                .clone();
            let instances = group["instances"].as_array()?;
            let settled = instances.len() == NODES.len()
                && instances
                    .iter()
                    .all(|i| i["lifecycle"] == "in_service" && i["health"] == "healthy");
            settled.then_some(group)
        },
    )
    .await;
    let instances = group["instances"].as_array().expect("instances");
    let on: BTreeSet<&str> = instances
        .iter()
        .filter_map(|i| i["node"].as_str())
        .collect();
    assert_eq!(
        on,
        BTreeSet::from(NODES),
        "one instance per node: {group:#}"
    );
    for i in instances {
        let node = nodes
            .iter()
            .find(|n| i["node"] == n.name.as_str())
            .expect("node");
        let address: SocketAddr = i["address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("address");
        assert_eq!(address.ip(), IpAddr::V4(node.bind), "{i}");
    }
    let owner = group["owner"].as_str().expect("an owner");
    assert!(NODES.contains(&owner), "{group:#}");

    // Every node routes the rule's path to both instances, wherever they run.
    let ids: BTreeSet<String> = instances
        .iter()
        .filter_map(|i| i["id"].as_str().map(String::from))
        .collect();
    let path = group_path(&load(&shop));
    for node in &nodes {
        eventually(
            FLEET_WAIT,
            &format!("{} to serve both instances", node.name),
            || async {
                ids.is_subset(&served_by(node.bind, port, &path, 10).await)
                    .then_some(())
            },
        )
        .await;
    }

    // README.md's registration: the extra app registered through node-a's admin API is served by node-b.
    let (name, _, echo) = &extra;
    let reply = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/v1/target-groups/apps/targets",
            nodes[0].admin
        ))
        .header("content-type", "application/json")
        .body(serde_json::json!({"address": echo_addr(echo)}).to_string())
        .send()
        .await
        .expect("register");
    assert_eq!(reply.status(), 201, "{:?}", reply.text().await);
    eventually(FLEET_WAIT, "node-b to serve the registered app", || async {
        served_by(nodes[1].bind, port, "/", 10)
            .await
            .contains(*name)
            .then_some(())
    })
    .await;
}
