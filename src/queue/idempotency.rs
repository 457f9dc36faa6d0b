//! Remembered `Idempotency-Key`s: a retry of an acknowledged request answers
//! with the original `batch_id` and stores nothing.
//!
//! Kept in the queue tree, written in the same atomic, synced commit as the
//! batch they name, so a crash can never keep one without the other:
//!
//! ```text
//! k + scope (32 B)                 → version u8 | created ms u64 | seq u64
//!                                     | entries u32 | body sha256 (32 B) | service
//! t + created ms (u64 BE) + scope  → (empty): expiry index, oldest first
//! ```
//!
//! `scope` is SHA-256 over (API key digest, endpoint, key): the same key from
//! another API key or on the other endpoint is a different key. Expired
//! entries are ignored on lookup and removed by a periodic sweep of the time
//! index, which never reads the whole table.

use super::{PREFIX_IDEM, PREFIX_IDEM_TIME};

const VERSION: u8 = 1;
const FIXED_LEN: usize = 1 + 8 + 8 + 4 + 32;

/// What a request carries to make its append idempotent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub scope: [u8; 32],
    /// SHA-256 of the body as received after decompression.
    pub body: [u8; 32],
    pub entries: u32,
    pub service: String,
}

/// The outcome of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored now, under this sequence number.
    Stored(u64),
    /// A retry of an earlier request: nothing stored; its original batch.
    Replayed {
        seq: u64,
        entries: u32,
        service: String,
    },
}

impl Appended {
    pub fn seq(&self) -> u64 {
        match self {
            Appended::Stored(s) | Appended::Replayed { seq: s, .. } => *s,
        }
    }
}

/// A remembered key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    pub created_ms: u64,
    pub seq: u64,
    pub entries: u32,
    pub body: [u8; 32],
    pub service: String,
}

fn key(scope: &[u8; 32]) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(PREFIX_IDEM);
    k.extend_from_slice(scope);
    k
}

fn time_key(created_ms: u64, scope: &[u8; 32]) -> Vec<u8> {
    let mut k = Vec::with_capacity(41);
    k.push(PREFIX_IDEM_TIME);
    k.extend_from_slice(&created_ms.to_be_bytes());
    k.extend_from_slice(scope);
    k
}

fn encode(r: &Remembered) -> Vec<u8> {
    let mut v = Vec::with_capacity(FIXED_LEN + r.service.len());
    v.push(VERSION);
    v.extend_from_slice(&r.created_ms.to_le_bytes());
    v.extend_from_slice(&r.seq.to_le_bytes());
    v.extend_from_slice(&r.entries.to_le_bytes());
    v.extend_from_slice(&r.body);
    v.extend_from_slice(r.service.as_bytes());
    v
}

fn decode(v: &[u8]) -> Option<Remembered> {
    if v.len() < FIXED_LEN || v[0] != VERSION {
        return None;
    }
    Some(Remembered {
        created_ms: u64::from_le_bytes(v[1..9].try_into().ok()?),
        seq: u64::from_le_bytes(v[9..17].try_into().ok()?),
        entries: u32::from_le_bytes(v[17..21].try_into().ok()?),
        body: v[21..53].try_into().ok()?,
        service: String::from_utf8_lossy(&v[53..]).into_owned(),
    })
}

/// The remembered entry for `scope`, unless it is older than `window_ms`.
pub fn lookup(
    tree: &sled::Tree,
    scope: &[u8; 32],
    now_ms: u64,
    window_ms: u64,
) -> sled::Result<Option<Remembered>> {
    Ok(tree
        .get(key(scope))?
        .and_then(|v| decode(&v))
        .filter(|r| now_ms.saturating_sub(r.created_ms) < window_ms))
}

/// Adds the entry for `k` to a commit.
pub fn remember(batch: &mut sled::Batch, k: &IdempotencyKey, seq: u64, now_ms: u64) {
    let r = Remembered {
        created_ms: now_ms,
        seq,
        entries: k.entries,
        body: k.body,
        service: k.service.clone(),
    };
    batch.insert(key(&k.scope), encode(&r));
    batch.insert(time_key(now_ms, &k.scope), &[][..]);
}

/// Undoes `remember` in a later batch (after a failed commit).
pub fn forget(batch: &mut sled::Batch, k: &IdempotencyKey, created_ms: u64) {
    batch.remove(key(&k.scope));
    batch.remove(time_key(created_ms, &k.scope));
}

/// Removes entries older than `window_ms`; returns how many.
pub fn sweep(tree: &sled::Tree, now_ms: u64, window_ms: u64) -> sled::Result<usize> {
    let cutoff = now_ms.saturating_sub(window_ms);
    let start = [PREFIX_IDEM_TIME];
    let end = time_key(cutoff, &[0; 32]);
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for item in tree.range(start.to_vec()..end) {
        let (tk, _) = item?;
        let Some(scope) = tk.get(9..41).and_then(|s| <[u8; 32]>::try_from(s).ok()) else {
            continue;
        };
        let created = tk
            .get(1..9)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes);
        // A key re-used after expiry has a newer entry: keep that one.
        if let Some(current) = tree.get(key(&scope))?.and_then(|v| decode(&v)) {
            if Some(current.created_ms) == created {
                batch.remove(key(&scope));
            }
        }
        batch.remove(tk);
        n += 1;
    }
    tree.apply_batch(batch)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_entries_round_trip_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("t").unwrap();
        let k = IdempotencyKey {
            scope: [7; 32],
            body: [9; 32],
            entries: 3,
            service: "api".into(),
        };
        let mut b = sled::Batch::default();
        remember(&mut b, &k, 42, 1_000);
        tree.apply_batch(b).unwrap();
        let r = lookup(&tree, &k.scope, 1_500, 1_000).unwrap().unwrap();
        assert_eq!(
            (r.seq, r.entries, r.body, r.service.as_str()),
            (42, 3, [9; 32], "api")
        );
        assert!(lookup(&tree, &k.scope, 2_000, 1_000).unwrap().is_none());
        assert_eq!(sweep(&tree, 1_900, 1_000).unwrap(), 0);
        assert_eq!(sweep(&tree, 2_001, 1_000).unwrap(), 1);
        assert_eq!(tree.len(), 0);
    }
}
