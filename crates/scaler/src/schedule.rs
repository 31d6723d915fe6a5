//! Scheduled scaling: which `scheduled` policies fired between two looks at the clock.
//!
//! As everywhere in this crate, time is passed in ([`Scheduler::due`] takes `now`), so the rules are tested
//! with fixed instants. A cron expression is matched against the wall clock of the policy's own time zone,
//! at second 0 of each minute. Daylight saving time follows the usual cron rules: a wall-clock time that
//! does not exist (spring forward) is skipped, one that occurs twice (fall back) fires once, the first time.
//!
//! Both searches below rely on one fact: mapping each existing wall-clock minute to the *first* instant it
//! occurs at is strictly increasing. So walking the wall clock forward (or backward) meets firings in time
//! order, and the first one past the bound is the answer.

use std::time::SystemTime;

use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::Timestamp;
use trellis_config::{CronFields, Policy, PolicyKind};

/// How many days a search walks before concluding that a schedule never fires (`0 0 30 2 *` passes field
/// by field validation). Eight years and a day reach the next 29 February even across 2100, not a leap year.
const HORIZON_DAYS: u32 = 8 * 366 + 1;

/// A five-field cron expression (`minute hour day-of-month month day-of-week`), evaluated in a time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule(CronFields);

impl CronSchedule {
    /// Parses an expression with the parser `trellis-config` validates with.
    pub fn parse(expr: &str) -> Result<CronSchedule, String> {
        CronFields::parse(expr).map(CronSchedule)
    }

    fn day_matches(&self, date: Date) -> bool {
        let dom = has(self.0.days_of_month, date.day());
        let dow = has(self.0.days_of_week, date.weekday().to_sunday_zero_offset());
        let day = if self.0.either_day {
            dom || dow
        } else {
            dom && dow
        };
        has(self.0.months, date.month()) && day
    }

    /// The (hour, minute) pairs of a matching day, earliest first.
    fn times(&self) -> impl DoubleEndedIterator<Item = (i8, i8)> + '_ {
        bits(self.0.hours, 23).flat_map(move |h| bits(self.0.minutes, 59).map(move |m| (h, m)))
    }

    /// The first firing strictly after `after`, within [`HORIZON_DAYS`].
    fn next_after(&self, tz: &TimeZone, after: Timestamp) -> Option<Timestamp> {
        let clock = tz.to_datetime(after);
        let mut date = clock.date();
        for _ in 0..HORIZON_DAYS {
            if self.day_matches(date) {
                for (h, m) in self.times() {
                    let minute = date.at(h, m, 0, 0);
                    // Minutes the clock has already shown first occurred at or before `after`.
                    if minute <= clock {
                        continue;
                    }
                    // `after` may be in the second pass of a fold, whose minutes fired on the first pass.
                    match first_instant(tz, minute) {
                        Some(t) if t > after => return Some(t),
                        _ => {}
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// The last firing in `(since, until]`, if any.
    fn last_between(&self, tz: &TimeZone, since: Timestamp, until: Timestamp) -> Option<Timestamp> {
        let mut clock = tz.to_datetime(until);
        // In the second pass of a fold the wall clock has already shown later minutes, on the first pass:
        // start from the reading the first pass would give now.
        if let AmbiguousOffset::Fold { before, .. } = tz.to_ambiguous_timestamp(clock).offset() {
            clock = before.to_datetime(until);
        }
        let stop = tz.to_datetime(since);
        let mut date = clock.date();
        for _ in 0..HORIZON_DAYS {
            if date < stop.date() {
                return None;
            }
            if self.day_matches(date) {
                for (h, m) in self.times().rev() {
                    let minute = date.at(h, m, 0, 0);
                    if minute > clock {
                        continue;
                    }
                    if minute <= stop {
                        return None;
                    }
                    match first_instant(tz, minute) {
                        Some(t) if t <= until => return (t > since).then_some(t),
                        _ => {}
                    }
                }
            }
            date = date.yesterday().ok()?;
        }
        None
    }
}

fn has(set: u64, value: i8) -> bool {
    (set >> value) & 1 == 1
}

fn bits(set: u64, hi: i8) -> impl DoubleEndedIterator<Item = i8> {
    (0..=hi).filter(move |&v| has(set, v))
}

/// When a wall-clock minute fires: never if it does not exist (spring forward), the first time if it occurs
/// twice (fall back).
fn first_instant(tz: &TimeZone, minute: DateTime) -> Option<Timestamp> {
    let offset = match tz.to_ambiguous_timestamp(minute).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset,
        AmbiguousOffset::Gap { .. } => return None,
        AmbiguousOffset::Fold { before, .. } => before,
    };
    offset.to_timestamp(minute).ok()
}

/// What a scheduled policy sets when it fires; `None` leaves that bound as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledAction {
    pub policy: String,
    pub min: Option<u32>,
    pub max: Option<u32>,
    pub desired: Option<u32>,
}

/// The `scheduled` policies of one group, and when they were last looked at.
#[derive(Debug, Clone)]
pub struct Scheduler {
    entries: Vec<Entry>,
    last: Option<Timestamp>,
}

#[derive(Debug, Clone)]
struct Entry {
    cron: CronSchedule,
    tz: TimeZone,
    action: ScheduledAction,
}

impl Scheduler {
    /// Takes the group's `scheduled` policies and ignores the others. Fails on an expression that does not
    /// parse or a time zone that neither the system's database nor the bundled copy knows.
    pub fn new(policies: &[Policy]) -> Result<Scheduler, String> {
        let mut entries = Vec::new();
        for policy in policies {
            let PolicyKind::Scheduled {
                cron,
                timezone,
                min,
                max,
                desired,
            } = &policy.kind
            else {
                continue;
            };
            let context = |why: String| format!("policy {:?}: {why}", policy.name);
            let cron = CronSchedule::parse(cron).map_err(context)?;
            // UTC needs no database, so a machine without one can still run UTC schedules.
            let tz = match timezone.as_str() {
                "UTC" => TimeZone::UTC,
                name => TimeZone::get(name)
                    .map_err(|_| context(format!("unknown time zone {name:?}")))?,
            };
            entries.push(Entry {
                cron,
                tz,
                action: ScheduledAction {
                    policy: policy.name.clone(),
                    min: *min,
                    max: *max,
                    desired: *desired,
                },
            });
        }
        Ok(Scheduler {
            entries,
            last: None,
        })
    }

    /// The actions whose schedule fired in `(previous call, now]`, at most one per policy however many
    /// minutes were skipped, ordered by their latest firing so that applying them in order leaves the
    /// latest in force. The first call only records the time: nothing fires for the past.
    ///
    /// `now` is remembered even if the clock went back, so that a clock corrected after running ahead
    /// resumes firing instead of staying silent until it catches up; the minutes it goes over again may
    /// fire again, which only sets the same bounds again.
    pub fn due(&mut self, now: SystemTime) -> Vec<ScheduledAction> {
        let Ok(now) = Timestamp::try_from(now) else {
            return Vec::new();
        };
        let Some(last) = self.last.replace(now) else {
            return Vec::new();
        };
        if now <= last {
            return Vec::new();
        }
        let mut fired: Vec<(Timestamp, &ScheduledAction)> = self
            .entries
            .iter()
            .filter_map(|e| Some((e.cron.last_between(&e.tz, last, now)?, &e.action)))
            .collect();
        // Stable: policies firing at the same minute keep the configuration's order.
        fired.sort_by_key(|&(at, _)| at);
        fired
            .into_iter()
            .map(|(_, action)| action.clone())
            .collect()
    }

    /// When `policy` next fires strictly after `after`; `None` for an unknown policy or a schedule that
    /// does not fire within eight years (such as 30 February).
    pub fn next_fire(&self, policy: &str, after: SystemTime) -> Option<SystemTime> {
        let entry = self.entries.iter().find(|e| e.action.policy == policy)?;
        let after = Timestamp::try_from(after).ok()?;
        entry
            .cron
            .next_after(&entry.tz, after)
            .map(SystemTime::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use trellis_config::ScalingMetric;

    fn at(text: &str) -> SystemTime {
        SystemTime::from(text.parse::<Timestamp>().unwrap())
    }

    fn show(t: SystemTime) -> String {
        Timestamp::try_from(t).unwrap().to_string()
    }

    fn scheduled(name: &str, cron: &str, timezone: &str) -> Policy {
        Policy {
            name: name.into(),
            kind: PolicyKind::Scheduled {
                cron: cron.into(),
                timezone: timezone.into(),
                min: Some(1),
                max: None,
                desired: Some(3),
            },
        }
    }

    fn scheduler(cron: &str, timezone: &str) -> Scheduler {
        Scheduler::new(&[scheduled("p", cron, timezone)]).unwrap()
    }

    /// Calls `due` every `step` from `from` (first call) up to `to`; the call instants at which something
    /// was returned, with the policies returned.
    fn run(s: &mut Scheduler, from: &str, to: &str, step: Duration) -> Vec<(String, Vec<String>)> {
        let (mut now, to) = (at(from), at(to));
        assert!(
            s.due(now).is_empty(),
            "the first call only records the time"
        );
        let mut out = Vec::new();
        while now < to {
            now += step;
            let actions = s.due(now);
            if !actions.is_empty() {
                out.push((show(now), actions.into_iter().map(|a| a.policy).collect()));
            }
        }
        out
    }

    /// The call instants of `run` with one policy.
    fn fires(s: &mut Scheduler, from: &str, to: &str, step: Duration) -> Vec<String> {
        run(s, from, to, step).into_iter().map(|(t, _)| t).collect()
    }

    /// Successive `next_fire`s from `from` while before `to`.
    fn nexts(s: &Scheduler, from: &str, to: &str) -> Vec<String> {
        let (mut t, to) = (at(from), at(to));
        let mut out = Vec::new();
        while let Some(next) = s.next_fire("p", t).filter(|&n| n < to) {
            out.push(show(next));
            t = next;
        }
        out
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn weekdays_at_nine_utc() {
        let mut s = scheduler("0 9 * * 1-5", "UTC");
        // 2026-01-04 is a Sunday; a full week of calls every minute, at second 30.
        let got = fires(
            &mut s,
            "2026-01-04T00:00:30Z",
            "2026-01-11T00:00:30Z",
            MINUTE,
        );
        let days = ["05", "06", "07", "08", "09"];
        let want: Vec<String> = days
            .iter()
            .map(|d| format!("2026-01-{d}T09:00:30Z"))
            .collect();
        assert_eq!(got, want);
        let expected = ScheduledAction {
            policy: "p".into(),
            min: Some(1),
            max: None,
            desired: Some(3),
        };
        let mut s = scheduler("0 9 * * 1-5", "UTC");
        s.due(at("2026-01-05T08:59:59Z"));
        assert_eq!(
            s.due(at("2026-01-05T09:00:00Z")),
            vec![expected],
            "fires at second 0 itself"
        );
        assert!(
            s.due(at("2026-01-05T09:00:01Z")).is_empty(),
            "(last, now] excludes last"
        );
    }

    #[test]
    fn every_quarter_hour_fires_four_times_an_hour() {
        let mut s = scheduler("*/15 * * * *", "UTC");
        let got = fires(
            &mut s,
            "2026-01-05T10:00:00Z",
            "2026-01-05T11:00:00Z",
            MINUTE,
        );
        let want = ["10:15", "10:30", "10:45", "11:00"].map(|hm| format!("2026-01-05T{hm}:00Z"));
        assert_eq!(got, want);
    }

    #[test]
    fn a_long_gap_fires_once_per_policy_latest_last() {
        let mut s = scheduler("*/15 * * * *", "UTC");
        s.due(at("2026-01-05T10:00:00Z"));
        assert_eq!(s.due(at("2026-01-05T13:00:00Z")).len(), 1);
        assert!(s.due(at("2026-01-05T13:10:00Z")).is_empty());

        // Hourly fired last at 03:00, the daily one at 01:30: the daily one comes first.
        let mut s = Scheduler::new(&[
            scheduled("hourly", "0 * * * *", "UTC"),
            scheduled("daily", "30 1 * * *", "UTC"),
            scheduled("never-in-window", "0 12 * * *", "UTC"),
        ])
        .unwrap();
        s.due(at("2026-01-05T01:00:00Z"));
        let got: Vec<String> = s
            .due(at("2026-01-05T03:10:00Z"))
            .into_iter()
            .map(|a| a.policy)
            .collect();
        assert_eq!(got, ["daily", "hourly"]);
    }

    #[test]
    fn first_call_and_clock_going_back() {
        let mut s = scheduler("* * * * *", "UTC");
        assert!(
            s.due(at("2026-01-05T10:00:30Z")).is_empty(),
            "nothing fires for the past"
        );
        assert_eq!(s.due(at("2026-01-05T10:01:30Z")).len(), 1);
        assert!(
            s.due(at("2026-01-05T09:00:30Z")).is_empty(),
            "the clock went back"
        );
        assert_eq!(
            s.due(at("2026-01-05T09:01:30Z")).len(),
            1,
            "and firing resumes from there"
        );
    }

    #[test]
    fn paris_winter_and_summer() {
        let mut s = scheduler("0 9 * * *", "Europe/Paris");
        let got = fires(
            &mut s,
            "2026-01-15T00:00:00Z",
            "2026-01-16T00:00:00Z",
            MINUTE,
        );
        assert_eq!(got, ["2026-01-15T08:00:00Z"]);
        let mut s = scheduler("0 9 * * *", "Europe/Paris");
        let got = fires(
            &mut s,
            "2026-07-15T00:00:00Z",
            "2026-07-16T00:00:00Z",
            MINUTE,
        );
        assert_eq!(got, ["2026-07-15T07:00:00Z"]);
        assert_eq!(
            nexts(&s, "2026-03-27T12:00:00Z", "2026-03-31T00:00:00Z"),
            [
                "2026-03-28T08:00:00Z",
                "2026-03-29T07:00:00Z",
                "2026-03-30T07:00:00Z"
            ]
        );
    }

    #[test]
    fn spring_forward_skips_the_missing_time() {
        // 2026-03-29, last Sunday of March: Paris goes from 02:00 CET straight to 03:00 CEST.
        let mut s = scheduler("30 2 * * *", "Europe/Paris");
        let got = fires(
            &mut s,
            "2026-03-28T00:00:00Z",
            "2026-03-31T00:00:00Z",
            MINUTE,
        );
        assert_eq!(got, ["2026-03-28T01:30:00Z", "2026-03-30T00:30:00Z"]);
        assert_eq!(
            nexts(&s, "2026-03-28T02:00:00Z", "2026-03-31T00:00:00Z"),
            ["2026-03-30T00:30:00Z"]
        );
        // The minutes around the gap still fire.
        let s = scheduler("59 1,3 * * *", "Europe/Paris");
        assert_eq!(
            nexts(&s, "2026-03-28T23:00:00Z", "2026-03-29T02:00:00Z"),
            ["2026-03-29T00:59:00Z", "2026-03-29T01:59:00Z"]
        );
    }

    #[test]
    fn fall_back_fires_the_repeated_time_once() {
        // 2026-10-25: Paris goes from 03:00 CEST (01:00Z) back to 02:00 CET; 02:00-02:59 happen twice.
        let mut s = scheduler("30 2 * * *", "Europe/Paris");
        let got = fires(
            &mut s,
            "2026-10-24T00:00:00Z",
            "2026-10-26T00:00:00Z",
            MINUTE,
        );
        assert_eq!(got, ["2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z"]);
        let s = scheduler("*/30 * * * *", "Europe/Paris");
        assert_eq!(
            nexts(&s, "2026-10-24T23:45:00Z", "2026-10-25T02:01:00Z"),
            [
                "2026-10-25T00:00:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-25T02:00:00Z"
            ],
            "02:00 and 02:30 CET are the second pass"
        );
        // Checked during the second pass, a minute that fired on the first pass since the last check
        // is still due: the wall clock had gone past it.
        let mut s = scheduler("59 2 * * *", "Europe/Paris");
        s.due(at("2026-10-25T00:45:00Z"));
        assert_eq!(s.due(at("2026-10-25T01:40:00Z")).len(), 1);
        assert!(
            s.due(at("2026-10-25T02:00:00Z")).is_empty(),
            "02:59 CET is its second pass"
        );
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // January 2026: Fridays are the 2nd, 9th, 16th, 23rd and 30th; the 13th is a Tuesday.
        let days = |cron: &str| -> Vec<String> {
            nexts(
                &scheduler(cron, "UTC"),
                "2025-12-31T23:59:00Z",
                "2026-02-01T00:00:00Z",
            )
            .into_iter()
            .map(|t| t[8..10].to_string())
            .collect()
        };
        assert_eq!(
            days("0 0 13 * 5"),
            ["02", "09", "13", "16", "23", "30"],
            "either"
        );
        assert_eq!(days("0 0 13 * *"), ["13"]);
        assert_eq!(days("0 0 * * 5"), ["02", "09", "16", "23", "30"]);
        // As in Vixie cron, a field starting with `*` is unrestricted for this rule: odd days AND Fridays.
        assert_eq!(days("0 0 */2 * 5"), ["09", "23"]);
        assert_eq!(
            days("0 0 1-3 1 *"),
            ["01", "02", "03"],
            "month and day of month"
        );
        assert_eq!(days("0 0 1-3 2 *"), Vec::<String>::new(), "not in January");
    }

    #[test]
    fn day_of_week_seven_is_sunday() {
        assert_eq!(
            CronSchedule::parse("0 12 * * 7"),
            CronSchedule::parse("0 12 * * 0")
        );
        // 2026-01-04 is a Sunday.
        let s = scheduler("0 12 * * 5-7", "UTC");
        assert_eq!(
            nexts(&s, "2026-01-01T00:00:00Z", "2026-01-08T00:00:00Z"),
            [
                "2026-01-02T12:00:00Z",
                "2026-01-03T12:00:00Z",
                "2026-01-04T12:00:00Z"
            ]
        );
    }

    #[test]
    fn next_fire() {
        let s = scheduler("0 9 * * 1-5", "UTC");
        // 2026-01-09 is a Friday.
        assert_eq!(
            s.next_fire("p", at("2026-01-09T08:59:59Z")),
            Some(at("2026-01-09T09:00:00Z"))
        );
        assert_eq!(
            s.next_fire("p", at("2026-01-09T09:00:00Z")),
            Some(at("2026-01-12T09:00:00Z"))
        );
        assert_eq!(s.next_fire("nope", at("2026-01-09T09:00:00Z")), None);
        // A leap day is found across 2100, which is not a leap year.
        let s = scheduler("0 0 29 2 *", "UTC");
        assert_eq!(
            s.next_fire("p", at("2097-01-01T00:00:00Z")),
            Some(at("2104-02-29T00:00:00Z"))
        );
        // A day that never comes: the search gives up, and `due` with it.
        let mut s = scheduler("0 0 30 2 *", "UTC");
        assert_eq!(s.next_fire("p", at("2026-01-01T00:00:00Z")), None);
        s.due(at("2026-01-01T00:00:00Z"));
        assert!(s.due(at("2036-01-01T00:00:00Z")).is_empty());
    }

    #[test]
    fn unknown_time_zone_is_named() {
        let err =
            Scheduler::new(&[scheduled("night", "0 0 * * *", "Mars/Olympus_Mons")]).unwrap_err();
        assert!(
            err.contains("Mars/Olympus_Mons") && err.contains("night"),
            "{err}"
        );
    }

    #[test]
    fn other_policies_are_ignored() {
        let tracking = Policy {
            name: "cpu".into(),
            kind: PolicyKind::TargetTracking {
                metric: ScalingMetric::CpuUtilization,
                target: 50.0,
                disable_scale_in: false,
            },
        };
        let s = Scheduler::new(&[tracking, scheduled("p", "0 9 * * *", "UTC")]).unwrap();
        assert_eq!(s.entries.len(), 1);
        assert_eq!(s.next_fire("cpu", at("2026-01-09T09:00:00Z")), None);
    }

    #[test]
    fn parse() {
        let c = CronSchedule::parse("0,30 8-18/2 1 1,6,12 0").unwrap();
        assert_eq!(c.0.minutes, 1 | 1 << 30);
        assert_eq!(
            c.0.hours,
            [8, 10, 12, 14, 16, 18].iter().fold(0, |s, h| s | 1 << h)
        );
        assert_eq!(
            (c.0.days_of_month, c.0.months, c.0.days_of_week),
            (1 << 1, 1 << 1 | 1 << 6 | 1 << 12, 1)
        );
        assert!(c.0.either_day);
        assert!(!CronSchedule::parse("* * * * 1").unwrap().0.either_day);
        assert!(!CronSchedule::parse("* * 1 * */2").unwrap().0.either_day);
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "*/0 * * * *",
            "5-1 * * * *",
            "5/2 * * * *",
            "1,,2 * * * *",
        ] {
            assert!(CronSchedule::parse(bad).is_err(), "{bad}");
        }
        let err = Scheduler::new(&[scheduled("p", "0 25 * * *", "UTC")]).unwrap_err();
        assert!(err.contains("hour field"), "{err}");
    }
}
