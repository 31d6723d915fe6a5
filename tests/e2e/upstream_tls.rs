//! `protocol = "https"` target groups: trellis reaches its targets over TLS, verifying their certificates
//! against the group's `ca` (or the system's roots) for its `sni` (or the target's IP), and speaks HTTP/2
//! over TLS when ALPN agrees on `h2`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::certs::{self_signed, TestCa};
use crate::support::client::{self, get, get_request, h2_connect, h2_send};
use crate::support::config::{
    forward_to, listener, quote, rule, service, target_group_with, targets,
};
use crate::support::process::ChildGuard;
use crate::support::servers::{tls_echo, TlsEcho};
use crate::support::trellis::{bin, check};
use crate::support::{eventually, free_port, Trellis};

const WAIT: Duration = Duration::from_secs(10);

/// One service on `port`: `rules`, else everything to the group `secure`; then `groups`.
fn config(port: u16, rules: &str, groups: &[String]) -> String {
    [
        service("tls", &["*"]),
        listener(port, &forward_to("secure")),
        rules.to_owned(),
        groups.concat(),
    ]
    .concat()
}

/// An `https` group named `name` over `backend`, with `keys` (`ca = ...`, `sni = ...`).
fn https_group(name: &str, backend: &TlsEcho, keys: &str) -> String {
    target_group_with(
        name,
        &targets(&[backend.addr()]),
        &format!("protocol = \"https\"\n{keys}"),
    )
}

fn ca_key(path: &Path) -> String {
    format!("ca = {}", quote(&path.display().to_string()))
}

#[tokio::test]
async fn a_target_signed_by_the_groups_ca_answers_over_http1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("test CA");
    let backend = tls_echo(&ca.issue(&["127.0.0.1"]), &["h2", "http/1.1"]).await;
    let port = free_port();
    let group = https_group("secure", &backend, &ca_key(&ca.write(dir.path(), "ca.pem")));
    let trellis = Trellis::start(&config(port, "", &[group]), &[port]).await;

    let reply = get(&client::http1(), port, "/").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // HTTP/1.1 offered alone by ALPN; verified against the IP address: no SNI sent.
    assert_eq!(reply.text(), "HTTP/1.1 alpn=http/1.1 sni=-");
    let again = get(&client::http1(), port, "/").await;
    assert_eq!(again.status, 200);
    assert_eq!(backend.handshakes(), 1, "the connection is kept and reused");

    let status = trellis.status().await;
    let tls = &status["target_groups"][0]["tls"];
    assert_eq!(tls["verify"], true, "{tls}");
    assert_eq!(tls["sni"], serde_json::Value::Null);
    assert!(
        tls["ca"].as_str().is_some_and(|ca| ca.ends_with("ca.pem")),
        "{tls}"
    );
}

#[tokio::test]
async fn http2_over_tls_negotiates_h2_and_trailers_pass_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("test CA");
    let backend = tls_echo(&ca.issue(&["127.0.0.1"]), &["h2", "http/1.1"]).await;
    let port = free_port();
    let group = https_group(
        "secure",
        &backend,
        &format!(
            "{}\nprotocol_version = \"grpc\"",
            ca_key(&ca.write(dir.path(), "ca.pem"))
        ),
    );
    let _trellis = Trellis::start(&config(port, "", &[group]), &[port]).await;

    let mut h2 = h2_connect(port).await;
    let uri = format!("http://127.0.0.1:{port}/pkg.Service/Method");
    let reply = h2_send(&mut h2, get_request(&uri, &[("te", "trailers")])).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "HTTP/2.0 alpn=h2 sni=-");
    let trailers = reply.trailers.as_ref().expect("trailers through trellis");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    assert_eq!(
        trailers.get("grpc-message").map(|v| v.as_bytes()),
        Some(&b"fine"[..])
    );
    // A second request shares the one HTTP/2 connection to the target.
    let reply = h2_send(&mut h2, get_request(&uri, &[])).await;
    assert_eq!(reply.status, 200);
    assert_eq!(backend.handshakes(), 1);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_a_connect_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, other) = (TestCa::new("test CA"), TestCa::new("another CA"));
    let backend = tls_echo(&ca.issue(&["127.0.0.1"]), &["http/1.1"]).await;
    let port = free_port();
    let group = https_group(
        "secure",
        &backend,
        &ca_key(&other.write(dir.path(), "other.pem")),
    );
    let trellis = Trellis::start(&config(port, "", &[group]), &[port]).await;

    let reply = get(&client::http1(), port, "/").await;
    reply.assert_trellis_error(502, "connect_failed");
    let errors = "trellis_target_connection_errors_total{target_group=\"secure\"}";
    assert_eq!(trellis.metric(errors).await, Some(1.0));
    get(&client::http1(), port, "/")
        .await
        .assert_trellis_error(502, "connect_failed");
    assert_eq!(trellis.metric(errors).await, Some(2.0));
}

#[tokio::test]
async fn sni_names_the_certificate_to_verify_else_the_ip_is_verified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("test CA");
    // A certificate for a DNS name only: no IP SAN.
    let backend = tls_echo(&ca.issue(&["backend.test"]), &["http/1.1"]).await;
    let port = free_port();
    let ca_file = ca_key(&ca.write(dir.path(), "ca.pem"));
    let by_name = https_group(
        "named",
        &backend,
        &format!("{ca_file}\nsni = \"backend.test\""),
    );
    let by_ip = https_group("secure", &backend, &ca_file);
    let named = rule(
        "named",
        10,
        "{ path = { prefix = \"/named\" } }",
        &forward_to("named"),
    );
    let trellis = Trellis::start(&config(port, &named, &[by_ip, by_name]), &[port]).await;

    let reply = get(&client::http1(), port, "/named").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "HTTP/1.1 alpn=http/1.1 sni=backend.test");
    get(&client::http1(), port, "/")
        .await
        .assert_trellis_error(502, "connect_failed");
    let status = trellis.status().await;
    let named = status["target_groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["name"] == "named")
        .expect("the named group");
    assert_eq!(named["tls"]["sni"], "backend.test");
}

/// How many times trellis has warned that `group` does not verify certificates.
fn unverified_warnings(trellis: &Trellis, group: &str) -> usize {
    let needle = format!("target group {group}: certificate verification is OFF");
    trellis.stderr().matches(&needle).count()
}

#[tokio::test]
async fn insecure_skip_verify_accepts_a_self_signed_certificate_and_says_so() {
    let backend = tls_echo(&self_signed(&["somewhere.else"]), &["http/1.1"]).await;
    let port = free_port();
    let group = https_group("secure", &backend, "insecure_skip_verify = true");
    let cfg = config(port, "", &[group]);
    let trellis = Trellis::start(&cfg, &[port]).await;

    let reply = get(&client::http1(), port, "/").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        unverified_warnings(&trellis, "secure"),
        1,
        "{}",
        trellis.stderr()
    );
    let tls = trellis.status().await["target_groups"][0]["tls"].clone();
    assert_eq!(tls["verify"], false, "{tls}");
    assert_eq!(tls["ca"], serde_json::Value::Null);

    // At every load.
    let (status, reply) = trellis.reload().await;
    assert_eq!(status, 200, "{reply}");
    eventually(WAIT, "the warning again after the reload", || async {
        (unverified_warnings(&trellis, "secure") == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_reload_replaces_the_connections_when_tls_settings_change_and_keeps_them_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, other) = (TestCa::new("test CA"), TestCa::new("another CA"));
    let backend = tls_echo(&ca.issue(&["127.0.0.1"]), &["http/1.1"]).await;
    let port = free_port();
    let ca_file = ca_key(&ca.write(dir.path(), "ca.pem"));
    let with =
        |keys: &str, rules: &str| config(port, rules, &[https_group("secure", &backend, keys)]);
    let trellis = Trellis::start(&with(&ca_file, ""), &[port]).await;
    let client = client::http1();
    assert_eq!(get(&client, port, "/").await.status, 200);
    assert_eq!(backend.handshakes(), 1);

    // Another change, the same TLS settings: the warm connection stays.
    let gone = rule(
        "gone",
        10,
        "{ path = { exact = \"/gone\" } }",
        &crate::support::config::fixed(410, "gone"),
    );
    trellis.write_config(&with(&ca_file, &gone));
    assert_eq!(trellis.reload().await.0, 200);
    assert_eq!(get(&client, port, "/gone").await.status, 410);
    assert_eq!(get(&client, port, "/").await.status, 200);
    assert_eq!(backend.handshakes(), 1, "the pool survived the reload");

    // The server name to verify changes (to the same IP, so it still verifies): new connections.
    let sni = format!("{ca_file}\nsni = \"127.0.0.1\"");
    trellis.write_config(&with(&sni, &gone));
    assert_eq!(trellis.reload().await.0, 200);
    assert_eq!(get(&client, port, "/").await.status, 200);
    assert_eq!(
        backend.handshakes(),
        2,
        "a new connection with the new settings"
    );

    // Another CA: the warm connection is not used; the new one does not verify.
    let wrong = ca_key(&other.write(dir.path(), "other.pem"));
    trellis.write_config(&with(&wrong, &gone));
    assert_eq!(trellis.reload().await.0, 200);
    get(&client, port, "/")
        .await
        .assert_trellis_error(502, "connect_failed");
    assert_eq!(backend.handshakes(), 2);
}

#[tokio::test]
async fn an_unusable_ca_file_fails_check_start_and_reload_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("test CA");
    let backend = tls_echo(&ca.issue(&["127.0.0.1"]), &["http/1.1"]).await;
    let port = free_port();
    let good = config(
        port,
        "",
        &[https_group(
            "secure",
            &backend,
            &ca_key(&ca.write(dir.path(), "ca.pem")),
        )],
    );
    let missing = dir.path().join("missing.pem");
    let not_pem = dir.path().join("notes.txt");
    std::fs::write(&not_pem, "no certificate here\n").expect("write");
    let broken = |file: &Path| config(port, "", &[https_group("secure", &backend, &ca_key(file))]);

    // check: exit 1, every problem with the file it is about.
    let path = dir.path().join("trellis.toml");
    std::fs::write(&path, broken(&missing)).expect("write config");
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expected = format!("target_group[0].ca: {}: cannot read: ", missing.display());
    assert!(stderr.contains(&expected), "{stderr}");
    std::fs::write(&path, broken(&not_pem)).expect("write config");
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expected = format!("{}: no PEM certificate in it", not_pem.display());
    assert!(stderr.contains(&expected), "{stderr}");
    std::fs::write(&path, &good).expect("write config");
    assert_eq!(check(&path).status.code(), Some(0));

    // run: refuses to start.
    std::fs::write(&path, broken(&missing)).expect("write config");
    let mut cmd = Command::new(bin());
    cmd.args(["run", "--workers", "1", "-c"])
        .arg(&path)
        .arg("--state-dir")
        .arg(dir.path().join("state"));
    let mut run = ChildGuard::spawn("trellis run", cmd);
    let status = run.wait_exit(WAIT).await.unwrap_or_else(|| {
        panic!(
            "trellis run started with an unreadable ca\n{}",
            run.report()
        )
    });
    assert_ne!(status.code(), Some(0), "{}", run.report());
    assert!(
        run.stderr.text().contains(&missing.display().to_string()),
        "{}",
        run.report()
    );

    // reload: refused with the file named; the running configuration stays.
    let trellis = Trellis::start(&good, &[port]).await;
    let sha = trellis.status().await["config"]["sha256"].clone();
    assert_eq!(get(&client::http1(), port, "/").await.status, 200);
    trellis.write_config(&broken(&missing));
    let (code, reply) = trellis.reload().await;
    assert_eq!(code, 422, "{reply}");
    let errors = reply["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{reply}");
    let error = errors[0].as_str().expect("text");
    assert!(
        error.contains("trellis.toml: target_group[0].ca: "),
        "{error}"
    );
    assert!(
        error.contains(&format!("{}: cannot read: ", missing.display())),
        "{error}"
    );
    assert_eq!(trellis.status().await["config"]["sha256"], sha);
    assert_eq!(get(&client::http1(), port, "/").await.status, 200);
    assert_eq!(
        trellis
            .metric("trellis_config_reloads_total{result=\"error\"}")
            .await,
        Some(1.0)
    );
}
