//! Fleet mode: nodes take the shared configuration and registrations from a real etcd and serve them,
//! each on its own loopback address.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::etcd::Etcd;
use crate::support::trellis::bin;
use crate::support::{eventually, free_port, Echo, Trellis};

/// A node file: `[fleet]` with the cluster, the prefix, this node's name and address.
fn node_file(etcd: &Etcd, prefix: &str, node: &str, bind: &str) -> String {
    let endpoints: Vec<String> = etcd.endpoints.iter().map(|e| format!("{e:?}")).collect();
    format!(
        "[fleet]\nendpoints = [{}]\nprefix = {prefix:?}\nnode = {node:?}\nbind = {bind:?}\n\n\
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

fn apply(
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

/// Who answers `GET /` on `ip:port` (`x-served-by`), if anything does.
async fn served_by(ip: &str, port: u16) -> Option<String> {
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
    drop(node_b);
}
