//! Retry delays after failed sends: exponential, capped, optionally jittered.
//!
//! A thin owner of `backoff::ExponentialBackoff` configured from SPEC §6. It
//! never gives up (`max_elapsed_time: None`): the queue holds the data, so
//! the forwarder retries for as long as the outage lasts.

use std::time::Duration;

use backoff::backoff::Backoff as _;
use backoff::ExponentialBackoff;

use crate::config::ForwarderConfig;

/// ±50% around each interval when jitter is on, so a fleet of edges that lost
/// Kafka together does not retry together.
const JITTER_FACTOR: f64 = 0.5;

#[derive(Debug)]
pub struct Backoff {
    inner: ExponentialBackoff,
}

impl Backoff {
    pub fn new(cfg: &ForwarderConfig) -> Backoff {
        let initial = Duration::from_millis(cfg.initial_backoff_ms);
        let mut inner = ExponentialBackoff {
            current_interval: initial,
            initial_interval: initial,
            randomization_factor: if cfg.jitter { JITTER_FACTOR } else { 0.0 },
            multiplier: cfg.multiplier,
            max_interval: Duration::from_millis(cfg.max_backoff_ms),
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        };
        inner.reset();
        Backoff { inner }
    }

    /// The delay before the next attempt; grows with each call.
    pub fn next_delay(&mut self) -> Duration {
        // `None` only comes with a `max_elapsed_time`, which is never set.
        self.inner.next_backoff().unwrap_or(self.inner.max_interval)
    }

    /// After a success the next failure starts from the initial delay again.
    pub fn reset(&mut self) {
        self.inner.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(jitter: bool) -> ForwarderConfig {
        ForwarderConfig {
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
            multiplier: 2.0,
            jitter,
            ..ForwarderConfig::default()
        }
    }

    #[test]
    fn delays_double_from_initial_up_to_the_cap() {
        let mut b = Backoff::new(&cfg(false));
        let got: Vec<u64> = (0..7).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000, 1000]);
    }

    #[test]
    fn reset_starts_again_from_the_initial_delay() {
        let mut b = Backoff::new(&cfg(false));
        b.next_delay();
        b.next_delay();
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_within_half_of_the_interval() {
        let mut b = Backoff::new(&cfg(true));
        let expected = [100.0, 200.0, 400.0, 800.0, 1000.0, 1000.0];
        for want in expected {
            let got = b.next_delay().as_secs_f64() * 1000.0;
            assert!(
                got >= want * 0.5 - 1.0 && got <= want * 1.5 + 1.0,
                "{got} vs {want}"
            );
        }
    }

    #[test]
    fn never_gives_up() {
        let mut b = Backoff::new(&cfg(false));
        for _ in 0..10_000 {
            assert!(b.next_delay() <= Duration::from_millis(1_000));
        }
    }
}
