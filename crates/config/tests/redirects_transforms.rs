//! The redirect action and rule transforms: what a valid file becomes, and every refusal located on its
//! line with its key path.

mod common;

use std::path::Path;

use common::*;
use trellis_config::*;

const RULE_ACTION: &str = "    action = { forward = [{ target_group = \"tg\" }] }";
const DEFAULT_ACTION: &str = "default_action = { forward = [{ target_group = \"tg\" }] }";
const RULE: &str = "service[0].listener[0].rule[0]";

/// BASE with the rule's action replaced by `action`.
fn rule_action(action: &str) -> String {
    doc(&[(RULE_ACTION, &format!("    action = {action}"))], "")
}

/// BASE with `transform = ...` on its rule (which matches the prefix `/api/` and forwards).
fn with_transform(transform: &str) -> String {
    doc(
        &[(
            RULE_ACTION,
            &format!("{RULE_ACTION}\n    transform = {transform}"),
        )],
        "",
    )
}

fn parse_ok(text: &str) -> Config {
    match parse(text, Path::new("config.toml")) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}\n--- file ---\n{text}"),
    }
}

#[test]
fn a_redirect_takes_alb_defaults_and_placeholders() {
    let c = parse_ok(&doc(
        &[(
            DEFAULT_ACTION,
            "default_action = { redirect = { status = 301, protocol = \"HTTPS\", port = \"443\" } }",
        )],
        "",
    ));
    let Action::Redirect(r) = &c.services[0].listeners[0].default_action else {
        panic!("a redirect");
    };
    assert_eq!(r.status, 301);
    assert_eq!(r.protocol, RedirectProtocol::Https);
    assert_eq!(r.port, RedirectPort::Port(443));
    assert_eq!(r.host.pieces, vec![Piece::Host]);
    assert_eq!(r.path.pieces, vec![Piece::Text("/".into()), Piece::Path]);
    assert_eq!(r.query.pieces, vec![Piece::Query]);
    assert_eq!(r.to_string(), "https://#{host}:443/#{path}?#{query}");

    let c = parse_ok(&rule_action(
        "{ redirect = { status = 308, host = \"WWW.#{host}\", path = \"/new/#{path}\", query = \"\" } }",
    ));
    let Action::Redirect(r) = &c.services[0].listeners[0].rules[0].action else {
        panic!("a redirect");
    };
    assert_eq!(r.status, 308);
    assert_eq!(r.protocol, RedirectProtocol::Request);
    assert_eq!(r.port, RedirectPort::Listener);
    assert_eq!(r.host.pieces, vec![Piece::Text("www.".into()), Piece::Host]);
    assert!(r.query.pieces.is_empty());
    // A redirect forwards to no target group.
    assert!(c.target_groups_in_use().contains("tg"));
}

#[test]
fn a_transform_is_kept_in_the_model() {
    let c = parse_ok(&with_transform(
        "{ path_prefix = \"/v2/\", request_headers = { set = { \"X-Env\" = \"prod\" }, add = { \"x-tag\" = \"a\" }, \
         remove = [\"X-Debug\"] }, response_headers = { set = { \"x-frame-options\" = \"DENY\" }, remove = [\"server\"] } }",
    ));
    let t = c.services[0].listeners[0].rules[0]
        .transform
        .as_ref()
        .expect("a transform");
    assert_eq!(t.path_prefix.as_deref(), Some("/v2/"));
    assert_eq!(
        t.request_headers.set,
        vec![("x-env".to_string(), "prod".to_string())]
    );
    assert_eq!(
        t.request_headers.add,
        vec![("x-tag".to_string(), "a".to_string())]
    );
    assert_eq!(t.request_headers.remove, vec!["x-debug".to_string()]);
    assert_eq!(
        t.response_headers.set,
        vec![("x-frame-options".to_string(), "DENY".to_string())]
    );
    assert_eq!(t.response_headers.remove, vec!["server".to_string()]);
}

#[test]
fn redirects_refused() {
    let cases: &[(&str, &str, &str)] = &[
        ("{ status = 300 }", "status", "300 is not one of 301, 302, 303, 307, 308"),
        ("{ host = \"a.test\" }", "status", "missing required key"),
        ("{ status = 302 }", "", "redirects every request to its own URL"),
        (
            "{ status = 302, protocol = \"http\", port = \"8080\", host = \"#{host}\", path = \"/#{path}\", query = \"#{query}\" }",
            "",
            "a loop",
        ),
        ("{ status = 301, host = \"#{foo}.test\" }", "host", "#{foo} is not a placeholder"),
        ("{ status = 301, path = \"/#{path\" }", "path", "without its"),
        ("{ status = 301, protocol = \"ftp\" }", "protocol", "\"ftp\" is not one of \"http\", \"https\", \"#{protocol}\""),
        ("{ status = 301, port = \"0\" }", "port", "\"0\" is not a port"),
        ("{ status = 301, port = \"65536\" }", "port", "is not a port"),
        ("{ status = 301, port = \"+443\" }", "port", "is not a port"),
        ("{ status = 301, path = \"new\" }", "path", "must start with \"/\""),
        ("{ status = 301, path = \"/a b\" }", "path", "has ' '"),
        ("{ status = 301, path = \"/a%2\" }", "path", "not followed by two hex digits"),
        ("{ status = 301, query = \"?a=1\" }", "query", "leave out the \"?\""),
        ("{ status = 301, query = \"a#b\" }", "query", "has '#'"),
        ("{ status = 301, host = \"a/b\" }", "host", "has '/'"),
        ("{ status = 301, host = \"\" }", "host", "must be 1..=128 characters, not 0"),
        ("{ status = 301, protocol = \"https\", colour = \"red\" }", "colour", "unknown key `colour`"),
    ];
    for (redirect, key, message) in cases {
        let t = rule_action(&format!("{{ redirect = {redirect} }}"));
        let key = match *key {
            "" => format!("{RULE}.action.redirect"),
            k => format!("{RULE}.action.redirect.{k}"),
        };
        expect(&t, "    action = ", &key, message);
    }
    // The same from a listener's default action.
    let t = doc(
        &[(
            DEFAULT_ACTION,
            "default_action = { redirect = { status = 307 } }",
        )],
        "",
    );
    expect(
        &t,
        "default_action",
        "service[0].listener[0].default_action.redirect",
        "a loop",
    );
}

#[test]
fn an_action_is_one_of_three() {
    let t = rule_action(
        "{ redirect = { status = 301, protocol = \"https\" }, fixed_response = { status = 200 } }",
    );
    expect(
        &t,
        "    action = ",
        &format!("{RULE}.action"),
        "exactly one of forward, fixed_response or redirect",
    );
    let t = rule_action(
        "{ redirect = { status = 301, protocol = \"https\" }, forward = [{ target_group = \"tg\" }] }",
    );
    expect(
        &t,
        "    action = ",
        &format!("{RULE}.action"),
        "exactly one of forward, fixed_response or redirect",
    );
}

#[test]
fn no_redirect_on_tls_passthrough() {
    let text = r#"[[service]]
name = "s"
hosts = ["a.test"]
  [[service.listener]]
  name = "l"
  protocol = "tls_passthrough"
  port = 8443
  default_action = { redirect = { status = 301, protocol = "https", port = "443" } }
"#;
    expect(
        text,
        "default_action",
        "service[0].listener[0].default_action.redirect",
        "can only forward",
    );
}

#[test]
fn transforms_refused() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "{ path_prefix = \"v2\" }",
            "path_prefix",
            "must start with \"/\"",
        ),
        (
            "{ path_prefix = \"/a/../b\" }",
            "path_prefix",
            "\"..\" segment",
        ),
        ("{ path_prefix = \"/a%2Fb\" }", "path_prefix", "%2F"),
        (
            "{ request_headers = { set = { \"Host\" = \"evil.test\" } } }",
            "request_headers.set.Host",
            "host is what trellis routed on",
        ),
        (
            "{ request_headers = { set = { \"connection\" = \"close\" } } }",
            "request_headers.set.connection",
            "hop-by-hop",
        ),
        (
            "{ request_headers = { add = { \"keep-alive\" = \"1\" } } }",
            "request_headers.add.keep-alive",
            "hop-by-hop",
        ),
        (
            "{ request_headers = { remove = [\"x\", \"Transfer-Encoding\"] } }",
            "request_headers.remove[1]",
            "hop-by-hop",
        ),
        (
            "{ request_headers = { remove = [\"te\"] } }",
            "request_headers.remove[0]",
            "hop-by-hop",
        ),
        (
            "{ request_headers = { set = { \"trailer\" = \"x\" } } }",
            "request_headers.set.trailer",
            "hop-by-hop",
        ),
        (
            "{ request_headers = { set = { \"upgrade\" = \"h2c\" } } }",
            "request_headers.set.upgrade",
            "hop-by-hop",
        ),
        (
            "{ request_headers = { set = { \"proxy-connection\" = \"x\" } } }",
            "request_headers.set.proxy-connection",
            "hop-by-hop",
        ),
        (
            "{ request_headers = { set = { \"content-length\" = \"0\" } } }",
            "request_headers.set.content-length",
            "frames the body",
        ),
        (
            "{ request_headers = { set = { \"x-forwarded-for\" = \"1.2.3.4\" } } }",
            "request_headers.set.x-forwarded-for",
            "is set by trellis",
        ),
        (
            "{ request_headers = { remove = [\"x-request-id\"] } }",
            "request_headers.remove[0]",
            "x-request-id is set by trellis",
        ),
        (
            "{ request_headers = { set = { \"X-Trellis-Identity\" = \"admin\" } } }",
            "request_headers.set.X-Trellis-Identity",
            "trellis's own",
        ),
        (
            "{ response_headers = { remove = [\"x-trellis-error\"] } }",
            "response_headers.remove[0]",
            "trellis's own",
        ),
        (
            "{ response_headers = { set = { \"transfer-encoding\" = \"chunked\" } } }",
            "response_headers.set.transfer-encoding",
            "hop-by-hop",
        ),
        (
            "{ request_headers = { set = { \"a b\" = \"1\" } } }",
            "request_headers.set.a b",
            "not a valid HTTP header name",
        ),
        (
            "{ request_headers = { set = { \"x-a\" = \"1\\n2\" } } }",
            "request_headers.set.x-a",
            "control character",
        ),
        (
            "{ request_headers = { add = { \"x-a\" = \" 1\" } } }",
            "request_headers.add.x-a",
            "surrounding spaces",
        ),
        (
            "{ request_headers = { set = { \"x-a\" = \"1\" }, remove = [\"X-A\"] } }",
            "request_headers.remove[0]",
            "x-a is already in",
        ),
        (
            "{ request_headers = { set = { \"X-A\" = \"1\", \"x-a\" = \"2\" } } }",
            "request_headers.set.x-a",
            "already in",
        ),
        (
            "{ response_headers = { add = { \"x-a\" = \"1\" } } }",
            "response_headers.add",
            "unknown key `add`",
        ),
        (
            "{ path_prefx = \"/\" }",
            "path_prefx",
            "unknown key `path_prefx`",
        ),
    ];
    for (transform, key, message) in cases {
        let t = with_transform(transform);
        expect(
            &t,
            "transform = ",
            &format!("{RULE}.transform.{key}"),
            message,
        );
    }
}

#[test]
fn path_prefix_needs_a_prefix_match() {
    let t = doc(
        &[
            (
                "match = { path = { prefix = \"/api/\" } }",
                "match = { path = { exact = \"/api\" } }",
            ),
            (
                RULE_ACTION,
                &format!("{RULE_ACTION}\n    transform = {{ path_prefix = \"/v2\" }}"),
            ),
        ],
        "",
    );
    expect(
        &t,
        "transform = ",
        &format!("{RULE}.transform.path_prefix"),
        "this rule has no prefix match",
    );
}

#[test]
fn a_transform_is_only_for_rules_that_forward() {
    let t = doc(
        &[(
            RULE_ACTION,
            "    action = { fixed_response = { status = 200 } }\n    transform = { response_headers = { set = { \"x-a\" = \"1\" } } }",
        )],
        "",
    );
    expect(
        &t,
        "transform = ",
        &format!("{RULE}.transform"),
        "only rules that forward take one",
    );
}

/// A rule's transform may not change a header the listener's rules, the rate limits or the auth
/// policies decided on.
#[test]
fn a_transform_leaves_what_trellis_decided_on() {
    let canary = "    [[service.listener.rule]]\n    name = \"canary\"\n    priority = 5\n    \
                  match = { headers = [{ name = \"X-Canary\", exact = \"1\" }] }\n    \
                  action = { fixed_response = { status = 418 } }\n    \
                  rate_limit = { requests_per_second = 5.0, key = \"header:x-tenant\" }\n";
    let with_canary = |transform: &str| {
        doc(
            &[(
                RULE_ACTION,
                &format!("{RULE_ACTION}\n    transform = {transform}\n{canary}"),
            )],
            "",
        )
    };
    let t = with_canary("{ request_headers = { set = { \"x-canary\" = \"1\" } } }");
    expect(
        &t,
        "transform = ",
        &format!("{RULE}.transform.request_headers.set.x-canary"),
        "rule \"canary\" matches on it: a transform may not change it",
    );
    let t = with_canary("{ request_headers = { remove = [\"X-Tenant\"] } }");
    expect(
        &t,
        "transform = ",
        &format!("{RULE}.transform.request_headers.remove[0]"),
        "rule \"canary\"'s rate limit counts by it",
    );
    // Response headers are not decided on.
    assert_eq!(
        errors(&with_canary(
            "{ response_headers = { set = { \"x-canary\" = \"1\" } } }"
        )),
        Vec::<String>::new()
    );

    let policy =
        "\n[[auth_policy]]\nname = \"p\"\n  [[auth_policy.statement]]\n  effect = \"allow\"\n  \
                  principals = [\"svc-*\"]\n  headers = { \"x-env\" = \"prod\" }\n";
    let service_policy = |transform: &str| {
        doc(
            &[
                ("hosts = [\"*\"]", "hosts = [\"*\"]\nauth_policy = \"p\"\nrate_limit = { requests_per_second = 1.0, key = \"header:x-key\" }"),
                (RULE_ACTION, &format!("{RULE_ACTION}\n    transform = {transform}")),
            ],
            policy,
        )
    };
    let t = service_policy("{ request_headers = { set = { \"x-env\" = \"dev\" } } }");
    expect(
        &t,
        "transform = ",
        &format!("{RULE}.transform.request_headers.set.x-env"),
        "auth policy \"p\" reads it",
    );
    let t = service_policy("{ request_headers = { set = { \"authorization\" = \"Bearer x\" } } }");
    expect(
        &t,
        "transform = ",
        &format!("{RULE}.transform.request_headers.set.authorization"),
        "auth policy \"p\" reads it",
    );
    let t = service_policy("{ request_headers = { add = { \"x-key\" = \"k\" } } }");
    expect(
        &t,
        "transform = ",
        &format!("{RULE}.transform.request_headers.add.x-key"),
        "the service's rate limit counts by it",
    );
    // The network's policy applies to every service.
    let t = doc(
        &[(
            RULE_ACTION,
            &format!(
                "{RULE_ACTION}\n    transform = {{ request_headers = {{ remove = [\"x-env\"] }} }}"
            ),
        )],
        &format!("{policy}\n[network]\nauth_policy = \"p\"\n"),
    );
    expect(
        &t,
        "transform = ",
        &format!("{RULE}.transform.request_headers.remove[0]"),
        "auth policy \"p\" reads it",
    );
    // Without a policy, the bearer token is the target's business.
    assert_eq!(
        errors(&with_transform(
            "{ request_headers = { set = { \"authorization\" = \"Basic eDp5\" } } }"
        )),
        Vec::<String>::new()
    );
}
