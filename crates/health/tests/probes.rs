//! One probe against real loopback sockets: what it asks, and the verdict and detail it gives.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{closed_port, health_check, Server};
use trellis_health::{probe, probe_address};
use trellis_targets::ProbeResult;

fn pass(detail: &str) -> ProbeResult {
    ProbeResult::pass(detail)
}

fn fail(detail: &str) -> ProbeResult {
    ProbeResult::fail(detail)
}

// --- status matchers ----------------------------------------------------------------------------

#[tokio::test]
async fn status_200_passes_the_default_matcher() {
    let server = Server::http(200).await;
    let check = health_check("matcher = \"200\"");
    assert_eq!(probe(&check, server.addr).await, pass("status 200"));
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_range_matcher_takes_any_status_inside_it() {
    let server = Server::http(204).await;
    let check = health_check("matcher = \"200-299\"");
    assert_eq!(probe(&check, server.addr).await, pass("status 204"));
    server.set_status(299);
    assert_eq!(probe(&check, server.addr).await, pass("status 299"));
    server.set_status(500);
    assert_eq!(
        probe(&check, server.addr).await,
        fail("status 500 not in 200-299")
    );
}

#[tokio::test]
async fn a_list_matcher_takes_only_the_listed_codes() {
    let server = Server::http(202).await;
    let check = health_check("matcher = \"200,202\"");
    assert_eq!(probe(&check, server.addr).await, pass("status 202"));
    server.set_status(201);
    assert_eq!(
        probe(&check, server.addr).await,
        fail("status 201 not in 200,202")
    );
    server.set_status(200);
    assert_eq!(probe(&check, server.addr).await, pass("status 200"));
}

#[tokio::test]
async fn the_default_matcher_is_200_only() {
    let server = Server::http(204).await;
    let check = health_check("path = \"/\"");
    assert_eq!(
        probe(&check, server.addr).await,
        fail("status 204 not in 200")
    );
}

// --- connection failures ------------------------------------------------------------------------

#[tokio::test]
async fn a_closed_port_is_refused() {
    let check = health_check("matcher = \"200\"");
    assert_eq!(probe(&check, closed_port()).await, fail("connect refused"));
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let server = Server::silent().await;
    let check = health_check("interval = \"1s\"\ntimeout = \"200ms\"");
    let started = Instant::now();
    let result = probe(&check, server.addr).await;
    let took = started.elapsed();
    assert_eq!(result, fail("timeout after 200ms"));
    assert_eq!(server.connections(), 1);
    assert!(
        took >= Duration::from_millis(200),
        "gave up early: {took:?}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[tokio::test]
async fn a_server_that_hangs_up_gives_no_response() {
    let server = Server::hangup().await;
    let check = health_check("timeout = \"2s\"");
    assert_eq!(
        probe(&check, server.addr).await,
        fail("connection closed before a response")
    );
    assert_eq!(server.connections(), 1);
    assert_eq!(
        server.requests(),
        1,
        "the request was sent before the hang-up"
    );
}

#[tokio::test]
async fn a_server_that_closes_at_once_fails_without_waiting_for_the_timeout() {
    // Closing with the request unread makes the kernel reset the connection, and whether the probe
    // sees the reset or the end of stream first is up to timing: either way it fails, at once.
    let server = Server::slam().await;
    let check = health_check("interval = \"30s\"\ntimeout = \"10s\"");
    let started = Instant::now();
    let result = probe(&check, server.addr).await;
    assert!(!result.passed, "{result:?}");
    assert!(
        result.detail == "connection closed before a response"
            || result.detail == "connection reset before a response",
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{result:?}");
}

// --- tcp ----------------------------------------------------------------------------------------

#[tokio::test]
async fn tcp_passes_on_connect_and_sends_nothing() {
    let server = Server::http(500).await;
    let check = health_check("protocol = \"tcp\"");
    assert_eq!(probe(&check, server.addr).await, pass("connected"));
    // The probe is over once connected; the server's accept may come a moment later.
    support::eventually("the tcp probe's connection", || {
        (server.connections() == 1).then_some(())
    })
    .await;
    assert_eq!(server.requests(), 0, "a tcp probe asks no HTTP question");
}

#[tokio::test]
async fn tcp_is_refused_on_a_closed_port() {
    let check = health_check("protocol = \"tcp\"");
    assert_eq!(probe(&check, closed_port()).await, fail("connect refused"));
}

// --- port override ------------------------------------------------------------------------------

#[tokio::test]
async fn the_health_port_is_probed_instead_of_the_traffic_port() {
    let health = Server::http(200).await;
    let traffic = closed_port();
    let check = health_check(&format!("port = {}", health.addr.port()));
    assert_eq!(probe_address(&check, traffic), health.addr);
    assert_eq!(probe(&check, traffic).await, pass("status 200"));
    let log = health.log();
    assert_eq!(log.len(), 1);
    assert_eq!(
        log[0].header("host"),
        Some(health.addr.to_string().as_str()),
        "Host names the address actually probed"
    );
}

#[tokio::test]
async fn a_live_traffic_port_does_not_help_a_dead_health_port() {
    let traffic = Server::http(200).await;
    let health_port = closed_port().port();
    let check = health_check(&format!("port = {health_port}"));
    assert_eq!(
        probe_address(&check, traffic.addr),
        SocketAddr::new(traffic.addr.ip(), health_port)
    );
    assert_eq!(probe(&check, traffic.addr).await, fail("connect refused"));
    assert_eq!(traffic.connections(), 0);
}

#[tokio::test]
async fn without_a_port_the_target_itself_is_probed() {
    let check = health_check("path = \"/\"");
    let target: SocketAddr = "127.0.0.1:4242".parse().unwrap();
    assert_eq!(probe_address(&check, target), target);
}

// --- the request --------------------------------------------------------------------------------

#[tokio::test]
async fn the_request_is_a_get_of_the_path_on_a_fresh_connection_each_time() {
    let server = Server::http(200).await;
    let check = health_check("path = \"/healthz?deep=1&x=%20y\"");
    for _ in 0..3 {
        assert_eq!(probe(&check, server.addr).await, pass("status 200"));
    }
    assert_eq!(server.connections(), 3, "one connection per probe");
    let log = server.log();
    assert_eq!(log.len(), 3);
    let host = server.addr.to_string();
    for seen in &log {
        assert_eq!(seen.request_line(), "GET /healthz?deep=1&x=%20y HTTP/1.1");
        assert_eq!(seen.header("host"), Some(host.as_str()));
        let agent = seen.header("user-agent").expect("a user-agent");
        assert!(
            agent.starts_with("trellis-health-check/"),
            "user-agent {agent:?}"
        );
        assert!(agent.len() > "trellis-health-check/".len(), "{agent:?}");
        assert_eq!(seen.header("connection"), Some("close"));
    }
}

// --- https --------------------------------------------------------------------------------------

#[tokio::test]
async fn https_accepts_a_self_signed_certificate() {
    let server = Server::https(200).await;
    let check = health_check("protocol = \"https\"\npath = \"/tls\"");
    assert_eq!(probe(&check, server.addr).await, pass("status 200"));
    let log = server.log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].request_line(), "GET /tls HTTP/1.1");
    assert_eq!(
        log[0].header("host"),
        Some(server.addr.to_string().as_str())
    );
}

#[tokio::test]
async fn https_still_judges_the_status() {
    let server = Server::https(503).await;
    let check = health_check("protocol = \"https\"");
    assert_eq!(
        probe(&check, server.addr).await,
        fail("status 503 not in 200")
    );
}

#[tokio::test]
async fn https_against_plain_http_fails_the_handshake() {
    let server = Server::http(200).await;
    let check = health_check("protocol = \"https\"\ntimeout = \"2s\"");
    let result = probe(&check, server.addr).await;
    assert!(!result.passed, "{result:?}");
    assert!(
        result.detail.starts_with("TLS handshake failed"),
        "{result:?}"
    );
}
