//! Rate limits on services and rules: bursts then `429` with `retry-after`, refill, keys (header,
//! identity), rule and service limits together, buckets across reloads, and a flood of distinct keys
//! that must leave memory and the key count bounded.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::client::{self, get_request, h1_connect, h1_send, url, Reply};
use crate::support::config::{
    fixed, forward_to, listener, quote, rate_limit, rule, rule_with, service, service_with,
    target_group, targets,
};
use crate::support::rss::rss_kib;
use crate::support::tls::{self, Pki};
use crate::support::{eventually, free_port, Echo, Trellis};

const WAIT: Duration = Duration::from_secs(10);

/// A rate low enough that no bucket refills while a test runs: one token every 100 s.
const SLOW: f64 = 0.01;

/// GET `path` on `port` with extra headers.
async fn get(client: &reqwest::Client, port: u16, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client.get(url(port, path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    client::send(req).await
}

/// The statuses of `n` GETs of `path` in a row.
async fn statuses(
    client: &reqwest::Client,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get(client, port, path, headers).await.status);
    }
    out
}

/// `trellis_rate_limited_total` of one route and scope.
fn refused(service: &str, rule: &str, scope: &str) -> String {
    format!(
        "trellis_rate_limited_total{{listener=\"web\",rule={},scope=\"{scope}\",service={}}}",
        quote(rule),
        quote(service)
    )
}

/// A `429 rate_limited` whose `retry-after` is within `seconds`.
fn assert_rate_limited(reply: &Reply, seconds: std::ops::RangeInclusive<u64>) {
    reply.assert_trellis_error(429, "rate_limited");
    let retry_after: u64 = reply
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no retry-after in seconds: {reply:?}"));
    assert!(
        seconds.contains(&retry_after),
        "retry-after {retry_after}, expected {seconds:?}"
    );
}

/// The wait of a limit at [`SLOW`] with a token taken a moment ago: 100 s, or a second less on a
/// very slow run.
const HUNDRED_SECONDS: std::ops::RangeInclusive<u64> = 99..=100;

/// A keep-alive client whose connections come from `127.0.0.N`: another source IP.
fn client_from(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .local_address(std::net::IpAddr::from([127, 0, 0, n]))
        .build()
        .expect("reqwest client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_then_429_with_retry_after_then_a_token_per_interval() {
    let echo = Echo::start("e").await;
    let port = free_port();
    let config = [
        // 20/s: a token every 50 ms; two at once.
        service_with("shop", &["*"], &rate_limit(20.0, 2, "source_ip")),
        listener(port, &forward_to("g")),
        target_group("g", &targets(&[echo.addr()])),
    ]
    .concat();
    let trellis = Trellis::start(&config, &[port]).await;

    // Three requests within one interval. A machine too busy to send them that fast gets another try
    // from another source IP, that is with a full bucket of its own.
    let mut refusals = 0.0;
    let mut forwarded = 0.0;
    let (client, start) = 'burst: {
        for n in 2..12 {
            let client = client_from(n);
            let start = Instant::now();
            let first = get(&client, port, "/", &[]).await.status;
            let second = get(&client, port, "/", &[]).await.status;
            let third = get(&client, port, "/", &[]).await;
            let statuses = [first, second, third.status];
            forwarded += statuses.iter().filter(|s| **s == 200).count() as f64;
            if start.elapsed() < Duration::from_millis(50) {
                assert_eq!((first, second), (200, 200), "the burst");
                // Less than 50 ms to wait, rounded up to whole seconds.
                assert_rate_limited(&third, 1..=1);
                refusals += 1.0;
                break 'burst (client, start);
            }
            refusals += statuses.iter().filter(|s| **s == 429).count() as f64;
        }
        panic!("never managed three requests within 50 ms");
    };
    assert_eq!(
        trellis.metric(&refused("shop", "default", "service")).await,
        Some(refusals)
    );
    let answered_4xx = "trellis_requests_total{code_class=\"4xx\",listener=\"web\",rule=\"default\",service=\"shop\"}";
    assert_eq!(trellis.metric(answered_4xx).await, Some(refusals));

    // Refusals take nothing: polling gets the next token as soon as it is due, one interval after the
    // first request (trellis saw it after `start`).
    eventually(WAIT, "a token back", || {
        let client = client.clone();
        async move { (get(&client, port, "/", &[]).await.status == 200).then_some(()) }
    })
    .await;
    let refilled = start.elapsed();
    assert!(
        refilled >= Duration::from_millis(50),
        "a token came back after {refilled:?}, before one interval"
    );

    // Counted and logged like any answer, with the reason.
    let line = eventually(WAIT, "the 429 in the access log", || {
        let found = trellis
            .stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["responseCode"] == 429);
        async move { found }
    })
    .await;
    assert_eq!(line["failureReason"], "rate_limited");
    assert_eq!(line["serviceName"], "shop");
    assert_eq!(line["ruleName"], "default");
    assert_eq!(line["targetGroupName"], "-");
    assert_eq!(
        echo_hits(&trellis).await,
        forwarded + 1.0,
        "refused requests never reach a target"
    );
}

async fn echo_hits(trellis: &Trellis) -> f64 {
    trellis
        .metric("trellis_target_group_requests_total{code_class=\"2xx\",target_group=\"g\"}")
        .await
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_keys_give_each_value_its_own_bucket_and_one_to_requests_without() {
    let port = free_port();
    let config = [
        service_with("shop", &["*"], &rate_limit(SLOW, 2, "header:x-api-key")),
        listener(port, &fixed(200, "ok")),
    ]
    .concat();
    let _trellis = Trellis::start(&config, &[port]).await;
    let client = client::http1();

    let alice = [("x-api-key", "alice")];
    let bob = [("X-Api-Key", "bob")];
    assert_eq!(
        statuses(&client, port, "/", &alice, 3).await,
        [200, 200, 429]
    );
    assert_eq!(
        statuses(&client, port, "/", &bob, 3).await,
        [200, 200, 429],
        "bob's bucket is his own"
    );
    assert_eq!(get(&client, port, "/", &alice).await.status, 429);
    // Without the header: one shared bucket, whoever sends them.
    assert_eq!(statuses(&client, port, "/", &[], 2).await, [200, 200]);
    let other_client = client::http1();
    assert_eq!(get(&other_client, port, "/", &[]).await.status, 429);
    assert_eq!(
        get(&other_client, port, "/", &[("x-api-key", "carol")])
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_limit_holds_only_the_requests_its_rule_matched() {
    let port = free_port();
    let config = [
        service("shop", &["*"]),
        listener(port, &fixed(200, "default")),
        rule_with(
            "api",
            10,
            "{ path = { prefix = \"/api/\" } }",
            &fixed(200, "api"),
            &rate_limit(SLOW, 1, "source_ip"),
        ),
    ]
    .concat();
    let trellis = Trellis::start(&config, &[port]).await;
    let client = client::http1();

    assert_eq!(get(&client, port, "/api/a", &[]).await.text(), "api");
    assert_rate_limited(&get(&client, port, "/api/b", &[]).await, HUNDRED_SECONDS);
    assert_eq!(statuses(&client, port, "/other", &[], 5).await, [200; 5]);
    assert_eq!(
        trellis.metric(&refused("shop", "api", "rule")).await,
        Some(1.0)
    );
    assert_eq!(
        trellis.metric(&refused("shop", "default", "service")).await,
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_and_rule_limits_both_apply_the_service_first() {
    let port = free_port();
    let config = [
        service_with("shop", &["*"], &rate_limit(SLOW, 3, "source_ip")),
        listener(port, &fixed(200, "default")),
        rule_with(
            "api",
            10,
            "{ path = { prefix = \"/api/\" } }",
            &fixed(200, "api"),
            &rate_limit(SLOW, 1, "source_ip"),
        ),
    ]
    .concat();
    let trellis = Trellis::start(&config, &[port]).await;
    let client = client::http1();

    // Service: 3 tokens, rule: 1.
    assert_eq!(get(&client, port, "/api/a", &[]).await.status, 200);
    // The rule has none left; the service's token is spent all the same.
    assert_rate_limited(&get(&client, port, "/api/b", &[]).await, HUNDRED_SECONDS);
    assert_eq!(get(&client, port, "/", &[]).await.status, 200);
    // Now the service has none left: every route is refused.
    assert_rate_limited(&get(&client, port, "/", &[]).await, HUNDRED_SECONDS);
    assert_rate_limited(&get(&client, port, "/api/c", &[]).await, HUNDRED_SECONDS);

    assert_eq!(
        trellis.metric(&refused("shop", "api", "rule")).await,
        Some(1.0)
    );
    assert_eq!(
        trellis.metric(&refused("shop", "api", "service")).await,
        Some(1.0)
    );
    assert_eq!(
        trellis.metric(&refused("shop", "default", "service")).await,
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_buckets_of_unchanged_limits_and_refills_changed_ones() {
    let port = free_port();
    let layout = |service_burst: u32, rule_burst: u32, teapot: bool| {
        let mut parts = vec![
            service_with(
                "shop",
                &["*"],
                &rate_limit(SLOW, service_burst, "header:x-user"),
            ),
            listener(port, &fixed(200, "default")),
            rule_with(
                "api",
                10,
                "{ path = { prefix = \"/api/\" } }",
                &fixed(200, "api"),
                &rate_limit(SLOW, rule_burst, "source_ip"),
            ),
        ];
        if teapot {
            parts.push(rule(
                "teapot",
                20,
                "{ path = { exact = \"/teapot\" } }",
                &fixed(418, "tea"),
            ));
        }
        parts.concat()
    };
    let trellis = Trellis::start(&layout(2, 1, false), &[port]).await;
    let client = client::http1();
    let user = |name: &'static str| [("x-user", name)];

    assert_eq!(
        statuses(&client, port, "/", &user("u1"), 3).await,
        [200, 200, 429]
    );
    assert_eq!(get(&client, port, "/api/", &user("u2")).await.status, 200);
    assert_eq!(get(&client, port, "/api/", &user("u3")).await.status, 429);

    // Another rule on the listener, the limits as they were: the buckets stay as they are.
    trellis.write_config(&layout(2, 1, true));
    let (status, body) = trellis.reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(&client, port, "/teapot", &user("u4")).await.status, 418);
    assert_eq!(get(&client, port, "/", &user("u1")).await.status, 429);
    assert_eq!(get(&client, port, "/api/", &user("u5")).await.status, 429);

    // Both limits changed: they start over with full buckets of the new size.
    trellis.write_config(&layout(3, 2, true));
    let (status, body) = trellis.reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        statuses(&client, port, "/", &user("u1"), 4).await,
        [200, 200, 200, 429]
    );
    assert_eq!(get(&client, port, "/api/", &user("u6")).await.status, 200);
    assert_eq!(get(&client, port, "/api/", &user("u7")).await.status, 200);
    assert_eq!(get(&client, port, "/api/", &user("u8")).await.status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_keys_are_the_client_certificates_and_anonymous_callers_share_one() {
    let pki = Pki::new();
    let site = pki.server("site", &["m.test"]);
    let alice = pki.client("alice", "alice", Some("spiffe://trellis.test/alice"));
    let bob = pki.client("bob", "bob", None);
    let port = free_port();
    let config = [
        service_with("m", &["m.test"], &rate_limit(SLOW, 1, "identity")),
        format!(
            "[[service.listener]]\nname = \"web\"\nprotocol = \"https\"\nport = {port}\nbind = \"127.0.0.1\"\n\
             tls = {{ cert = {}, key = {}, client_ca = {}, client_auth = \"optional\" }}\n\
             default_action = {}\n\n",
            quote(&site.cert.display().to_string()),
            quote(&site.key.display().to_string()),
            quote(&pki.ca_file().display().to_string()),
            fixed(200, "ok"),
        ),
    ]
    .concat();
    let trellis = Trellis::start(&config, &[port]).await;

    // Each request on a connection of its own: the identity is the certificate's, not the connection's.
    let status = |who: Option<&tls::Issued>| {
        let config = pki.client_config(&["http/1.1"], who);
        async move {
            let stream = tls::connect(port, "m.test", config).await.expect("TLS");
            let mut h1 = tls::h1(stream).await;
            h1_send(&mut h1, get_request("/", &[("host", "m.test")]))
                .await
                .status
        }
    };
    assert_eq!(status(Some(&alice)).await, 200);
    assert_eq!(status(Some(&alice)).await, 429);
    assert_eq!(status(Some(&bob)).await, 200, "bob is someone else");
    assert_eq!(status(None).await, 200);
    assert_eq!(
        status(None).await,
        429,
        "anonymous callers share one bucket"
    );
    assert_eq!(
        trellis
            .metric("trellis_rate_limited_total{listener=\"web\",rule=\"default\",scope=\"service\",service=\"m\"}")
            .await,
        Some(2.0)
    );
}

/// Two floods of 100,000 requests, each with a key of its own, pipelined over 8 keep-alive connections:
/// every one is admitted (a new key has a full bucket), the limiter never holds more than its cap of
/// 100,000 keys, the process's memory grows by a few MB with the first flood and not again with the
/// second, and a client being held back stays held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_100k_distinct_keys_leave_memory_and_the_key_count_bounded() {
    const KEYS: usize = 100_000;
    const CONNECTIONS: usize = 8;
    const CAP: f64 = 100_000.0;
    let port = free_port();
    let config = [
        "[access_log]\ndestination = \"off\"\n\n".to_owned(),
        // Three tokens a key; a flood key takes one, so its bucket is fuller than a held-back client's.
        service_with("shop", &["*"], &rate_limit(SLOW, 3, "header:x-key")),
        listener(port, &fixed(200, "ok")),
    ]
    .concat();
    let trellis = Trellis::start(&config, &[port]).await;
    let keys =
        "trellis_rate_limit_keys{listener=\"-\",rule=\"-\",scope=\"service\",service=\"shop\"}";

    // A client that has used its burst.
    let (mut sender, _conn) = h1_connect(port).await;
    let held = [("x-key", "held-back")];
    for expected in [200, 200, 200, 429] {
        let reply = h1_send(&mut sender, get_request("/", &held)).await;
        assert_eq!(reply.status, expected);
    }
    assert_eq!(trellis.metric(keys).await, Some(1.0));
    let mut rss = vec![rss_kib(trellis.pid()).expect("trellis RSS")];

    for round in 0..2 {
        let mut streams = Vec::new();
        for _ in 0..CONNECTIONS {
            streams.push(
                TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("connect"),
            );
        }
        let started = Instant::now();
        let tasks: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(c, stream)| {
                let mut requests = Vec::new();
                let mut n = 0;
                for i in (c..KEYS).step_by(CONNECTIONS) {
                    let request =
                        format!("GET / HTTP/1.1\r\nhost: shop\r\nx-key: flood-{round}-{i}\r\n\r\n");
                    requests.extend_from_slice(request.as_bytes());
                    n += 1;
                }
                tokio::spawn(pipelined(stream, requests, n))
            })
            .collect();
        let (mut admitted, mut refused) = (0, 0);
        for task in tasks {
            let (ok, other) = task.await.expect("flood connection");
            admitted += ok;
            refused += other;
        }
        let took = started.elapsed();
        rss.push(rss_kib(trellis.pid()).expect("trellis RSS"));
        let held_keys = trellis.metric(keys).await.expect("key count");
        eprintln!(
            "flood {round} of {KEYS} distinct keys: {took:?}, trellis RSS {} KiB -> {} KiB, {held_keys} keys held",
            rss[round],
            rss[round + 1]
        );
        assert_eq!(
            (admitted, refused),
            (KEYS, 0),
            "every new key has a full bucket"
        );
        assert!(held_keys <= CAP, "{held_keys} keys, over the cap");
        assert!(
            held_keys >= 0.75 * CAP,
            "{held_keys} keys: the flood's keys should have filled the limiter up to near its cap"
        );
    }
    assert!(
        rss[1].saturating_sub(rss[0]) < 24 * 1024,
        "the first flood grew RSS from {} KiB to {} KiB",
        rss[0],
        rss[1]
    );
    assert!(
        rss[2].saturating_sub(rss[1]) < 2 * 1024,
        "the second flood grew RSS again, from {} KiB to {} KiB",
        rss[1],
        rss[2]
    );
    let reply = h1_send(&mut sender, get_request("/", &held)).await;
    assert_eq!(
        reply.status, 429,
        "the floods evicted the bucket of a client being held back"
    );
}

/// Writes `requests` (`n` of them) on `stream` without waiting for answers, and counts the answers'
/// statuses as they come: (200s, others).
async fn pipelined(stream: TcpStream, requests: Vec<u8>, n: usize) -> (usize, usize) {
    const STATUS_LINE: &[u8] = b"HTTP/1.1 ";
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        write.write_all(&requests).await.expect("write requests");
        write
    });
    let (mut ok, mut other) = (0, 0);
    let mut pending = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    while ok + other < n {
        let got = tokio::time::timeout(WAIT, read.read(&mut buf))
            .await
            .expect("answers keep coming")
            .expect("read answers");
        assert!(
            got > 0,
            "trellis closed the connection after {} answers",
            ok + other
        );
        pending.extend_from_slice(&buf[..got]);
        // Every complete status line; a partial one stays for the next read.
        let mut consumed = 0;
        while let Some(at) = pending[consumed..]
            .windows(STATUS_LINE.len())
            .position(|w| w == STATUS_LINE)
        {
            let code = consumed + at + STATUS_LINE.len();
            if pending.len() < code + 3 {
                break;
            }
            if &pending[code..code + 3] == b"200" {
                ok += 1;
            } else {
                other += 1;
            }
            consumed = code + 3;
        }
        pending.drain(..consumed);
    }
    drop(writer.await.expect("writer"));
    (ok, other)
}
