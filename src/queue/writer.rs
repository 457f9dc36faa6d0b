//! The group committer: one thread that turns pending appends into one
//! synced sled write and wakes every waiter.
//!
//! A dedicated OS thread because everything it does blocks (sled, fsync).
//! Batching is natural, not timed: while one commit syncs, new requests queue
//! up in the channel and all of them go into the next commit.
//!
//! ```text
//!                 ┌──────────────── commit ok ◄─────────────┐
//!                 ▼                                         │
//!   ┌──────────► healthy ── appends ──► plan → apply → flush → sync
//!   │             │  every IDLE_TICK: changes since the last sync (acks,
//!   │             │  dead letters, sled's own rewrites)? flush + sync
//!   │             │                                         │
//!   │             │   write / open / list failed (ENOSPC, EMFILE)
//!   │             │   and the old log handle still syncs     │ fsync itself
//!   │             ▼                                         │ failed (EIO),
//!   │        failed: 503 at once, /ready 503                │ or the probe of
//!   │             │  every REOPEN_EVERY: reopen sled,       │ the old handle
//!   └── ok ───────┘  drop what failed commits left, sync    │ fails
//!                                                           ▼
//!                      poisoned: 503 at once, /ready 503, never reopened —
//!                      the page cache may hold pages the disk lost; only a
//!                      restart (which re-reads the disk) clears it
//! ```

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::idempotency::{self, Appended, IdempotencyKey};
use super::plan::{plan, Plan};
use super::syncer::{SyncError, Syncer};
use super::{
    dir_allocated_bytes, index_key, lock, now_ms, record_key, seq_of, IndexEntry, QueueError,
    Shared, Store, META_NEXT_SEQ, PREFIX_INDEX,
};

/// Most appends folded into one commit, so one commit's latency stays bounded
/// under a burst.
const MAX_GROUP: usize = 1024;
/// How often expired idempotency keys are swept.
const SWEEP_EVERY_MS: u64 = 60_000;
/// How often the ledger records the committed high-water mark: one extra
/// fsync a second at most, off the acknowledgement path.
const LEDGER_EVERY_MS: u64 = 1_000;
/// After a failed commit, how often the writer tries to reopen the database
/// (and so how soon it notices that space came back).
const REOPEN_EVERY: Duration = Duration::from_secs(1);
/// The longest the writer sleeps without looking at its housekeeping. It
/// bounds how long a change made outside a commit stays unsynced. NOTE:
/// acks and dead-letter moves make sled consolidate leaves and clean
/// segments, writing new copies of acknowledged batches; sled frees the old
/// copy after its own `sync_file_range`, which a power cut forgets. While a
/// backlog drains with no new appends, nothing else would sync those copies.
const IDLE_TICK: Duration = Duration::from_millis(100);
/// How often `disk_bytes` is measured (a directory walk), so `/stats` never
/// walks the directory itself.
const DISK_SAMPLE_EVERY: Duration = Duration::from_secs(1);

pub(crate) struct Request {
    pub record: Vec<u8>,
    pub index: IndexEntry,
    pub idempotency: Option<IdempotencyKey>,
    pub reply: oneshot::Sender<Result<Appended, QueueError>>,
}

pub(crate) struct Handle {
    tx: super::WriteSender,
    thread: JoinHandle<()>,
}

impl Handle {
    pub fn start(shared: Arc<Shared>) -> Result<Handle, String> {
        let (tx, rx) = mpsc::channel();
        let syncer = Syncer::new(&shared.path).map_err(|e| e.to_string())?;
        let writer = Writer {
            shared,
            syncer,
            failure: None,
            last_sweep_ms: 0,
            last_ledger_ms: now_ms(),
            last_disk_sample: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| e.to_string())?;
        Ok(Handle { tx, thread })
    }

    pub fn submit(&self, req: Request) -> Result<(), QueueError> {
        self.tx.send(req).map_err(|_| QueueError::Closed)
    }

    /// False once the thread has exited (it panicked, or was shut down).
    pub fn is_alive(&self) -> bool {
        !self.thread.is_finished()
    }

    /// Closes the channel; the thread commits what is pending and exits.
    pub fn shutdown(self) {
        drop(self.tx);
        if self.thread.join().is_err() {
            tracing::error!("queue writer thread panicked");
        }
    }
}

/// The writer thread's state.
struct Writer {
    shared: Arc<Shared>,
    syncer: Syncer,
    /// Set by a failed commit or sync; cleared once the database is reopened
    /// (never, if the failure is fatal).
    failure: Option<Failure>,
    last_sweep_ms: u64,
    last_ledger_ms: u64,
    last_disk_sample: Instant,
}

/// A failed commit, and what must be undone before writing again.
struct Failure {
    reason: String,
    /// An fsync failed: the writer never writes again in this process.
    fatal: bool,
    last_attempt: Instant,
    /// Idempotency keys remembered by failed commits (with their time): a
    /// retry must not be answered with a batch that was never stored.
    forget: Vec<(IdempotencyKey, u64)>,
}

/// Why a commit or a sync failed.
#[derive(Debug, thiserror::Error)]
enum CommitError {
    /// sled refused the write or its flush (ENOSPC, EIO on write).
    #[error("{0}")]
    Write(String),
    #[error(transparent)]
    Sync(#[from] SyncError),
}

/// A failed commit: why, and the idempotency keys it may have left behind.
struct CommitFailure {
    error: CommitError,
    forget: Vec<(IdempotencyKey, u64)>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Request>) {
        loop {
            let first = match rx.recv_timeout(IDLE_TICK) {
                Ok(r) => Some(r),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break, // shutdown
            };
            self.housekeeping();
            let Some(first) = first else { continue };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            if let Some(f) = &self.failure {
                // Not touching a database that failed: answer at once.
                for req in group {
                    let _ = req.reply.send(Err(QueueError::Disk(f.reason.clone())));
                }
                continue;
            }
            let store = match self.shared.store() {
                Ok(s) => s,
                Err(e) => {
                    let reason = disk_reason(e);
                    for req in group {
                        let _ = req.reply.send(Err(QueueError::Disk(reason.clone())));
                    }
                    continue;
                }
            };
            match commit(&self.shared, &store, &mut self.syncer, group) {
                Ok(()) => self.after_commit(&store),
                Err(f) => self.fail(f),
            }
        }
        // Removals since the last commit: synced so a clean stop does not
        // redeliver them.
        self.sync_if_changed();
    }

    /// Work that must happen even when no append arrives.
    fn housekeeping(&mut self) {
        self.recover_if_due();
        self.sync_if_changed();
        if self.last_disk_sample.elapsed() >= DISK_SAMPLE_EVERY {
            self.last_disk_sample = Instant::now();
            let bytes = dir_allocated_bytes(&self.shared.path);
            self.shared.disk_bytes.store(bytes, Ordering::Relaxed);
        }
    }

    /// Flushes and syncs changes made outside a commit (see `IDLE_TICK`).
    fn sync_if_changed(&mut self) {
        if self.failure.is_some() || !self.shared.unsynced.swap(false, Ordering::AcqRel) {
            return;
        }
        let synced = self
            .shared
            .store()
            .map_err(|e| CommitError::Write(disk_reason(e)))
            .and_then(|s| s.db.flush().map_err(|e| CommitError::Write(e.to_string())))
            .and_then(|_| Ok(self.syncer.sync()?));
        if let Err(error) = synced {
            self.shared.unsynced.store(true, Ordering::Release);
            self.fail(CommitFailure {
                error,
                forget: Vec::new(),
            });
        }
    }

    fn after_commit(&mut self, store: &Store) {
        let now = now_ms();
        if now.saturating_sub(self.last_ledger_ms) >= LEDGER_EVERY_MS {
            self.last_ledger_ms = now;
            // Only what the commit made durable: the ledger never runs ahead
            // of sled, so a crash cannot make it cry wolf.
            let committed = lock(&self.shared.live).committed_next_seq;
            if let Err(e) = self.shared.ledger.write(committed) {
                tracing::warn!(error = %e, "cannot update the queue ledger");
            }
        }
        if now.saturating_sub(self.last_sweep_ms) >= SWEEP_EVERY_MS {
            self.last_sweep_ms = now;
            let window = self.shared.idempotency_window_ms.load(Ordering::Relaxed);
            match idempotency::sweep(&store.tree, now, window) {
                Ok(0) => {}
                Ok(n) => {
                    self.shared.unsynced.store(true, Ordering::Release);
                    tracing::debug!(removed = n, "expired idempotency keys swept");
                }
                Err(e) => tracing::warn!(error = %e, "idempotency sweep failed"),
            }
        }
    }

    fn fail(&mut self, f: CommitFailure) {
        self.shared.disk_errors.fetch_add(1, Ordering::Relaxed);
        // A write error may hide a lost writeback that sled's flush already
        // consumed on its own handle: ours, opened earlier, still hears it.
        let probe = match &f.error {
            CommitError::Sync(e) if !e.is_recoverable() => None,
            _ => self.syncer.probe().err(),
        };
        let fatal =
            matches!(&f.error, CommitError::Sync(e) if !e.is_recoverable()) || probe.is_some();
        let cause = probe.map_or_else(|| f.error.to_string(), |p| p.to_string());
        let was_fatal = self.failure.as_ref().is_some_and(|x| x.fatal);
        if fatal && !was_fatal {
            let reason = format!(
                "{cause} — the queue refuses writes until edge-ingester is restarted (a restart \
                 re-reads what is really on disk)"
            );
            tracing::error!(
                error = %cause,
                "QUEUE DISK FAILURE: fsync failed, so data written since the last good sync may \
                 not be on disk. Refusing all writes (503) until restart; check the disk (dmesg)."
            );
            lock(&self.shared.live).write_failure = Some(reason.clone());
            self.shared.write_fatal.store(true, Ordering::Release);
            let forget = self.failure.take().map(|x| x.forget).unwrap_or_default();
            self.failure = Some(Failure {
                reason,
                fatal: true,
                last_attempt: Instant::now(),
                forget,
            });
            return;
        }
        match &mut self.failure {
            Some(x) => x.forget.extend(f.forget),
            None => {
                tracing::error!(error = %cause, "queue write failed; answering 503 until the database is reopened");
                lock(&self.shared.live).write_failure = Some(cause.clone());
                self.failure = Some(Failure {
                    reason: cause,
                    fatal: false,
                    last_attempt: Instant::now(),
                    forget: f.forget,
                });
            }
        }
    }

    /// Reopens the database once `REOPEN_EVERY` has passed since the last
    /// try, unless the failure is fatal.
    fn recover_if_due(&mut self) {
        let Some(f) = &mut self.failure else { return };
        if f.fatal || f.last_attempt.elapsed() < REOPEN_EVERY {
            return;
        }
        f.last_attempt = Instant::now();
        match reopen(&self.shared, &f.forget) {
            Ok(syncer) => {
                self.syncer = syncer;
                self.failure = None;
                self.shared.unsynced.store(false, Ordering::Release);
                lock(&self.shared.live).write_failure = None;
                tracing::info!("queue database reopened; accepting batches again");
            }
            Err(e) => {
                let e = disk_reason(e);
                tracing::debug!(error = %e, "queue database still failing");
                lock(&self.shared.live).write_failure = Some(e.clone());
                f.reason = e;
            }
        }
    }
}

/// The text of a disk error, without `QueueError`'s prefix (it is wrapped
/// again where it is shown).
fn disk_reason(e: QueueError) -> String {
    match e {
        QueueError::Disk(reason) => reason,
        other => other.to_string(),
    }
}

/// Replaces a database that failed a write with a freshly opened one, and
/// makes it agree with what was acknowledged:
/// - batches on disk that the live index no longer has are removed — those
///   of failed commits (refused with 503; sled may have kept them) and those
///   delivered or dropped while the disk refused removals;
/// - idempotency keys of failed commits are forgotten;
/// - all of it synced before the first new commit.
///
/// A batch in the live index but missing on disk would be an acknowledged
/// batch lost; it cannot happen when fdatasync told the truth, and is logged
/// if it does.
fn reopen(shared: &Shared, forget: &[(IdempotencyKey, u64)]) -> Result<Syncer, QueueError> {
    // sled keeps its file lock until the last handle is gone: drop ours first.
    shared.set_store(None);
    let store = Store::open(&shared.path, shared.cache_bytes)?;
    shared.set_store(Some(store.clone()));
    let mut fix = sled::Batch::default();
    for (k, created) in forget {
        idempotency::forget(&mut fix, k, *created);
    }
    // Scanned before taking the lock: only this thread appends, so the live
    // index can only shrink meanwhile, and removing a batch twice is harmless.
    let mut on_disk = Vec::new();
    for item in store.tree.scan_prefix([PREFIX_INDEX]) {
        let (k, _) = item?;
        on_disk.extend(seq_of(&k));
    }
    let (stale, missing) = {
        let live = lock(&shared.live);
        let stale: Vec<u64> = on_disk
            .iter()
            .copied()
            .filter(|s| !live.index.contains_key(s))
            .collect();
        let kept = (on_disk.len() - stale.len()) as u64;
        (stale, (live.index.len() as u64).saturating_sub(kept))
    };
    if missing > 0 {
        tracing::error!(
            missing,
            "acknowledged batches missing after reopening the queue database"
        );
    }
    for seq in &stale {
        fix.remove(&record_key(*seq));
        fix.remove(&index_key(*seq));
    }
    store.tree.apply_batch(fix)?;
    store.db.flush()?;
    let mut syncer = Syncer::new(&shared.path).map_err(|e| QueueError::Disk(e.to_string()))?;
    syncer.sync().map_err(|e| QueueError::Disk(e.to_string()))?;
    if !stale.is_empty() {
        tracing::info!(
            removed = stale.len(),
            "stale batches removed after reopening"
        );
    }
    Ok(syncer)
}

/// Commits one group and answers every request in it.
fn commit(
    shared: &Shared,
    store: &Store,
    syncer: &mut Syncer,
    group: Vec<Request>,
) -> Result<(), CommitFailure> {
    let Plan {
        accepted,
        rejected,
        replays,
        evicted,
        next_seq,
    } = plan(shared, &store.tree, group);
    for (req, err) in rejected {
        let _ = req.reply.send(Err(err));
    }
    if accepted.is_empty() && evicted.is_empty() {
        for (req, replay) in replays {
            let _ = req.reply.send(Ok(replay));
        }
        return Ok(());
    }
    let now = now_ms();
    let mut batch = sled::Batch::default();
    for (seq, req) in &accepted {
        let index = IndexEntry {
            enqueued_at_ms: now,
            ..req.index
        };
        batch.insert(&record_key(*seq), req.record.as_slice());
        batch.insert(&index_key(*seq), &index.encode());
        if let Some(k) = &req.idempotency {
            idempotency::remember(&mut batch, k, *seq, now);
        }
    }
    for seq in &evicted {
        batch.remove(&record_key(*seq));
        batch.remove(&index_key(*seq));
    }
    batch.insert(META_NEXT_SEQ, &next_seq.to_be_bytes());

    // This sync also covers every change made outside commits so far.
    shared.unsynced.store(false, Ordering::Release);
    let result = store
        .tree
        .apply_batch(batch)
        .and_then(|_| store.db.flush())
        .map_err(|e| CommitError::Write(e.to_string()))
        .and_then(|_| Ok(syncer.sync()?));

    if let Err(error) = result {
        // Nothing of this commit is acknowledged. Whatever sled kept of it
        // is removed when the writer reopens the database.
        shared.unsynced.store(true, Ordering::Release);
        let forget = accepted
            .iter()
            .filter_map(|(_, req)| req.idempotency.clone())
            .map(|k| (k, now))
            .collect();
        lock(&shared.live).next_seq = next_seq;
        let reason = error.to_string();
        for req in accepted
            .into_iter()
            .map(|(_, r)| r)
            .chain(replays.into_iter().map(|(r, _)| r))
        {
            let _ = req.reply.send(Err(QueueError::Disk(reason.clone())));
        }
        return Err(CommitFailure { error, forget });
    }
    {
        let mut live = lock(&shared.live);
        live.next_seq = next_seq;
        live.committed_next_seq = next_seq;
        live.write_failure = None;
        for seq in &evicted {
            if live.remove(*seq).is_some() {
                live.dropped += 1;
            }
        }
        for (seq, req) in &accepted {
            live.insert(
                *seq,
                IndexEntry {
                    enqueued_at_ms: now,
                    ..req.index
                },
            );
        }
    }
    if !evicted.is_empty() {
        tracing::warn!(
            batches = evicted.len(),
            "queue full: dropped oldest batches"
        );
    }
    shared.appended.notify_waiters();
    for (seq, req) in accepted {
        let _ = req.reply.send(Ok(Appended::Stored(seq)));
    }
    for (req, replay) in replays {
        let _ = req.reply.send(Ok(replay));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QueueConfig;
    use crate::model::Kind;
    use crate::queue::Queue;

    #[tokio::test]
    async fn a_removal_is_synced_within_a_tick_without_any_append() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = QueueConfig {
            path: dir.path().join("q"),
            ..QueueConfig::default()
        };
        let q = Queue::open(&cfg).unwrap();
        let index = IndexEntry {
            kind: Kind::Logs,
            entries: 1,
            record_bytes: 3,
            enqueued_at_ms: 0,
        };
        let seq = q.append(vec![1, 2, 3], index).await.unwrap();
        assert!(!q.shared.unsynced.load(Ordering::Acquire));
        q.ack(seq).unwrap();
        assert!(q.shared.unsynced.load(Ordering::Acquire));
        let deadline = Instant::now() + Duration::from_secs(5);
        while q.shared.unsynced.load(Ordering::Acquire) {
            assert!(Instant::now() < deadline, "the ack was never synced");
            std::thread::sleep(Duration::from_millis(10));
        }
        q.close();
    }
}
