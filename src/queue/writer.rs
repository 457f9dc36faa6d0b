//! The group committer: one thread that turns pending appends into one
//! synced sled write and wakes every waiter.
//!
//! A dedicated OS thread because everything it does blocks (sled, fsync).
//! Batching is natural, not timed: while one commit syncs, new requests queue
//! up in the channel and all of them go into the next commit.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::idempotency::{self, Appended, IdempotencyKey};
use super::{
    index_key, lock, now_ms, record_key, seq_of, IndexEntry, QueueError, Shared, Store,
    META_NEXT_SEQ, PREFIX_INDEX,
};
use crate::config::WhenFull;

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
    pub fn start(shared: Arc<Shared>) -> std::io::Result<Handle> {
        let (tx, rx) = mpsc::channel();
        let syncer = Syncer::new(&shared.path)?;
        let writer = Writer {
            shared,
            syncer,
            failure: None,
        };
        let thread = std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(Handle { tx, thread })
    }

    pub fn submit(&self, req: Request) -> Result<(), QueueError> {
        self.tx.send(req).map_err(|_| QueueError::Closed)
    }

    /// Closes the channel; the thread commits what is pending and exits.
    pub fn shutdown(self) {
        drop(self.tx);
        if self.thread.join().is_err() {
            tracing::error!("queue writer thread panicked");
        }
    }
}

/// Makes sled's writes durable: fdatasync of the log file and of blob files.
struct Syncer {
    log: File,
    blobs_dir: PathBuf,
    /// Blob files already synced; sled never rewrites a blob in place.
    synced_blobs: HashSet<std::ffi::OsString>,
}

impl Syncer {
    fn new(dir: &Path) -> std::io::Result<Syncer> {
        Ok(Syncer {
            log: File::open(dir.join("db"))?,
            blobs_dir: dir.join("blobs"),
            synced_blobs: HashSet::new(),
        })
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.log.sync_data()?;
        let Ok(entries) = std::fs::read_dir(&self.blobs_dir) else {
            return Ok(());
        };
        let mut present = HashSet::new();
        let mut new_blob = false;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !self.synced_blobs.contains(&name) {
                // A blob sled removed meanwhile is fine to miss.
                if let Ok(f) = File::open(entry.path()) {
                    f.sync_data()?;
                    new_blob = true;
                }
            }
            present.insert(name);
        }
        if new_blob {
            File::open(&self.blobs_dir)?.sync_all()?;
        }
        self.synced_blobs = present;
        Ok(())
    }
}

/// The writer thread's state.
struct Writer {
    shared: Arc<Shared>,
    syncer: Syncer,
    /// Set by a failed commit; cleared once the database is reopened.
    failure: Option<Failure>,
}

/// A failed commit, and what must be undone before writing again.
struct Failure {
    reason: String,
    last_attempt: Instant,
    /// Idempotency keys remembered by failed commits (with their time): a
    /// retry must not be answered with a batch that was never stored.
    forget: Vec<(IdempotencyKey, u64)>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Request>) {
        let mut last_sweep_ms = 0;
        let mut last_ledger_ms = now_ms();
        loop {
            // While failed, wake up on a timer too, so the service recovers
            // (and `/ready` turns 200) without waiting for a request.
            let first = match &self.failure {
                None => rx.recv().ok(),
                Some(_) => match rx.recv_timeout(REOPEN_EVERY) {
                    Ok(r) => Some(r),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            if first.is_none() && self.failure.is_none() {
                break; // every sender is gone: shutdown
            }
            self.recover_if_due();
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
            if let Err((reason, forget)) = commit(&self.shared, &store, &mut self.syncer, group) {
                self.fail(reason, forget);
                continue;
            }
            let now = now_ms();
            if now.saturating_sub(last_ledger_ms) >= LEDGER_EVERY_MS {
                last_ledger_ms = now;
                // Only what the commit above made durable: the ledger never
                // runs ahead of sled, so a crash cannot make it cry wolf.
                let committed = lock(&self.shared.live).committed_next_seq;
                if let Err(e) = self.shared.ledger.write(committed) {
                    tracing::warn!(error = %e, "cannot update the queue ledger");
                }
            }
            if now.saturating_sub(last_sweep_ms) >= SWEEP_EVERY_MS {
                last_sweep_ms = now;
                let window = self
                    .shared
                    .idempotency_window_ms
                    .load(std::sync::atomic::Ordering::Relaxed);
                match idempotency::sweep(&store.tree, now, window) {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(removed = n, "expired idempotency keys swept"),
                    Err(e) => tracing::warn!(error = %e, "idempotency sweep failed"),
                }
            }
        }
    }

    fn fail(&mut self, reason: String, forget: Vec<(IdempotencyKey, u64)>) {
        lock(&self.shared.live).write_failure = Some(reason.clone());
        match &mut self.failure {
            Some(f) => f.forget.extend(forget),
            None => {
                tracing::error!(error = %reason, "queue write failed; answering 503 until the database is reopened");
                self.failure = Some(Failure {
                    reason,
                    last_attempt: Instant::now(),
                    forget,
                });
            }
        }
    }

    /// Reopens the database once `REOPEN_EVERY` has passed since the last try.
    fn recover_if_due(&mut self) {
        let Some(f) = &mut self.failure else { return };
        if f.last_attempt.elapsed() < REOPEN_EVERY {
            return;
        }
        f.last_attempt = Instant::now();
        match reopen(&self.shared, &f.forget) {
            Ok(syncer) => {
                self.syncer = syncer;
                self.failure = None;
                lock(&self.shared.live).write_failure = None;
                tracing::info!("queue database reopened; accepting batches again");
            }
            Err(e) => {
                let e = disk_reason(e);
                tracing::debug!(error = %e, "queue database still failing");
                lock(&self.shared.live).write_failure = Some(e.clone());
                if let Some(f) = &mut self.failure {
                    f.reason = e;
                }
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
    let live = lock(&shared.live);
    let mut on_disk = 0;
    let mut stale = 0;
    for item in store.tree.scan_prefix([PREFIX_INDEX]) {
        let (k, _) = item?;
        let Some(seq) = seq_of(&k) else { continue };
        on_disk += 1;
        if !live.index.contains_key(&seq) {
            fix.remove(&record_key(seq));
            fix.remove(&index_key(seq));
            stale += 1;
        }
    }
    let missing = (live.index.len() as u64).saturating_sub(on_disk - stale);
    if missing > 0 {
        tracing::error!(
            missing,
            "acknowledged batches missing after reopening the queue database"
        );
    }
    store.tree.apply_batch(fix)?;
    drop(live);
    store.db.flush()?;
    let mut syncer = Syncer::new(&shared.path)?;
    syncer.sync()?;
    if stale > 0 {
        tracing::info!(removed = stale, "stale batches removed after reopening");
    }
    Ok(syncer)
}

/// What the capacity and idempotency checks decided for one commit.
struct Plan {
    accepted: Vec<(u64, Request)>,
    rejected: Vec<(Request, QueueError)>,
    /// Retries of earlier appends: answered once this commit is durable (the
    /// earlier append may be in this very commit).
    replays: Vec<(Request, Appended)>,
    evicted: Vec<u64>,
    next_seq: u64,
}

/// Checks a request's idempotency key against this group and the tree.
/// `Some` decides the request without storing it.
fn check_key(
    shared: &Shared,
    tree: &sled::Tree,
    k: &IdempotencyKey,
    pending: &HashMap<[u8; 32], (u64, IdempotencyKey)>,
    now: u64,
) -> Option<Result<Appended, QueueError>> {
    let earlier = match pending.get(&k.scope) {
        Some((seq, p)) => Some((*seq, p.body, p.entries, p.service.clone())),
        None => {
            let window = shared
                .idempotency_window_ms
                .load(std::sync::atomic::Ordering::Relaxed);
            match idempotency::lookup(tree, &k.scope, now, window) {
                Ok(r) => r.map(|r| (r.seq, r.body, r.entries, r.service)),
                Err(e) => return Some(Err(e.into())),
            }
        }
    };
    let (seq, body, entries, service) = earlier?;
    Some(if body == k.body {
        Ok(Appended::Replayed {
            seq,
            entries,
            service,
        })
    } else {
        Err(QueueError::IdempotencyConflict)
    })
}

fn plan(shared: &Shared, tree: &sled::Tree, group: Vec<Request>) -> Plan {
    let live = lock(&shared.live);
    let max = shared.max_bytes;
    let mut bytes = live.bytes;
    let mut next_seq = live.next_seq;
    let mut oldest = live.index.iter();
    let now = now_ms();
    let mut p = Plan {
        accepted: Vec::with_capacity(group.len()),
        rejected: Vec::new(),
        replays: Vec::new(),
        evicted: Vec::new(),
        next_seq,
    };
    // Keys accepted earlier in this group, so a concurrent retry in the same
    // commit replays instead of storing twice.
    let mut pending: HashMap<[u8; 32], (u64, IdempotencyKey)> = HashMap::new();
    for req in group {
        if let Some(k) = &req.idempotency {
            match check_key(shared, tree, k, &pending, now) {
                Some(Ok(replay)) => {
                    p.replays.push((req, replay));
                    continue;
                }
                Some(Err(e)) => {
                    p.rejected.push((req, e));
                    continue;
                }
                None => {}
            }
        }
        let len = req.record.len() as u64;
        if bytes + len > max && shared.when_full == WhenFull::DropOldest && len <= max {
            // Evict only batches already on disk; this group's are newer.
            for (seq, e) in oldest.by_ref() {
                p.evicted.push(*seq);
                bytes -= u64::from(e.record_bytes);
                if bytes + len <= max {
                    break;
                }
            }
        }
        if bytes + len > max {
            p.rejected.push((
                req,
                QueueError::Full {
                    bytes,
                    max_bytes: max,
                },
            ));
            continue;
        }
        bytes += len;
        if let Some(k) = &req.idempotency {
            pending.insert(k.scope, (next_seq, k.clone()));
        }
        p.accepted.push((next_seq, req));
        next_seq += 1;
    }
    p.next_seq = next_seq;
    p
}

/// A failed commit: why, and the idempotency keys it may have left behind.
type CommitError = (String, Vec<(IdempotencyKey, u64)>);

/// Commits one group and answers every request in it.
fn commit(
    shared: &Shared,
    store: &Store,
    syncer: &mut Syncer,
    group: Vec<Request>,
) -> Result<(), CommitError> {
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

    let result = store
        .tree
        .apply_batch(batch)
        .and_then(|_| store.db.flush())
        .map_err(|e| e.to_string())
        .and_then(|_| syncer.sync().map_err(|e| e.to_string()));

    match result {
        Ok(()) => {
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
        }
        Err(reason) => {
            // Nothing of this commit is acknowledged. Whatever sled kept of
            // it is removed when the writer reopens the database.
            let forget = accepted
                .iter()
                .filter_map(|(_, req)| req.idempotency.clone())
                .map(|k| (k, now))
                .collect();
            lock(&shared.live).next_seq = next_seq;
            for req in accepted
                .into_iter()
                .map(|(_, r)| r)
                .chain(replays.into_iter().map(|(r, _)| r))
            {
                let _ = req.reply.send(Err(QueueError::Disk(reason.clone())));
            }
            return Err((reason, forget));
        }
    }
    Ok(())
}
