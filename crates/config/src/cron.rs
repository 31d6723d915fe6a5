//! Five-field cron expressions (`minute hour day-of-month month day-of-week`) and time zone names.
//!
//! Only validation lives here: the scaler evaluates the expression. Each field is a comma list of `*`,
//! `*/n`, `a`, `a-b` or `a-b/n`; day-of-week 0 and 7 are both Sunday.

const FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
];

pub(crate) fn validate(expr: &str) -> Result<(), String> {
    let parts: Vec<&str> = expr.split_whitespace().collect();
    if parts.len() != 5 {
        return Err(format!(
            "{expr:?} has {} fields; a cron expression has 5: minute hour day-of-month month day-of-week",
            parts.len()
        ));
    }
    for (part, (what, lo, hi)) in parts.iter().zip(FIELDS) {
        field(part, lo, hi).map_err(|why| format!("{expr:?}: {what} field {part:?}: {why}"))?;
    }
    Ok(())
}

fn field(text: &str, lo: u32, hi: u32) -> Result<(), String> {
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        if let Some(s) = step {
            match s.parse::<u32>() {
                Ok(n) if n >= 1 && n <= hi.max(1) => {}
                _ => return Err(format!("step {s:?} is not a number in 1..={}", hi.max(1))),
            }
        }
        if range == "*" {
            continue;
        }
        let num = |s: &str| -> Result<u32, String> {
            match s.parse::<u32>() {
                Ok(n) if (lo..=hi).contains(&n) => Ok(n),
                _ => Err(format!("{s:?} is not a number in {lo}..={hi}")),
            }
        };
        match range.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("range {a}-{b} is backwards"));
                }
            }
            None if step.is_some() => {
                return Err("a step needs * or a range before it, as in */5 or 0-30/5".into())
            }
            None => {
                num(range)?;
            }
        }
    }
    Ok(())
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
            assert_eq!(validate(e), Ok(()), "{e}");
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
            assert!(validate(e).is_err(), "{e}");
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
