//! `[network]`, `[[auth_policy]]` and `[[jwt_issuer]]`: what parses, and every error at its line and key.

use std::path::Path;

use trellis_config::{parse, Cidr, ConfigError, Effect, PathPattern};

const SERVICE: &str = "[[service]]\nname = \"s\"\nhosts = [\"*\"]\nauth_policy = \"p\"\n  [[service.listener]]\n  name = \"web\"\n  protocol = \"http\"\n  port = 8080\n  default_action = { fixed_response = { status = 200 } }\n";

fn errors(text: &str) -> Vec<String> {
    match parse(text, Path::new("config.toml")) {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid(d)) => d.iter().map(ToString::to_string).collect(),
        Err(e) => panic!("unexpected {e}"),
    }
}

#[track_caller]
fn expect(text: &str, line: usize, key: &str, message: &str) {
    let errors = errors(text);
    let prefix = format!("config.toml:{line}: {key}: ");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&prefix) && e.contains(message)),
        "no `{prefix}…{message}…` in {errors:#?}\n{text}"
    );
}

#[test]
fn a_policy_with_every_condition() {
    let text = format!(
        "[network]\nauth_policy = \"p\"\n\n[[auth_policy]]\nname = \"p\"\n[[auth_policy.statement]]\neffect = \"deny\"\n\
         principals = [\"spiffe://corp/*\"]\nsource_cidrs = [\"10.0.0.0/8\", \"::1\"]\nmethods = [\"get\"]\n\
         paths = [\"/api/*\", \"/health\"]\nheaders = {{ \"X-Env\" = \"prod*\" }}\nquery = {{ v = \"2\" }}\n\n{SERVICE}"
    );
    let c = parse(&text, Path::new("config.toml")).unwrap();
    assert_eq!(c.network.auth_policy.as_deref(), Some("p"));
    assert_eq!(c.services[0].auth_policy.as_deref(), Some("p"));
    let s = &c.auth_policies[0].statements[0];
    assert_eq!(s.effect, Effect::Deny);
    assert_eq!(s.principals, ["spiffe://corp/*"]);
    assert_eq!(
        s.source_cidrs,
        [
            Cidr {
                addr: "10.0.0.0".parse().unwrap(),
                prefix: 8
            },
            Cidr {
                addr: "::1".parse().unwrap(),
                prefix: 128
            }
        ]
    );
    assert_eq!(s.methods, ["GET"]);
    assert_eq!(
        s.paths,
        [
            PathPattern::Prefix("/api/".into()),
            PathPattern::Exact("/health".into())
        ]
    );
    assert_eq!(s.headers, [("x-env".to_string(), "prod*".to_string())]);
    assert_eq!(s.query, [("v".to_string(), "2".to_string())]);
}

#[test]
fn policy_errors() {
    let policy = |statement: &str| {
        format!(
            "[[auth_policy]]\nname = \"p\"\n[[auth_policy.statement]]\n{statement}\n\n{SERVICE}"
        )
    };
    expect(
        &policy("effect = \"maybe\""),
        4,
        "auth_policy[0].statement[0].effect",
        "\"maybe\" is not one of \"allow\", \"deny\"",
    );
    expect(
        &policy("paths = [\"/\"]"),
        3,
        "auth_policy[0].statement[0].effect",
        "missing",
    );
    expect(
        &policy("effect = \"allow\"\nsource_cidrs = [\"10.0.0.0/33\"]"),
        5,
        "auth_policy[0].statement[0].source_cidrs[0]",
        "prefix length must be 0..=32",
    );
    expect(
        &policy("effect = \"allow\"\nsource_cidrs = [\"ten\"]"),
        5,
        "auth_policy[0].statement[0].source_cidrs[0]",
        "not an address or CIDR block",
    );
    expect(
        &policy("effect = \"allow\"\nmethods = [\"FETCH\"]"),
        5,
        "auth_policy[0].statement[0].methods[0]",
        "\"FETCH\" is not one of",
    );
    expect(
        &policy("effect = \"allow\"\npaths = [\"api\"]"),
        5,
        "auth_policy[0].statement[0].paths[0]",
        "must start with /",
    );
    expect(
        &policy("effect = \"allow\"\npaths = [\"/a*b\"]"),
        5,
        "auth_policy[0].statement[0].paths[0]",
        "only at the end",
    );
    expect(
        &policy("effect = \"allow\"\nprincipals = []"),
        5,
        "auth_policy[0].statement[0].principals",
        "an empty list matches nothing",
    );
    expect(
        &policy("effect = \"allow\"\nheaders = { \"bad header\" = \"x\" }"),
        5,
        "auth_policy[0].statement[0].headers.bad header",
        "not a valid header name",
    );
    expect(
        &policy("effect = \"allow\"\nprincipal = [\"x\"]"),
        5,
        "auth_policy[0].statement[0].principal",
        "unknown key",
    );
    let none = format!("[[auth_policy]]\nname = \"p\"\n\n{SERVICE}");
    expect(&none, 1, "auth_policy[0]", "at least one");
    let missing = SERVICE.to_string();
    expect(
        &missing,
        4,
        "service[0].auth_policy",
        "no [[auth_policy]] is named \"p\"",
    );
    let network = format!(
        "[network]\nauth_policy = \"q\"\n\n{}",
        policy("effect = \"allow\"")
    );
    expect(
        &network,
        2,
        "network.auth_policy",
        "no [[auth_policy]] is named \"q\"",
    );
}

#[test]
fn jwt_issuer_errors() {
    let issuer = |body: &str| format!("[[jwt_issuer]]\n{body}\n\n");
    expect(
        &issuer("audiences = [\"a\"]\nkey_file = \"k.pem\""),
        1,
        "jwt_issuer[0].issuer",
        "missing",
    );
    expect(
        &issuer("issuer = \"i\"\nkey_file = \"k.pem\""),
        1,
        "jwt_issuer[0].audiences",
        "at least one audience",
    );
    expect(
        &issuer("issuer = \"i\"\naudiences = [\"a\"]"),
        1,
        "jwt_issuer[0]",
        "set jwks_file",
    );
    expect(
        &issuer("issuer = \"i\"\naudiences = [\"a\"]\nkey_file = \"a\"\njwks_file = \"b\""),
        1,
        "jwt_issuer[0]",
        "not both",
    );
    expect(
        &issuer("issuer = \"i\"\naudiences = [\"a\"]\nkey_file = \"/no/such/key.pem\""),
        4,
        "jwt_issuer[0].key_file",
        "cannot read /no/such/key.pem",
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"keys\": 3}").unwrap();
    expect(
        &issuer(&format!(
            "issuer = \"i\"\naudiences = [\"a\"]\njwks_file = {:?}",
            bad.display().to_string()
        )),
        4,
        "jwt_issuer[0].jwks_file",
        "is not a JWKS",
    );
    let pem = dir.path().join("key.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(&pem, key.public_key_pem()).unwrap();
    let ok = issuer(&format!(
        "issuer = \"i\"\naudiences = [\"a\"]\nkey_file = {:?}",
        pem.display().to_string()
    ));
    let c = parse(&ok, Path::new("config.toml")).unwrap();
    let keys = c.jwt_issuers[0].keys.as_ref().unwrap();
    assert_eq!(keys.keys[0].algorithm, jsonwebtoken::Algorithm::ES256);
    // A private key is not a public one.
    std::fs::write(&pem, key.serialize_pem()).unwrap();
    expect(
        &ok,
        4,
        "jwt_issuer[0].key_file",
        "holds no RSA, EC P-256 or Ed25519 public key",
    );
}
