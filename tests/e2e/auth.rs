//! Auth policies: the network's and the service's must both allow; deny wins; identities from mutual
//! TLS and from verified JWTs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::support::client::{self, get_request, h1_send, send};
use crate::support::config::{forward_to, listener, quote, service, target_group, targets};
use crate::support::tls::{self, Pki};
use crate::support::{eventually, free_port, Echo, Trellis};

fn policy(name: &str, statements: &[&str]) -> String {
    let mut out = format!("[[auth_policy]]\nname = {}\n", quote(name));
    for s in statements {
        out.push_str(&format!("[[auth_policy.statement]]\n{s}\n"));
    }
    out + "\n"
}

/// `[[service]]` with an auth policy attached.
fn guarded_service(name: &str, hosts: &[&str], policy: &str) -> String {
    service(name, hosts).replacen("\n\n", &format!("\nauth_policy = {}\n\n", quote(policy)), 1)
}

#[tokio::test]
async fn the_network_and_the_service_must_both_allow_and_deny_wins() {
    let echo = Echo::start("a").await;
    let port = free_port();
    let config = [
        "[network]\nauth_policy = \"network\"\n\n".to_string(),
        policy(
            "network",
            &[
                "effect = \"allow\"\nsource_cidrs = [\"127.0.0.0/8\"]",
                "effect = \"deny\"\npaths = [\"/secret*\"]",
            ],
        ),
        policy(
            "readers",
            &["effect = \"allow\"\nmethods = [\"GET\", \"HEAD\"]"],
        ),
        guarded_service("shop", &["shop.test"], "readers"),
        listener(port, &forward_to("g")),
        service("open", &["open.test"]),
        listener(port, &forward_to("g")),
        target_group("g", &targets(&[echo.addr()])),
    ]
    .concat();
    let trellis = Trellis::start(&config, &[port]).await;
    let c = client::http1();
    let at = |host: &str, method: reqwest::Method, path: &str| {
        c.request(method, client::url(port, path))
            .header("host", host)
    };
    assert_eq!(
        send(at("shop.test", reqwest::Method::GET, "/items"))
            .await
            .status,
        200
    );
    // The service's policy allows no POST.
    let denied = send(at("shop.test", reqwest::Method::POST, "/items")).await;
    denied.assert_trellis_error(403, "access_denied");
    // The network's deny wins over both allows.
    let denied = send(at("shop.test", reqwest::Method::GET, "/secret/plans")).await;
    denied.assert_trellis_error(403, "access_denied");
    // No service policy: the network's alone decides.
    assert_eq!(
        send(at("open.test", reqwest::Method::POST, "/x"))
            .await
            .status,
        200
    );
    send(at("open.test", reqwest::Method::GET, "/secret"))
        .await
        .assert_trellis_error(403, "access_denied");

    let lines = eventually(Duration::from_secs(10), "five access log lines", || {
        let lines = trellis.access_log_lines();
        async move { (lines.len() == 5).then_some(lines) }
    })
    .await;
    let reasons: Vec<&str> = lines
        .iter()
        .map(|l| l["authDeniedReason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "-",
            "no statement of auth policy \"readers\" allows",
            "statement 1 of auth policy \"network\" denies",
            "-",
            "statement 1 of auth policy \"network\" denies",
        ]
    );
    let sample = "trellis_requests_total{code_class=\"4xx\",listener=\"web\",rule=\"default\",service=\"shop\"}";
    assert_eq!(trellis.metric(sample).await, Some(2.0));
}

struct Issuer {
    private: EncodingKey,
    public_file: tempfile::NamedTempFile,
}

impl Issuer {
    fn new() -> Issuer {
        let key = rcgen::KeyPair::generate().unwrap();
        let public_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(public_file.path(), key.public_key_pem()).unwrap();
        Issuer {
            private: EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
            public_file,
        }
    }

    fn token(&self, claims: Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.private).unwrap()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn a_verified_jwt_identifies_its_subject_and_anything_else_is_anonymous() {
    let issuer = Issuer::new();
    let stranger = Issuer::new();
    let echo = Echo::start("j").await;
    let port = free_port();
    let config = [
        format!(
            "[[jwt_issuer]]\nissuer = \"https://idp.test\"\naudiences = [\"shop\"]\nkey_file = {}\n\n",
            quote(&issuer.public_file.path().display().to_string())
        ),
        policy("users", &["effect = \"allow\"\nprincipals = [\"user-*\"]"]),
        guarded_service("shop", &["*"], "users"),
        listener(port, &forward_to("g")),
        target_group("g", &targets(&[echo.addr()])),
    ]
    .concat();
    let _trellis = Trellis::start(&config, &[port]).await;
    let claims = |sub: &str, aud: &str, exp: u64| json!({"iss": "https://idp.test", "sub": sub, "aud": aud, "exp": exp, "iat": now()});
    let good = issuer.token(claims("user-7", "shop", now() + 3600));
    let c = client::http1();
    let with = |token: Option<&str>| {
        let req = c.get(client::url(port, "/"));
        match token {
            Some(t) => req.header("authorization", format!("Bearer {t}")),
            None => req,
        }
    };
    assert_eq!(send(with(Some(&good))).await.status, 200);
    let tampered = {
        let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
        let mut payload = parts[1].clone().into_bytes();
        payload[10] = if payload[10] == b'A' { b'B' } else { b'A' };
        parts[1] = String::from_utf8(payload).unwrap();
        parts.join(".")
    };
    let mut nbf = claims("user-7", "shop", now() + 7200);
    nbf["nbf"] = json!(now() + 3600);
    let anonymous = [
        ("no token", None),
        (
            "expired",
            Some(issuer.token(claims("user-7", "shop", now() - 3600))),
        ),
        (
            "wrong audience",
            Some(issuer.token(claims("user-7", "billing", now() + 3600))),
        ),
        ("not yet valid", Some(issuer.token(nbf))),
        ("tampered", Some(tampered)),
        (
            "another key",
            Some(stranger.token(claims("user-7", "shop", now() + 3600))),
        ),
        (
            "subject not allowed",
            Some(issuer.token(claims("robot-1", "shop", now() + 3600))),
        ),
    ];
    for (what, token) in anonymous {
        let reply = send(with(token.as_deref())).await;
        assert_eq!(reply.status, 403, "{what}");
    }
}

#[tokio::test]
async fn the_mutual_tls_identity_is_a_principal() {
    let pki = Pki::new();
    let site = pki.server("site", &["m.test"]);
    let corp = pki.client("corp", "corp-client", Some("spiffe://corp/web"));
    let other = pki.client("other", "other-client", Some("spiffe://partner/web"));
    let echo = Echo::start("m").await;
    let port = free_port();
    let config = [
        policy("corp", &["effect = \"allow\"\nprincipals = [\"spiffe://corp/*\"]"]),
        guarded_service("m", &["m.test"], "corp"),
        format!(
            "[[service.listener]]\nname = \"secure\"\nprotocol = \"https\"\nport = {port}\nbind = \"127.0.0.1\"\n\
             tls = {{ cert = {}, key = {}, client_ca = {}, client_auth = \"optional\" }}\n\
             default_action = {}\n\n",
            quote(&site.cert.display().to_string()),
            quote(&site.key.display().to_string()),
            quote(&pki.ca_file().display().to_string()),
            forward_to("g")
        ),
        target_group("g", &targets(&[echo.addr()])),
    ]
    .concat();
    let _trellis = Trellis::start(&config, &[port]).await;
    for (identity, status) in [(Some(&corp), 200), (Some(&other), 403), (None, 403)] {
        let stream = tls::connect(port, "m.test", pki.client_config(&["http/1.1"], identity))
            .await
            .unwrap();
        let mut h1 = tls::h1(stream).await;
        let reply = h1_send(&mut h1, get_request("/", &[("host", "m.test")])).await;
        assert_eq!(reply.status, status);
    }
}

/// base64url without padding, as JWKs write keys.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn a_jwks_with_key_ids_verifies_eddsa_tokens() {
    let signer = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let jwk = |kid: &str, key: &rcgen::KeyPair| json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": base64url(key.public_key_raw())});
    let jwks = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        jwks.path(),
        json!({"keys": [jwk("old", &other), jwk("current", &signer)]}).to_string(),
    )
    .unwrap();
    let echo = Echo::start("k").await;
    let port = free_port();
    let config = [
        format!(
            "[[jwt_issuer]]\nissuer = \"https://idp.test\"\naudiences = [\"shop\"]\njwks_file = {}\n\n",
            quote(&jwks.path().display().to_string())
        ),
        policy("users", &["effect = \"allow\"\nprincipals = [\"user-*\"]"]),
        guarded_service("shop", &["*"], "users"),
        listener(port, &forward_to("g")),
        target_group("g", &targets(&[echo.addr()])),
    ]
    .concat();
    let _trellis = Trellis::start(&config, &[port]).await;
    let claims =
        json!({"iss": "https://idp.test", "sub": "user-1", "aud": "shop", "exp": now() + 600});
    let sign = |kid: &str, key: &rcgen::KeyPair| {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_string());
        let key = EncodingKey::from_ed_pem(key.serialize_pem().as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let c = client::http1();
    let status = |token: String| {
        let req = c
            .get(client::url(port, "/"))
            .header("authorization", format!("Bearer {token}"));
        async move { send(req).await.status }
    };
    assert_eq!(status(sign("current", &signer)).await, 200);
    assert_eq!(status(sign("old", &other)).await, 200);
    // A kid naming another key than the one that signed: not verified.
    assert_eq!(status(sign("old", &signer)).await, 403);
}

#[tokio::test]
async fn identity_keyed_rate_limits_use_the_jwt_subject() {
    let issuer = Issuer::new();
    let echo = Echo::start("r").await;
    let port = free_port();
    let config = [
        format!(
            "[[jwt_issuer]]\nissuer = \"https://idp.test\"\naudiences = [\"shop\"]\nkey_file = {}\n\n",
            quote(&issuer.public_file.path().display().to_string())
        ),
        service("shop", &["*"]).replacen(
            "\n\n",
            "\nrate_limit = { requests_per_second = 0.1, burst = 1, key = \"identity\" }\n\n",
            1,
        ),
        listener(port, &forward_to("g")),
        target_group("g", &targets(&[echo.addr()])),
    ]
    .concat();
    let _trellis = Trellis::start(&config, &[port]).await;
    let token = |sub: &str| {
        issuer.token(
            json!({"iss": "https://idp.test", "sub": sub, "aud": "shop", "exp": now() + 600}),
        )
    };
    let c = client::http1();
    let status = |token: Option<String>| {
        let mut req = c.get(client::url(port, "/"));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        async move { send(req).await.status }
    };
    assert_eq!(status(Some(token("alice"))).await, 200);
    assert_eq!(status(Some(token("alice"))).await, 429);
    // Another subject has its own bucket; anonymous callers share one.
    assert_eq!(status(Some(token("bob"))).await, 200);
    assert_eq!(status(None).await, 200);
    assert_eq!(status(None).await, 429);
}
