//! The one line `trellis check` prints for a valid file.

use crate::model::Config;

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl Config {
    /// `config.toml: ok: 2 services, 3 listeners, 5 rules, 3 target groups (4 targets), 1 scaling group`.
    pub fn summary(&self) -> String {
        let listeners: usize = self.services.iter().map(|s| s.listeners.len()).sum();
        let rules: usize = self
            .services
            .iter()
            .flat_map(|s| &s.listeners)
            .map(|l| l.rules.len())
            .sum();
        let targets: usize = self.target_groups.iter().map(|t| t.targets.len()).sum();
        format!(
            "{}: ok: {}, {}, {}, {} ({}), {}",
            self.source.display(),
            plural(self.services.len(), "service", "services"),
            plural(listeners, "listener", "listeners"),
            plural(rules, "rule", "rules"),
            plural(self.target_groups.len(), "target group", "target groups"),
            plural(targets, "target", "targets"),
            plural(self.scaling_groups.len(), "scaling group", "scaling groups"),
        )
    }
}
