//! Model-based test: the real queue, run in lockstep with a `VecDeque`,
//! through random append / read / ack / reopen sequences.

use std::collections::VecDeque;

use edge_ingester::config::QueueConfig;
use edge_ingester::model::{AttrValue, Batch, Entries, Level, LogRecord};
use edge_ingester::queue::{encode_record, IndexEntry, Queue};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<String>),
    ReadHead,
    AckHead,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec("[a-z0-9 ]{0,40}", 1..6).prop_map(Op::Append),
        2 => Just(Op::ReadHead),
        2 => Just(Op::AckHead),
        1 => Just(Op::Reopen),
    ]
}

fn batch(messages: &[String]) -> Batch {
    Batch {
        received_at: "2026-11-27T10:00:00Z".into(),
        agent_version: None,
        entries: Entries::Logs(
            messages
                .iter()
                .map(|m| LogRecord {
                    timestamp: "2026-11-27T10:00:00Z".into(),
                    level: Level::Info,
                    message: m.clone(),
                    service: "svc".into(),
                    host: "h".into(),
                    attributes: vec![("len".into(), AttrValue::UInt(m.len() as u64))],
                })
                .collect(),
        ),
    }
}

fn check_against_model(q: &Queue, model: &VecDeque<(u64, Batch, u64)>) {
    let s = q.stats();
    assert_eq!(s.depth_batches, model.len() as u64);
    assert_eq!(
        s.depth_entries,
        model.iter().map(|(_, b, _)| b.len() as u64).sum::<u64>()
    );
    assert_eq!(
        s.bytes,
        model.iter().map(|(_, _, bytes)| *bytes).sum::<u64>()
    );
    assert_eq!(
        q.next_after(None).map(|(s, _)| s),
        model.front().map(|(s, _, _)| *s)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn queue_behaves_like_a_fifo_across_reopens(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = QueueConfig {
            path: dir.path().join("q"),
            cache_bytes: 1 << 20,
            ..QueueConfig::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut q = Queue::open(&cfg).unwrap();
        let mut model: VecDeque<(u64, Batch, u64)> = VecDeque::new();
        let mut last_seq: Option<u64> = None;
        for op in ops {
            match op {
                Op::Append(msgs) => {
                    let b = batch(&msgs);
                    let record = encode_record(&b);
                    let bytes = record.len() as u64;
                    let index = IndexEntry {
                        kind: b.kind(),
                        entries: b.len() as u32,
                        record_bytes: bytes as u32,
                        enqueued_at_ms: 0,
                    };
                    let seq = rt.block_on(q.append(record, index)).unwrap();
                    prop_assert!(last_seq.is_none_or(|l| seq > l), "seq {seq} after {last_seq:?}");
                    last_seq = Some(seq);
                    model.push_back((seq, b, bytes));
                }
                Op::ReadHead => {
                    if let Some((seq, b, _)) = model.front() {
                        let stored = q.read(*seq).unwrap().expect("head is stored");
                        prop_assert_eq!(&stored.batch, b);
                    }
                }
                Op::AckHead => {
                    if let Some((seq, _, _)) = model.pop_front() {
                        q.ack(seq).unwrap();
                    }
                }
                Op::Reopen => {
                    q.close();
                    drop(q);
                    q = Queue::open(&cfg).unwrap();
                }
            }
            check_against_model(&q, &model);
        }
        q.close();
    }
}
