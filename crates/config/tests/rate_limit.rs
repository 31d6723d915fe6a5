//! `rate_limit = { requests_per_second, burst, key }` on services and rules: defaults, and every
//! mistake reported on its line with its key path.

mod common;

use std::path::Path;

use common::*;
use trellis_config::{Config, RateLimit, RateLimitKey};

/// BASE with `rate_limit = {service}` on the service and `rate_limit = {rule}` on its rule ("" for none).
fn limited(service: &str, rule: &str) -> String {
    let mut replace = Vec::new();
    let s = format!("hosts = [\"*\"]\nrate_limit = {service}");
    if !service.is_empty() {
        replace.push(("hosts = [\"*\"]", s.as_str()));
    }
    let r =
        format!("action = {{ forward = [{{ target_group = \"tg\" }}] }}\n    rate_limit = {rule}");
    if !rule.is_empty() {
        replace.push((
            "    action = { forward = [{ target_group = \"tg\" }] }",
            r.as_str(),
        ));
    }
    doc(&replace, "")
}

fn parse(text: &str) -> Config {
    trellis_config::parse(text, Path::new("config.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn service_limit(text: &str) -> Option<RateLimit> {
    parse(text).services[0].rate_limit.clone()
}

fn rule_limit(text: &str) -> Option<RateLimit> {
    parse(text).services[0].listeners[0].rules[0]
        .rate_limit
        .clone()
}

#[test]
fn no_limit_by_default() {
    let c = parse(BASE);
    assert_eq!(c.services[0].rate_limit, None);
    assert_eq!(c.services[0].listeners[0].rules[0].rate_limit, None);
}

#[test]
fn service_and_rule_limits_as_written() {
    let text = limited(
        "{ requests_per_second = 100.0, burst = 200, key = \"source_ip\" }",
        "{ requests_per_second = 5.0, burst = 10, key = \"header:X-Api-Key\" }",
    );
    assert_eq!(
        service_limit(&text),
        Some(RateLimit {
            requests_per_second: 100.0,
            burst: 200,
            key: RateLimitKey::SourceIp
        })
    );
    assert_eq!(
        rule_limit(&text),
        Some(RateLimit {
            requests_per_second: 5.0,
            burst: 10,
            key: RateLimitKey::Header("x-api-key".into())
        }),
        "header names are lower-cased"
    );
}

#[test]
fn defaults_burst_is_the_rate_rounded_up_and_key_is_the_source_ip() {
    let limit =
        |rate: &str| service_limit(&limited(&format!("{{ requests_per_second = {rate} }}"), ""));
    assert_eq!(
        limit("100"),
        Some(RateLimit {
            requests_per_second: 100.0,
            burst: 100,
            key: RateLimitKey::SourceIp
        }),
        "an integer rate is a rate too"
    );
    assert_eq!(limit("2.5").map(|l| l.burst), Some(3));
    assert_eq!(limit("0.5").map(|l| l.burst), Some(1), "at least one");
    assert_eq!(limit("0.001").map(|l| l.requests_per_second), Some(0.001));
    let identity = rule_limit(&limited(
        "",
        "{ requests_per_second = 1, key = \"identity\" }",
    ));
    assert_eq!(identity.map(|l| l.key), Some(RateLimitKey::Identity));
}

#[test]
fn rates_must_be_positive_finite_and_at_most_a_million() {
    for bad in ["0", "0.0", "-1.5", "nan", "inf", "1000001"] {
        let text = limited(&format!("{{ requests_per_second = {bad} }}"), "");
        expect(
            &text,
            "rate_limit =",
            "service[0].rate_limit.requests_per_second",
            "must be greater than 0 and at most 1000000",
        );
    }
    let text = limited("", "{ burst = 3 }");
    expect(
        &text,
        "rate_limit =",
        "service[0].listener[0].rule[0].rate_limit.requests_per_second",
        "missing required key",
    );
    let text = limited("{ requests_per_second = \"fast\" }", "");
    expect(
        &text,
        "rate_limit =",
        "service[0].rate_limit.requests_per_second",
        "expected a number",
    );
}

#[test]
fn burst_is_an_integer_from_one() {
    for (bad, msg) in [
        ("0", "0 is outside 1..=1000000"),
        ("-3", "-3 is outside 1..=1000000"),
        ("1000001", "1000001 is outside 1..=1000000"),
        ("2.5", "expected an integer"),
    ] {
        let text = limited("", &format!("{{ requests_per_second = 1, burst = {bad} }}"));
        expect(
            &text,
            "rate_limit =",
            "service[0].listener[0].rule[0].rate_limit.burst",
            msg,
        );
    }
}

#[test]
fn keys_are_source_ip_identity_or_a_header() {
    let text = limited("{ requests_per_second = 1, key = \"client_ip\" }", "");
    assert_eq!(
        errors(&text),
        vec![format!(
            "config.toml:{}: service[0].rate_limit.key: \"client_ip\" is not one of \"source_ip\", \"identity\", \"header:NAME\"",
            line_of(&text, "rate_limit =", 0)
        )]
    );
    for bad in ["header:", "header:x api", "header:x:y"] {
        let text = limited(
            "",
            &format!("{{ requests_per_second = 1, key = \"{bad}\" }}"),
        );
        expect(
            &text,
            "rate_limit =",
            "service[0].listener[0].rule[0].rate_limit.key",
            "is not a valid HTTP header name",
        );
    }
}

#[test]
fn unknown_keys_are_errors() {
    let text = limited("{ requests_per_second = 1, brust = 2 }", "");
    expect(
        &text,
        "brust",
        "service[0].rate_limit.brust",
        "unknown key `brust`",
    );
    let text = limited("", "{ requests_per_second = 1, per = \"ip\" }");
    expect(
        &text,
        "per =",
        "service[0].listener[0].rule[0].rate_limit.per",
        "unknown key `per`",
    );
    let text = limited("5", "");
    expect(
        &text,
        "rate_limit =",
        "service[0].rate_limit",
        "expected a table { requests_per_second, burst, key }",
    );
}

#[test]
fn every_problem_is_reported() {
    let text = limited(
        "{ requests_per_second = 0, burst = 0, key = \"nope\" }",
        "{ requests_per_second = -1 }",
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 4, "{errs:#?}");
}

#[test]
fn not_on_a_service_with_a_tls_passthrough_listener() {
    let text = r#"
[[service]]
name = "db"
hosts = ["db.internal"]
rate_limit = { requests_per_second = 10 }
  [[service.listener]]
  name = "pass"
  protocol = "tls_passthrough"
  port = 5432
  default_action = { forward = [{ target_group = "pg" }] }
[[target_group]]
name = "pg"
protocol = "tcp"
targets = ["10.0.0.1:5432"]
"#;
    expect(
        text,
        "rate_limit =",
        "service[0].rate_limit",
        "listener[0] is tls_passthrough",
    );
}
