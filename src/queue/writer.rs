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

use tokio::sync::{mpsc, oneshot};

use super::idempotency::{self, Appended, IdempotencyKey};
use super::{index_key, lock, now_ms, record_key, IndexEntry, QueueError, Shared, META_NEXT_SEQ};
use crate::config::WhenFull;

/// Most appends folded into one commit, so one commit's latency stays bounded
/// under a burst.
const MAX_GROUP: usize = 1024;
/// How often expired idempotency keys are swept.
const SWEEP_EVERY_MS: u64 = 60_000;
/// How often the ledger records the committed high-water mark: one extra
/// fsync a second at most, off the acknowledgement path.
const LEDGER_EVERY_MS: u64 = 1_000;

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
        let (tx, rx) = mpsc::unbounded_channel();
        let syncer = Syncer::new(&shared.path)?;
        let thread = std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || run(shared, rx, syncer))?;
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

fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Request>, mut syncer: Syncer) {
    let mut last_sweep_ms = 0;
    let mut last_ledger_ms = now_ms();
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        commit(&shared, &mut syncer, group);
        let now = now_ms();
        if now.saturating_sub(last_ledger_ms) >= LEDGER_EVERY_MS {
            last_ledger_ms = now;
            // Only what the commit above made durable: the ledger never runs
            // ahead of sled, so a crash cannot make it cry wolf.
            let committed = lock(&shared.live).committed_next_seq;
            if let Err(e) = shared.ledger.write(committed) {
                tracing::warn!(error = %e, "cannot update the queue ledger");
            }
        }
        if now.saturating_sub(last_sweep_ms) >= SWEEP_EVERY_MS {
            last_sweep_ms = now;
            let window = shared
                .idempotency_window_ms
                .load(std::sync::atomic::Ordering::Relaxed);
            match idempotency::sweep(&shared.tree, now, window) {
                Ok(0) => {}
                Ok(n) => tracing::debug!(removed = n, "expired idempotency keys swept"),
                Err(e) => tracing::warn!(error = %e, "idempotency sweep failed"),
            }
        }
    }
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
            match idempotency::lookup(&shared.tree, &k.scope, now, window) {
                Ok(r) => r.map(|r| (r.seq, r.body, r.entries, r.service)),
                Err(e) => return Some(Err(QueueError::Disk(e.to_string()))),
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

fn plan(shared: &Shared, group: Vec<Request>) -> Plan {
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
            match check_key(shared, k, &pending, now) {
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

fn commit(shared: &Shared, syncer: &mut Syncer, group: Vec<Request>) {
    let Plan {
        accepted,
        rejected,
        replays,
        evicted,
        next_seq,
    } = plan(shared, group);
    for (req, err) in rejected {
        let _ = req.reply.send(Err(err));
    }
    if accepted.is_empty() && evicted.is_empty() {
        for (req, replay) in replays {
            let _ = req.reply.send(Ok(replay));
        }
        return;
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

    let result = shared
        .tree
        .apply_batch(batch)
        .and_then(|_| shared.db.flush())
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
            tracing::error!(error = %reason, batches = accepted.len(), "queue commit failed; answering 503");
            // Best effort: do not let a batch that was refused be forwarded
            // later if sled kept it in memory.
            let mut undo = sled::Batch::default();
            for (seq, req) in &accepted {
                undo.remove(&record_key(*seq));
                undo.remove(&index_key(*seq));
                if let Some(k) = &req.idempotency {
                    idempotency::forget(&mut undo, k, now);
                }
            }
            let _ = shared.tree.apply_batch(undo);
            {
                let mut live = lock(&shared.live);
                live.next_seq = next_seq;
                live.write_failure = Some(reason.clone());
            }
            for req in accepted
                .into_iter()
                .map(|(_, r)| r)
                .chain(replays.into_iter().map(|(r, _)| r))
            {
                let _ = req.reply.send(Err(QueueError::Disk(reason.clone())));
            }
        }
    }
}
