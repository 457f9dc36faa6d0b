//! Per-key token buckets for `POST /logs` and `POST /metrics`.
//!
//! Hand-written because the headers need the whole tokens left and the wait
//! until the next one, and keys are a fixed set known at start-up (one bucket
//! per configured key, so an attacker cannot grow the map). The bucket is a
//! pure function of time, which the tests pass in.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::queue::lock;

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
    buckets: Vec<Mutex<Bucket>>,
}

impl RateLimiter {
    pub fn new(keys: usize, requests_per_second: f64, burst: u64, now: Instant) -> RateLimiter {
        let burst = burst as f64;
        RateLimiter {
            rate: requests_per_second,
            burst,
            buckets: (0..keys)
                .map(|_| {
                    Mutex::new(Bucket {
                        tokens: burst,
                        last: now,
                    })
                })
                .collect(),
        }
    }

    /// `X-RateLimit-Limit`.
    pub fn limit(&self) -> u64 {
        self.burst as u64
    }

    pub fn check(&self, key: usize, now: Instant) -> Decision {
        let Some(bucket) = self.buckets.get(key) else {
            return Decision::Deny { retry_after_s: 1 };
        };
        let mut b = lock(bucket);
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now.max(b.last);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Decision::Allow {
                remaining: b.tokens.floor() as u64,
            }
        } else {
            let wait = Duration::from_secs_f64((1.0 - b.tokens) / self.rate);
            Decision::Deny {
                retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
            }
        }
    }

    /// Whole tokens a key has now, without taking one.
    pub fn remaining(&self, key: usize, now: Instant) -> u64 {
        let Some(bucket) = self.buckets.get(key) else {
            return 0;
        };
        let b = lock(bucket);
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        (b.tokens + elapsed * self.rate).min(self.burst).floor() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_is_spent_then_refused_with_retry_after() {
        let t0 = Instant::now();
        let rl = RateLimiter::new(1, 1.0, 3, t0);
        assert_eq!(rl.check(0, t0), Decision::Allow { remaining: 2 });
        assert_eq!(rl.check(0, t0), Decision::Allow { remaining: 1 });
        assert_eq!(rl.check(0, t0), Decision::Allow { remaining: 0 });
        assert_eq!(rl.check(0, t0), Decision::Deny { retry_after_s: 1 });
    }

    #[test]
    fn tokens_refill_at_the_configured_rate() {
        let t0 = Instant::now();
        let rl = RateLimiter::new(1, 2.0, 2, t0);
        rl.check(0, t0);
        rl.check(0, t0);
        assert!(matches!(rl.check(0, t0), Decision::Deny { .. }));
        assert_eq!(
            rl.check(0, t0 + Duration::from_millis(500)),
            Decision::Allow { remaining: 0 }
        );
        assert_eq!(rl.remaining(0, t0 + Duration::from_secs(10)), 2);
    }

    #[test]
    fn slow_rates_give_whole_seconds_to_wait() {
        let t0 = Instant::now();
        let rl = RateLimiter::new(1, 0.1, 1, t0);
        rl.check(0, t0);
        assert_eq!(rl.check(0, t0), Decision::Deny { retry_after_s: 10 });
    }

    #[test]
    fn keys_have_separate_buckets() {
        let t0 = Instant::now();
        let rl = RateLimiter::new(2, 1.0, 1, t0);
        assert!(matches!(rl.check(0, t0), Decision::Allow { .. }));
        assert!(matches!(rl.check(1, t0), Decision::Allow { .. }));
        assert!(matches!(rl.check(0, t0), Decision::Deny { .. }));
    }
}
