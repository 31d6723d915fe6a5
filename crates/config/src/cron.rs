//! Five-field cron expressions (`minute hour day-of-month month day-of-week`) and time zone names.
//!
//! Parsed here, once, for validation and for the scaler, which evaluates the sets against the clock.
//! Each field is a comma list of `*`, `*/n`, `a`, `a-b` or `a-b/n`; day-of-week 0 and 7 are both Sunday.

/// A five-field cron expression as sets of allowed values: what the scaler evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CronFields {
    /// Bit n set: value n allowed.
    pub minutes: u64,
    pub hours: u64,
    pub days_of_month: u64,
    pub months: u64,
    /// Sunday is bit 0; a 7 in the expression is folded into it.
    pub days_of_week: u64,
    /// Vixie cron: when both day fields are restricted, a day matches if either does. A field starting
    /// with `*` (`*` or `*/n`) counts as unrestricted, as it does there.
    pub either_day: bool,
}

impl CronFields {
    /// Each field a comma list of `*`, `*/n`, `a`, `a-b` or `a-b/n`; the error names the field.
    pub fn parse(expr: &str) -> Result<CronFields, String> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            return Err(format!(
                "{expr:?} has {} fields; a cron expression has 5: minute hour day-of-month month day-of-week",
                fields.len()
            ));
        };
        let field = |text: &str, what: &str, lo: u32, hi: u32| {
            values(text, lo, hi).map_err(|why| format!("{expr:?}: {what} field {text:?}: {why}"))
        };
        let minutes = field(minute, "minute", 0, 59)?;
        let hours = field(hour, "hour", 0, 23)?;
        let days_of_month = field(dom, "day of month", 1, 31)?;
        let months = field(month, "month", 1, 12)?;
        let mut days_of_week = field(dow, "day of week", 0, 7)?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week | 1) & !(1 << 7);
        }
        Ok(CronFields {
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
            either_day: !dom.starts_with('*') && !dow.starts_with('*'),
        })
    }
}

/// The values a field allows, as a bitset; `lo..=hi` is the field's range.
fn values(text: &str, lo: u32, hi: u32) -> Result<u64, String> {
    let num = |s: &str| match s.parse::<u32>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a number in {lo}..={hi}")),
    };
    let mut set = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => match step.parse::<u32>() {
                Ok(n) if n >= 1 && n <= hi.max(1) => (range, Some(n as usize)),
                _ => {
                    return Err(format!(
                        "step {step:?} is not a number in 1..={}",
                        hi.max(1)
                    ))
                }
            },
            None => (item, None),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (num(a)?, num(b)?)
        } else if step.is_some() {
            return Err("a step needs * or a range before it, as in */5 or 0-30/5".into());
        } else {
            let n = num(range)?;
            (n, n)
        };
        if a > b {
            return Err(format!("range {a}-{b} is backwards"));
        }
        for v in (a..=b).step_by(step.unwrap_or(1)) {
            set |= 1 << v;
        }
    }
    Ok(set)
}

/// `UTC` or an IANA-shaped `Area/City` name (no time zone database here; the scaler resolves it).
pub(crate) fn timezone(name: &str) -> bool {
    if name == "UTC" {
        return true;
    }
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() >= 2
        && parts.iter().all(|p| {
            p.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_+-".contains(c))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good() {
        for e in [
            "* * * * *",
            "*/5 * * * *",
            "0 9 * * 1-5",
            "0,30 8-18/2 1 1,6,12 0",
            "59 23 31 12 7",
        ] {
            assert!(CronFields::parse(e).is_ok(), "{e}");
        }
    }

    #[test]
    fn bad() {
        for e in [
            "",
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "*/0 * * * *",
            "5-1 * * * *",
            "a * * * *",
            "1,,2 * * * *",
            "5/2 * * * *",
            "- * * * *",
            "*/ * * * *",
        ] {
            assert!(CronFields::parse(e).is_err(), "{e}");
        }
    }

    #[test]
    fn zones() {
        assert!(timezone("UTC"));
        assert!(timezone("Europe/Paris"));
        assert!(timezone("America/Argentina/Buenos_Aires"));
        assert!(timezone("Etc/GMT+5"));
        assert!(!timezone("Paris"));
        assert!(!timezone("Europe/"));
        assert!(!timezone("../etc/passwd"));
    }
}
