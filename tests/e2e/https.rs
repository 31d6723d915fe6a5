//! HTTPS listeners: certificates by SNI, ALPN, 421 for a Host on another certificate, mutual TLS, and
//! certificates rotated by reload.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::client::{get_request, h1_send, h2_send};
use crate::support::config::{forward_to, quote, service, target_group};
use crate::support::servers::h2c_with_trailers;
use crate::support::tls::{self, Issued, Pki};
use crate::support::{free_port, Echo, Trellis};

fn https_listener(port: u16, action: &str, cert: &Issued, extra_tls: &str) -> String {
    format!(
        "[[service.listener]]\nname = \"secure\"\nprotocol = \"https\"\nport = {port}\nbind = \"127.0.0.1\"\n\
         tls = {{ cert = {}, key = {}{extra_tls} }}\ndefault_action = {action}\n\n",
        quote(&cert.cert.display().to_string()),
        quote(&cert.key.display().to_string()),
    )
}

fn targets(addrs: &[String]) -> String {
    crate::support::config::targets(addrs)
}

fn path(p: &Path) -> String {
    quote(&p.display().to_string())
}

#[tokio::test]
async fn each_service_gets_its_certificate_by_sni_and_alpn_picks_the_protocol() {
    let pki = Pki::new();
    let a = pki.server("a", &["a.test"]);
    let b = pki.server("b", &["b.test"]);
    let (echo_a, echo_b) = (Echo::start("a").await, Echo::start("b").await);
    let port = free_port();
    let config = [
        service("a", &["a.test"]),
        https_listener(port, &forward_to("ga"), &a, ""),
        service("b", &["b.test"]),
        https_listener(port, &forward_to("gb"), &b, ""),
        target_group("ga", &targets(&[echo_a.addr()])),
        target_group("gb", &targets(&[echo_b.addr()])),
    ]
    .concat();
    let trellis = Trellis::start(&config, &[port]).await;

    for (name, issued, served_by) in [("a.test", &a, "a"), ("b.test", &b, "b")] {
        // HTTP/1.1 by ALPN.
        let stream = tls::connect(port, name, pki.client_config(&["http/1.1"], None))
            .await
            .unwrap();
        assert_eq!(tls::served(&stream), issued.der, "{name}");
        assert_eq!(tls::alpn(&stream).as_deref(), Some("http/1.1"));
        let mut h1 = tls::h1(stream).await;
        let reply = h1_send(&mut h1, get_request("/?echo", &[("host", name)])).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.served_by(), served_by);
        let seen = reply.json();
        assert_eq!(seen["version"], "HTTP/1.1");
        assert_eq!(seen["headers"]["x-forwarded-proto"][0], "https");

        // HTTP/2 by ALPN, to the same service.
        let stream = tls::connect(port, name, pki.client_config(&["h2", "http/1.1"], None))
            .await
            .unwrap();
        assert_eq!(tls::alpn(&stream).as_deref(), Some("h2"));
        let mut h2 = tls::h2(stream).await;
        let uri = format!("https://{name}/?echo");
        let reply = h2_send(&mut h2, get_request(&uri, &[])).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.served_by(), served_by);
    }

    // A name no service has, and no `*` service: no certificate, the handshake fails and is counted.
    let refused = tls::connect(port, "c.test", pki.client_config(&["http/1.1"], None)).await;
    assert!(refused.is_err());
    let sample = format!("trellis_tls_handshake_errors_total{{address=\"127.0.0.1:{port}\"}}");
    assert_eq!(trellis.metric(&sample).await, Some(1.0));

    // The access log (stdout by default) names the server name and the TLS version.
    let line = crate::support::eventually(
        Duration::from_secs(10),
        "an access log line for b.test",
        || {
            let found = trellis
                .stdout()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|l| l["serverNameIndication"] == "b.test");
            async move { found }
        },
    )
    .await;
    assert_eq!(line["tlsVersion"], "TLSv1.3");
    assert_eq!(line["serviceName"], "b");
}

#[tokio::test]
async fn a_stalled_handshake_is_cut_off_and_counted() {
    let pki = Pki::new();
    let site = pki.server("site", &["s.test"]);
    let echo = Echo::start("s").await;
    let port = free_port();
    let config = [
        service("s", &["s.test"]),
        https_listener(port, &forward_to("g"), &site, "").replace(
            "default_action",
            "limits = { header_timeout = \"300ms\" }\ndefault_action",
        ),
        target_group("g", &targets(&[echo.addr()])),
    ]
    .concat();
    let trellis = Trellis::start(&config, &[port]).await;
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    // The first bytes of a TLS record, then nothing.
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut buf))
        .await
        .expect("trellis closes a stalled handshake");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    let sample = format!("trellis_tls_handshake_errors_total{{address=\"127.0.0.1:{port}\"}}");
    assert_eq!(trellis.metric(&sample).await, Some(1.0));
    // The listener still serves.
    let stream = tls::connect(port, "s.test", pki.client_config(&["http/1.1"], None))
        .await
        .unwrap();
    let mut h1 = tls::h1(stream).await;
    assert_eq!(
        h1_send(&mut h1, get_request("/", &[("host", "s.test")]))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_host_on_another_certificate_is_misdirected() {
    let pki = Pki::new();
    // a.test and c.test share one certificate; b.test has its own.
    let ac = pki.server("ac", &["a.test", "c.test"]);
    let b = pki.server("b", &["b.test"]);
    let echo = Echo::start("e").await;
    let port = free_port();
    let config = [
        service("a", &["a.test"]),
        https_listener(port, &forward_to("g"), &ac, ""),
        service("c", &["c.test"]),
        https_listener(port, &forward_to("g"), &ac, ""),
        service("b", &["b.test"]),
        https_listener(port, &forward_to("g"), &b, ""),
        target_group("g", &targets(&[echo.addr()])),
    ]
    .concat();
    let _trellis = Trellis::start(&config, &[port]).await;
    let stream = tls::connect(port, "a.test", pki.client_config(&["h2"], None))
        .await
        .unwrap();
    let mut h2 = tls::h2(stream).await;
    // Same certificate: served, as browsers coalescing connections expect.
    let reply = h2_send(&mut h2, get_request("https://c.test/", &[])).await;
    assert_eq!(reply.status, 200);
    // Another certificate: 421, so the client retries on a connection of its own.
    let reply = h2_send(&mut h2, get_request("https://b.test/", &[])).await;
    reply.assert_trellis_error(421, "misdirected");
    let reply = h2_send(&mut h2, get_request("https://a.test/", &[])).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn grpc_style_h2_with_trailers_passes_end_to_end() {
    let pki = Pki::new();
    let site = pki.server("site", &["grpc.test"]);
    let backend = h2c_with_trailers().await;
    let port = free_port();
    let config = [
        service("grpc", &["grpc.test"]),
        https_listener(port, &forward_to("g"), &site, ""),
        crate::support::config::target_group_with(
            "g",
            &targets(&[backend.addr()]),
            "protocol_version = \"grpc\"",
        ),
    ]
    .concat();
    let _trellis = Trellis::start(&config, &[port]).await;
    let stream = tls::connect(port, "grpc.test", pki.client_config(&["h2"], None))
        .await
        .unwrap();
    let mut h2 = tls::h2(stream).await;
    let req = get_request(
        "https://grpc.test/pkg.Service/Call",
        &[("content-type", "application/grpc"), ("te", "trailers")],
    );
    let reply = h2_send(&mut h2, req).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-backend-protocol"), Some("h2"));
    let trailers = reply.trailers.expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "fine");
}

#[tokio::test]
async fn mutual_tls_required_and_optional() {
    let pki = Pki::new();
    let site = pki.server("site", &["m.test", "o.test"]);
    let client = pki.client("client", "client-cn", Some("spiffe://trellis.test/client"));
    let cn_only = pki.client("cn-only", "just-a-cn", None);
    let other_ca = Pki::new();
    let stranger = other_ca.client("stranger", "stranger", None);
    let echo = Echo::start("m").await;
    let (required, optional) = (free_port(), free_port());
    let ca = format!(", client_ca = {}", path(&pki.ca_file()));
    let config = [
        service("m", &["m.test"]),
        https_listener(required, &forward_to("g"), &site, &ca),
        service("o", &["o.test"]),
        https_listener(
            optional,
            &forward_to("g"),
            &site,
            &format!("{ca}, client_auth = \"optional\""),
        ),
        target_group("g", &targets(&[echo.addr()])),
    ]
    .concat();
    let _trellis = Trellis::start(&config, &[required, optional]).await;

    // Required, no certificate: refused (TLS 1.3 reports it on the first read, after the handshake).
    let without = async {
        let stream = tls::connect(required, "m.test", pki.client_config(&["http/1.1"], None))
            .await
            .ok()?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(conn);
        sender
            .send_request(get_request("/", &[("host", "m.test")]))
            .await
            .ok()
    }
    .await;
    assert!(without.is_none(), "served without a client certificate");

    // Required, a certificate from another CA: refused.
    let other = async {
        let stream = tls::connect(required, "m.test", stranger_config(&pki, &stranger))
            .await
            .ok()?;
        let mut h1 = tls::h1(stream).await;
        h1.send_request(get_request("/", &[("host", "m.test")]))
            .await
            .ok()
    }
    .await;
    assert!(other.is_none(), "served a certificate from another CA");

    // Required, a good certificate: its URI SAN reaches the target; a forged header does not.
    let stream = tls::connect(
        required,
        "m.test",
        pki.client_config(&["http/1.1"], Some(&client)),
    )
    .await
    .unwrap();
    let mut h1 = tls::h1(stream).await;
    let reply = h1_send(
        &mut h1,
        get_request(
            "/?echo",
            &[
                ("host", "m.test"),
                ("x-trellis-identity", "spiffe://forged"),
            ],
        ),
    )
    .await;
    assert_eq!(reply.status, 200);
    let seen = reply.json();
    assert_eq!(
        seen["headers"]["x-trellis-identity"],
        serde_json::json!(["spiffe://trellis.test/client"])
    );

    // Without a URI SAN the identity is the subject's common name.
    let stream = tls::connect(
        required,
        "m.test",
        pki.client_config(&["http/1.1"], Some(&cn_only)),
    )
    .await
    .unwrap();
    let mut h1 = tls::h1(stream).await;
    let seen = h1_send(&mut h1, get_request("/?echo", &[("host", "m.test")]))
        .await
        .json();
    assert_eq!(
        seen["headers"]["x-trellis-identity"],
        serde_json::json!(["just-a-cn"])
    );

    // Optional: no certificate is served without identity, and a forged one is removed.
    let stream = tls::connect(optional, "o.test", pki.client_config(&["http/1.1"], None))
        .await
        .unwrap();
    let mut h1 = tls::h1(stream).await;
    let reply = h1_send(
        &mut h1,
        get_request(
            "/?echo",
            &[("host", "o.test"), ("x-trellis-identity", "forged")],
        ),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(reply.json()["headers"].get("x-trellis-identity").is_none());
}

/// A client trusting `pki`'s CA but presenting a certificate another CA issued.
fn stranger_config(pki: &Pki, stranger: &Issued) -> std::sync::Arc<rustls::ClientConfig> {
    pki.client_config(&["http/1.1"], Some(stranger))
}

#[tokio::test]
async fn a_reload_serves_rotated_certificates_to_new_connections_only() {
    let pki = Pki::new();
    let first = pki.server("first", &["r.test"]);
    let echo = Echo::start("r").await;
    let port = free_port();
    // The listener names fixed paths; rotation replaces the files' contents.
    let live_cert = pki.dir().join("live.pem");
    let live_key = pki.dir().join("live.key");
    std::fs::copy(&first.cert, &live_cert).unwrap();
    std::fs::copy(&first.key, &live_key).unwrap();
    let live = Issued {
        cert: live_cert.clone(),
        key: live_key.clone(),
        der: first.der.clone(),
    };
    let config = [
        service("r", &["r.test"]),
        https_listener(port, &forward_to("g"), &live, ""),
        target_group("g", &targets(&[echo.addr()])),
    ]
    .concat();
    let trellis = Trellis::start(&config, &[port]).await;
    let old = tls::connect(port, "r.test", pki.client_config(&["http/1.1"], None))
        .await
        .unwrap();
    assert_eq!(tls::served(&old), first.der);
    let mut old = tls::h1(old).await;

    // A broken rotation (a key that is not the certificate's) is refused; the old certificate stays.
    let second = pki.server("second", &["r.test"]);
    std::fs::copy(&second.cert, &live_cert).unwrap();
    let (code, reply) = trellis.reload().await;
    assert_eq!(code, 422, "{reply}");
    assert!(
        reply.to_string().contains(&format!(
            "{} is not the key of the certificate in {}",
            live_key.display(),
            live_cert.display()
        )),
        "{reply}"
    );
    let stream = tls::connect(port, "r.test", pki.client_config(&["http/1.1"], None))
        .await
        .unwrap();
    assert_eq!(tls::served(&stream), first.der);

    // The key follows: the reload succeeds and new connections get the new certificate.
    std::fs::copy(&second.key, &live_key).unwrap();
    let (code, reply) = trellis.reload().await;
    assert_eq!(code, 200, "{reply}");
    let stream = tls::connect(port, "r.test", pki.client_config(&["http/1.1"], None))
        .await
        .unwrap();
    assert_eq!(tls::served(&stream), second.der);
    // The connection made before the rotation carries on.
    let reply = h1_send(&mut old, get_request("/", &[("host", "r.test")])).await;
    assert_eq!(reply.status, 200);
}

/// Over HTTP/1.1 on TLS, the 421 check and the target see the authority trellis decided on: an
/// absolute-form target's, whatever `Host` came with it.
#[tokio::test]
async fn the_421_check_and_the_target_see_the_decided_authority() {
    let pki = Pki::new();
    let a = pki.server("a", &["a.test"]);
    let b = pki.server("b", &["b.test"]);
    let echo = Echo::start("e").await;
    let port = free_port();
    let config = [
        service("a", &["a.test"]),
        https_listener(port, &forward_to("g"), &a, ""),
        service("b", &["b.test"]),
        https_listener(port, &forward_to("g"), &b, ""),
        target_group("g", &targets(&[echo.addr()])),
    ]
    .concat();
    let _trellis = Trellis::start(&config, &[port]).await;
    let ask = |request: &'static str| {
        let config = pki.client_config(&["http/1.1"], None);
        async move {
            let mut stream = tls::connect(port, "a.test", config).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut data = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut data)).await;
            String::from_utf8_lossy(&data).into_owned()
        }
    };
    // Routed as b.test on a.test's certificate: misdirected, whatever the Host says.
    let answer =
        ask("GET https://b.test/?echo HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    // Routed as a.test: the target sees a.test, not the Host sent with it.
    let answer =
        ask("GET https://a.test/?echo HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"host\":[\"a.test\"]"), "{answer}");
    assert!(!answer.contains("b.test"), "{answer}");
}

/// The server's cipher suite order wins over the client's (testssl.sh rates this).
#[tokio::test]
async fn the_server_chooses_the_cipher_suite() {
    use rustls::crypto::ring::{cipher_suite, default_provider};
    let pki = Pki::new();
    let a = pki.server("a", &["a.test"]);
    let echo = Echo::start("e").await;
    let port = free_port();
    let config = [
        service("a", &["a.test"]),
        https_listener(port, &forward_to("g"), &a, ""),
        target_group("g", &targets(&[echo.addr()])),
    ]
    .concat();
    let _trellis = Trellis::start(&config, &[port]).await;
    for (version, prefers, expected) in [
        (
            &rustls::version::TLS13,
            vec![
                cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
                cipher_suite::TLS13_AES_128_GCM_SHA256,
                cipher_suite::TLS13_AES_256_GCM_SHA384,
            ],
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
        ),
        (
            &rustls::version::TLS12,
            vec![
                cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
                cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            ],
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
    ] {
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: prefers,
            ..default_provider()
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki_root(&pki)).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let stream = tls::connect(port, "a.test", std::sync::Arc::new(client))
            .await
            .unwrap();
        let suite = stream
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .unwrap()
            .suite();
        assert_eq!(suite, expected, "{version:?}");
    }
}

/// The test CA's certificate.
fn pki_root(pki: &Pki) -> rustls::pki_types::CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(pki.ca_file()).unwrap()
}

#[tokio::test]
async fn a_returning_client_resumes_its_session_also_after_a_reload() {
    let pki = Pki::new();
    let cert = pki.server("a", &["a.test"]);
    let echo = Echo::start("a").await;
    let port = free_port();
    let config = [
        service("a", &["a.test"]),
        https_listener(port, &forward_to("web"), &cert, ""),
        target_group("web", &targets(&[echo.addr()])),
    ]
    .concat();
    let trellis = Trellis::start(&config, &[port]).await;
    // One client configuration: its session store is what lets it come back.
    let client = pki.client_config(&["http/1.1"], None);
    let visit = || async {
        let stream = tls::connect(port, "a.test", client.clone()).await.unwrap();
        let kind = stream.get_ref().1.handshake_kind();
        // A request and its answer: TLS 1.3 tickets arrive after the handshake, read with the response.
        let mut sender = tls::h1(stream).await;
        let resp = sender
            .send_request(get_request("/", &[("host", "a.test")]))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        kind
    };
    use rustls::HandshakeKind::{Full, Resumed};
    assert_eq!(visit().await, Some(Full));
    assert_eq!(visit().await, Some(Resumed));
    // A reload builds new server configurations; the session keys stay.
    assert_eq!(trellis.reload().await.0, 200);
    assert_eq!(visit().await, Some(Resumed));
}
