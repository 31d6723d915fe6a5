//! `trellis status` as text: what the daemon runs, then every target's state and why, then every
//! scaling group with its instances and what it did last.
//!
//! Read from the JSON as `Value`s rather than typed structs: a field this CLI does not know, or one an
//! older daemon does not send, must cost one `-` in a cell, never the whole report.

use std::cmp::Reverse;

use serde_json::Value;

use super::table::Table;

pub fn render(status: &Value) -> String {
    let mut out = header(status);
    out.push_str("\n\n");
    let services = services(status);
    if services.is_empty() {
        out.push_str("no services\n");
    } else {
        out.push_str(&services.render());
    }
    out.push('\n');
    let (targets, notes) = targets(status);
    if targets.is_empty() {
        out.push_str("no target groups\n");
    } else {
        out.push_str(&targets.render());
    }
    for note in notes {
        out.push_str(&note);
        out.push('\n');
    }
    // A daemon without scaling groups (or from before them) gets no section at all; one whose group
    // has not published yet sends `null` for it.
    for group in list(&status["scaling_groups"]).filter(|g| g.is_object()) {
        out.push('\n');
        out.push_str(&scaling_group(group));
    }
    out
}

/// Activities shown per scaling group (the daemon keeps more).
const ACTIVITIES: usize = 5;

/// A scaling group: its capacity on one line, its launch back-off if launches fail, a table of its
/// instances, then its last activities, newest first.
fn scaling_group(group: &Value) -> String {
    let mut out = format!(
        "SCALING GROUP {} → target group {}: min {}, desired {}, max {} \
         ({} in service, {} pending, {} terminating)\n",
        text(&group["name"]),
        text(&group["target_group"]),
        text(&group["min"]),
        text(&group["desired"]),
        text(&group["max"]),
        text(&group["in_service"]),
        text(&group["pending"]),
        text(&group["terminating"]),
    );
    // Why it is this size: each metric policy's last measured value against its target.
    let policies: Vec<String> = list(&group["policies"])
        .map(|p| {
            let value = p["value"]
                .as_f64()
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
            match p["target"].as_f64() {
                Some(target) => format!(
                    "{} {} {value} (target {target})",
                    text(&p["name"]),
                    text(&p["metric"])
                ),
                None => format!("{} {} {value}", text(&p["name"]), text(&p["metric"])),
            }
        })
        .collect();
    if !policies.is_empty() {
        out.push_str(&format!("policies: {}\n", policies.join("; ")));
    }
    if let Some(held) = group["scale_in_held_seconds"].as_f64() {
        out.push_str(&format!(
            "scale-in wanted, held {} more (cooldown, scale_in_window {})\n",
            humanize(held),
            text(&group["scale_in_window"])
        ));
    }
    let pool = &group["warm_pool"];
    if pool.is_object() {
        out.push_str(&format!(
            "warm pool: {} of {} ready ({} warmed)\n",
            text(&pool["ready"]),
            text(&pool["size"]),
            text(&pool["warmed"]),
        ));
    }
    let refresh = &group["instance_refresh"];
    if refresh.is_object() {
        out.push_str(&format!(
            "instance refresh {}: {}, {}%",
            text(&refresh["id"]),
            text(&refresh["status"]),
            text(&refresh["percentage_complete"]),
        ));
        if let Some(reason) = refresh["reason"].as_str().filter(|r| !r.is_empty()) {
            out.push_str(&format!(" ({reason})"));
        }
        out.push('\n');
    }
    let backoff = &group["launch_backoff"];
    if let Some(failures) = backoff["failures"].as_u64().filter(|&n| n > 0) {
        out.push_str(&format!("launches failing: {failures} in a row"));
        if let Some(wait) = backoff["next_launch_in_seconds"].as_f64() {
            out.push_str(&format!(", next try in {}", humanize(wait)));
        }
        out.push('\n');
    }
    let mut instances = Table::new(&["INSTANCE", "ADDRESS", "LIFECYCLE", "AGE", "PID"]);
    for instance in list(&group["instances"]) {
        instances.row(vec![
            text(&instance["id"]),
            text(&instance["address"]),
            lifecycle(instance),
            instance["age_seconds"]
                .as_f64()
                .map_or_else(|| "-".to_owned(), humanize),
            text(&instance["pid"]),
        ]);
    }
    if instances.is_empty() {
        out.push_str("no instances\n");
    } else {
        out.push_str(&instances.render());
    }
    // The daemon sends the newest first; sorting (stable, so equal times keep its order) makes that
    // hold whatever order a daemon keeps them in. A time that does not parse goes last.
    let mut activities: Vec<&Value> = list(&group["activities"]).collect();
    activities.sort_by_key(|a| {
        Reverse(
            a["at"]
                .as_str()
                .and_then(|at| humantime::parse_rfc3339_weak(at).ok()),
        )
    });
    let mut recent = Table::new(&["AT", "KIND", "DESCRIPTION"]);
    for activity in activities.into_iter().take(ACTIVITIES) {
        recent.row(vec![
            text(&activity["at"]),
            text(&activity["kind"]),
            text(&activity["description"]),
        ]);
    }
    out.push_str(&recent.render_rows("  "));
    out
}

/// The lifecycle state, with what sets the instance apart for the scaler: still warming up (its
/// load does not yet count), or protected from scale-in.
fn lifecycle(instance: &Value) -> String {
    let mut cell = text(&instance["lifecycle"]);
    // A pending instance is warming by definition: say so only of one that already serves.
    if instance["warming"] == true && cell != "pending" {
        cell.push_str(" (warming)");
    }
    if instance["protected"] == true {
        cell.push_str(" (protected)");
    }
    cell
}

/// One line: version, configuration file and fingerprint, when it was loaded, reload counts.
fn header(status: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(version) = status["version"].as_str() {
        parts.push(format!("trellis {version}"));
    }
    match &status["config"] {
        // Daemons before hot reload sent only the path.
        Value::String(path) => parts.push(format!("config {path}")),
        config @ Value::Object(_) => {
            parts.push(format!("config {}", text(&config["path"])));
            if let Some(sha) = config["sha256"].as_str() {
                parts.push(format!("sha256 {}", sha.get(..12).unwrap_or(sha)));
            }
            if let Some(at) = config["loaded_at"].as_str() {
                parts.push(format!("loaded {}", to_seconds(at)));
            }
            // An older daemon sends no `changed_at` (and resets `loaded_at` on every change of targets).
            if let Some(at) = config["changed_at"].as_str() {
                parts.push(format!("targets changed {}", to_seconds(at)));
            }
            let reloads = &config["reloads"];
            if reloads.is_object() {
                parts.push(format!(
                    "reloads {} ok, {} failed",
                    count(&reloads["ok"]),
                    count(&reloads["error"])
                ));
            }
        }
        _ => {}
    }
    let mut line = parts.join("  ");
    if let Some(fleet) = status["fleet"].as_object() {
        line.push('\n');
        line.push_str(&fleet_line(fleet));
    }
    line
}

/// `2025-05-01T12:00:00.123Z` → `2025-05-01T12:00:00Z`: a person reads seconds.
fn to_seconds(at: &str) -> String {
    match at.split_once('.') {
        Some((seconds, fraction)) if fraction.ends_with('Z') => format!("{seconds}Z"),
        _ => at.to_string(),
    }
}

/// A fleet node's place: its name, the revision it serves, and the store's state.
fn fleet_line(fleet: &serde_json::Map<String, Value>) -> String {
    let mut parts = vec![
        format!("fleet {}", text(&fleet["prefix"])),
        format!("node {}", text(&fleet["node"])),
        format!("revision {}", count(&fleet["revision"])),
        format!("store {}", text(&fleet["store"])),
    ];
    if fleet["stale"] == true {
        parts.push("STALE: serving the disk copy".into());
    }
    if let Some(refused) = fleet["refused_revision"].as_i64() {
        parts.push(format!("refused revision {refused}"));
    }
    parts.join("  ")
}

/// One row per listener (a service without listeners gets a row of dashes).
fn services(status: &Value) -> Table {
    let mut table = Table::new(&[
        "SERVICE", "HOSTS", "LISTENER", "PROTOCOL", "ADDRESS", "RULES",
    ]);
    for service in list(&status["services"]) {
        let name = text(&service["name"]);
        let hosts: Vec<&str> = list(&service["hosts"]).filter_map(Value::as_str).collect();
        let hosts = if hosts.is_empty() {
            "-".to_owned()
        } else {
            hosts.join(",")
        };
        let listeners: Vec<&Value> = list(&service["listeners"]).collect();
        if listeners.is_empty() {
            table.row(vec![name.clone(), hosts.clone()]);
        }
        for listener in listeners {
            table.row(vec![
                name.clone(),
                hosts.clone(),
                text(&listener["name"]),
                text(&listener["protocol"]),
                text(&listener["address"]),
                list(&listener["rules"]).count().to_string(),
            ]);
        }
    }
    table
}

/// One row per target (a group without targets gets one row of its own), and a note under the table
/// for each group failing open, since that changes where traffic goes.
fn targets(status: &Value) -> (Table, Vec<String>) {
    let mut table = Table::new(&[
        "TARGET GROUP",
        "TARGET",
        "SOURCE",
        "WEIGHT",
        "STATE",
        "FOR",
        "REASON",
    ]);
    let mut notes = Vec::new();
    for group in list(&status["target_groups"]) {
        let name = text(&group["name"]);
        let mut label = name.clone();
        if group["failing_open"] == true {
            label.push_str(" (FAILING OPEN)");
            notes.push(format!(
                "{name} is failing open: none of its targets is routable, so all of them get traffic"
            ));
        }
        if group["removed"] == true {
            label.push_str(" (removed)");
        }
        if group["tls"]["verify"] == false {
            label.push_str(" (TLS UNVERIFIED)");
            notes.push(format!(
                "{name} does not verify its targets' certificates (insecure_skip_verify = true)"
            ));
        }
        let targets: Vec<&Value> = list(&group["targets"]).collect();
        if targets.is_empty() {
            table.row(vec![label.clone(), "(none)".to_owned()]);
        }
        for target in targets {
            table.row(vec![
                label.clone(),
                text(&target["address"]),
                text(&target["source"]),
                text(&target["weight"]),
                state(target),
                target["in_state_seconds"]
                    .as_f64()
                    .map_or_else(|| "-".to_owned(), humanize),
                text(&target["reason"]),
            ]);
        }
    }
    (table, notes)
}

/// The health state, with what overrides it for now: a passive ejection, a drain.
fn state(target: &Value) -> String {
    let state = text(&target["state"]);
    let mut notes = Vec::new();
    if let Some(left) = target["drain_deadline_seconds"].as_f64() {
        if state == "draining" {
            notes.push(format!("{} left", humanize(left)));
        } else {
            notes.push(format!("draining, {} left", humanize(left)));
        }
    }
    if target["ejected"] == true {
        match target["ejected_for_seconds"].as_f64() {
            Some(left) => notes.push(format!("EJECTED, {} left", humanize(left))),
            None => notes.push("EJECTED".to_owned()),
        }
    }
    if notes.is_empty() {
        state
    } else {
        format!("{state} ({})", notes.join("; "))
    }
}

/// Seconds as the two largest units, truncated: `42s`, `3m12s`, `5h7m`, `2d3h`.
pub fn humanize(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".to_owned();
    }
    let s = seconds as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

fn list(value: &Value) -> impl Iterator<Item = &Value> {
    value.as_array().into_iter().flatten()
}

/// A cell: strings as they are, numbers and booleans as JSON writes them, nothing as `-`.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => "-".to_owned(),
    }
}

fn count(value: &Value) -> String {
    value
        .as_u64()
        .map_or_else(|| "?".to_owned(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{humanize, render};

    #[test]
    fn durations_read_as_their_two_largest_units() {
        assert_eq!(humanize(0.0), "0s");
        assert_eq!(humanize(0.4), "0s");
        assert_eq!(humanize(59.9), "59s");
        assert_eq!(humanize(60.0), "1m0s");
        assert_eq!(humanize(192.3), "3m12s");
        assert_eq!(humanize(3600.0), "1h0m");
        assert_eq!(humanize(5.0 * 3600.0 + 7.0 * 60.0 + 59.0), "5h7m");
        assert_eq!(humanize(2.0 * 86400.0 + 3.0 * 3600.0 + 1.0), "2d3h");
        assert_eq!(humanize(-1.0), "-");
        assert_eq!(humanize(f64::NAN), "-");
    }

    fn sample() -> serde_json::Value {
        json!({
            "version": "0.1.0",
            "config": {
                "path": "/etc/trellis/trellis.toml",
                "sha256": "3f2a9c1b7d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8",
                "loaded_at": "2025-05-01T12:00:00.250Z",
                "changed_at": "2025-05-01T12:03:10.004Z",
                "reloads": {"ok": 2, "error": 1}
            },
            "services": [
                {"name": "shop", "hosts": ["shop.internal", "*.shop.internal"], "listeners": [
                    {"name": "web", "protocol": "http", "address": "0.0.0.0:8080",
                     "rules": [{"name": "gone", "priority": 20, "action": {}}], "default_action": {}},
                    {"name": "tls", "protocol": "https", "address": "0.0.0.0:8443", "rules": [],
                     "default_action": {}}
                ]},
                {"name": "idle", "hosts": ["*"], "listeners": []}
            ],
            "target_groups": [
                {"name": "web", "failing_open": false, "in_use": true, "targets": [
                    {"address": "10.0.0.1:9001", "weight": 1, "state": "healthy", "reason": "status 200",
                     "in_state_seconds": 192.4, "ejected": false, "ejected_for_seconds": null, "source": "file"},
                    {"address": "10.0.0.2:9001", "weight": 3, "state": "healthy", "reason": "status 200",
                     "in_state_seconds": 8.0, "ejected": true, "ejected_for_seconds": 25.2, "source": "api"},
                    {"address": "10.0.0.3:9001", "weight": 1, "state": "draining", "reason": "deregistered",
                     "in_state_seconds": 2.0, "ejected": false, "source": "api",
                     "drain_deadline_seconds": 28.0}
                ]},
                {"name": "api", "failing_open": true, "in_use": true, "targets": [
                    {"address": "10.0.1.1:80", "weight": 1, "state": "unhealthy",
                     "reason": "connect refused", "in_state_seconds": 3725.0, "ejected": false,
                     "source": "file"}
                ]},
                {"name": "spare", "failing_open": false, "in_use": false, "targets": []}
            ]
        })
    }

    #[test]
    fn status_renders_as_header_and_two_tables() {
        assert_eq!(
            render(&sample()),
            "\
trellis 0.1.0  config /etc/trellis/trellis.toml  sha256 3f2a9c1b7d4e  loaded 2025-05-01T12:00:00Z  targets changed 2025-05-01T12:03:10Z  reloads 2 ok, 1 failed

SERVICE  HOSTS                          LISTENER  PROTOCOL  ADDRESS       RULES
shop     shop.internal,*.shop.internal  web       http      0.0.0.0:8080  1
shop     shop.internal,*.shop.internal  tls       https     0.0.0.0:8443  0
idle     *                              -         -         -             -

TARGET GROUP        TARGET         SOURCE  WEIGHT  STATE                        FOR    REASON
web                 10.0.0.1:9001  file    1       healthy                      3m12s  status 200
web                 10.0.0.2:9001  api     3       healthy (EJECTED, 25s left)  8s     status 200
web                 10.0.0.3:9001  api     1       draining (28s left)          2s     deregistered
api (FAILING OPEN)  10.0.1.1:80    file    1       unhealthy                    1h2m   connect refused
spare               (none)         -       -       -                            -      -
api is failing open: none of its targets is routable, so all of them get traffic
"
        );
    }

    #[test]
    fn a_group_that_does_not_verify_certificates_is_marked() {
        let mut status = sample();
        status["target_groups"][2]["tls"] = json!({"ca": null, "sni": null, "verify": false});
        status["target_groups"][0]["tls"] = json!({"ca": "/ca.pem", "sni": null, "verify": true});
        let text = render(&status);
        assert!(text.contains("\nspare (TLS UNVERIFIED)  (none)"), "{text}");
        assert!(!text.contains("web (TLS UNVERIFIED)"), "{text}");
        assert!(
            text.ends_with(
                "spare does not verify its targets' certificates (insecure_skip_verify = true)\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn status_of_an_older_daemon_renders_too() {
        // Before hot reload: `config` was the path alone, targets had no source, and a target not yet
        // registered with the health checker had only its address, weight, state and reason.
        let status = json!({
            "version": "0.1.0",
            "config": "config/example.toml",
            "services": [{"name": "web", "hosts": ["*"], "listeners": [
                {"name": "http", "protocol": "http", "address": "127.0.0.1:8080", "rules": []}
            ]}],
            "target_groups": [{"name": "blue", "targets": [
                {"address": "127.0.0.1:9001", "weight": 1, "state": "initial",
                 "reason": "not yet registered"},
                {"address": "127.0.0.1:9002", "weight": 0, "state": "unavailable", "reason": "",
                 "in_state_seconds": 61.0, "ejected": false, "ejected_for_seconds": null}
            ]}]
        });
        assert_eq!(
            render(&status),
            "\
trellis 0.1.0  config config/example.toml

SERVICE  HOSTS  LISTENER  PROTOCOL  ADDRESS         RULES
web      *      http      http      127.0.0.1:8080  0

TARGET GROUP  TARGET          SOURCE  WEIGHT  STATE        FOR   REASON
blue          127.0.0.1:9001  -       1       initial      -     not yet registered
blue          127.0.0.1:9002  -       0       unavailable  1m1s  -
"
        );
    }

    #[test]
    fn a_group_shows_its_warm_pool_and_its_latest_refresh() {
        let group = json!({"name": "web", "target_group": "pool", "min": 1, "desired": 2, "max": 4,
            "in_service": 2, "pending": 0, "terminating": 0,
            "warm_pool": {"size": 2, "warmed": 2, "ready": 1, "reuse_on_scale_in": false},
            "instance_refresh": {"id": 3, "status": "rolled_back", "percentage_complete": 100,
                                 "reason": "3 new instances failed in a row"},
            "instances": [], "activities": []});
        let out = super::scaling_group(&group);
        assert!(
            out.contains("warm pool: 1 of 2 ready (2 warmed)\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "instance refresh 3: rolled_back, 100% (3 new instances failed in a row)\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn scaling_groups_follow_the_targets_with_instances_and_recent_activities() {
        let mut status = json!({
            "version": "0.1.0",
            "services": [],
            "target_groups": [{"name": "pool", "targets": [
                {"address": "127.0.0.1:20001", "weight": 1, "state": "healthy", "reason": "status 200",
                 "in_state_seconds": 70.0, "source": "scaler"}
            ]}],
        });
        status["scaling_groups"] = json!([
            {"name": "web", "target_group": "pool", "min": 1, "desired": 4, "max": 8,
             "in_service": 2, "pending": 1, "terminating": 1,
             "scale_in_window": "5m", "scale_in_held_seconds": 95.2,
             "policies": [{"name": "rps", "type": "target_tracking", "metric": "request_count_per_target",
                           "value": 31.25, "target": 50.0}],
             "launch_backoff": {"failures": 0, "next_launch_in_seconds": null},
             "instances": [
                {"id": "web-1", "address": "127.0.0.1:20001", "lifecycle": "in_service", "pid": 1234,
                 "age_seconds": 3725.5, "warming": false, "protected": true},
                {"id": "web-2", "address": "127.0.0.1:20002", "lifecycle": "in_service", "pid": 1240,
                 "age_seconds": 12.5, "warming": true, "protected": false},
                {"id": "web-3", "address": "127.0.0.1:20003", "lifecycle": "pending", "pid": 1251,
                 "age_seconds": 0.4, "warming": true, "protected": false},
                {"id": "web-4", "address": "127.0.0.1:20004", "lifecycle": "terminating",
                 "pid": null, "age_seconds": 95.0, "warming": false, "protected": false}
             ],
             // Newest first, as the daemon sends them, but for one out of place: six, five shown.
             "activities": [
                {"at": "2026-11-23T19:41:00Z", "kind": "launch", "description": "instance web-3 on 127.0.0.1:20003 (pid 1251)"},
                {"at": "2026-11-23T19:41:00Z", "kind": "scale", "description": "desired 3 → 4: set by an operator"},
                {"at": "2026-11-23T19:39:00Z", "kind": "launch", "description": "instance web-2 on 127.0.0.1:20002 (pid 1240)"},
                {"at": "2026-11-23T19:40:30Z", "kind": "terminate", "description": "instance web-4: scale-in"},
                {"at": "2026-11-23T19:38:59Z", "kind": "scale", "description": "desired 1 → 2: request_count_per_target 130/s > target 50/s (policy rps)"},
                {"at": "2026-11-23T18:00:00Z", "kind": "launch", "description": "instance web-1 on 127.0.0.1:20001 (pid 1234)"}
             ]},
            // Not yet published by its controller.
            null,
            {"name": "batch", "target_group": "jobs", "min": 2, "desired": 2, "max": 2,
             "in_service": 0, "pending": 0, "terminating": 0,
             "launch_backoff": {"failures": 3, "next_launch_in_seconds": 7.9},
             "instances": [],
             "activities": [
                {"at": "2026-11-23T19:40:52Z", "kind": "launch_failed", "description": "instance batch-3 exited before it was healthy: exit status 127; next launch in 8s"}
             ]}
        ]);
        assert_eq!(
            render(&status),
            "\
trellis 0.1.0

no services

TARGET GROUP  TARGET           SOURCE  WEIGHT  STATE    FOR    REASON
pool          127.0.0.1:20001  scaler  1       healthy  1m10s  status 200

SCALING GROUP web → target group pool: min 1, desired 4, max 8 (2 in service, 1 pending, 1 terminating)
policies: rps request_count_per_target 31.2 (target 50)
scale-in wanted, held 1m35s more (cooldown, scale_in_window 5m)
INSTANCE  ADDRESS          LIFECYCLE               AGE    PID
web-1     127.0.0.1:20001  in_service (protected)  1h2m   1234
web-2     127.0.0.1:20002  in_service (warming)    12s    1240
web-3     127.0.0.1:20003  pending                 0s     1251
web-4     127.0.0.1:20004  terminating             1m35s  -
  2026-11-23T19:41:00Z  launch     instance web-3 on 127.0.0.1:20003 (pid 1251)
  2026-11-23T19:41:00Z  scale      desired 3 → 4: set by an operator
  2026-11-23T19:40:30Z  terminate  instance web-4: scale-in
  2026-11-23T19:39:00Z  launch     instance web-2 on 127.0.0.1:20002 (pid 1240)
  2026-11-23T19:38:59Z  scale      desired 1 → 2: request_count_per_target 130/s > target 50/s (policy rps)

SCALING GROUP batch → target group jobs: min 2, desired 2, max 2 (0 in service, 0 pending, 0 terminating)
launches failing: 3 in a row, next try in 7s
no instances
  2026-11-23T19:40:52Z  launch_failed  instance batch-3 exited before it was healthy: exit status 127; next launch in 8s
"
        );
    }

    #[test]
    fn a_fleet_node_says_where_it_stands() {
        let mut status = sample();
        status["fleet"] = json!({
            "node": "edge-1", "prefix": "/trellis/prod", "revision": 42, "store": "unavailable",
            "stale": true, "refused_revision": 43, "error": "x", "owners": {}
        });
        let text = render(&status);
        let second = text.lines().nth(1).unwrap();
        assert_eq!(
            second,
            "fleet /trellis/prod  node edge-1  revision 42  store unavailable  STALE: serving the disk copy  refused revision 43"
        );
    }

    #[test]
    fn an_empty_daemon_says_so() {
        let status = json!({"version": "0.1.0", "services": [], "target_groups": [],
                            "scaling_groups": []});
        assert_eq!(
            render(&status),
            "trellis 0.1.0\n\nno services\n\nno target groups\n"
        );
    }
}
