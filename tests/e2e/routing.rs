//! Host demultiplexing and listener rules: which service and which rule answered.
//!
//! Every service and rule answers with a fixed response of its own, so the body names the winner.

use reqwest::Method;

use crate::support::client::{self, get_request, h2_connect, h2_send, url, Reply};
use crate::support::config::{fixed, listener, rule, service};
use crate::support::{free_port, Trellis};

/// Request headers as (name, value) pairs.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// Sends one request with the given headers and returns the reply.
async fn ask(
    client: &reqwest::Client,
    port: u16,
    method: Method,
    path: &str,
    headers: Headers<'_>,
) -> Reply {
    let mut req = client.request(method, url(port, path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    client::send(req).await
}

/// Asserts status and body of one request, naming the case when it fails.
async fn expect(
    client: &reqwest::Client,
    port: u16,
    (method, path, headers): (&str, &str, Headers<'_>),
    status: u16,
    body: &str,
) {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let reply = ask(client, port, method.clone(), path, headers).await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (status, body),
        "{method} {path} {headers:?} -> {reply:?}"
    );
}

/// Three services on one port: a wildcard listed first, a catch-all, and an exact one.
fn shared_port_services(port: u16) -> String {
    [
        service("wild", &["*.shop.internal"]),
        listener(port, &fixed(200, "wild")),
        service("any", &["*"]),
        listener(port, &fixed(200, "any")),
        service("exact", &["shop.internal", "a.shop.internal"]),
        listener(port, &fixed(200, "exact")),
    ]
    .concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_picks_exact_then_wildcard_then_catch_all() {
    let (shared, lonely) = (free_port(), free_port());
    let cfg = [
        shared_port_services(shared),
        service("only", &["only.internal"]),
        listener(lonely, &fixed(200, "only")),
    ]
    .concat();
    let _trellis = Trellis::start(&cfg, &[shared, lonely]).await;
    let http = client::http1();

    for (host, want) in [
        ("shop.internal", "exact"),
        ("SHOP.Internal:8080", "exact"),
        ("a.shop.internal", "exact"),
        ("b.shop.internal", "wild"),
        ("deep.B.shop.INTERNAL:1", "wild"),
        ("example.org", "any"),
        ("shop.internal.example", "any"),
    ] {
        expect(&http, shared, ("GET", "/", &[("host", host)]), 200, want).await;
    }

    expect(
        &http,
        lonely,
        ("GET", "/", &[("host", "Only.Internal")]),
        200,
        "only",
    )
    .await;
    let reply = ask(
        &http,
        lonely,
        Method::GET,
        "/",
        &[("host", "other.internal")],
    )
    .await;
    reply.assert_trellis_error(404, "no_service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_picks_the_service() {
    let (shared, lonely) = (free_port(), free_port());
    let cfg = [
        shared_port_services(shared),
        service("only", &["only.internal"]),
        listener(lonely, &fixed(200, "only")),
    ]
    .concat();
    let _trellis = Trellis::start(&cfg, &[shared, lonely]).await;

    let mut h2 = h2_connect(shared).await;
    for (authority, want) in [
        ("shop.internal", "exact"),
        ("x.shop.internal", "wild"),
        ("elsewhere.example", "any"),
    ] {
        let uri = format!("http://{authority}:{shared}/");
        let reply = h2_send(&mut h2, get_request(&uri, &[])).await;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (200, want),
            "{uri}: {reply:?}"
        );
    }

    let mut h2 = h2_connect(lonely).await;
    let uri = format!("http://nobody.internal:{lonely}/");
    h2_send(&mut h2, get_request(&uri, &[]))
        .await
        .assert_trellis_error(404, "no_service");
}

/// Rules written out of priority order, so that file order cannot pass for priority order.
fn rules_config(port: u16) -> String {
    let canary = r#"{ method = "GET", path = { prefix = "/api/" }, headers = [{ name = "x-canary", exact = "1" }] }"#;
    [
        service("shop", &["*"]),
        listener(port, &fixed(404, "default")),
        rule(
            "api",
            20,
            r#"{ path = { prefix = "/api/" } }"#,
            &fixed(200, "api"),
        ),
        rule("canary", 10, canary, &fixed(200, "canary")),
        rule(
            "post-x",
            5,
            r#"{ method = "POST", path = { exact = "/api/x" } }"#,
            &fixed(201, "post-x"),
        ),
        rule(
            "old",
            30,
            r#"{ path = { exact = "/Old", case_sensitive = true } }"#,
            &fixed(410, "gone"),
        ),
        rule(
            "docs",
            40,
            r#"{ path = { exact = "/docs" } }"#,
            &fixed(200, "docs"),
        ),
        rule(
            "ua",
            60,
            r#"{ headers = [{ name = "user-agent", contains = "curl" }] }"#,
            &fixed(200, "ua"),
        ),
        rule(
            "env",
            50,
            r#"{ headers = [{ name = "x-env", prefix = "prod" }] }"#,
            &fixed(200, "env"),
        ),
        rule(
            "both",
            45,
            r#"{ headers = [{ name = "x-a", exact = "1" }, { name = "x-b", exact = "Yes" }] }"#,
            &fixed(200, "both"),
        ),
        rule(
            "strict",
            55,
            r#"{ headers = [{ name = "x-tok", exact = "AbC", case_sensitive = true }] }"#,
            &fixed(200, "strict"),
        ),
    ]
    .concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowest_matching_priority_wins_on_method_and_path() {
    let port = free_port();
    let _trellis = Trellis::start(&rules_config(port), &[port]).await;
    let http = client::http1();
    let none: Headers<'_> = &[];

    expect(
        &http,
        port,
        ("GET", "/api/a", &[("x-canary", "1")]),
        200,
        "canary",
    )
    .await;
    expect(
        &http,
        port,
        ("GET", "/API/A", &[("x-canary", "1")]),
        200,
        "canary",
    )
    .await;
    expect(
        &http,
        port,
        ("GET", "/api/a", &[("x-canary", "2")]),
        200,
        "api",
    )
    .await;
    expect(
        &http,
        port,
        ("POST", "/api/a", &[("x-canary", "1")]),
        200,
        "api",
    )
    .await;
    expect(&http, port, ("POST", "/api/x", none), 201, "post-x").await;
    expect(&http, port, ("POST", "/API/X", none), 201, "post-x").await;
    expect(&http, port, ("GET", "/api/x", none), 200, "api").await;
    expect(&http, port, ("GET", "/apix", none), 404, "default").await;
    expect(&http, port, ("GET", "/Old", none), 410, "gone").await;
    expect(&http, port, ("GET", "/old", none), 404, "default").await;
    expect(&http, port, ("GET", "/DOCS", none), 200, "docs").await;
    expect(&http, port, ("GET", "/docs/more", none), 404, "default").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_conditions_exact_prefix_contains() {
    let port = free_port();
    let _trellis = Trellis::start(&rules_config(port), &[port]).await;
    let http = client::http1();

    let cases: &[(Headers<'_>, &str, u16)] = &[
        (&[("x-env", "PRODUCTION")], "env", 200),
        (&[("x-env", "staging-prod")], "default", 404),
        (&[("user-agent", "my-CURL/8.0")], "ua", 200),
        (&[("user-agent", "wget")], "default", 404),
        (&[("x-a", "1")], "default", 404),
        (&[("x-a", "1"), ("x-b", "yes")], "both", 200),
        (&[("x-tok", "abc")], "default", 404),
        (&[("x-tok", "AbC")], "strict", 200),
        (&[("x-env", "prod"), ("user-agent", "curl")], "env", 200),
    ];
    for (headers, body, status) in cases {
        expect(&http, port, ("GET", "/", headers), *status, body).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_response_content_type_defaults_to_text_plain() {
    let port = free_port();
    let json =
        r#"{ fixed_response = { status = 202, body = "{}", content_type = "application/json" } }"#;
    let cfg = [
        service("shop", &["*"]),
        listener(port, &fixed(200, "plain body\n")),
        rule("json", 1, r#"{ path = { exact = "/json" } }"#, json),
    ]
    .concat();
    let _trellis = Trellis::start(&cfg, &[port]).await;
    let http = client::http1();

    let plain = client::get(&http, port, "/").await;
    assert_eq!((plain.status, plain.text().as_str()), (200, "plain body\n"));
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(plain.header("content-length"), Some("11"));

    let json = client::get(&http, port, "/json").await;
    assert_eq!((json.status, json.text().as_str()), (202, "{}"));
    assert_eq!(json.header("content-type"), Some("application/json"));
}
