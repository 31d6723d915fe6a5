//! What each scaling policy wants, on its own, from one sample.

use trellis_config::{AdjustmentType, PolicyKind, ScalingMetric, Step};

use crate::decide::Sample;

/// One policy's opinion of the capacity.
#[derive(Debug, Clone, PartialEq)]
pub enum Proposal {
    /// No opinion this time (no data, or nothing to do); counts as "keep the current capacity", so a
    /// policy that holds blocks another's scale-in, as Auto Scaling does.
    Hold,
    /// This capacity, and why.
    To { capacity: u32, cause: String },
}

/// A target tracking policy scales in only when the metric is at least this far under its target: a
/// metric hovering around the target must not make the capacity flap.
pub const SCALE_IN_MARGIN: f64 = 0.9;

pub fn metric_name(metric: ScalingMetric) -> &'static str {
    match metric {
        ScalingMetric::RequestCountPerTarget => "request_count_per_target",
        ScalingMetric::InFlightPerTarget => "in_flight_per_target",
        ScalingMetric::CpuUtilization => "cpu_utilization",
    }
}

fn unit(metric: ScalingMetric) -> &'static str {
    match metric {
        ScalingMetric::RequestCountPerTarget => "/s",
        ScalingMetric::InFlightPerTarget => "",
        ScalingMetric::CpuUtilization => "%",
    }
}

/// The metric's value per in-service (not warming) instance, if the sample has it.
pub fn value(metric: ScalingMetric, sample: &Sample) -> Option<f64> {
    if sample.measured == 0 {
        return None;
    }
    let n = f64::from(sample.measured);
    match metric {
        ScalingMetric::RequestCountPerTarget => Some(sample.requests_per_second / n),
        ScalingMetric::InFlightPerTarget => Some(sample.in_flight / n),
        ScalingMetric::CpuUtilization => sample.cpu_percent,
    }
}

/// Target tracking: capacity = ceil(measured instances × metric / target). Only proposes a change: up
/// whenever the result is above `desired`, down only with the metric at least 10% under target.
pub fn target_tracking(
    metric: ScalingMetric,
    target: f64,
    disable_scale_in: bool,
    desired: u32,
    sample: &Sample,
) -> Proposal {
    let Some(value) = value(metric, sample) else {
        return Proposal::Hold;
    };
    let load = f64::from(sample.measured) * value;
    let needed = (load / target).ceil().max(0.0) as u32;
    // Scale-in goes only as far as keeps the metric at least 10% under target afterwards: a load that
    // needs 3.1 instances' worth of target stays on 4, instead of dropping to 3 and coming back.
    let enough = (load / (target * SCALE_IN_MARGIN)).ceil().max(0.0) as u32;
    let (name, unit) = (metric_name(metric), unit(metric));
    if needed > desired {
        Proposal::To {
            capacity: needed,
            cause: format!("{name} {value:.0}{unit} > target {target}{unit}"),
        }
    } else if enough < desired && !disable_scale_in {
        Proposal::To {
            capacity: enough,
            cause: format!("{name} {value:.0}{unit} < target {target}{unit}"),
        }
    } else {
        Proposal::Hold
    }
}

/// Step scaling: the step whose [lower, upper) holds the metric sets the adjustment.
pub fn step(
    metric: ScalingMetric,
    adjustment_type: AdjustmentType,
    steps: &[Step],
    desired: u32,
    sample: &Sample,
) -> Proposal {
    let Some(value) = value(metric, sample) else {
        return Proposal::Hold;
    };
    let Some(step) = steps.iter().find(|s| {
        !matches!(s.lower, Some(lo) if value < lo) && !matches!(s.upper, Some(hi) if value >= hi)
    }) else {
        return Proposal::Hold;
    };
    let current = i64::from(desired);
    let capacity = match adjustment_type {
        AdjustmentType::Change => current + step.adjustment,
        AdjustmentType::Exact => step.adjustment,
        AdjustmentType::Percent => {
            // Rounded away from zero, so a small group still moves by at least one.
            let delta = current as f64 * step.adjustment as f64 / 100.0;
            current
                + if delta >= 0.0 {
                    delta.ceil()
                } else {
                    delta.floor()
                } as i64
        }
    };
    let capacity = capacity.clamp(0, i64::from(u32::MAX)) as u32;
    if capacity == desired {
        return Proposal::Hold;
    }
    let bounds = match (step.lower, step.upper) {
        (Some(lo), Some(hi)) => format!("in [{lo}, {hi})"),
        (Some(lo), None) => format!(">= {lo}"),
        (None, Some(hi)) => format!("< {hi}"),
        (None, None) => "any value".to_string(),
    };
    Proposal::To {
        capacity,
        cause: format!(
            "{} {value:.0}{} {bounds}: step {:+}",
            metric_name(metric),
            unit(metric),
            step.adjustment
        ),
    }
}

/// What `kind` proposes for `sample`; scheduled policies act on the clock, not on samples.
pub fn propose(kind: &PolicyKind, desired: u32, sample: &Sample) -> Proposal {
    match kind {
        PolicyKind::TargetTracking {
            metric,
            target,
            disable_scale_in,
        } => target_tracking(*metric, *target, *disable_scale_in, desired, sample),
        PolicyKind::Step {
            metric,
            adjustment_type,
            steps,
        } => step(*metric, *adjustment_type, steps, desired, sample),
        PolicyKind::Scheduled { .. } => Proposal::Hold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rps: f64, measured: u32) -> Sample {
        Sample {
            requests_per_second: rps,
            in_flight: 0.0,
            cpu_percent: None,
            measured,
        }
    }

    fn capacity(p: Proposal) -> Option<u32> {
        match p {
            Proposal::Hold => None,
            Proposal::To { capacity, .. } => Some(capacity),
        }
    }

    #[test]
    fn target_tracking_is_ceil_of_load_over_target() {
        let tt = |rps, measured, desired| {
            capacity(target_tracking(
                ScalingMetric::RequestCountPerTarget,
                500.0,
                false,
                desired,
                &sample(rps, measured),
            ))
        };
        assert_eq!(tt(2260.0, 2, 2), Some(5), "1130/s per target on 2 → 5");
        assert_eq!(tt(1000.0, 2, 2), None, "exactly on target: hold");
        assert_eq!(tt(950.0, 2, 2), None, "5% under: inside the margin, hold");
        assert_eq!(tt(400.0, 4, 4), Some(1), "100/s per target: well under");
        // 1547/s on 4 is 387/s each: 3 would be over target, 4 keeps it 10% under. No flapping.
        assert_eq!(tt(1547.0, 4, 4), None);
        assert_eq!(
            tt(1406.0, 4, 4),
            None,
            "a dip still needs 4 to stay under 450/s each"
        );
        assert_eq!(
            tt(1250.0, 4, 4),
            Some(3),
            "3 keeps it at 417/s each, under 450/s"
        );
        assert_eq!(tt(100.0, 0, 2), None, "nothing measured: hold");
    }

    #[test]
    fn the_cause_says_what_was_seen() {
        let p = target_tracking(
            ScalingMetric::RequestCountPerTarget,
            500.0,
            false,
            2,
            &sample(2260.0, 2),
        );
        assert_eq!(
            p,
            Proposal::To {
                capacity: 5,
                cause: "request_count_per_target 1130/s > target 500/s".into()
            }
        );
    }

    #[test]
    fn disable_scale_in_only_scales_out() {
        let p = target_tracking(
            ScalingMetric::RequestCountPerTarget,
            500.0,
            true,
            4,
            &sample(100.0, 4),
        );
        assert_eq!(p, Proposal::Hold);
    }

    #[test]
    fn steps_pick_the_band_and_adjust_three_ways() {
        let steps = [
            Step {
                lower: None,
                upper: Some(100.0),
                adjustment: -1,
            },
            Step {
                lower: Some(100.0),
                upper: Some(500.0),
                adjustment: 0,
            },
            Step {
                lower: Some(500.0),
                upper: None,
                adjustment: 50,
            },
        ];
        let run = |t, rps, desired| {
            capacity(step(
                ScalingMetric::RequestCountPerTarget,
                t,
                &steps,
                desired,
                &sample(rps, 1),
            ))
        };
        assert_eq!(run(AdjustmentType::Change, 50.0, 3), Some(2));
        assert_eq!(run(AdjustmentType::Change, 200.0, 3), None);
        assert_eq!(run(AdjustmentType::Change, 900.0, 3), Some(53));
        assert_eq!(run(AdjustmentType::Exact, 900.0, 3), Some(50));
        assert_eq!(
            run(AdjustmentType::Percent, 900.0, 3),
            Some(5),
            "+50% of 3 = 1.5, rounded up"
        );
        assert_eq!(
            run(AdjustmentType::Percent, 50.0, 3),
            Some(2),
            "-1% of 3 still moves by one"
        );
    }
}
