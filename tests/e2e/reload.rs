//! Hot reload, target registration and draining, end to end: traffic keeps flowing while the routing
//! changes under it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::client::{self, get, served_sequence};
use crate::support::config::{
    admin_with_token, fixed, forward_to, listener, rule, service, target_group, targets,
    ADMIN_TOKEN,
};
use crate::support::servers::{upgrade_echo, Tracking};
use crate::support::{accepts, eventually, free_port, raw, Echo, Options, Trellis};

const WAIT: Duration = Duration::from_secs(10);

/// Layout X: `/` → blue, rule `/special` → a fixed 418, and a second listener on `extra` → green.
/// Layout Y: `/` → green, rule `/special` gone (falls to green), rule `/teapot` → 418, `extra` gone.
fn layouts(port: u16, extra: u16, blue: &str, green: &str) -> (String, String) {
    let groups = [
        target_group("blue", &targets(&[blue.to_owned()])),
        target_group("green", &targets(&[green.to_owned()])),
    ]
    .concat();
    let x = [
        service("web", &["*"]),
        listener(port, &forward_to("blue")),
        rule(
            "special",
            10,
            "{ path = { exact = \"/special\" } }",
            &fixed(418, "x"),
        ),
        listener_named("extra", extra, &forward_to("green")),
        groups.clone(),
    ]
    .concat();
    let y = [
        service("web", &["*"]),
        listener(port, &forward_to("green")),
        rule(
            "teapot",
            20,
            "{ path = { exact = \"/teapot\" } }",
            &fixed(418, "y"),
        ),
        groups,
    ]
    .concat();
    (x, y)
}

fn listener_named(name: &str, port: u16, default_action: &str) -> String {
    listener(port, default_action).replacen("name = \"web\"", &format!("name = \"{name}\""), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_reloads_under_continuous_traffic_fail_no_request() {
    let blue = Echo::start("blue").await;
    let green = Echo::start("green").await;
    let (port, extra) = (free_port(), free_port());
    let (x, y) = layouts(port, extra, &blue.addr(), &green.addr());
    let trellis = Trellis::start(&x, &[port, extra]).await;

    // Clients on keep-alive connections, sending without pause for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, sent) = (stop.clone(), sent.clone());
        clients.push(tokio::spawn(async move {
            let c = client::http1();
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let reply = c.get(client::url(port, "/")).send().await;
                match reply {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(format!("error: {e:?}")),
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
            failures
        }));
    }

    let c = client::http1();
    for i in 0..20 {
        let to_y = i % 2 == 0;
        trellis.write_config(if to_y { &y } else { &x });
        let before = sent.load(Ordering::SeqCst);
        let (status, reply) = trellis.reload().await;
        assert_eq!(status, 200, "reload {i}: {reply}");
        assert_eq!(reply["result"], "ok");
        // The new routing answers from the first request after the reload returns.
        let expected = if to_y { "green" } else { "blue" };
        assert_eq!(get(&c, port, "/").await.served_by(), expected, "reload {i}");
        let special = get(&c, port, "/special").await;
        let teapot = get(&c, port, "/teapot").await;
        if to_y {
            assert_eq!((special.status, teapot.status), (200, 418), "reload {i}");
            eventually(WAIT, "the removed listener to close", || async {
                (!accepts(extra).await).then_some(())
            })
            .await;
        } else {
            assert_eq!((special.status, teapot.status), (418, 200), "reload {i}");
            assert_eq!(get(&client::http1(), extra, "/").await.served_by(), "green");
        }
        // Traffic really was flowing across this reload.
        eventually(WAIT, "clients to keep sending", || {
            let now = sent.load(Ordering::SeqCst);
            async move { (now > before + 10).then_some(()) }
        })
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.expect("client"));
    }
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    assert!(sent.load(Ordering::SeqCst) > 200);
    let ok = trellis
        .metric("trellis_config_reloads_total{result=\"ok\"}")
        .await;
    assert_eq!(ok, Some(20.0));
    let status = trellis.status().await;
    assert_eq!(status["config"]["reloads"]["ok"], 20);
    assert_eq!(status["config"]["sha256"].as_str().map(str::len), Some(64));
}

#[tokio::test]
async fn a_broken_file_changes_nothing_and_every_error_names_its_line() {
    let blue = Echo::start("blue").await;
    let green = Echo::start("green").await;
    let (port, extra) = (free_port(), free_port());
    let (x, _) = layouts(port, extra, &blue.addr(), &green.addr());
    let trellis = Trellis::start(&x, &[port, extra]).await;
    let sha = trellis.status().await["config"]["sha256"].clone();

    // Two mistakes: a duplicate priority and a weight out of range.
    let special = rule(
        "special",
        10,
        "{ path = { exact = \"/special\" } }",
        &fixed(418, "x"),
    );
    let again = rule("again", 10, "{ method = \"GET\" }", &fixed(200, "dup"));
    let broken = x.replace(&special, &(special.clone() + &again))
        + "[[target_group]]\nname = \"heavy\"\ntargets = [{ address = \"127.0.0.1:1\", weight = 5000 }]\n";
    trellis.write_config(&broken);
    let (status, reply) = trellis.reload().await;
    assert_eq!(status, 422, "{reply}");
    let errors: Vec<&str> = reply["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors.iter().all(|e| e.contains("trellis.toml:")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains(".priority: 10 is already used")),
        "{errors:#?}"
    );
    assert!(errors.iter().any(|e| e.contains(".weight")), "{errors:#?}");

    // Still the old routing, old fingerprint; the failure is counted and logged.
    assert_eq!(get(&client::http1(), port, "/").await.served_by(), "blue");
    assert_eq!(get(&client::http1(), extra, "/").await.served_by(), "green");
    assert_eq!(trellis.status().await["config"]["sha256"], sha);
    let failed = trellis
        .metric("trellis_config_reloads_total{result=\"error\"}")
        .await;
    assert_eq!(failed, Some(1.0));
    assert!(trellis
        .stderr()
        .contains("still serving the previous configuration"));

    // SIGHUP with the same broken file: the same, and the daemon lives on.
    trellis.signal(libc::SIGHUP);
    eventually(WAIT, "the second failed reload", || async {
        let n = trellis
            .metric("trellis_config_reloads_total{result=\"error\"}")
            .await;
        (n == Some(2.0)).then_some(())
    })
    .await;
    assert_eq!(get(&client::http1(), port, "/").await.served_by(), "blue");
}

#[tokio::test]
async fn sighup_reloads_the_file() {
    let blue = Echo::start("blue").await;
    let green = Echo::start("green").await;
    let (port, extra) = (free_port(), free_port());
    let (x, y) = layouts(port, extra, &blue.addr(), &green.addr());
    let trellis = Trellis::start(&x, &[port, extra]).await;
    trellis.write_config(&y);
    trellis.signal(libc::SIGHUP);
    eventually(WAIT, "the new routing after SIGHUP", || async {
        (get(&client::http1(), port, "/").await.served_by() == "green").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_listener_whose_port_is_taken_fails_the_whole_reload() {
    let blue = Echo::start("blue").await;
    let green = Echo::start("green").await;
    let (port, extra) = (free_port(), free_port());
    let (x, y) = layouts(port, extra, &blue.addr(), &green.addr());
    let trellis = Trellis::start(&y, &[port]).await;
    // Someone else holds the port layout X wants for its extra listener.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", extra)).expect("bind squatter");
    trellis.write_config(&x);
    let (status, reply) = trellis.reload().await;
    assert_eq!(status, 500, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{extra}")),
        "{reply}"
    );
    // Nothing half-applied: the old routing (Y) in full.
    assert_eq!(get(&client::http1(), port, "/").await.served_by(), "green");
    assert_eq!(get(&client::http1(), port, "/teapot").await.status, 418);
    drop(squatter);
    let (status, _) = trellis.reload().await;
    assert_eq!(status, 200);
    assert_eq!(get(&client::http1(), port, "/").await.served_by(), "blue");
}

fn pool_config(port: u16, file_targets: &[String], delay: &str) -> String {
    [
        service("web", &["*"]),
        listener(port, &forward_to("pool")),
        target_group(
            "pool",
            &format!(
                "{}\nderegistration_delay = \"{delay}\"",
                targets(file_targets)
            ),
        ),
    ]
    .concat()
}

#[tokio::test]
async fn a_deregistered_target_finishes_its_slow_request_takes_no_new_one_then_goes() {
    let slow = Tracking::start("slow").await;
    let fast = Tracking::start("fast").await;
    let port = free_port();
    let trellis = Trellis::start(&pool_config(port, &[], "30s"), &[port]).await;

    let (status, reply) = trellis.register("pool", &slow.addr(), 1).await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(
        reply["state"], "unavailable",
        "checks are off in these tests: {reply}"
    );
    let c = client::http1();
    let in_flight = {
        let c = c.clone();
        tokio::spawn(async move { get(&c, port, "/?delay=1500").await })
    };
    eventually(WAIT, "the slow request to reach its target", || async {
        (slow.arrived() == 1).then_some(())
    })
    .await;

    assert_eq!(trellis.register("pool", &fast.addr(), 1).await.0, 201);
    let (status, reply) = trellis.deregister("pool", &slow.addr()).await;
    assert_eq!(status, 200, "{reply}");
    let t = trellis.target("pool", &slow.addr()).await;
    assert_eq!(t["state"], "draining", "{t:#}");
    assert_eq!(t["reason"], "deregistered through the admin API");
    assert_eq!(t["source"], "api", "{t:#}");
    assert!(t["drain_deadline_seconds"].as_f64().unwrap() > 20.0);

    let seq = served_sequence(&client::http1(), port, "/", 10).await;
    assert!(seq.iter().all(|s| s == "fast"), "{seq:?}");
    assert_eq!(
        slow.arrived(),
        1,
        "no new request reached the draining target"
    );

    let reply = in_flight.await.expect("slow request");
    assert_eq!((reply.status, reply.served_by().as_str()), (200, "slow"));
    eventually(WAIT, "the drained target to disappear", || async {
        (!trellis.group_targets("pool").await.contains(&slow.addr())).then_some(())
    })
    .await;
    assert_eq!(trellis.group_targets("pool").await, [fast.addr()]);
}

#[tokio::test]
async fn the_drain_deadline_closes_a_tunnel_still_open() {
    let ws = upgrade_echo().await;
    let port = free_port();
    let trellis = Trellis::start(&pool_config(port, &[], "300ms"), &[port]).await;
    assert_eq!(trellis.register("pool", &ws.addr(), 1).await.0, 201);

    let mut stream = raw::send(
        port,
        b"GET /ws HTTP/1.1\r\nHost: ws.internal\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    let (head, _) = raw::read_head(&mut stream).await;
    assert_eq!(raw::status_of(head.as_bytes()), 101, "{head}");
    stream.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping");

    let deregistered = Instant::now();
    assert_eq!(trellis.deregister("pool", &ws.addr()).await.0, 200);
    let (_, end, _) = raw::read_until_end(&mut stream, WAIT).await;
    let took = deregistered.elapsed();
    assert_ne!(end, raw::End::StillOpen, "the tunnel outlived the deadline");
    assert!(
        took >= Duration::from_millis(300),
        "closed before the deadline: {took:?}"
    );
    eventually(WAIT, "the target to disappear", || async {
        trellis.group_targets("pool").await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn registered_targets_survive_a_restart_and_a_corrupt_state_file_does_not_stop_one() {
    let echo = Echo::start("kept").await;
    let state = tempfile::tempdir().expect("state dir");
    let port = free_port();
    let config = pool_config(port, &[], "1s");
    let opts = || Options {
        state_dir: Some(state.path().to_path_buf()),
        ..Options::default()
    };

    let mut first = Trellis::start_with(&config, &[port], opts()).await;
    assert_eq!(first.register("pool", &echo.addr(), 7).await.0, 201);
    first.signal(libc::SIGTERM);
    first.wait_exit(WAIT).await;

    let second = Trellis::start_with(&config, &[port], opts()).await;
    let t = second.target("pool", &echo.addr()).await;
    assert_eq!(
        (t["source"].as_str(), t["weight"].as_u64()),
        (Some("api"), Some(7)),
        "{t:#}"
    );
    assert_eq!(get(&client::http1(), port, "/").await.served_by(), "kept");
    drop(second);

    std::fs::write(state.path().join("registrations.json"), b"{ not json").unwrap();
    let third = Trellis::start_with(&config, &[port], opts()).await;
    assert!(third.group_targets("pool").await.is_empty());
    assert!(
        third.stderr().contains("is not a registrations file"),
        "{}",
        third.stderr()
    );
    assert!(state.path().join("registrations.json.corrupt").exists());
}

#[tokio::test]
async fn the_api_refuses_what_it_does_not_own_and_says_why() {
    let echo = Echo::start("file").await;
    let port = free_port();
    let trellis = Trellis::start(&pool_config(port, &[echo.addr()], "1s"), &[port]).await;
    let (status, reply) = trellis.register("pool", &echo.addr(), 1).await;
    assert_eq!(status, 409, "{reply}");
    assert!(reply["error"]
        .as_str()
        .unwrap()
        .contains("configuration file"));
    let (status, _) = trellis.deregister("pool", &echo.addr()).await;
    assert_eq!(status, 409);
    let (status, reply) = trellis.register("nope", "127.0.0.1:1", 1).await;
    assert_eq!(status, 404, "{reply}");
    let (status, reply) = trellis.register("pool", "localhost:80", 1).await;
    assert_eq!(status, 400, "{reply}");
    let (status, _) = trellis.register("pool", "127.0.0.1:2", 1000).await;
    assert_eq!(status, 400);
    let (status, reply) = trellis
        .admin(reqwest::Method::PUT, "/v1/reload", None)
        .await;
    assert_eq!(status, 405, "{reply}");
    let (status, _) = trellis
        .admin(reqwest::Method::GET, "/v1/nothing", None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_token_file_makes_every_admin_request_need_the_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let admin_port = free_port();
    let port = free_port();
    let echo = Echo::start("a").await;
    let (admin_table, _) = admin_with_token(dir.path(), &format!("127.0.0.1:{admin_port}"));
    let config = admin_table + &pool_config(port, &[echo.addr()], "1s");
    let _trellis = Trellis::start(&config, &[port, admin_port]).await;
    let url = format!("http://127.0.0.1:{admin_port}/v1/status");
    let c = reqwest::Client::new();
    let status =
        |r: reqwest::RequestBuilder| async move { r.send().await.unwrap().status().as_u16() };
    assert_eq!(status(c.get(&url)).await, 401);
    assert_eq!(status(c.get(&url).bearer_auth("wrong")).await, 401);
    assert_eq!(status(c.get(&url).bearer_auth(ADMIN_TOKEN)).await, 200);
    let reload = || {
        c.post(format!("http://127.0.0.1:{admin_port}/v1/reload"))
            .header("content-type", "application/json")
    };
    assert_eq!(status(reload()).await, 401);
    assert_eq!(status(reload().bearer_auth(ADMIN_TOKEN)).await, 200);
}

/// The admin API moves only at restart: a reload that points `admin.listen` at loopback and drops the
/// token must not leave the API listening on every address without one.
#[tokio::test]
async fn a_reload_cannot_drop_the_token_of_an_admin_api_still_on_a_non_loopback_address() {
    let dir = tempfile::tempdir().unwrap();
    let (admin_port, port) = (free_port(), free_port());
    let echo = Echo::start("a").await;
    // Bound on 0.0.0.0; the test talks to it on 127.0.0.1 only.
    let (admin_table, _) = admin_with_token(dir.path(), &format!("0.0.0.0:{admin_port}"));
    let config = admin_table + &pool_config(port, &[echo.addr()], "1s");
    let trellis = Trellis::start(&config, &[port, admin_port]).await;
    trellis.write_config(&format!(
        "[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\n{}",
        pool_config(port, &[echo.addr()], "1s")
    ));
    let c = reqwest::Client::new();
    let reply = c
        .post(format!("http://127.0.0.1:{admin_port}/v1/reload"))
        .header("content-type", "application/json")
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 422);
    let body = reply.text().await.unwrap();
    assert!(
        body.contains("admin.token_file") && body.contains("until trellis restarts"),
        "{body}"
    );
    let url = format!("http://127.0.0.1:{admin_port}/v1/status");
    assert_eq!(c.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(
        c.get(&url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_removed_listener_finishes_the_request_in_flight_on_it() {
    let slow = Tracking::start("slow").await;
    let green = Echo::start("green").await;
    let (port, extra) = (free_port(), free_port());
    let (x, y) = layouts(port, extra, &green.addr(), &green.addr());
    // Layout X's extra listener forwards to the slow backend.
    let x = x.replacen(
        &target_group("green", &targets(&[green.addr()])),
        &target_group("green", &targets(&[slow.addr()])),
        1,
    );
    let trellis = Trellis::start(&x, &[port, extra]).await;
    let in_flight = tokio::spawn(async move { get(&client::http1(), extra, "/?delay=800").await });
    eventually(WAIT, "the request to reach the backend", || async {
        (slow.arrived() == 1).then_some(())
    })
    .await;
    trellis.write_config(&y);
    assert_eq!(trellis.reload().await.0, 200);
    eventually(WAIT, "the removed listener to stop accepting", || async {
        (!accepts(extra).await).then_some(())
    })
    .await;
    let reply = in_flight.await.expect("request task");
    assert_eq!((reply.status, reply.served_by().as_str()), (200, "slow"));
}

/// `config.loaded_at` and `config.changed_at` of `/v1/status`.
async fn load_and_change_times(trellis: &Trellis) -> (SystemTime, SystemTime) {
    let status = trellis.status().await;
    let at = |key: &str| {
        let text = status["config"][key]
            .as_str()
            .unwrap_or_else(|| panic!("no config.{key} in {:#}", status["config"]));
        humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("config.{key} {text:?}: {e}"))
    };
    (at("loaded_at"), at("changed_at"))
}

/// Waits until the wall clock has left `at`'s millisecond (the status's resolution), so that whatever is
/// stamped from now on shows as later than `at`.
async fn clock_past(at: SystemTime) {
    let next = at + Duration::from_millis(1);
    let deadline = Instant::now() + WAIT;
    while let Ok(left) = next.duration_since(SystemTime::now()) {
        assert!(Instant::now() < deadline, "the clock did not pass {at:?}");
        tokio::time::sleep(left).await;
    }
}

#[tokio::test]
async fn loaded_at_is_when_the_file_was_loaded_and_changed_at_when_the_targets_changed() {
    let (file, api) = (Echo::start("file").await, Echo::start("api").await);
    let port = free_port();
    let config = service("web", &["*"])
        + &listener(port, &forward_to("pool"))
        + &target_group("pool", &targets(&[file.addr()]));
    let trellis = Trellis::start(&config, &[port]).await;
    let (loaded, changed) = load_and_change_times(&trellis).await;
    assert_eq!(
        loaded, changed,
        "both are the start until something changes"
    );

    // A registration changes the targets, not the configuration's load time.
    clock_past(changed).await;
    let (status, reply) = trellis.register("pool", &api.addr(), 2).await;
    assert_eq!(status, 201, "{reply}");
    let (loaded_now, registered) = load_and_change_times(&trellis).await;
    assert_eq!(loaded_now, loaded, "a registration moved loaded_at");
    assert!(
        registered > changed,
        "changed_at did not move on a registration"
    );

    // Registering it again as it is changes nothing.
    clock_past(registered).await;
    let (status, reply) = trellis.register("pool", &api.addr(), 2).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        load_and_change_times(&trellis).await,
        (loaded, registered),
        "a registration that changes nothing moved a time"
    );

    let (status, reply) = trellis.deregister("pool", &api.addr()).await;
    assert_eq!(status, 200, "{reply}");
    let (loaded_now, deregistered) = load_and_change_times(&trellis).await;
    assert_eq!(loaded_now, loaded, "a deregistration moved loaded_at");
    assert!(
        deregistered > registered,
        "changed_at did not move on a deregistration"
    );

    // A reload loads the file again; the targets stay as they were.
    clock_past(deregistered).await;
    let (status, reply) = trellis.reload().await;
    assert_eq!(status, 200, "{reply}");
    let (reloaded, changed_now) = load_and_change_times(&trellis).await;
    assert!(reloaded > loaded, "loaded_at did not move on a reload");
    assert_eq!(
        changed_now, deregistered,
        "a reload that changed no target moved changed_at"
    );
}
