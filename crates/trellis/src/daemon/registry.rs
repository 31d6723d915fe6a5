//! Targets registered through the admin API, and how they join the file's configuration.
//!
//! The file owns the targets it lists; the API owns the ones it added. An API call never changes a file
//! target (the next reload would undo it without a word), and a file target is never duplicated by a
//! registration.

use std::collections::HashSet;
use std::net::SocketAddr;

use trellis_config::{Config, TargetSpec};

use super::ChangeError;
use crate::state::Registration;

/// The file's configuration with the registered targets added to their groups. Registrations whose group
/// is gone are kept (the group may come back) but not served; registrations that the file now lists
/// itself give way to the file.
pub fn merge(
    file: &Config,
    registrations: &[Registration],
) -> (Config, HashSet<(String, SocketAddr)>) {
    let mut effective = file.clone();
    let mut registered = HashSet::new();
    for r in registrations {
        let Some(group) = effective
            .target_groups
            .iter_mut()
            .find(|g| g.name == r.target_group)
        else {
            tracing::warn!(target_group = %r.target_group, target = %r.address, "registered target's group is not in the configuration; not served");
            continue;
        };
        if group.targets.iter().any(|t| t.address == r.address) {
            if !registered.contains(&(r.target_group.clone(), r.address)) {
                tracing::info!(target_group = %r.target_group, target = %r.address, "registered target is also in the configuration file; the file's entry applies");
            }
            continue;
        }
        group.targets.push(TargetSpec {
            address: r.address,
            weight: r.weight,
        });
        registered.insert((r.target_group.clone(), r.address));
    }
    (effective, registered)
}

/// Whether `address` may be registered in `group` with `weight`.
pub fn check_registrable(
    file: &Config,
    group: &str,
    address: SocketAddr,
    weight: Option<u16>,
) -> Result<(), ChangeError> {
    if let Some(weight) = weight.filter(|&w| w > 999) {
        return Err(ChangeError::BadRequest(format!(
            "weight {weight} is outside 0..=999"
        )));
    }
    let Some(tg) = file.target_groups.iter().find(|g| g.name == group) else {
        return Err(ChangeError::NotFound(format!(
            "no target group named {group:?}"
        )));
    };
    if tg.targets.iter().any(|t| t.address == address) {
        return Err(ChangeError::Conflict(format!(
            "{address} is listed in target group {group:?} of the configuration file; change it there and reload"
        )));
    }
    Ok(())
}

/// Adds a registration (weight 1 unless given) or re-weights one (kept unless given); returns whether it
/// is new and the weight it has now.
pub fn upsert(
    regs: &mut Vec<Registration>,
    group: &str,
    address: SocketAddr,
    weight: Option<u16>,
) -> (bool, u16) {
    match regs
        .iter_mut()
        .find(|r| r.target_group == group && r.address == address)
    {
        Some(existing) => {
            existing.weight = weight.unwrap_or(existing.weight);
            (false, existing.weight)
        }
        None => {
            let weight = weight.unwrap_or(1);
            regs.push(Registration {
                target_group: group.to_string(),
                address,
                weight,
            });
            (true, weight)
        }
    }
}

/// Removes a registration, or says why it cannot be.
pub fn remove(
    file: &Config,
    regs: &mut Vec<Registration>,
    group: &str,
    address: SocketAddr,
) -> Result<(), ChangeError> {
    let before = regs.len();
    regs.retain(|r| !(r.target_group == group && r.address == address));
    if regs.len() < before {
        return Ok(());
    }
    match file.target_groups.iter().find(|g| g.name == group) {
        None => Err(ChangeError::NotFound(format!("no target group named {group:?}"))),
        Some(tg) if tg.targets.iter().any(|t| t.address == address) => {
            Err(ChangeError::Conflict(format!(
                "{address} is listed in target group {group:?} of the configuration file; remove it there and reload"
            )))
        }
        Some(_) => Err(ChangeError::NotFound(format!(
            "{address} is not registered in target group {group:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        trellis_config::parse(
            "[[service]]\nname = \"s\"\nhosts = [\"*\"]\n[[service.listener]]\nname = \"l\"\n\
             protocol = \"http\"\nport = 8080\ndefault_action = { forward = [{ target_group = \"web\" }] }\n\
             [[target_group]]\nname = \"web\"\ntargets = [\"127.0.0.1:1\"]\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap()
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn registrations_join_their_group_and_give_way_to_the_file() {
        let mut regs = Vec::new();
        assert_eq!(upsert(&mut regs, "web", addr(2), Some(3)), (true, 3));
        assert_eq!(
            upsert(&mut regs, "web", addr(2), None),
            (false, 3),
            "weight kept"
        );
        assert_eq!(
            upsert(&mut regs, "web", addr(2), Some(4)),
            (false, 4),
            "re-weighted"
        );
        assert_eq!(upsert(&mut regs, "gone", addr(3), None), (true, 1));
        regs.push(Registration {
            target_group: "web".into(),
            address: addr(1),
            weight: 9,
        });
        let (effective, registered) = merge(&config(), &regs);
        let targets = &effective.target_groups[0].targets;
        assert_eq!(
            targets
                .iter()
                .map(|t| (t.address, t.weight))
                .collect::<Vec<_>>(),
            [(addr(1), 1), (addr(2), 4)]
        );
        assert_eq!(registered, HashSet::from([("web".to_string(), addr(2))]));
    }

    #[test]
    fn the_api_cannot_touch_file_targets_or_unknown_groups() {
        let c = config();
        assert!(matches!(
            check_registrable(&c, "web", addr(1), None),
            Err(ChangeError::Conflict(_))
        ));
        assert!(matches!(
            check_registrable(&c, "nope", addr(2), None),
            Err(ChangeError::NotFound(_))
        ));
        assert!(matches!(
            check_registrable(&c, "web", addr(2), Some(1000)),
            Err(ChangeError::BadRequest(_))
        ));
        let mut regs = Vec::new();
        assert!(matches!(
            remove(&c, &mut regs, "web", addr(1)),
            Err(ChangeError::Conflict(_))
        ));
        assert!(matches!(
            remove(&c, &mut regs, "web", addr(2)),
            Err(ChangeError::NotFound(_))
        ));
        upsert(&mut regs, "web", addr(2), None);
        assert!(remove(&c, &mut regs, "web", addr(2)).is_ok());
        assert!(regs.is_empty());
    }
}
