//! The healthchecks of the image and of the compose services, run as docker runs them.

use std::net::SocketAddr;

use super::compose::{app_listen, compose_config_text, compose_dir, echo_addr, start_app};
use super::{exit_code, retarget, run_healthcheck, Image, Running, WAIT};
use crate::support::compose::Compose;

/// Needs `trellis healthcheck` (GET /healthz on `--admin`, exit 0 or 1). Docker reads 0 as healthy and 1 as
/// unhealthy; a clap usage error (2) would mean the image's command line is wrong.
#[tokio::test]
async fn healthchecks_of_the_image_and_the_compose_services_tell_up_from_down() {
    let image = Image::load();
    let path = image.context_file(&image.cmd_flag("--config"));
    let text = std::fs::read_to_string(&path).expect("read the image's config");
    let mut trellis = Running::start(&image, &text).await;
    let admin = SocketAddr::from(([127, 0, 0, 1], trellis.admin));
    let up = run_healthcheck(&image.healthcheck, admin).await;
    assert_eq!(exit_code("image HEALTHCHECK, trellis up", &up), Some(0));
    trellis.child.signal(libc::SIGTERM);
    assert!(
        trellis.child.wait_exit(WAIT).await.is_some(),
        "trellis did not stop"
    );
    let down = run_healthcheck(&image.healthcheck, admin).await;
    assert_eq!(exit_code("image HEALTHCHECK, trellis down", &down), Some(1));

    // The compose services' own healthchecks, against the app and the sidecar as compose runs them.
    let compose = Compose::read(&compose_dir().join("docker-compose.yml"));
    let (app, sidecar) = (compose.service("app"), compose.service("trellis"));
    let echo = start_app(app).await;
    let app_check = &app.healthcheck.as_ref().expect("app healthcheck").test;
    let up = run_healthcheck(app_check, SocketAddr::from(([127, 0, 0, 1], echo.port))).await;
    assert_eq!(exit_code("app healthcheck", &up), Some(0));

    let text = retarget(
        &compose_config_text(&image, sidecar),
        app_listen(app),
        echo_addr(&echo),
    );
    let trellis = Running::start(&image, &text).await;
    let check = &sidecar
        .healthcheck
        .as_ref()
        .expect("trellis healthcheck")
        .test;
    let admin = SocketAddr::from(([127, 0, 0, 1], trellis.admin));
    let up = run_healthcheck(check, admin).await;
    assert_eq!(exit_code("trellis service healthcheck", &up), Some(0));
}
