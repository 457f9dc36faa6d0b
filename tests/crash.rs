//! The promise itself: nothing acknowledged is lost to kill -9.
//!
//! The real binary is SIGKILLed mid-load, again and again, at varied moments:
//! in some cycles the sink fails (so batches pile up in the queue), in others
//! it delivers to a capture file (so kills also land mid-forwarding). At the
//! end the service drains with a working sink, and every entry of every
//! batch that got a 202 must be in the capture file.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use edge_ingester::config::MockFail;

const CYCLES: u64 = 12;
const CLIENTS: usize = 4;

/// Posts batches until `stop`; records the ids of every acknowledged entry.
async fn client_loop(
    base: String,
    tag: String,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<HashSet<String>>>,
    attempts: Arc<AtomicU64>,
) {
    let c = reqwest::Client::new();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let ids = numbered_batch_ids(&tag, n);
        n += 1;
        attempts.fetch_add(1, Ordering::Relaxed);
        let resp = c
            .post(format!("{base}/logs"))
            .header("content-type", "application/json")
            .header("x-api-key", KEY)
            .json(&log_batch(&ids))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match resp {
            Ok(r) if r.status().as_u16() == 202 => acked.lock().unwrap().extend(ids),
            Ok(r) => panic!("unexpected status {}", r.status()),
            // The server died under us: not acknowledged, may or may not be stored.
            Err(_) => break,
        }
    }
}

#[test]
fn acknowledged_batches_survive_repeated_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture.jsonl");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let attempts = Arc::new(AtomicU64::new(0));

    for cycle in 0..CYCLES {
        let mut cfg = test_config(dir.path());
        let forwarding = cycle % 3 == 2;
        if forwarding {
            cfg.mock.fail = MockFail::Never;
            cfg.mock.capture_path = capture.clone();
        }
        let path = write_config(dir.path(), "crash.toml", &cfg);
        let mut server = Binary::start(&path);
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|k| {
                rt.spawn(client_loop(
                    server.base.clone(),
                    format!("c{cycle}-k{k}"),
                    stop.clone(),
                    acked.clone(),
                    attempts.clone(),
                ))
            })
            .collect();
        // Varied moments: 150 ms .. ~1.2 s into the load.
        std::thread::sleep(Duration::from_millis(150 + (cycle * 379) % 1000));
        server.sigkill();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            rt.block_on(c).unwrap();
        }
        eprintln!(
            "cycle {cycle} ({}): {} entries acknowledged so far",
            if forwarding {
                "forwarding"
            } else {
                "sink failing"
            },
            acked.lock().unwrap().len()
        );
    }

    // Drain everything with a working sink, then stop cleanly.
    let mut cfg = test_config(dir.path());
    cfg.mock.fail = MockFail::Never;
    cfg.mock.capture_path = capture.clone();
    let path = write_config(dir.path(), "drain.toml", &cfg);
    let mut server = Binary::start(&path);
    rt.block_on(wait_for_stats(
        &client(),
        &server.base,
        Duration::from_secs(120),
        |s| s["queue"]["depth_batches"] == 0,
    ));
    assert!(server.sigterm().success());

    let acked = acked.lock().unwrap();
    let mut counts: HashMap<String, u32> = HashMap::new();
    for m in captured_messages(&capture) {
        *counts.entry(m).or_default() += 1;
    }
    let lost: Vec<_> = acked
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    let duplicates: u32 = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "requests {}, acknowledged entries {}, delivered distinct {}, lost {}, duplicates {}",
        attempts.load(Ordering::Relaxed),
        acked.len(),
        counts.len(),
        lost.len(),
        duplicates
    );
    assert!(
        acked.len() > 1_000,
        "too little load to mean anything: {}",
        acked.len()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged entries lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}
