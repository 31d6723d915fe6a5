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
}
