//! The group committer: one thread that turns pending appends into one
//! synced sled write and wakes every waiter.
//!
//! A dedicated OS thread because everything it does blocks (sled, fsync).
//! Batching is natural, not timed: while one commit syncs, new requests queue
//! up in the channel and all of them go into the next commit.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::{index_key, lock, now_ms, record_key, IndexEntry, QueueError, Shared, META_NEXT_SEQ};
use crate::config::WhenFull;

/// Most appends folded into one commit, so one commit's latency stays bounded
/// under a burst.
const MAX_GROUP: usize = 1024;

pub(crate) struct Request {
    pub record: Vec<u8>,
    pub index: IndexEntry,
    pub reply: oneshot::Sender<Result<u64, QueueError>>,
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
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        commit(&shared, &mut syncer, group);
    }
}

/// What the capacity check decided for one commit.
struct Plan {
    accepted: Vec<(u64, Request)>,
    rejected: Vec<(Request, QueueError)>,
    evicted: Vec<u64>,
    next_seq: u64,
}

fn plan(shared: &Shared, group: Vec<Request>) -> Plan {
    let live = lock(&shared.live);
    let max = shared.max_bytes;
    let mut bytes = live.bytes;
    let mut next_seq = live.next_seq;
    let mut oldest = live.index.iter();
    let mut p = Plan {
        accepted: Vec::with_capacity(group.len()),
        rejected: Vec::new(),
        evicted: Vec::new(),
        next_seq,
    };
    for req in group {
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
        evicted,
        next_seq,
    } = plan(shared, group);
    for (req, err) in rejected {
        let _ = req.reply.send(Err(err));
    }
    if accepted.is_empty() && evicted.is_empty() {
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
                let _ = req.reply.send(Ok(seq));
            }
        }
        Err(reason) => {
            tracing::error!(error = %reason, batches = accepted.len(), "queue commit failed; answering 503");
            // Best effort: do not let a batch that was refused be forwarded
            // later if sled kept it in memory.
            let mut undo = sled::Batch::default();
            for (seq, _) in &accepted {
                undo.remove(&record_key(*seq));
                undo.remove(&index_key(*seq));
            }
            let _ = shared.tree.apply_batch(undo);
            {
                let mut live = lock(&shared.live);
                live.next_seq = next_seq;
                live.write_failure = Some(reason.clone());
            }
            for (_, req) in accepted {
                let _ = req.reply.send(Err(QueueError::Disk(reason.clone())));
            }
        }
    }
}
