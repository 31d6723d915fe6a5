//! Valid files: the DESIGN.md example, defaults, normalisation.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use trellis_config::*;

const DESIGN: &str = include_str!("data/design.toml");

fn parse_ok(text: &str) -> Config {
    match parse(text, Path::new("config.toml")) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

/// The smallest useful file, to which tests append.
pub const MINIMAL: &str = r#"
[[service]]
name = "s"
hosts = ["*"]
  [[service.listener]]
  name = "l"
  protocol = "http"
  port = 8080
  default_action = { forward = [{ target_group = "tg" }] }

[[target_group]]
name = "tg"
targets = ["127.0.0.1:9001"]
"#;

#[test]
fn design_example_parses() {
    let c = parse_ok(DESIGN);
    assert_eq!(
        c.summary(),
        "config.toml: ok: 1 service, 1 listener, 2 rules, 3 target groups (4 targets), 1 scaling group"
    );
    let svc = &c.services[0];
    assert_eq!(
        svc.hosts,
        vec![
            HostPattern::Exact("shop.internal".into()),
            HostPattern::Suffix(".shop.internal".into())
        ]
    );
    let l = &svc.listeners[0];
    assert_eq!(
        l.socket_addr(),
        "0.0.0.0:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        l.default_action,
        Action::Forward(vec![WeightedTargetGroup {
            target_group: "web".into(),
            weight: 1
        }])
    );
    let canary = &l.rules[0];
    assert_eq!(canary.matcher.method.as_deref(), Some("GET"));
    assert_eq!(canary.matcher.headers[0].name, "x-canary");
    assert_eq!(
        canary.action,
        Action::Forward(vec![
            WeightedTargetGroup {
                target_group: "api-v1".into(),
                weight: 90
            },
            WeightedTargetGroup {
                target_group: "api-v2".into(),
                weight: 10
            },
        ])
    );
    let gone = &l.rules[1];
    assert!(gone.matcher.path.as_ref().unwrap().case_sensitive);
    assert_eq!(
        gone.action,
        Action::FixedResponse(FixedResponse {
            status: 410,
            body: Some("gone\n".into()),
            content_type: None
        })
    );

    let web = &c.target_groups[0];
    assert_eq!(
        web.targets[1],
        TargetSpec {
            address: "127.0.0.1:9002".parse().unwrap(),
            weight: 3
        }
    );
    assert_eq!(web.health_check.healthy_threshold, 5);
    assert!(web.health_check.matcher.matches(200));
    assert!(!web.health_check.matcher.matches(204));

    let sg = &c.scaling_groups[0];
    assert_eq!((sg.min, sg.max, sg.desired), (1, 8, 2));
    assert_eq!(sg.cooldown, Duration::from_secs(30));
    let Launch::Process(p) = &sg.launch else {
        panic!("process launch")
    };
    assert_eq!(p.ports, Some((20000, 20999)));
    assert_eq!(p.stop_signal, libc::SIGTERM);
    assert_eq!(
        sg.policies[0].kind,
        PolicyKind::TargetTracking {
            metric: ScalingMetric::RequestCountPerTarget,
            target: 500.0,
            disable_scale_in: false
        }
    );
}

#[test]
fn defaults_match_the_model_docs() {
    let c = parse_ok(MINIMAL);
    assert_eq!(
        c.admin,
        Admin {
            listen: "127.0.0.1:9901".parse().unwrap(),
            token_file: None
        }
    );
    assert_eq!(c.access_log.destination, LogDestination::Stdout);
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.services[0].listeners[0].limits, Limits::default());
    let tg = &c.target_groups[0];
    assert_eq!(
        (tg.protocol, tg.protocol_version, tg.algorithm),
        (
            TargetProtocol::Http,
            ProtocolVersion::Http1,
            Algorithm::RoundRobin
        )
    );
    assert_eq!(tg.deregistration_delay, Duration::from_secs(30));
    assert_eq!(tg.response_timeout, Duration::from_secs(60));
    assert_eq!(tg.connect_timeout, Duration::from_secs(5));
    let hc = &tg.health_check;
    assert!(hc.enabled);
    assert_eq!(hc.protocol, HealthCheckProtocol::Http);
    assert_eq!((hc.path.as_str(), hc.port), ("/", None));
    assert_eq!(
        (hc.interval, hc.timeout),
        (Duration::from_secs(30), Duration::from_secs(5))
    );
    assert_eq!((hc.healthy_threshold, hc.unhealthy_threshold), (5, 2));
    assert_eq!(
        hc.matcher,
        StatusMatcher {
            ranges: vec![(200, 200)],
            text: "200".into()
        }
    );
    assert_eq!(
        tg.outlier_detection,
        OutlierDetection {
            enabled: true,
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    );
}

#[test]
fn a_short_interval_alone_gets_half_of_it_as_timeout() {
    for (interval, timeout) in [("5s", 2500), ("1s", 500), ("100ms", 50), ("20s", 5000)] {
        let text = format!("{MINIMAL}  [target_group.health_check]\n  interval = \"{interval}\"\n");
        let hc = &parse_ok(&text).target_groups[0].health_check;
        assert_eq!(
            hc.timeout,
            Duration::from_millis(timeout),
            "interval {interval}"
        );
    }
}

#[test]
fn rules_sorted_limits_resolved_paths_relative() {
    let text = r#"
[limits]
idle_timeout = "30s"
[access_log]
destination = "logs/access.log"
[admin]
listen = "0.0.0.0:9901"
token_file = "/etc/trellis/token"
[[service]]
name = "s"
hosts = ["API.Example.com", "*"]
  [[service.listener]]
  name = "tls"
  protocol = "http"
  port = 8443
  bind = "::1"
  limits = { max_header_bytes = 16384 }
  default_action = { fixed_response = { status = 404 } }
    [[service.listener.rule]]
    name = "late"
    priority = 2000
    action = { fixed_response = { status = 200 } }
    [[service.listener.rule]]
    name = "early"
    priority = 1
    match = { method = "delete", headers = [{ name = "X-Env", contains = "Prod", case_sensitive = true }] }
    action = { fixed_response = { status = 204, content_type = "text/plain" } }
"#;
    let c = parse(text, Path::new("/etc/trellis/config.toml")).unwrap();
    assert_eq!(
        c.access_log.destination,
        LogDestination::File("/etc/trellis/logs/access.log".into())
    );
    let svc = &c.services[0];
    assert_eq!(
        svc.hosts,
        vec![
            HostPattern::Exact("api.example.com".into()),
            HostPattern::Any
        ]
    );
    let l = &svc.listeners[0];
    assert_eq!(l.tls, None);
    assert_eq!(
        l.limits,
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_header_bytes: 16384,
            ..Limits::default()
        }
    );
    let names: Vec<&str> = l.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["early", "late"]);
    let m = &l.rules[0].matcher;
    assert_eq!(m.method.as_deref(), Some("DELETE"));
    assert_eq!(
        m.headers[0],
        HeaderMatch {
            name: "x-env".into(),
            kind: StringMatchKind::Contains,
            value: "Prod".into(),
            case_sensitive: true
        }
    );
}

#[test]
fn tcp_groups_and_launch_variants() {
    let text = r#"
[[service]]
name = "db"
hosts = ["db.internal"]
  [[service.listener]]
  name = "pass"
  protocol = "tls_passthrough"
  port = 5432
  default_action = { forward = [{ target_group = "pg" }] }
[[target_group]]
name = "pg"
protocol = "tcp"
algorithm = "least_outstanding"
targets = [{ address = "[::1]:5433", weight = 0 }, "10.0.0.1:5432"]
  [target_group.health_check]
  interval = "100ms"
  timeout = "50ms"
  matcher = "200-299,301"
[[scaling_group]]
name = "vms"
target_group = "pg"
min = 0
max = 3
termination_policy = "newest"
  [scaling_group.launch]
  provider = "command"
  launch = ["/bin/launch", "{group}"]
  terminate = ["/bin/terminate", "{id}"]
  list = ["/bin/list"]
  hook_timeout = "2m"
  [[scaling_group.policy]]
  name = "night"
  type = "scheduled"
  cron = "0 22 * * 1-5"
  timezone = "Europe/Paris"
  desired = 0
  [[scaling_group.policy]]
  name = "steps"
  type = "step"
  metric = "in_flight_per_target"
  adjustment_type = "percent"
  steps = [{ upper = 10, adjustment = -20 }, { lower = 10, upper = 50, adjustment = 0 }, { lower = 50, adjustment = 50 }]
"#;
    let c = parse_ok(text);
    let tg = &c.target_groups[0];
    assert_eq!(tg.health_check.protocol, HealthCheckProtocol::Tcp);
    assert_eq!(tg.health_check.matcher.ranges, vec![(200, 299), (301, 301)]);
    assert_eq!(tg.targets[0].weight, 0);
    let sg = &c.scaling_groups[0];
    assert_eq!(
        (sg.desired, sg.termination_policy),
        (0, TerminationPolicy::Newest)
    );
    assert_eq!(
        sg.launch,
        Launch::Command(CommandLaunch {
            launch: vec!["/bin/launch".into(), "{group}".into()],
            terminate: vec!["/bin/terminate".into(), "{id}".into()],
            list: Some(vec!["/bin/list".into()]),
            hook_timeout: Duration::from_secs(120),
        })
    );
    assert_eq!(
        sg.policies[0].kind,
        PolicyKind::Scheduled {
            cron: "0 22 * * 1-5".into(),
            timezone: "Europe/Paris".into(),
            min: None,
            max: None,
            desired: Some(0)
        }
    );
    let PolicyKind::Step {
        steps,
        adjustment_type,
        ..
    } = &sg.policies[1].kind
    else {
        panic!("step")
    };
    assert_eq!(*adjustment_type, AdjustmentType::Percent);
    assert_eq!(
        steps[0],
        Step {
            lower: None,
            upper: Some(10.0),
            adjustment: -20
        }
    );
    assert_eq!(
        steps[2],
        Step {
            lower: Some(50.0),
            upper: None,
            adjustment: 50
        }
    );
}

#[test]
fn load_reports_missing_file() {
    let err = load(Path::new("/nonexistent/trellis.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
}
