//! The write-ahead queue: accepted batches on disk until the sink confirms them.
//!
//! # Layout (one sled database in `queue.path`)
//!
//! Tree `queue`, keys by one-byte prefix so related writes share one atomic
//! `apply_batch`:
//! - `q` + seq (u64 big-endian): the record (see `record.rs`: versioned,
//!   CRC32C-checksummed, zstd-compressed bincode of the normalized batch);
//! - `i` + seq: its 18-byte index entry (kind, entries, bytes, enqueue time),
//!   so depth, entries, bytes and oldest age are rebuilt at start-up from a
//!   scan of small values, never by decoding records, and are then kept in
//!   memory — no request scans the queue;
//! - `k` + scope and `t` + time + scope: remembered `Idempotency-Key`s,
//!   committed atomically with their batch (see `idempotency.rs`);
//! - `m` + name: metadata — `next_seq` (so sequence numbers, and with them
//!   Kafka `ingest-id`s, never repeat after the queue drains and restarts)
//!   and `node_id`.
//!
//! Tree `dead_letter`: seq → the entries of that batch the sink refused for
//! good (or its undecodable record), with the reason (`dead_letter.rs`).
//!
//! # What a 202 promises
//! A batch is acknowledged only after its group commit returned: the records
//! were applied, `Db::flush()` wrote sled's log buffers, and then
//! `fdatasync` ran on the log file (`<path>/db`) and on every large-value file
//! under `<path>/blobs/` that is new or changed since the last sync, and an
//! fsync on `blobs/` and on the queue directory if their entries changed
//! (`syncer.rs`). NOTE: `flush()` alone is only a `sync_file_range`
//! (NOTES.md) — it survives a process crash but not a power loss — and sled
//! never syncs a directory, hence the explicit syncs. The queue directory
//! itself, and every parent we create, is followed by an fsync of its parent
//! before anything in it is acknowledged (`durable_dir.rs`). Concurrent requests share one commit
//! (group commit): the writer thread takes everything pending, commits it
//! once and wakes every waiter, so the cost of the fsync is spread over the
//! group and nobody waits on a timer.
//!
//! # What a crash can lose
//! - kill -9 / a panic: nothing acknowledged. A batch whose commit had not
//!   returned was never acknowledged; the agent retries it (it may then be
//!   stored twice: at-least-once).
//! - power loss / kernel crash: nothing acknowledged, provided the disk honours
//!   fdatasync (`tests/power_cut.rs` cuts power on a filesystem that forgets
//!   whatever was not synced). A removal (ack from the sink) is not synced on
//!   its own — the writer syncs such changes within 100 ms — so a crash can
//!   bring back batches that were already delivered: they are sent again
//!   with the same `ingest-id`s, never lost.
//!
//! # When the disk fails
//! A failed apply, flush or sync acknowledges nothing of its commit: every
//! request in it gets a 503. A write error (ENOSPC) is recoverable: sled
//! then fails every later write (its error is sticky), so the writer stops
//! writing, answers 503 at once and reopens the database every second; once
//! that works it removes what the failed commits and the refused removals
//! left and goes on (`writer::reopen`). A failed fsync is not: the kernel
//! may have dropped the pages it could not write, so the queue stays failed
//! until the process restarts and reads the disk again (`writer.rs` has the
//! state diagram). `/ready` is 503 in between.
//!
//! # How space is reused
//! A delivered batch is removed from both keys; sled rewrites and reclaims its
//! segments in the background. `bytes` (the live record bytes) is what
//! `max_bytes` limits; `disk_bytes` is what the directory takes, which sled
//! keeps at a few times the live bytes and does not hand back to the OS.

mod dead_letter;
pub(crate) mod durable_dir;
mod idempotency;
mod ledger;
mod plan;
mod record;
mod syncer;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{oneshot, Notify};

pub use dead_letter::{Refusal, Refused};
pub use idempotency::{Appended, IdempotencyKey};
pub use record::{
    decode as decode_record, encode as encode_record, IndexEntry, Origin, RecordError,
};
/// For the fuzz targets: records of replayed batches (version 2).
#[doc(hidden)]
pub use record::{
    decode_view as decode_record_view, decode_with_origin as decode_record_with_origin,
    encode_with_origin as encode_record_with_origin,
};

use crate::config::{QueueConfig, WhenFull};
use crate::model::Batch;

const TREE_QUEUE: &str = "queue";
const TREE_DEAD_LETTER: &str = "dead_letter";
const PREFIX_INDEX: u8 = b'i';
const PREFIX_RECORD: u8 = b'q';
const PREFIX_IDEM: u8 = b'k';
const PREFIX_IDEM_TIME: u8 = b't';
const META_NEXT_SEQ: &[u8] = b"mnext_seq";
const META_NODE_ID: &[u8] = b"mnode_id";

/// Why the queue did not take or give a batch.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// `max_bytes` is reached and `when_full = "reject"` (or the batch alone is
    /// larger than the queue). Retrying after the forwarder drains helps.
    #[error("queue is full ({bytes} of {max_bytes} bytes used)")]
    Full { bytes: u64, max_bytes: u64 },
    /// A write, flush or sync failed (ENOSPC, EIO). Nothing was acknowledged;
    /// retrying helps once the disk recovers.
    #[error("queue disk error: {0}")]
    Disk(String),
    /// The queue is shutting down. Retrying against this process never helps.
    #[error("queue is closed")]
    Closed,
    /// The `Idempotency-Key` was used before with a different body. Retrying
    /// the same request never helps.
    #[error("Idempotency-Key was used before with a different body")]
    IdempotencyConflict,
    /// The database cannot be opened: locked by another process, unreadable
    /// or corrupt. Retrying does not help until an operator acts.
    #[error("cannot open queue at {path}: {reason}")]
    Open { path: PathBuf, reason: String },
}

/// A failed sled or file operation on an open queue is a disk failure.
impl From<sled::Error> for QueueError {
    fn from(e: sled::Error) -> Self {
        QueueError::Disk(e.to_string())
    }
}

impl From<std::io::Error> for QueueError {
    fn from(e: std::io::Error) -> Self {
        QueueError::Disk(e.to_string())
    }
}

impl QueueError {
    /// Whether the agent should retry the same batch later.
    pub fn is_retriable(&self) -> bool {
        matches!(self, QueueError::Full { .. } | QueueError::Disk(_))
    }
}

/// Counters describing what is on disk (SPEC §5 `queue`).
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, poem_openapi::Object,
)]
pub struct QueueStats {
    pub depth_batches: u64,
    pub depth_entries: u64,
    pub bytes: u64,
    pub disk_bytes: u64,
    pub max_bytes: u64,
    pub oldest_age_seconds: crate::stats::Nullable<f64>,
    pub dropped_batches: u64,
    pub dead_letter_batches: u64,
    /// Failed commits and syncs since start (Prometheus only).
    #[serde(skip)]
    #[oai(skip)]
    pub disk_errors: u64,
}

/// A batch read back: owned, or with strings borrowed from its record
/// (`Queue::read_view`).
#[derive(Debug, Clone)]
pub struct Stored<S = String> {
    pub seq: u64,
    pub batch: Batch<S>,
    /// Set for entries replayed from the dead letters: their first ids.
    pub origin: Option<Origin>,
}

impl<S> Stored<S> {
    /// Appends the `ingest-id` of entry `i` (SPEC §4): `<node_id>:<seq>:<i>`,
    /// or for a replayed entry the id it was first sent with.
    pub fn write_ingest_id(&self, node_id: &str, i: usize, out: &mut String) {
        use std::fmt::Write as _;
        let _ = match &self.origin {
            None => write!(out, "{node_id}:{}:{i}", self.seq),
            Some(o) => write!(out, "{}:{}:{}", o.node_id, o.seq, o.indices[i]),
        };
    }

    pub fn ingest_id(&self, node_id: &str, i: usize) -> String {
        let mut id = String::new();
        self.write_ingest_id(node_id, i, &mut id);
        id
    }

    /// The origin of the entries at `positions`, for a dead letter or a
    /// replay that holds only them.
    pub fn origin_of(&self, node_id: &str, positions: &[usize]) -> Origin {
        match &self.origin {
            None => Origin {
                node_id: node_id.to_string(),
                seq: self.seq,
                indices: positions.iter().map(|&p| p as u32).collect(),
            },
            Some(o) => Origin {
                node_id: o.node_id.clone(),
                seq: o.seq,
                indices: positions.iter().map(|&p| o.indices[p]).collect(),
            },
        }
    }
}

/// The in-memory mirror of the index, kept under one lock.
#[derive(Debug, Default)]
struct Live {
    index: BTreeMap<u64, IndexEntry>,
    bytes: u64,
    entries: u64,
    next_seq: u64,
    /// `next_seq` as of the last successful commit: what the ledger may
    /// record (a failed commit burns sequence numbers sled never kept).
    committed_next_seq: u64,
    dropped: u64,
    dead_letters: u64,
    /// Set by a failed commit, cleared by the next good one (`/ready`).
    write_failure: Option<String>,
}

impl Live {
    fn insert(&mut self, seq: u64, e: IndexEntry) {
        if self.index.insert(seq, e).is_none() {
            self.bytes += u64::from(e.record_bytes);
            self.entries += u64::from(e.entries);
        }
    }

    fn remove(&mut self, seq: u64) -> Option<IndexEntry> {
        let e = self.index.remove(&seq)?;
        self.bytes -= u64::from(e.record_bytes);
        self.entries -= u64::from(e.entries);
        Some(e)
    }
}

/// The open sled database and its trees. Swapped as a whole when the writer
/// reopens the database after a write failure (see `writer.rs`).
#[derive(Clone)]
struct Store {
    db: sled::Db,
    tree: sled::Tree,
    dead: sled::Tree,
}

impl Store {
    fn open(path: &Path, cache_bytes: u64) -> Result<Store, QueueError> {
        let db = open_db(path, cache_bytes)?;
        let tree = db.open_tree(TREE_QUEUE).map_err(|e| open_err(path, e))?;
        let dead = db
            .open_tree(TREE_DEAD_LETTER)
            .map_err(|e| open_err(path, e))?;
        Ok(Store { db, tree, dead })
    }
}

struct Shared {
    /// NOTE: sled keeps the first I/O error it meets (ENOSPC, EIO) as a
    /// global error and fails every later write with it, so the only way
    /// back after the disk recovers is a new `Db`; hence the lock.
    /// `None` only while the writer reopens it.
    store: std::sync::RwLock<Option<Store>>,
    cache_bytes: u64,
    path: PathBuf,
    node_id: String,
    max_bytes: u64,
    when_full: WhenFull,
    live: Mutex<Live>,
    /// Wakes the forwarder when a commit made new batches visible.
    appended: Notify,
    /// How long an `Idempotency-Key` is remembered (`server.idempotency_window_s`).
    idempotency_window_ms: std::sync::atomic::AtomicU64,
    /// The committed high-water mark kept outside sled (see `ledger.rs`).
    ledger: ledger::Ledger,
    /// Something changed on disk outside a commit (an ack, a dead-letter
    /// move, a sweep): the writer syncs it within `writer::IDLE_TICK`.
    unsynced: AtomicBool,
    /// What the directory takes on disk, sampled by the writer.
    disk_bytes: AtomicU64,
    /// Failed commits and syncs since start.
    disk_errors: AtomicU64,
    /// An fsync failed: the writer refuses every write until a restart, so
    /// the systemd watchdog stops and systemd restarts us.
    write_fatal: AtomicBool,
    /// Test hook (`inject_dead_letter_fault`): a `DeadLetterFault` as u8.
    dead_letter_fault: std::sync::atomic::AtomicU8,
}

/// A dead-letter move the tests make fail (`Queue::inject_dead_letter_fault`):
/// sled offers no way to make one read or write fail on demand.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterFault {
    None = 0,
    /// Reading the record fails.
    Read = 1,
    /// Writing the move fails.
    Move = 2,
}

/// Handle to the queue; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    shared: Arc<Shared>,
    writer: Arc<Mutex<Option<writer::Handle>>>,
}

pub(crate) fn record_key(seq: u64) -> [u8; 9] {
    prefixed(PREFIX_RECORD, seq)
}

pub(crate) fn index_key(seq: u64) -> [u8; 9] {
    prefixed(PREFIX_INDEX, seq)
}

fn prefixed(prefix: u8, seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn seq_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(1..9)?.try_into().ok()?))
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn open_err(path: &Path, reason: impl ToString) -> QueueError {
    QueueError::Open {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

impl Shared {
    fn store(&self) -> Result<Store, QueueError> {
        let guard = self.store.read().unwrap_or_else(|p| p.into_inner());
        guard
            .clone()
            .ok_or_else(|| QueueError::Disk("the queue database is being reopened".into()))
    }

    fn set_store(&self, store: Option<Store>) {
        *self.store.write().unwrap_or_else(|p| p.into_inner()) = store;
    }
}

impl Queue {
    /// Opens (or creates) the queue and starts its writer thread.
    pub fn open(cfg: &QueueConfig) -> Result<Queue, QueueError> {
        let shared = Arc::new(Self::open_shared(cfg, true)?);
        let writer = writer::Handle::start(shared.clone()).map_err(|e| open_err(&cfg.path, e))?;
        Ok(Queue {
            shared,
            writer: Arc::new(Mutex::new(Some(writer))),
        })
    }

    /// Opens the database without a writer, writing nothing of its own: for
    /// offline inspection.
    pub fn open_read_only(cfg: &QueueConfig) -> Result<Queue, QueueError> {
        Ok(Queue {
            shared: Arc::new(Self::open_shared(cfg, false)?),
            writer: Arc::new(Mutex::new(None)),
        })
    }

    fn open_shared(cfg: &QueueConfig, writable: bool) -> Result<Shared, QueueError> {
        let path = cfg.path.clone();
        if writable {
            durable_dir::create_dir_all(&path).map_err(|e| open_err(&path, e))?;
        } else if !path.is_dir() {
            return Err(open_err(&path, "no queue here"));
        }
        let store = Store::open(&path, cfg.cache_bytes)?;
        let Store { db, tree, dead } = &store;

        let mut live = Live::default();
        for item in tree.scan_prefix([PREFIX_INDEX]) {
            let (k, v) = item.map_err(|e| open_err(&path, e))?;
            let (Some(seq), Some(entry)) = (seq_of(&k), IndexEntry::decode(&v)) else {
                return Err(open_err(&path, "unreadable index entry"));
            };
            live.insert(seq, entry);
        }
        let stored_next = tree
            .get(META_NEXT_SEQ)
            .map_err(|e| open_err(&path, e))?
            .and_then(|v| Some(u64::from_be_bytes(v.as_ref().try_into().ok()?)))
            .unwrap_or(0);
        let after_last = live.index.keys().next_back().map_or(0, |s| s + 1);
        live.next_seq = stored_next.max(after_last);
        live.committed_next_seq = live.next_seq;
        live.dead_letters = dead.len() as u64;

        let path_for_sample = path.clone();
        let ledger = ledger::Ledger::new(&path);
        if let Some(recorded) = ledger.read() {
            if live.next_seq < recorded {
                return Err(open_err(
                    &path,
                    format!(
                        "the queue database has lost acknowledged batches: it ends at sequence {} \
                         but {recorded} were committed (its log file was truncated or replaced). \
                         Refusing to start over it. First run `edge-ingester queue inspect \
                         --data-dir {}` to see what is still there and keep a copy of the \
                         directory: starting on an empty queue discards whatever it still holds",
                        live.next_seq,
                        path.display()
                    ),
                ));
            }
        }
        if writable {
            // NOTE: after a kill -9 the page cache can still hold a commit
            // that was never synced (nor acknowledged). Recording its
            // next_seq before making it durable would let a power cut right
            // after start-up leave the ledger ahead of the disk, and the
            // next start would refuse a good queue.
            sync_store(&path, db).map_err(|e| open_err(&path, e))?;
            ledger
                .write(live.next_seq)
                .map_err(|e| open_err(&path, e))?;
        }

        let node_id = match tree.get(META_NODE_ID).map_err(|e| open_err(&path, e))? {
            _ if !cfg.node_id.is_empty() => cfg.node_id.clone(),
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None if !writable => "(none yet)".to_string(),
            None => {
                let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
                tree.insert(META_NODE_ID, id.as_bytes())
                    .map_err(|e| open_err(&path, e))?;
                db.flush().map_err(|e| open_err(&path, e))?;
                id
            }
        };
        Ok(Shared {
            store: std::sync::RwLock::new(Some(store)),
            cache_bytes: cfg.cache_bytes,
            path,
            node_id,
            max_bytes: cfg.max_bytes,
            when_full: cfg.when_full,
            live: Mutex::new(live),
            appended: Notify::new(),
            idempotency_window_ms: std::sync::atomic::AtomicU64::new(
                crate::config::DEFAULT_IDEMPOTENCY_WINDOW_S * 1000,
            ),
            ledger,
            unsynced: AtomicBool::new(false),
            disk_bytes: AtomicU64::new(dir_allocated_bytes(&path_for_sample)),
            disk_errors: AtomicU64::new(0),
            write_fatal: AtomicBool::new(false),
            dead_letter_fault: std::sync::atomic::AtomicU8::new(DeadLetterFault::None as u8),
        })
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        lock(&self.shared.live)
    }

    fn store(&self) -> Result<Store, QueueError> {
        self.shared.store()
    }

    /// Generated once per queue directory; prefixes every `ingest-id`.
    pub fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    /// How long `Idempotency-Key`s are remembered.
    pub fn set_idempotency_window(&self, window: std::time::Duration) {
        self.shared.idempotency_window_ms.store(
            window.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Whether the writer thread can still store appends (the systemd
    /// watchdog stops when it cannot). False once closed, if the thread
    /// died, or after an fsync failure, which only a restart clears.
    pub fn writer_alive(&self) -> bool {
        !self.shared.write_fatal.load(Ordering::Acquire)
            && lock(&self.writer).as_ref().is_some_and(|w| w.is_alive())
    }

    /// Stores an encoded batch durably; returns its sequence number once the
    /// group commit that carried it has been synced to disk.
    pub async fn append(&self, record: Vec<u8>, index: IndexEntry) -> Result<u64, QueueError> {
        self.append_idempotent(record, index, None)
            .await
            .map(|a| a.seq())
    }

    /// `append`, unless `key` names an earlier append within the window:
    /// then nothing is stored and the earlier batch is returned (same body),
    /// or `IdempotencyConflict` (different body).
    pub async fn append_idempotent(
        &self,
        record: Vec<u8>,
        index: IndexEntry,
        key: Option<IdempotencyKey>,
    ) -> Result<Appended, QueueError> {
        let (tx, rx) = oneshot::channel();
        {
            let guard = lock(&self.writer);
            let Some(w) = guard.as_ref() else {
                return Err(QueueError::Closed);
            };
            w.submit(writer::Request {
                record,
                index,
                idempotency: key,
                reply: tx,
            })?;
        }
        rx.await.map_err(|_| QueueError::Closed)?
    }

    /// The first live batch after `after` (or the head), by index only.
    pub fn next_after(&self, after: Option<u64>) -> Option<(u64, IndexEntry)> {
        let live = self.live();
        let mut range = match after {
            Some(s) => live.index.range(s + 1..),
            None => live.index.range(..),
        };
        range.next().map(|(s, e)| (*s, *e))
    }

    /// Reads and decodes one batch. `Ok(None)`: nothing to send — gone
    /// meanwhile (dropped or acknowledged), or undecodable and therefore
    /// moved to the dead letters with the reason, so the queue moves on.
    /// `Err`: the disk could not be read, or an undecodable batch could not
    /// be moved; either way the batch is still there, at its place.
    pub fn read(&self, seq: u64) -> Result<Option<Stored>, QueueError> {
        self.read_record(seq, |bytes| {
            record::decode_with_origin(bytes).map(|(batch, origin)| Stored { seq, batch, origin })
        })
    }

    /// `read`, with the batch's strings borrowed from its record for the
    /// length of `f`: what the drain renders from (`record::decode_view`,
    /// whose limits `f` shares: it must not encode or decode a record).
    pub fn read_view<T>(
        &self,
        seq: u64,
        f: impl FnOnce(&Stored<&str>) -> T,
    ) -> Result<Option<T>, QueueError> {
        self.read_record(seq, |bytes| {
            record::decode_view(bytes, |batch, origin| f(&Stored { seq, batch, origin }))
        })
    }

    fn read_record<T>(
        &self,
        seq: u64,
        decode: impl FnOnce(&[u8]) -> Result<T, RecordError>,
    ) -> Result<Option<T>, QueueError> {
        let bytes = match self.store()?.tree.get(record_key(seq)) {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match decode(&bytes) {
            Ok(t) => Ok(Some(t)),
            Err(err) => {
                self.dead_letter(seq, &err.to_string())?;
                Ok(None)
            }
        }
    }

    /// Removes a delivered batch. Not synced on its own (see the contract).
    /// The batch leaves the live index even if the disk write fails: it was
    /// delivered, and the writer removes it from disk when it reopens the
    /// database (`writer::reopen`) — or, after a crash, it is sent again.
    pub fn ack(&self, seq: u64) -> Result<(), QueueError> {
        self.ack_all(&[seq])
    }

    /// `ack` of several delivered batches in one write.
    pub fn ack_all(&self, seqs: &[u64]) -> Result<(), QueueError> {
        let mut b = sled::Batch::default();
        for &seq in seqs {
            b.remove(&record_key(seq));
            b.remove(&index_key(seq));
        }
        let removed = self.store().and_then(|s| Ok(s.tree.apply_batch(b)?));
        self.shared.unsynced.store(true, Ordering::Release);
        let mut live = self.live();
        for &seq in seqs {
            live.remove(seq);
        }
        removed
    }

    /// Moves a batch that can never be delivered to the dead-letter tree,
    /// with the reason, so the queue keeps moving. `Err`: the disk refused
    /// to read or move it; the batch stays queued, at its place, and the
    /// caller tries again later — never skips it.
    pub fn dead_letter(&self, seq: u64, reason: &str) -> Result<(), QueueError> {
        self.dead_letter_entries(seq, Refused::All(reason))
            .map(|_| ())
    }

    /// Moves the `refused` entries of a batch to the dead letters and removes
    /// the batch: the sink confirmed every other entry. Returns how many
    /// entries the dead letter holds. `Err` as for `dead_letter`: nothing
    /// moved, the whole batch stays queued at its place.
    pub fn dead_letter_entries(&self, seq: u64, refused: Refused<'_>) -> Result<usize, QueueError> {
        let moved = self.try_dead_letter(seq, refused);
        self.shared.unsynced.store(true, Ordering::Release);
        let reason = match refused {
            Refused::All(r) => r.to_string(),
            Refused::Entries(list) => format!("{} entries refused", list.len()),
        };
        match &moved {
            Ok(n) => tracing::warn!(seq, entries = n, reason, "moved to dead letters"),
            Err(e) => {
                tracing::error!(seq, reason, error = %e, "cannot move to dead letters; the batch stays queued")
            }
        }
        moved
    }

    fn try_dead_letter(&self, seq: u64, refused: Refused<'_>) -> Result<usize, QueueError> {
        let fault = self.shared.dead_letter_fault.load(Ordering::Relaxed);
        let injected = |what: &str| QueueError::Disk(format!("injected {what} fault"));
        let store = self.store()?;
        if fault == DeadLetterFault::Read as u8 {
            return Err(injected("read"));
        }
        // NOTE: a read error must not pass for "absent": the move below
        // would then delete the batch with an empty dead letter.
        let Some(record) = store.tree.get(record_key(seq))? else {
            return Ok(0); // delivered or evicted meanwhile
        };
        if fault == DeadLetterFault::Move as u8 {
            return Err(injected("move"));
        }
        let letter = dead_letter::letter(seq, self.node_id(), &record, refused);
        // One transaction over both trees: a crash can never leave the dead
        // letter written and the batch still queued (it would be sent again,
        // Kafka's part duplicated, and the letter counted twice).
        use sled::Transactional as _;
        let moved: sled::transaction::TransactionResult<bool, ()> = (&store.tree, &store.dead)
            .transaction(|(queued, dead)| {
                let new = dead
                    .insert(&seq.to_be_bytes(), letter.value.as_slice())?
                    .is_none();
                queued.remove(&record_key(seq))?;
                queued.remove(&index_key(seq))?;
                Ok(new)
            });
        let new = moved.map_err(|e| QueueError::Disk(format!("dead-letter move failed: {e:?}")))?;
        store.db.flush()?;
        let mut live = self.live();
        live.remove(seq);
        live.dead_letters += u64::from(new);
        Ok(letter.entries)
    }

    /// Test hook: makes later dead-letter moves fail (see `DeadLetterFault`).
    #[doc(hidden)]
    pub fn inject_dead_letter_fault(&self, fault: DeadLetterFault) {
        self.shared
            .dead_letter_fault
            .store(fault as u8, Ordering::Relaxed);
    }

    /// Appends every decodable dead letter to the tail of the queue (new
    /// sequence numbers; the entries keep their first ingest-ids, so
    /// consumers can de-duplicate them, but arrive after everything queued
    /// since) and removes it from the dead letters. Returns
    /// (replayed, kept because undecodable).
    pub async fn replay_dead_letters(&self) -> Result<(u64, u64), QueueError> {
        let (mut replayed, mut kept) = (0, 0);
        let store = self.store()?;
        for item in store.dead.iter() {
            let (k, v) = item?;
            let seq = k.as_ref().try_into().map(u64::from_be_bytes).ok();
            let Some((record, index)) =
                seq.and_then(|seq| dead_letter::replayable(seq, self.node_id(), &v))
            else {
                kept += 1;
                continue;
            };
            self.append(record, index).await?;
            store.dead.remove(k)?;
            self.live().dead_letters -= 1;
            replayed += 1;
        }
        store.db.flush()?;
        Ok((replayed, kept))
    }

    /// Resolves when a commit made new batches visible (or `close` ran).
    pub async fn wait_for_append(&self) {
        self.shared.appended.notified().await;
    }

    /// Registers interest before checking `next_after`, so no wake-up is lost.
    pub fn appended(&self) -> &Notify {
        &self.shared.appended
    }

    /// Why the queue cannot take writes, or `None` if it can.
    pub fn not_ready_reason(&self, high_water_ratio: f64) -> Option<String> {
        let live = self.live();
        if let Some(reason) = &live.write_failure {
            return Some(format!("queue write failed: {reason}"));
        }
        let limit = (self.shared.max_bytes as f64 * high_water_ratio) as u64;
        if live.bytes > limit {
            return Some(format!(
                "queue above its high-water mark ({} of {} bytes)",
                live.bytes, self.shared.max_bytes
            ));
        }
        None
    }

    /// Cheap: `disk_bytes` is the writer's latest sample, never a walk.
    pub fn stats(&self) -> QueueStats {
        let disk_bytes = self.shared.disk_bytes.load(Ordering::Relaxed);
        let live = self.live();
        let oldest_age_seconds = live
            .index
            .values()
            .next()
            .map(|e| now_ms().saturating_sub(e.enqueued_at_ms) as f64 / 1000.0);
        QueueStats {
            depth_batches: live.index.len() as u64,
            depth_entries: live.entries,
            bytes: live.bytes,
            disk_bytes,
            max_bytes: self.shared.max_bytes,
            oldest_age_seconds: crate::stats::Nullable(oldest_age_seconds),
            dropped_batches: live.dropped,
            dead_letter_batches: live.dead_letters,
            disk_errors: self.shared.disk_errors.load(Ordering::Relaxed),
        }
    }

    /// Sequence numbers of the oldest and newest live batch.
    pub fn seq_range(&self) -> Option<(u64, u64)> {
        let live = self.live();
        let first = *live.index.keys().next()?;
        let last = *live.index.keys().next_back()?;
        Some((first, last))
    }

    /// Dead letters as (seq, reason), oldest first.
    pub fn dead_letters(&self) -> Vec<(u64, String)> {
        let Ok(store) = self.store() else {
            return Vec::new();
        };
        store
            .dead
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, v)| {
                let seq = u64::from_be_bytes(k.as_ref().try_into().ok()?);
                Some((seq, dead_letter::reason_of(&v)))
            })
            .collect()
    }

    /// Stops the writer after it committed what was submitted, then flushes.
    pub fn close(&self) {
        let writer = lock(&self.writer).take();
        let had_writer = writer.is_some();
        if let Some(w) = writer {
            w.shutdown();
        }
        let flushed = self.store().and_then(|s| Ok(s.db.flush()?));
        if let Err(e) = flushed {
            tracing::error!(error = %e, "final queue flush failed");
        } else if had_writer {
            let committed = self.live().committed_next_seq;
            if let Err(e) = self.shared.ledger.write(committed) {
                tracing::error!(error = %e, "cannot update the queue ledger");
            }
        }
        self.shared.appended.notify_waiters();
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

/// Bytes the directory really occupies (allocated blocks, so sparse files
/// count for what they hold). NOTE: sled's own `size_on_disk()` reported a
/// few hundred bytes for a directory holding megabytes, so it is not used.
fn dir_allocated_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_allocated_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// Makes what sled holds durable: its buffers written, its log file
/// fdatasynced, the directory's entries fsynced.
fn sync_store(path: &Path, db: &sled::Db) -> Result<(), QueueError> {
    db.flush()?;
    std::fs::File::open(path.join("db"))?.sync_data()?;
    durable_dir::sync_dir(path)?;
    Ok(())
}

/// How long `open` waits for another holder of the queue's lock to let go.
/// NOTE: sled releases its file lock when the last internal reference is
/// dropped, and some of those drops are deferred by its epoch-based garbage
/// collector: reopening right after closing in the same process failed with
/// "could not acquire lock" in 3 of 5 test runs. A process that is still
/// exiting during a restart is the same case.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn open_db(path: &Path, cache_bytes: u64) -> Result<sled::Db, QueueError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let opened = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::LowSpace)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            Err(e) if is_lock_error(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(open_err(path, describe_open_error(&e))),
        }
    }
}

fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock)
        || e.to_string().contains("could not acquire lock")
}

/// sled reports a held lock as an opaque I/O error; say what it means.
fn describe_open_error(e: &sled::Error) -> String {
    let text = e.to_string();
    if text.contains("lock")
        || text.contains("WouldBlock")
        || text.contains("temporarily unavailable")
    {
        format!("{text} — another edge-ingester process is using this queue; stop it first")
    } else {
        format!("{text} — run `edge-ingester queue inspect` or move the directory aside")
    }
}

/// A poisoned lock only means another thread panicked mid-update of plain
/// counters; keep serving with what is there rather than cascading the panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sending side of the writer, used by `append`.
pub(crate) type WriteSender = std::sync::mpsc::Sender<writer::Request>;
