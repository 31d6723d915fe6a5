//! The image: the Dockerfile's runtime stage against the configuration it ships and the real binary.

use std::collections::BTreeSet;
use std::path::Path;

use toml_edit::DocumentMut;

use super::{
    admin_flag, assert_check_passes, assert_listeners_reachable_from_outside, listener_ports, load,
    repo, Image, Running, IMAGE_BIN, WAIT,
};
use crate::support::client::{get, http1};
use crate::support::dockerfile::CopyStep;

#[test]
fn image_config_passes_check_and_its_listeners_are_the_exposed_ports() {
    let image = Image::load();
    let config_path = image.context_file(&image.cmd_flag("--config"));
    assert_check_passes(&config_path);

    let config = load(&config_path);
    assert_listeners_reachable_from_outside(&config);
    let mut want = listener_ports(&config);
    // An admin API on the container's loopback cannot be reached through a published port: not exposed.
    if !config.admin.listen.ip().is_loopback() {
        want.insert(config.admin.listen.port());
    }
    let exposed: BTreeSet<u16> = image
        .runtime()
        .all("EXPOSE")
        .flat_map(|i| i.args.split_whitespace())
        .map(|p| {
            let port = p.strip_suffix("/tcp").unwrap_or(p);
            port.parse().unwrap_or_else(|_| panic!("EXPOSE {p}"))
        })
        .collect();
    assert_eq!(
        exposed,
        want,
        "EXPOSE vs the listeners of {}",
        config_path.display()
    );
}

#[test]
fn image_runs_the_built_trellis_as_non_root_with_a_state_dir_it_owns() {
    let image = Image::load();
    let runtime = image.runtime();

    // Non-root: the USER the stage ends with, else the base image's own (a `:nonroot` distroless tag).
    let user = match runtime.last("USER") {
        Some(user) => user.args.clone(),
        None if runtime.base.ends_with(":nonroot") => "65532:65532".to_owned(),
        None => panic!(
            "the runtime stage runs as root: no USER and base {}",
            runtime.base
        ),
    };
    let uid = user.split(':').next().unwrap_or_default();
    assert!(
        uid != "0" && uid != "root" && !uid.is_empty(),
        "USER {user}"
    );

    // ENTRYPOINT is the binary the builder stage built with the locked dependencies.
    assert_eq!(image.entrypoint, vec![IMAGE_BIN.to_owned()]);
    let workdir = runtime.workdir();
    let copies = runtime.copies();
    let binary: &CopyStep = copies
        .iter()
        .find(|c| {
            c.sources
                .iter()
                .any(|s| c.target_of(s, &workdir) == Path::new(IMAGE_BIN))
        })
        .unwrap_or_else(|| panic!("nothing is copied to {IMAGE_BIN}"));
    let builder = image.file.stage(
        binary
            .from
            .as_deref()
            .expect("the binary comes from a stage"),
    );
    let build = builder
        .all("RUN")
        .find(|r| r.args.contains("cargo build --release --locked -p trellis"))
        .expect("the builder runs cargo build --release --locked -p trellis");
    assert!(
        build.args.contains(&binary.sources[0]),
        "line {}: the build step does not install {} (what line {} copies)",
        build.line,
        binary.sources[0],
        binary.line
    );

    // The state directory exists in the image, owned by the user trellis runs as.
    let state_dir = image.cmd_flag("--state-dir");
    let state = copies
        .iter()
        .find(|c| {
            c.sources
                .iter()
                .any(|s| c.target_of(s, &workdir) == Path::new(&state_dir))
        })
        .unwrap_or_else(|| panic!("nothing creates the state directory {state_dir}"));
    assert_eq!(
        state.chown.as_deref(),
        Some(user.as_str()),
        "owner of {state_dir}"
    );

    let stop = runtime.last("STOPSIGNAL").map(|i| i.args.as_str());
    assert_eq!(stop, Some("SIGTERM"), "trellis drains on SIGTERM");

    // The healthcheck runs inside the container: the admin API on its loopback, at the config's port.
    assert_eq!(
        image.healthcheck.first().map(String::as_str),
        Some(IMAGE_BIN)
    );
    assert_eq!(
        image.healthcheck.get(1).map(String::as_str),
        Some("healthcheck")
    );
    let config = load(&image.context_file(&image.cmd_flag("--config")));
    let admin = admin_flag(&image.healthcheck);
    assert!(admin.ip().is_loopback(), "HEALTHCHECK --admin {admin}");
    assert_eq!(
        admin.port(),
        config.admin.listen.port(),
        "HEALTHCHECK port vs admin.listen"
    );

    // The license label says what the workspace says.
    let manifest: DocumentMut = std::fs::read_to_string(repo().join("Cargo.toml"))
        .expect("read Cargo.toml")
        .parse()
        .expect("Cargo.toml parses");
    let license = manifest["workspace"]["package"]["license"]
        .as_str()
        .expect("a license");
    let label = format!("org.opencontainers.image.licenses=\"{license}\"");
    assert!(
        runtime.all("LABEL").any(|l| l.args.contains(&label)),
        "no LABEL {label}"
    );
}

#[tokio::test]
async fn image_cmd_serves_the_shipped_config_and_stops_on_its_stop_signal() {
    let image = Image::load();
    let path = image.context_file(&image.cmd_flag("--config"));
    let config = load(&path);
    let text = std::fs::read_to_string(&path).expect("read the image's config");
    let mut trellis = Running::start(&image, &text).await;

    let listener = &config.services[0].listeners[0];
    let trellis_config::Action::FixedResponse(fixed) = &listener.default_action else {
        panic!("the image's default config answers with a fixed response");
    };
    let reply = get(&http1(), trellis.port(listener.port), "/").await;
    assert_eq!(reply.status, fixed.status, "{reply:?}");
    assert_eq!(Some(reply.text()), fixed.body, "{reply:?}");

    // STOPSIGNAL: trellis ends cleanly on it, well within the time `docker stop` gives it.
    assert_eq!(
        image.runtime().last("STOPSIGNAL").map(|i| i.args.as_str()),
        Some("SIGTERM")
    );
    trellis.child.signal(libc::SIGTERM);
    let status = trellis.child.wait_exit(WAIT).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit on SIGTERM: {status:?}\n{}",
        trellis.child.report()
    );
}
