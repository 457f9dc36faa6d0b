//! The forwarder against a sink that wedges: the real queue and forwarder,
//! a fake sink, and tokio's paused clock so minutes of stall take no time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edge_ingester::config::{ForwarderConfig, QueueConfig};
use edge_ingester::forward::Forwarder;
use edge_ingester::model::{Batch, Entries, Level, LogRecord};
use edge_ingester::queue::{encode_record, DeadLetterFault, IndexEntry, Queue};
use edge_ingester::sink::{Confirmed, Delivery, Rendered, Sink, SinkError, SubmitFuture};
use edge_ingester::stats::Stats;

/// Deliveries never complete while wedged; `reset` unwedges it.
struct WedgingSink {
    wedged: AtomicBool,
    resets: AtomicUsize,
    /// What the client would say; `Some` makes a stall "explained".
    report: Option<String>,
    /// While wedged: fail each delivery after this long instead of hanging.
    fail_after: Option<Duration>,
    delivered: Mutex<Vec<u64>>,
}

impl Sink for WedgingSink {
    fn producer_type(&self) -> &'static str {
        "Test"
    }

    fn max_in_flight(&self) -> usize {
        8
    }

    fn submit<'a>(&'a self, batch: &'a Rendered) -> SubmitFuture<'a> {
        let seq = batch.seq;
        let delivery: Delivery = if self.wedged.load(Ordering::SeqCst) {
            match self.fail_after {
                None => Box::pin(std::future::pending()),
                Some(d) => Box::pin(async move {
                    tokio::time::sleep(d).await;
                    Err(SinkError::Retriable("producer dropped the batch".into()))
                }),
            }
        } else {
            self.delivered.lock().unwrap().push(seq);
            Box::pin(async { Ok(Confirmed::all()) })
        };
        Box::pin(async move { Ok(delivery) })
    }

    fn health(&self) -> Option<String> {
        self.report.clone()
    }

    fn reset(&self) -> Result<(), String> {
        self.resets.fetch_add(1, Ordering::SeqCst);
        self.wedged.store(false, Ordering::SeqCst);
        Ok(())
    }
}

fn batch(message: &str) -> Batch {
    Batch {
        received_at: "2026-11-27T10:00:00Z".into(),
        agent_version: None,
        entries: Entries::Logs(vec![LogRecord {
            timestamp: "2026-11-27T10:00:00Z".into(),
            level: Level::Info,
            message: message.into(),
            service: "svc".into(),
            host: "h".into(),
            attributes: vec![],
        }]),
    }
}

async fn queue_with_three_batches(dir: &std::path::Path) -> Queue {
    let q = Queue::open(&QueueConfig {
        path: dir.join("q"),
        ..QueueConfig::default()
    })
    .unwrap();
    for m in ["a", "b", "c"] {
        let b = batch(m);
        let record = encode_record(&b);
        let index = IndexEntry {
            kind: b.kind(),
            entries: 1,
            record_bytes: record.len() as u32,
            enqueued_at_ms: 0,
        };
        q.append(record, index).await.unwrap();
    }
    q
}

async fn run_for<S: Sink + 'static>(
    queue: &Queue,
    sink: Arc<S>,
    stats: Arc<Stats>,
    how_long: Duration,
) {
    let cfg = ForwarderConfig {
        jitter: false,
        ..ForwarderConfig::default()
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(Forwarder::new(&cfg, queue.clone(), sink, stats).run(rx));
    tokio::time::sleep(how_long).await;
    tx.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn silently_wedged_sink_is_reset_and_every_batch_resubmitted_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let queue = queue_with_three_batches(dir.path()).await;
    let sink = Arc::new(WedgingSink {
        wedged: AtomicBool::new(true),
        resets: AtomicUsize::new(0),
        report: None,
        fail_after: None,
        delivered: Mutex::new(Vec::new()),
    });
    let stats = Arc::new(Stats::new("Test"));
    run_for(&queue, sink.clone(), stats.clone(), Duration::from_secs(90)).await;
    assert_eq!(sink.resets.load(Ordering::SeqCst), 1);
    assert_eq!(*sink.delivered.lock().unwrap(), vec![0, 1, 2]);
    assert_eq!(queue.stats().depth_batches, 0);
    assert_eq!(stats.snapshot(queue.stats()).logs_sent, 3);
    queue.close();
}

#[tokio::test(start_paused = true)]
async fn a_stall_the_client_explains_is_waited_out_not_reset() {
    let dir = tempfile::tempdir().unwrap();
    let queue = queue_with_three_batches(dir.path()).await;
    let sink = Arc::new(WedgingSink {
        wedged: AtomicBool::new(true),
        resets: AtomicUsize::new(0),
        report: Some("1/1 brokers are down".into()),
        fail_after: None,
        delivered: Mutex::new(Vec::new()),
    });
    let stats = Arc::new(Stats::new("Test"));
    run_for(
        &queue,
        sink.clone(),
        stats.clone(),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(sink.resets.load(Ordering::SeqCst), 0);
    assert!(sink.delivered.lock().unwrap().is_empty());
    assert_eq!(
        queue.stats().depth_batches,
        3,
        "nothing is lost while waiting"
    );
    let s = stats.snapshot(queue.stats());
    assert_eq!(s.forwarder.circuit, "open");
    assert!(s
        .forwarder
        .last_error
        .as_deref()
        .unwrap()
        .contains("brokers are down"));
    queue.close();
}

/// The pattern seen in CI: each delivery hangs a few seconds, then fails with
/// a retriable error, and the client reports nothing. A watchdog that timed
/// single stalls never fired; the failure episode as a whole must count.
#[tokio::test(start_paused = true)]
async fn a_sink_that_keeps_failing_silently_is_reset_within_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    let queue = queue_with_three_batches(dir.path()).await;
    let sink = Arc::new(WedgingSink {
        wedged: AtomicBool::new(true),
        resets: AtomicUsize::new(0),
        report: None,
        fail_after: Some(Duration::from_secs(3)),
        delivered: Mutex::new(Vec::new()),
    });
    let stats = Arc::new(Stats::new("Test"));
    run_for(&queue, sink.clone(), stats.clone(), Duration::from_secs(60)).await;
    assert_eq!(sink.resets.load(Ordering::SeqCst), 1);
    assert_eq!(*sink.delivered.lock().unwrap(), vec![0, 1, 2]);
    assert_eq!(queue.stats().depth_batches, 0);
    queue.close();
}

/// A sink whose `submit` never returns: librdkafka's local queue full while
/// every broker is down.
struct StuckSubmitSink;

impl Sink for StuckSubmitSink {
    fn producer_type(&self) -> &'static str {
        "Test"
    }

    fn submit<'a>(&'a self, _batch: &'a Rendered) -> SubmitFuture<'a> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_completes_while_a_submit_never_returns_and_the_batches_stay_queued() {
    let dir = tempfile::tempdir().unwrap();
    let queue = queue_with_three_batches(dir.path()).await;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(
        Forwarder::new(
            &ForwarderConfig::default(),
            queue.clone(),
            Arc::new(StuckSubmitSink),
            Arc::new(Stats::new("Test")),
        )
        .run(rx),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    tx.send(true).unwrap();
    // Paused clock: an idle runtime jumps straight to this deadline, so a
    // forwarder that never returns fails here at once.
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("shutdown hung behind a submit that never returns")
        .unwrap();
    assert_eq!(queue.stats().depth_batches, 3);
    queue.close();
}

/// Every delivery fails and the client always reports a fatal error, as a
/// producer does that fails again right after each reset.
#[derive(Default)]
struct AlwaysFatalSink {
    resets: AtomicUsize,
}

impl Sink for AlwaysFatalSink {
    fn producer_type(&self) -> &'static str {
        "Test"
    }

    fn submit<'a>(&'a self, _batch: &'a Rendered) -> SubmitFuture<'a> {
        let failed: Delivery = Box::pin(async { Err(SinkError::Retriable("fatal".into())) });
        Box::pin(async move { Ok(failed) })
    }

    fn health(&self) -> Option<String> {
        Some("fatal error".into())
    }

    fn needs_reset(&self) -> bool {
        true
    }

    fn reset(&self) -> Result<(), String> {
        self.resets.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn resets_for_fatal_errors_are_spaced_like_any_other() {
    let dir = tempfile::tempdir().unwrap();
    let queue = queue_with_three_batches(dir.path()).await;
    let sink = Arc::new(AlwaysFatalSink::default());
    let cfg = ForwarderConfig {
        jitter: false,
        ..ForwarderConfig::default()
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(
        Forwarder::new(
            &cfg,
            queue.clone(),
            sink.clone(),
            Arc::new(Stats::new("Test")),
        )
        .run(rx),
    );
    tokio::time::sleep(Duration::from_secs(95)).await;
    tx.send(true).unwrap();
    task.await.unwrap();
    let resets = sink.resets.load(Ordering::SeqCst);
    eprintln!("resets in 95 s of fatal errors: {resets}");
    assert!((1..=4).contains(&resets), "{resets} resets in 95 s");
    queue.close();
}

/// Refuses batch 0 for good (a permanent error); delivers the others.
struct RefusesFirst {
    delivered: Mutex<Vec<u64>>,
}

impl Sink for RefusesFirst {
    fn producer_type(&self) -> &'static str {
        "Test"
    }

    fn max_in_flight(&self) -> usize {
        8
    }

    fn submit<'a>(&'a self, batch: &'a Rendered) -> SubmitFuture<'a> {
        let seq = batch.seq;
        let delivery: Delivery = if seq == 0 {
            Box::pin(async { Err(SinkError::Permanent("record too large".into())) })
        } else {
            self.delivered.lock().unwrap().push(seq);
            Box::pin(async { Ok(Confirmed::all()) })
        };
        Box::pin(async move { Ok(delivery) })
    }
}

/// A dead-letter move that fails (the read of the record, or the move's
/// write) leaves the batch queued at the head: nothing is removed, nothing
/// after it is acknowledged, and it is moved once the disk recovers.
async fn a_failed_dead_letter_move_keeps_the_batch_at_the_head(fault: DeadLetterFault) {
    let dir = tempfile::tempdir().unwrap();
    let queue = queue_with_three_batches(dir.path()).await;
    queue.inject_dead_letter_fault(fault);
    let sink = Arc::new(RefusesFirst {
        delivered: Mutex::new(Vec::new()),
    });
    let stats = Arc::new(Stats::new("Test"));
    run_for(&queue, sink.clone(), stats.clone(), Duration::from_secs(30)).await;
    assert_eq!(
        queue.stats().depth_batches,
        3,
        "batch 0 stays queued and nothing after it is acknowledged"
    );
    assert!(queue.dead_letters().is_empty());
    let s = stats.snapshot(queue.stats());
    assert_eq!(s.logs_sent, 0);
    assert!(s
        .forwarder
        .last_error
        .as_deref()
        .unwrap()
        .contains("dead letters"));

    queue.inject_dead_letter_fault(DeadLetterFault::None);
    run_for(&queue, sink.clone(), stats.clone(), Duration::from_secs(30)).await;
    assert_eq!(queue.stats().depth_batches, 0);
    let dead: Vec<u64> = queue.dead_letters().into_iter().map(|(s, _)| s).collect();
    assert_eq!(dead, vec![0]);
    assert_eq!(stats.snapshot(queue.stats()).logs_sent, 2);
    queue.close();
}

#[tokio::test(start_paused = true)]
async fn a_read_error_during_a_dead_letter_move_keeps_the_batch_queued() {
    a_failed_dead_letter_move_keeps_the_batch_at_the_head(DeadLetterFault::Read).await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_dead_letter_write_is_retried_in_order_never_skipped() {
    a_failed_dead_letter_move_keeps_the_batch_at_the_head(DeadLetterFault::Move).await;
}

/// A sink that takes batches and confirms only the first, with a small
/// entry budget: what it was handed shows how the forwarder plans.
struct HoldsEverything {
    budget: usize,
    confirm_first: bool,
    submitted: Mutex<Vec<u64>>,
}

impl Sink for HoldsEverything {
    fn producer_type(&self) -> &'static str {
        "Test"
    }

    fn max_in_flight(&self) -> usize {
        256
    }

    fn max_in_flight_entries(&self) -> usize {
        self.budget
    }

    fn submit<'a>(&'a self, batch: &'a Rendered) -> SubmitFuture<'a> {
        self.submitted.lock().unwrap().push(batch.seq);
        let delivery: Delivery = if self.confirm_first && batch.seq == 0 {
            Box::pin(async { Ok(Confirmed::all()) })
        } else {
            Box::pin(std::future::pending())
        };
        Box::pin(async move { Ok(delivery) })
    }
}

/// Batches go in flight up to the entry budget plus one batch, and a
/// second large batch joins one already in flight when both fit in twice
/// the budget (one batch at a time waits a whole round trip before the
/// next is even read) — also after the head was confirmed.
#[tokio::test(start_paused = true)]
async fn the_window_fills_to_the_entry_budget_and_pairs_large_batches() {
    for (entries, confirm_first, want) in [
        (4, false, vec![0, 1, 2]),
        (6, false, vec![0, 1]),
        (10, false, vec![0, 1]),
        (11, false, vec![0]),
        (10, true, vec![0, 1, 2]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(&QueueConfig {
            path: dir.path().join("q"),
            ..QueueConfig::default()
        })
        .unwrap();
        for _ in 0..4 {
            let mut b = batch("m");
            let Entries::Logs(v) = &mut b.entries else {
                unreachable!()
            };
            *v = vec![v[0].clone(); entries];
            let record = encode_record(&b);
            let index = IndexEntry {
                kind: b.kind(),
                entries: entries as u32,
                record_bytes: record.len() as u32,
                enqueued_at_ms: 0,
            };
            queue.append(record, index).await.unwrap();
        }
        let sink = Arc::new(HoldsEverything {
            budget: 10,
            confirm_first,
            submitted: Mutex::new(Vec::new()),
        });
        let stats = Arc::new(Stats::new("Test"));
        run_for(&queue, sink.clone(), stats, Duration::from_secs(1)).await;
        let case = format!("{entries}-entry batches, first confirmed: {confirm_first}");
        assert_eq!(*sink.submitted.lock().unwrap(), want, "{case}");
        let confirmed = u64::from(confirm_first);
        assert_eq!(queue.stats().depth_batches, 4 - confirmed, "{case}");
        queue.close();
    }
}
