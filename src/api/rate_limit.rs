//! Per-key token buckets for the write endpoints.
//!
//! Hand-written because the headers need the whole tokens left and the wait
//! until the next one, and keys are a fixed set known when the config is
//! loaded (one bucket per configured key, found by the key's digest, so an
//! attacker cannot grow the map). A SIGHUP reload builds a new limiter that
//! shares the buckets of the keys that stayed with the old one — the same
//! bucket, not a copy, so requests still checked against the old limiter
//! during the swap spend from it too — and a reload is no way to reset a
//! client's budget. The bucket is a pure function of time, which
//! the tests pass in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::queue::lock;

/// A key's SHA-256: what identifies a caller without the secret.
pub type KeyDigest = [u8; 32];

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The outcome of one request against its bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Allowed; whole tokens left afterwards.
    Allow { remaining: u64 },
    /// Refused; whole seconds (≥ 1) until a token is there.
    Deny { retry_after_s: u64 },
}

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<KeyDigest, Arc<Mutex<Bucket>>>,
}

impl RateLimiter {
    pub fn new<'a>(
        keys: impl IntoIterator<Item = &'a KeyDigest>,
        requests_per_second: f64,
        burst: u64,
        now: Instant,
    ) -> RateLimiter {
        let burst = burst as f64;
        RateLimiter {
            rate: requests_per_second,
            burst,
            buckets: keys
                .into_iter()
                .map(|k| {
                    let full = Bucket {
                        tokens: burst,
                        last: now,
                    };
                    (*k, Arc::new(Mutex::new(full)))
                })
                .collect(),
        }
    }

    /// Shares the buckets of keys `old` also had. The tokens in them are
    /// refilled at this limiter's rate from now on, and capped at its burst
    /// at the next check.
    pub fn carry_over(&mut self, old: &RateLimiter) {
        for (key, bucket) in self.buckets.iter_mut() {
            if let Some(shared) = old.buckets.get(key) {
                *bucket = shared.clone();
            }
        }
    }

    fn tokens_at(&self, b: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        (b.tokens + elapsed * self.rate).min(self.burst)
    }

    /// `X-RateLimit-Limit`.
    pub fn limit(&self) -> u64 {
        self.burst as u64
    }

    /// `None` for a key this limiter does not know (removed by a reload
    /// since the caller was identified).
    pub fn check(&self, key: &KeyDigest, now: Instant) -> Option<Decision> {
        let bucket = self.buckets.get(key)?;
        let mut b = lock(bucket);
        b.tokens = self.tokens_at(&b, now);
        b.last = now.max(b.last);
        Some(if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Decision::Allow {
                remaining: b.tokens.floor() as u64,
            }
        } else {
            let wait = Duration::from_secs_f64((1.0 - b.tokens) / self.rate);
            Decision::Deny {
                retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
            }
        })
    }

    /// Whole tokens a key has now, without taking one.
    pub fn remaining(&self, key: &KeyDigest, now: Instant) -> u64 {
        self.buckets
            .get(key)
            .map_or(0, |b| self.tokens_at(&lock(b), now).floor() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: KeyDigest = [1; 32];
    const B: KeyDigest = [2; 32];

    #[test]
    fn burst_is_spent_then_refused_with_retry_after() {
        let t0 = Instant::now();
        let rl = RateLimiter::new(&[A], 1.0, 3, t0);
        assert_eq!(rl.check(&A, t0), Some(Decision::Allow { remaining: 2 }));
        assert_eq!(rl.check(&A, t0), Some(Decision::Allow { remaining: 1 }));
        assert_eq!(rl.check(&A, t0), Some(Decision::Allow { remaining: 0 }));
        assert_eq!(rl.check(&A, t0), Some(Decision::Deny { retry_after_s: 1 }));
    }

    #[test]
    fn tokens_refill_at_the_configured_rate() {
        let t0 = Instant::now();
        let rl = RateLimiter::new(&[A], 2.0, 2, t0);
        rl.check(&A, t0);
        rl.check(&A, t0);
        assert!(matches!(rl.check(&A, t0), Some(Decision::Deny { .. })));
        assert_eq!(
            rl.check(&A, t0 + Duration::from_millis(500)),
            Some(Decision::Allow { remaining: 0 })
        );
        assert_eq!(rl.remaining(&A, t0 + Duration::from_secs(10)), 2);
    }

    #[test]
    fn slow_rates_give_whole_seconds_to_wait() {
        let t0 = Instant::now();
        let rl = RateLimiter::new(&[A], 0.1, 1, t0);
        rl.check(&A, t0);
        assert_eq!(rl.check(&A, t0), Some(Decision::Deny { retry_after_s: 10 }));
    }

    #[test]
    fn keys_have_separate_buckets_and_unknown_keys_none() {
        let t0 = Instant::now();
        let rl = RateLimiter::new(&[A, B], 1.0, 1, t0);
        assert!(matches!(rl.check(&A, t0), Some(Decision::Allow { .. })));
        assert!(matches!(rl.check(&B, t0), Some(Decision::Allow { .. })));
        assert!(matches!(rl.check(&A, t0), Some(Decision::Deny { .. })));
        assert_eq!(rl.check(&[3; 32], t0), None);
    }

    #[test]
    fn a_reload_keeps_the_spent_budget_of_keys_that_stayed() {
        let t0 = Instant::now();
        let old = RateLimiter::new(&[A, B], 1.0, 5, t0);
        for _ in 0..5 {
            old.check(&A, t0);
        }
        let mut new = RateLimiter::new(&[A], 1.0, 10, t0);
        new.carry_over(&old);
        assert!(matches!(new.check(&A, t0), Some(Decision::Deny { .. })));
        // A lower burst caps what was carried over.
        let mut fresh = RateLimiter::new(&[B], 1.0, 2, t0);
        fresh.carry_over(&old);
        assert_eq!(fresh.remaining(&B, t0), 2);
        // The same bucket: spending through the old limiter is seen by the new.
        let mut shared = RateLimiter::new(&[B], 1.0, 5, t0);
        shared.carry_over(&old);
        for _ in 0..5 {
            old.check(&B, t0);
        }
        assert!(matches!(shared.check(&B, t0), Some(Decision::Deny { .. })));
    }
}
