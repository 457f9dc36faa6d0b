//! Deciding a group commit before it is written: which requests are stored
//! (and under which sequence numbers), which are retries of earlier ones,
//! which are refused, and — with `when_full = "drop_oldest"` — which old
//! batches are evicted to make room.
//!
//! Evictions are tentative per request: they are kept only if the request
//! they make room for is accepted, and they are written in the same atomic
//! commit as that request, so a refused request evicts nothing and a failed
//! commit evicts nothing either.

use std::collections::HashMap;

use super::idempotency::{self, Appended, IdempotencyKey};
use super::writer::Request;
use super::{lock, now_ms, QueueError, Shared};
use crate::config::WhenFull;

/// What the capacity and idempotency checks decided for one commit.
pub(crate) struct Plan {
    pub accepted: Vec<(u64, Request)>,
    pub rejected: Vec<(Request, QueueError)>,
    /// Retries of earlier appends: answered once this commit is durable (the
    /// earlier append may be in this very commit).
    pub replays: Vec<(Request, Appended)>,
    pub evicted: Vec<u64>,
    pub next_seq: u64,
}

/// An earlier append a key names: (seq, body digest, entries, service).
type Earlier = (u64, [u8; 32], u32, String);

/// Looks every key of the group up on disk, before the in-memory index is
/// locked, so no sled read happens under that lock.
fn look_up_keys(
    shared: &Shared,
    tree: &sled::Tree,
    group: &[Request],
    now: u64,
) -> Vec<Result<Option<Earlier>, QueueError>> {
    let window = shared
        .idempotency_window_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    group
        .iter()
        .map(|req| match &req.idempotency {
            None => Ok(None),
            Some(k) => idempotency::lookup(tree, &k.scope, now, window)
                .map(|r| r.map(|r| (r.seq, r.body, r.entries, r.service)))
                .map_err(QueueError::from),
        })
        .collect()
}

/// How a key compares with an earlier append: `None` when it names none.
fn decide_key(
    k: &IdempotencyKey,
    earlier: Option<Earlier>,
) -> Option<Result<Appended, QueueError>> {
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

pub(crate) fn plan(shared: &Shared, tree: &sled::Tree, group: Vec<Request>) -> Plan {
    let now = now_ms();
    let on_disk = look_up_keys(shared, tree, &group, now);
    let live = lock(&shared.live);
    let max = shared.max_bytes;
    let mut bytes = live.bytes;
    let mut next_seq = live.next_seq;
    // Only batches already on disk can be evicted; this group's are newer.
    let mut oldest = live.index.iter();
    let mut p = Plan {
        accepted: Vec::with_capacity(group.len()),
        rejected: Vec::new(),
        replays: Vec::new(),
        evicted: Vec::new(),
        next_seq,
    };
    // Keys accepted earlier in this group, so a concurrent retry in the same
    // commit replays instead of storing twice.
    let mut pending: HashMap<[u8; 32], Earlier> = HashMap::new();
    for (req, looked_up) in group.into_iter().zip(on_disk) {
        if let Some(k) = &req.idempotency {
            let decided = match (pending.get(&k.scope), looked_up) {
                (Some(e), _) => decide_key(k, Some(e.clone())),
                (None, Ok(e)) => decide_key(k, e),
                (None, Err(e)) => Some(Err(e)),
            };
            match decided {
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
            let (before, before_bytes, before_len) = (oldest.clone(), bytes, p.evicted.len());
            for (seq, e) in oldest.by_ref() {
                p.evicted.push(*seq);
                bytes -= u64::from(e.record_bytes);
                if bytes + len <= max {
                    break;
                }
            }
            if bytes + len > max {
                // Even evicting everything left would not make room (this
                // group's own batches fill it): the request is refused below
                // and evicts nothing.
                (oldest, bytes) = (before, before_bytes);
                p.evicted.truncate(before_len);
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
            pending.insert(k.scope, (next_seq, k.body, k.entries, k.service.clone()));
        }
        p.accepted.push((next_seq, req));
        next_seq += 1;
    }
    p.next_seq = next_seq;
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QueueConfig;
    use crate::model::Kind;
    use crate::queue::{IndexEntry, Queue};

    fn index(bytes: usize) -> IndexEntry {
        IndexEntry {
            kind: Kind::Logs,
            entries: 1,
            record_bytes: bytes as u32,
            enqueued_at_ms: 0,
        }
    }

    fn request(bytes: usize) -> Request {
        let (reply, _) = tokio::sync::oneshot::channel();
        Request {
            record: vec![7; bytes],
            index: index(bytes),
            idempotency: None,
            reply,
        }
    }

    #[tokio::test]
    async fn a_refused_request_evicts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = QueueConfig {
            path: dir.path().join("q"),
            max_bytes: 10_000,
            when_full: WhenFull::DropOldest,
            ..QueueConfig::default()
        };
        let q = Queue::open(&cfg).unwrap();
        for _ in 0..4 {
            q.append(vec![1; 2_000], index(2_000)).await.unwrap();
        }
        // Two large requests in one group: the first makes room by evicting
        // three old batches; the second cannot fit even if everything older
        // went, so it must be refused without evicting the last old batch.
        let store = q.store().unwrap();
        let p = plan(&q.shared, &store.tree, vec![request(7_000), request(7_000)]);
        assert_eq!(p.accepted.len(), 1);
        assert_eq!(p.rejected.len(), 1);
        assert!(matches!(p.rejected[0].1, QueueError::Full { .. }));
        assert_eq!(p.evicted.len(), 3, "evicted {:?}", p.evicted);
        q.close();
    }
}
