//! Redirects and rule transforms: the redirect trellis answers (from rules and default actions), the
//! request a target gets after a transform (path and headers, checked on a recording backend), the
//! response a client gets, and `trellis check` refusing what would break them.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use serde_json::Value;

use crate::support::client::{h2_connect, h2_send};
use crate::support::config::{
    fixed, forward_to, listener, quote, rule, rule_with, service, target_group, targets,
};
use crate::support::raw::{read_response, send};
use crate::support::recorder::{Received, Recorder};
use crate::support::servers::closed_port_addr;
use crate::support::trellis::check;
use crate::support::{eventually, free_port, Echo, Trellis};

/// Sends raw `request` on a fresh connection: the status, head and body of the one response.
async fn ask(port: u16, request: &str) -> (u16, String, Vec<u8>) {
    let mut stream = send(port, request.as_bytes()).await;
    let (head, body) = read_response(&mut stream).await;
    let status = head[9..12]
        .parse()
        .unwrap_or_else(|_| panic!("status of {head:?}"));
    (status, head, body)
}

fn get(path: &str, host: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")
}

/// The value of header `name` in a response head (the first one).
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Asserts a redirect: `status`, `location`, and an empty body with `content-length: 0`.
#[track_caller]
fn assert_redirect(answer: &(u16, String, Vec<u8>), status: u16, location: &str) {
    let (got, head, body) = answer;
    assert_eq!(*got, status, "{head}");
    assert_eq!(
        header(head, "location").as_deref(),
        Some(location),
        "{head}"
    );
    assert_eq!(
        header(head, "content-length").as_deref(),
        Some("0"),
        "{head}"
    );
    assert!(body.is_empty(), "{head}");
    assert_eq!(header(head, "x-trellis-error"), None, "{head}");
}

/// The access log's JSON lines on trellis's stdout, once `n` of them are there.
async fn access_log(trellis: &Trellis, n: usize) -> Vec<Value> {
    eventually(
        Duration::from_secs(5),
        &format!("{n} access log lines"),
        || {
            let text = trellis.stdout();
            let whole = text.rfind('\n').map_or("", |end| &text[..end]);
            let lines: Vec<Value> = whole
                .lines()
                .filter(|l| l.starts_with('{'))
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect();
            async move { (lines.len() >= n).then_some(lines) }
        },
    )
    .await
}

fn only(received: Vec<Received>, what: &str) -> Received {
    assert_eq!(received.len(), 1, "{what}: the target got {received:#?}");
    received.into_iter().next().unwrap()
}

#[tokio::test]
async fn redirects_fill_their_placeholders_from_the_canonical_request() {
    let port = free_port();
    let config = [
        service("shop", &["shop.test", "*.shop.test"]),
        // The classic http→https listener: everything else keeps the request's own parts.
        listener(
            port,
            "{ redirect = { status = 301, protocol = \"https\", port = \"443\" } }",
        ),
        rule(
            "moved",
            10,
            "{ path = { exact = \"/old\" } }",
            "{ redirect = { status = 308, path = \"/new/#{path}\", query = \"from=#{host}&#{query}\" } }",
        ),
        rule(
            "www",
            20,
            "{ path = { prefix = \"/www/\" } }",
            "{ redirect = { status = 302, host = \"www.#{host}\", port = \"80\", query = \"\" } }",
        ),
        rule(
            "same-port",
            30,
            "{ path = { prefix = \"/here/\" } }",
            "{ redirect = { status = 307, host = \"a.shop.test\" } }",
        ),
    ]
    .concat();
    let trellis = Trellis::start(&config, &[port]).await;

    // http → https, the default port left out, path and query kept.
    assert_redirect(
        &ask(port, &get("/x/y?q=1&r", "shop.test")).await,
        301,
        "https://shop.test/x/y?q=1&r",
    );
    // The canonical host (lower case, no port, no trailing dot) and path (dot segments, repeated
    // slashes and unreserved escapes resolved): the location says what trellis decided on.
    assert_redirect(
        &ask(
            port,
            &get("/a/./b/../c//%64?x", &format!("Shop.Test.:{port}")),
        )
        .await,
        301,
        "https://shop.test/a/c/d?x",
    );
    // No query: no `?`.
    assert_redirect(
        &ask(port, &get("/", "shop.test")).await,
        301,
        "https://shop.test/",
    );
    // A path normalisation refuses gets its 400, never a redirect.
    let (status, head, _) = ask(port, &get("/a%2Fb", "shop.test")).await;
    assert_eq!(status, 400, "{head}");
    assert_eq!(header(&head, "location"), None);

    // From rules: 308 with a new path and query, the listener's own port kept (it is not 80).
    assert_redirect(
        &ask(port, &get("/old?a=1", "shop.test")).await,
        308,
        &format!("http://shop.test:{port}/new/old?from=shop.test&a=1"),
    );
    assert_redirect(
        &ask(port, &get("/old", "shop.test")).await,
        308,
        &format!("http://shop.test:{port}/new/old?from=shop.test&"),
    );
    // 302 to www.#{host}, port 80 left out, the query dropped.
    assert_redirect(
        &ask(port, &get("/www/p?q=1", "shop.test")).await,
        302,
        "http://www.shop.test/www/p",
    );
    assert_redirect(
        &ask(port, &get("/here/x", "b.shop.test")).await,
        307,
        &format!("http://a.shop.test:{port}/here/x"),
    );

    // HTTP/2: the host comes from :authority.
    let mut h2 = h2_connect(port).await;
    let req = Request::get(format!("http://shop.test:{port}/h2/x?y=1"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = h2_send(&mut h2, req).await;
    assert_eq!(reply.status, 301);
    assert_eq!(reply.header("location"), Some("https://shop.test/h2/x?y=1"));
    assert!(reply.body.is_empty());

    // Counted and logged like fixed responses, under their rule.
    let sample = |rule: &str| {
        format!(
            "trellis_requests_total{{code_class=\"3xx\",listener=\"web\",rule=\"{rule}\",service=\"shop\"}}"
        )
    };
    assert_eq!(trellis.metric(&sample("default")).await, Some(4.0));
    assert_eq!(trellis.metric(&sample("moved")).await, Some(2.0));
    assert_eq!(trellis.metric(&sample("www")).await, Some(1.0));
    let lines = access_log(&trellis, 9).await;
    let moved = lines
        .iter()
        .find(|l| l["requestPath"] == "/old?a=1")
        .expect("the /old?a=1 line");
    assert_eq!(moved["responseCode"], 308);
    assert_eq!(moved["ruleName"], "moved");
    assert_eq!(moved["targetGroupName"], "-");
    assert_eq!(moved["failureReason"], "-");

    // The admin status names redirect actions, with their location as configured.
    let status = trellis.status().await;
    let web = &status["services"][0]["listeners"][0];
    assert_eq!(
        web["default_action"]["redirect"],
        serde_json::json!({"status": 301, "location": "https://#{host}:443/#{path}?#{query}"})
    );
    assert_eq!(web["rules"][1]["action"]["redirect"]["status"], 302);
}

/// Rules that forward to the recorder, with transforms; `/` is forwarded untouched.
async fn transforming(recorder: &Recorder) -> (Trellis, u16) {
    let port = free_port();
    let config = [
        service("shop", &["shop.test"]),
        listener(port, &forward_to("rec")),
        rule_with(
            "api",
            10,
            "{ path = { prefix = \"/API/\" } }",
            &forward_to("rec"),
            "transform = { path_prefix = \"/v2/\" }\n",
        ),
        rule_with(
            "strip",
            20,
            "{ path = { prefix = \"/strip\" } }",
            &forward_to("rec"),
            "transform = { path_prefix = \"/\" }\n",
        ),
        rule_with(
            "files",
            30,
            "{ path = { prefix = \"/files/a\" } }",
            &forward_to("rec"),
            "transform = { path_prefix = \"/static/\" }\n",
        ),
        rule_with(
            "headers",
            40,
            "{ path = { prefix = \"/h/\" } }",
            &forward_to("rec"),
            "transform = { request_headers = { set = { \"X-Env\" = \"prod\" }, add = { \"x-tag\" = \"t\" }, \
             remove = [\"x-debug\"] } }\n",
        ),
        target_group("rec", &targets(&[recorder.addr()])),
    ]
    .concat();
    (Trellis::start(&config, &[port]).await, port)
}

#[tokio::test]
async fn path_prefix_rewrites_the_path_the_target_gets() {
    let recorder = Recorder::start().await;
    let (trellis, port) = transforming(&recorder).await;
    let line = |request: &str| format!("GET {request} HTTP/1.1");

    for (sent, forwarded) in [
        // The matched prefix (matched case-insensitively) replaced, the query kept.
        ("/api/users?id=1&x", "/v2/users?id=1&x"),
        ("/Api/", "/v2/"),
        // `/` for `/strip`: no `//`, and nothing left is `/`.
        ("/strip/x/y?q", "/x/y?q"),
        ("/strip", "/"),
        // The rule matched the parameter-stripped view: that view is rewritten.
        ("/api;v=1/users?q=1", "/v2/users?q=1"),
        // Normalised first, then rewritten.
        ("/x/../api/./a//b", "/v2/a/b"),
        // No rule: untouched.
        ("/other;v=1/x", "/other;v=1/x"),
    ] {
        let (status, head, _) = ask(port, &get(sent, "shop.test")).await;
        assert_eq!(status, 200, "{sent}: {head}");
        let got = only(recorder.take(), sent);
        assert_eq!(got.request_line(), line(forwarded), "{sent}");
        assert_eq!(got.headers("host"), ["shop.test"], "{sent}");
    }

    // A `..` formed where the new prefix meets the rest: refused, the target never asked.
    let (status, head, _) = ask(port, &get("/files/a../etc", "shop.test")).await;
    assert_eq!(status, 400, "{head}");
    assert_eq!(
        header(&head, "x-trellis-error").as_deref(),
        Some("bad_request")
    );
    assert!(recorder.take().is_empty());
    let (status, _, _) = ask(port, &get("/files/a/b", "shop.test")).await;
    assert_eq!(status, 200);
    assert_eq!(
        only(recorder.take(), "/files/a/b").request_line(),
        line("/static/b")
    );

    // The admin status shows what each rule transforms.
    let status = trellis.status().await;
    let rules = &status["services"][0]["listeners"][0]["rules"];
    assert_eq!(rules[0]["transform"]["path_prefix"], "/v2/");
    assert_eq!(
        rules[3]["transform"]["request_headers"],
        serde_json::json!({"set": ["x-env"], "add": ["x-tag"], "remove": ["x-debug"]})
    );

    // The access log shows the path the target got.
    let lines = access_log(&trellis, 9).await;
    let api: Vec<&Value> = lines.iter().filter(|l| l["ruleName"] == "api").collect();
    assert_eq!(api[0]["requestPath"], "/v2/users?id=1&x");
    assert_eq!(api[2]["requestPath"], "/v2/users?q=1");
}

#[tokio::test]
async fn request_headers_are_set_added_and_removed_for_the_target() {
    let recorder = Recorder::start().await;
    let (_trellis, port) = transforming(&recorder).await;

    let (status, _, _) = ask(
        port,
        "GET /h/x HTTP/1.1\r\nHost: shop.test\r\nX-Env: dev\r\nx-env: test\r\nx-tag: c\r\n\
         X-Debug: 1\r\nx-keep: k\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let got = only(recorder.take(), "/h/x");
    // `set` replaced every value the client sent, `add` appended, `remove` removed.
    assert_eq!(got.headers("x-env"), ["prod"]);
    assert_eq!(got.headers("x-tag"), ["c", "t"]);
    assert!(got.headers("x-debug").is_empty());
    assert_eq!(got.headers("x-keep"), ["k"]);
    assert_eq!(got.headers("host"), ["shop.test"]);
    assert_eq!(got.request_line(), "GET /h/x HTTP/1.1");

    // A client naming them in Connection cannot take the transform's headers away.
    let (status, _, _) = ask(
        port,
        "GET /h/y HTTP/1.1\r\nHost: shop.test\r\nConnection: keep-alive, x-env, x-tag\r\n\
         x-env: dev\r\nx-tag: c\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let got = only(recorder.take(), "/h/y");
    assert_eq!(got.headers("x-env"), ["prod"]);
    assert_eq!(got.headers("x-tag"), ["t"]);

    // Another rule's requests are not transformed.
    ask(
        port,
        "GET /x HTTP/1.1\r\nHost: shop.test\r\nx-env: dev\r\n\r\n",
    )
    .await;
    let got = only(recorder.take(), "/x");
    assert_eq!(got.headers("x-env"), ["dev"]);
    assert!(got.headers("x-tag").is_empty());
}

#[tokio::test]
async fn response_headers_change_on_targets_answers_only() {
    let echo = Echo::start("served").await;
    let dead = closed_port_addr();
    let port = free_port();
    let response_transform = "transform = { response_headers = { set = { \"x-frame-options\" = \"DENY\", \
                              \"content-type\" = \"text/x-test\" }, remove = [\"X-Served-By\"] } }\n";
    let config = [
        service("shop", &["shop.test"]),
        listener(port, &forward_to("echo")),
        rule_with(
            "secured",
            10,
            "{ path = { prefix = \"/s/\" } }",
            &forward_to("echo"),
            response_transform,
        ),
        rule_with(
            "broken",
            20,
            "{ path = { prefix = \"/dead/\" } }",
            &forward_to("dead"),
            response_transform,
        ),
        target_group("echo", &targets(&[echo.addr()])),
        target_group("dead", &targets(&[dead])),
    ]
    .concat();
    let _trellis = Trellis::start(&config, &[port]).await;

    let (status, head, body) = ask(port, &get("/s/x", "shop.test")).await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&head, "x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(
        header(&head, "content-type").as_deref(),
        Some("text/x-test")
    );
    assert_eq!(header(&head, "x-served-by"), None, "{head}");
    assert_eq!(body, b"hello from served\n");

    // Untransformed routes keep the target's headers.
    let (_, head, _) = ask(port, &get("/x", "shop.test")).await;
    assert_eq!(header(&head, "x-served-by").as_deref(), Some("served"));
    assert_eq!(header(&head, "x-frame-options"), None);

    // trellis's own answer (the target is down) is not the target's: no transform.
    let (status, head, _) = ask(port, &get("/dead/x", "shop.test")).await;
    assert_eq!(status, 502, "{head}");
    assert_eq!(
        header(&head, "x-trellis-error").as_deref(),
        Some("connect_failed")
    );
    assert_eq!(header(&head, "x-frame-options"), None, "{head}");
    assert_eq!(
        header(&head, "content-type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
}

/// Writes `text` as `trellis.toml` in a fresh directory.
fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("trellis.toml");
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

#[tokio::test]
async fn check_refuses_broken_redirects_and_transforms_with_file_line_and_key() {
    // One rule per mistake, each on a line of its own: (the mistake's line, its key, the message).
    let cases: &[(&str, &str, &str)] = &[
        ("action = { redirect = { status = 300, protocol = \"https\" } }", "action.redirect.status", "300 is not one of 301, 302, 303, 307, 308"),
        ("action = { redirect = { status = 301 } }", "action.redirect", "a loop"),
        ("action = { redirect = { status = 301, host = \"#{foo}.test\" } }", "action.redirect.host", "#{foo} is not a placeholder"),
        ("action = { redirect = { status = 301, protocol = \"ftp\" } }", "action.redirect.protocol", "\"ftp\" is not one of"),
        ("action = { redirect = { status = 301, port = \"99999\" } }", "action.redirect.port", "is not a port"),
        ("action = { redirect = { status = 301, path = \"new\" } }", "action.redirect.path", "must start with \"/\""),
        ("action = { redirect = { status = 301, protocol = \"https\" }, fixed_response = { status = 200 } }", "action", "exactly one of forward, fixed_response or redirect"),
        ("transform = { request_headers = { set = { \"host\" = \"other.test\" } } }", "transform.request_headers.set.host", "what trellis routed on"),
        ("transform = { request_headers = { remove = [\"connection\"] } }", "transform.request_headers.remove[0]", "hop-by-hop"),
        ("transform = { request_headers = { add = { \"transfer-encoding\" = \"chunked\" } } }", "transform.request_headers.add.transfer-encoding", "hop-by-hop"),
        ("transform = { request_headers = { set = { \"content-length\" = \"1\" } } }", "transform.request_headers.set.content-length", "frames the body"),
        ("transform = { request_headers = { set = { \"x-forwarded-for\" = \"10.0.0.1\" } } }", "transform.request_headers.set.x-forwarded-for", "is set by trellis"),
        ("transform = { request_headers = { set = { \"x-trellis-identity\" = \"admin\" } } }", "transform.request_headers.set.x-trellis-identity", "trellis's own"),
        ("transform = { response_headers = { remove = [\"x-request-id\"] } }", "transform.response_headers.remove[0]", "x-request-id is set by trellis"),
        ("transform = { request_headers = { set = { \"bad name\" = \"1\" } } }", "transform.request_headers.set.bad name", "not a valid HTTP header name"),
        ("transform = { request_headers = { set = { \"x-a\" = \"a\\rb\" } } }", "transform.request_headers.set.x-a", "control character"),
        ("transform = { request_headers = { set = { \"x-canary\" = \"1\" } } }", "transform.request_headers.set.x-canary", "rule \"canary\" matches on it"),
        ("transform = { path_prefix = \"v2\" }", "transform.path_prefix", "must start with \"/\""),
    ];
    let mut config = [
        service("shop", &["shop.test"]),
        listener(8080, &forward_to("web")),
        rule(
            "canary",
            1,
            "{ headers = [{ name = \"x-canary\", exact = \"1\" }] }",
            &fixed(418, "canary"),
        ),
    ]
    .concat();
    for (i, (line, _, _)) in cases.iter().enumerate() {
        let priority = 10 + i as u16;
        let name = format!("r{i}");
        config += &if line.starts_with("action") {
            format!(
                "[[service.listener.rule]]\nname = {}\npriority = {priority}\nmatch = {{ path = {{ prefix = \"/{i}/\" }} }}\n{line}\n\n",
                quote(&name)
            )
        } else {
            rule_with(
                &name,
                priority,
                &format!("{{ path = {{ prefix = \"/{i}/\" }} }}"),
                &forward_to("web"),
                &format!("{line}\n"),
            )
        };
    }
    // path_prefix needs a prefix match.
    config += &rule_with(
        "exact",
        500,
        "{ path = { exact = \"/e\" } }",
        &forward_to("web"),
        "transform = { path_prefix = \"/v2\" }\n",
    );
    config += &target_group("web", "[\"127.0.0.1:9001\"]");

    let (_dir, path) = write_config(&config);
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let file = path.display().to_string();
    let line_of = |text: &str| {
        config
            .lines()
            .position(|l| l == text)
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("no line {text:?}"))
    };
    let mut expected: Vec<(usize, String, &str)> = cases
        .iter()
        .enumerate()
        .map(|(i, (line, key, message))| {
            (
                line_of(line),
                format!("service[0].listener[0].rule[{}].{key}", i + 1),
                *message,
            )
        })
        .collect();
    expected.push((
        line_of("transform = { path_prefix = \"/v2\" }"),
        format!(
            "service[0].listener[0].rule[{}].transform.path_prefix",
            cases.len() + 1
        ),
        "this rule has no prefix match",
    ));
    for (line, key, message) in &expected {
        let prefix = format!("{file}:{line}: {key}: ");
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(message)),
            "no `{prefix}…{message}…` in:\n{stderr}"
        );
    }
    assert_eq!(
        stderr.lines().count(),
        expected.len(),
        "one error per mistake:\n{stderr}"
    );
}
