//! `trellis refresh GROUP [--cancel] [--wait]`: starts (or cancels) an instance refresh of a scaling
//! group, and with `--wait` follows it to its end, one line per change, exiting 0 only if it ended
//! `successful`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{json, Value};

use super::{finish, locate, segment, success, AdminArgs, QUICK};

/// How often `--wait` asks; a refresh takes seconds to hours, a quarter second is plenty.
const POLL: Duration = Duration::from_millis(250);

pub struct RefreshArgs<'a> {
    pub group: &'a str,
    pub cancel: bool,
    pub wait: bool,
    pub min_healthy_percent: Option<u32>,
    pub max_healthy_percent: Option<u32>,
    pub timeout: Option<Duration>,
    pub admin: &'a AdminArgs,
}

pub fn refresh(args: RefreshArgs) -> ExitCode {
    finish(async move {
        let client = locate::client(args.admin)?;
        let path = format!("/v1/scaling-groups/{}/refresh", segment(args.group));
        let reply = if args.cancel {
            client.send(Method::DELETE, &path, None, QUICK).await?
        } else {
            let mut body = json!({});
            if let Some(p) = args.min_healthy_percent {
                body["min_healthy_percent"] = p.into();
            }
            if let Some(p) = args.max_healthy_percent {
                body["max_healthy_percent"] = p.into();
            }
            client.send(Method::POST, &path, Some(&body), QUICK).await?
        };
        let mut view = success(&client, &reply)?;
        println!("{}", line(args.group, &view));
        if !args.wait || args.cancel {
            return Ok(ExitCode::SUCCESS);
        }
        let deadline = args.timeout.map(|t| Instant::now() + t);
        let id = view["id"].as_u64();
        let mut last = line(args.group, &view);
        while !done(&view) {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                anyhow::bail!("refresh still {} after --timeout", status(&view));
            }
            tokio::time::sleep(POLL).await;
            let reply = client.send(Method::GET, &path, None, QUICK).await?;
            let latest = success(&client, &reply)?;
            match latest["id"].as_u64() {
                // The status lags the start by at most a tick: still ours, as it was.
                seen if seen < id => continue,
                seen if seen > id => anyhow::bail!(
                    "refresh {} was superseded by refresh {} (a reload changed launch)",
                    id.unwrap_or(0),
                    seen.unwrap_or(0)
                ),
                _ => view = latest,
            }
            let now = line(args.group, &view);
            if now != last {
                println!("{now}");
                last = now;
            }
        }
        Ok(if status(&view) == "successful" {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

fn status(view: &Value) -> &str {
    view["status"].as_str().unwrap_or("?")
}

fn done(view: &Value) -> bool {
    !matches!(status(view), "pending" | "in_progress")
}

/// `web: refresh 2 in_progress, 50% (rolling back: …)`.
fn line(group: &str, view: &Value) -> String {
    let mut text = format!(
        "{group}: refresh {} {}, {}%",
        view["id"],
        status(view),
        view["percentage_complete"].as_u64().unwrap_or(0)
    );
    if let Some(reason) = view["reason"].as_str().filter(|r| !r.is_empty()) {
        text.push_str(&format!(" ({reason})"));
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{done, line};

    #[test]
    fn one_line_per_state_and_only_the_ends_are_done() {
        let v = json!({"id": 2, "status": "in_progress", "percentage_complete": 50, "reason": ""});
        assert_eq!(line("web", &v), "web: refresh 2 in_progress, 50%");
        assert!(!done(&v));
        let v = json!({"id": 2, "status": "rolled_back", "percentage_complete": 100, "reason": "3 failed"});
        assert_eq!(
            line("web", &v),
            "web: refresh 2 rolled_back, 100% (3 failed)"
        );
        assert!(done(&v));
    }
}
