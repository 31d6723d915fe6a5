//! `[[scaling_group]]` and its `launch` table.

use std::collections::HashMap;

use super::fields::{self, Unique};
use super::{policy, secs, Ctx};
use crate::diag::Diags;
use crate::model::*;
use crate::raw::{RawLaunch, RawScalingGroup};

pub(crate) fn scaling_groups(
    d: &mut Diags,
    ctx: &Ctx,
    raws: &[Option<RawScalingGroup>],
) -> Vec<ScalingGroup> {
    let mut names = Unique::new();
    let mut scaled: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for (i, raw) in raws.iter().enumerate() {
        let Some(raw) = raw else { continue };
        let path = format!("scaling_group[{i}]");
        let sg = scaling_group(d, ctx, &path, raw);
        names.check(
            d,
            &format!("{path}.name"),
            sg.name.clone(),
            &path,
            |first| format!("{:?} is already used by {first}", sg.name),
        );
        if raw.target_group.is_some() {
            match scaled.get(&sg.target_group) {
                Some(owner) => d.err(
                    &format!("{path}.target_group"),
                    format!(
                        "target group {:?} is already scaled by scaling group {owner:?}",
                        sg.target_group
                    ),
                ),
                None => {
                    scaled.insert(sg.target_group.clone(), sg.name.clone());
                }
            }
        }
        out.push(sg);
    }
    out
}

fn scaling_group(d: &mut Diags, ctx: &Ctx, path: &str, raw: &RawScalingGroup) -> ScalingGroup {
    let p = |key: &str| format!("{path}.{key}");
    let name = fields::name(d, &p("name"), &raw.name);
    let target_group = fields::required(d, &p("target_group"), &raw.target_group).to_string();
    if raw.target_group.is_some() && !ctx.target_groups.contains_key(&target_group) {
        d.err(
            &p("target_group"),
            format!("unknown target group {target_group:?}"),
        );
    }
    let before = d.len();
    let min = fields::required_int_in(d, &p("min"), raw.min, 0, 1000);
    let mut max = fields::required_int_in(d, &p("max"), raw.max, 0, 1000);
    if min > max {
        d.err(&p("max"), format!("max {max} is less than min {min}"));
        max = min;
    }
    // Checking desired against bounds that were themselves wrong would only add noise.
    let bounds_ok = d.len() == before;
    let desired = match raw.desired {
        None => min,
        Some(v) if (min..=max).contains(&v) || !bounds_ok => v.clamp(min, max),
        Some(v) => {
            d.err(
                &p("desired"),
                format!("desired {v} is outside min..=max ({min}..={max})"),
            );
            min
        }
    };
    let termination_policy = fields::choice(
        d,
        &p("termination_policy"),
        &raw.termination_policy,
        TerminationPolicy::Oldest,
        &[
            ("oldest", TerminationPolicy::Oldest),
            ("newest", TerminationPolicy::Newest),
        ],
    );
    let launch = match &raw.launch {
        Some(l) => {
            // A warm pool's instances hold ports too.
            let warm = raw
                .warm_pool
                .as_ref()
                .and_then(|w| w.size)
                .filter(|n| (1..=100).contains(n))
                .unwrap_or(0);
            launch(d, ctx, &p("launch"), l, (max, warm))
        }
        None => {
            fields::missing(d, &p("launch"));
            Launch::Command(CommandLaunch {
                launch: Vec::new(),
                terminate: Vec::new(),
                list: None,
                hook_timeout: secs(60),
            })
        }
    };
    let policies = policy::policies(d, path, &raw.policy, &launch);
    let lifecycle_hooks = lifecycle_hooks(d, path, &raw.lifecycle_hook);
    ScalingGroup {
        name,
        target_group,
        min: fields::to_u32(min),
        max: fields::to_u32(max),
        desired: fields::to_u32(desired),
        health_check_grace_period: fields::duration(
            d,
            &p("health_check_grace_period"),
            &raw.health_check_grace_period,
            secs(0),
        ),
        cooldown: fields::duration(d, &p("cooldown"), &raw.cooldown, secs(300)),
        scale_to_zero: raw.scale_to_zero.as_ref().map(|z| {
            let zp = |key: &str| format!("{}.{key}", p("scale_to_zero"));
            if raw.min.is_some_and(|m| m != 0) {
                d.err(
                    &p("scale_to_zero"),
                    "needs min = 0 (a group with a minimum never goes to zero)",
                );
            }
            crate::model::ScaleToZero {
                idle: fields::duration_in(
                    d,
                    &zp("idle"),
                    &z.idle,
                    secs(600),
                    secs(1),
                    secs(86_400),
                ),
                wake_timeout: fields::duration_in(
                    d,
                    &zp("wake_timeout"),
                    &z.wake_timeout,
                    secs(30),
                    secs(1),
                    secs(600),
                ),
            }
        }),
        instance_refresh: instance_refresh(d, &p("instance_refresh"), &raw.instance_refresh),
        warm_pool: raw.warm_pool.as_ref().map(|w| crate::model::WarmPool {
            size: fields::to_u32(fields::required_int_in(
                d,
                &format!("{}.size", p("warm_pool")),
                w.size,
                1,
                100,
            )),
            reuse_on_scale_in: w.reuse_on_scale_in.unwrap_or(false),
        }),
        max_instance_lifetime: raw.max_instance_lifetime.as_ref().map(|_| {
            fields::duration_in(
                d,
                &p("max_instance_lifetime"),
                &raw.max_instance_lifetime,
                secs(86_400),
                secs(1),
                secs(365 * 86_400),
            )
        }),
        scale_in_window: fields::duration_in(
            d,
            &p("scale_in_window"),
            &raw.scale_in_window,
            secs(300),
            secs(0),
            secs(3600),
        ),
        instance_warmup: fields::duration(d, &p("instance_warmup"), &raw.instance_warmup, secs(0)),
        evaluation_period: fields::duration_in(
            d,
            &p("evaluation_period"),
            &raw.evaluation_period,
            secs(10),
            std::time::Duration::from_millis(100),
            secs(300),
        ),
        termination_policy,
        launch,
        policies,
        lifecycle_hooks,
    }
}

const PROCESS_KEYS: &[&str] = &[
    "command",
    "ports",
    "env",
    "workdir",
    "log_dir",
    "stop_signal",
    "stop_timeout",
];
const COMMAND_KEYS: &[&str] = &["launch", "terminate", "list", "hook_timeout"];

fn launch(d: &mut Diags, ctx: &Ctx, path: &str, raw: &RawLaunch, max: (i64, i64)) -> Launch {
    let p = |key: &str| format!("{path}.{key}");
    let present = |key: &str| match key {
        "command" => raw.command.is_some(),
        "ports" => raw.ports.is_some(),
        "env" => raw.env.is_some(),
        "workdir" => raw.workdir.is_some(),
        "log_dir" => raw.log_dir.is_some(),
        "stop_signal" => raw.stop_signal.is_some(),
        "stop_timeout" => raw.stop_timeout.is_some(),
        "launch" => raw.launch.is_some(),
        "terminate" => raw.terminate.is_some(),
        "list" => raw.list.is_some(),
        _ => raw.hook_timeout.is_some(),
    };
    let provider = fields::required(d, &p("provider"), &raw.provider);
    let (foreign, owner) = match provider {
        "process" => (COMMAND_KEYS, "command"),
        "command" => (PROCESS_KEYS, "process"),
        "" if raw.provider.is_none() => (&[][..], ""),
        other => {
            d.err(
                &p("provider"),
                format!("{other:?} is not one of \"process\", \"command\""),
            );
            (&[][..], "")
        }
    };
    for key in foreign.iter().filter(|k| present(k)) {
        d.err(
            &p(key),
            format!("{key} belongs to the {owner} provider, not to {provider:?}"),
        );
    }
    if provider == "process" {
        Launch::Process(process(d, ctx, path, raw, max))
    } else {
        Launch::Command(CommandLaunch {
            launch: argv(d, &p("launch"), &raw.launch, provider == "command"),
            terminate: argv(d, &p("terminate"), &raw.terminate, provider == "command"),
            list: raw
                .list
                .as_ref()
                .map(|_| argv(d, &p("list"), &raw.list, true)),
            hook_timeout: fields::positive_duration(
                d,
                &p("hook_timeout"),
                &raw.hook_timeout,
                secs(60),
            ),
        })
    }
}

/// A command line: non-empty, and its program name non-empty.
fn argv(d: &mut Diags, path: &str, raw: &Option<Vec<String>>, required: bool) -> Vec<String> {
    match raw {
        None if required => fields::missing(d, path),
        Some(v) if v.first().filter(|prog| !prog.trim().is_empty()).is_none() => d.err(
            path,
            "must be a non-empty command, such as [\"/usr/local/bin/app\", \"--flag\"]",
        ),
        _ => {}
    }
    raw.clone().unwrap_or_default()
}

/// `max`: the group's max and its warm pool's size, each instance needing a port of `ports`.
fn process(
    d: &mut Diags,
    ctx: &Ctx,
    path: &str,
    raw: &RawLaunch,
    (max, warm): (i64, i64),
) -> ProcessLaunch {
    let p = |key: &str| format!("{path}.{key}");
    let command = argv(d, &p("command"), &raw.command, true);
    let env = raw.env.clone().unwrap_or_default();
    let ports = raw.ports.as_ref().and_then(|text| match port_range(text) {
        Ok((lo, hi)) => {
            let count = i64::from(hi) - i64::from(lo) + 1;
            if count < max + warm {
                let of = match warm {
                    0 => format!("max is {max}"),
                    _ => format!("max {max} and warm_pool.size {warm} make {}", max + warm),
                };
                d.err(
                    &p("ports"),
                    format!("{text:?} has {count} ports but {of}: each instance needs one"),
                );
            }
            Some((lo, hi))
        }
        Err(msg) => {
            d.err(&p("ports"), msg);
            None
        }
    });
    let uses_port = command
        .iter()
        .chain(env.values())
        .any(|s| s.contains("{port}"));
    if uses_port && raw.ports.is_none() {
        d.err(
            &p("ports"),
            "the command uses {port}, so ports = \"LOW-HIGH\" is required",
        );
    }
    let stop_signal = match &raw.stop_signal {
        None => libc::SIGTERM,
        Some(s) => signal(s).unwrap_or_else(|| {
            d.err(&p("stop_signal"), format!("{s:?} is not one of SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGKILL, SIGUSR1, SIGUSR2"));
            libc::SIGTERM
        }),
    };
    ProcessLaunch {
        command,
        ports,
        env,
        workdir: raw
            .workdir
            .as_deref()
            .map(|w| fields::file_path(d, &p("workdir"), w, ctx.base)),
        log_dir: raw
            .log_dir
            .as_deref()
            .map(|w| fields::file_path(d, &p("log_dir"), w, ctx.base)),
        stop_signal,
        stop_timeout: fields::positive_duration(d, &p("stop_timeout"), &raw.stop_timeout, secs(10)),
    }
}

/// `"20000-20999"` (or one port, `"20000"`), inclusive.
pub(crate) fn port_range(text: &str) -> Result<(u16, u16), String> {
    let bad = || {
        format!(
            "{text:?} is not a port range such as \"20000-20999\" (ports 1..=65535, low <= high)"
        )
    };
    let port = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|&p| p >= 1)
            .ok_or_else(bad)
    };
    let (lo, hi) = match text.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(text)?, port(text)?),
    };
    if lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// `"SIGTERM"` or `"TERM"` (any case) → signal number.
fn signal(name: &str) -> Option<i32> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    Some(match bare {
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "HUP" => libc::SIGHUP,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        _ => return None,
    })
}

/// `[scaling_group.instance_refresh]`, with Auto Scaling's constraints: min 0..=100, max 100..=200, at
/// most 100 apart, and not both 100 (a refresh could then never replace anything).
fn instance_refresh(
    d: &mut Diags,
    path: &str,
    raw: &Option<crate::raw::RawInstanceRefresh>,
) -> crate::model::InstanceRefresh {
    let defaults = crate::model::InstanceRefresh::default();
    let Some(raw) = raw else {
        return defaults;
    };
    let p = |key: &str| format!("{path}.{key}");
    let min = fields::int_in(
        d,
        &p("min_healthy_percent"),
        raw.min_healthy_percent,
        i64::from(defaults.min_healthy_percent),
        0,
        100,
    );
    let max = fields::int_in(
        d,
        &p("max_healthy_percent"),
        raw.max_healthy_percent,
        i64::from(defaults.max_healthy_percent),
        100,
        200,
    );
    if max - min > 100 {
        d.err(
            &p("max_healthy_percent"),
            format!("{max} is more than 100 above min_healthy_percent {min}"),
        );
    } else if min == 100 && max == 100 {
        d.err(
            &p("max_healthy_percent"),
            "with min_healthy_percent = 100 it must be above 100: a refresh launches before it stops",
        );
    }
    crate::model::InstanceRefresh {
        min_healthy_percent: fields::to_u32(min),
        max_healthy_percent: fields::to_u32(max),
        auto_rollback: raw.auto_rollback.unwrap_or(defaults.auto_rollback),
        on_launch_change: raw.on_launch_change.unwrap_or(defaults.on_launch_change),
    }
}

fn lifecycle_hooks(
    d: &mut Diags,
    path: &str,
    raws: &[crate::raw::RawLifecycleHook],
) -> Vec<crate::model::LifecycleHook> {
    use crate::model::{HookResult, HookTransition, LifecycleHook};
    let mut names = fields::Unique::new();
    let mut out = Vec::new();
    for (i, raw) in raws.iter().enumerate() {
        let hp = format!("{path}.lifecycle_hook[{i}]");
        let p = |key: &str| format!("{hp}.{key}");
        let name = fields::name(d, &p("name"), &raw.name);
        names.check(d, &p("name"), name.clone(), &hp, |first| {
            format!("{name:?} is already used by {first}")
        });
        let transition = match fields::required(d, &p("transition"), &raw.transition) {
            "launching" => HookTransition::Launching,
            "terminating" => HookTransition::Terminating,
            "" => HookTransition::Launching,
            other => {
                d.err(
                    &p("transition"),
                    format!("{other:?} is not one of \"launching\", \"terminating\""),
                );
                HookTransition::Launching
            }
        };
        let command = raw.command.clone().unwrap_or_default();
        if raw.command.is_none() {
            fields::missing(d, &p("command"));
        } else if command.is_empty() || command[0].is_empty() {
            d.err(&p("command"), "needs at least the program to run");
        }
        for arg in &command {
            let mut rest = arg.as_str();
            while let Some(open) = rest.find('{') {
                let Some(close) = rest[open..].find('}') else {
                    break;
                };
                let placeholder = &rest[open..open + close + 1];
                // Only `{word}` is a placeholder: a shell's `${0%:*}` passes untouched.
                let word = placeholder[1..placeholder.len() - 1]
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_');
                if word && !["{id}", "{address}", "{group}", "{transition}"].contains(&placeholder)
                {
                    d.err(
                        &p("command"),
                        format!("{placeholder} is not one of {{id}}, {{address}}, {{group}}, {{transition}}"),
                    );
                }
                rest = &rest[open + close + 1..];
            }
        }
        let timeout = fields::duration_in(
            d,
            &p("timeout"),
            &raw.timeout,
            secs(300),
            secs(1),
            secs(7200),
        );
        let default_result = match raw.default_result.as_deref() {
            None | Some("abandon") => HookResult::Abandon,
            Some("continue") => HookResult::Continue,
            Some(other) => {
                d.err(
                    &p("default_result"),
                    format!("{other:?} is not one of \"continue\", \"abandon\""),
                );
                HookResult::Abandon
            }
        };
        out.push(LifecycleHook {
            name,
            transition,
            command,
            timeout,
            default_result,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_signals() {
        assert_eq!(port_range("20000-20999"), Ok((20000, 20999)));
        assert_eq!(port_range("8080"), Ok((8080, 8080)));
        for bad in ["", "0-10", "10-5", "1-70000", "a-b", "-", "1-2-3"] {
            assert!(port_range(bad).is_err(), "{bad}");
        }
        assert_eq!(signal("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(signal("term"), Some(libc::SIGTERM));
        assert_eq!(signal("SIGKILL"), Some(libc::SIGKILL));
        assert_eq!(signal("SIGFOO"), None);
    }
}
