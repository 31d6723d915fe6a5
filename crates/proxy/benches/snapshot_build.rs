//! How long building and swapping a routing snapshot takes for a large configuration.
//!
//! `cargo bench -p trellis-proxy --bench snapshot_build` (release profile). Sizes from the environment:
//! `SERVICES` (default 500) and `RULES` per service (default 4, i.e. 2000 rules in all); e.g.
//! `RULES=2000` for 500 × 2000 = one million rules. Not a test: it prints figures, it asserts nothing.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_config::{Config, HostPattern};
use trellis_proxy::Proxy;
use trellis_targets::TargetRegistry;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One service with `rules` rules (path prefixes, some with a method and a header), ten target groups;
/// then the service cloned under `services` host names.
fn config(services: usize, rules: usize) -> Config {
    let mut text = String::from(
        "[[service]]\nname = \"svc\"\nhosts = [\"svc.example\"]\n\
         [[service.listener]]\nname = \"http\"\nprotocol = \"http\"\nport = 8080\n\
         default_action = { forward = [{ target_group = \"g0\" }] }\n",
    );
    for r in 0..rules {
        let matcher = match r % 3 {
            0 => format!("{{ path = {{ prefix = \"/api/v{r}/\" }} }}"),
            1 => format!("{{ method = \"POST\", path = {{ exact = \"/orders/{r}\" }} }}"),
            _ => format!(
                "{{ path = {{ prefix = \"/r{r}\" }}, headers = [{{ name = \"x-tenant\", exact = \"t{r}\" }}] }}"
            ),
        };
        text.push_str(&format!(
            "[[service.listener.rule]]\nname = \"r{r}\"\npriority = {}\nmatch = {matcher}\n\
             action = {{ forward = [{{ target_group = \"g{}\", weight = 9 }}, {{ target_group = \"g{}\" }}] }}\n",
            r + 1,
            r % 10,
            (r + 1) % 10
        ));
    }
    for g in 0..10 {
        text.push_str(&format!(
            "[[target_group]]\nname = \"g{g}\"\ntargets = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n",
            10000 + 2 * g,
            10001 + 2 * g
        ));
    }
    let mut config = trellis_config::parse(&text, Path::new("bench.toml")).expect("valid");
    let template = config.services.remove(0);
    config.services = (0..services)
        .map(|i| {
            let mut s = template.clone();
            s.name = format!("svc{i}");
            s.hosts = vec![HostPattern::Exact(format!("svc{i}.example"))];
            s
        })
        .collect();
    config
}

fn main() {
    let (services, rules) = (env("SERVICES", 500), env("RULES", 4));
    let started = Instant::now();
    let config = config(services, rules);
    println!(
        "config: {services} services × {rules} rules = {} rules, 10 target groups (generated in {:?})",
        services * rules,
        started.elapsed()
    );
    // Replaced snapshots are freed by a runtime task, off the swapping thread.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    let config = Arc::new(config);
    let proxy = Proxy::new(
        config.clone(),
        Arc::new(TargetRegistry::default()),
        &prometheus::Registry::new(),
    )
    .expect("proxy");
    // From scratch: every group and every rule compiled (what start-up does).
    let mut build = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let fresh = Proxy::new(
            config.clone(),
            Arc::new(TargetRegistry::default()),
            &prometheus::Registry::new(),
        )
        .expect("proxy");
        build.push(t.elapsed());
        black_box(fresh);
    }
    report("full build (start-up)", &mut build);

    // A reload that changes one service and one group's targets: what an operator's edit or a target
    // registration costs.
    let mut reload = Vec::new();
    let mut swap = Vec::new();
    for round in 0..10 {
        let mut next = (*config).clone();
        next.services[round].listeners[0].rules[0].name = format!("changed{round}");
        next.target_groups[round % 10].targets[0].weight = 2 + round as u16;
        let next = Arc::new(next);
        let t = Instant::now();
        let snapshot = black_box(proxy.build(next).expect("build"));
        reload.push(t.elapsed());
        let t = Instant::now();
        proxy.swap(snapshot);
        swap.push(t.elapsed());
    }
    report("reload build (1 service, 1 group changed)", &mut reload);
    report("swap", &mut swap);
}

fn report(what: &str, times: &mut [Duration]) {
    times.sort();
    println!(
        "{what}: min {:?}  median {:?}  max {:?}  ({} runs)",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
        times.len()
    );
}
