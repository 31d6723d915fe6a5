//! The admin API's defences against browsers, against the real binary: a web page can send a
//! `text/plain` or form POST without a CORS preflight, and can rebind its own DNS name to 127.0.0.1, so
//! writes must be JSON, a foreign `Origin` (or `Sec-Fetch-Site`) is refused, and without a token only a
//! loopback `Host` is served. Also: `405` says what is allowed, and the `Bearer` scheme is
//! case-insensitive.

use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::scaling::drop_policies;
use crate::support::config::{
    admin_with_token, forward_to, listener, service, target_group, targets, ADMIN_TOKEN,
};
use crate::support::{free_port, raw, Echo, Trellis};

const JSON: &str = "application/json";

/// One listener on `port` forwarding to group `pool` with `file_targets` (health checks off).
fn pool(port: u16, file_targets: &[String]) -> String {
    service("web", &["*"])
        + &listener(port, &forward_to("pool"))
        + &target_group("pool", &targets(file_targets))
}

/// One request to the admin API on 127.0.0.1:`admin` with these headers and body: (status, headers,
/// JSON body or the text as a JSON string).
async fn send(
    admin: u16,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = reqwest::Client::new()
        .request(method.clone(), format!("http://127.0.0.1:{admin}{path}"))
        .body(body.to_owned());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = resp.bytes().await.expect("admin API body");
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, headers, value)
}

/// The error message of a reply, asserting the reply is the admin API's JSON error.
fn message<'a>(headers: &HeaderMap, body: &'a Value) -> &'a str {
    assert_eq!(headers[CONTENT_TYPE], JSON, "{body}");
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body}"))
}

#[tokio::test]
async fn writes_that_are_not_json_are_415_and_change_nothing() {
    let echo = Echo::start("file").await;
    let port = free_port();
    let trellis = Trellis::start(&pool(port, &[echo.addr()]), &[port]).await;
    let admin = trellis.admin_port.unwrap();
    let before = trellis.status().await["config"].clone();

    // A changed file that a reload would pick up.
    trellis.write_config(&(pool(port, &[echo.addr()]) + "\n# changed\n"));
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let headers: Vec<(&str, &str)> = content_type
            .map(|t| ("content-type", t))
            .into_iter()
            .collect();
        let (status, h, body) = send(admin, Method::POST, "/v1/reload", &headers, "").await;
        assert_eq!(status, 415, "{content_type:?}: {body}");
        assert!(
            message(&h, &body).contains("Content-Type: application/json"),
            "{body}"
        );
        assert_eq!(h["accept"], JSON);
    }
    // The file was not reloaded: same hash, no reload counted.
    assert_eq!(trellis.status().await["config"], before);

    // What a cross-site <form> (or a text/plain fetch) can send, and a JSON body mislabelled.
    let register = "/v1/target-groups/pool/targets";
    for (content_type, body) in [
        (
            "application/x-www-form-urlencoded",
            "address=127.0.0.1:9&weight=1",
        ),
        ("multipart/form-data; boundary=x", "--x\r\n\r\n--x--\r\n"),
        ("text/plain", r#"{"address":"127.0.0.1:9","weight":1}"#),
    ] {
        let (status, h, reply) = send(
            admin,
            Method::POST,
            register,
            &[("content-type", content_type)],
            body,
        )
        .await;
        assert_eq!(status, 415, "{content_type}: {reply}");
        message(&h, &reply);
    }
    assert_eq!(trellis.group_targets("pool").await, vec![echo.addr()]);

    // The same request as JSON (any case, with a charset) goes through.
    let (status, _, reply) = send(
        admin,
        Method::POST,
        register,
        &[("content-type", "Application/JSON; charset=utf-8")],
        r#"{"address":"127.0.0.1:9","weight":1}"#,
    )
    .await;
    assert_eq!(status, 201, "{reply}");
    // A DELETE is a write too, body or not.
    let target = "/v1/target-groups/pool/targets/127.0.0.1:9";
    let (status, _, reply) = send(admin, Method::DELETE, target, &[], "").await;
    assert_eq!(status, 415, "{reply}");
    assert_eq!(trellis.target("pool", "127.0.0.1:9").await["source"], "api");
    let (status, _, reply) =
        send(admin, Method::DELETE, target, &[("content-type", JSON)], "").await;
    assert_eq!(status, 200, "{reply}");

    // A reload as JSON, without a body, works.
    let (status, _, reply) = send(
        admin,
        Method::POST,
        "/v1/reload",
        &[("content-type", JSON)],
        "",
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_ne!(trellis.status().await["config"]["sha256"], before["sha256"]);
}

#[tokio::test]
async fn a_scaling_group_is_not_resized_by_a_put_that_is_not_json() {
    let port = free_port();
    let mut cfg = crate::scaling::config(port, 0, 3);
    // No policy, no instance: only the operator could move desired here.
    drop_policies(&mut cfg);
    let trellis = Trellis::start(&cfg, &[port]).await;
    let admin = trellis.admin_port.unwrap();
    let desired = "/v1/scaling-groups/web/desired";
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let (status, _, reply) = send(
            admin,
            Method::PUT,
            desired,
            &[("content-type", content_type)],
            r#"{"desired": 2}"#,
        )
        .await;
        assert_eq!(status, 415, "{reply}");
    }
    // JSON, but from another site.
    let (status, _, reply) = send(
        admin,
        Method::PUT,
        desired,
        &[("content-type", JSON), ("origin", "http://evil.example")],
        r#"{"desired": 2}"#,
    )
    .await;
    assert_eq!(status, 403, "{reply}");
    let group = trellis.status().await["scaling_groups"][0].clone();
    assert_eq!(group["desired"], 0, "{group:#}");
    assert!(
        !group["activities"].to_string().contains("operator"),
        "{group:#}"
    );
}

#[tokio::test]
async fn a_foreign_origin_or_cross_site_fetch_is_403_even_as_json() {
    let echo = Echo::start("file").await;
    let port = free_port();
    let trellis = Trellis::start(&pool(port, &[echo.addr()]), &[port]).await;
    let admin = trellis.admin_port.unwrap();
    let register = "/v1/target-groups/pool/targets";
    let body = r#"{"address":"127.0.0.1:9","weight":1}"#;
    for origin in [
        "http://evil.example",
        "null",
        "https://127.0.0.1",
        &format!("http://localhost:{admin}"),
        &format!("http://127.0.0.1:{}", admin + 1),
    ] {
        let headers = [("content-type", JSON), ("origin", origin)];
        let (status, h, reply) = send(admin, Method::POST, register, &headers, body).await;
        assert_eq!(status, 403, "{origin}: {reply}");
        assert!(message(&h, &reply).contains("Origin"), "{reply}");
        let (status, _, reply) = send(admin, Method::GET, "/v1/status", &headers[1..], "").await;
        assert_eq!(status, 403, "GET /v1/status from {origin}: {reply}");
    }
    for site in ["cross-site", "same-site"] {
        let headers = [("content-type", JSON), ("sec-fetch-site", site)];
        let (status, _, reply) = send(admin, Method::POST, register, &headers, body).await;
        assert_eq!(status, 403, "{site}: {reply}");
        // No Origin on a GET: Sec-Fetch-Site still tells.
        let (status, h, reply) = send(admin, Method::GET, "/metrics", &headers[1..], "").await;
        assert_eq!(status, 403, "{site}: {reply}");
        assert!(message(&h, &reply).contains("Sec-Fetch-Site"), "{reply}");
    }
    assert_eq!(trellis.group_targets("pool").await, vec![echo.addr()]);

    // The static page loads from anywhere (a link, a bookmark); its own requests are same-origin.
    let (status, _, _) = send(
        admin,
        Method::GET,
        "/",
        &[
            ("origin", "http://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ],
        "",
    )
    .await;
    assert_eq!(status, 200);
    let own = format!("http://127.0.0.1:{admin}");
    let (status, _, reply) = send(
        admin,
        Method::GET,
        "/v1/status",
        &[("origin", &own), ("sec-fetch-site", "same-origin")],
        "",
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let (status, _, reply) = send(
        admin,
        Method::POST,
        register,
        &[("content-type", JSON), ("origin", &own.to_uppercase())],
        body,
    )
    .await;
    assert_eq!(status, 201, "{reply}");
}

#[tokio::test]
async fn without_a_token_only_a_loopback_host_is_served() {
    let port = free_port();
    let trellis = Trellis::start(&pool(port, &[]), &[port]).await;
    let admin = trellis.admin_port.unwrap();
    for host in [
        format!("127.0.0.1:{admin}"),
        format!("localhost:{admin}"),
        format!("LOCALHOST:{admin}"),
        format!("admin.localhost:{admin}"),
        "127.0.0.1".to_owned(),
        format!("[::1]:{admin}"),
    ] {
        let (status, _, reply) =
            send(admin, Method::GET, "/v1/status", &[("host", &host)], "").await;
        assert_eq!(status, 200, "{host}: {reply}");
    }
    for host in [
        format!("evil.example:{admin}"),
        "evil.example".to_owned(),
        format!("localhost.evil.example:{admin}"),
        format!("0.0.0.0:{admin}"),
        format!("192.0.2.1:{admin}"),
    ] {
        for (method, path) in [(Method::GET, "/v1/status"), (Method::GET, "/")] {
            let (status, h, reply) = send(admin, method, path, &[("host", &host)], "").await;
            assert_eq!(status, 421, "{host}: {reply}");
            let text = message(&h, &reply);
            assert!(
                text.contains("admin.token_file") && text.contains("DNS rebinding"),
                "{text}"
            );
        }
        // The attacker's page is same-origin with its own name: the Origin matches the Host.
        let headers = [
            ("host", host.as_str()),
            ("origin", &format!("http://{host}")),
            ("content-type", JSON),
        ];
        let (status, _, reply) = send(admin, Method::POST, "/v1/reload", &headers, "").await;
        assert_eq!(status, 421, "{host}: {reply}");
    }
    assert_eq!(trellis.status().await["config"]["reloads"]["ok"], 0);

    // HTTP/1.1 needs a Host; HTTP/1.0 (never a browser) may go without.
    let mut stream = raw::send(admin, b"GET /healthz HTTP/1.1\r\nconnection: close\r\n\r\n").await;
    let (head, _) = raw::read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let mut stream = raw::send(admin, b"GET /healthz HTTP/1.0\r\n\r\n").await;
    let (head, _) = raw::read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
}

#[tokio::test]
async fn with_a_token_any_host_is_served_and_the_bearer_scheme_is_case_insensitive() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, port) = (free_port(), free_port());
    let (table, _) = admin_with_token(dir.path(), &format!("127.0.0.1:{admin}"));
    let _trellis = Trellis::start(&(table + &pool(port, &[])), &[port, admin]).await;
    let status = |headers: Vec<(&'static str, String)>| async move {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        send(admin, Method::GET, "/v1/status", &headers, "").await.0
    };
    let host = || ("host", "evil.example".to_owned());
    assert_eq!(status(vec![host()]).await, 401);
    for auth in ["Bearer", "bearer", "BEARER", "bEaReR  "] {
        let auth = ("authorization", format!("{auth} {ADMIN_TOKEN}"));
        assert_eq!(status(vec![host(), auth.clone()]).await, 200, "{auth:?}");
        assert_eq!(status(vec![auth]).await, 200);
    }
    assert_eq!(
        status(vec![("authorization", format!("Basic {ADMIN_TOKEN}"))]).await,
        401
    );
    // The token does not make a cross-site request acceptable.
    let auth = ("authorization", format!("bearer {ADMIN_TOKEN}"));
    let origin = ("origin", "http://evil.example".to_owned());
    assert_eq!(status(vec![auth, origin]).await, 403);
}

#[tokio::test]
async fn a_405_lists_the_methods_the_path_takes() {
    let port = free_port();
    let trellis = Trellis::start(&pool(port, &[]), &[port]).await;
    let admin = trellis.admin_port.unwrap();
    for (method, path, allow) in [
        (Method::GET, "/v1/reload", "POST"),
        (Method::PUT, "/v1/reload", "POST"),
        (Method::DELETE, "/metrics", "GET, HEAD"),
        (Method::POST, "/v1/status", "GET, HEAD"),
        (Method::POST, "/", "GET, HEAD"),
        (Method::GET, "/v1/target-groups/pool/targets", "POST"),
        (
            Method::POST,
            "/v1/target-groups/pool/targets/127.0.0.1:9",
            "DELETE",
        ),
        (Method::GET, "/v1/scaling-groups/web/desired", "PUT"),
        (
            Method::PATCH,
            "/v1/scaling-groups/web/instances/i-1/protection",
            "PUT",
        ),
    ] {
        let (status, h, reply) =
            send(admin, method.clone(), path, &[("content-type", JSON)], "").await;
        assert_eq!(status, 405, "{method} {path}: {reply}");
        assert_eq!(h["allow"], allow, "{method} {path}");
        message(&h, &reply);
    }
    let (status, h, _) = send(admin, Method::GET, "/v1/nothing", &[], "").await;
    assert_eq!((status, h.get("allow")), (StatusCode::NOT_FOUND, None));
}
