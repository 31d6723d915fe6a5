//! A target group's traffic management: `retry` and `concurrency`.

use std::time::Duration;

use super::fields;
use crate::diag::Diags;
use crate::model::{Concurrency, RetryOn, RetryPolicy, Stickiness, StickinessKind};
use crate::raw::{RawConcurrency, RawRetry, RawStickiness};

/// What `on` may name.
const CONDITIONS: &[&str] = &["5xx", "gateway_error", "reset", "timeout"];
/// What `methods` may name (CONNECT never: a tunnel is not a request that can be sent again).
const METHODS: &[&str] = &[
    "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE",
];
/// The methods retried by default: the idempotent ones (RFC 9110 §9.2.2).
const IDEMPOTENT: &[&str] = &["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"];
const MAX_REPLAY_BODY: u64 = 16 * 1024 * 1024;

pub(crate) fn retry(
    d: &mut Diags,
    path: &str,
    raw: &RawRetry,
    response_timeout: Duration,
) -> RetryPolicy {
    let p = |key: &str| format!("{path}.{key}");
    let attempts = fields::int_in(d, &p("attempts"), raw.attempts, 2, 0, 5) as u8;
    let mut on = RetryOn::default();
    match &raw.on {
        None => {
            on.reset = true;
            on.gateway_error = true;
        }
        Some(list) => {
            for (i, c) in list.iter().enumerate() {
                match c.to_ascii_lowercase().as_str() {
                    "5xx" => on.server_error = true,
                    "gateway_error" => on.gateway_error = true,
                    "reset" => on.reset = true,
                    "timeout" => on.timeout = true,
                    _ => d.err(
                        &format!("{}[{i}]", p("on")),
                        format!("{c:?} is not one of {}", CONDITIONS.join(", ")),
                    ),
                }
            }
        }
    }
    let methods = match &raw.methods {
        None => IDEMPOTENT.iter().map(|m| m.to_string()).collect(),
        Some(list) => {
            let mut out: Vec<String> = Vec::new();
            for (i, m) in list.iter().enumerate() {
                let upper = m.to_ascii_uppercase();
                if !METHODS.contains(&upper.as_str()) {
                    d.err(
                        &format!("{}[{i}]", p("methods")),
                        format!("{m:?} is not one of {}", METHODS.join(" ")),
                    );
                } else if !out.contains(&upper) {
                    out.push(upper);
                }
            }
            out
        }
    };
    let per_try_timeout = raw.per_try_timeout.as_ref().map(|_| {
        let t = fields::positive_duration(
            d,
            &p("per_try_timeout"),
            &raw.per_try_timeout,
            response_timeout,
        );
        if t > response_timeout {
            d.err(
                &p("per_try_timeout"),
                format!(
                    "{} is longer than the group's response_timeout ({})",
                    humantime::format_duration(t),
                    humantime::format_duration(response_timeout)
                ),
            );
        }
        t
    });
    let budget_percent =
        fields::int_in(d, &p("budget_percent"), raw.budget_percent, 20, 0, 100) as u8;
    let max_replay_body = match &raw.max_replay_body {
        None => 64 * 1024,
        Some(text) => {
            match size(text) {
                Some(n) if n <= MAX_REPLAY_BODY => n,
                Some(_) => {
                    d.err(
                        &p("max_replay_body"),
                        format!("{text:?} is more than 16MiB"),
                    );
                    0
                }
                None => {
                    d.err(
                    &p("max_replay_body"),
                    format!("{text:?} is not a size; write e.g. \"0\", \"512B\", \"64KiB\", \"1MiB\""),
                );
                    0
                }
            }
        }
    };
    RetryPolicy {
        attempts,
        on,
        methods,
        per_try_timeout,
        budget_percent,
        max_replay_body,
    }
}

/// `"64KiB"`, `"1MiB"`, `"512B"`, `"512"`: a number of bytes.
fn size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(scale)
}

pub(crate) fn concurrency(d: &mut Diags, path: &str, raw: &RawConcurrency) -> Concurrency {
    let p = |key: &str| format!("{path}.{key}");
    let max_per_target = fields::to_u32(fields::required_int_in(
        d,
        &p("max_per_target"),
        raw.max_per_target,
        1,
        100_000,
    ));
    let queue = fields::to_u32(fields::int_in(d, &p("queue"), raw.queue, 0, 0, 100_000));
    let queue_timeout = fields::duration_in(
        d,
        &p("queue_timeout"),
        &raw.queue_timeout,
        Duration::from_secs(1),
        Duration::from_millis(1),
        Duration::from_secs(3600),
    );
    Concurrency {
        max_per_target: max_per_target.max(1),
        queue,
        queue_timeout,
    }
}

pub(crate) fn stickiness(d: &mut Diags, path: &str, raw: &RawStickiness) -> Stickiness {
    let p = |key: &str| format!("{path}.{key}");
    let duration = fields::duration_in(
        d,
        &p("duration"),
        &raw.duration,
        Duration::from_secs(86_400),
        Duration::from_secs(1),
        Duration::from_secs(7 * 86_400),
    );
    let kind = match fields::required(d, &p("type"), &raw.kind) {
        "lb_cookie" => {
            if raw.cookie_name.is_some() {
                d.err(&p("cookie_name"), "only for type = \"app_cookie\"");
            }
            StickinessKind::LbCookie
        }
        "app_cookie" => {
            let name = fields::required(d, &p("cookie_name"), &raw.cookie_name).to_string();
            if raw.cookie_name.is_some() && !cookie_name(&name) {
                d.err(
                    &p("cookie_name"),
                    format!("{name:?} is not a cookie name (1..=100 letters, digits and !#$%&'*+-.^_`|~)"),
                );
            }
            StickinessKind::AppCookie { cookie_name: name }
        }
        "" => StickinessKind::LbCookie,
        other => {
            d.err(
                &p("type"),
                format!("{other:?} is not one of \"lb_cookie\", \"app_cookie\""),
            );
            StickinessKind::LbCookie
        }
    };
    Stickiness { kind, duration }
}

/// An RFC 6265 cookie name: a token.
fn cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::size;

    #[test]
    fn sizes() {
        assert_eq!(size("0"), Some(0));
        assert_eq!(size("512B"), Some(512));
        assert_eq!(size("64KiB"), Some(65536));
        assert_eq!(size("1MiB"), Some(1 << 20));
        for bad in ["", "KiB", "64kb", "1.5MiB", "-1", "64 KB"] {
            assert_eq!(size(bad), None, "{bad}");
        }
    }
}
