//! Instance refresh on a single node, `process` instances of `trellis echo`: a reload that changes the
//! launch replaces every instance under load with no failed request, a launch that never becomes
//! healthy is rolled back (or fails) while the old instances serve, and the API and CLI drive it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::scaling::{config, drop_policies, group, set_command, wait_group};
use crate::support::client::{self, get};
use crate::support::{free_port, Trellis};

/// Two keep-alive clients sending requests until stopped: which instance served how many, and every
/// failure (status and body).
struct Load {
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
    served: Arc<Mutex<BTreeMap<String, usize>>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let served = Arc::new(Mutex::new(BTreeMap::new()));
        let clients = (0..2)
            .map(|_| {
                let (stop, failures, served) = (stop.clone(), failures.clone(), served.clone());
                tokio::spawn(async move {
                    let c = client::http1();
                    while !stop.load(Ordering::SeqCst) {
                        let reply = get(&c, port, "/").await;
                        if reply.status == 200 {
                            *served.lock().unwrap().entry(reply.served_by()).or_default() += 1;
                        } else {
                            failures.lock().unwrap().push(format!("{reply:?}"));
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            failures,
            served,
            clients,
        }
    }

    /// Stops the clients; returns (served by instance, failures).
    async fn stop(self) -> (BTreeMap<String, usize>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for c in self.clients {
            c.await.unwrap();
        }
        let served = self.served.lock().unwrap().clone();
        let failures = self.failures.lock().unwrap().clone();
        (served, failures)
    }
}

/// Samples, every 20 ms until stopped, how many targets of the group the proxy routes to as healthy
/// (the target group's view, not the scaler's count); (the fewest seen, samples taken).
fn fewest_healthy(trellis: &Trellis) -> (Arc<AtomicBool>, tokio::task::JoinHandle<(u64, u64)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let url = trellis.admin_url("/v1/status");
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let c = reqwest::Client::new();
            let (mut fewest, mut samples) = (u64::MAX, 0);
            while !stop.load(Ordering::SeqCst) {
                if let Ok(reply) = c.get(&url).send().await {
                    if let Ok(Ok(v)) = reply
                        .bytes()
                        .await
                        .map(|b| serde_json::from_slice::<Value>(&b))
                    {
                        if let Some(targets) = v["target_groups"][0]["targets"].as_array() {
                            let healthy =
                                targets.iter().filter(|t| t["state"] == "healthy").count();
                            fewest = fewest.min(healthy as u64);
                            samples += 1;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (fewest, samples)
        })
    };
    (stop, task)
}

fn without_policies(port: u16, min: u32, max: u32) -> String {
    let mut cfg = config(port, min, max);
    drop_policies(&mut cfg);
    cfg
}

/// `cfg` with its launch command replaced by `command`.
fn with_command(cfg: &str, command: &str) -> String {
    let mut out = cfg.to_string();
    set_command(&mut out, command);
    out
}

/// The echo command with instances named `{prefix}{id}`, so that a reply says which launch served it.
fn named(prefix: &str) -> String {
    format!(
        "[\"{{self}}\", \"echo\", \"--listen\", \"127.0.0.1:{{port}}\", \"--name\", \"{prefix}{{id}}\", \"--workers\", \"1\"]"
    )
}

fn refresh_status(g: &Value) -> &str {
    g["instance_refresh"]["status"].as_str().unwrap_or("")
}

fn done(g: &Value) -> bool {
    !matches!(refresh_status(g), "" | "pending" | "in_progress")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_that_changes_launch_replaces_every_instance_under_load_without_a_failed_request()
{
    let port = free_port();
    let cfg = without_policies(port, 2, 2);
    let trellis = Trellis::start(&cfg, &[port]).await;
    wait_group(&trellis, "two in service", |g| g["in_service"] == 2).await;

    let load = Load::start(port);
    let (stop_sampling, sampler) = fewest_healthy(&trellis);
    trellis.write_config(&with_command(&cfg, &named("v2-")));
    assert_eq!(trellis.reload().await.0, 200);
    let g = wait_group(&trellis, "the refresh to end", done).await;
    wait_group(&trellis, "the old instances stopped", |g| {
        g["instances"].as_array().is_some_and(|i| i.len() == 2)
    })
    .await;
    stop_sampling.store(true, Ordering::SeqCst);
    let (fewest, samples) = sampler.await.unwrap();
    assert!(samples > 10, "only {samples} samples of the target group");
    let (served, failures) = load.stop().await;

    assert_eq!(refresh_status(&g), "successful", "{g:#}");
    assert_eq!(g["instance_refresh"]["percentage_complete"], 100);
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    assert!(
        fewest >= 2,
        "healthy targets fell to {fewest} during the refresh"
    );
    let g = group(&trellis).await;
    for instance in g["instances"].as_array().unwrap() {
        assert_eq!(instance["generation"], 2, "{g:#}");
    }
    // Both launches served during the refresh; afterwards only the new one does.
    assert!(served.keys().any(|k| k.starts_with("web-")), "{served:?}");
    assert!(served.keys().any(|k| k.starts_with("v2-")), "{served:?}");
    for _ in 0..4 {
        assert!(get(&client::http1(), port, "/")
            .await
            .served_by()
            .starts_with("v2-"));
    }
    let activities = g["activities"].to_string();
    assert!(
        activities.contains("instance refresh 1 successful"),
        "{activities}"
    );
    assert!(
        activities.contains("instance refresh 1, replaced by launch generation 2"),
        "{activities}"
    );
    let (code, view) = trellis
        .admin(reqwest::Method::GET, "/v1/scaling-groups/web/refresh", None)
        .await;
    assert_eq!((code, view["status"].as_str()), (200, Some("successful")));

    // A change to how instances are stopped is not a new launch: nothing is replaced.
    let ids = |g: &Value| -> Vec<String> {
        g["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["id"].as_str().map(str::to_string))
            .collect()
    };
    let before = group(&trellis).await;
    let v2 = with_command(&cfg, &named("v2-"));
    trellis.write_config(&v2.replace("stop_timeout = \"2s\"", "stop_timeout = \"3s\""));
    assert_eq!(trellis.reload().await.0, 200);
    let g = wait_group(&trellis, "the settings taken", |g| {
        g["activities"]
            .to_string()
            .contains("no instance is replaced")
    })
    .await;
    assert_eq!(g["instance_refresh"]["id"], 1, "{g:#}");
    assert_eq!(g["launch_generation"], 2, "{g:#}");
    assert_eq!(ids(&g), ids(&before), "no instance replaced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_launch_that_never_becomes_healthy_is_rolled_back_or_fails_while_the_old_instances_serve()
{
    let port = free_port();
    // No grace: an instance that fails its checks is replaced at once, so the refresh sees its
    // failures quickly.
    let cfg = without_policies(port, 2, 2).replace(
        "health_check_grace_period = \"10s\"",
        "health_check_grace_period = \"0s\"",
    );
    let trellis = Trellis::start(&cfg, &[port]).await;
    wait_group(&trellis, "two in service", |g| g["in_service"] == 2).await;
    let load = Load::start(port);

    // Instances that never listen.
    let broken = with_command(&cfg, "[\"sleep\", \"60\", \"{port}\"]");
    trellis.write_config(&broken);
    assert_eq!(trellis.reload().await.0, 200);
    let g = wait_group(&trellis, "the refresh to end", done).await;
    assert_eq!(refresh_status(&g), "rolled_back", "{g:#}");
    assert!(
        g["instance_refresh"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("rolling back")),
        "{g:#}"
    );
    let g = wait_group(&trellis, "only the previous launch left", |g| {
        g["instances"]
            .as_array()
            .is_some_and(|i| i.len() == 2 && i.iter().all(|i| i["lifecycle"] == "in_service"))
    })
    .await;
    for instance in g["instances"].as_array().unwrap() {
        assert_eq!(instance["generation"], 1, "{g:#}");
    }

    // The same without auto_rollback: the refresh fails, and the old instances are still there.
    let broken = broken.replace("sleep\", \"60\"", "sleep\", \"61\"")
        + "  [scaling_group.instance_refresh]\n  auto_rollback = false\n";
    trellis.write_config(&broken);
    assert_eq!(trellis.reload().await.0, 200);
    let g = wait_group(&trellis, "the second refresh to end", |g| {
        g["instance_refresh"]["id"] == 2 && done(g)
    })
    .await;
    assert_eq!(refresh_status(&g), "failed", "{g:#}");
    let g = wait_group(&trellis, "the failed launch's instances gone", |g| {
        g["instances"]
            .as_array()
            .is_some_and(|i| i.iter().all(|i| i["lifecycle"] == "in_service"))
    })
    .await;
    let (served, failures) = load.stop().await;
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    assert!(
        served.keys().all(|k| k == "web-1" || k == "web-2"),
        "only the first two instances served: {served:?}\n{g:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_and_cli_start_follow_and_cancel_a_refresh_and_protected_instances_are_skipped() {
    let port = free_port();
    let trellis = Trellis::start(&without_policies(port, 2, 2), &[port]).await;
    wait_group(&trellis, "two in service", |g| g["in_service"] == 2).await;
    let api = |method: reqwest::Method, body: Option<Value>| {
        trellis.admin(method, "/v1/scaling-groups/web/refresh", body)
    };
    assert_eq!(api(reqwest::Method::GET, None).await.0, 404);
    assert_eq!(api(reqwest::Method::DELETE, None).await.0, 409);
    let (code, reply) = api(
        reqwest::Method::POST,
        Some(json!({"min_healthy_percent": 101})),
    )
    .await;
    assert_eq!(code, 400, "{reply}");
    let (code, reply) = api(reqwest::Method::POST, Some(json!({"max_healthy": 150}))).await;
    assert_eq!(code, 400, "{reply}");

    // A protected instance is skipped and reported.
    let (code, _) = trellis
        .admin(
            reqwest::Method::PUT,
            "/v1/scaling-groups/web/instances/web-1/protection",
            Some(json!({"protected": true})),
        )
        .await;
    assert_eq!(code, 200);
    let out = tokio::process::Command::new(crate::support::trellis::bin())
        .args(["refresh", "web", "--wait", "--timeout", "30s", "-c"])
        .arg(trellis.config_path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("web: refresh 1 "), "{stdout}");
    assert!(
        stdout.contains("successful, 100% (1 protected instance(s) skipped: web-1)"),
        "{stdout}"
    );
    let g = group(&trellis).await;
    assert_eq!(g["instance_refresh"]["skipped_protected"], json!(["web-1"]));
    let ids: Vec<&str> = g["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["lifecycle"] != "terminating")
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert!(ids.contains(&"web-1") && !ids.contains(&"web-2"), "{g:#}");

    // Start one, refuse a second, cancel it, refuse to cancel again.
    let (code, view) = api(reqwest::Method::POST, None).await;
    assert_eq!(code, 201, "{view}");
    assert_eq!(view["id"], 2);
    assert_eq!(api(reqwest::Method::POST, None).await.0, 409);
    let out = tokio::process::Command::new(crate::support::trellis::bin())
        .args(["refresh", "web", "--cancel", "-c"])
        .arg(trellis.config_path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("web: refresh 2 cancelled"), "{stdout}");
    let (code, reply) = api(reqwest::Method::DELETE, None).await;
    assert_eq!(code, 409, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_refresh_stops_its_instances_that_do_not_serve_yet_and_keeps_the_old_ones() {
    let port = free_port();
    let cfg = without_policies(port, 2, 2);
    let trellis = Trellis::start(&cfg, &[port]).await;
    wait_group(&trellis, "two in service", |g| g["in_service"] == 2).await;
    let load = Load::start(port);
    let (stop_sampling, sampler) = fewest_healthy(&trellis);

    // New instances that never listen, within the grace period: pending, neither failed nor serving.
    trellis.write_config(&with_command(&cfg, "[\"sleep\", \"60\", \"{port}\"]"));
    assert_eq!(trellis.reload().await.0, 200);
    wait_group(&trellis, "the refresh's two new instances pending", |g| {
        g["pending"] == 2
    })
    .await;
    let (code, view) = trellis
        .admin(
            reqwest::Method::DELETE,
            "/v1/scaling-groups/web/refresh",
            None,
        )
        .await;
    assert_eq!(
        (code, view["status"].as_str()),
        (200, Some("cancelled")),
        "{view}"
    );
    let g = wait_group(&trellis, "only the old instances left", |g| {
        g["instances"].as_array().is_some_and(|i| i.len() == 2)
    })
    .await;
    stop_sampling.store(true, Ordering::SeqCst);
    let (fewest, samples) = sampler.await.unwrap();
    let (served, failures) = load.stop().await;
    for instance in g["instances"].as_array().unwrap() {
        assert_eq!(instance["generation"], 1, "{g:#}");
        assert_eq!(instance["lifecycle"], "in_service", "{g:#}");
    }
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    assert!(
        samples > 5 && fewest >= 2,
        "healthy fell to {fewest} ({samples} samples)"
    );
    assert!(
        served.keys().all(|k| k == "web-1" || k == "web-2"),
        "{served:?}"
    );
    assert!(
        g["activities"]
            .to_string()
            .contains("cancelled by an operator"),
        "{g:#}"
    );
}
