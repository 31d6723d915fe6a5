//! Diagnostics for services, listeners and rules: right line, key path and message.

mod common;

use common::*;

#[test]
fn base_is_valid() {
    assert_eq!(errors(BASE), Vec::<String>::new());
}

#[test]
fn duplicate_priority_exact_message() {
    let text = doc(&[], "");
    let text = text.replacen(
        "\n[[target_group]]",
        "    [[service.listener.rule]]\n    name = \"api2\"\n    priority = 10\n    action = { fixed_response = { status = 404 } }\n\n[[target_group]]",
        1,
    );
    assert_eq!(errors(&text), vec!["config.toml:16: service[0].listener[0].rule[1].priority: 10 is already used by rule \"api\""]);
}

#[test]
fn unknown_keys() {
    let t = doc(&[("port = 8080", "port = 8080\n  prot = 1")], "");
    expect(
        &t,
        "prot = 1",
        "service[0].listener[0].prot",
        "unknown key `prot`",
    );
    let t = doc(
        &[("prefix = \"/api/\"", "prefix = \"/api/\", exakt = \"/\"")],
        "",
    );
    expect(
        &t,
        "exakt",
        "service[0].listener[0].rule[0].match.path.exakt",
        "unknown key `exakt`",
    );
    let t = doc(
        &[(
            "interval = \"10s\"",
            "interval = \"10s\"\n  intervall = \"5s\"",
        )],
        "",
    );
    expect(
        &t,
        "intervall",
        "target_group[0].health_check.intervall",
        "unknown key `intervall` (did you mean `interval`?), expected one of",
    );
    let t = doc(&[], "[bogus]\n");
    expect(&t, "[bogus]", "bogus", "unknown section `bogus`, expected");
    let t = doc(&[], "[limit]\n");
    expect(
        &t,
        "[limit]",
        "limit",
        "unknown section `limit` (did you mean `limits`?)",
    );
    let t = doc(
        &[(
            "targets = [\"127.0.0.1:9001\"]",
            "targets = [{ address = \"127.0.0.1:9001\", wieght = 2 }]",
        )],
        "",
    );
    expect(
        &t,
        "wieght",
        "target_group[0].targets[0].wieght",
        "unknown key `wieght`",
    );
}

#[test]
fn duplicate_names() {
    let svc2 = "[[service]]\nname = \"s\"\nhosts = [\"b\"]\n  [[service.listener]]\n  name = \"l\"\n  protocol = \"http\"\n  port = 81\n  default_action = { fixed_response = { status = 200 } }\n";
    let t = doc(&[], svc2);
    expect_nth(
        &t,
        "name = \"s\"",
        1,
        "service[1].name",
        "\"s\" is already used by service[0]",
    );

    let t = doc(&[], "  [[service.listener]]\n  name = \"l\"\n  protocol = \"http\"\n  port = 81\n  default_action = { fixed_response = { status = 200 } }\n");
    let t = t
        .replacen("\n[[target_group]]", "", 1)
        .replace("  [target_group.health_check]\n  interval = \"10s\"\n", "");
    // Move the target group after the appended listener so the listener belongs to service[0].
    let t = t.replacen("name = \"tg\"\ntargets = [\"127.0.0.1:9001\"]\n", "", 1)
        + "[[target_group]]\nname = \"tg\"\ntargets = [\"127.0.0.1:9001\"]\n";
    expect_nth(
        &t,
        "name = \"l\"",
        1,
        "service[0].listener[1].name",
        "\"l\" is already used by listener \"l\"",
    );

    let t = doc(&[("priority = 10", "priority = 10\n    name = \"x\"")], "");
    assert!(errors(&t)[0].contains("duplicate key"), "{:?}", errors(&t));

    let t = doc(&[], "[[target_group]]\nname = \"tg\"\n");
    expect_nth(
        &t,
        "name = \"tg\"",
        1,
        "target_group[1].name",
        "\"tg\" is already used by target_group[0]",
    );

    let t = doc(
        &[],
        &format!(
            "{SCALING}{}",
            SCALING.replace("target_group = \"tg\"", "target_group = \"tg2\"")
        ),
    ) + "[[target_group]]\nname = \"tg2\"\n";
    expect_nth(
        &t,
        "name = \"pool\"",
        1,
        "scaling_group[1].name",
        "\"pool\" is already used by scaling_group[0]",
    );

    let t = doc(&[], &format!("{SCALING}  [[scaling_group.policy]]\n  name = \"rps\"\n  type = \"scheduled\"\n  cron = \"0 * * * *\"\n  desired = 2\n"));
    expect_nth(
        &t,
        "name = \"rps\"",
        1,
        "scaling_group[0].policy[1].name",
        "\"rps\" is already used by scaling_group[0].policy[0]",
    );
}

#[test]
fn rule_ranges_and_actions() {
    let t = doc(&[("priority = 10", "priority = 2001")], "");
    expect(
        &t,
        "priority",
        "service[0].listener[0].rule[0].priority",
        "2001 is outside 1..=2000",
    );
    let t = doc(&[("priority = 10", "priority = 0")], "");
    expect(
        &t,
        "priority",
        "service[0].listener[0].rule[0].priority",
        "0 is outside 1..=2000",
    );
    let t = doc(
        &[(
            "    action = { forward = [{ target_group = \"tg\" }] }",
            "    action = { forward = [{ target_group = \"tg\", weight = 1000 }] }",
        )],
        "",
    );
    expect(
        &t,
        "weight = 1000",
        "service[0].listener[0].rule[0].action.forward[0].weight",
        "1000 is outside 0..=999",
    );
    let t = doc(
        &[(
            "    action = { forward = [{ target_group = \"tg\" }] }",
            "    action = { forward = [] }",
        )],
        "",
    );
    expect(
        &t,
        "forward = []",
        "service[0].listener[0].rule[0].action.forward",
        "at least one target group",
    );
    let t = doc(
        &[(
            "default_action = { forward = [{ target_group = \"tg\" }] }",
            "default_action = { forward = [{ target_group = \"nope\" }] }",
        )],
        "",
    );
    expect(
        &t,
        "nope",
        "service[0].listener[0].default_action.forward[0].target_group",
        "unknown target group \"nope\"",
    );
    let t = doc(
        &[(
            "    action = { forward = [{ target_group = \"tg\" }] }",
            "    action = { fixed_response = { status = 600 } }",
        )],
        "",
    );
    expect(
        &t,
        "status = 600",
        "service[0].listener[0].rule[0].action.fixed_response.status",
        "600 is outside 100..=599",
    );
    let t = doc(&[("    action = { forward = [{ target_group = \"tg\" }] }", "    action = { fixed_response = { status = 200 }, forward = [{ target_group = \"tg\" }] }")], "");
    expect(
        &t,
        "status = 200",
        "service[0].listener[0].rule[0].action",
        "exactly one of forward, fixed_response or redirect",
    );
    let t = doc(
        &[(
            "    action = { forward = [{ target_group = \"tg\" }] }",
            "    action = {}",
        )],
        "",
    );
    expect(
        &t,
        "action = {}",
        "service[0].listener[0].rule[0].action",
        "exactly one of forward, fixed_response or redirect",
    );
    let t = doc(
        &[(
            "    action = { forward = [{ target_group = \"tg\" }] }\n",
            "",
        )],
        "",
    );
    expect(
        &t,
        "[[service.listener.rule]]",
        "service[0].listener[0].rule[0].action",
        "missing required key",
    );
}

#[test]
fn matches() {
    let rule = "match = { path = { prefix = \"/api/\" } }";
    let cases: &[(&str, &str, &str)] = &[
        ("match = { path = { prefix = \"/a\", exact = \"/b\" } }", "match.path", "needs exactly one of exact, prefix"),
        ("match = { path = { case_sensitive = true } }", "match.path", "needs exactly one of exact, prefix"),
        ("match = { path = { exact = \"\" } }", "match.path.exact", "must be 1..=200 characters, not 0"),
        ("match = { method = \"FETCH\" }", "match.method", "\"FETCH\" is not one of CONNECT DELETE GET"),
        ("match = { headers = [{ name = \"a\", exact = \"1\" }, { name = \"b\", exact = \"1\" }, { name = \"c\", exact = \"1\" }, { name = \"d\", exact = \"1\" }, { name = \"e\", exact = \"1\" }, { name = \"f\", exact = \"1\" }] }", "match.headers", "6 header matches, at most 5"),
        ("match = { headers = [{ name = \"a\" }] }", "match.headers[0]", "needs exactly one of exact, prefix, contains"),
        ("match = { headers = [{ name = \"a b\", exact = \"1\" }] }", "match.headers[0].name", "not a valid HTTP header name"),
        ("match = { headers = [{ name = \"a\", prefix = \"\" }] }", "match.headers[0].prefix", "must be 1..=200 characters"),
        ("match = { headers = [{ exact = \"1\" }] }", "match.headers[0].name", "missing required key"),
    ];
    for (replacement, key, msg) in cases {
        let t = doc(&[(rule, replacement)], "");
        expect(
            &t,
            "match =",
            &format!("service[0].listener[0].rule[0].{key}"),
            msg,
        );
    }
    let long = format!(
        "match = {{ path = {{ prefix = \"/{}\" }} }}",
        "a".repeat(200)
    );
    let t = doc(&[(rule, &long)], "");
    expect(
        &t,
        "match =",
        "service[0].listener[0].rule[0].match.path.prefix",
        "must be 1..=200 characters, not 201",
    );
}

#[test]
fn hosts_ports_protocols() {
    let t = doc(&[("hosts = [\"*\"]", "hosts = []")], "");
    expect(&t, "hosts", "service[0].hosts", "at least one host");
    let t = doc(
        &[("hosts = [\"*\"]", "hosts = [\"ok.example\", \"not valid\"]")],
        "",
    );
    expect(
        &t,
        "hosts",
        "service[0].hosts[1]",
        "\"not valid\" is not a valid host pattern",
    );
    let t = doc(&[("hosts = [\"*\"]\n", "")], "");
    expect(
        &t,
        "[[service]]",
        "service[0].hosts",
        "missing required key",
    );
    let t = doc(&[("port = 8080", "port = 0")], "");
    expect(
        &t,
        "port = 0",
        "service[0].listener[0].port",
        "0 is outside 1..=65535",
    );
    let t = doc(&[("port = 8080", "port = 65536")], "");
    expect(
        &t,
        "port = 65536",
        "service[0].listener[0].port",
        "65536 is outside 1..=65535",
    );
    let t = doc(&[("protocol = \"http\"", "protocol = \"h2c\"")], "");
    expect(
        &t,
        "h2c",
        "service[0].listener[0].protocol",
        "\"h2c\" is not one of \"http\", \"https\", \"tls_passthrough\"",
    );
    let t = doc(&[("protocol = \"http\"", "protocol = \"https\"")], "");
    expect(
        &t,
        "[[service.listener]]",
        "service[0].listener[0].tls",
        "an https listener needs tls",
    );
    let t = doc(
        &[(
            "port = 8080",
            "port = 8080\n  tls = { cert = \"a.pem\", key = \"a.key\" }",
        )],
        "",
    );
    expect(
        &t,
        "tls =",
        "service[0].listener[0].tls",
        "tls is only for https listeners",
    );

    let other = |hosts: &str, proto: &str, port: u16| {
        let tls = if proto == "https" {
            "  tls = { cert = \"c\", key = \"k\" }\n"
        } else {
            ""
        };
        format!("[[service]]\nname = \"t\"\nhosts = {hosts}\n  [[service.listener]]\n  name = \"m\"\n  protocol = \"{proto}\"\n  port = {port}\n{tls}  default_action = {{ fixed_response = {{ status = 200 }} }}\n")
    };
    let t = doc(&[], &other("[\"a.example\", \"*\"]", "http", 9000));
    assert_eq!(
        errors(&t),
        Vec::<String>::new(),
        "same host on another port is fine"
    );
    let t = doc(&[], &other("[\"a.example\", \"*\"]", "https", 8080));
    expect(
        &t,
        "hosts = [\"a.example\"",
        "service[1].hosts[1]",
        "host \"*\" is already served on 0.0.0.0:8080 by service \"s\"",
    );
    expect(
        &t,
        "protocol = \"https\"",
        "service[1].listener[0].protocol",
        "port 8080 is http on service[0].listener[0]",
    );
    // Sockets decide, not services: two specific addresses on one port do not overlap, whatever their
    // protocols; a wildcard address overlaps every address on its port, in the same service too.
    let bound = |bind: &str| {
        format!("[[service]]\nname = \"t\"\nhosts = [\"b.example\"]\n  [[service.listener]]\n  name = \"m\"\n  protocol = \"tls_passthrough\"\n  bind = \"{bind}\"\n  port = 8443\n  default_action = {{ forward = [{{ target_group = \"g\" }}] }}\n")
    };
    let t = doc(
        &[("port = 8080", "bind = \"127.0.0.1\"\n  port = 8443")],
        &bound("127.0.0.2"),
    );
    let protocol_errors: Vec<String> = errors(&t)
        .into_iter()
        .filter(|e| e.contains("must use one protocol"))
        .collect();
    assert_eq!(protocol_errors, Vec::<String>::new());
    let t = doc(
        &[("port = 8080", "bind = \"127.0.0.1\"\n  port = 8443")],
        &bound("0.0.0.0"),
    );
    expect(
        &t,
        "protocol = \"tls_passthrough\"",
        "service[1].listener[0].protocol",
        "port 8443 is http on service[0].listener[0] (127.0.0.1:8443)",
    );
    let t = doc(
        &[(
            "\n[[target_group]]",
            "  [[service.listener]]\n  name = \"tls\"\n  protocol = \"tls_passthrough\"\n  bind = \"127.0.0.1\"\n  port = 8080\n  default_action = { forward = [{ target_group = \"tg\" }] }\n\n[[target_group]]",
        )],
        "",
    );
    expect(
        &t,
        "protocol = \"tls_passthrough\"",
        "service[0].listener[1].protocol",
        "port 8080 is http on service[0].listener[0] (0.0.0.0:8080)",
    );
}

#[test]
fn type_errors_are_located() {
    let t = doc(&[("port = 8080", "port = \"8080\"")], "");
    assert_eq!(
        errors(&t),
        vec!["config.toml:7: service[0].listener[0].port: invalid type: string \"8080\", expected an integer"]
    );
    let t = doc(&[], "[[service]]\n");
    let t = t.replace("[[service]]\n", "[service]\n");
    let errs = errors(&t);
    assert_eq!(errs.len(), 1, "{errs:?}");
}

#[test]
fn syntax_error_has_a_line_and_column() {
    // `  port = ` is nine characters: the value is missing at column 10.
    let t = doc(&[("port = 8080", "port = ")], "");
    let errs = errors(&t);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("config.toml:7:10: "), "{errs:?}");
}
