//! The access log: every field of a forwarded request, a fixed response and a 502; rotation with
//! SIGUSR1; destinations changed by reload; a client that leaves before its answer.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::support::client::{self, send};
use crate::support::config::{
    fixed, forward_to, listener, quote, rule, service, target_group, target_group_with, targets,
};
use crate::support::servers::{closed_port_addr, silent};
use crate::support::{eventually, free_port, Echo, Trellis};

const WAIT: Duration = Duration::from_secs(10);

/// The JSON lines of `text`: whole lines only, as a line being written may be read half way.
fn lines(text: &str) -> Vec<Value> {
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn file_lines(path: &Path) -> Vec<Value> {
    lines(&std::fs::read_to_string(path).unwrap_or_default())
}

/// Waits until `path` holds `n` lines and returns them.
async fn wait_lines(path: &Path, n: usize) -> Vec<Value> {
    eventually(WAIT, &format!("{n} lines in {}", path.display()), || {
        let found = file_lines(path);
        async move { (found.len() >= n).then_some(found) }
    })
    .await
}

fn access_log(destination: &str) -> String {
    format!("[access_log]\ndestination = {}\n\n", quote(destination))
}

fn ms(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[tokio::test]
async fn every_field_of_a_forwarded_request_a_fixed_response_and_a_502() {
    let echo = Echo::start("logged").await;
    let dead = closed_port_addr();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let port = free_port();
    let config = [
        access_log(log.to_str().unwrap()),
        service("shop", &["shop.internal"]),
        listener(port, &forward_to("g")),
        rule(
            "gone",
            10,
            "{ path = { exact = \"/old\" } }",
            &fixed(410, "gone"),
        ),
        rule(
            "broken",
            20,
            "{ path = { prefix = \"/dead\" } }",
            &forward_to("dead"),
        ),
        target_group("g", &targets(&[echo.addr()])),
        target_group("dead", &targets(std::slice::from_ref(&dead))),
    ]
    .concat();
    let trellis = Trellis::start(&config, &[port]).await;
    let c = client::http1();
    let before = SystemTime::now() - Duration::from_millis(1);
    let forwarded = send(
        c.post(client::url(port, "/items?x=1"))
            .header("host", "shop.internal")
            .header("user-agent", "e2e/1")
            .header("x-request-id", "req-1")
            .body("hello"),
    )
    .await;
    assert_eq!(forwarded.status, 200);
    let fixed_reply = send(
        c.get(client::url(port, "/old"))
            .header("host", "shop.internal")
            .header("user-agent", "e2e/2"),
    )
    .await;
    assert_eq!(fixed_reply.status, 410);
    let failed = send(
        c.get(client::url(port, "/dead/x"))
            .header("host", "shop.internal")
            .header("user-agent", "e2e/3"),
    )
    .await;
    failed.assert_trellis_error(502, "connect_failed");
    let after = SystemTime::now() + Duration::from_millis(1);

    let found = wait_lines(&log, 3).await;
    assert_eq!(found.len(), 3, "{found:#?}");
    for line in &found {
        assert_eq!(line.as_object().unwrap().len(), 25, "{line}");
        assert!(
            line["queueWaitDuration"].is_null(),
            "no concurrency limit: {line}"
        );
        assert_eq!(line["authDeniedReason"], "-");
        let start = humantime::parse_rfc3339(line["startTime"].as_str().unwrap()).unwrap();
        assert!(before <= start && start <= after, "{line}");
        let source = line["sourceIpPort"].as_str().unwrap();
        let (ip, client_port) = source.rsplit_once(':').unwrap();
        assert_eq!(ip, "127.0.0.1");
        assert!(client_port.parse::<u16>().unwrap() > 0);
        assert_eq!(line["protocol"], "HTTP/1.1");
        assert_eq!(line["hostHeader"], "shop.internal");
        assert_eq!(line["serverNameIndication"], "-");
        assert_eq!(line["tlsVersion"], "-");
        assert_eq!(line["serviceName"], "shop");
        assert_eq!(line["listenerName"], "web");
        assert!(ms(&line["duration"]) >= 0.0);
    }

    let f = &found[0];
    assert_eq!(f["targetIpPort"], echo.addr());
    assert_eq!(f["requestMethod"], "POST");
    assert_eq!(f["requestPath"], "/items?x=1");
    assert_eq!(f["responseCode"], 200);
    assert_eq!(f["bytesReceived"], 5);
    assert_eq!(f["bytesSent"], forwarded.body.len());
    assert!(!forwarded.body.is_empty());
    let (total, to_target, from_target) = (
        ms(&f["duration"]),
        ms(&f["requestToTargetDuration"]),
        ms(&f["responseFromTargetDuration"]),
    );
    assert!(to_target > 0.0 && to_target <= total, "{f}");
    assert!(from_target >= 0.0 && from_target <= total, "{f}");
    assert_eq!(f["userAgent"], "e2e/1");
    assert_eq!(f["ruleName"], "default");
    assert_eq!(f["targetGroupName"], "g");
    assert_eq!(f["failureReason"], "-");
    assert_eq!(f["requestId"], "req-1");
    assert_eq!(f["tries"], 1);

    let x = &found[1];
    assert_eq!(x["targetIpPort"], "-");
    assert_eq!(x["requestMethod"], "GET");
    assert_eq!(x["requestPath"], "/old");
    assert_eq!(x["responseCode"], 410);
    assert_eq!(x["bytesReceived"], 0);
    assert_eq!(x["bytesSent"], 4);
    assert!(x["requestToTargetDuration"].is_null());
    assert!(x["responseFromTargetDuration"].is_null());
    assert_eq!(x["userAgent"], "e2e/2");
    assert_eq!(x["ruleName"], "gone");
    assert_eq!(x["targetGroupName"], "-");
    assert_eq!(x["failureReason"], "-");
    assert_eq!(x["requestId"], "-");
    assert_eq!(x["tries"], 0, "a fixed response goes to no target");

    let e = &found[2];
    assert_eq!(e["targetIpPort"], dead);
    assert_eq!(e["requestPath"], "/dead/x");
    assert_eq!(e["responseCode"], 502);
    assert_eq!(e["bytesReceived"], 0);
    assert_eq!(e["bytesSent"], failed.body.len());
    assert!(e["requestToTargetDuration"].is_null());
    assert!(e["responseFromTargetDuration"].is_null());
    assert_eq!(e["userAgent"], "e2e/3");
    assert_eq!(e["ruleName"], "broken");
    assert_eq!(e["targetGroupName"], "dead");
    assert_eq!(e["failureReason"], "connect_failed");
    assert_eq!(e["tries"], 1, "its only target refused");
    // The id trellis generated and sent on (there was no target to receive it).
    assert_eq!(e["requestId"].as_str().unwrap().len(), 32);

    assert_eq!(
        trellis.metric("trellis_access_log_lines_total").await,
        Some(3.0)
    );
    assert_eq!(
        trellis.metric("trellis_access_log_dropped_total").await,
        Some(0.0)
    );
}

#[tokio::test]
async fn sigusr1_reopens_the_file_without_losing_a_line() {
    let echo = Echo::start("rotated").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let port = free_port();
    let config = [
        access_log(log.to_str().unwrap()),
        service("s", &["*"]),
        listener(port, &forward_to("g")),
        target_group("g", &targets(&[echo.addr()])),
    ]
    .concat();
    let trellis = Trellis::start(&config, &[port]).await;
    const REQUESTS: usize = 300;
    // Requests keep coming while the file is moved and reopened, as under logrotate.
    let sender = tokio::spawn(async move {
        let c = client::http1();
        for i in 0..REQUESTS {
            let reply = send(c.get(client::url(port, &format!("/{i}")))).await;
            assert_eq!(reply.status, 200);
        }
    });
    wait_lines(&log, 50).await;
    std::fs::rename(&log, &rotated).unwrap();
    trellis.signal(libc::SIGUSR1);
    sender.await.unwrap();

    let total = eventually(WAIT, "every line in one of the two files", || {
        let (old, new) = (file_lines(&rotated), file_lines(&log));
        async move { (old.len() + new.len() == REQUESTS).then_some((old, new)) }
    })
    .await;
    let (old, new) = total;
    assert!(old.len() >= 50, "{} lines before the rotation", old.len());
    assert!(!new.is_empty(), "nothing written to the reopened file");
    // In order, none twice: the paths are /0 … /299.
    let paths: Vec<String> = old
        .iter()
        .chain(&new)
        .map(|l| l["requestPath"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..REQUESTS).map(|i| format!("/{i}")).collect();
    assert_eq!(paths, expected);
    assert!(trellis.stderr().contains("access log reopened"));
}

#[tokio::test]
async fn reload_moves_the_log_between_stdout_off_and_a_file() {
    let echo = Echo::start("moved").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let port = free_port();
    let body = [
        service("s", &["*"]),
        listener(port, &forward_to("g")),
        target_group("g", &targets(&[echo.addr()])),
    ]
    .concat();
    // No [access_log] table: stdout, the default.
    let trellis = Trellis::start(&body, &[port]).await;
    let c = client::http1();
    assert_eq!(send(c.get(client::url(port, "/one"))).await.status, 200);
    eventually(WAIT, "the line on stdout", || {
        let found = lines(&trellis.stdout());
        async move { (found.len() == 1 && found[0]["requestPath"] == "/one").then_some(()) }
    })
    .await;

    trellis.write_config(&[access_log("off"), body.clone()].concat());
    assert_eq!(trellis.reload().await.0, 200);
    assert_eq!(send(c.get(client::url(port, "/two"))).await.status, 200);

    trellis.write_config(&[access_log(log.to_str().unwrap()), body.clone()].concat());
    assert_eq!(trellis.reload().await.0, 200);
    assert_eq!(send(c.get(client::url(port, "/three"))).await.status, 200);
    let in_file = wait_lines(&log, 1).await;
    assert_eq!(in_file.len(), 1);
    assert_eq!(in_file[0]["requestPath"], "/three");
    // "off" logged nothing anywhere: stdout still has only the first request.
    let on_stdout = lines(&trellis.stdout());
    assert_eq!(on_stdout.len(), 1, "{on_stdout:#?}");
    assert_eq!(
        trellis.metric("trellis_access_log_lines_total").await,
        Some(2.0)
    );

    // A file that cannot be opened fails the reload and keeps the running log.
    let unwritable = dir.path().join("no/such/dir/access.log");
    trellis.write_config(&[access_log(unwritable.to_str().unwrap()), body].concat());
    let (code, reply) = trellis.reload().await;
    assert_eq!(code, 500, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("access log"),
        "{reply}"
    );
    assert_eq!(send(c.get(client::url(port, "/four"))).await.status, 200);
    let in_file = wait_lines(&log, 2).await;
    assert_eq!(in_file[1]["requestPath"], "/four");
}

#[tokio::test]
async fn a_client_that_leaves_before_the_answer_is_logged_as_499() {
    let backend = silent().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let port = free_port();
    let config = [
        access_log(log.to_str().unwrap()),
        service("s", &["*"]),
        listener(port, &forward_to("slow")),
        target_group_with(
            "slow",
            &targets(&[backend.addr()]),
            "response_timeout = \"30s\"",
        ),
    ]
    .concat();
    let trellis = Trellis::start(&config, &[port]).await;
    let c = client::http1();
    let gave_up = c
        .get(client::url(port, "/waiting"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(gave_up.is_err());
    let found = wait_lines(&log, 1).await;
    let line = &found[0];
    assert_eq!(line["responseCode"], 499);
    assert_eq!(line["failureReason"], "client_closed");
    assert_eq!(line["targetGroupName"], "slow");
    // The target got the request: the log says which target, and the request id it was sent with.
    assert_eq!(line["targetIpPort"], backend.addr());
    assert_eq!(line["requestId"].as_str().map(str::len), Some(32), "{line}");
    assert_eq!(line["bytesSent"], 0);
    assert!(ms(&line["duration"]) >= 250.0, "{line}");
    let sample = "trellis_requests_total{code_class=\"4xx\",listener=\"web\",rule=\"default\",service=\"s\"}";
    assert_eq!(trellis.metric(sample).await, Some(1.0));
}

#[tokio::test]
async fn every_line_is_written_before_exit() {
    let echo = Echo::start("last").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let port = free_port();
    let config = [
        access_log(log.to_str().unwrap()),
        service("s", &["*"]),
        listener(port, &forward_to("g")),
        target_group("g", &targets(&[echo.addr()])),
    ]
    .concat();
    let mut trellis = Trellis::start(&config, &[port]).await;
    let c = client::http1();
    for i in 0..50 {
        assert_eq!(
            send(c.get(client::url(port, &format!("/{i}"))))
                .await
                .status,
            200
        );
    }
    drop(c);
    trellis.signal(libc::SIGTERM);
    assert!(trellis.wait_exit(WAIT).await.success());
    assert_eq!(file_lines(&log).len(), 50);
}
