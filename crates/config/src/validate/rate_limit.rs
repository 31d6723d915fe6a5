//! `rate_limit = { requests_per_second, burst, key }`, on a service or a rule.

use super::fields;
use crate::diag::Diags;
use crate::model::{RateLimit, RateLimitKey};
use crate::raw::RawRateLimit;

/// Highest rate and burst: far above what one proxy serves, low enough that no bucket arithmetic
/// (nanoseconds in a `u64`) can overflow.
const MAX_RATE: f64 = 1_000_000.0;
const MAX_BURST: i64 = 1_000_000;

pub(crate) fn rate_limit(d: &mut Diags, path: &str, raw: &RawRateLimit) -> RateLimit {
    let p = |key: &str| format!("{path}.{key}");
    let requests_per_second = match raw.requests_per_second {
        None => {
            fields::missing(d, &p("requests_per_second"));
            1.0
        }
        Some(r) if r.is_finite() && r > 0.0 && r <= MAX_RATE => r,
        Some(r) => {
            d.err(
                &p("requests_per_second"),
                format!("{r} is not a rate: must be greater than 0 and at most {MAX_RATE}"),
            );
            1.0
        }
    };
    // ceil(rate) is at most MAX_RATE, so it fits.
    let default_burst = (requests_per_second.ceil() as i64).max(1);
    let burst = fields::int_in(d, &p("burst"), raw.burst, default_burst, 1, MAX_BURST);
    let key = match raw.key.as_deref() {
        None | Some("source_ip") => RateLimitKey::SourceIp,
        Some("identity") => RateLimitKey::Identity,
        Some(text) => match text.strip_prefix("header:") {
            Some(name) => {
                let lower = name.to_ascii_lowercase();
                if !fields::header_name(&lower) {
                    d.err(
                        &p("key"),
                        format!("{text:?}: {name:?} is not a valid HTTP header name"),
                    );
                }
                RateLimitKey::Header(lower)
            }
            None => {
                d.err(
                    &p("key"),
                    format!("{text:?} is not one of \"source_ip\", \"identity\", \"header:NAME\""),
                );
                RateLimitKey::SourceIp
            }
        },
    };
    RateLimit {
        requests_per_second,
        burst: u32::try_from(burst).unwrap_or(1),
        key,
    }
}
