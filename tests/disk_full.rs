//! A real full disk: the queue lives on a small tmpfs that a ballast file
//! fills under load. Requests must get 503 + `Retry-After` (never a 202 for
//! a batch that is not durable), `/ready` must turn 503, the process must
//! keep running, and when the ballast is removed it must recover by itself
//! and deliver every acknowledged entry.
//!
//! Mounting needs root (CI runs as root); elsewhere the test prints why it
//! skips.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use edge_ingester::config::MockFail;

const TMPFS_MB: u64 = 48;
const CLIENTS: usize = 4;

/// A tmpfs mounted for this test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_MB}m"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Free bytes on the filesystem holding `path`.
fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap()
}

#[derive(Default)]
struct Tally {
    acked: Mutex<HashSet<String>>,
    accepted: AtomicU64,
    unavailable: AtomicU64,
    /// A 202 seen after the ballast was removed.
    accepted_after_free: AtomicU64,
    freed: AtomicBool,
}

/// Posts poorly compressible batches until `stop`; every status must be a
/// 202 or a 503 carrying `Retry-After`.
async fn client_loop(base: String, tag: String, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let c = reqwest::Client::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let ids: Vec<String> = (0..20).map(|i| format!("{tag}-b{n}-e{i}")).collect();
        let mut body = log_batch(&ids);
        for (i, e) in body["entries"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .enumerate()
        {
            e["attributes"]["noise"] = noise(n * 1000 + i as u64).into();
        }
        n += 1;
        let r = post_json(&c, &format!("{base}/logs"), &body).await;
        match r.status().as_u16() {
            202 => {
                tally.accepted.fetch_add(1, Ordering::Relaxed);
                if tally.freed.load(Ordering::Relaxed) {
                    tally.accepted_after_free.fetch_add(1, Ordering::Relaxed);
                }
                tally.acked.lock().unwrap().extend(ids);
            }
            503 => {
                let retry = r.headers().get("retry-after").cloned();
                let body: serde_json::Value = r.json().await.unwrap();
                assert!(retry.is_some(), "503 without Retry-After: {body}");
                tally.unavailable.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            s => panic!("unexpected status {s}: {}", r.text().await.unwrap()),
        }
    }
}

/// 400 hex characters that zstd cannot shrink much.
fn noise(seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..50)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{:08x}", x as u32)
        })
        .collect()
}

async fn ready_status(c: &reqwest::Client, base: &str) -> u16 {
    c.get(format!("{base}/ready"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn full_disk_refuses_with_503_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("tmpfs");
    let tmpfs = match Tmpfs::mount(&mnt) {
        Ok(t) => t,
        Err(why) => {
            skip_or_fail(
                "disk_full",
                &format!("cannot mount a tmpfs here ({why}); CI runs this as root"),
            );
            return;
        }
    };
    let capture = dir.path().join("capture.jsonl");
    let mut cfg = test_config(&mnt);
    cfg.queue.max_bytes = 1 << 30; // far above the tmpfs: the disk fills first
    cfg.mock.fail = MockFail::Never;
    cfg.mock.capture_path = capture.clone();
    // Drain slower than the load arrives, so the queue grows into the wall.
    cfg.mock.latency_ms = 25;
    let path = write_config(dir.path(), "disk-full.toml", &cfg);
    let mut server = Binary::start(&path);

    // Ballast: leave a few MB for the queue.
    let ballast = mnt.join("ballast");
    let leave = 6 << 20;
    let fill = free_bytes(&mnt).saturating_sub(leave);
    std::fs::write(&ballast, vec![0xA5u8; fill as usize]).unwrap();
    eprintln!(
        "tmpfs {TMPFS_MB} MB, ballast {fill} B, free {}",
        free_bytes(&mnt)
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = client();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|k| {
            rt.spawn(client_loop(
                server.base.clone(),
                format!("k{k}"),
                stop.clone(),
                tally.clone(),
            ))
        })
        .collect();

    // 1. The disk fills: 503s, /ready 503, the process keeps running.
    let deadline = Instant::now() + Duration::from_secs(120);
    while tally.unavailable.load(Ordering::Relaxed) < 20 {
        assert!(
            Instant::now() < deadline,
            "the disk never filled: {} accepted, free {}",
            tally.accepted.load(Ordering::Relaxed),
            free_bytes(&mnt)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "disk full: {} accepted, {} refused with 503, free {} B",
        tally.accepted.load(Ordering::Relaxed),
        tally.unavailable.load(Ordering::Relaxed),
        free_bytes(&mnt)
    );
    // The writer retries a reopen every second, so /ready may flicker to 200
    // between a good reopen and the next failed write: poll for the 503.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rt.block_on(ready_status(&c, &server.base)) != 503 {
        assert!(
            Instant::now() < deadline,
            "/ready never said 503 while full"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = rt.block_on(stats(&c, &server.base));
    eprintln!("stats while full: {}", s["queue"]);
    assert!(server.child.try_wait().unwrap().is_none(), "server exited");

    // 2. Space returns: the service recovers without a restart.
    std::fs::remove_file(&ballast).unwrap();
    tally.freed.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    while tally.accepted_after_free.load(Ordering::Relaxed) < 50
        || rt.block_on(ready_status(&c, &server.base)) != 200
    {
        assert!(
            Instant::now() < deadline,
            "no recovery after space returned: {} accepted since, ready {}",
            tally.accepted_after_free.load(Ordering::Relaxed),
            rt.block_on(ready_status(&c, &server.base))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for h in clients {
        rt.block_on(h).unwrap();
    }

    // 3. Everything acknowledged, before and after, reaches the sink.
    rt.block_on(wait_for_stats(
        &c,
        &server.base,
        Duration::from_secs(180),
        |s| s["queue"]["depth_batches"] == 0,
    ));
    assert!(server.child.try_wait().unwrap().is_none(), "server exited");
    assert!(server.sigterm().success());
    let delivered: HashSet<String> = captured_messages(&capture).into_iter().collect();
    let acked = tally.acked.lock().unwrap();
    let lost: Vec<_> = acked.iter().filter(|id| !delivered.contains(*id)).collect();
    eprintln!(
        "accepted {} batches ({} entries), refused {} with 503, delivered {} distinct, lost {}",
        tally.accepted.load(Ordering::Relaxed),
        acked.len(),
        tally.unavailable.load(Ordering::Relaxed),
        delivered.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "acknowledged entries lost, e.g. {:?}",
        &lost[..lost.len().min(5)]
    );

    // Batches delivered while the disk refused their removal, and batches of
    // failed commits, were removed from disk on recovery: a restart finds an
    // empty queue instead of sending them again.
    let mut cfg = test_config(&mnt);
    cfg.queue.max_bytes = 1 << 30;
    let path = write_config(dir.path(), "restart.toml", &cfg);
    let server = Binary::start(&path);
    let s = rt.block_on(stats(&c, &server.base));
    assert_eq!(s["queue"]["depth_batches"], 0, "{}", s["queue"]);
    drop(server);
    drop(tmpfs);
}
