//! deploy/compose: trellis as the sidecar of an app, checked statically and then run on loopback.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use toml_edit::{value, DocumentMut, Value};

use super::{
    admin_flag, assert_check_passes, assert_listeners_reachable_from_outside, flag_value,
    listener_ports, load, replace_flag, repo, retarget, Image, Running, SHUTDOWN_GRACE, WAIT,
};
use crate::support::client::{get, http1};
use crate::support::compose::{host_path, Compose, Service};
use crate::support::{eventually, Echo};

pub(super) fn compose_dir() -> PathBuf {
    repo().join("deploy/compose")
}

/// The `--listen` of the app's command: where trellis's targets must point.
pub(super) fn app_listen(app: &Service) -> SocketAddr {
    let command = app.command.as_ref().expect("the app has a command");
    let listen = flag_value(command, "--listen").expect("the app's command has --listen");
    listen.parse().expect("--listen is IP:PORT")
}

/// The app's command (`echo ... --listen ADDR ...`) run by the real binary on a kernel-chosen port.
pub(super) async fn start_app(app: &Service) -> Echo {
    let mut command = app.command.clone().expect("the app has a command");
    replace_flag(&mut command, "--listen", "127.0.0.1:0");
    Echo::start_args("compose app", &command).await
}

pub(super) fn echo_addr(echo: &Echo) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], echo.port))
}

/// The host file the trellis service sees at the image's `--config` path, through its bind mounts.
pub(super) fn compose_config_path(image: &Image, sidecar: &Service) -> PathBuf {
    let in_container = PathBuf::from(image.cmd_flag("--config"));
    sidecar
        .mounts()
        .into_iter()
        .filter(|m| m.is_bind())
        .find_map(|m| {
            let rest = in_container.strip_prefix(&m.target).ok()?;
            assert!(m.read_only, "{} is mounted read-write", m.target);
            Some(host_path(&compose_dir(), &m.source).join(rest))
        })
        .unwrap_or_else(|| panic!("no bind mount provides {}", in_container.display()))
}

pub(super) fn compose_config_text(image: &Image, sidecar: &Service) -> String {
    std::fs::read_to_string(compose_config_path(image, sidecar)).expect("read the compose config")
}

#[test]
fn compose_runs_trellis_as_the_sidecar_of_the_app() {
    let image = Image::load();
    let compose = Compose::read(&compose_dir().join("docker-compose.yml"));
    let (app, sidecar) = (compose.service("app"), compose.service("trellis"));

    // One image, built from the Dockerfile these tests check, runs both.
    let build = app
        .build
        .as_ref()
        .expect("the app service builds the image");
    assert_eq!(
        host_path(&compose_dir(), &build.context)
            .canonicalize()
            .ok(),
        Some(repo())
    );
    assert_eq!(build.dockerfile, "deploy/docker/Dockerfile");
    assert!(
        app.image.is_some() && sidecar.image == app.image,
        "both run the built image"
    );
    assert!(sidecar.build.is_none(), "built once, by the app service");
    assert_eq!(
        sidecar.command, None,
        "the sidecar runs the image's CMD, whose paths are mapped here"
    );

    // The shared network namespace, started after the app is healthy.
    assert_eq!(sidecar.network_mode.as_deref(), Some("service:app"));
    let depends = sidecar
        .depends_on
        .get("app")
        .expect("trellis depends on app");
    assert_eq!(depends.condition, "service_healthy");
    for (name, service) in &compose.services {
        let restart = service.restart.as_deref().unwrap_or("no");
        assert_ne!(restart, "no", "service {name} is not restarted");
    }
    let grace = sidecar
        .stop_grace_period
        .as_deref()
        .expect("trellis has a stop_grace_period");
    let grace = humantime::parse_duration(grace).expect("stop_grace_period is a duration");
    assert!(
        grace > SHUTDOWN_GRACE,
        "stop_grace_period {grace:?} cuts trellis's drain short"
    );

    // Every trellis.toml any service mounts passes the real check; the sidecar's is the one CMD reads.
    let mut checked = 0;
    for service in compose.services.values() {
        for mount in service.mounts().into_iter().filter(|m| m.is_bind()) {
            let host = host_path(&compose_dir(), &mount.source);
            let file = if host.is_dir() {
                host.join("trellis.toml")
            } else {
                host
            };
            if file.file_name().is_some_and(|n| n == "trellis.toml") && file.exists() {
                assert_check_passes(&file);
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "no trellis.toml is mounted");
    let config = load(&compose_config_path(&image, sidecar));

    // The state directory is a volume at the path CMD names (and survives a recreated container).
    let state = image.cmd_flag("--state-dir");
    let mounts = sidecar.mounts();
    let volume = mounts
        .iter()
        .find(|m| m.target == state)
        .expect("a volume at the state dir");
    assert!(
        !volume.is_bind() && compose.volumes.contains_key(&volume.source),
        "{volume:?}"
    );

    // Published on the app (it owns the namespace): exactly trellis's listeners, not the app's port or the
    // admin API.
    assert!(
        sidecar.ports.is_empty(),
        "a service in another's namespace cannot publish ports"
    );
    assert_listeners_reachable_from_outside(&config);
    let published: BTreeSet<u16> = app.published_container_ports().into_iter().collect();
    assert_eq!(
        published,
        listener_ports(&config),
        "published ports vs trellis's listeners"
    );

    // Every target is the app, on the loopback they share.
    let listen = app_listen(app);
    assert!(
        listen.ip().is_loopback(),
        "the app listens on {listen}, not only behind trellis"
    );
    let targets: Vec<SocketAddr> = config
        .target_groups
        .iter()
        .flat_map(|g| g.targets.iter().map(|t| t.address))
        .collect();
    assert!(
        !targets.is_empty() && targets.iter().all(|t| *t == listen),
        "targets {targets:?} vs {listen}"
    );

    // Both healthchecks are the image's binary asking the right address.
    let sidecar_check = &sidecar
        .healthcheck
        .as_ref()
        .expect("trellis healthcheck")
        .test;
    let mut want: Vec<String> = vec!["CMD".to_owned()];
    want.extend(image.healthcheck.iter().cloned());
    assert_eq!(
        sidecar_check, &want,
        "the trellis service checks as the image does"
    );
    assert_eq!(admin_flag(sidecar_check), config.admin.listen);
    let app_check = &app.healthcheck.as_ref().expect("app healthcheck").test;
    assert_eq!(app_check.get(..3), Some(&want[..3]), "{app_check:?}");
    assert_eq!(
        admin_flag(app_check),
        listen,
        "the app's healthcheck asks the app"
    );
}

#[tokio::test]
async fn compose_topology_routes_through_trellis_to_the_app_on_loopback() {
    let image = Image::load();
    let compose = Compose::read(&compose_dir().join("docker-compose.yml"));
    let (app, sidecar) = (compose.service("app"), compose.service("trellis"));
    let echo = start_app(app).await;
    let text = retarget(
        &compose_config_text(&image, sidecar),
        app_listen(app),
        echo_addr(&echo),
    );
    let trellis = Running::start(&image, &text).await;
    let config = load(&compose_config_path(&image, sidecar));
    let port = trellis.port(config.services[0].listeners[0].port);

    let name = flag_value(app.command.as_deref().unwrap_or_default(), "--name").expect("--name");
    let client = http1();
    let reply = get(&client, port, "/orders?id=7").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.served_by(), name, "answered by the app");
    assert!(
        reply.header("x-trellis-error").is_none(),
        "trellis answered itself: {reply:?}"
    );

    // The target group's health check reaches the app's /healthz.
    let status_url = format!("http://127.0.0.1:{}/v1/status", trellis.admin);
    let target = echo_addr(&echo).to_string();
    eventually(WAIT, "the app's target to turn healthy", || {
        let (client, url, target) = (client.clone(), status_url.clone(), target.clone());
        async move {
            let body = client.get(&url).send().await.ok()?.bytes().await.ok()?;
            let status: serde_json::Value = serde_json::from_slice(&body).ok()?;
            let groups = status["target_groups"].as_array()?;
            let entries: Vec<&serde_json::Value> = groups
                .iter()
                .flat_map(|g| g["targets"].as_array().into_iter().flatten())
                .filter(|t| t["address"] == target.as_str())
                .collect();
            assert!(
                !entries.is_empty(),
                "{target} is not in /v1/status: {status:#}"
            );
            entries
                .iter()
                .all(|t| t["state"] == "healthy")
                .then_some(())
        }
    })
    .await;

    // The README's reload, `docker compose kill -s HUP trellis`: SIGHUP re-reads the mounted file.
    let mut doc: DocumentMut = std::fs::read_to_string(&trellis.config)
        .expect("read")
        .parse()
        .expect("parse");
    doc["service"][0]["listener"][0]["default_action"] =
        value(toml_edit::InlineTable::from_iter([(
            "fixed_response",
            Value::from(toml_edit::InlineTable::from_iter([
                ("status", Value::from(299_i64)),
                ("body", Value::from("reloaded")),
            ])),
        )]));
    std::fs::write(&trellis.config, doc.to_string()).expect("write config");
    trellis.child.signal(libc::SIGHUP);
    eventually(WAIT, "the reloaded configuration to answer", || {
        let client = client.clone();
        async move { (get(&client, port, "/").await.status == 299).then_some(()) }
    })
    .await;
}
