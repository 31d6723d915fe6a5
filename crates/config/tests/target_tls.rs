//! `ca`, `sni` and `insecure_skip_verify`: TLS to the targets of `https` target groups.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use trellis_config::TargetTls;

fn https(keys: &str) -> String {
    doc(
        &[(
            "name = \"tg\"",
            &format!("name = \"tg\"\nprotocol = \"https\"\n{keys}"),
        )],
        "",
    )
}

fn tls_of(text: &str, path: &str) -> Option<TargetTls> {
    trellis_config::parse(text, Path::new(path))
        .unwrap_or_else(|e| panic!("{e}"))
        .target_groups[0]
        .tls
        .clone()
}

#[test]
fn https_groups_verify_by_default() {
    assert_eq!(
        tls_of(&https(""), "config.toml"),
        Some(TargetTls {
            ca: None,
            sni: None,
            verify: true
        })
    );
    assert_eq!(tls_of(&doc(&[], ""), "config.toml"), None, "http: no TLS");
}

#[test]
fn keys_are_read_and_ca_resolved_beside_the_file() {
    let text = https("ca = \"certs/ca.pem\"\nsni = \"Backend.Internal\"");
    assert_eq!(
        tls_of(&text, "/etc/trellis/trellis.toml"),
        Some(TargetTls {
            ca: Some(PathBuf::from("/etc/trellis/certs/ca.pem")),
            sni: Some("backend.internal".into()),
            verify: true
        })
    );
    let text = https("ca = \"/abs/ca.pem\"\nsni = \"10.0.0.5\"");
    let tls = tls_of(&text, "/etc/trellis/trellis.toml").unwrap();
    assert_eq!(tls.ca, Some(PathBuf::from("/abs/ca.pem")));
    assert_eq!(tls.sni.as_deref(), Some("10.0.0.5"));
    let text = https("insecure_skip_verify = true\nsni = \"b.test\"");
    let tls = tls_of(&text, "config.toml").unwrap();
    assert!(!tls.verify);
    assert_eq!(tls.sni.as_deref(), Some("b.test"));
    assert!(
        tls_of(&https("insecure_skip_verify = false"), "c.toml")
            .unwrap()
            .verify
    );
}

#[test]
fn only_for_https_groups_each_key_named() {
    let text = doc(
        &[(
            "name = \"tg\"",
            "name = \"tg\"\nca = \"ca.pem\"\nsni = \"b.test\"\ninsecure_skip_verify = true",
        )],
        "",
    );
    for key in ["ca", "sni", "insecure_skip_verify"] {
        expect(
            &text,
            &format!("{key} ="),
            &format!("target_group[0].{key}"),
            &format!("{key} is only for protocol = \"https\" target groups, this one is \"http\""),
        );
    }
    assert_eq!(errors(&text).len(), 3);
    let tcp = doc(
        &[(
            "name = \"tg\"",
            "name = \"tg\"\nprotocol = \"tcp\"\nsni = \"b.test\"",
        )],
        "",
    );
    expect(&tcp, "sni =", "target_group[0].sni", "this one is \"tcp\"");
}

#[test]
fn ca_with_insecure_skip_verify_is_an_error() {
    let text = https("ca = \"ca.pem\"\ninsecure_skip_verify = true");
    expect(
        &text,
        "insecure_skip_verify",
        "target_group[0].insecure_skip_verify",
        "cannot be true together with ca",
    );
    assert_eq!(errors(&text).len(), 1);
    // Saying explicitly that it verifies is fine.
    assert!(errors(&https("ca = \"ca.pem\"\ninsecure_skip_verify = false")).is_empty());
}

#[test]
fn bad_values() {
    let text = https("sni = \"not a name\"");
    expect(
        &text,
        "sni",
        "target_group[0].sni",
        "\"not a name\" is not a DNS name",
    );
    let text = https("ca = \"  \"");
    expect(&text, "ca =", "target_group[0].ca", "must not be empty");
    let text = https("insecure_skip_verify = \"yes\"");
    expect(
        &text,
        "insecure_skip_verify",
        "target_group[0].insecure_skip_verify",
        "expected a boolean",
    );
    let text = https("ca = 3");
    expect(&text, "ca =", "target_group[0].ca", "expected a string");
    let text = https("verify = false");
    expect(
        &text,
        "verify",
        "target_group[0].verify",
        "unknown key `verify`",
    );
}
