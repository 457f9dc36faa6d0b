//! The forwarder: drains the queue, in order, into the sink.
//!
//! ```text
//!             ┌─────────────────────────────────────────────────────────┐
//!             ▼                                                         │
//!   breaker permits? ──yes──► submit next batches, in queue order, until│
//!             │               the window is full (a half-open circuit   │
//!             │               submits one probe)                        │
//!             ▼                                                         │
//!   window empty? ──yes──► wait for an append / the breaker / shutdown ─┤
//!             │ no                                                      │
//!             ▼                                                         │
//!   await the OLDEST delivery, at most stall_after or the backoff delay │
//!     ├─ ok ─────────────► ack (remove from queue), close breaker ──────┤
//!     ├─ ok, some refused ► move only the refused entries to the dead   │
//!     │                    letters, remove the batch ───────────────────┤
//!     ├─ permanent error ─► move that batch to the dead letters ────────┤
//!     ├─ retriable error ─► failure: drop the window (its batches stay  │
//!     │                    queued), back off, resubmit from the head ───┤
//!     └─ no answer yet ───► failure (an outage): count it, keep waiting;│
//!                          the sink retries in order by itself ─────────┘
//! ```
//!
//! Batches are acknowledged strictly in queue order, and only after the sink
//! confirmed every entry; a batch that failed stays at the head and is
//! submitted again with the same `ingest-id`s, however long the outage.

pub mod backoff;
pub mod breaker;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::watch;

use self::backoff::Backoff;
use self::breaker::{Breaker, Circuit, Permit};
use crate::config::ForwarderConfig;
use crate::model::Kind;
use crate::queue::{lock, Queue, QueueError, Refused};
use crate::sink::{message, Confirmed, Delivery, Rendered, Sink, SinkError};
use crate::stats::Stats;

/// How long shutdown waits for deliveries already submitted; what does not
/// finish stays queued and is sent again after the restart.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Failing this long (no success) while the sink's client reports no error
/// at all is taken as a wedged client and the sink is reset; resets are at
/// least this far apart. NOTE: idempotent
/// librdkafka producers are known to get stuck silently (librdkafka #3009,
/// confluent-kafka-python #1335: an InitProducerId retry loop); with no
/// message timeout nothing else would ever surface it.
const RESET_AFTER_SILENT_STALL: Duration = Duration::from_secs(30);
/// How soon a batch the disk failed to read is tried again.
const READ_RETRY: Duration = Duration::from_secs(1);
/// Batches read from disk in one blocking-pool hand-off.
const READ_AHEAD: usize = 32;
/// Confirmed batches removed from disk in one blocking-pool hand-off.
const ACK_RUN: usize = 64;

/// One batch read for sending: `Ok(None)` if it is gone (evicted, or
/// undecodable and dead-lettered).
type ReadResult = Result<Option<Rendered>, QueueError>;

/// A batch handed to the sink and not yet confirmed.
struct InFlight {
    seq: u64,
    kind: Kind,
    entries: u64,
    delivery: Delivery,
}

pub struct Forwarder {
    queue: Queue,
    sink: Arc<dyn Sink>,
    stats: Arc<Stats>,
    breaker: Breaker,
    backoff: Backoff,
    window: VecDeque<InFlight>,
    /// The last submitted sequence; `None` restarts from the queue head.
    cursor: Option<u64>,
    /// After a retriable error: no submission before this instant.
    resume_at: Option<Instant>,
    /// Since when sends have been failing (or stalling) without a success:
    /// the watchdog's clock. NOTE: a per-stall clock never fired in CI, where
    /// each stall ended in a delivery error that restarted it.
    failing_since: Option<Instant>,
    /// The last failure cause logged, digits removed (librdkafka's texts carry
    /// changing counts): a new cause is a state change worth a log line.
    logged_cause: String,
    /// Removing delivered batches from disk is failing (logged once).
    ack_failing: bool,
    /// When the sink was last reset: resets are at least
    /// `RESET_AFTER_SILENT_STALL` apart, whatever asked for them.
    last_reset: Option<Instant>,
    /// Backoff and breaker settings from SIGHUP reloads, if they can change.
    settings: Option<watch::Receiver<ForwarderConfig>>,
}

/// What the head of the window did while we waited.
enum HeadOutcome {
    Done(Result<Confirmed, SinkError>),
    Stalled,
    Shutdown,
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
            window: VecDeque::new(),
            cursor: None,
            resume_at: None,
            failing_since: None,
            logged_cause: String::new(),
            ack_failing: false,
            last_reset: None,
            settings: None,
        }
    }

    /// Takes new backoff and breaker settings from `settings` whenever a
    /// reload sends them (the sink kind is fixed for the process's life).
    pub fn with_settings(mut self, settings: watch::Receiver<ForwarderConfig>) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Applies settings a reload sent since the last look. The backoff
    /// starts again from the new initial delay; the breaker keeps its state.
    fn take_settings(&mut self) {
        let Some(rx) = self.settings.as_mut() else {
            return;
        };
        if !rx.has_changed().unwrap_or(false) {
            return;
        }
        let cfg = rx.borrow_and_update().clone();
        self.backoff = Backoff::new(&cfg);
        self.breaker.reconfigure(
            cfg.breaker_failure_threshold,
            Duration::from_millis(cfg.breaker_open_ms),
        );
        tracing::debug!("forwarder: backoff and breaker settings reloaded");
    }

    /// Resolves when a reload sent new settings (never without a source).
    async fn settings_changed(settings: &mut Option<watch::Receiver<ForwarderConfig>>) {
        let Some(rx) = settings else {
            return std::future::pending().await;
        };
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Runs until `shutdown` turns true, then gives submitted deliveries a
    /// bounded time to finish and leaves everything else queued.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let queue = self.queue.clone();
        let mut stall_wait = self.sink.stall_after();
        while !*shutdown.borrow() {
            self.take_settings();
            let appended = queue.appended().notified();
            tokio::pin!(appended);
            appended.as_mut().enable();

            // NOTE: a submit can wait indefinitely (librdkafka's local queue
            // full while every broker is down); shutdown must not wait with
            // it. What the dropped submit had handed over is not acknowledged,
            // so it stays queued and is sent again after the restart.
            let wait_until = tokio::select! {
                w = self.fill() => w,
                _ = shutdown.changed() => break,
            };
            if self.window.is_empty() {
                let mut settings = self.settings.clone();
                tokio::select! {
                    _ = appended, if wait_until.is_none() => {}
                    _ = sleep_until(wait_until) => {}
                    _ = shutdown.changed() => {}
                    // A reload ends a wait the old settings set: the breaker
                    // and backoff are looked at again.
                    _ = Self::settings_changed(&mut settings) => {}
                }
                continue;
            }
            match self.await_head(stall_wait, &mut shutdown).await {
                HeadOutcome::Done(result) => {
                    let head = self.window.pop_front().expect("window has a head");
                    self.finish(head, result).await;
                    stall_wait = self.sink.stall_after();
                }
                HeadOutcome::Stalled => {
                    let msg = format!(
                        "no delivery confirmation for {:.0} s{}",
                        stall_wait.as_secs_f64(),
                        self.sink
                            .health()
                            .map_or(String::new(), |h| format!(" (sink reports: {h})"))
                    );
                    let delay = self.on_failure(SinkError::Retriable(msg));
                    stall_wait = delay.max(self.sink.stall_after());
                    self.reset_if_wedged();
                }
                HeadOutcome::Shutdown => break,
            }
        }
        self.drain_on_shutdown().await;
        tracing::info!("forwarder stopped");
    }

    /// Submits batches while the breaker and the window allow; returns when
    /// to look again if nothing may be submitted now.
    async fn fill(&mut self) -> Option<Instant> {
        let now = now();
        if let Some(t) = self.resume_at {
            if now < t {
                return Some(t);
            }
            self.resume_at = None;
        }
        let before = self.breaker.circuit();
        let permit = self.breaker.permit(now);
        self.log_circuit(before, None);
        let probe_only = match permit {
            Permit::WaitUntil(t) => {
                self.publish_wait(Some(t));
                return Some(t);
            }
            Permit::Send => self.breaker.circuit() == Circuit::HalfOpen,
        };
        let mut entries: usize = self.window.iter().map(|f| f.entries as usize).sum();
        loop {
            let room = if probe_only {
                usize::from(self.window.is_empty())
            } else {
                self.sink.max_in_flight().saturating_sub(self.window.len())
            };
            // The next batches the window has room for, in queue order: up
            // to the entry budget plus one batch, and a second batch whenever
            // the two fit in twice the budget. NOTE: with one batch in flight
            // the next is read only after a full round trip; 10,000-entry
            // batches drained ~25% slower that way.
            let budget = self.sink.max_in_flight_entries();
            let mut seqs = Vec::new();
            let (mut after, mut planned, mut batches) = (self.cursor, entries, self.window.len());
            while seqs.len() < room.min(READ_AHEAD) {
                let Some((seq, index)) = self.queue.next_after(after) else {
                    break;
                };
                let n = index.entries as usize;
                let pair = batches == 1 && planned.saturating_add(n) <= budget.saturating_mul(2);
                if planned >= budget && !pair {
                    break;
                }
                seqs.push(seq);
                after = Some(seq);
                planned += n;
                batches += 1;
            }
            if seqs.is_empty() {
                break;
            }
            let reads = off_reactor(&self.queue, move |q| Ok(read_in_order(q, seqs))).await;
            let reads = match reads {
                Ok(reads) => reads,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read queued batches; retrying");
                    self.resume_at = Some(self::now() + READ_RETRY);
                    return self.resume_at;
                }
            };
            for (seq, read) in reads {
                let rendered = match read {
                    Ok(Some(s)) => s,
                    // Gone meanwhile (evicted), or undecodable and
                    // dead-lettered. An undecodable batch whose move failed
                    // is an `Err` below.
                    Ok(None) => {
                        self.cursor = Some(seq);
                        continue;
                    }
                    // The disk failed to read it (or to move it to the dead
                    // letters): still queued, look again soon (the cursor
                    // stays before it, so nothing after it is sent first).
                    Err(e) => {
                        tracing::warn!(seq, error = %e, "cannot read queued batch; retrying");
                        self.resume_at = Some(self::now() + READ_RETRY);
                        return self.resume_at;
                    }
                };
                self.cursor = Some(seq);
                let (kind, n) = (rendered.kind(), rendered.len() as u64);
                match self.sink.submit(&rendered).await {
                    Ok(delivery) => {
                        entries += n as usize;
                        self.window.push_back(InFlight {
                            seq,
                            kind,
                            entries: n,
                            delivery,
                        });
                    }
                    Err(err) => {
                        let failed: Delivery = Box::pin(async move { Err(err) });
                        self.window.push_back(InFlight {
                            seq,
                            kind,
                            entries: n,
                            delivery: failed,
                        });
                        return None;
                    }
                }
            }
        }
        None
    }

    async fn await_head(
        &mut self,
        wait: Duration,
        shutdown: &mut watch::Receiver<bool>,
    ) -> HeadOutcome {
        let head = self.window.front_mut().expect("window has a head");
        tokio::select! {
            r = &mut head.delivery => HeadOutcome::Done(r),
            _ = tokio::time::sleep(wait) => HeadOutcome::Stalled,
            _ = shutdown.changed() => HeadOutcome::Shutdown,
        }
    }

    /// Acknowledges `head`, which the sink confirmed whole, together with
    /// the batches behind it that are confirmed whole too: one removal from
    /// disk for all of them. NOTE: a delivery report covers thousands of
    /// messages, so confirmations arrive in runs; one blocking-pool hand-off
    /// per batch was a wake-up per batch. A later batch that ended any other
    /// way keeps its outcome at the head, for `finish`.
    async fn ack_confirmed(&mut self, head: InFlight) {
        let mut done = vec![head];
        while done.len() < ACK_RUN {
            let Some(next) = self.window.front_mut() else {
                break;
            };
            match (&mut next.delivery).now_or_never() {
                None => break,
                Some(Ok(c)) if c.refused.is_empty() => {
                    done.push(self.window.pop_front().expect("window has a head"));
                }
                Some(other) => {
                    next.delivery = Box::pin(std::future::ready(other));
                    break;
                }
            }
        }
        let seqs: Vec<u64> = done.iter().map(|f| f.seq).collect();
        let first = seqs[0];
        match off_reactor(&self.queue, move |q| q.ack_all(&seqs)).await {
            Ok(()) => self.ack_failing = false,
            // The queue forgets them anyway and removes them from disk once
            // the disk recovers; after a crash they are sent again with the
            // same ingest-ids. Logged once per episode.
            Err(e) if !self.ack_failing => {
                self.ack_failing = true;
                tracing::error!(seq = first, error = %e, "cannot remove delivered batches from disk");
            }
            Err(_) => {}
        }
        for f in &done {
            self.stats.sent(f.kind, f.entries);
        }
        self.on_success();
    }

    async fn finish(&mut self, head: InFlight, result: Result<Confirmed, SinkError>) {
        match result {
            Ok(c) if c.refused.is_empty() => self.ack_confirmed(head).await,
            // Kafka took every entry but these: only they go to the dead
            // letters, under their ingest-ids, and the batch leaves the queue.
            Ok(c) => {
                let seq = head.seq;
                let refused = c.refused.len() as u64;
                let moved = off_reactor(&self.queue, move |q| {
                    q.dead_letter_entries(seq, Refused::Entries(&c.refused))
                })
                .await;
                match moved {
                    Ok(_) => {
                        self.stats
                            .sent(head.kind, head.entries.saturating_sub(refused));
                        self.on_success();
                    }
                    Err(e) => self.retry_from_head(SinkError::Retriable(format!(
                        "cannot move refused entries of batch {seq} to dead letters ({e}); retrying in order"
                    ))),
                }
            }
            Err(SinkError::Permanent(reason)) => match off_reactor(&self.queue, {
                let (seq, reason) = (head.seq, reason.clone());
                move |q| q.dead_letter(seq, &reason)
            })
            .await
            {
                Ok(()) => self.on_success(),
                // Still queued at the head: back off and submit again from
                // there, so it is moved (or delivered) before anything after it.
                Err(e) => self.retry_from_head(SinkError::Retriable(format!(
                    "cannot move batch {} to dead letters ({e}); retrying in order",
                    head.seq
                ))),
            },
            Err(err) => self.retry_from_head(err),
        }
    }

    /// Later batches may still be confirmed, but they would be acknowledged
    /// out of order: drop their outcomes, back off, and submit everything
    /// again from the head (duplicates share ingest-ids).
    fn retry_from_head(&mut self, err: SinkError) {
        self.window.clear();
        self.cursor = None;
        let delay = self.on_failure(err);
        self.resume_at = Some(now() + delay);
        self.reset_if_wedged();
    }

    /// The watchdog: a fatal client error, or a failure episode of
    /// `RESET_AFTER_SILENT_STALL` during which the client reported nothing.
    fn reset_if_wedged(&mut self) {
        let now = now();
        let since = *self.failing_since.get_or_insert(now);
        let silent = self.sink.health().is_none();
        // NOTE: a fatal error used to reset at once, every time: a producer
        // that fails fatally right after each reset was rebuilt in a loop.
        let spaced = self
            .last_reset
            .is_none_or(|t| now - t >= RESET_AFTER_SILENT_STALL);
        if spaced
            && (self.sink.needs_reset() || (silent && now - since >= RESET_AFTER_SILENT_STALL))
        {
            self.reset_sink();
        }
    }

    /// Rebuilds the sink's client and submits everything again from the
    /// queue head (same ingest-ids; what the old client had written shows up
    /// as duplicates, in order).
    fn reset_sink(&mut self) {
        tracing::warn!(
            failing_s = self.failing_since.map_or(0, |t| (now() - t).as_secs()),
            "sink client wedged or failed fatally; recreating it and resubmitting from the queue head"
        );
        if let Err(e) = self.sink.reset() {
            tracing::error!(error = %e, "cannot recreate the sink client");
        }
        self.window.clear();
        self.cursor = None;
        // Re-arm: the next reset comes no sooner than a full period later.
        self.failing_since = Some(now());
        self.last_reset = self.failing_since;
    }

    async fn drain_on_shutdown(&mut self) {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while let Some(mut head) = self.window.pop_front() {
            match tokio::time::timeout_at(deadline, &mut head.delivery).await {
                // A batch with refused entries stays queued: the move to the
                // dead letters happens after the restart.
                Ok(Ok(c)) if c.refused.is_empty() => {
                    let seq = head.seq;
                    let _ = off_reactor(&self.queue, move |q| q.ack(seq)).await;
                    self.stats.sent(head.kind, head.entries);
                }
                Ok(_) | Err(_) => break,
            }
        }
        if !self.window.is_empty() {
            tracing::info!(
                batches = self.window.len(),
                "shutdown: unconfirmed batches stay queued for the next start"
            );
        }
    }

    fn on_success(&mut self) {
        let was_failing = self.breaker.consecutive_failures() > 0;
        self.failing_since = None;
        self.logged_cause.clear();
        let before = self.breaker.circuit();
        self.breaker.on_success();
        self.log_circuit(before, None);
        self.backoff.reset();
        let mut s = lock(&self.stats.forwarder);
        s.consecutive_failures = 0;
        s.circuit = self.breaker.circuit();
        s.next_attempt_at = None;
        s.last_error = None;
        s.last_success_at = Some(crate::model::now_rfc3339());
        if was_failing {
            tracing::info!("sink recovered; forwarding again");
        }
    }

    /// Records a failure; returns the backoff delay before the next attempt.
    fn on_failure(&mut self, err: SinkError) -> Duration {
        let now = now();
        let before = self.breaker.circuit();
        self.breaker.on_failure(now);
        self.stats
            .forward_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let delay = self.backoff.next_delay();
        let text = err.to_string();
        self.failing_since.get_or_insert(now);
        let cause: String = text.chars().filter(|c| !c.is_ascii_digit()).collect();
        self.log_circuit(before, Some(&text));
        let mut s = lock(&self.stats.forwarder);
        // Log when the cause or the circuit state changes, not per attempt.
        if cause != self.logged_cause || before != self.breaker.circuit() {
            self.logged_cause = cause;
            tracing::warn!(
                error = %text,
                circuit = self.breaker.circuit().as_str(),
                failures = self.breaker.consecutive_failures(),
                "sink not confirming; batches stay queued"
            );
        }
        s.last_error = Some(text);
        s.consecutive_failures = self.breaker.consecutive_failures();
        s.circuit = self.breaker.circuit();
        // An open circuit waits longer than the backoff: show the later.
        s.next_attempt_at = Some((now + delay).max(self.breaker.open_until().unwrap_or(now)));
        delay
    }

    /// One line per change of the circuit, the one an operator alerts on:
    /// warn when it opens, info when it half-opens or closes.
    fn log_circuit(&self, before: Circuit, error: Option<&str>) {
        let after = self.breaker.circuit();
        if after == before {
            return;
        }
        let (from, to) = (before.as_str(), after.as_str());
        let failures = self.breaker.consecutive_failures();
        match after {
            Circuit::Open => tracing::warn!(
                target: "edge_ingester::circuit",
                from,
                to,
                failures,
                error,
                "circuit {from} -> {to}: sends paused after {failures} consecutive failures"
            ),
            Circuit::HalfOpen => tracing::info!(
                target: "edge_ingester::circuit",
                from,
                to,
                failures,
                "circuit {from} -> {to}: one probe batch"
            ),
            Circuit::Closed => tracing::info!(
                target: "edge_ingester::circuit",
                from,
                to,
                "circuit {from} -> {to}: the sink confirms again"
            ),
        }
    }

    fn publish_wait(&self, until: Option<Instant>) {
        let mut s = lock(&self.stats.forwarder);
        s.circuit = self.breaker.circuit();
        s.next_attempt_at = until;
    }
}

/// Reads and renders `seqs` in order, stopping after the first that the
/// disk failed to read: nothing after it may be sent before it.
fn read_in_order(queue: &Queue, seqs: Vec<u64>) -> Vec<(u64, ReadResult)> {
    let mut out = Vec::with_capacity(seqs.len());
    for seq in seqs {
        let read = queue.read_view(seq, |stored| message::render(stored, queue.node_id()));
        let failed = read.is_err();
        out.push((seq, read));
        if failed {
            break;
        }
    }
    out
}

/// Runs a queue operation on the blocking pool. NOTE: reads decode zstd and
/// bincode, removals and dead-letter moves write (a move also flushes sled):
/// on a reactor thread they stalled every request that thread served. Each
/// is awaited before the next starts, so acknowledgements stay in order.
async fn off_reactor<T: Send + 'static>(
    queue: &Queue,
    op: impl FnOnce(&Queue) -> Result<T, QueueError> + Send + 'static,
) -> Result<T, QueueError> {
    let queue = queue.clone();
    tokio::task::spawn_blocking(move || op(&queue))
        .await
        .unwrap_or_else(|e| Err(QueueError::Disk(format!("queue operation failed: {e}"))))
}

/// The forwarder's clock: tokio's, so tests can pause and advance it; the
/// policy state machines take it as an argument.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
