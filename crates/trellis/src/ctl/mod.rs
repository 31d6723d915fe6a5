//! The commands that talk to a running trellis through its admin API: `status`, `reload`,
//! `targets register|deregister`, `scale`, `instances protect|unprotect`.

mod client;
mod locate;
mod refresh;
mod report;
mod table;

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use client::{Client, Reply};
pub use locate::AdminArgs;
pub use refresh::{refresh, RefreshArgs};

/// Reads are quick; a reload builds a whole configuration and binds listeners, so it gets longer.
const QUICK: Duration = Duration::from_secs(10);
const RELOAD: Duration = Duration::from_secs(30);

#[derive(Subcommand, Debug)]
pub enum TargetsCommand {
    /// Add a target to a target group (or change its weight), kept across restarts; it takes traffic
    /// once its health checks pass.
    Register {
        /// The target group.
        group: String,
        /// The target's address, IP:PORT (IPv6 as [ADDR]:PORT).
        address: SocketAddr,
        /// Its share of the group's traffic relative to the other targets (0 takes none) [default: 1 for
        /// a new target; an already registered one keeps its weight].
        #[arg(long, value_parser = clap::value_parser!(u16).range(0..=999))]
        weight: Option<u16>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove a target registered through the API: it takes no new requests and drains the ones in
    /// flight.
    Deregister {
        /// The target group.
        group: String,
        /// The target's address, IP:PORT (IPv6 as [ADDR]:PORT).
        address: SocketAddr,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum InstancesCommand {
    /// Keep an instance of a scaling group from being chosen when the group scales in (it is still
    /// replaced if it fails).
    Protect {
        /// The scaling group.
        group: String,
        /// The instance, as `trellis status` lists it (e.g. web-3).
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Let the scaler choose an instance again when its group scales in.
    Unprotect {
        /// The scaling group.
        group: String,
        /// The instance, as `trellis status` lists it (e.g. web-3).
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `trellis healthcheck`: exit 0 when the daemon's admin API answers `GET /healthz` with 200 within
/// `limit`, else 1 with the reason on stderr. For container `HEALTHCHECK`s and supervisors, which cannot
/// count on curl being in the image.
pub fn healthcheck(admin: &AdminArgs, limit: Duration) -> ExitCode {
    finish(async {
        let client = locate::client(admin)?;
        let reply = client.send(Method::GET, "/healthz", None, limit).await?;
        if reply.status == StatusCode::OK {
            return Ok(ExitCode::SUCCESS);
        }
        // Not 200: the JSON error (a wrong token, say) with its hint.
        success(&client, &reply)?;
        bail!("{} answered {}", client.endpoint.url(), reply.status)
    })
}

/// `trellis status`: the tables, or the JSON as the daemon sent it.
pub fn status(admin: &AdminArgs, as_json: bool) -> ExitCode {
    finish(async {
        let client = locate::client(admin)?;
        let reply = client.send(Method::GET, "/v1/status", None, QUICK).await?;
        let status = success(&client, &reply)?;
        if as_json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            print!("{}", report::render(&status));
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `trellis reload`: the daemon re-reads its configuration file; every error if it refuses it.
pub fn reload(admin: &AdminArgs) -> ExitCode {
    finish(async {
        let client = locate::client(admin)?;
        let reply = client
            .send(Method::POST, "/v1/reload", None, RELOAD)
            .await?;
        if reply.status == StatusCode::UNPROCESSABLE_ENTITY {
            // Like `trellis check`: the headline, then one `file:line: key: message` per line.
            let body = reply.json().unwrap_or(Value::Null);
            let mut out = format!("trellis: reload refused: {}\n", reply.error());
            for error in body["errors"].as_array().into_iter().flatten() {
                out.push_str(error.as_str().unwrap_or(&error.to_string()));
                out.push('\n');
            }
            eprint!("{out}");
            return Ok(ExitCode::FAILURE);
        }
        let done = success(&client, &reply)?;
        let sha = done["sha256"].as_str().unwrap_or("?");
        println!(
            "reloaded: {} (sha256 {})",
            done["summary"].as_str().unwrap_or("ok"),
            sha.get(..12).unwrap_or(sha)
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// `trellis targets register|deregister`.
pub fn targets(command: &TargetsCommand) -> ExitCode {
    finish(async {
        match command {
            TargetsCommand::Register {
                group,
                address,
                weight,
                admin,
            } => {
                let client = locate::client(admin)?;
                let mut body = json!({ "address": address.to_string() });
                if let Some(weight) = weight {
                    body["weight"] = json!(weight);
                }
                let path = format!("/v1/target-groups/{}/targets", segment(group));
                let reply = client.send(Method::POST, &path, Some(&body), QUICK).await?;
                let done = success(&client, &reply)?;
                let verb = if reply.status == StatusCode::CREATED {
                    "registered in"
                } else {
                    "updated in"
                };
                println!(
                    "{} {verb} {} with weight {}: {}",
                    done["address"].as_str().unwrap_or(&address.to_string()),
                    done["target_group"].as_str().unwrap_or(group),
                    done["weight"]
                        .as_u64()
                        .unwrap_or(u64::from(weight.unwrap_or(1))),
                    done["state"].as_str().unwrap_or("?"),
                );
            }
            TargetsCommand::Deregister {
                group,
                address,
                admin,
            } => {
                let client = locate::client(admin)?;
                let path = format!(
                    "/v1/target-groups/{}/targets/{}",
                    segment(group),
                    segment(&address.to_string())
                );
                let reply = client.send(Method::DELETE, &path, None, QUICK).await?;
                let done = success(&client, &reply)?;
                println!(
                    "{} deregistered from {}: {}",
                    done["address"].as_str().unwrap_or(&address.to_string()),
                    done["target_group"].as_str().unwrap_or(group),
                    done["state"].as_str().unwrap_or("?"),
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `trellis scale`: sets a scaling group's desired capacity; the daemon clamps it to the group's
/// bounds and the line printed says so.
pub fn scale(group: &str, desired: u32, admin: &AdminArgs) -> ExitCode {
    finish(async {
        let client = locate::client(admin)?;
        let path = format!("/v1/scaling-groups/{}/desired", segment(group));
        let body = json!({ "desired": desired });
        let reply = client.send(Method::PUT, &path, Some(&body), QUICK).await?;
        let done = success(&client, &reply)?;
        println!("{}", scaled(&done, group, desired));
        Ok(ExitCode::SUCCESS)
    })
}

/// `web: desired 3 (min 1, max 8)`, with ` (asked for 10, clamped)` when the daemon set another
/// number than the one asked for.
fn scaled(done: &Value, group: &str, asked: u32) -> String {
    let desired = done["desired"].as_u64();
    let mut line = format!(
        "{}: desired {} (min {}, max {})",
        done["scaling_group"].as_str().unwrap_or(group),
        desired.map_or_else(|| "?".to_owned(), |n| n.to_string()),
        bound(&done["min"]),
        bound(&done["max"]),
    );
    if desired.is_some_and(|n| n != u64::from(asked)) {
        line.push_str(&format!(" (asked for {asked}, clamped)"));
    }
    line
}

fn bound(value: &Value) -> String {
    value
        .as_u64()
        .map_or_else(|| "?".to_owned(), |n| n.to_string())
}

/// `trellis instances protect|unprotect`.
pub fn instances(command: &InstancesCommand) -> ExitCode {
    let (group, id, admin, protect) = match command {
        InstancesCommand::Protect { group, id, admin } => (group, id, admin, true),
        InstancesCommand::Unprotect { group, id, admin } => (group, id, admin, false),
    };
    finish(async move {
        let client = locate::client(admin)?;
        let path = format!(
            "/v1/scaling-groups/{}/instances/{}/protection",
            segment(group),
            segment(id)
        );
        let body = json!({ "protected": protect });
        let reply = client.send(Method::PUT, &path, Some(&body), QUICK).await?;
        let done = success(&client, &reply)?;
        println!("{}", protection(&done, group, id, protect));
        Ok(ExitCode::SUCCESS)
    })
}

/// What the daemon says the instance's protection now is (what was asked if it does not say).
fn protection(done: &Value, group: &str, id: &str, asked: bool) -> String {
    let protected = done["protected"].as_bool().unwrap_or(asked);
    format!(
        "instance {} of {} {}",
        done["instance"].as_str().unwrap_or(id),
        done["scaling_group"].as_str().unwrap_or(group),
        if protected {
            "is protected from scale-in"
        } else {
            "is no longer protected"
        }
    )
}

/// Runs a command on a single-threaded runtime (one request needs no more); an error is one line on
/// stderr and exit status 1, as for the other commands.
fn finish(command: impl Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
        .and_then(|rt| rt.block_on(command));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("trellis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The JSON of a 2xx reply, or the server's error (with a hint when it wants a token we did not send).
fn success(client: &Client, reply: &Reply) -> anyhow::Result<Value> {
    if !reply.status.is_success() {
        let mut message = reply.error();
        if reply.json().is_none() {
            let url = client.endpoint.url();
            message.push_str(&format!(" (is {url} the admin API of trellis?)"));
        } else if reply.status == StatusCode::UNAUTHORIZED && client.token.is_none() {
            message.push_str(
                " (no token was sent: pass --token-file FILE, or -c the configuration whose \
                 admin.token_file holds it)",
            );
        }
        bail!("{message}");
    }
    reply.json().with_context(|| {
        format!(
            "the admin API at {} answered {} with something other than JSON",
            client.endpoint.url(),
            reply.status
        )
    })
}

/// A path segment with everything but unreserved characters percent-encoded: `[::1]:80` has brackets,
/// which a path may not carry as they are, and a group name could hold anything.
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{protection, scaled, segment};

    #[test]
    fn scale_prints_what_the_daemon_set_and_whether_it_clamped() {
        let reply =
            |desired: u32| json!({"scaling_group": "web", "desired": desired, "min": 1, "max": 8});
        assert_eq!(scaled(&reply(3), "web", 3), "web: desired 3 (min 1, max 8)");
        assert_eq!(
            scaled(&reply(8), "web", 20),
            "web: desired 8 (min 1, max 8) (asked for 20, clamped)"
        );
        assert_eq!(
            scaled(&reply(1), "web", 0),
            "web: desired 1 (min 1, max 8) (asked for 0, clamped)"
        );
        assert_eq!(
            scaled(&json!({}), "web", 2),
            "web: desired ? (min ?, max ?)"
        );
    }

    #[test]
    fn protection_says_what_it_now_is() {
        let reply = |protected: bool| json!({"scaling_group": "web", "instance": "web-3", "protected": protected});
        assert_eq!(
            protection(&reply(true), "web", "web-3", true),
            "instance web-3 of web is protected from scale-in"
        );
        assert_eq!(
            protection(&reply(false), "web", "web-3", false),
            "instance web-3 of web is no longer protected"
        );
        assert_eq!(
            protection(&json!({}), "web", "web-3", true),
            "instance web-3 of web is protected from scale-in"
        );
    }

    #[test]
    fn path_segments_keep_only_unreserved_characters() {
        assert_eq!(segment("127.0.0.1:9001"), "127.0.0.1%3A9001");
        assert_eq!(segment("[::1]:80"), "%5B%3A%3A1%5D%3A80");
        assert_eq!(segment("web-blue_2"), "web-blue_2");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
