//! Where each piece of the truth lives under the prefix.

use std::net::SocketAddr;

pub fn config(prefix: &str) -> String {
    format!("{prefix}/config")
}

pub fn registrations(prefix: &str) -> String {
    format!("{prefix}/registrations/")
}

pub fn registration(prefix: &str, group: &str, address: SocketAddr) -> String {
    format!("{prefix}/registrations/{group}/{address}")
}

/// `(group, address)` of a registration key, or `None` for a key that is not one.
pub fn parse_registration(prefix: &str, key: &str) -> Option<(String, SocketAddr)> {
    let rest = key.strip_prefix(&registrations(prefix))?;
    let (group, address) = rest.split_once('/')?;
    Some((group.to_string(), address.parse().ok()?))
}

/// Where the nodes keep their leased keys.
pub fn nodes(prefix: &str) -> String {
    format!("{prefix}/nodes/")
}

pub fn node(prefix: &str, node: &str) -> String {
    format!("{prefix}/nodes/{node}")
}

/// The scaling groups' keys: ownership, state, instance records, and what nodes report about them.
pub fn scaling(prefix: &str) -> String {
    format!("{prefix}/scaling/")
}

/// One scaling group's range: `owner`, `state`, `instances/{id}`, `reports/{id}`, `load/{node}`,
/// `requests/...`.
pub fn group(prefix: &str, group: &str) -> String {
    format!("{prefix}/scaling/{group}/")
}

/// Whether `key` is part of what a node serves (the configuration and the registrations); nodes' leases
/// and the scaling groups' working keys change far more often and are read by their own tasks.
pub fn is_truth(prefix: &str, key: &[u8]) -> bool {
    key == config(prefix).as_bytes() || key.starts_with(registrations(prefix).as_bytes())
}

/// Everything of a fleet: the range that one read and one watch cover.
pub fn all(prefix: &str) -> String {
    format!("{prefix}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_keys_round_trip() {
        let a: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        let k = registration("/t", "web", a);
        assert_eq!(k, "/t/registrations/web/127.0.0.1:9001");
        assert_eq!(parse_registration("/t", &k), Some(("web".into(), a)));
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(
            parse_registration("/t", &registration("/t", "g", v6)),
            Some(("g".into(), v6))
        );
        assert_eq!(parse_registration("/t", "/t/config"), None);
        assert_eq!(
            parse_registration("/t", "/t/registrations/web/nonsense"),
            None
        );
    }

    #[test]
    fn only_the_configuration_and_registrations_are_the_truth() {
        assert!(is_truth("/t", b"/t/config"));
        assert!(is_truth("/t", b"/t/registrations/web/127.0.0.1:1"));
        assert!(!is_truth("/t", b"/t/config2"));
        assert!(!is_truth("/t", b"/t/nodes/a"));
        assert!(!is_truth("/t", b"/t/scaling/web/owner"));
    }
}
