//! Rate limits (`rate_limit = { requests_per_second, burst, key }` on services and rules): a token
//! bucket per key ([`gcra`]), kept in a bounded, sharded map per limit ([`limiter`]).
//!
//! A service's limit is one [`RateLimiter`] shared by all its listeners; a rule's is its own. Limiters
//! live in the snapshot and are handed from one snapshot to the next while their configuration is
//! unchanged (see [`crate::snapshot`]), so a reload does not refill anybody's bucket; a changed limit
//! starts with full buckets.

mod gcra;
mod limiter;

pub use limiter::{KeyParts, RateLimiter};

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::IntCounter;

/// Which limit a limiter enforces: the `scope` label of the rate limit metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitId {
    Service(String),
    Rule {
        service: String,
        listener: String,
        rule: String,
    },
}

impl LimitId {
    /// `[service, listener, rule, scope]` labels (`-` where a service's limit has none).
    pub fn labels(&self) -> [&str; 4] {
        match self {
            LimitId::Service(service) => [service, "-", "-", "service"],
            LimitId::Rule {
                service,
                listener,
                rule,
            } => [service, listener, rule, "rule"],
        }
    }
}

/// One limit as a route applies it: the limiter and the route's count of the requests it refused.
pub struct Limit {
    pub limiter: Arc<RateLimiter>,
    pub refused: IntCounter,
}

/// The limits a route's requests are held to, in order: the service's, then the rule's.
#[derive(Default)]
pub struct RouteLimits {
    pub service: Option<Limit>,
    pub rule: Option<Limit>,
}

impl RouteLimits {
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.service.is_none() && self.rule.is_none()
    }

    /// Whether a limit is keyed by the caller's identity (worth verifying a bearer token for).
    #[inline]
    pub fn keyed_by_identity(&self) -> bool {
        [&self.service, &self.rule]
            .into_iter()
            .flatten()
            .any(|l| l.limiter.config().key == trellis_config::RateLimitKey::Identity)
    }

    /// Takes a token from each limit in turn; the first that has none refuses the request, with the
    /// time until it will have one. A request the rule's limit refuses has still used the service's
    /// token: it was a request to the service.
    #[inline]
    pub fn check(&self, parts: &KeyParts<'_>, now: Instant) -> Result<(), Duration> {
        for limit in [&self.service, &self.rule].into_iter().flatten() {
            let key = limit.limiter.key_of(parts);
            if let Err(wait) = limit.limiter.check(key, now) {
                limit.refused.inc();
                return Err(wait);
            }
        }
        Ok(())
    }
}

/// `retry-after` in whole seconds: until a token is available, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(50)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(120)), 120);
    }
}
