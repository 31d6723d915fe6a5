//! One configured limit, live: a bucket per key, in shards, with a bounded number of keys.
//!
//! Keys are not stored: each is hashed with a keyed SipHash (random per limiter, so nobody can aim
//! collisions at someone else's bucket) and the 64-bit hash is the map key. A bucket is its GCRA TAT, so
//! an entry is 16 bytes whatever the key (an IP address, a 4 KiB header value) and looking one up never
//! allocates.
//!
//! **Shards.** `SHARDS` `Mutex<HashMap>`s chosen by hash bits: a request holds one shard's lock for one
//! lookup and one store (tens of nanoseconds), so with a few dozen shards per limiter and one worker
//! thread per core two requests rarely meet on a lock, and a plain mutex beats anything cleverer here
//! (no lock-free map, no dependency). Each shard holds at most `max_keys / SHARDS` keys.
//!
//! **Expiry.** A bucket whose TAT has passed is full: forgetting it changes no answer. Each shard drops
//! its full buckets at most once a second when a request touches it, and whenever the keys are
//! counted (at every `/metrics` scrape), so idle keys cost nothing for long. Dropping rebuilds the
//! shard's map at the size of what is left, which gives back what a flood made it grow to.
//!
//! **At the cap.** A new key in a full shard first drops the shard's full buckets; if that is not enough
//! (a flood of distinct keys, each with a fresh TAT), the buckets *closest to full* are dropped, down to
//! 7/8 of the shard's share, in one pass (so the cost is amortized over the next eighth of new keys).
//! Those carry the least state: a dropped bucket comes back full, so its key can at worst get a little
//! more than its limit, never less. Keys being held back (TAT far ahead) are the last to go, so a flood
//! of new keys cannot wipe out the state of the established clients it competes with, and it cannot
//! grow memory: new keys are still admitted (each with a bucket of its own), and the map never holds
//! more than the cap.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName};
use trellis_config::{RateLimit, RateLimitKey};

use super::gcra::{Gcra, Nanos};

/// Keys per limiter, at most (every limit has its own).
pub const MAX_KEYS: usize = 100_000;

/// A power of two: the shard is picked by hash bits.
const SHARDS: usize = 32;

/// How often, at most, a shard drops its full buckets on the request path.
const SWEEP_EVERY: Nanos = 1_000_000_000;

/// The parts of a request any key may be taken from.
pub struct KeyParts<'a> {
    pub ip: IpAddr,
    /// The caller's identity, when it has one (see [`crate::auth::Caller`]).
    pub identity: Option<&'a [u8]>,
    pub headers: &'a HeaderMap,
}

pub struct RateLimiter {
    /// What it was built from: a reload keeps the limiter (and its buckets) only when this is unchanged.
    config: RateLimit,
    gcra: Gcra,
    key: Key,
    hasher: RandomState,
    epoch: Instant,
    shard_cap: usize,
    shards: Box<[Mutex<Shard>]>,
}

enum Key {
    SourceIp,
    Identity,
    Header(HeaderName),
    /// A header name that is not one (validation rules it out): no request carries it.
    Unusable,
}

impl RateLimiter {
    pub fn new(config: &RateLimit, now: Instant) -> Self {
        Self::with_cap(config, MAX_KEYS, now)
    }

    pub fn with_cap(config: &RateLimit, max_keys: usize, now: Instant) -> Self {
        let key = match &config.key {
            RateLimitKey::SourceIp => Key::SourceIp,
            RateLimitKey::Identity => Key::Identity,
            RateLimitKey::Header(name) => HeaderName::from_bytes(name.as_bytes())
                .map(Key::Header)
                .unwrap_or(Key::Unusable),
        };
        RateLimiter {
            config: config.clone(),
            gcra: Gcra::new(config.requests_per_second, config.burst),
            key,
            hasher: RandomState::new(),
            epoch: now,
            shard_cap: (max_keys / SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    pub fn config(&self) -> &RateLimit {
        &self.config
    }

    /// The hash of the key in `parts`. Requests without the key's part (no identity, no such header)
    /// share one key: a value of its own, which no present value can hash to on purpose.
    #[inline]
    pub fn key_of(&self, parts: &KeyParts<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        match &self.key {
            Key::SourceIp => match parts.ip.to_canonical() {
                IpAddr::V4(ip) => h.write(&ip.octets()),
                IpAddr::V6(ip) => h.write(&ip.octets()),
            },
            Key::Identity => write_optional(&mut h, parts.identity),
            Key::Header(name) => write_optional(
                &mut h,
                parts.headers.get(name).map(http::HeaderValue::as_bytes),
            ),
            Key::Unusable => write_optional(&mut h, None),
        }
        h.finish()
    }

    /// Takes a token from `key`'s bucket at `now`: `Ok`, or `Err(time until one is available)`.
    #[inline]
    pub fn check(&self, key: u64, now: Instant) -> Result<(), Duration> {
        let now = self.nanos(now);
        let mut shard = self.shard(key);
        shard.sweep_if_due(now);
        let tat = shard.buckets.get(&key).copied();
        match self.gcra.take(tat, now) {
            Ok(next) => {
                if tat.is_none() && shard.buckets.len() >= self.shard_cap {
                    shard.make_room(now, self.shard_cap);
                }
                shard.buckets.insert(key, next);
                Ok(())
            }
            Err(wait) => Err(Duration::from_nanos(wait)),
        }
    }

    /// Keys with state at `now` (full buckets are dropped first).
    pub fn keys(&self, now: Instant) -> usize {
        let now = self.nanos(now);
        self.shards
            .iter()
            .map(|s| {
                let mut shard = lock(s);
                shard.sweep(now);
                shard.buckets.len()
            })
            .sum()
    }

    fn nanos(&self, now: Instant) -> Nanos {
        // Saturates at 584 years of uptime.
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn shard(&self, key: u64) -> MutexGuard<'_, Shard> {
        // Bits the shard's own map does not use to place a key (it takes the lowest for the slot and
        // the highest seven for its control bytes).
        lock(&self.shards[(key >> 32) as usize & (SHARDS - 1)])
    }
}

fn write_optional(h: &mut impl Hasher, value: Option<&[u8]>) {
    match value {
        Some(v) => {
            h.write_u8(1);
            h.write(v);
        }
        None => h.write_u8(0),
    }
}

/// A panic while a shard was locked cannot leave it inconsistent (every change is one map operation).
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Default)]
struct Shard {
    /// Key hash → the bucket's TAT.
    buckets: HashMap<u64, Nanos, BuildHasherDefault<Prehashed>>,
    next_sweep: Nanos,
}

impl Shard {
    #[inline]
    fn sweep_if_due(&mut self, now: Nanos) {
        if now >= self.next_sweep {
            self.sweep(now);
        }
    }

    /// Drops the full buckets.
    fn sweep(&mut self, now: Nanos) {
        self.next_sweep = now.saturating_add(SWEEP_EVERY);
        self.keep(|tat| !Gcra::is_full(tat, now));
    }

    /// Keeps the buckets whose TAT passes `keep`, in a new map just large enough for them. Removing in
    /// place would leave tombstones, and a map at the cap full of them grows to twice its size when it
    /// next runs out of room; a new map also gives back what a flood made the old one grow to.
    fn keep(&mut self, keep: impl Fn(Nanos) -> bool) {
        let kept = self.buckets.values().filter(|tat| keep(**tat)).count();
        if kept == self.buckets.len() {
            return;
        }
        let mut fresh = HashMap::with_capacity_and_hasher(kept, Default::default());
        fresh.extend(self.buckets.drain().filter(|(_, tat)| keep(*tat)));
        self.buckets = fresh;
    }

    /// Called with the shard at its cap, before a new key goes in: full buckets go, then if need be the
    /// fullest others, down to 7/8 of the cap.
    #[cold]
    fn make_room(&mut self, now: Nanos, cap: usize) {
        self.sweep(now);
        let keep = cap - cap / 8 - 1;
        if self.buckets.len() <= keep {
            return;
        }
        let mut tats: Vec<Nanos> = self.buckets.values().copied().collect();
        let drop = tats.len() - keep;
        // The `drop`-th smallest TAT: everything at or below it goes.
        let (_, threshold, _) = tats.select_nth_unstable(drop - 1);
        let threshold = *threshold;
        self.keep(|tat| tat > threshold);
        // Room for the cap without growing again.
        self.buckets.reserve(cap - self.buckets.len());
    }
}

/// The map's keys are SipHash outputs already: hashing them again would only cost time.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is ever used; anything else still hashes, just not as well.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn limit(rate: f64, burst: u32, key: RateLimitKey) -> RateLimit {
        RateLimit {
            requests_per_second: rate,
            burst,
            key,
        }
    }

    fn caller<'a>(ip: [u8; 4], headers: &'a HeaderMap) -> KeyParts<'a> {
        KeyParts {
            ip: IpAddr::V4(Ipv4Addr::from(ip)),
            identity: None,
            headers,
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn burst_then_deny_then_refill_per_source_ip() {
        let t0 = Instant::now();
        let l = RateLimiter::new(&limit(20.0, 2, RateLimitKey::SourceIp), t0);
        let headers = HeaderMap::new();
        let a = l.key_of(&caller([10, 0, 0, 1], &headers));
        let b = l.key_of(&caller([10, 0, 0, 2], &headers));
        assert_ne!(a, b);
        assert_eq!(l.check(a, t0), Ok(()));
        assert_eq!(l.check(a, t0), Ok(()));
        assert_eq!(l.check(a, t0), Err(50 * MS));
        assert_eq!(l.check(a, t0 + 20 * MS), Err(30 * MS));
        assert_eq!(
            l.check(b, t0 + 20 * MS),
            Ok(()),
            "another IP has its own bucket"
        );
        assert_eq!(l.check(a, t0 + 50 * MS), Ok(()));
        assert_eq!(l.check(a, t0 + 50 * MS), Err(50 * MS));
    }

    #[test]
    fn the_same_ip_over_ipv4_and_ipv4_mapped_ipv6_is_one_key() {
        let l = RateLimiter::new(&limit(1.0, 1, RateLimitKey::SourceIp), Instant::now());
        let headers = HeaderMap::new();
        let v4 = l.key_of(&caller([192, 0, 2, 7], &headers));
        let mapped = l.key_of(&KeyParts {
            ip: "::ffff:192.0.2.7".parse().unwrap(),
            identity: None,
            headers: &headers,
        });
        assert_eq!(v4, mapped);
    }

    #[test]
    fn header_keys_and_the_shared_absent_key() {
        let l = RateLimiter::new(
            &limit(1.0, 1, RateLimitKey::Header("x-api-key".into())),
            Instant::now(),
        );
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("x-api-key", v.parse().unwrap());
            h
        };
        let (one, two, none) = (with("one"), with("two"), HeaderMap::new());
        let key = |h: &HeaderMap| l.key_of(&caller([10, 0, 0, 1], h));
        assert_ne!(key(&one), key(&two));
        assert_eq!(
            key(&one),
            l.key_of(&caller([10, 9, 9, 9], &one)),
            "not the IP"
        );
        assert_eq!(key(&none), key(&HeaderMap::new()), "absent: one shared key");
        assert_ne!(key(&none), key(&with("")), "absent is not the empty value");
    }

    #[test]
    fn identity_keys_and_the_shared_anonymous_key() {
        let l = RateLimiter::new(&limit(1.0, 1, RateLimitKey::Identity), Instant::now());
        let headers = HeaderMap::new();
        let of = |identity: Option<&[u8]>, ip: [u8; 4]| {
            l.key_of(&KeyParts {
                ip: IpAddr::V4(Ipv4Addr::from(ip)),
                identity,
                headers: &headers,
            })
        };
        let alice = Some(&b"spiffe://example/alice"[..]);
        assert_eq!(of(alice, [10, 0, 0, 1]), of(alice, [10, 0, 0, 2]));
        assert_ne!(of(alice, [10, 0, 0, 1]), of(Some(b"bob"), [10, 0, 0, 1]));
        assert_eq!(
            of(None, [10, 0, 0, 1]),
            of(None, [10, 0, 0, 2]),
            "anonymous"
        );
    }

    #[test]
    fn idle_buckets_expire() {
        let t0 = Instant::now();
        let l = RateLimiter::new(&limit(10.0, 5, RateLimitKey::SourceIp), t0);
        for k in 0..1000u64 {
            l.check(k << 20, t0).unwrap();
        }
        for _ in 0..4 {
            l.check(7 << 20, t0).unwrap();
        }
        assert_eq!(l.keys(t0 + 99 * MS), 1000);
        // One token taken: full again one interval later. Key 7 took all 5: full after 500 ms.
        assert_eq!(l.keys(t0 + 100 * MS), 1);
        assert_eq!(l.keys(t0 + 499 * MS), 1);
        assert_eq!(l.keys(t0 + 500 * MS), 0);
        // Expired buckets also go on the request path, once a second per shard.
        for k in 0..1000u64 {
            l.check(k << 20, t0 + 600 * MS).unwrap();
        }
        let shard = (7u64 << 20 >> 32) as usize & (SHARDS - 1);
        l.check(0, t0 + 2 * Duration::from_secs(1)).unwrap();
        assert_eq!(lock(&l.shards[shard]).buckets.len(), 1, "swept on touch");
    }

    #[test]
    fn the_key_cap_holds_and_spares_the_clients_being_limited() {
        let t0 = Instant::now();
        // One a minute, so nothing expires during the flood.
        let cap = 64 * SHARDS;
        let l = RateLimiter::with_cap(&limit(1.0 / 60.0, 3, RateLimitKey::SourceIp), cap, t0);
        // An established client, held back: its bucket is empty.
        let heavy = 0xdead_beef_u64;
        for _ in 0..3 {
            l.check(heavy, t0).unwrap();
        }
        assert!(l.check(heavy, t0).is_err());
        // A flood of 100 times the cap in distinct keys, one request each, every one admitted.
        let mut x = 1u64;
        for i in 0..100 * cap as u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let at = t0 + Duration::from_micros(i);
            assert_eq!(l.check(x, at), Ok(()), "a new key gets its own bucket");
        }
        let now = t0 + Duration::from_secs(1);
        let keys = l.keys(now);
        assert!(keys <= cap, "{keys} keys, cap {cap}");
        // Each shard drops to 7/8 of its share when full, then fills up again.
        assert!(keys >= cap * 3 / 4, "{keys} keys: the cap is not a reset");
        for s in l.shards.iter() {
            assert!(lock(s).buckets.len() <= cap / SHARDS);
        }
        assert!(
            l.check(heavy, now).is_err(),
            "the flood did not reset the bucket of a client being limited"
        );
    }
}
