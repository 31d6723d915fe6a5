//! What trellis decides on is what the target gets: the authority (Host, absolute-form, `:authority`),
//! the path (normalised once, before rules and auth policies), and upgrades (WebSocket only). Every
//! variant is sent as an attacker would, over raw sockets or a real HTTP/2 client, and checked against
//! what a recording backend actually received.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;

use crate::support::client::{h2_connect, h2_send};
use crate::support::config::{fixed, forward_to, listener, rule, service, target_group, targets};
use crate::support::raw::{read_response, send};
use crate::support::recorder::{Received, Recorder};
use crate::support::{eventually, free_port, Trellis};

/// Two services on one port, both forwarding to one vhost-aware backend (the recorder): `a.test`,
/// open but for `/private/*` (an auth policy) and `/admin/` (a rule that answers 403 itself), and
/// `secure.internal`, whose policy admits no one from loopback.
async fn setup() -> (Trellis, Recorder, u16) {
    let recorder = Recorder::start().await;
    let port = free_port();
    let config = [
        "[[auth_policy]]\nname = \"guard\"\n[[auth_policy.statement]]\neffect = \"allow\"\n\
         [[auth_policy.statement]]\neffect = \"deny\"\npaths = [\"/private/*\"]\n\n"
            .to_string(),
        "[[auth_policy]]\nname = \"locked\"\n[[auth_policy.statement]]\neffect = \"allow\"\n\
         source_cidrs = [\"10.0.0.0/8\"]\n\n"
            .to_string(),
        service("app", &["a.test"]).replacen("\n\n", "\nauth_policy = \"guard\"\n\n", 1),
        listener(port, &forward_to("g")),
        rule(
            "block",
            10,
            "{ path = { prefix = \"/admin/\" } }",
            &fixed(403, "blocked"),
        ),
        service("secure", &["secure.internal"]).replacen(
            "\n\n",
            "\nauth_policy = \"locked\"\n\n",
            1,
        ),
        listener(port, &forward_to("g")),
        target_group("g", &targets(&[recorder.addr()])),
    ]
    .concat();
    let trellis = Trellis::start(&config, &[port]).await;
    (trellis, recorder, port)
}

/// Sends raw `request` on a fresh connection; the status and head of the one response.
async fn ask(port: u16, request: &str) -> (u16, String) {
    let mut stream = send(port, request.as_bytes()).await;
    let (head, _) = read_response(&mut stream).await;
    let status = head[9..12]
        .parse()
        .unwrap_or_else(|_| panic!("status of {head:?}"));
    (status, head)
}

/// The first access log line that contains `needle` (lines are written in batches: waits for it).
async fn logged(trellis: &Trellis, needle: &str) -> String {
    eventually(Duration::from_secs(5), needle, || async {
        trellis
            .stdout()
            .lines()
            .find(|l| l.contains(needle))
            .map(str::to_string)
    })
    .await
}

fn only(received: Vec<Received>, what: &str) -> Received {
    assert_eq!(received.len(), 1, "{what}: the target got {received:#?}");
    received.into_iter().next().unwrap()
}

#[tokio::test]
async fn the_target_gets_exactly_the_authority_trellis_routed_on() {
    let (_trellis, recorder, port) = setup().await;

    // Absolute form: routed as a.test, and the target must see a.test, not the Host sent with it.
    let (status, _) = ask(
        port,
        "GET http://a.test/x HTTP/1.1\r\nHost: secure.internal\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let got = only(recorder.take(), "absolute form");
    assert_eq!(got.headers("host"), ["a.test"]);
    assert_eq!(got.request_line(), "GET /x HTTP/1.1");

    // The other way round: routed as secure.internal, whose policy denies.
    let (status, _) = ask(
        port,
        "GET http://secure.internal/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403);

    // A fragment in an absolute-form target: the target gets a path, not an empty request-target.
    for (request, line) in [
        (
            "GET http://a.test#@secure.internal/private/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "GET / HTTP/1.1",
        ),
        (
            "GET http://a.test?q=1#x HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "GET /?q=1 HTTP/1.1",
        ),
    ] {
        let (status, _) = ask(port, request).await;
        assert_eq!(status, 200, "{request:?}");
        assert_eq!(only(recorder.take(), request).request_line(), line);
    }

    // A fragment or a query alone is no origin-form target (hyper refuses them).
    for target in ["#x", "?q=1"] {
        let (status, _) = ask(
            port,
            &format!("GET {target} HTTP/1.1\r\nHost: a.test\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 400, "{target}");
    }
    assert!(recorder.take().is_empty());

    // Canonical form: lower case, no trailing dot, the port kept.
    ask(port, "GET /x HTTP/1.1\r\nHost: A.Test.:8080\r\n\r\n").await;
    assert_eq!(
        only(recorder.take(), "case").headers("host"),
        ["a.test:8080"]
    );

    // A Host named in Connection is still the Host the target gets.
    let (status, _) = ask(
        port,
        "GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: keep-alive, Host\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        only(recorder.take(), "connection: host").headers("host"),
        ["a.test"]
    );

    for bad in [
        // Two Hosts, in either order, equal or not.
        "GET /x HTTP/1.1\r\nHost: a.test\r\nHost: secure.internal\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: secure.internal\r\nHost: a.test\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\n\r\n",
        "GET http://a.test/x HTTP/1.1\r\nHost: a.test\r\nHost: secure.internal\r\n\r\n",
        // None on HTTP/1.1, also with an absolute-form target.
        "GET /x HTTP/1.1\r\n\r\n",
        "GET http://a.test/x HTTP/1.1\r\n\r\n",
        // Invalid ones.
        "GET /x HTTP/1.1\r\nHost: \r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: secure.internal@a.test\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a.test@secure.internal\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a.test,secure.internal\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a.test/x\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a.test:80:80\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a.test:\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a..test\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a%2etest\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: [::1\r\n\r\n",
        "GET ftp://a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
        "GET http://user@a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
        // A method that is not upper case: a framework may serve `delete` as the DELETE a rule or
        // policy was written against.
        "delete /x HTTP/1.1\r\nHost: a.test\r\n\r\n",
        "Delete /x HTTP/1.1\r\nHost: a.test\r\n\r\n",
    ] {
        let (status, head) = ask(port, bad).await;
        assert_eq!(status, 400, "{bad:?}: {head}");
        assert!(head.contains("x-trellis-error: bad_request"), "{head}");
    }
    assert!(
        recorder.take().is_empty(),
        "no refused request reached the target"
    );
}

#[tokio::test]
async fn http2_takes_the_authority_and_refuses_a_host_that_differs() {
    let (_trellis, recorder, port) = setup().await;
    let mut h2 = h2_connect(port).await;
    let request = |uri: &str, host: Option<&str>| {
        let mut b = Request::get(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(Full::new(Bytes::new())).unwrap()
    };
    let reply = h2_send(&mut h2, request(&format!("http://a.test:{port}/x"), None)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        only(recorder.take(), ":authority").headers("host"),
        [format!("a.test:{port}")]
    );
    for (authority, host) in [("a.test", "secure.internal"), ("secure.internal", "a.test")] {
        let reply = h2_send(
            &mut h2,
            request(
                &format!("http://{authority}:{port}/x"),
                Some(&format!("{host}:{port}")),
            ),
        )
        .await;
        assert_eq!(reply.status, 400, ":authority {authority}, host {host}");
    }
    // Any scheme but http and https is refused, as in absolute form.
    let reply = h2_send(&mut h2, request(&format!("ftp://a.test:{port}/x"), None)).await;
    assert_eq!(reply.status, 400);
    // Cookies split over several fields (HTTP/2 allows it) reach an HTTP/1.1 target as one field.
    let mut split = request(&format!("http://a.test:{port}/x"), None);
    split.headers_mut().append("cookie", "a=1".parse().unwrap());
    split.headers_mut().append("cookie", "b=2".parse().unwrap());
    assert_eq!(h2_send(&mut h2, split).await.status, 200);
    assert_eq!(
        only(recorder.take(), "cookies").headers("cookie"),
        ["a=1; b=2"]
    );
    // The same authority twice is fine.
    let reply = h2_send(
        &mut h2,
        request(
            &format!("http://a.test:{port}/x"),
            Some(&format!("A.test:{port}")),
        ),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        only(recorder.take(), "same").headers("host"),
        [format!("a.test:{port}")]
    );
}

#[tokio::test]
async fn rules_and_policies_decide_on_the_normalised_path_and_the_target_gets_it() {
    let (trellis, recorder, port) = setup().await;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n");

    // Each reaches /private/x or /admin/x on a target that decodes and resolves paths.
    for variant in [
        "/private/x",
        "/%70rivate/x",
        "/%70%72%69%76%61%74%65/x",
        "//private/x",
        "///private//x",
        "/./private/x",
        "/private/./x",
        "/static/../private/x",
        "/static/%2e%2e/private/x",
        "/static/%2E%2E/private/x",
        "/static/.%2e/private/x",
        "/%2e/private/x",
        "/../private/x",
        "/a/b/../../private/x",
        "/PRIVATE/x",
        "/Private/x",
        "/%50rivate/x",
        "/private;jsessionid=1/x",
        "/admin/x",
        "/Admin/x",
        "//admin/x",
        "/%61dmin/x",
        "/x/../admin/y",
        "/x/%2e%2e/admin/y",
        // Servlet containers ignore segment parameters: rules and denies see past them too.
        "/admin;a=b/x",
        "/Admin;jsessionid=1/x",
        "/private;a=b/x",
    ] {
        let (status, head) = ask(port, &get(variant)).await;
        assert_eq!(status, 403, "{variant}: {head}");
    }
    // Ambiguous ones are refused outright.
    for variant in [
        "/public%2F..%2Fprivate/x",
        "/private%2fx",
        "/static%5c..%5cprivate/x",
        "/static\\..\\private/x",
        "/static/..;/private/x",
        "/static/.;/private/x",
        "/static/%2e%2e;x/private/x",
        "/private%00/x",
        "/private%zz",
        "/private%4",
    ] {
        let (status, head) = ask(port, &get(variant)).await;
        assert_eq!(status, 400, "{variant}: {head}");
    }
    assert!(recorder.take().is_empty(), "nothing reached the target");

    // What is forwarded is the normalised path, the query as sent.
    let (status, _) = ask(port, &get("/public/%7euser//a/./b/../c%3f?q=%2e&r=..%2F")).await;
    assert_eq!(status, 200);
    assert_eq!(
        only(recorder.take(), "normalised").request_line(),
        "GET /public/~user/a/c%3F?q=%2e&r=..%2F HTTP/1.1"
    );
    // The access log shows the same path.
    let line = logged(&trellis, "/public/").await;
    assert!(
        line.contains("\"/public/~user/a/c%3F?q=%2e&r=..%2F\""),
        "{line}"
    );
}

#[tokio::test]
async fn only_websocket_upgrades_are_tunnelled() {
    let (_trellis, recorder, port) = setup().await;
    // An h2c upgrade to a target that would grant it: not tunnelled, not even asked for.
    let (status, head) = ask(
        port,
        "GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade, HTTP2-Settings\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{head}");
    let got = only(recorder.take(), "h2c");
    assert!(got.headers("upgrade").is_empty(), "{got:?}");
    assert!(got.headers("http2-settings").is_empty(), "{got:?}");
    assert!(
        got.headers("connection")
            .iter()
            .all(|c| !c.to_lowercase().contains("upgrade")),
        "{got:?}"
    );

    for request in [
        // A WebSocket upgrade offered with another protocol, or on a POST, or without Connection.
        "GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket, h2c\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nUpgrade: websocket\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\n\r\n",
    ] {
        let (status, _) = ask(port, request).await;
        assert_eq!(status, 200, "{request:?}");
        let got = only(recorder.take(), request);
        assert!(got.headers("upgrade").is_empty(), "{request:?}: {got:?}");
    }

    // A WebSocket upgrade goes through as exactly that.
    let (status, _) = ask(
        port,
        "GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: keep-alive, Upgrade, x-other\r\nUpgrade: WebSocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "the recorder does not speak WebSocket");
    let got = only(recorder.take(), "websocket");
    assert_eq!(got.headers("upgrade"), ["websocket"]);
    assert_eq!(got.headers("connection"), ["upgrade"]);
}

#[tokio::test]
async fn connect_asterisk_get_bodies_and_two_authorizations() {
    let (trellis, recorder, port) = setup().await;
    let (status, head) = ask(
        port,
        "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n",
    )
    .await;
    assert_eq!(status, 405, "{head}");
    assert!(head.to_lowercase().contains("allow: get, head"), "{head}");
    let (status, _) = ask(port, "GET * HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert_eq!(status, 400);
    let (status, _) = ask(
        port,
        "GET /x HTTP/1.1\r\nHost: a.test\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);
    assert!(recorder.take().is_empty());
    let connect_line = logged(&trellis, "\"CONNECT\"").await;
    assert!(
        connect_line.contains("\"responseCode\":405"),
        "{connect_line}"
    );

    let (status, _) = ask(port, "OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert_eq!(status, 200);
    assert_eq!(
        only(recorder.take(), "options").request_line(),
        "OPTIONS * HTTP/1.1"
    );

    // A GET's chunked body is forwarded, not dropped.
    let (status, _) = ask(
        port,
        "GET /x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(only(recorder.take(), "GET body").body, b"hello");

    // A length no body can have is the client's error. (hyper itself answers 2^64 - 1 and 2^64 - 2,
    // which fit its integer but not its length type, with 431: see the README's security notes.)
    for length in [
        "18446744073709551616",
        "99999999999999999999999",
        "-1",
        "1, 2",
        "0x10",
    ] {
        let (status, head) = ask(
            port,
            &format!("POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: {length}\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 400, "{length}: {head}");
    }
    assert!(recorder.take().is_empty());
}
