//! Warm pools: instances that take 3 s to boot are launched ahead, kept out of service once healthy,
//! and taken first by a scale-out, which is then in service in well under a boot; the pool refills, and
//! with `reuse_on_scale_in` a scale-in puts its instances back in the pool.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::scaling::{config, drop_policies, group, set_command, wait_group};
use crate::support::client::{self, get};
use crate::support::{free_port, Trellis};

/// A group of `trellis echo` instances that each sleep 3 s before they listen, with a warm pool.
fn slow_booting(port: u16, pool: &str) -> String {
    let mut cfg = config(port, 1, 3);
    drop_policies(&mut cfg);
    set_command(&mut cfg, "[\"sh\", \"-c\", \"sleep 3; exec \\\"$0\\\" echo --listen 127.0.0.1:$1 --name $2 --workers 1\", \"{self}\", \"{port}\", \"{id}\"]");
    cfg.push_str(&format!("  [scaling_group.warm_pool]\n{pool}"));
    cfg
}

fn ready(g: &Value) -> u64 {
    g["warm_pool"]["ready"].as_u64().unwrap_or(0)
}

fn warm_ids(g: &Value) -> Vec<String> {
    g["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["lifecycle"] == "warmed")
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect()
}

async fn set_desired(trellis: &Trellis, n: u64) {
    let (code, reply) = trellis
        .admin(
            reqwest::Method::PUT,
            "/v1/scaling-groups/web/desired",
            Some(json!({ "desired": n })),
        )
        .await;
    assert_eq!(code, 200, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scale_out_takes_warm_instances_in_well_under_a_boot_and_the_pool_refills() {
    let port = free_port();
    let trellis = Trellis::start(&slow_booting(port, "  size = 2\n"), &[port]).await;
    let g = wait_group(&trellis, "one in service and two warm", |g| {
        g["in_service"] == 1 && ready(g) == 2
    })
    .await;
    assert_eq!(g["warm_pool"]["warmed"], 2, "{g:#}");
    assert_eq!(
        trellis
            .metric("trellis_scaling_group_instances{scaling_group=\"web\",state=\"warmed\"}")
            .await,
        Some(2.0)
    );
    // Warm instances are out of service: only the one in service answers.
    let warm = warm_ids(&g);
    for _ in 0..4 {
        let by = get(&client::http1(), port, "/").await.served_by();
        assert!(!warm.contains(&by), "{by} is warm, yet served");
    }

    let asked = Instant::now();
    set_desired(&trellis, 3).await;
    let g = wait_group(&trellis, "three in service", |g| g["in_service"] == 3).await;
    let took = asked.elapsed();
    eprintln!("desired 1 -> 3 in service with a warm pool: {took:?}");
    assert!(
        took < Duration::from_millis(1500),
        "desired 1 -> 3 took {took:?} with a warm pool (a boot is 3 s)\n{g:#}"
    );
    let activities = g["activities"].to_string();
    for id in &warm {
        assert!(
            activities.contains(&format!(
                "instance {id} taken from the warm pool into service"
            )),
            "{activities}"
        );
    }
    // The new ones serve.
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..12 {
        served.insert(get(&client::http1(), port, "/").await.served_by());
    }
    assert!(warm.iter().all(|id| served.contains(id)), "{served:?}");

    // The pool refills with two new instances.
    let g = wait_group(&trellis, "the pool refilled", |g| ready(g) == 2).await;
    let refilled = warm_ids(&g);
    assert!(refilled.iter().all(|id| !warm.contains(id)), "{g:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_reuse_on_scale_in_a_scale_in_returns_its_instances_to_the_pool() {
    let port = free_port();
    let trellis = Trellis::start(
        &slow_booting(port, "  size = 1\n  reuse_on_scale_in = true\n"),
        &[port],
    )
    .await;
    wait_group(&trellis, "one in service and one warm", |g| {
        g["in_service"] == 1 && ready(g) == 1
    })
    .await;
    set_desired(&trellis, 2).await;
    let g = wait_group(&trellis, "two in service", |g| g["in_service"] == 2).await;
    let serving: Vec<String> = g["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["lifecycle"] == "in_service")
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect();
    // Back to one while the pool's new instance is still booting: the instance that leaves service
    // goes back to the pool, ready in a moment, and the booting one is let go.
    set_desired(&trellis, 1).await;
    let g = wait_group(&trellis, "a scaled-in instance back in the pool", |g| {
        g["in_service"] == 1 && ready(g) == 1 && warm_ids(g).iter().any(|id| serving.contains(id))
    })
    .await;
    let activities = g["activities"].to_string();
    assert!(
        activities.contains("drained and returned to the warm pool"),
        "{activities}"
    );
    let g = wait_group(&trellis, "the booting one let go", |g| {
        g["instances"].as_array().is_some_and(|i| i.len() == 2)
    })
    .await;
    assert_eq!(g["warm_pool"]["warmed"], 1, "{g:#}");
    assert_eq!(group(&trellis).await["in_service"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_warm_instance_that_never_passes_its_check_is_replaced() {
    let port = free_port();
    let mut cfg = config(port, 0, 2);
    drop_policies(&mut cfg);
    set_command(&mut cfg, "[\"sleep\", \"60\", \"{port}\"]");
    let cfg = cfg.replace(
        "health_check_grace_period = \"10s\"",
        "health_check_grace_period = \"1s\"",
    ) + "  [scaling_group.warm_pool]\n  size = 1\n";
    let trellis = Trellis::start(&cfg, &[port]).await;
    let g = wait_group(&trellis, "the first warm instance replaced", |g| {
        g["activities"]
            .to_string()
            .contains("did not pass its health check within 1s 400ms")
    })
    .await;
    assert_eq!(ready(&g), 0, "{g:#}");
    assert_eq!(g["in_service"], 0, "{g:#}");
    // The back-off holds the next try: a crash loop in the pool is no fork bomb either.
    assert!(g["launch_backoff"]["failures"].as_u64() >= Some(1), "{g:#}");
}
