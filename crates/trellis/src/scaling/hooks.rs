//! Lifecycle hooks (`[[scaling_group.lifecycle_hook]]`): commands run while an instance is between
//! launched and registered (`launching`: warm a cache, register it elsewhere) or between drained and
//! stopped (`terminating`: flush, upload logs). Exit 0 continues; anything else abandons; no exit within
//! `timeout` counts as the hook's `default_result`. The hooks of one transition run in order; the
//! first that abandons ends the run.

use std::process::Stdio;

use trellis_config::{HookResult, HookTransition, LifecycleHook};

/// How a transition's hooks went.
pub struct HookRun {
    pub result: HookResult,
    /// For the activity log: which hook decided, and how.
    pub detail: String,
}

/// The hooks of `transition` for one instance, to run off the controller's loop.
pub fn for_transition(hooks: &[LifecycleHook], transition: HookTransition) -> Vec<LifecycleHook> {
    hooks
        .iter()
        .filter(|h| h.transition == transition)
        .cloned()
        .collect()
}

/// Runs `hooks` in order for instance `id` at `address` of `group`.
pub async fn run(hooks: Vec<LifecycleHook>, id: String, address: String, group: String) -> HookRun {
    let mut detail = Vec::new();
    for hook in &hooks {
        let transition = match hook.transition {
            HookTransition::Launching => "launching",
            HookTransition::Terminating => "terminating",
        };
        let args: Vec<String> = hook
            .command
            .iter()
            .map(|a| {
                a.replace("{id}", &id)
                    .replace("{address}", &address)
                    .replace("{group}", &group)
                    .replace("{transition}", transition)
            })
            .collect();
        let Some((program, rest)) = args.split_first() else {
            continue;
        };
        let child = tokio::process::Command::new(program)
            .args(rest)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let outcome = match child {
            Err(e) => Err(format!("cannot run: {e}")),
            Ok(mut child) => match tokio::time::timeout(hook.timeout, child.wait()).await {
                Ok(Ok(status)) if status.success() => Ok(()),
                Ok(Ok(status)) => Err(format!("exited with {status}")),
                Ok(Err(e)) => Err(format!("wait failed: {e}")),
                Err(_) => {
                    let _ = child.kill().await;
                    match hook.default_result {
                        HookResult::Continue => {
                            detail.push(format!(
                                "{}: timed out, continue (default_result)",
                                hook.name
                            ));
                            continue;
                        }
                        HookResult::Abandon => {
                            Err("timed out, abandon (default_result)".to_string())
                        }
                    }
                }
            },
        };
        match outcome {
            Ok(()) => detail.push(format!("{}: continue", hook.name)),
            Err(why) => {
                detail.push(format!("{}: {why}", hook.name));
                return HookRun {
                    result: HookResult::Abandon,
                    detail: detail.join("; "),
                };
            }
        }
    }
    HookRun {
        result: HookResult::Continue,
        detail: detail.join("; "),
    }
}
