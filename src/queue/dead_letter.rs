//! The dead letters: entries the sink refused for good, and records that
//! cannot be decoded, kept with the reason until an operator replays them.
//!
//! ```text
//! tree `dead_letter`
//!   key:    seq of the batch they came from (u64 big-endian)
//!   value:  reason length u32 LE | reason (UTF-8) | record
//!   record: a queue record (record.rs). Only the refused entries, as a
//!           version-2 record carrying their `Origin` — the ingest-ids they
//!           were first sent with — so a replay re-sends them under the same
//!           ids and consumers can de-duplicate. An undecodable record is kept
//!           byte for byte. Dead letters written before per-entry moves hold
//!           the whole batch as a version-1 record; their origin is the key's
//!           seq and this queue's node id.
//! ```

use std::collections::HashMap;

use super::record::{self, Origin};
use super::{IndexEntry, Stored};

/// Which entries of a batch go to the dead letters.
#[derive(Debug, Clone, Copy)]
pub enum Refused<'a> {
    /// All of them, for this reason: refused as a whole, or undecodable.
    All(&'a str),
    /// Only those with these ingest-ids; Kafka took the rest.
    Entries(&'a [Refusal]),
}

/// One entry the sink will never accept, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub ingest_id: String,
    pub reason: String,
}

/// A dead letter ready to be written.
pub(super) struct Letter {
    pub value: Vec<u8>,
    /// Entries it holds (0 for an undecodable record: unknown).
    pub entries: usize,
}

/// How many ingest-ids a reason lists before "…".
const IDS_IN_REASON: usize = 5;

/// Builds the dead letter for `refused` entries of the record stored at `seq`.
pub(super) fn letter(seq: u64, node_id: &str, stored: &[u8], refused: Refused<'_>) -> Letter {
    let Ok((batch, origin)) = record::decode_with_origin(stored) else {
        let reason = match refused {
            Refused::All(r) => r.to_string(),
            Refused::Entries(list) => summary(list, None),
        };
        return Letter {
            value: value(&reason, stored),
            entries: 0,
        };
    };
    let stored = Stored { seq, batch, origin };
    let n = stored.batch.len();
    let (positions, reason): (Vec<usize>, String) = match refused {
        Refused::All(r) => ((0..n).collect(), r.to_string()),
        Refused::Entries(list) => {
            let ids: HashMap<&str, ()> = list.iter().map(|r| (r.ingest_id.as_str(), ())).collect();
            let positions: Vec<usize> = (0..n)
                .filter(|&i| ids.contains_key(stored.ingest_id(node_id, i).as_str()))
                .collect();
            if positions.len() != ids.len() {
                // Never expected (the ids are rendered from this very
                // record); keeping the whole batch loses nothing.
                let why = format!(
                    "{} (ids not found in the batch, kept whole)",
                    summary(list, Some(n))
                );
                ((0..n).collect(), why)
            } else {
                (positions, summary(list, Some(n)))
            }
        }
    };
    let origin = stored.origin_of(node_id, &positions);
    let record = record::encode_with_origin(&stored.batch.only(&positions), &origin);
    Letter {
        value: value(&reason, &record),
        entries: positions.len(),
    }
}

/// "2 of 10 entries refused: <distinct reasons> (ids …)".
fn summary(list: &[Refusal], of: Option<usize>) -> String {
    let mut reasons: Vec<&str> = Vec::new();
    for r in list {
        if !reasons.contains(&r.reason.as_str()) {
            reasons.push(&r.reason);
        }
    }
    let mut ids: Vec<&str> = list
        .iter()
        .take(IDS_IN_REASON)
        .map(|r| r.ingest_id.as_str())
        .collect();
    if list.len() > IDS_IN_REASON {
        ids.push("…");
    }
    let of = of.map_or(String::new(), |n| format!(" of {n}"));
    format!(
        "{}{of} entries refused: {} (ingest-ids {})",
        list.len(),
        reasons.join("; "),
        ids.join(", ")
    )
}

/// What a replay appends for a dead letter: a record that keeps the original
/// ingest-ids, and its index entry. `None`: undecodable, it stays.
pub(super) fn replayable(seq: u64, node_id: &str, value: &[u8]) -> Option<(Vec<u8>, IndexEntry)> {
    let stored = record_of(value)?;
    let (batch, origin) = record::decode_with_origin(stored).ok()?;
    let record = match origin {
        Some(_) => stored.to_vec(),
        None => {
            let origin = Origin {
                node_id: node_id.to_string(),
                seq,
                indices: (0..batch.len() as u32).collect(),
            };
            record::encode_with_origin(&batch, &origin)
        }
    };
    let index = IndexEntry {
        kind: batch.kind(),
        entries: batch.len() as u32,
        record_bytes: record.len() as u32,
        enqueued_at_ms: 0,
    };
    Some((record, index))
}

fn value(reason: &str, record: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + reason.len() + record.len());
    v.extend_from_slice(&(reason.len() as u32).to_le_bytes());
    v.extend_from_slice(reason.as_bytes());
    v.extend_from_slice(record);
    v
}

fn record_of(v: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(v.get(..4)?.try_into().ok()?) as usize;
    v.get(4 + len..).filter(|r| !r.is_empty())
}

pub(super) fn reason_of(v: &[u8]) -> String {
    let Some(len) = v
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
    else {
        return "unreadable dead letter".into();
    };
    v.get(4..4 + len as usize)
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .unwrap_or_else(|| "unreadable dead letter".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Batch, Entries, Level, LogRecord};

    fn batch(n: usize) -> Batch {
        Batch {
            received_at: "2026-01-01T00:00:00Z".into(),
            agent_version: None,
            entries: Entries::Logs(
                (0..n)
                    .map(|i| LogRecord {
                        timestamp: "2026-01-01T00:00:00Z".into(),
                        level: Level::Info,
                        message: format!("m{i}"),
                        service: "s".into(),
                        host: "h".into(),
                        attributes: vec![],
                    })
                    .collect(),
            ),
        }
    }

    fn messages(b: &Batch) -> Vec<String> {
        match &b.entries {
            Entries::Logs(v) => v.iter().map(|e| e.message.clone()).collect(),
            Entries::Metrics(_) => unreachable!(),
        }
    }

    fn refusal(id: &str) -> Refusal {
        Refusal {
            ingest_id: id.into(),
            reason: "Broker: Message size too large".into(),
        }
    }

    /// Only the refused entries are kept, and a replay of a replay still
    /// carries the ids they were first sent with.
    #[test]
    fn a_letter_holds_only_the_refused_entries_under_their_first_ids() {
        let record = record::encode(&batch(5));
        let refused = [refusal("n:7:1"), refusal("n:7:3")];
        let l = letter(7, "n", &record, Refused::Entries(&refused));
        assert_eq!(l.entries, 2);
        assert!(reason_of(&l.value).starts_with(
            "2 of 5 entries refused: Broker: Message size too large (ingest-ids n:7:1, n:7:3)"
        ));
        let (replayed, index) = replayable(7, "n", &l.value).unwrap();
        assert_eq!(index.entries, 2);
        let (b, origin) = record::decode_with_origin(&replayed).unwrap();
        assert_eq!(messages(&b), ["m1", "m3"]);
        let again = Stored {
            seq: 40,
            batch: b,
            origin,
        };
        assert_eq!(again.ingest_id("other-node", 0), "n:7:1");
        assert_eq!(again.ingest_id("other-node", 1), "n:7:3");

        // Replayed as seq 40 and refused again, entry 1 only.
        let l2 = letter(40, "n", &replayed, Refused::Entries(&[refusal("n:7:3")]));
        let (r2, _) = replayable(40, "n", &l2.value).unwrap();
        let (b2, o2) = record::decode_with_origin(&r2).unwrap();
        assert_eq!(messages(&b2), ["m3"]);
        assert_eq!(
            o2,
            Some(Origin {
                node_id: "n".into(),
                seq: 7,
                indices: vec![3]
            })
        );
    }

    #[test]
    fn a_whole_batch_and_an_old_style_letter_keep_their_ids_on_replay() {
        let record = record::encode(&batch(3));
        let whole = letter(9, "n", &record, Refused::All("too large"));
        assert_eq!(
            (whole.entries, reason_of(&whole.value).as_str()),
            (3, "too large")
        );
        // Written by an earlier build: the version-1 record as it was queued.
        let old = value("too large", &record);
        for v in [whole.value, old] {
            let (r, _) = replayable(9, "n", &v).unwrap();
            let (b, origin) = record::decode_with_origin(&r).unwrap();
            let s = Stored {
                seq: 100,
                batch: b,
                origin,
            };
            assert_eq!(
                (0..3).map(|i| s.ingest_id("n", i)).collect::<Vec<_>>(),
                ["n:9:0", "n:9:1", "n:9:2"]
            );
        }
    }

    #[test]
    fn an_undecodable_record_is_kept_as_found_and_not_replayed() {
        let mut record = record::encode(&batch(2));
        let last = record.len() - 1;
        record[last] ^= 0xff;
        let l = letter(3, "n", &record, Refused::All("checksum mismatch"));
        assert_eq!(record_of(&l.value), Some(&record[..]));
        assert!(replayable(3, "n", &l.value).is_none());
    }
}
