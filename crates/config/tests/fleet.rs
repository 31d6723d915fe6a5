//! `[fleet]` node files and the fleet's shared configuration: what each may hold, and the checks of
//! `[fleet]` itself.

use std::path::Path;
use std::time::Duration;

use trellis_config::{parse, parse_shared, Config, ConfigError};

fn errors(result: Result<Config, ConfigError>) -> Vec<String> {
    match result {
        Ok(_) => panic!("expected errors"),
        Err(ConfigError::Invalid(diags)) => diags.iter().map(|d| d.to_string()).collect(),
        Err(other) => panic!("{other}"),
    }
}

const NODE: &str = "[fleet]\nendpoints = [\"http://127.0.0.1:2379\"]\nprefix = \"/trellis/prod\"\n\
                    node = \"edge-1\"\nbind = \"127.0.0.2\"\nlease_ttl = \"5s\"\n\n\
                    [limits]\nidle_timeout = \"7s\"\n";

const SHARED: &str =
    "[[service]]\nname = \"s\"\nhosts = [\"*\"]\n[[service.listener]]\nname = \"web\"\n\
                      protocol = \"http\"\nport = 8080\nbind = \"0.0.0.0\"\n\
                      default_action = { forward = [{ target_group = \"g\" }] }\n\n\
                      [[target_group]]\nname = \"g\"\ntargets = [\"127.0.0.1:9001\"]\n";

#[test]
fn a_node_file_and_the_shared_configuration_make_one_config() {
    let node = parse(NODE, Path::new("/etc/trellis/node.toml")).expect("valid node file");
    let fleet = node.fleet.clone().expect("fleet");
    assert_eq!(fleet.endpoints, ["http://127.0.0.1:2379"]);
    assert_eq!(fleet.prefix, "/trellis/prod");
    assert_eq!(fleet.node, "edge-1");
    assert_eq!(fleet.lease_ttl, Duration::from_secs(5));
    let config = parse_shared(SHARED, Path::new("/etc/trellis/shop.toml"), &node).expect("valid");
    let listener = &config.services[0].listeners[0];
    assert_eq!(
        listener.bind.to_string(),
        "127.0.0.2",
        "the node's bind wins"
    );
    assert_eq!(
        listener.limits.idle_timeout,
        Duration::from_secs(7),
        "the node's limits"
    );
    assert_eq!(config.fleet, node.fleet);
}

#[test]
fn a_node_file_holds_only_node_local_sections() {
    let text = format!("{NODE}\n{SHARED}");
    let errors = errors(parse(&text, Path::new("node.toml")));
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("node.toml:11: service:") && e.contains("trellis fleet apply")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("target_group")),
        "{errors:?}"
    );
}

#[test]
fn the_shared_configuration_holds_no_node_local_section_and_any_scaling_group() {
    let node = parse(NODE, Path::new("node.toml")).unwrap();
    let group = |provider: &str| {
        let launch = match provider {
            "process" => "command = [\"{self}\", \"echo\", \"--listen\", \"{host}:{port}\"]\nports = \"21000-21009\"\n",
            _ => "launch = [\"/bin/launch\"]\nterminate = [\"/bin/terminate\"]\n",
        };
        format!(
            "\n[[scaling_group]]\nname = \"p\"\ntarget_group = \"g\"\nmin = 1\nmax = 2\n\
             [scaling_group.launch]\nprovider = \"{provider}\"\n{launch}"
        )
    };
    let text = format!("[admin]\nlisten = \"127.0.0.1:1\"\n\n{SHARED}");
    let errors = errors(parse_shared(&text, Path::new("shop.toml"), &node));
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("shop.toml:1: admin:") && e.contains("node-local")),
        "{errors:?}"
    );
    // Both providers run in fleet mode: processes on the nodes the group's owner picks, hooks on the owner.
    for provider in ["process", "command"] {
        let text = format!("{SHARED}{}", group(provider));
        let config = parse_shared(&text, Path::new("shop.toml"), &node).expect(provider);
        assert_eq!(config.scaling_groups[0].name, "p");
    }
}

#[test]
fn tls_to_etcd_is_checked_when_the_node_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nMAo=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let node = |endpoint: &str, tls: &str| {
        format!("[fleet]\nendpoints = [\"{endpoint}\"]\nnode = \"a\"\n{tls}")
    };
    let file = dir.path().join("node.toml");
    // https needs a CA; a relative path is beside the node file.
    let e = errors(parse(&node("https://127.0.0.1:2379", ""), &file));
    assert!(
        e.iter()
            .any(|e| e.contains("fleet.ca") && e.contains("need `ca`")),
        "{e:?}"
    );
    let ok = parse(&node("https://127.0.0.1:2379", "ca = \"ca.pem\"\n"), &file).expect("valid");
    let tls = ok.fleet.unwrap().tls.expect("tls");
    assert!(tls.ca.starts_with(b"-----BEGIN CERTIFICATE") && tls.identity.is_none());
    // TLS keys with plain endpoints, a cert without its key, a file that is not there.
    let e = errors(parse(
        &node("http://127.0.0.1:2379", "ca = \"ca.pem\"\n"),
        &file,
    ));
    assert!(
        e.iter()
            .any(|e| e.contains("fleet.ca") && e.contains("https://")),
        "{e:?}"
    );
    let e = errors(parse(
        &node(
            "https://127.0.0.1:2379",
            "ca = \"ca.pem\"\ncert = \"c.pem\"\n",
        ),
        &file,
    ));
    assert!(
        e.iter()
            .any(|e| e.contains("fleet.cert") && e.contains("needs `key`")),
        "{e:?}"
    );
    let e = errors(parse(
        &node("https://127.0.0.1:2379", "ca = \"nope.pem\"\n"),
        &file,
    ));
    assert!(
        e.iter()
            .any(|e| e.contains("node.toml:4: fleet.ca") && e.contains("cannot read")),
        "{e:?}"
    );
}

#[test]
fn fleet_settings_are_checked() {
    let errors = errors(parse(
        "[fleet]\nendpoints = [\"127.0.0.1:2379\"]\nprefix = \"trellis/\"\nnode = \"a b\"\nbind = \"x\"\nlease_ttl = \"1s\"\n",
        Path::new("n.toml"),
    ));
    for key in [
        "fleet.endpoints",
        "fleet.prefix",
        "fleet.node",
        "fleet.bind",
        "fleet.lease_ttl",
    ] {
        assert!(
            errors.iter().any(|e| e.contains(&format!(" {key}:"))),
            "{key}: {errors:?}"
        );
    }
    let missing = self::errors(parse("[fleet]\n", Path::new("n.toml")));
    assert!(
        missing.iter().any(|e| e.contains("fleet.endpoints")),
        "{missing:?}"
    );
}

#[test]
fn what_a_fleet_does_not_run_is_refused_rather_than_ignored() {
    let node = parse(NODE, Path::new("node.toml")).expect("valid node file");
    let group = "\n[[scaling_group]]\nname = \"pool\"\ntarget_group = \"g\"\nmin = 0\nmax = 2\n\
                 [scaling_group.launch]\nprovider = \"process\"\ncommand = [\"x\", \"{port}\"]\nports = \"20000-20009\"\n\
                 [scaling_group.instance_refresh]\nmin_healthy_percent = 50\nauto_rollback = true\n\
                 [scaling_group.warm_pool]\nsize = 1\nreuse_on_scale_in = true\n\
                 [scaling_group.scale_to_zero]\nidle = \"1m\"\n\
                 [[scaling_group.lifecycle_hook]]\nname = \"h\"\ntransition = \"launching\"\ncommand = [\"true\"]\n";
    let shared = SHARED.replace("targets = [\"127.0.0.1:9001\"]", "targets = []");
    let errors = errors(parse_shared(
        &format!("{shared}{group}"),
        Path::new("shop.toml"),
        &node,
    ));
    assert!(
        errors.iter().any(
            |e| e.contains("scaling_group[0].warm_pool.reuse_on_scale_in:")
                && e.contains("single node only")
        ),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(
            |e| e.contains("scaling_group[0].instance_refresh.auto_rollback:")
                && e.contains("does not roll")
        ),
        "{errors:?}"
    );
    // Scale to zero runs in a fleet: the owner scales to zero, and any node wakes the group. So do
    // lifecycle hooks, on the node that runs the instance; but not with the command provider's machines.
    assert!(
        !errors
            .iter()
            .any(|e| e.contains("scale_to_zero") || e.contains("lifecycle_hook")),
        "{errors:?}"
    );
    let command = group.replace(
        "provider = \"process\"\ncommand = [\"x\", \"{port}\"]\nports = \"20000-20009\"\n",
        "provider = \"command\"\nlaunch = [\"l\"]\nterminate = [\"t\"]\n",
    );
    let errors = self::errors(parse_shared(
        &format!("{shared}{command}"),
        Path::new("shop.toml"),
        &node,
    ));
    for key in ["lifecycle_hook[0]", "warm_pool"] {
        assert!(
            errors
                .iter()
                .any(|e| e.contains(&format!("scaling_group[0].{key}:"))
                    && e.contains("command provider")),
            "{key}: {errors:?}"
        );
    }
}
