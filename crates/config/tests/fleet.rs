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
fn the_shared_configuration_holds_no_node_local_section_and_no_scaling_group() {
    let node = parse(NODE, Path::new("node.toml")).unwrap();
    let text =
        format!("[admin]\nlisten = \"127.0.0.1:1\"\n\n{SHARED}\n[[scaling_group]]\nname = \"p\"\n");
    let errors = errors(parse_shared(&text, Path::new("shop.toml"), &node));
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("shop.toml:1: admin:") && e.contains("node-local")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("scaling_group") && e.contains("fleet mode")),
        "{errors:?}"
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
