//! Scaling groups in fleet mode: one owner per group, elected in a real etcd; instances placed on the
//! nodes, run by them, served by all; the owner's state survives it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fleet::{apply, fleet_cli, fleet_status, node_file, served_by};
use crate::scaling::{drop_policies, set_command};
use crate::support::etcd::Etcd;
use crate::support::{eventually, free_port, instance_ports, Trellis};

const WAIT: Duration = Duration::from_secs(40);

/// The fleet's configuration: a service on `port` in front of a scaling group of `trellis echo`
/// instances, each listening on its node's address.
fn shared(port: u16, (lo, hi): (u16, u16), min: u32, max: u32) -> String {
    format!(
        "[[service]]\nname = \"shop\"\nhosts = [\"*\"]\n\
         [[service.listener]]\nname = \"web\"\nprotocol = \"http\"\nport = {port}\n\
         default_action = {{ forward = [{{ target_group = \"pool\" }}] }}\n\n\
         [[target_group]]\nname = \"pool\"\ntargets = []\nderegistration_delay = \"1s\"\n\
         [target_group.health_check]\npath = \"/healthz\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\n\
         healthy_threshold = 1\nunhealthy_threshold = 2\n\n\
         [[scaling_group]]\nname = \"web\"\ntarget_group = \"pool\"\nmin = {min}\nmax = {max}\ndesired = {min}\n\
         evaluation_period = \"500ms\"\nscale_in_window = \"1500ms\"\ncooldown = \"1s\"\ninstance_warmup = \"500ms\"\nhealth_check_grace_period = \"10s\"\n\
         [scaling_group.launch]\nprovider = \"process\"\n\
         command = [\"{{self}}\", \"echo\", \"--listen\", \"{{host}}:{{port}}\", \"--name\", \"{{id}}\", \"--workers\", \"1\"]\n\
         ports = \"{lo}-{hi}\"\nstop_timeout = \"2s\"\n\
         [[scaling_group.policy]]\nname = \"rps\"\ntype = \"target_tracking\"\nmetric = \"request_count_per_target\"\ntarget = 40.0\n"
    )
}

/// `text` with its scaling group on the command provider, whose hooks run stand-in machines (detached
/// `trellis echo` processes, see `scaling::hooks`), desired 2, no policy.
fn with_hooks(mut text: String, dir: &std::path::Path) -> String {
    let (launch, terminate, list) = crate::scaling::hooks(dir, instance_ports().0);
    text = text.replace("desired = 1", "desired = 2");
    text.truncate(text.find("[scaling_group.launch]").unwrap());
    text.push_str(&format!(
        "[scaling_group.launch]\nprovider = \"command\"\nlaunch = [\"sh\", \"{launch}\", \"{{id}}\"]\n\
         terminate = [\"sh\", \"{terminate}\"]\nlist = [\"sh\", \"{list}\"]\nhook_timeout = \"10s\"\n"
    ));
    text
}

/// The group as `node` shows it.
async fn group(node: &Trellis) -> Value {
    node.status().await["scaling_groups"][0].clone()
}

/// The `trellis echo` instances of this test running on the machine now, by the address they listen
/// on: what is really there, whatever any node says.
fn running((lo, hi): (u16, u16)) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat.contains(") Z ") || !args.iter().any(|a| a == "echo") {
            continue;
        }
        let listen = args
            .iter()
            .position(|a| a == "--listen")
            .and_then(|i| args.get(i + 1));
        if let Some(listen) = listen {
            let port = listen
                .rsplit(':')
                .next()
                .and_then(|p| p.parse::<u16>().ok());
            if port.is_some_and(|p| (lo..=hi).contains(&p)) {
                found.push(listen.clone());
            }
        }
    }
    found.sort();
    found
}

/// Waits until `node` shows `n` instances in service (none pending or leaving) and exactly those run.
async fn settled(node: &Trellis, ports: (u16, u16), n: usize, what: &str) -> Value {
    eventually(WAIT, what, || async {
        let g = group(node).await;
        let instances = g["instances"].as_array()?;
        let in_service: BTreeSet<String> = instances
            .iter()
            .filter(|i| i["lifecycle"] == "in_service" && i["health"] == "healthy")
            .filter_map(|i| i["address"].as_str().map(str::to_string))
            .collect();
        let running: BTreeSet<String> = running(ports).into_iter().collect();
        (instances.len() == n && in_service.len() == n && running == in_service).then_some(g)
    })
    .await
}

fn nodes_of(g: &Value) -> BTreeSet<String> {
    g["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["node"].as_str().map(str::to_string))
        .collect()
}

/// Two fleet nodes, `node-a` and `node-b`, serving on `ips` under `prefix`.
async fn two_nodes(etcd: &Etcd, prefix: &str, ips: [&str; 2]) -> [Trellis; 2] {
    [
        Trellis::start(&node_file(etcd, prefix, "node-a", ips[0]), &[]).await,
        Trellis::start(&node_file(etcd, prefix, "node-b", ips[1]), &[]).await,
    ]
}

/// `trellis fleet apply` of `text` as shop.toml, which must be accepted.
fn applied(etcd: &Etcd, prefix: &str, dir: &std::path::Path, text: &str) {
    let out = apply(etcd, prefix, dir, "shop.toml", text);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_runs_exactly_desired_instances_scales_on_load_at_a_non_owner_and_survives_its_owner(
) {
    let Some(etcd) = Etcd::start(1).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = "/trellis/scaling";
    let port = free_port();
    let ports = instance_ports();
    let ips = ["127.0.0.5", "127.0.0.6"];
    let file = |name: &str, ip: &str| node_file(&etcd, prefix, name, ip);
    let mut nodes = [
        Some(Trellis::start(&file("node-a", ips[0]), &[]).await),
        Some(Trellis::start(&file("node-b", ips[1]), &[]).await),
    ];
    let out = apply(
        &etcd,
        prefix,
        dir.path(),
        "shop.toml",
        &shared(port, ports, 2, 5),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Two instances, one per node (spread like zones), each listening on its node's address.
    let a = nodes[0].as_ref().unwrap();
    let g = settled(a, ports, 2, "two instances in service").await;
    assert_eq!(nodes_of(&g).len(), 2, "spread over both nodes: {g}");
    for i in g["instances"].as_array().unwrap() {
        let ip = if i["node"] == "node-a" {
            ips[0]
        } else {
            ips[1]
        };
        assert!(i["address"].as_str().unwrap().starts_with(ip), "{i}");
    }
    let owner = g["owner"].as_str().expect("an owner").to_string();
    let (owner_i, other_i) = if owner == "node-a" { (0, 1) } else { (1, 0) };
    let fleet = fleet_status(a).await;
    assert_eq!(fleet["owners"]["web"], owner.as_str(), "{fleet}");
    let out = fleet_cli(&etcd, prefix, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["web", owner.as_str()]),
        "{text}"
    );
    let out = fleet_cli(&etcd, prefix, &["status", "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).expect("fleet status --json");
    assert_eq!(json["owners"]["web"], owner.as_str(), "{json}");
    // Every node routes to every instance of the fleet.
    for ip in ips {
        let mut seen = BTreeSet::new();
        for _ in 0..20 {
            seen.extend(served_by(ip, port).await);
        }
        assert_eq!(seen.len(), 2, "{ip} serves both instances: {seen:?}");
    }

    // Desired set through the node that does not own the group: the owner applies it.
    let other = nodes[other_i].as_ref().unwrap();
    let (status, reply) = other
        .admin(
            reqwest::Method::PUT,
            "/v1/scaling-groups/web/desired",
            Some(json!({"desired": 3})),
        )
        .await;
    assert_eq!(
        (status, reply["desired"].as_u64()),
        (200, Some(3)),
        "{reply}"
    );
    settled(other, ports, 3, "three instances in service").await;

    // Load that arrives only at the node that does not own the group scales it out.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (stop, ip) = (stop.clone(), ips[other_i]);
        load.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let _ = client.get(format!("http://{ip}:{port}/")).send().await;
            }
        }));
    }
    let owner_node = nodes[owner_i].as_ref().unwrap();
    eventually(
        WAIT,
        "the owner to scale out on the other node's load",
        || async { (group(owner_node).await["desired"].as_u64()? > 3).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        let _ = task.await;
    }
    // Back in, to the minimum, once the load is gone: exactly as many running as in service.
    let g = settled(owner_node, ports, 2, "scale-in back to two").await;
    assert_eq!(g["desired"], 2);

    // kill -9 of the owner: the survivor takes the group over within the lease, replaces the dead
    // node's instances on itself, and serves them.
    let killed_at = Instant::now();
    nodes[owner_i].as_ref().unwrap().signal(libc::SIGKILL);
    nodes[owner_i] = None;
    let survivor = nodes[other_i].as_ref().unwrap();
    let survivor_name = if other_i == 0 { "node-a" } else { "node-b" };
    let g = eventually(WAIT, "the survivor to own and run the group", || async {
        let g = group(survivor).await;
        let ok = g["owner"] == survivor_name
            && nodes_of(&g) == BTreeSet::from([survivor_name.to_string()])
            && g["in_service"] == 2
            && running(ports).len() == 2;
        ok.then_some(g)
    })
    .await;
    let took = killed_at.elapsed();
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        seen.extend(served_by(ips[other_i], port).await);
    }
    assert_eq!(seen.len(), 2, "both replacements served: {seen:?} {g}");
    eprintln!(
        "owner kill -9 to the survivor owning and serving the group: {took:?} (lease_ttl 2s)"
    );
    let activities = g["activities"].to_string();
    assert!(activities.contains("is gone; replacing it"), "{activities}");

    // The dead node comes back: it joins, runs what it is given, and desired is what it was.
    let restarted_name = if owner_i == 0 { "node-a" } else { "node-b" };
    nodes[owner_i] = Some(Trellis::start(&file(restarted_name, ips[owner_i]), &[]).await);
    let back = nodes[owner_i].as_ref().unwrap();
    let g = settled(back, ports, 2, "the restarted node to see the group").await;
    assert_eq!(g["desired"], 2);
    assert_eq!(g["owner"], survivor_name, "ownership does not flap back");
    let (status, _) = back
        .admin(
            reqwest::Method::PUT,
            "/v1/scaling-groups/web/desired",
            Some(json!({"desired": 4})),
        )
        .await;
    assert_eq!(status, 200);
    let g = settled(back, ports, 4, "four instances over both nodes").await;
    assert_eq!(
        nodes_of(&g).len(),
        2,
        "new instances go to the emptier node: {g}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_etcd_outage_longer_than_the_lease_replaces_nothing_and_scaling_resumes_after_it() {
    let Some(mut etcd) = Etcd::start(1).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = "/trellis/scaling-outage";
    let port = free_port();
    let ports = instance_ports();
    let ips = ["127.0.0.7", "127.0.0.8"];
    let a = Trellis::start(&node_file(&etcd, prefix, "node-a", ips[0]), &[]).await;
    let b = Trellis::start(&node_file(&etcd, prefix, "node-b", ips[1]), &[]).await;
    let mut text = shared(port, ports, 2, 4);
    // No policy: only the operator moves desired.
    drop_policies(&mut text);
    applied(&etcd, prefix, dir.path(), &text);
    settled(&a, ports, 2, "two instances in service").await;
    let before = running(ports);

    // Longer than the lease: every node's lease expires, the owner's too.
    etcd.stop();
    let started = Instant::now();
    let (status, reply) = b
        .admin(
            reqwest::Method::PUT,
            "/v1/scaling-groups/web/desired",
            Some(json!({"desired": 3})),
        )
        .await;
    assert_eq!(status, 503, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .unwrap_or("")
            .starts_with("fleet store unavailable"),
        "{reply}"
    );
    eprintln!("PUT desired without etcd: 503 in {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Both nodes still serve both instances, and nothing was started or stopped.
    for ip in ips {
        let mut seen = BTreeSet::new();
        for _ in 0..20 {
            seen.extend(served_by(ip, port).await);
        }
        assert_eq!(seen.len(), 2, "{ip} during the outage: {seen:?}");
    }
    assert_eq!(running(ports), before);

    etcd.restart().await;
    // Leases were all lost: a new election, the same instances (none taken for dead), then scaling
    // goes on.
    eventually(WAIT, "an owner again", || async {
        group(&a).await["owner"].as_str().map(str::to_string)
    })
    .await;
    let (status, reply) = b
        .admin(
            reqwest::Method::PUT,
            "/v1/scaling-groups/web/desired",
            Some(json!({"desired": 3})),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let g = settled(&a, ports, 3, "three instances after the outage").await;
    let after = running(ports);
    assert!(
        before.iter().all(|addr| after.contains(addr)),
        "the instances from before the outage were kept: {before:?} → {after:?}"
    );
    assert!(
        !g["activities"].to_string().contains("replacing it"),
        "nothing replaced: {g}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn command_hooks_run_on_the_owner_and_a_new_owner_keeps_the_machines() {
    use crate::scaling::{vm_pids, KillVms};
    let Some(etcd) = Etcd::start(1).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = KillVms(dir.path().to_path_buf());
    let prefix = "/trellis/scaling-hooks";
    let port = free_port();
    let ips = ["127.0.0.9", "127.0.0.10"];
    let mut nodes = [
        Some(Trellis::start(&node_file(&etcd, prefix, "node-a", ips[0]), &[]).await),
        Some(Trellis::start(&node_file(&etcd, prefix, "node-b", ips[1]), &[]).await),
    ];
    let text = with_hooks(shared(port, (1, 1), 1, 3), dir.path());
    applied(&etcd, prefix, dir.path(), &text);

    let a = nodes[0].as_ref().unwrap();
    let g = eventually(WAIT, "two machines in service", || async {
        let g = group(a).await;
        (g["in_service"] == 2 && g["instances"].as_array()?.len() == 2).then_some(g)
    })
    .await;
    assert_eq!(vm_pids(dir.path()).len(), 2, "{g:#}");
    let machines: BTreeSet<String> = g["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["provider_id"].as_str().unwrap().to_string())
        .collect();
    let owner = g["owner"].as_str().unwrap().to_string();
    let (owner_i, other_i) = if owner == "node-a" { (0, 1) } else { (1, 0) };
    for ip in ips {
        assert!(
            served_by(ip, port).await.is_some(),
            "{ip} serves the machines"
        );
    }

    // The owner dies; the machines do not (they are not its children). The new owner takes them over
    // from their records: nothing launched, nothing replaced.
    nodes[owner_i].as_ref().unwrap().signal(libc::SIGKILL);
    nodes[owner_i] = None;
    let survivor = nodes[other_i].as_ref().unwrap();
    let survivor_name = if other_i == 0 { "node-a" } else { "node-b" };
    let g = eventually(WAIT, "the survivor to own the group", || async {
        let g = group(survivor).await;
        (g["owner"] == survivor_name && g["in_service"] == 2).then_some(g)
    })
    .await;
    let now: BTreeSet<String> = g["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["provider_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(now, machines, "{g:#}");
    assert_eq!(vm_pids(dir.path()).len(), 2);

    // Scale-in on the new owner: its terminate hook stops one machine once it has drained.
    let (status, _) = survivor
        .admin(
            reqwest::Method::PUT,
            "/v1/scaling-groups/web/desired",
            Some(json!({"desired": 1})),
        )
        .await;
    assert_eq!(status, 200);
    eventually(WAIT, "one machine left", || async {
        let g = group(survivor).await;
        let n = vm_pids(dir.path()).len();
        (n == 1 && g["instances"].as_array()?.len() == 1).then_some(())
    })
    .await;
    assert!(served_by(ips[other_i], port).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_node_s_machines_move_into_a_fleet_and_back_without_a_launch() {
    use crate::scaling::{vm_pids, KillVms};
    let Some(etcd) = Etcd::start(1).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = KillVms(dir.path().to_path_buf());
    let prefix = "/trellis/scaling-import";
    let port = free_port();
    let text = with_hooks(shared(port, (1, 1), 1, 3), dir.path());
    // A single-file deployment runs two machines, then stops (machines outlive it).
    let state = dir.path().join("state");
    let single = Trellis::start_with(
        &text,
        &[port],
        crate::support::Options {
            state_dir: Some(state.clone()),
            ..crate::support::Options::default()
        },
    )
    .await;
    eventually(WAIT, "two machines on the single node", || async {
        (group(&single).await["in_service"] == 2).then_some(())
    })
    .await;
    let machines = vm_pids(dir.path());
    assert_eq!(machines.len(), 2);
    single.signal(libc::SIGTERM);
    drop(single);

    let file = dir.path().join("shop.toml");
    std::fs::write(&file, &text).unwrap();
    let out = fleet_cli(
        &etcd,
        prefix,
        &[
            "import",
            file.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 machines"),
        "{out:?}"
    );

    // A fleet node takes the group over with the machines it was handed: nothing launched.
    let node = Trellis::start(&node_file(&etcd, prefix, "node-a", "127.0.0.16"), &[]).await;
    let g = eventually(WAIT, "the imported machines in service", || async {
        let g = group(&node).await;
        (g["owner"] == "node-a" && g["in_service"] == 2).then_some(g)
    })
    .await;
    assert_eq!(vm_pids(dir.path()), machines, "{g:#}");
    let activities = g["activities"].to_string();
    assert!(activities.contains("imported"), "{activities}");
    assert!(!activities.contains("launched at"), "{activities}");
    assert!(served_by("127.0.0.16", port).await.is_some());

    // And back: a single node's state directory with the same machines.
    let back = dir.path().join("back-state");
    let out = fleet_cli(
        &etcd,
        prefix,
        &[
            "export",
            "--out",
            "/dev/null",
            "--state-dir",
            back.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported: Value =
        serde_json::from_slice(&std::fs::read(back.join("scaling-web.json")).unwrap()).unwrap();
    assert_eq!(exported.as_array().map(Vec::len), Some(2), "{exported}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_group_at_zero_is_woken_by_a_request_at_any_node_and_goes_back_to_zero() {
    let Some(etcd) = Etcd::start(1).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = "/trellis/zero";
    let port = free_port();
    let ports = instance_ports();
    let ips = ["127.0.0.7", "127.0.0.8"];
    let nodes = two_nodes(&etcd, prefix, ips).await;
    let mut text = shared(port, ports, 0, 1);
    drop_policies(&mut text);
    text.push_str("[scaling_group.scale_to_zero]\nidle = \"2s\"\nwake_timeout = \"20s\"\n");
    applied(&etcd, prefix, dir.path(), &text);
    let g = eventually(WAIT, "an owner at desired 0", || async {
        let g = group(&nodes[0]).await;
        g["owner"].is_string().then_some(g)
    })
    .await;
    assert_eq!(g["desired"], 0, "{g}");
    assert!(running(ports).is_empty(), "no instance at rest");
    let owner = g["owner"].as_str().unwrap().to_string();
    // The request arrives at the node that does not own the group: held there while the owner wakes it.
    let other = if owner == "node-a" { 1 } else { 0 };
    let (other_ip, other_name) = (ips[other], if other == 0 { "node-a" } else { "node-b" });
    // That node serves the fleet's listener once it has read the configuration.
    eventually(WAIT, "the listener up at the other node", || async {
        tokio::net::TcpStream::connect((other_ip, port))
            .await
            .ok()
            .map(drop)
    })
    .await;
    let woke = Instant::now();
    let reply = reqwest::Client::new()
        .get(format!("http://{other_ip}:{port}/"))
        .timeout(Duration::from_secs(25))
        .send()
        .await
        .expect("an answer");
    assert_eq!(reply.status(), 200, "held, then answered");
    eprintln!("a request woke the fleet's group in {:?}", woke.elapsed());
    let g = group(&nodes[0]).await;
    assert!(
        g["activities"]
            .to_string()
            .contains(&format!("a request is waiting at node {other_name}")),
        "{g}"
    );
    // Idle: back to zero, and nothing runs.
    eventually(WAIT, "back at zero with nothing running", || async {
        let g = group(&nodes[0]).await;
        (g["desired"] == 0
            && g["instances"].as_array().is_some_and(|i| i.is_empty())
            && running(ports).is_empty())
        .then_some(())
    })
    .await;
    let g = group(&nodes[1]).await;
    assert!(
        g["activities"].to_string().contains("scaling to zero"),
        "{g}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_fleet_lifecycle_hooks_run_on_the_instance_s_node_and_gate_its_routing() {
    let Some(etcd) = Etcd::start(1).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("last-look");
    let prefix = "/trellis/hooks";
    let port = free_port();
    let ports = instance_ports();
    let ips = ["127.0.0.9", "127.0.0.10"];
    let nodes = two_nodes(&etcd, prefix, ips).await;
    let mut text = shared(port, ports, 1, 2).replace("desired = 1", "desired = 2");
    drop_policies(&mut text);
    // The launching hook abandons web-1 only; the terminating one asks the leaving instance for its
    // health and keeps the status line it got.
    text.push_str(&format!(
        "[[scaling_group.lifecycle_hook]]\nname = \"gate\"\ntransition = \"launching\"\n\
         command = [\"sh\", \"-c\", \"test \\\"$0\\\" != web-1\", \"{{id}}\"]\ntimeout = \"5s\"\n\
         [[scaling_group.lifecycle_hook]]\nname = \"last-look\"\ntransition = \"terminating\"\n\
         command = [\"bash\", \"-c\", \"exec 3<>/dev/tcp/${{0%:*}}/${{0##*:}} && printf 'GET /healthz HTTP/1.0\\\\r\\\\n\\\\r\\\\n' >&3 && head -n 1 <&3 > {}\", \"{{address}}\"]\n\
         timeout = \"5s\"\n",
        seen.display()
    ));
    applied(&etcd, prefix, dir.path(), &text);
    let g = settled(&nodes[0], ports, 2, "two admitted instances in service").await;
    let ids: BTreeSet<String> = g["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect();
    assert!(!ids.contains("web-1"), "web-1 was abandoned: {g}");
    assert!(
        g["activities"]
            .to_string()
            .contains("abandoned by its launching hooks"),
        "{g}"
    );
    // Both nodes route to both admitted instances.
    for ip in ips {
        let mut served = BTreeSet::new();
        for _ in 0..20 {
            served.extend(served_by(ip, port).await);
        }
        assert_eq!(served, ids, "{ip} serves the admitted instances");
    }

    // Down to one: the leaving instance's terminating hook runs on its node while it still answers.
    let (status, reply) = nodes[1]
        .admin(
            reqwest::Method::PUT,
            "/v1/scaling-groups/web/desired",
            Some(json!({"desired": 1})),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    settled(&nodes[0], ports, 1, "one instance left").await;
    let line = std::fs::read_to_string(&seen).expect("the terminating hook ran");
    assert!(
        line.starts_with("HTTP/1.") && line.contains(" 200 "),
        "{line:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_refreshes_its_instances_when_the_launch_changes_and_on_request_without_a_failed_request(
) {
    let Some(etcd) = Etcd::start(1).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = "/trellis/refresh";
    let port = free_port();
    let ports = instance_ports();
    let ips = ["127.0.0.11", "127.0.0.12"];
    let nodes = two_nodes(&etcd, prefix, ips).await;
    let mut text = shared(port, ports, 2, 2);
    drop_policies(&mut text);
    applied(&etcd, prefix, dir.path(), &text);
    settled(&nodes[0], ports, 2, "two instances in service").await;

    // Keep-alive clients at both nodes for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let served = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let mut load = Vec::new();
    for ip in ips {
        let (stop, failures, served) = (stop.clone(), failures.clone(), served.clone());
        load.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                match client.get(format!("http://{ip}:{port}/")).send().await {
                    Ok(r) if r.status() == 200 => {
                        let by = r.headers().get("x-served-by").and_then(|v| v.to_str().ok());
                        served.lock().unwrap().insert(by.unwrap_or("?").to_string());
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{ip}: {}", r.status())),
                    Err(e) => failures.lock().unwrap().push(format!("{ip}: {e}")),
                }
            }
        }));
    }

    // A new launch applied to the fleet: the owner refreshes every instance, launch first.
    let v2 = text.replace("\"--name\", \"{id}\"", "\"--name\", \"v2-{id}\"");
    assert_ne!(v2, text);
    applied(&etcd, prefix, dir.path(), &v2);
    let g = eventually(WAIT, "the refresh to succeed", || async {
        let g = group(&nodes[1]).await;
        (g["instance_refresh"]["status"] == "successful").then_some(g)
    })
    .await;
    assert_eq!(g["instance_refresh"]["id"], 1, "{g}");
    settled(&nodes[0], ports, 2, "two new instances in service").await;
    for _ in 0..10 {
        let by = served_by(ips[0], port).await.unwrap_or_default();
        assert!(by.starts_with("v2-"), "served by {by}");
    }

    // On request through the node that does not own it: the same launch, every instance again.
    let owner = g["owner"].as_str().unwrap().to_string();
    let other = if owner == "node-a" { 1 } else { 0 };
    let before: BTreeSet<String> = g["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect();
    let (code, view) = nodes[other]
        .admin(
            reqwest::Method::POST,
            "/v1/scaling-groups/web/refresh",
            None,
        )
        .await;
    assert_eq!((code, view["id"].as_u64()), (201, Some(2)), "{view}");
    let done = eventually(WAIT, "the requested refresh to succeed", || async {
        let g = group(&nodes[other]).await;
        (g["instance_refresh"]["id"] == 2 && g["instance_refresh"]["status"] == "successful")
            .then_some(g)
    })
    .await;
    assert!(
        done["activities"]
            .to_string()
            .contains("requested through the API"),
        "{done}"
    );
    let g = settled(&nodes[other], ports, 2, "two newer instances in service").await;
    let after: BTreeSet<String> = g["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect();
    assert!(before.is_disjoint(&after), "{before:?} → {after:?}");

    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    let served = served.lock().unwrap().clone();
    assert!(
        served.iter().any(|s| s.starts_with("v2-")) && served.iter().any(|s| !s.starts_with("v2-")),
        "{served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_s_warm_pool_serves_a_scale_out_in_well_under_a_boot_and_refills() {
    let Some(etcd) = Etcd::start(1).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = "/trellis/warm";
    let port = free_port();
    let ports = instance_ports();
    let ips = ["127.0.0.13", "127.0.0.14"];
    let nodes = two_nodes(&etcd, prefix, ips).await;
    let mut text = shared(port, ports, 1, 3);
    drop_policies(&mut text);
    // Instances that take 3 s to boot.
    set_command(&mut text, "[\"sh\", \"-c\", \"sleep 3; exec \\\"$0\\\" echo --listen $1:$2 --name $3 --workers 1\", \"{self}\", \"{host}\", \"{port}\", \"{id}\"]");
    text.push_str("[scaling_group.warm_pool]\nsize = 2\n");
    applied(&etcd, prefix, dir.path(), &text);
    let ready = |g: &Value| g["warm_pool"]["ready"].as_u64().unwrap_or(0);
    let g = eventually(WAIT, "one in service and two warm", || async {
        let g = group(&nodes[0]).await;
        (g["in_service"] == 1 && ready(&g) == 2).then_some(g)
    })
    .await;
    let warm: BTreeSet<String> = g["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["lifecycle"] == "warmed")
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(warm.len(), 2, "{g}");
    // Out of every node's routing while warm.
    for ip in ips {
        for _ in 0..5 {
            let by = served_by(ip, port).await.unwrap_or_default();
            assert!(!warm.contains(&by), "{by} is warm, yet served at {ip}");
        }
    }

    let asked = Instant::now();
    let (status, reply) = nodes[1]
        .admin(
            reqwest::Method::PUT,
            "/v1/scaling-groups/web/desired",
            Some(json!({"desired": 3})),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let g = eventually(WAIT, "three in service", || async {
        let g = group(&nodes[0]).await;
        (g["in_service"] == 3).then_some(g)
    })
    .await;
    let took = asked.elapsed();
    eprintln!("fleet: desired 1 -> 3 in service with a warm pool: {took:?}");
    assert!(
        took < Duration::from_millis(2500),
        "took {took:?} with a warm pool (a boot is 3 s)\n{g}"
    );
    assert!(
        g["activities"]
            .to_string()
            .contains("taken from the warm pool into service"),
        "{g}"
    );
    // Both nodes route to the instances that left the pool, and it refills.
    for ip in ips {
        let mut seen = BTreeSet::new();
        for _ in 0..30 {
            seen.extend(served_by(ip, port).await);
        }
        assert!(
            warm.is_subset(&seen),
            "{ip} serves {seen:?}, not all of {warm:?}"
        );
    }
    eventually(WAIT, "the pool refilled", || async {
        let g = group(&nodes[1]).await;
        (g["in_service"] == 3 && ready(&g) == 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_whose_owner_dies_is_continued_by_the_next_owner_and_runs_each_instance_once() {
    let Some(etcd) = Etcd::start(1).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = "/trellis/refresh-owner";
    let port = free_port();
    let ports = instance_ports();
    let ips = ["127.0.0.17", "127.0.0.18"];
    let nodes = two_nodes(&etcd, prefix, ips).await;
    let mut text = shared(port, ports, 2, 2);
    drop_policies(&mut text);
    // Instances that take 2 s to boot: the refresh is still under way when its owner dies.
    set_command(
        &mut text,
        "[\"sh\", \"-c\", \"sleep 2; exec \\\"$0\\\" echo --listen $1:$2 --name $3 --workers 1\", \"{self}\", \"{host}\", \"{port}\", \"{id}\"]",
    );
    applied(&etcd, prefix, dir.path(), &text);
    let g = settled(&nodes[0], ports, 2, "two instances in service").await;
    let owner = g["owner"].as_str().unwrap().to_string();
    let (owner_i, other_i) = if owner == "node-a" { (0, 1) } else { (1, 0) };

    applied(
        &etcd,
        prefix,
        dir.path(),
        &text.replace("--name $3", "--name v2-$3"),
    );
    let other = &nodes[other_i];
    eventually(WAIT, "the refresh under way", || async {
        let g = group(other).await;
        (g["instance_refresh"]["status"] == "in_progress" && g["pending"].as_u64()? > 0)
            .then_some(())
    })
    .await;
    // kill -9 of the owner in the middle: the other node takes over and finishes the same refresh.
    nodes[owner_i].signal(libc::SIGKILL);
    let g = eventually(WAIT, "the refresh finished by the next owner", || async {
        let g = group(other).await;
        (g["owner"] != owner.as_str() && g["instance_refresh"]["status"] == "successful")
            .then_some(g)
    })
    .await;
    assert_eq!(
        g["instance_refresh"]["id"], 1,
        "continued, not started again: {g}"
    );
    // Exactly desired instances, each running once, all of the new launch.
    let g = settled(other, ports, 2, "two new instances, each running once").await;
    for _ in 0..10 {
        let by = served_by(ips[other_i], port).await.unwrap_or_default();
        assert!(by.starts_with("v2-"), "served by {by}\n{g}");
    }
}
