//! Diagnostics for target groups, scaling groups, global sections, and many at once.

mod common;

use common::*;

#[test]
fn exact_messages() {
    let text = doc(
        &[(
            "interval = \"10s\"",
            "interval = \"5s\"\n  timeout = \"5s\"",
        )],
        "",
    );
    assert_eq!(
        errors(&text),
        vec!["config.toml:20: target_group[0].health_check.timeout: timeout 5s must be less than interval 5s"]
    );
    let text = doc(&[], SCALING);
    let text = text.replace("desired = 2", "desired = 9");
    assert_eq!(
        errors(&text),
        vec!["config.toml:26: scaling_group[0].desired: desired 9 is outside min..=max (1..=8)"]
    );
    let text = doc(&[("prefix = \"/api/\"", "prefix = \"api\"")], "");
    assert_eq!(
        errors(&text),
        vec!["config.toml:12: service[0].listener[0].rule[0].match.path.prefix: \"api\" must start with \"/\""]
    );
}

#[test]
fn scaling_base_is_valid() {
    assert_eq!(errors(&doc(&[], SCALING)), Vec::<String>::new());
}

#[test]
fn target_groups() {
    let tg = |from: &str, to: &str| doc(&[(from, to)], "");
    let t = tg(
        "name = \"tg\"",
        "name = \"tg\"\nprotocol = \"udp\"\nprotocol_version = \"http3\"\nalgorithm = \"random\"",
    );
    expect(
        &t,
        "udp",
        "target_group[0].protocol",
        "\"udp\" is not one of \"http\", \"https\", \"tcp\"",
    );
    expect(
        &t,
        "http3",
        "target_group[0].protocol_version",
        "not one of \"http1\", \"http2\", \"grpc\"",
    );
    expect(
        &t,
        "random",
        "target_group[0].algorithm",
        "not one of \"round_robin\", \"least_outstanding\"",
    );
    let t = tg("targets = [\"127.0.0.1:9001\"]", "targets = [\"127.0.0.1:9001\", \"localhost:80\", \"127.0.0.1:9001\", { address = \"[::1]:1\", weight = 1000 }]");
    expect(
        &t,
        "targets",
        "target_group[0].targets[1]",
        "\"localhost:80\" is not an ip:port address",
    );
    expect(
        &t,
        "targets",
        "target_group[0].targets[2]",
        "127.0.0.1:9001 is already listed as targets[0]",
    );
    expect(
        &t,
        "targets",
        "target_group[0].targets[3].weight",
        "1000 is outside 0..=999",
    );
    let t = tg(
        "targets = [\"127.0.0.1:9001\"]",
        "deregistration_delay = \"2h\"\nresponse_timeout = \"soon\"",
    );
    expect(
        &t,
        "deregistration_delay",
        "target_group[0].deregistration_delay",
        "2h is outside 0s..=1h",
    );
    expect(
        &t,
        "soon",
        "target_group[0].response_timeout",
        "\"soon\" is not a duration",
    );

    let hc = |to: &str| tg("interval = \"10s\"", to);
    let t = hc("interval = \"50ms\"");
    expect(
        &t,
        "interval",
        "target_group[0].health_check.interval",
        "50ms is outside 100ms..=5m",
    );
    let t = hc("interval = \"10s\"\n  timeout = \"0s\"\n  healthy_threshold = 0\n  unhealthy_threshold = 11\n  matcher = \"2xx\"\n  path = \"health\"\n  port = 0\n  protocol = \"grpc\"");
    expect(
        &t,
        "timeout",
        "target_group[0].health_check.timeout",
        "must be at least 1ms",
    );
    expect(
        &t,
        "healthy_threshold",
        "target_group[0].health_check.healthy_threshold",
        "0 is outside 1..=10",
    );
    expect(
        &t,
        "unhealthy_threshold",
        "target_group[0].health_check.unhealthy_threshold",
        "11 is outside 1..=10",
    );
    expect(
        &t,
        "matcher",
        "target_group[0].health_check.matcher",
        "\"2xx\" is not a status matcher",
    );
    expect(
        &t,
        "path = \"health",
        "target_group[0].health_check.path",
        "must start with \"/\"",
    );
    expect(
        &t,
        "port = 0",
        "target_group[0].health_check.port",
        "0 is outside 1..=65535",
    );
    expect(
        &t,
        "grpc",
        "target_group[0].health_check.protocol",
        "not one of \"http\", \"https\", \"tcp\"",
    );
    let t = hc("interval = \"10s\"\n  [target_group.outlier_detection]\n  consecutive_failures = 0\n  max_ejection_percent = 101");
    expect(
        &t,
        "consecutive_failures",
        "target_group[0].outlier_detection.consecutive_failures",
        "0 is outside 1..=1000",
    );
    expect(
        &t,
        "max_ejection_percent",
        "target_group[0].outlier_detection.max_ejection_percent",
        "101 is outside 0..=100",
    );
}

#[test]
fn retry_and_concurrency() {
    let tg = |to: &str| {
        doc(
            &[("interval = \"10s\"", &format!("interval = \"10s\"\n{to}"))],
            "",
        )
    };
    let t = tg("  [target_group.retry]\n  attempts = 6\n  on = [\"5xx\", \"teapot\"]\n  methods = [\"GET\", \"CONNECT\"]\n  per_try_timeout = \"2m\"\n  budget_percent = 101\n  max_replay_body = \"64kb\"");
    expect(
        &t,
        "attempts",
        "target_group[0].retry.attempts",
        "6 is outside 0..=5",
    );
    expect(
        &t,
        "teapot",
        "target_group[0].retry.on[1]",
        "\"teapot\" is not one of 5xx, gateway_error, reset, timeout",
    );
    expect(
        &t,
        "CONNECT",
        "target_group[0].retry.methods[1]",
        "\"CONNECT\" is not one of",
    );
    expect(
        &t,
        "per_try_timeout",
        "target_group[0].retry.per_try_timeout",
        "2m is longer than the group's response_timeout (1m)",
    );
    expect(
        &t,
        "budget_percent",
        "target_group[0].retry.budget_percent",
        "101 is outside 0..=100",
    );
    expect(
        &t,
        "max_replay_body",
        "target_group[0].retry.max_replay_body",
        "\"64kb\" is not a size",
    );
    let t = tg("  [target_group.concurrency]\n  queue = -1\n  queue_timeout = \"0s\"");
    expect(
        &t,
        "[target_group.concurrency]",
        "target_group[0].concurrency.max_per_target",
        "missing required key",
    );
    expect(
        &t,
        "queue =",
        "target_group[0].concurrency.queue",
        "-1 is outside 0..=100000",
    );
    expect(
        &t,
        "queue_timeout",
        "target_group[0].concurrency.queue_timeout",
        "is outside 1ms..=1h",
    );
    // Absent: today's behaviour; present with defaults: a policy as documented.
    assert_eq!(
        errors(&tg(
            "  [target_group.retry]\n  [target_group.concurrency]\n  max_per_target = 5"
        )),
        Vec::<String>::new()
    );
}

#[test]
fn lifecycle_hooks() {
    let hook = |body: &str| {
        doc(
            &[],
            &format!("{SCALING}  [[scaling_group.lifecycle_hook]]\n{body}"),
        )
    };
    let t = hook("  name = \"h\"\n  transition = \"booting\"\n  command = [\"x\", \"{nope}\", \"${0%:*}\"]\n  timeout = \"0s\"\n  default_result = \"maybe\"\n");
    expect(
        &t,
        "booting",
        "scaling_group[0].lifecycle_hook[0].transition",
        "\"booting\" is not one of \"launching\", \"terminating\"",
    );
    expect(
        &t,
        "{nope}",
        "scaling_group[0].lifecycle_hook[0].command",
        "{nope} is not one of {id}, {address}, {group}, {transition}",
    );
    expect(
        &t,
        "timeout = \"0s\"",
        "scaling_group[0].lifecycle_hook[0].timeout",
        "is outside 1s..=2h",
    );
    expect(
        &t,
        "maybe",
        "scaling_group[0].lifecycle_hook[0].default_result",
        "\"maybe\" is not one of \"continue\", \"abandon\"",
    );
    let ok = hook("  name = \"h\"\n  transition = \"terminating\"\n  command = [\"sh\", \"-c\", \"echo ${0%:*}\", \"{address}\"]\n");
    assert_eq!(errors(&ok), Vec::<String>::new());
}

#[test]
fn scale_to_zero_needs_min_zero() {
    let t = doc(
        &[],
        &format!("{SCALING}  [scaling_group.scale_to_zero]\n  idle = \"0s\"\n"),
    );
    expect(
        &t,
        "[scaling_group.scale_to_zero]",
        "scaling_group[0].scale_to_zero",
        "needs min = 0",
    );
    expect(
        &t,
        "idle = ",
        "scaling_group[0].scale_to_zero.idle",
        "0s is outside 1s..=1day",
    );
}

#[test]
fn instance_refresh_and_warm_pool_settings_are_checked() {
    let t = doc(
        &[],
        &format!("{SCALING}  [scaling_group.instance_refresh]\n  min_healthy_percent = 101\n  max_healthy_percent = 99\n  [scaling_group.warm_pool]\n  size = 0\n"),
    );
    expect(
        &t,
        "min_healthy_percent = 101",
        "scaling_group[0].instance_refresh.min_healthy_percent",
        "101 is outside 0..=100",
    );
    expect(
        &t,
        "max_healthy_percent = 99",
        "scaling_group[0].instance_refresh.max_healthy_percent",
        "99 is outside 100..=200",
    );
    expect(
        &t,
        "size = 0",
        "scaling_group[0].warm_pool.size",
        "0 is outside 1..=100",
    );
    // Launch before stop needs room above desired; and at most 100 apart.
    let t = doc(
        &[],
        &format!("{SCALING}  [scaling_group.instance_refresh]\n  max_healthy_percent = 100\n"),
    );
    expect(
        &t,
        "max_healthy_percent = 100",
        "scaling_group[0].instance_refresh.max_healthy_percent",
        "must be above 100",
    );
    let t = doc(
        &[],
        &format!("{SCALING}  [scaling_group.instance_refresh]\n  min_healthy_percent = 50\n  max_healthy_percent = 200\n"),
    );
    expect(
        &t,
        "max_healthy_percent = 200",
        "scaling_group[0].instance_refresh.max_healthy_percent",
        "200 is more than 100 above min_healthy_percent 50",
    );
    let ok = doc(
        &[],
        &format!("{SCALING}  [scaling_group.instance_refresh]\n  min_healthy_percent = 90\n  max_healthy_percent = 100\n  auto_rollback = false\n"),
    );
    assert_eq!(errors(&ok), Vec::<String>::new());
}

#[test]
fn scaling_groups() {
    let sg = |from: &str, to: &str| doc(&[], &SCALING.replacen(from, to, 1));
    let t = sg("max = 8", "max = 1001");
    expect(
        &t,
        "max = 1001",
        "scaling_group[0].max",
        "1001 is outside 0..=1000",
    );
    let t = sg("min = 1", "min = 9");
    expect(
        &t,
        "max = 8",
        "scaling_group[0].max",
        "max 8 is less than min 9",
    );
    let t = sg("target_group = \"tg\"", "target_group = \"nope\"");
    expect(
        &t,
        "nope",
        "scaling_group[0].target_group",
        "unknown target group \"nope\"",
    );
    let t = doc(
        &[],
        &format!(
            "{SCALING}{}",
            SCALING.replace("name = \"pool\"", "name = \"pool2\"")
        ),
    );
    expect_nth(
        &t,
        "target_group = \"tg\"",
        3,
        "scaling_group[1].target_group",
        "target group \"tg\" is already scaled by scaling group \"pool\"",
    );

    let t = sg("  ports = \"20000-20999\"\n", "");
    expect(
        &t,
        "[scaling_group.launch]",
        "scaling_group[0].launch.ports",
        "uses {port}, so ports",
    );
    let t = sg("ports = \"20000-20999\"", "ports = \"20000-20003\"");
    expect(
        &t,
        "ports",
        "scaling_group[0].launch.ports",
        "has 4 ports but max is 8",
    );
    let t = sg("ports = \"20000-20999\"", "ports = \"high-low\"");
    expect(
        &t,
        "ports",
        "scaling_group[0].launch.ports",
        "is not a port range",
    );
    let t = sg("ports = \"20000-20999\"", "ports = \"20000-20999\"\n  stop_signal = \"SIGSTOP\"\n  hook_timeout = \"5s\"\n  command = []");
    let t = t.replacen(
        "  command = [\"{self}\", \"echo\", \"--listen\", \"127.0.0.1:{port}\"]\n",
        "",
        1,
    );
    expect(
        &t,
        "stop_signal",
        "scaling_group[0].launch.stop_signal",
        "\"SIGSTOP\" is not one of SIGTERM",
    );
    expect(
        &t,
        "hook_timeout",
        "scaling_group[0].launch.hook_timeout",
        "hook_timeout belongs to the command provider, not to \"process\"",
    );
    expect(
        &t,
        "command = []",
        "scaling_group[0].launch.command",
        "must be a non-empty command",
    );
    let t = sg(
        "provider = \"process\"",
        "provider = \"command\"\n  launch = [\"/bin/up\"]",
    );
    expect(
        &t,
        "command = [",
        "scaling_group[0].launch.command",
        "command belongs to the process provider, not to \"command\"",
    );
    expect(
        &t,
        "[scaling_group.launch]",
        "scaling_group[0].launch.terminate",
        "missing required key",
    );
    let t = sg("provider = \"process\"", "provider = \"vm\"");
    expect(
        &t,
        "vm",
        "scaling_group[0].launch.provider",
        "\"vm\" is not one of \"process\", \"command\"",
    );
}

#[test]
fn policies() {
    let pol = |from: &str, to: &str| doc(&[], &SCALING.replacen(from, to, 1));
    let t = pol("type = \"target_tracking\"", "type = \"simple\"");
    expect(
        &t,
        "simple",
        "scaling_group[0].policy[0].type",
        "\"simple\" is not one of",
    );
    let t = pol("target = 500.0", "target = 0\n  cron = \"* * * * *\"");
    expect(
        &t,
        "target = 0",
        "scaling_group[0].policy[0].target",
        "0 must be greater than 0",
    );
    expect(
        &t,
        "cron",
        "scaling_group[0].policy[0].cron",
        "cron is not used by target_tracking policies",
    );
    let t = pol("metric = \"request_count_per_target\"", "metric = \"rps\"");
    expect(
        &t,
        "metric = \"rps\"",
        "scaling_group[0].policy[0].metric",
        "\"rps\" is not one of \"request_count_per_target\"",
    );

    let step = |steps: &str| {
        pol("type = \"target_tracking\"\n  metric = \"request_count_per_target\"\n  target = 500.0", &format!("type = \"step\"\n  metric = \"in_flight_per_target\"\n  adjustment_type = \"change\"\n  steps = {steps}"))
    };
    assert_eq!(
        errors(&step(
            "[{ upper = 5, adjustment = -1 }, { lower = 5, adjustment = 1 }]"
        )),
        Vec::<String>::new()
    );
    let t = step("[]");
    expect(
        &t,
        "steps",
        "scaling_group[0].policy[0].steps",
        "needs at least one step",
    );
    let t = step("[{ lower = 5, upper = 1, adjustment = 1 }]");
    expect(
        &t,
        "steps",
        "scaling_group[0].policy[0].steps[0].upper",
        "upper 1 must be greater than lower 5",
    );
    let t = step("[{ lower = 10, adjustment = 1 }, { lower = 0, upper = 10, adjustment = -1 }]");
    expect(
        &t,
        "steps",
        "scaling_group[0].policy[0].steps[1].lower",
        "overlaps steps[0]",
    );
    let t = step(
        "[{ lower = 0, upper = 10, adjustment = 1 }, { lower = 5, upper = 20, adjustment = 2 }]",
    );
    expect(
        &t,
        "steps",
        "scaling_group[0].policy[0].steps[1].lower",
        "overlaps steps[0]",
    );

    let sched = |body: &str| {
        pol(
            "type = \"target_tracking\"\n  metric = \"request_count_per_target\"\n  target = 500.0",
            &format!("type = \"scheduled\"\n{body}"),
        )
    };
    let t = sched("  cron = \"0 25 * * *\"\n  timezone = \"Paris\"\n");
    expect(
        &t,
        "cron",
        "scaling_group[0].policy[0].cron",
        "hour field \"25\"",
    );
    expect(
        &t,
        "timezone",
        "scaling_group[0].policy[0].timezone",
        "\"Paris\" is not \"UTC\" or an Area/City",
    );
    expect(
        &t,
        "[[scaling_group.policy]]",
        "scaling_group[0].policy[0]",
        "needs at least one of min, max, desired",
    );
    let t = sched("  cron = \"*/0 * * * *\"\n  min = 3\n  max = 2\n");
    expect(&t, "cron", "scaling_group[0].policy[0].cron", "step \"0\"");
    expect(
        &t,
        "max = 2",
        "scaling_group[0].policy[0].max",
        "max 2 is less than min 3",
    );
}

#[test]
fn admin_access_log_limits() {
    let t = doc(&[], "[admin]\nlisten = \"0.0.0.0:9901\"\n");
    expect(
        &t,
        "listen =",
        "admin.listen",
        "0.0.0.0:9901 is not a loopback address, so admin.token_file is required",
    );
    let t = doc(
        &[],
        "[admin]\nlisten = \"0.0.0.0:9901\"\ntoken_file = \"token\"\n",
    );
    assert_eq!(errors(&t), Vec::<String>::new());
    let t = doc(&[], "[admin]\nlisten = \"localhost\"\n");
    expect(
        &t,
        "listen =",
        "admin.listen",
        "is not an address with a port",
    );
    let t = doc(&[], "[access_log]\ndestination = \"\"\n");
    expect(
        &t,
        "destination",
        "access_log.destination",
        "must not be empty",
    );
    let t = doc(
        &[],
        "[limits]\nmax_header_bytes = 100\nheader_timeout = \"ten\"\nidle_timeout = \"0s\"\n",
    );
    expect(
        &t,
        "max_header_bytes",
        "limits.max_header_bytes",
        "100 is outside 8192..=1048576",
    );
    expect(
        &t,
        "header_timeout",
        "limits.header_timeout",
        "\"ten\" is not a duration",
    );
    expect(
        &t,
        "idle_timeout",
        "limits.idle_timeout",
        "must be greater than 0s",
    );
    let t = doc(
        &[(
            "port = 8080",
            "port = 8080\n  limits = { max_header_bytes = 2000000 }",
        )],
        "",
    );
    expect(
        &t,
        "limits",
        "service[0].listener[0].limits.max_header_bytes",
        "2000000 is outside 8192..=1048576",
    );
}

#[test]
fn every_section_reports_together() {
    let t = doc(
        &[
            ("port = 8080", "port = \"x\""),
            (
                "targets = [\"127.0.0.1:9001\"]",
                "targets = [\"127.0.0.1:9001\"]\nwat = 1",
            ),
        ],
        &format!(
            "[[target_group]]\nname = \"other\"\nprotocol = 5\n{}[admin]\nlisten = 3\n",
            SCALING.replace("desired = 2", "desired = 20")
        ),
    );
    let errs = errors(&t);
    let keys: Vec<&str> = errs
        .iter()
        .map(|e| e.split(": ").nth(1).unwrap_or(""))
        .collect();
    assert_eq!(
        keys,
        [
            "service[0].listener[0].port",
            "target_group[0].wat",
            "target_group[1].protocol",
            "scaling_group[0].desired",
            "admin.listen"
        ],
        "{errs:#?}"
    );
    // File order.
    let lines: Vec<usize> = errs
        .iter()
        .map(|e| {
            e.split(':')
                .nth(1)
                .and_then(|l| l.parse().ok())
                .unwrap_or(0)
        })
        .collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{errs:#?}");
}
