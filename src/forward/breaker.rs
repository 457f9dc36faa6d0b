//! The circuit breaker, as a pure state machine: time is an argument.
//!
//! ```text
//!            failure (count < threshold)
//!            ┌──────┐
//!            ▼      │
//!  ──► CLOSED ──────┘── failure (count ≥ threshold) ──► OPEN(until)
//!        ▲                                               │ now ≥ until:
//!        │ success                                       ▼ one probe
//!        └──────────────────── HALF_OPEN ◄───────────────┘
//!                                  │ failure
//!                                  └──────────► OPEN(now + open_for)
//! ```

use std::time::{Duration, Instant};

/// What `/stats` shows as `forwarder.circuit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    Closed,
    Open,
    HalfOpen,
}

impl Circuit {
    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Open => "open",
            Circuit::HalfOpen => "half_open",
        }
    }

    /// Prometheus `circuit_state`: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> u8 {
        match self {
            Circuit::Closed => 0,
            Circuit::HalfOpen => 1,
            Circuit::Open => 2,
        }
    }
}

/// Whether the forwarder may send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    Send,
    WaitUntil(Instant),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    state: State,
    consecutive_failures: u32,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            open_for,
            state: State::Closed,
            consecutive_failures: 0,
        }
    }

    /// New settings from a reload. The state is kept: a circuit open now
    /// stays open until its current period ends; the new `open_for` applies
    /// from the next time it opens, the new threshold to the next failure.
    pub fn reconfigure(&mut self, threshold: u32, open_for: Duration) {
        self.threshold = threshold.max(1);
        self.open_for = open_for;
    }

    /// Asks to send. An open circuit whose time is up turns half-open and
    /// lets exactly this one probe through.
    pub fn permit(&mut self, now: Instant) -> Permit {
        match self.state {
            State::Closed | State::HalfOpen => Permit::Send,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen;
                Permit::Send
            }
            State::Open { until } => Permit::WaitUntil(until),
        }
    }

    pub fn on_success(&mut self) {
        self.state = State::Closed;
        self.consecutive_failures = 0;
    }

    pub fn on_failure(&mut self, now: Instant) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let trips = match self.state {
            State::HalfOpen => true,
            State::Closed => self.consecutive_failures >= self.threshold,
            State::Open { .. } => false,
        };
        if trips {
            self.state = State::Open {
                until: now + self.open_for,
            };
        }
    }

    pub fn circuit(&self) -> Circuit {
        match self.state {
            State::Closed => Circuit::Closed,
            State::Open { .. } => Circuit::Open,
            State::HalfOpen => Circuit::HalfOpen,
        }
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: Duration = Duration::from_secs(10);

    fn tripped(t0: Instant) -> Breaker {
        let mut b = Breaker::new(5, OPEN);
        for _ in 0..5 {
            b.on_failure(t0);
        }
        b
    }

    #[test]
    fn stays_closed_below_the_threshold() {
        let t0 = Instant::now();
        let mut b = Breaker::new(5, OPEN);
        for _ in 0..4 {
            b.on_failure(t0);
        }
        assert_eq!(b.circuit(), Circuit::Closed);
        assert_eq!(b.permit(t0), Permit::Send);
        assert_eq!(b.consecutive_failures(), 4);
    }

    #[test]
    fn circuit_opens_after_five_consecutive_failures() {
        let t0 = Instant::now();
        let mut b = tripped(t0);
        assert_eq!(b.circuit(), Circuit::Open);
        assert_eq!(
            b.permit(t0 + Duration::from_secs(3)),
            Permit::WaitUntil(t0 + OPEN)
        );
    }

    #[test]
    fn a_success_in_between_resets_the_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(5, OPEN);
        for _ in 0..4 {
            b.on_failure(t0);
        }
        b.on_success();
        b.on_failure(t0);
        assert_eq!(b.circuit(), Circuit::Closed);
        assert_eq!(b.consecutive_failures(), 1);
    }

    #[test]
    fn open_circuit_lets_one_probe_through_when_its_time_is_up() {
        let t0 = Instant::now();
        let mut b = tripped(t0);
        assert_eq!(b.permit(t0 + OPEN), Permit::Send);
        assert_eq!(b.circuit(), Circuit::HalfOpen);
    }

    #[test]
    fn successful_probe_closes_the_circuit() {
        let t0 = Instant::now();
        let mut b = tripped(t0);
        b.permit(t0 + OPEN);
        b.on_success();
        assert_eq!(b.circuit(), Circuit::Closed);
        assert_eq!(b.consecutive_failures(), 0);
        assert_eq!(b.permit(t0 + OPEN), Permit::Send);
    }

    #[test]
    fn failed_probe_opens_the_circuit_again_for_a_full_period() {
        let t0 = Instant::now();
        let mut b = tripped(t0);
        let probe_at = t0 + OPEN + Duration::from_secs(1);
        b.permit(probe_at);
        b.on_failure(probe_at);
        assert_eq!(b.circuit(), Circuit::Open);
        assert_eq!(b.permit(probe_at), Permit::WaitUntil(probe_at + OPEN));
    }

    #[test]
    fn failures_while_open_do_not_extend_the_period() {
        let t0 = Instant::now();
        let mut b = tripped(t0);
        b.on_failure(t0 + Duration::from_secs(5));
        assert_eq!(
            b.permit(t0 + Duration::from_secs(5)),
            Permit::WaitUntil(t0 + OPEN)
        );
    }
}
