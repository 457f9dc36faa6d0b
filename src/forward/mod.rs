//! The forwarder: drains the queue, head first, into the sink.
//!
//! ```text
//!        ┌──────────────────────────────────────────────────────────┐
//!        ▼                                                          │
//!   ask breaker ──WaitUntil(t)──► sleep until t (or shutdown) ──────┤
//!        │ Send                                                     │
//!        ▼                                                          │
//!   head of queue? ──empty──► wait for an append (or shutdown) ─────┤
//!        │ batch                                                    │
//!        ▼                                                          │
//!   sink.send(batch) ──ok──► ack (remove from queue), reset backoff,│
//!        │                   close breaker ─────────────────────────┤
//!        ├──permanent error──► move batch to dead letters ──────────┤
//!        └──retriable error──► breaker.on_failure, sleep backoff ───┘
//! ```
//!
//! A batch leaves the queue only after the sink confirmed every entry of it;
//! a failed batch stays at the head and is retried — with the same
//! `ingest-id`s — until it is delivered, however long the outage lasts.

pub mod backoff;
pub mod breaker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use self::backoff::Backoff;
use self::breaker::{Breaker, Permit};
use crate::config::ForwarderConfig;
use crate::queue::{lock, Queue};
use crate::sink::{Sink, SinkError};
use crate::stats::Stats;

pub struct Forwarder {
    queue: Queue,
    sink: Arc<dyn Sink>,
    stats: Arc<Stats>,
    breaker: Breaker,
    backoff: Backoff,
}

/// What one step of the loop decided.
enum Step {
    Continue,
    WaitUntil(Instant),
    Idle,
}

impl Forwarder {
    pub fn new(
        cfg: &ForwarderConfig,
        queue: Queue,
        sink: Arc<dyn Sink>,
        stats: Arc<Stats>,
    ) -> Self {
        Forwarder {
            queue,
            sink,
            stats,
            breaker: Breaker::new(
                cfg.breaker_failure_threshold,
                Duration::from_millis(cfg.breaker_open_ms),
            ),
            backoff: Backoff::new(cfg),
        }
    }

    /// Runs until `shutdown` turns true. A send in progress is allowed to
    /// finish (the mock sink is bounded by its latency); what is left stays
    /// queued for the next start.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let queue = self.queue.clone();
        while !*shutdown.borrow() {
            let appended = queue.appended().notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            match self.step().await {
                Step::Continue => {}
                Step::WaitUntil(t) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(t.into()) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Step::Idle => {
                    tokio::select! {
                        _ = appended => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
        tracing::info!("forwarder stopped");
    }

    async fn step(&mut self) -> Step {
        if let Permit::WaitUntil(t) = self.breaker.permit(Instant::now()) {
            self.publish(Some(t));
            return Step::WaitUntil(t);
        }
        self.publish(None);
        let Some((seq, _)) = self.queue.next_after(None) else {
            return Step::Idle;
        };
        let stored = match self.queue.read(seq) {
            Ok(Some(s)) => s,
            // Gone meanwhile (evicted) or moved to the dead letters.
            Ok(None) | Err(_) => return Step::Continue,
        };
        let n = stored.batch.len() as u64;
        let kind = stored.batch.kind();
        match self.sink.send(&stored, self.queue.node_id()).await {
            Ok(()) => {
                if let Err(e) = self.queue.ack(seq) {
                    // Delivered but not removed: it will be sent again with
                    // the same ingest-ids. Count it as a failure so it shows.
                    tracing::error!(seq, error = %e, "cannot remove delivered batch");
                }
                self.stats.sent(kind, n);
                self.on_success();
                Step::Continue
            }
            Err(SinkError::Permanent(reason)) => {
                self.queue.dead_letter(seq, &reason);
                self.on_success();
                Step::Continue
            }
            Err(err) => Step::WaitUntil(self.on_failure(err)),
        }
    }

    fn on_success(&mut self) {
        let was_failing = self.breaker.consecutive_failures() > 0;
        self.breaker.on_success();
        self.backoff.reset();
        let mut s = lock(&self.stats.forwarder);
        s.consecutive_failures = 0;
        s.circuit = self.breaker.circuit();
        s.next_attempt_at = None;
        s.last_success_at = Some(crate::model::now_rfc3339());
        if was_failing {
            tracing::info!("sink recovered; forwarding again");
        }
    }

    /// Records a failed send; returns when to try again.
    fn on_failure(&mut self, err: SinkError) -> Instant {
        let now = Instant::now();
        let before = self.breaker.circuit();
        self.breaker.on_failure(now);
        self.stats
            .forward_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let retry_at = now + self.backoff.next_delay();
        let text = err.to_string();
        let mut s = lock(&self.stats.forwarder);
        // Log once per change of cause or circuit state, not per attempt.
        if s.last_error.as_deref() != Some(text.as_str()) || before != self.breaker.circuit() {
            tracing::warn!(
                error = %text,
                circuit = self.breaker.circuit().as_str(),
                failures = self.breaker.consecutive_failures(),
                "sink send failed; batch stays queued"
            );
        }
        s.last_error = Some(text);
        s.consecutive_failures = self.breaker.consecutive_failures();
        s.circuit = self.breaker.circuit();
        s.next_attempt_at = Some(retry_at);
        retry_at
    }

    fn publish(&self, waiting_until: Option<Instant>) {
        let mut s = lock(&self.stats.forwarder);
        s.circuit = self.breaker.circuit();
        if waiting_until.is_some() {
            s.next_attempt_at = waiting_until;
        }
    }
}
