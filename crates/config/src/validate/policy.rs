//! `[[scaling_group.policy]]`: target tracking, step and scheduled policies.

use super::fields::{self, Unique};
use crate::cron;
use crate::diag::Diags;
use crate::model::*;
use crate::raw::{RawPolicy, RawStep};

const TRACKING_KEYS: &[&str] = &["metric", "target", "disable_scale_in"];
const STEP_KEYS: &[&str] = &["metric", "adjustment_type", "steps"];
const SCHEDULED_KEYS: &[&str] = &["cron", "timezone", "min", "max", "desired"];
const ALL_KEYS: &[&str] = &[
    "metric",
    "target",
    "disable_scale_in",
    "adjustment_type",
    "steps",
    "cron",
    "timezone",
    "min",
    "max",
    "desired",
];

pub(crate) fn policies(
    d: &mut Diags,
    group: &str,
    raws: &[RawPolicy],
    launch: &Launch,
) -> Vec<Policy> {
    let mut names = Unique::new();
    let mut out = Vec::new();
    for (i, raw) in raws.iter().enumerate() {
        let path = format!("{group}.policy[{i}]");
        let name = fields::name(d, &format!("{path}.name"), &raw.name);
        names.check(d, &format!("{path}.name"), name.clone(), &path, |first| {
            format!("{name:?} is already used by {first}")
        });
        if let Some(kind) = kind(d, &path, raw, launch) {
            out.push(Policy { name, kind });
        }
    }
    out
}

fn present(raw: &RawPolicy, key: &str) -> bool {
    match key {
        "metric" => raw.metric.is_some(),
        "target" => raw.target.is_some(),
        "disable_scale_in" => raw.disable_scale_in.is_some(),
        "adjustment_type" => raw.adjustment_type.is_some(),
        "steps" => raw.steps.is_some(),
        "cron" => raw.cron.is_some(),
        "timezone" => raw.timezone.is_some(),
        "min" => raw.min.is_some(),
        "max" => raw.max.is_some(),
        _ => raw.desired.is_some(),
    }
}

fn kind(d: &mut Diags, path: &str, raw: &RawPolicy, launch: &Launch) -> Option<PolicyKind> {
    let p = |key: &str| format!("{path}.{key}");
    let kind = fields::required(d, &p("type"), &raw.kind);
    let allowed = match kind {
        "target_tracking" => TRACKING_KEYS,
        "step" => STEP_KEYS,
        "scheduled" => SCHEDULED_KEYS,
        _ => {
            if raw.kind.is_some() {
                d.err(
                    &p("type"),
                    format!("{kind:?} is not one of \"target_tracking\", \"step\", \"scheduled\""),
                );
            }
            return None;
        }
    };
    for key in ALL_KEYS {
        if !allowed.contains(key) && present(raw, key) {
            d.err(&p(key), format!("{key} is not used by {kind} policies"));
        }
    }
    Some(match kind {
        "target_tracking" => {
            let metric = metric(d, &p("metric"), &raw.metric, launch);
            let target = match raw.target {
                None => {
                    fields::missing(d, &p("target"));
                    1.0
                }
                Some(t) if !(t.is_finite() && t > 0.0) => {
                    d.err(&p("target"), format!("{t} must be greater than 0"));
                    1.0
                }
                Some(t) if metric == ScalingMetric::CpuUtilization && t > 100.0 => {
                    d.err(
                        &p("target"),
                        format!("{t} is a CPU percentage and must be at most 100"),
                    );
                    1.0
                }
                Some(t) => t,
            };
            PolicyKind::TargetTracking {
                metric,
                target,
                disable_scale_in: raw.disable_scale_in.unwrap_or(false),
            }
        }
        "step" => {
            let metric = metric(d, &p("metric"), &raw.metric, launch);
            if raw.adjustment_type.is_none() {
                fields::missing(d, &p("adjustment_type"));
            }
            let adjustment_type = fields::choice(
                d,
                &p("adjustment_type"),
                &raw.adjustment_type,
                AdjustmentType::Change,
                &[
                    ("change", AdjustmentType::Change),
                    ("exact", AdjustmentType::Exact),
                    ("percent", AdjustmentType::Percent),
                ],
            );
            let steps = steps(d, &p("steps"), raw.steps.as_deref(), adjustment_type);
            PolicyKind::Step {
                metric,
                adjustment_type,
                steps,
            }
        }
        _ => scheduled(d, path, raw),
    })
}

fn metric(d: &mut Diags, path: &str, raw: &Option<String>, launch: &Launch) -> ScalingMetric {
    if raw.is_none() {
        fields::missing(d, path);
    }
    let m = fields::choice(
        d,
        path,
        raw,
        ScalingMetric::RequestCountPerTarget,
        &[
            (
                "request_count_per_target",
                ScalingMetric::RequestCountPerTarget,
            ),
            ("in_flight_per_target", ScalingMetric::InFlightPerTarget),
            ("cpu_utilization", ScalingMetric::CpuUtilization),
        ],
    );
    if m == ScalingMetric::CpuUtilization && matches!(launch, Launch::Command(_)) {
        d.err(
            path,
            "cpu_utilization is measured on local processes, so it needs the process provider",
        );
    }
    m
}

fn steps(
    d: &mut Diags,
    path: &str,
    raw: Option<&[RawStep]>,
    adjustment_type: AdjustmentType,
) -> Vec<Step> {
    let Some(raw) = raw else {
        fields::missing(d, path);
        return Vec::new();
    };
    if raw.is_empty() {
        d.err(path, "needs at least one step");
    }
    let mut out: Vec<Step> = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        let sp = format!("{path}[{i}]");
        let adjustment = match s.adjustment {
            None => {
                fields::missing(d, &format!("{sp}.adjustment"));
                0
            }
            Some(a) if adjustment_type == AdjustmentType::Exact && !(0..=1000).contains(&a) => {
                d.err(
                    &format!("{sp}.adjustment"),
                    format!("{a} is outside 0..=1000 (an exact capacity)"),
                );
                0
            }
            Some(a) => a,
        };
        let bad_bound = [s.lower, s.upper].iter().flatten().any(|b| !b.is_finite());
        if bad_bound {
            d.err(
                &sp,
                "bounds must be finite numbers; leave one out for unbounded",
            );
        } else if let (Some(lo), Some(hi)) = (s.lower, s.upper) {
            if lo >= hi {
                d.err(
                    &format!("{sp}.upper"),
                    format!("upper {hi} must be greater than lower {lo}"),
                );
            }
        }
        if let Some(prev) = out.last() {
            // Sorted and non-overlapping: the previous step must end (exclusive) at or before this one starts.
            let ok = matches!((prev.upper, s.lower), (Some(u), Some(l)) if u <= l);
            if !ok {
                d.err(
                    &format!("{sp}.lower"),
                    format!("overlaps steps[{}]: steps must be sorted by lower bound and must not overlap", i - 1),
                );
            }
        }
        out.push(Step {
            lower: s.lower,
            upper: s.upper,
            adjustment,
        });
    }
    out
}

fn scheduled(d: &mut Diags, path: &str, raw: &RawPolicy) -> PolicyKind {
    let p = |key: &str| format!("{path}.{key}");
    let cron_text = fields::required(d, &p("cron"), &raw.cron).to_string();
    if raw.cron.is_some() {
        if let Err(msg) = cron::CronFields::parse(&cron_text) {
            d.err(&p("cron"), msg);
        }
    }
    let timezone = raw.timezone.clone().unwrap_or_else(|| "UTC".to_string());
    if !cron::timezone(&timezone) {
        d.err(
            &p("timezone"),
            format!(
                "{timezone:?} is not \"UTC\" or an Area/City time zone such as \"Europe/Paris\""
            ),
        );
    }
    let mut count = |key: &str, v: Option<i64>| {
        v.map(|v| fields::to_u32(fields::int_in(d, &p(key), Some(v), 0, 0, 1000)))
    };
    let (min, max, desired) = (
        count("min", raw.min),
        count("max", raw.max),
        count("desired", raw.desired),
    );
    if min.is_none() && max.is_none() && desired.is_none() {
        d.err(
            path,
            "a scheduled policy needs at least one of min, max, desired",
        );
    }
    if let (Some(lo), Some(hi)) = (min, max) {
        if lo > hi {
            d.err(&p("max"), format!("max {hi} is less than min {lo}"));
        }
    }
    if let Some(want) = desired {
        let (lo, hi) = (min.unwrap_or(0), max.unwrap_or(u32::MAX));
        if want < lo || want > hi {
            d.err(
                &p("desired"),
                format!(
                    "desired {want} is outside min..=max ({lo}..={})",
                    max.map_or("".into(), |m| m.to_string())
                ),
            );
        }
    }
    PolicyKind::Scheduled {
        cron: cron_text,
        timezone,
        min,
        max,
        desired,
    }
}
