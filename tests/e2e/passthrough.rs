//! `tls_passthrough` listeners: the SNI picks the service, the TLS stream goes through untouched to a
//! target that terminates TLS itself, which the client verifies.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::client::{get_request, h1_send};
use crate::support::config::{forward_to, quote, service, target_group_with, targets};
use crate::support::tls::{self, Pki};
use crate::support::{eventually, free_port, Trellis};

fn passthrough_listener(port: u16, group: &str) -> String {
    format!(
        "[[service.listener]]\nname = \"pass\"\nprotocol = \"tls_passthrough\"\nport = {port}\nbind = \"127.0.0.1\"\n\
         default_action = {}\n\n",
        forward_to(group)
    )
}

fn tcp_group(name: &str, addrs: &[String]) -> String {
    target_group_with(
        name,
        &targets(addrs),
        &format!("protocol = {}", quote("tcp")),
    )
}

#[tokio::test]
async fn the_sni_picks_the_service_and_the_target_terminates_tls() {
    let pki = Pki::new();
    let cert = pki.server("backend", &["p.test"]);
    let other = pki.server("other", &["o.test"]);
    let (one, two) = (
        tls::backend(&cert, "one").await,
        tls::backend(&cert, "two").await,
    );
    let o = tls::backend(&other, "o").await;
    let port = free_port();
    let config = [
        service("p", &["p.test"]),
        passthrough_listener(port, "pool"),
        service("o", &["o.test"]),
        passthrough_listener(port, "other"),
        tcp_group("pool", &[one.clone(), two.clone()]),
        tcp_group("other", &[o]),
    ]
    .concat();
    let trellis = Trellis::start(&config, &[port]).await;

    let mut seen = Vec::new();
    for _ in 0..4 {
        let stream = tls::connect(port, "p.test", pki.client_config(&["http/1.1"], None))
            .await
            .expect("the target's certificate verifies through trellis");
        // The certificate is the target's own: trellis never terminated TLS.
        assert_eq!(tls::served(&stream), cert.der);
        let mut h1 = tls::h1(stream).await;
        let reply = h1_send(&mut h1, get_request("/", &[("host", "p.test")])).await;
        assert_eq!(reply.status, 200);
        seen.push(reply.text());
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "hello from one over TLS",
            "hello from one over TLS",
            "hello from two over TLS",
            "hello from two over TLS"
        ]
    );
    let stream = tls::connect(port, "o.test", pki.client_config(&["http/1.1"], None))
        .await
        .unwrap();
    assert_eq!(tls::served(&stream), other.der);

    // No service for the name, no name at all (connecting by address), not TLS: closed and counted.
    assert!(tls::connect(port, "q.test", pki.client_config(&[], None))
        .await
        .is_err());
    assert!(
        tls::connect(port, "127.0.0.1", pki.client_config(&[], None))
            .await
            .is_err()
    );
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: p.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), plain.read(&mut buf))
        .await
        .expect("closed");
    assert!(matches!(read, Ok(0) | Err(_)));
    for reason in ["unknown_sni", "no_sni", "not_tls"] {
        let sample = format!(
            "trellis_tls_passthrough_rejected_total{{address=\"127.0.0.1:{port}\",reason=\"{reason}\"}}"
        );
        let value = eventually(Duration::from_secs(10), &sample, || {
            let trellis = &trellis;
            let sample = sample.clone();
            async move { trellis.metric(&sample).await }
        })
        .await;
        assert_eq!(value, 1.0, "{reason}");
    }
}

#[tokio::test]
async fn a_dead_target_is_skipped_and_health_checked_by_tcp() {
    let pki = Pki::new();
    let cert = pki.server("backend", &["p.test"]);
    let alive = tls::backend(&cert, "alive").await;
    let dead = crate::support::servers::closed_port_addr();
    let port = free_port();
    let config = [
        service("p", &["p.test"]),
        passthrough_listener(port, "pool"),
        format!(
            "[[target_group]]\nname = \"pool\"\nprotocol = \"tcp\"\ntargets = {}\n\
             [target_group.health_check]\nenabled = true\nprotocol = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\n\
             healthy_threshold = 1\nunhealthy_threshold = 1\n\n",
            targets(&[alive.clone(), dead.clone()])
        ),
    ]
    .concat();
    let trellis = Trellis::start(&config, &[port]).await;
    trellis
        .wait_state("pool", &dead, "unhealthy", Duration::from_secs(10))
        .await;
    trellis
        .wait_state("pool", &alive, "healthy", Duration::from_secs(10))
        .await;
    for _ in 0..4 {
        let stream = tls::connect(port, "p.test", pki.client_config(&["http/1.1"], None))
            .await
            .unwrap();
        let mut h1 = tls::h1(stream).await;
        let reply = h1_send(&mut h1, get_request("/", &[("host", "p.test")])).await;
        assert_eq!(reply.text(), "hello from alive over TLS");
    }
}
