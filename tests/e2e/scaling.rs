//! Scaling groups with the `process` provider: the real binary launches `trellis echo` instances,
//! registers them, scales on its own request metrics, replaces what dies, and leaves no child behind.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::support::client::{self, get};
use crate::support::config::{forward_to, listener, service};
use crate::support::{eventually, free_port, instance_ports, Trellis};

const WAIT: Duration = Duration::from_secs(30);

pub(crate) fn config(port: u16, min: u32, max: u32) -> String {
    let (lo, hi) = instance_ports();
    format!(
        "{}{}\
[[target_group]]\nname = \"pool\"\ntargets = []\nderegistration_delay = \"5s\"\n\
  [target_group.health_check]\n  path = \"/healthz\"\n  interval = \"200ms\"\n  timeout = \"150ms\"\n\
  healthy_threshold = 1\n  unhealthy_threshold = 2\n\n\
[[scaling_group]]\nname = \"web\"\ntarget_group = \"pool\"\nmin = {min}\nmax = {max}\ndesired = {min}\n\
evaluation_period = \"500ms\"\nscale_in_window = \"1500ms\"\ncooldown = \"1s\"\ninstance_warmup = \"500ms\"\nhealth_check_grace_period = \"10s\"\n\
  [scaling_group.launch]\n  provider = \"process\"\n\
  command = [\"{{self}}\", \"echo\", \"--listen\", \"127.0.0.1:{{port}}\", \"--name\", \"{{id}}\", \"--workers\", \"1\"]\n\
  ports = \"{lo}-{hi}\"\n  stop_timeout = \"2s\"\n\
  [[scaling_group.policy]]\n  name = \"rps\"\n  type = \"target_tracking\"\n  metric = \"request_count_per_target\"\n  target = 50.0\n",
        service("web", &["*"]),
        listener(port, &forward_to("pool")),
    )
}

/// A configuration's scaling group without its policies (and what follows them): only operators, and
/// what a test adds after, move its capacity.
pub(crate) fn drop_policies(text: &mut String) {
    text.truncate(text.find("[[scaling_group.policy]]").unwrap());
}

/// The launch `command` line replaced by `command` (a TOML array).
pub(crate) fn set_command(text: &mut String, command: &str) {
    let start = text.find("command = [").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    text.replace_range(start..end, &format!("command = {command}"));
}

pub(crate) async fn group(trellis: &Trellis) -> Value {
    trellis.status().await["scaling_groups"][0].clone()
}

pub(crate) async fn wait_group(
    trellis: &Trellis,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    eventually(WAIT, what, || async {
        let g = group(trellis).await;
        done(&g).then_some(g)
    })
    .await
}

pub(crate) fn pids(g: &Value) -> Vec<i32> {
    g["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["pid"].as_i64().map(|p| p as i32))
        .collect()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_pool_scales_out_under_load_and_back_in_without_failing_a_request() {
    let port = free_port();
    let trellis = Trellis::start(&config(port, 1, 4), &[port]).await;
    wait_group(&trellis, "one instance in service", |g| {
        g["in_service"] == 1
    })
    .await;
    assert_eq!(get(&client::http1(), port, "/").await.status, 200);

    // Load far above 50 requests/s per instance, from several keep-alive clients.
    let load_started = std::time::Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, failures, served) = (stop.clone(), failures.clone(), served.clone());
        clients.push(tokio::spawn(async move {
            let c = client::http1();
            while !stop.load(Ordering::SeqCst) {
                let reply = get(&c, port, "/").await;
                if reply.status == 200 {
                    served.lock().unwrap().insert(reply.served_by());
                } else {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    let g = wait_group(&trellis, "four instances in service", |g| {
        g["in_service"] == 4
    })
    .await;
    eprintln!(
        "load step to 4 instances in service: {:?}",
        load_started.elapsed()
    );
    eventually(WAIT, "every instance to serve traffic", || async {
        (served.lock().unwrap().len() == 4).then_some(())
    })
    .await;
    let activities = g["activities"].to_string();
    assert!(
        activities.contains("request_count_per_target"),
        "{activities}"
    );
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }

    // A trickle while it scales back in: draining must not fail any of it.
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let (stop, failures) = (stop.clone(), failures.clone());
        tokio::spawn(async move {
            let c = client::http1();
            while !stop.load(Ordering::SeqCst) {
                if get(&c, port, "/").await.status != 200 {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let quiet = std::time::Instant::now();
    let g = wait_group(&trellis, "scale-in to min", |g| {
        g["desired"] == 1 && g["instances"].as_array().is_some_and(|i| i.len() == 1)
    })
    .await;
    eprintln!("load gone to 1 instance: {:?}", quiet.elapsed());
    stop.store(true, Ordering::SeqCst);
    trickle.await.unwrap();
    assert_eq!(failures.load(Ordering::SeqCst), 0, "{g:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_is_replaced_and_a_killed_daemon_leaves_no_child() {
    let port = free_port();
    let mut trellis = Trellis::start(&config(port, 2, 2), &[port]).await;
    let g = wait_group(&trellis, "two instances in service", |g| {
        g["in_service"] == 2
    })
    .await;
    let first = pids(&g);
    assert_eq!(first.len(), 2);

    unsafe_kill(first[0], libc::SIGKILL);
    let g = wait_group(&trellis, "a replacement in service", |g| {
        g["in_service"] == 2 && !pids(g).contains(&first[0])
    })
    .await;
    assert!(
        g["activities"].to_string().contains("replacing it"),
        "{g:#}"
    );
    let children = pids(&g);

    trellis.signal(libc::SIGKILL);
    trellis.wait_exit(WAIT).await;
    eventually(WAIT, "every child to die with the daemon", || {
        let left: Vec<i32> = children.iter().copied().filter(|&p| alive(p)).collect();
        async move { left.is_empty().then_some(()) }
    })
    .await;
}

fn unsafe_kill(pid: i32, signal: i32) {
    // SAFETY: kill(2) with plain integers.
    unsafe {
        libc::kill(pid, signal);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_set_by_hand_is_clamped_and_scale_in_spares_a_protected_instance() {
    let port = free_port();
    let mut cfg = config(port, 1, 3);
    // No policy: only the operator moves desired here.
    drop_policies(&mut cfg);
    let trellis = Trellis::start(&cfg, &[port]).await;
    wait_group(&trellis, "one instance in service", |g| {
        g["in_service"] == 1
    })
    .await;

    let put = |body: Value| {
        trellis.admin(
            reqwest::Method::PUT,
            "/v1/scaling-groups/web/desired",
            Some(body),
        )
    };
    let (status, reply) = put(serde_json::json!({"desired": 9})).await;
    assert_eq!(
        (status, reply["desired"].as_u64()),
        (200, Some(3)),
        "{reply}"
    );
    let g = wait_group(&trellis, "three in service", |g| g["in_service"] == 3).await;
    // An instance belongs to its scaling group: the target API neither re-weights nor drains it.
    let address = g["instances"][0]["address"].as_str().unwrap().to_string();
    for (status, reply) in [
        trellis.register("pool", &address, 5).await,
        trellis.deregister("pool", &address).await,
    ] {
        assert_eq!(status, 409, "{reply}");
        let message = reply["error"].as_str().unwrap_or_default();
        assert!(message.contains("scaling group \"web\""), "{message}");
    }
    // Protect the newest; scale-in (oldest first by default) must then take the other two.
    let newest = g["instances"]
        .as_array()
        .unwrap()
        .iter()
        .max_by(|a, b| {
            a["age_seconds"]
                .as_f64()
                .partial_cmp(&b["age_seconds"].as_f64())
                .unwrap()
        })
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/scaling-groups/web/instances/{newest}/protection");
    let (status, reply) = trellis
        .admin(
            reqwest::Method::PUT,
            &path,
            Some(serde_json::json!({"protected": true})),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let (status, _) = put(serde_json::json!({"desired": 1})).await;
    assert_eq!(status, 200);
    let g = wait_group(&trellis, "scale-in to one", |g| {
        g["instances"].as_array().is_some_and(|i| i.len() == 1)
    })
    .await;
    assert_eq!(g["instances"][0]["id"], newest.as_str(), "{g:#}");
    let (status, _) = trellis
        .admin(
            reqwest::Method::PUT,
            "/v1/scaling-groups/nope/desired",
            Some(serde_json::json!({"desired": 1})),
        )
        .await;
    assert_eq!(status, 404);

    // The instance gauge counts instances only, so its sum is the group's instance count; the
    // setpoints have their own gauge. Status first: the gauges are set before it, in the same step.
    let count = group(&trellis).await["instances"]
        .as_array()
        .map(Vec::len)
        .expect("instances in status");
    let metrics = trellis.metrics().await;
    let instances = samples(&metrics, "trellis_scaling_group_instances", "web");
    assert!(!instances.contains_key("desired"), "{instances:?}");
    assert_eq!(
        instances.values().sum::<f64>(),
        count as f64,
        "{instances:?}"
    );
    let capacity = samples(&metrics, "trellis_scaling_group_capacity", "web");
    let want = [("desired", 1.0), ("max", 3.0), ("min", 1.0)];
    assert_eq!(
        capacity,
        want.map(|(b, n)| (b.to_owned(), n)).into(),
        "{metrics}"
    );
}

/// The samples of `metric` for scaling group `group` in `metrics`, by the value of their other label
/// (`state`, `bound`).
fn samples(metrics: &str, metric: &str, group: &str) -> BTreeMap<String, f64> {
    let mine = format!("scaling_group=\"{group}\"");
    metrics
        .lines()
        .filter_map(|line| {
            let (labels, value) = line
                .strip_prefix(metric)?
                .strip_prefix('{')?
                .split_once("} ")?;
            let mut labels = labels.split(',');
            let (first, second) = (labels.next()?, labels.next()?);
            let other = if first == mine {
                second
            } else if second == mine {
                first
            } else {
                return None;
            };
            let (_, label) = other.split_once('=')?;
            Some((
                label.trim_matches('"').to_owned(),
                value.trim().parse().ok()?,
            ))
        })
        .collect()
}

/// Hook scripts standing in for a VM API: each "VM" is a detached `trellis echo` in its own session, with
/// a pid file in `dir/vms`.
pub(crate) fn hooks(dir: &std::path::Path, base_port: u16) -> (String, String, String) {
    let vms = dir.join("vms");
    std::fs::create_dir_all(&vms).unwrap();
    let launch = format!(
        "#!/bin/sh\nset -e\nn=$(ls {vms} | wc -l)\nport=$(({base_port} + $(date +%N) % 30))\n\
         while [ -e {vms}/$port.port ]; do port=$((port + 1)); done\ntouch {vms}/$port.port\n\
         setsid {bin} echo --listen 127.0.0.1:$port --name \"$1\" --workers 1 >/dev/null 2>&1 < /dev/null &\n\
         echo $! > {vms}/vm-$!.pid\necho $port > {vms}/vm-$!.addr\n\
         printf '{{\"id\": \"vm-%s\", \"address\": \"127.0.0.1:%s\"}}\\n' $! $port\n",
        vms = vms.display(),
        bin = crate::support::trellis::bin(),
    );
    let terminate = format!(
        "#!/bin/sh\nf={vms}/$1.pid\n[ -e $f ] || exit 0\nkill $(cat $f) 2>/dev/null || true\n\
         rm -f {vms}/$(cat {vms}/$1.addr).port $f {vms}/$1.addr\n",
        vms = vms.display()
    );
    let list = format!(
        "#!/bin/sh\nfor f in {vms}/*.pid; do [ -e \"$f\" ] || continue; pid=$(cat $f); id=$(basename $f .pid)\n\
         kill -0 $pid 2>/dev/null && printf '{{\"id\": \"%s\", \"address\": \"127.0.0.1:%s\"}}\\n' $id $(cat {vms}/$id.addr)\n\
         done; exit 0\n",
        vms = vms.display()
    );
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    (
        write("launch.sh", &launch),
        write("terminate.sh", &terminate),
        write("list.sh", &list),
    )
}

/// The pids of the "VMs" still running.
pub(crate) fn vm_pids(dir: &std::path::Path) -> Vec<i32> {
    std::fs::read_dir(dir.join("vms"))
        .map(|entries| {
            entries
                .filter_map(|e| {
                    let path = e.ok()?.path();
                    (path.extension()? == "pid").then_some(())?;
                    std::fs::read_to_string(path).ok()?.trim().parse().ok()
                })
                .filter(|&pid| alive(pid))
                .collect()
        })
        .unwrap_or_default()
}

/// Kills the stand-in VMs whatever happens to the test.
pub(crate) struct KillVms(pub std::path::PathBuf);

impl Drop for KillVms {
    fn drop(&mut self) {
        for pid in vm_pids(&self.0) {
            unsafe_kill(pid, libc::SIGKILL);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_provider_launches_terminates_and_readopts_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = KillVms(dir.path().to_path_buf());
    let (lo, _) = instance_ports();
    let (launch, terminate, list) = hooks(dir.path(), lo);
    let port = free_port();
    let state = tempfile::tempdir().unwrap();
    let mut cfg = config(port, 1, 3).replace("desired = 1", "desired = 2");
    let start = cfg
        .find("  [scaling_group.launch]")
        .unwrap_or_else(|| cfg.find("[scaling_group.launch]").unwrap());
    cfg.truncate(start);
    cfg.push_str(&format!(
        "[scaling_group.launch]\nprovider = \"command\"\nlaunch = [\"sh\", \"{launch}\", \"{{id}}\"]\n\
         terminate = [\"sh\", \"{terminate}\"]\nlist = [\"sh\", \"{list}\"]\nhook_timeout = \"10s\"\n"
    ));
    let opts = || crate::support::Options {
        state_dir: Some(state.path().to_path_buf()),
        ..crate::support::Options::default()
    };
    let mut first = Trellis::start_with(&cfg, &[port], opts()).await;
    let g = wait_group(&first, "two VMs in service", |g| g["in_service"] == 2).await;
    assert_eq!(vm_pids(dir.path()).len(), 2, "{g:#}");
    assert!(g["instances"][0]["provider_id"]
        .as_str()
        .unwrap()
        .starts_with("vm-"));
    assert_eq!(get(&client::http1(), port, "/").await.status, 200);

    let (status, _) = first
        .admin(
            reqwest::Method::PUT,
            "/v1/scaling-groups/web/desired",
            Some(serde_json::json!({"desired": 1})),
        )
        .await;
    assert_eq!(status, 200);
    wait_group(&first, "one VM left", |g| {
        g["instances"].as_array().is_some_and(|i| i.len() == 1)
    })
    .await;
    eventually(WAIT, "the terminate hook to stop a VM", || {
        let n = vm_pids(dir.path()).len();
        async move { (n == 1).then_some(()) }
    })
    .await;
    let survivor = vm_pids(dir.path());

    // A restart leaves VMs alone and takes the running one back without launching another.
    first.signal(libc::SIGTERM);
    first.wait_exit(WAIT).await;
    assert_eq!(vm_pids(dir.path()), survivor, "VMs outlive the daemon");
    let second =
        Trellis::start_with(&cfg.replace("desired = 2", "desired = 1"), &[port], opts()).await;
    let g = wait_group(&second, "the adopted VM in service", |g| {
        g["in_service"] == 1
    })
    .await;
    let activities = g["activities"].to_string();
    assert!(activities.contains("adopted"), "{activities}");
    assert!(
        !activities.contains("launched at"),
        "launched a duplicate: {activities}"
    );
    assert_eq!(vm_pids(dir.path()), survivor);
    assert_eq!(get(&client::http1(), port, "/").await.status, 200);

    // Down again, and the launch hook changed meanwhile: the machine it adopts was made by the older
    // launch, so a refresh replaces it (launch first), and the records say which launch made what.
    let mut second = second;
    second.signal(libc::SIGTERM);
    second.wait_exit(WAIT).await;
    let changed = cfg
        .replace("desired = 2", "desired = 1")
        .replace("\"{id}\"]\nterminate", "\"{id}\", \"v2\"]\nterminate");
    assert_ne!(changed, cfg.replace("desired = 2", "desired = 1"));
    let third = Trellis::start_with(&changed, &[port], opts()).await;
    // Served throughout: the adopted machine stays until its replacement is in service.
    eventually(WAIT, "the adopted machine serving", || async {
        (get(&client::http1(), port, "/").await.status == 200).then_some(())
    })
    .await;
    let mut failed = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    let g = loop {
        let reply = get(&client::http1(), port, "/").await;
        if reply.status != 200 {
            failed.push(reply.status);
        }
        let g = group(&third).await;
        if g["instance_refresh"]["status"] == "successful"
            && g["instances"].as_array().is_some_and(|i| i.len() == 1)
        {
            break g;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no refresh within {WAIT:?}\n{g:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        failed.is_empty(),
        "failed during the refresh: {failed:?}\n{g:#}"
    );
    let activities = g["activities"].to_string();
    assert!(
        activities.contains("made by an older launch"),
        "{activities}"
    );
    assert!(
        activities.contains("machines of an older launch were adopted"),
        "{activities}"
    );
    eventually(WAIT, "the older machine stopped", || {
        let pids = vm_pids(dir.path());
        let old = survivor.clone();
        async move { (pids.len() == 1 && pids != old).then_some(()) }
    })
    .await;
    let records: Value =
        serde_json::from_slice(&std::fs::read(state.path().join("scaling-web.json")).unwrap())
            .unwrap();
    assert!(records[0]["launch"].is_string(), "{records}");
    assert_eq!(get(&client::http1(), port, "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reshapes_a_running_group_and_removing_it_stops_its_instances() {
    let port = free_port();
    let cfg = config(port, 1, 3);
    let trellis = Trellis::start(&cfg, &[port]).await;
    wait_group(&trellis, "one instance in service", |g| {
        g["in_service"] == 1
    })
    .await;

    // New bounds: min 2 raises desired to 2.
    trellis.write_config(
        &cfg.replace("min = 1", "min = 2")
            .replace("desired = 1", "desired = 2"),
    );
    assert_eq!(trellis.reload().await.0, 200);
    let g = wait_group(&trellis, "two in service", |g| g["in_service"] == 2).await;
    assert_eq!(
        (g["min"].as_u64(), g["desired"].as_u64()),
        (Some(2), Some(2)),
        "{g:#}"
    );
    let children = pids(&g);

    // The group leaves the file: its instances drain and stop, and nothing is left in the target group.
    let without = &cfg[..cfg.find("[[scaling_group]]").unwrap()];
    trellis.write_config(without);
    assert_eq!(trellis.reload().await.0, 200);
    eventually(WAIT, "the removed group's children to stop", || {
        let left: Vec<i32> = children.iter().copied().filter(|&p| alive(p)).collect();
        async move { left.is_empty().then_some(()) }
    })
    .await;
    eventually(WAIT, "the target group to empty", || async {
        trellis.group_targets("pool").await.is_empty().then_some(())
    })
    .await;
    let status = trellis.status().await;
    assert_eq!(
        status["scaling_groups"].as_array().map(Vec::len),
        Some(0),
        "{status:#}"
    );
}

/// Keeps `clients` keep-alive clients sending requests until `stop` is set.
fn load(port: u16, clients: usize, stop: &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let c = client::http1();
                while !stop.load(Ordering::SeqCst) {
                    let _ = get(&c, port, "/").await;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dip_shorter_than_the_scale_in_window_sheds_no_instance() {
    let port = free_port();
    let cfg =
        config(port, 1, 3).replace("scale_in_window = \"1500ms\"", "scale_in_window = \"4s\"");
    let trellis = Trellis::start(&cfg, &[port]).await;
    wait_group(&trellis, "one instance in service", |g| {
        g["in_service"] == 1
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(port, 4, &stop);
    wait_group(&trellis, "three in service", |g| g["in_service"] == 3).await;

    // A dip of 1.5 s (three evaluations with no load, cooldown 1 s over), then the load again: the
    // window holds the capacity, and says for how long.
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let held = wait_group(&trellis, "a scale-in held by the window", |g| {
        g["scale_in_held_seconds"].as_f64().is_some_and(|s| s > 0.0)
    })
    .await;
    assert_eq!(held["desired"], 3, "{held:#}");
    assert_eq!(held["scale_in_window"], "4s");
    // Why: the policy's metric, as the last evaluation measured it, against its target.
    let policy = &held["policies"][0];
    assert_eq!(
        (&policy["name"], &policy["metric"], &policy["target"]),
        (
            &Value::from("rps"),
            &Value::from("request_count_per_target"),
            &Value::from(50.0)
        ),
        "{held:#}"
    );
    assert!(
        policy["value"].as_f64().is_some_and(|v| v < 50.0),
        "{held:#}"
    );
    let dip_started = std::time::Instant::now();
    let mut lowest = 3;
    while dip_started.elapsed() < Duration::from_millis(1500) {
        lowest = lowest.min(group(&trellis).await["desired"].as_u64().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(port, 4, &stop);
    let resumed = std::time::Instant::now();
    while resumed.elapsed() < Duration::from_secs(2) {
        lowest = lowest.min(group(&trellis).await["desired"].as_u64().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        lowest, 3,
        "a dip shorter than scale_in_window shed capacity"
    );

    // The load goes for good: the group scales in, but not before the window has passed.
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let quiet = std::time::Instant::now();
    wait_group(&trellis, "scale-in after the window", |g| g["desired"] == 1).await;
    assert!(
        quiet.elapsed() >= Duration::from_secs(3),
        "scaled in after {:?}",
        quiet.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_past_max_instance_lifetime_is_replaced_without_a_failed_request() {
    let port = free_port();
    let mut cfg = config(port, 1, 2);
    drop_policies(&mut cfg);
    let cfg = cfg.replace(
        "scale_in_window = \"1500ms\"",
        "scale_in_window = \"1500ms\"\nmax_instance_lifetime = \"3s\"",
    );
    let trellis = Trellis::start(&cfg, &[port]).await;
    let first = wait_group(&trellis, "one instance in service", |g| {
        g["in_service"] == 1
    })
    .await;
    let first_id = first["instances"][0]["id"].as_str().unwrap().to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let trickle = {
        let (stop, failures, served) = (stop.clone(), failures.clone(), served.clone());
        tokio::spawn(async move {
            let c = client::http1();
            while !stop.load(Ordering::SeqCst) {
                let reply = get(&c, port, "/").await;
                if reply.status == 200 {
                    served.fetch_add(1, Ordering::SeqCst);
                } else {
                    eprintln!("failed: {reply:?}");
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // Launch first, then stop: the old instance leaves only once its replacement is in service.
    let g = wait_group(&trellis, "the first instance replaced", |g| {
        let ids: Vec<&str> = g["instances"]
            .as_array()
            .map(|i| i.iter().filter_map(|i| i["id"].as_str()).collect())
            .unwrap_or_default();
        g["in_service"] == 1 && ids.len() == 1 && ids[0] != first_id
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    trickle.await.unwrap();
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "failed requests\n{}",
        trellis.stderr()
    );
    assert!(served.load(Ordering::SeqCst) > 0);
    assert_eq!(g["desired"], 1);
    let activities = g["activities"].to_string();
    assert!(
        activities.contains("max_instance_lifetime 3s reached"),
        "{activities}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifecycle_hooks_gate_a_launch_and_see_a_leaving_instance_still_answer() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("last-look");
    let mut cfg = config(port, 1, 2);
    drop_policies(&mut cfg);
    // The launching hook abandons the first instance only; the terminating one asks the leaving
    // instance for its health and keeps the status line it got.
    cfg.push_str(&format!(
        "  [[scaling_group.lifecycle_hook]]\n  name = \"gate\"\n  transition = \"launching\"\n\
         \x20 command = [\"sh\", \"-c\", \"test \\\"$0\\\" != web-1\", \"{{id}}\"]\n  timeout = \"5s\"\n\
         \x20 [[scaling_group.lifecycle_hook]]\n  name = \"last-look\"\n  transition = \"terminating\"\n\
         \x20 command = [\"bash\", \"-c\", \"exec 3<>/dev/tcp/${{0%:*}}/${{0##*:}} && printf 'GET /healthz HTTP/1.0\\\\r\\\\n\\\\r\\\\n' >&3 && head -n 1 <&3 > {}\", \"{{address}}\"]\n\
         \x20 timeout = \"5s\"\n",
        seen.display()
    ));
    let trellis = Trellis::start(&cfg, &[port]).await;
    let g = wait_group(&trellis, "an admitted instance in service", |g| {
        g["in_service"] == 1
    })
    .await;
    assert_eq!(g["instances"][0]["id"], "web-2", "{g:#}");
    let activities = g["activities"].to_string();
    assert!(
        activities.contains("web-1 abandoned by its launching hooks"),
        "{activities}"
    );
    assert_eq!(get(&client::http1(), port, "/").await.status, 200);

    // One more, then back to one: the leaving instance's terminating hook runs while it still answers.
    let put = |n: u64| {
        trellis.admin(
            reqwest::Method::PUT,
            "/v1/scaling-groups/web/desired",
            Some(serde_json::json!({"desired": n})),
        )
    };
    assert_eq!(put(2).await.0, 200);
    wait_group(&trellis, "two in service", |g| g["in_service"] == 2).await;
    assert_eq!(put(1).await.0, 200);
    let g = wait_group(&trellis, "back to one, the other stopped", |g| {
        g["instances"].as_array().is_some_and(|i| i.len() == 1)
    })
    .await;
    let line = std::fs::read_to_string(&seen).expect("the terminating hook ran");
    assert!(
        line.starts_with("HTTP/1.") && line.contains(" 200 "),
        "{line:?}"
    );
    assert!(g["activities"]
        .to_string()
        .contains("terminating hooks: last-look: continue"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_at_zero_wakes_for_a_request_and_goes_back_to_zero_when_idle() {
    let port = free_port();
    let mut cfg = config(port, 0, 1);
    drop_policies(&mut cfg);
    cfg.push_str("  [scaling_group.scale_to_zero]\n  idle = \"2s\"\n  wake_timeout = \"20s\"\n");
    let trellis = Trellis::start(&cfg, &[port]).await;
    let g = group(&trellis).await;
    assert_eq!(
        (g["desired"].as_u64(), g["in_service"].as_u64()),
        (Some(0), Some(0)),
        "{g:#}"
    );
    assert!(
        g["instances"].as_array().is_some_and(|i| i.is_empty()),
        "no instance at rest: {g:#}"
    );

    // The first request is held while the group wakes, then answered by the new instance.
    let reply = get(&client::http1(), port, "/").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let g = wait_group(&trellis, "one in service", |g| g["in_service"] == 1).await;
    assert!(g["activities"].to_string().contains("a request is waiting"));

    // Idle for `idle`: back to zero, and the instance stops.
    let g = wait_group(&trellis, "back at zero", |g| {
        g["desired"] == 0 && g["instances"].as_array().is_some_and(|i| i.is_empty())
    })
    .await;
    assert!(
        g["activities"].to_string().contains("scaling to zero"),
        "{g:#}"
    );
    // And it wakes again.
    assert_eq!(get(&client::http1(), port, "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_to_a_group_that_cannot_wake_in_time_is_503_waking() {
    let port = free_port();
    let mut cfg = config(port, 0, 1);
    drop_policies(&mut cfg);
    // An instance that never listens: the group cannot come up.
    set_command(&mut cfg, "[\"sleep\", \"30\", \"{port}\"]");
    cfg.push_str("  [scaling_group.scale_to_zero]\n  idle = \"1m\"\n  wake_timeout = \"1s\"\n");
    let trellis = Trellis::start(&cfg, &[port]).await;
    let reply = get(&client::http1(), port, "/").await;
    reply.assert_trellis_error(503, "waking");
    // It did try: the group was woken.
    let g = wait_group(&trellis, "woken", |g| g["desired"] == 1).await;
    assert!(
        g["activities"].to_string().contains("a request is waiting"),
        "{g:#}"
    );
}
