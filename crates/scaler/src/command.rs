//! The `command` launch provider, for VMs and anything else with a lifetime of its own: trellis runs the
//! user's hooks and keeps a record of what they launched.
//!
//! - `launch` prints one JSON object, `{"id": "...", "address": "host:port"}`.
//! - `terminate` stops one instance: its id is the `{id}` placeholder, or the last argument when the
//!   hook has no placeholder.
//! - `list` (optional) prints the instances that exist: a JSON array of the same objects, or one object
//!   per line. A restarted daemon uses it to re-adopt what is still running instead of launching again.
//!
//! Every hook gets `hook_timeout`; a failure carries the hook's stderr, for the activity log.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use trellis_config::CommandLaunch;

/// An instance a hook reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookInstance {
    pub id: String,
    pub address: SocketAddr,
}

pub struct CommandProvider {
    hooks: CommandLaunch,
    group: String,
}

impl CommandProvider {
    pub fn new(hooks: CommandLaunch, group: &str) -> Self {
        CommandProvider {
            hooks,
            group: group.to_string(),
        }
    }

    /// Runs `launch` for the instance trellis calls `name`.
    pub async fn launch(&self, name: &str) -> Result<HookInstance, String> {
        let out = self.run("launch", &self.hooks.launch, name).await?;
        parse_one(out.trim()).map_err(|e| format!("launch hook printed {:?}: {e}", out.trim()))
    }

    pub async fn terminate(&self, id: &str) -> Result<(), String> {
        self.run("terminate", &self.hooks.terminate, id)
            .await
            .map(|_| ())
    }

    /// What `list` says exists; `None` without a list hook.
    pub async fn list(&self) -> Option<Result<Vec<HookInstance>, String>> {
        let hook = self.hooks.list.as_ref()?;
        Some(
            self.run("list", hook, "")
                .await
                .and_then(|out| parse_many(&out)),
        )
    }

    async fn run(&self, what: &str, argv: &[String], id: &str) -> Result<String, String> {
        let mut args: Vec<String> = argv
            .iter()
            .map(|a| a.replace("{id}", id).replace("{group}", &self.group))
            .collect();
        if what == "terminate" && !argv.iter().any(|a| a.contains("{id}")) {
            args.push(id.to_string());
        }
        let mut cmd = Command::new(&args[0]);
        cmd.args(&args[1..])
            .env("TRELLIS_SCALING_GROUP", &self.group)
            .env("TRELLIS_INSTANCE_ID", id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        crate::process::without_service_manager(&mut cmd);
        let timeout = self.hooks.hook_timeout;
        let output = match tokio::time::timeout(timeout, cmd.output()).await {
            Err(_) => return Err(format!("{what} hook timed out after {}", secs(timeout))),
            Ok(Err(e)) => return Err(format!("cannot run the {what} hook `{}`: {e}", args[0])),
            Ok(Ok(output)) => output,
        };
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(format!(
                "{what} hook failed ({}): {}",
                output.status,
                stderr.trim()
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// `{"id": "...", "address": "host:port"}`.
fn parse_one(text: &str) -> Result<HookInstance, String> {
    let raw: RawInstance = serde_json::from_str(text).map_err(|e| e.to_string())?;
    raw.check()
}

/// A JSON array of instances, or one object per line.
fn parse_many(text: &str) -> Result<Vec<HookInstance>, String> {
    let text = text.trim();
    if text.starts_with('[') {
        let raw: Vec<RawInstance> =
            serde_json::from_str(text).map_err(|e| format!("list hook: {e}"))?;
        return raw.into_iter().map(RawInstance::check).collect();
    }
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| parse_one(l).map_err(|e| format!("list hook: {e} in {l:?}")))
        .collect()
}

#[derive(serde::Deserialize)]
struct RawInstance {
    id: String,
    address: String,
}

impl RawInstance {
    fn check(self) -> Result<HookInstance, String> {
        if self.id.is_empty() {
            return Err("\"id\" is empty".into());
        }
        let address = self
            .address
            .parse()
            .map_err(|_| format!("\"address\" {:?} is not ip:port", self.address))?;
        Ok(HookInstance {
            id: self.id,
            address,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_output_is_read_strictly() {
        let one = parse_one(r#"{"id": "vm-1", "address": "127.0.0.1:9000"}"#).unwrap();
        assert_eq!(one.id, "vm-1");
        assert_eq!(one.address.port(), 9000);
        assert!(parse_one("vm-1 127.0.0.1:9000").is_err());
        assert!(parse_one(r#"{"id": "vm-1", "address": "somewhere"}"#).is_err());
        assert!(parse_one(r#"{"address": "127.0.0.1:1"}"#).is_err());
        let many = parse_many(
            "[{\"id\": \"a\", \"address\": \"127.0.0.1:1\"}, {\"id\": \"b\", \"address\": \"127.0.0.1:2\"}]",
        )
        .unwrap();
        assert_eq!(many.len(), 2);
        let lines = parse_many("{\"id\": \"a\", \"address\": \"127.0.0.1:1\"}\n\n{\"id\": \"b\", \"address\": \"127.0.0.1:2\"}\n").unwrap();
        assert_eq!(lines, many);
        assert_eq!(parse_many("[]").unwrap(), []);
    }
}
