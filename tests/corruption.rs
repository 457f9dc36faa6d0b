//! A damaged record never wedges the queue: it moves to the dead letters
//! with its reason and the rest is delivered.

mod common;

use std::time::Duration;

use common::*;
use edge_ingester::config::MockFail;

/// sled releases its lock a little after the last handle drops.
fn open_sled(path: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("waiting for the queue lock: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot open {}: {e}", path.display()),
        }
    }
}

#[tokio::test]
async fn a_record_with_a_flipped_byte_goes_to_the_dead_letters_and_the_rest_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path());
    let c = client();
    let srv = InProcess::start(cfg.clone()).await;
    for m in ["first", "damaged", "third"] {
        assert_eq!(
            post_json(&c, &srv.url("/logs"), &log_batch(&[m.to_string()]))
                .await
                .status(),
            202
        );
    }
    srv.stop().await;

    // Flip one byte inside the second record's payload, as bit rot would.
    let path = cfg.queue.path.clone();
    tokio::task::spawn_blocking(move || {
        let db = open_sled(&path);
        let tree = db.open_tree("queue").unwrap();
        let mut key = vec![b'q'];
        key.extend_from_slice(&1u64.to_be_bytes());
        let mut record = tree.get(&key).unwrap().expect("second record").to_vec();
        let last = record.len() - 1;
        record[last] ^= 0x5a;
        tree.insert(&key, record).unwrap();
        db.flush().unwrap();
    })
    .await
    .unwrap();

    let mut cfg = cfg;
    let capture = dir.path().join("capture.jsonl");
    cfg.mock.fail = MockFail::Never;
    cfg.mock.capture_path = capture.clone();
    let srv = InProcess::start(cfg.clone()).await;
    let s = wait_for_stats(&c, &srv.base, Duration::from_secs(20), |s| {
        s["queue"]["depth_batches"] == 0
    })
    .await;
    assert_eq!(s["queue"]["dead_letter_batches"], 1, "{s}");
    assert_eq!(s["logs_sent"], 2);
    srv.stop().await;
    assert_eq!(captured_messages(&capture), ["first", "third"]);

    let path = cfg.queue.path.clone();
    let listed = tokio::task::spawn_blocking(move || edge_ingester::cli::dead_letter_list(&path))
        .await
        .unwrap()
        .unwrap();
    assert!(listed.starts_with("1 dead letters"), "{listed}");
    assert!(listed.contains("checksum"), "{listed}");
}

/// sled opens a truncated or overwritten log as an empty database; the
/// queue must refuse to start over it instead of silently forgetting.
#[test]
fn a_truncated_or_overwritten_log_is_refused_not_silently_started_empty() {
    for damage in ["truncate", "overwrite"] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = test_config(dir.path());
        let path = write_config(dir.path(), "c.toml", &cfg);
        let mut server = Binary::start(&path);
        let rt = tokio::runtime::Runtime::new().unwrap();
        for m in ["one", "two", "three"] {
            let url = format!("{}/logs", server.base);
            let status = rt
                .block_on(post_json(&client(), &url, &log_batch(&[m.to_string()])))
                .status();
            assert_eq!(status, 202);
        }
        assert!(server.sigterm().success());

        let db = cfg.queue.path.join("db");
        match damage {
            "truncate" => std::fs::OpenOptions::new()
                .write(true)
                .open(&db)
                .unwrap()
                .set_len(100)
                .unwrap(),
            _ => {
                use std::io::{Seek, Write};
                let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
                f.seek(std::io::SeekFrom::Start(0)).unwrap();
                let noise: Vec<u8> = (0..4096u32)
                    .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                    .collect();
                f.write_all(&noise).unwrap();
            }
        }

        let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_edge-ingester"));
        for var in OVERRIDE_VARS {
            serve.env_remove(var);
        }
        let out = serve
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{damage}: {err}");
        assert!(err.contains("lost acknowledged batches"), "{damage}: {err}");
        // The advice never discards data before it was inspected.
        assert!(
            err.contains("First run `edge-ingester queue inspect"),
            "{damage}: {err}"
        );
        assert!(!err.contains("move the directory aside"), "{damage}: {err}");

        let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge-ingester"))
            .args(["queue", "inspect", "--data-dir"])
            .arg(&cfg.queue.path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{damage}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("lost acknowledged batches"));
    }
}
