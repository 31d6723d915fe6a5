//! Fleet mode: nodes take the shared configuration and registrations from a real etcd and serve them,
//! each on its own loopback address.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::etcd::Etcd;
use crate::support::trellis::bin;
use crate::support::{eventually, free_port, Echo, Trellis};

/// A node file: `[fleet]` with the cluster, the prefix, this node's name and address.
pub(crate) fn node_file(etcd: &Etcd, prefix: &str, node: &str, bind: &str) -> String {
    let endpoints: Vec<String> = etcd.endpoints.iter().map(|e| format!("{e:?}")).collect();
    format!(
        "[fleet]\nendpoints = [{}]\nprefix = {prefix:?}\nnode = {node:?}\nbind = {bind:?}\nlease_ttl = \"2s\"\n\n\
         [access_log]\ndestination = \"off\"\n",
        endpoints.join(", ")
    )
}

/// The fleet's configuration: one service on `port`, forwarding to `targets`.
fn shared(port: u16, targets: &[String]) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("{t:?}")).collect();
    format!(
        "[[service]]\nname = \"shop\"\nhosts = [\"*\"]\n\
         [[service.listener]]\nname = \"web\"\nprotocol = \"http\"\nport = {port}\n\
         default_action = {{ forward = [{{ target_group = \"web\" }}] }}\n\n\
         [[target_group]]\nname = \"web\"\ntargets = [{}]\n\
         [target_group.health_check]\nenabled = false\n",
        targets.join(", ")
    )
}

pub(crate) fn apply(
    etcd: &Etcd,
    prefix: &str,
    dir: &std::path::Path,
    name: &str,
    text: &str,
) -> std::process::Output {
    let file = dir.join(name);
    std::fs::write(&file, text).expect("write the fleet file");
    Command::new(bin())
        .args(["fleet", "apply"])
        .arg(&file)
        .args(["--endpoints", &etcd.endpoints_arg(), "--prefix", prefix])
        .output()
        .expect("run trellis fleet apply")
}

/// Applies `text` as shop.toml (it must be accepted), then waits until `ip:port` is served by `expect`.
async fn apply_and_serve(
    etcd: &Etcd,
    prefix: &str,
    dir: &std::path::Path,
    text: &str,
    ip: &str,
    port: u16,
    expect: &str,
) {
    let out = apply(etcd, prefix, dir, "shop.toml", text);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(
        Duration::from_secs(15),
        &format!("{ip} to be served by {expect}"),
        || async { (served_by(ip, port).await.as_deref() == Some(expect)).then_some(()) },
    )
    .await;
}

/// Who answers `GET /` on `ip:port` (`x-served-by`), if anything does.
pub(crate) async fn served_by(ip: &str, port: u16) -> Option<String> {
    let resp = reqwest::Client::new()
        .get(format!("http://{ip}:{port}/"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    resp.headers()
        .get("x-served-by")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[tokio::test]
async fn nodes_serve_what_is_applied_and_a_registration_on_one_is_served_by_all() {
    let Some(etcd) = Etcd::start(1).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = "/trellis/test";
    let port = free_port();
    let (a, b) = (Echo::start("a").await, Echo::start("b").await);
    // Both nodes start before anything is applied: they serve nothing yet, and wait.
    let node_a = Trellis::start(&node_file(&etcd, prefix, "node-a", "127.0.0.2"), &[]).await;
    let node_b = Trellis::start(&node_file(&etcd, prefix, "node-b", "127.0.0.3"), &[]).await;

    let started = Instant::now();
    let out = apply(
        &etcd,
        prefix,
        dir.path(),
        "shop.toml",
        &shared(port, &[a.addr()]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("at revision"));
    for ip in ["127.0.0.2", "127.0.0.3"] {
        eventually(
            Duration::from_secs(10),
            &format!("{ip} to serve the applied file"),
            || async { (served_by(ip, port).await.as_deref() == Some("a")).then_some(()) },
        )
        .await;
    }
    eprintln!("fleet apply to every node serving: {:?}", started.elapsed());

    // A bad file: every error with its line, exit 1, and nothing changes anywhere.
    let out = apply(
        &etcd,
        prefix,
        dir.path(),
        "bad.toml",
        "[[service]]\nnam = \"x\"\n\n[admin]\nlisten = \"127.0.0.1:1\"\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(errors.contains("bad.toml:2:"), "{errors}");
    assert!(errors.contains("bad.toml:4: admin"), "node-local: {errors}");
    for ip in ["127.0.0.2", "127.0.0.3"] {
        assert_eq!(served_by(ip, port).await.as_deref(), Some("a"));
    }

    // Registered through node A's admin API, served by node B within a second.
    let (status, body) = node_a
        .admin(
            reqwest::Method::POST,
            "/v1/target-groups/web/targets",
            Some(serde_json::json!({"address": b.addr()})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let registered = Instant::now();
    eventually(
        Duration::from_secs(5),
        "node B to serve the registered target",
        || async { (served_by("127.0.0.3", port).await.as_deref() == Some("b")).then_some(()) },
    )
    .await;
    let took = registered.elapsed();
    eprintln!("registration on A to B serving it: {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");

    // Both nodes are in the fleet, at the revision etcd is at; a killed one drops out with its lease.
    let status = || {
        let out = Command::new(bin())
            .args([
                "fleet",
                "status",
                "--json",
                "--endpoints",
                &etcd.endpoints_arg(),
                "--prefix",
                prefix,
            ])
            .output()
            .expect("run trellis fleet status");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON")
    };
    let fleet = eventually(
        Duration::from_secs(5),
        "both nodes at the current revision",
        || async {
            let fleet = status();
            let current = fleet["truth_revision"].as_i64()?;
            let nodes = fleet["nodes"].as_array()?;
            (nodes.len() == 2
                && nodes
                    .iter()
                    .all(|n| n["revision"].as_i64() >= Some(current)))
            .then_some(fleet)
        },
    )
    .await;
    assert_eq!(fleet["nodes"][0]["node"], "node-a");
    assert_eq!(fleet["config"]["name"], "shop.toml");
    assert_eq!(fleet["registrations"], 1);
    drop(node_b);
    eventually(
        Duration::from_secs(10),
        "the killed node to drop out",
        || async {
            let fleet = status();
            (fleet["nodes"].as_array()?.len() == 1).then_some(())
        },
    )
    .await;
}

/// The `fleet` part of a node's status.
pub(crate) async fn fleet_status(node: &Trellis) -> serde_json::Value {
    let (status, body) = node.admin(reqwest::Method::GET, "/v1/status", None).await;
    assert_eq!(status, 200);
    body["fleet"].clone()
}

#[tokio::test]
async fn without_etcd_a_node_keeps_serving_refuses_writes_quickly_and_recovers_by_itself() {
    let Some(mut etcd) = Etcd::start(1).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = "/trellis/outage";
    let port = free_port();
    let (a, b) = (Echo::start("a").await, Echo::start("b").await);
    let node = Trellis::start(&node_file(&etcd, prefix, "node-a", "127.0.0.4"), &[]).await;
    apply_and_serve(
        &etcd,
        prefix,
        dir.path(),
        &shared(port, &[a.addr()]),
        "127.0.0.4",
        port,
        "a",
    )
    .await;
    assert_eq!(fleet_status(&node).await["store"], "connected");

    etcd.stop();
    assert_eq!(
        served_by("127.0.0.4", port).await.as_deref(),
        Some("a"),
        "still serving"
    );
    let asked = Instant::now();
    let register = || {
        node.admin(
            reqwest::Method::POST,
            "/v1/target-groups/web/targets",
            Some(serde_json::json!({"address": b.addr()})),
        )
    };
    let (status, body) = register().await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("fleet store unavailable"),
        "{body}"
    );
    eprintln!(
        "admin write with etcd down: 503 after {:?}",
        asked.elapsed()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(fleet_status(&node).await["store"], "unavailable");
    assert_eq!(
        served_by("127.0.0.4", port).await.as_deref(),
        Some("a"),
        "nothing applied locally"
    );

    etcd.restart().await;
    eventually(
        Duration::from_secs(20),
        "the node to find etcd again",
        || async { (fleet_status(&node).await["store"] == "connected").then_some(()) },
    )
    .await;
    let (status, body) = register().await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn a_node_started_while_etcd_is_down_serves_its_disk_copy() {
    let Some(mut etcd) = Etcd::start(1).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let prefix = "/trellis/disk";
    let port = free_port();
    let a = Echo::start("a").await;
    let options = || crate::support::trellis::Options {
        state_dir: Some(state.clone()),
        ..Default::default()
    };
    let file = node_file(&etcd, prefix, "node-a", "127.0.0.5");
    let node = Trellis::start_with(&file, &[], options()).await;
    apply_and_serve(
        &etcd,
        prefix,
        dir.path(),
        &shared(port, &[a.addr()]),
        "127.0.0.5",
        port,
        "a",
    )
    .await;
    drop(node);
    etcd.stop();

    let node = Trellis::start_with(&file, &[], options()).await;
    eventually(
        Duration::from_secs(10),
        "the restarted node to serve its disk copy",
        || async { (served_by("127.0.0.5", port).await.as_deref() == Some("a")).then_some(()) },
    )
    .await;
    let fleet = fleet_status(&node).await;
    assert_eq!(fleet["stale"], true, "{fleet}");
    assert_eq!(fleet["store"], "unavailable", "{fleet}");

    // etcd back: the node reads the fleet again and is no longer stale.
    etcd.restart().await;
    eventually(
        Duration::from_secs(20),
        "the node to read etcd again",
        || async {
            let fleet = fleet_status(&node).await;
            (fleet["stale"] == false && fleet["store"] == "connected").then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_configuration_written_behind_trellis_s_back_that_is_invalid_is_refused_everywhere() {
    let Some(etcd) = Etcd::start(1).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = "/trellis/refused";
    let port = free_port();
    let a = Echo::start("a").await;
    let node = Trellis::start(&node_file(&etcd, prefix, "node-a", "127.0.0.6"), &[]).await;
    apply_and_serve(
        &etcd,
        prefix,
        dir.path(),
        &shared(port, &[a.addr()]),
        "127.0.0.6",
        port,
        "a",
    )
    .await;
    let good = fleet_status(&node).await["revision"].as_i64().unwrap();

    let invalid = serde_json::json!({"name": "hand.toml", "text": "[[service]]\nnam = 1\n"});
    etcd.put(&format!("{prefix}/config"), &invalid.to_string())
        .await;
    let fleet = eventually(
        Duration::from_secs(10),
        "the revision to be refused",
        || async {
            let fleet = fleet_status(&node).await;
            fleet["refused_revision"]
                .as_i64()
                .is_some()
                .then_some(fleet)
        },
    )
    .await;
    assert_eq!(
        fleet["revision"].as_i64(),
        Some(good),
        "the last good one stays"
    );
    assert_eq!(served_by("127.0.0.6", port).await.as_deref(), Some("a"));
    assert_eq!(
        node.metric("trellis_fleet_refused_revisions_total").await,
        Some(1.0)
    );
}

#[tokio::test]
async fn one_of_three_etcd_members_down_changes_nothing() {
    let Some(mut etcd) = Etcd::start(3).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = "/trellis/three";
    let port = free_port();
    let (a, b) = (Echo::start("a").await, Echo::start("b").await);
    let node = Trellis::start(&node_file(&etcd, prefix, "node-a", "127.0.0.7"), &[]).await;
    // The member the node and the CLI list first goes.
    etcd.kill(0);
    etcd.wait_healthy_after_kill().await;
    apply_and_serve(
        &etcd,
        prefix,
        dir.path(),
        &shared(port, &[a.addr()]),
        "127.0.0.7",
        port,
        "a",
    )
    .await;
    let (status, body) = node
        .admin(
            reqwest::Method::POST,
            "/v1/target-groups/web/targets",
            Some(serde_json::json!({"address": b.addr(), "weight": 1})),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // A second member gone: no quorum. The node keeps serving; writes fail fast and change nothing.
    etcd.kill(1);
    let asked = Instant::now();
    let (status, body) = node
        .admin(
            reqwest::Method::DELETE,
            &format!("/v1/target-groups/web/targets/{}", b.addr()),
            None,
        )
        .await;
    eprintln!(
        "admin write without quorum: {status} after {:?}",
        asked.elapsed()
    );
    assert_eq!(status, 503, "{body}");
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "{:?}",
        asked.elapsed()
    );
    assert!(
        served_by("127.0.0.7", port).await.is_some(),
        "still serving"
    );
}

#[tokio::test]
async fn a_node_that_fell_behind_a_compacted_history_loses_no_change() {
    let Some(etcd) = Etcd::start(1).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = "/trellis/compact";
    let port = free_port();
    let (a, b) = (Echo::start("a").await, Echo::start("b").await);
    let node = Trellis::start(&node_file(&etcd, prefix, "node-a", "127.0.0.8"), &[]).await;
    apply_and_serve(
        &etcd,
        prefix,
        dir.path(),
        &shared(port, &[a.addr()]),
        "127.0.0.8",
        port,
        "a",
    )
    .await;

    // The node is stopped while the fleet changes and its history is compacted away.
    node.signal(libc::SIGSTOP);
    let out = apply(
        &etcd,
        prefix,
        dir.path(),
        "shop.toml",
        &shared(port, &[b.addr()]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    etcd.put(&format!("{prefix}/unrelated"), "{}").await;
    etcd.compact(etcd.revision().await).await;
    node.signal(libc::SIGCONT);
    eventually(
        Duration::from_secs(10),
        "the node to serve the change it missed",
        || async { (served_by("127.0.0.8", port).await.as_deref() == Some("b")).then_some(()) },
    )
    .await;
}

pub(crate) fn fleet_cli(etcd: &Etcd, prefix: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .arg("fleet")
        .args(args)
        .args(["--endpoints", &etcd.endpoints_arg(), "--prefix", prefix])
        .output()
        .expect("run trellis fleet")
}

#[tokio::test]
async fn a_single_file_deployment_is_imported_whole_and_exported_back() {
    let Some(etcd) = Etcd::start(1).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = "/trellis/import";
    let port = free_port();
    let (a, b) = (Echo::start("a").await, Echo::start("b").await);
    let file = dir.path().join("shop.toml");
    let text = shared(port, &[a.addr()]);
    std::fs::write(&file, &text).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let registrations = serde_json::json!({"version": 1, "targets": [
        {"target_group": "web", "address": b.addr(), "weight": 3}
    ]});
    std::fs::write(state.join("registrations.json"), registrations.to_string()).unwrap();

    let file_arg = file.to_str().unwrap();
    let state_arg = state.to_str().unwrap();
    let out = fleet_cli(
        &etcd,
        prefix,
        &["import", file_arg, "--state-dir", state_arg],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 registered target"));
    // Only into an empty prefix.
    let again = fleet_cli(&etcd, prefix, &["import", file_arg]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a fleet"));

    // A node serves the file and the registered target.
    let _node = Trellis::start(&node_file(&etcd, prefix, "node-a", "127.0.0.9"), &[]).await;
    eventually(
        Duration::from_secs(10),
        "both targets to be served",
        || async {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..8 {
                seen.insert(served_by("127.0.0.9", port).await?);
            }
            (seen.len() == 2).then_some(())
        },
    )
    .await;

    let back = dir.path().join("back.toml");
    let back_state = dir.path().join("back-state");
    let out = fleet_cli(
        &etcd,
        prefix,
        &[
            "export",
            "--out",
            back.to_str().unwrap(),
            "--state-dir",
            back_state.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&back).unwrap(), text);
    let exported: serde_json::Value =
        serde_json::from_slice(&std::fs::read(back_state.join("registrations.json")).unwrap())
            .unwrap();
    assert_eq!(exported["targets"], registrations["targets"]);
}

#[tokio::test]
async fn a_reload_reads_the_node_file_again() {
    let Some(etcd) = Etcd::start(1).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = "/trellis/node-file";
    let port = free_port();
    let a = Echo::start("a").await;
    let file = node_file(&etcd, prefix, "node-a", "127.0.0.10");
    let node = Trellis::start(&file, &[]).await;
    apply_and_serve(
        &etcd,
        prefix,
        dir.path(),
        &shared(port, &[a.addr()]),
        "127.0.0.10",
        port,
        "a",
    )
    .await;

    // The node's own access log goes from off to a file: its own section, read at the reload.
    let log = dir.path().join("access.log");
    node.write_config(&file.replace(
        "destination = \"off\"",
        &format!("destination = {:?}", log.display().to_string()),
    ));
    let (status, body) = node.reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(served_by("127.0.0.10", port).await.as_deref(), Some("a"));
    eventually(
        Duration::from_secs(5),
        "a line in the node's new access log",
        || async {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains("\"responseCode\":200"))
                .map(drop)
        },
    )
    .await;
}

#[tokio::test]
async fn a_fleet_reaches_etcd_over_tls_with_client_certificates() {
    use crate::support::certs::TestCa;
    use crate::support::etcd::EtcdTls;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("etcd test CA");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let server = ca.issue(&["127.0.0.1"]);
    let client = ca.issue(&["node-a"]);
    let ca_file = ca.write(dir.path(), "ca.pem");
    let tls = EtcdTls {
        cert: write("server.pem", &server.cert_pem),
        key: write("server-key.pem", &server.key_pem),
        client_ca: ca_file.clone(),
    };
    write("client.pem", &client.cert_pem);
    write("client-key.pem", &client.key_pem);
    let Some(etcd) = Etcd::start_with(1, Some(&tls)).await else {
        return;
    };
    assert!(etcd.endpoints[0].starts_with("https://"));
    let prefix = "/trellis/tls";
    let port = free_port();
    let a = Echo::start("a").await;
    let path = |name: &str| dir.path().join(name).display().to_string();
    let node = format!(
        "[fleet]\nendpoints = [{:?}]\nprefix = {prefix:?}\nnode = \"node-a\"\nbind = \"127.0.0.12\"\n\
         lease_ttl = \"2s\"\nca = {:?}\ncert = {:?}\nkey = {:?}\n\n[access_log]\ndestination = \"off\"\n",
        etcd.endpoints[0],
        path("ca.pem"),
        path("client.pem"),
        path("client-key.pem"),
    );
    let node_a = Trellis::start(&node, &[]).await;

    let file = dir.path().join("shop.toml");
    std::fs::write(&file, shared(port, &[a.addr()])).unwrap();
    let tls_args = |with_client: bool| {
        let mut args = vec!["--ca".to_string(), ca_file.display().to_string()];
        if with_client {
            args.extend([
                "--cert".to_string(),
                dir.path().join("client.pem").display().to_string(),
                "--key".to_string(),
                dir.path().join("client-key.pem").display().to_string(),
            ]);
        }
        args
    };
    // Without a client certificate, etcd turns the CLI away.
    let out = Command::new(bin())
        .args(["fleet", "apply"])
        .arg(&file)
        .args(["--endpoints", &etcd.endpoints_arg(), "--prefix", prefix])
        .args(tls_args(false))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = Command::new(bin())
        .args(["fleet", "apply"])
        .arg(&file)
        .args(["--endpoints", &etcd.endpoints_arg(), "--prefix", prefix])
        .args(tls_args(true))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(
        Duration::from_secs(10),
        "the node to serve over a TLS store",
        || async { (served_by("127.0.0.12", port).await.as_deref() == Some("a")).then_some(()) },
    )
    .await;
    assert_eq!(fleet_status(&node_a).await["store"], "connected");
}

#[tokio::test]
async fn a_node_follows_a_new_cluster_whose_revisions_start_again() {
    let Some(mut etcd) = Etcd::start(1).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = "/trellis/reset";
    let port = free_port();
    let (a, b) = (Echo::start("a").await, Echo::start("b").await);
    let _node = Trellis::start(&node_file(&etcd, prefix, "node-a", "127.0.0.15"), &[]).await;
    // Push the old cluster's revision well past what the new one will have.
    for _ in 0..40 {
        etcd.put("/elsewhere/x", "1").await;
    }
    apply_and_serve(
        &etcd,
        prefix,
        dir.path(),
        &shared(port, &[a.addr()]),
        "127.0.0.15",
        port,
        "a",
    )
    .await;
    let old = etcd.revision().await;

    etcd.reset().await;
    assert!(etcd.revision().await < old, "a new cluster starts again");
    // The node has read the new, empty cluster before anything is applied to it, and is back in the
    // fleet's list of nodes (its old lease is unknown there: it takes a new one).
    let node = &_node;
    eventually(
        Duration::from_secs(10),
        "the node to read the new cluster",
        || async {
            let fleet = fleet_status(node).await;
            let read = fleet["revision"].as_i64().unwrap_or(i64::MAX);
            (fleet["store"] == "connected" && read < old).then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the node to be listed again",
        || async {
            let out = fleet_cli(&etcd, prefix, &["status", "--json"]);
            let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (status["nodes"][0]["node"] == "node-a").then_some(())
        },
    )
    .await;
    // Applied to the new cluster at a revision the node has seen before: it is served all the same.
    apply_and_serve(
        &etcd,
        prefix,
        dir.path(),
        &shared(port, &[b.addr()]),
        "127.0.0.15",
        port,
        "b",
    )
    .await;
}
