//! The power-cut run shared by `tests/power_cut.rs` and `benches/power_cut.rs`.
//!
//! The real binary keeps its queue inside a [`PowercutFs`] mount while four
//! clients post unique entries; at a random moment it is SIGKILLed and the
//! power is cut (everything not fsynced is forgotten), then it must start
//! again by itself. Some cycles drain to a capture file (outside the mount)
//! through a flapping mock sink. At the end a working sink drains the queue
//! and every acknowledged entry must be in the capture.
//!
//! Needs `crate::common` (tests/common/mod.rs) and `crate::powercut_fs`.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use edge_ingester::config::MockFail;

use crate::common::{
    captured_messages, client, log_batch, numbered_batch_ids, test_config, wait_for_stats,
    write_config, Binary, KEY,
};
use crate::powercut_fs::{Handle, PowercutFs};

const CLIENTS: usize = 4;

/// Runs use the CPU and a mount each: one at a time per process.
static RUN_LOCK: Mutex<()> = Mutex::new(());

/// Reports why a power-cut test cannot run, visibly; with `CI=true` it
/// panics instead.
pub fn skip(reason: &str) {
    crate::common::skip_or_fail("power-cut test", reason);
}

/// Shown even when libtest captures output.
pub fn say(line: &str) {
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

/// `Err(reason)` when `eatmydata` is not installed.
pub fn eatmydata_available() -> Result<(), String> {
    match std::process::Command::new("eatmydata")
        .arg("true")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`eatmydata true` failed: {s}")),
        Err(e) => Err(format!(
            "eatmydata not found ({e}); install Debian's `eatmydata`"
        )),
    }
}

/// `EDGE_INGESTER_BIN` (a release build), else the binary cargo built.
pub fn service_exe() -> PathBuf {
    std::env::var_os("EDGE_INGESTER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_edge-ingester")))
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Power cuts (each one a server start, SIGKILL, cut, remount).
    pub cuts: usize,
    /// Start the server under `eatmydata` (fsync becomes a no-op): the
    /// negative control, which must lose acknowledged entries.
    pub eatmydata: bool,
    /// Create the queue directory before the first start and fsync it and
    /// the mount root, so a missing parent-directory fsync in the service
    /// cannot lose it. Default: `POWERCUT_PRECREATE_QUEUE_DIR=1`.
    pub precreate_queue_dir: bool,
    /// Every `flapping_every`-th cycle drains through a flapping sink.
    pub flapping_every: usize,
    /// Kill moment, uniformly in this range after the start.
    pub kill_after_ms: (u64, u64),
    /// Binary under test.
    pub exe: PathBuf,
    /// How long the final drain may take.
    pub drain_limit: Duration,
    /// After each SIGKILL, start the server once more (it opens the queue
    /// and reports its address) and SIGKILL it again before the cut: a
    /// start-up that records state it has not made durable shows here.
    pub restart_before_cut: bool,
}

impl RunOptions {
    pub fn new(cuts: usize) -> RunOptions {
        RunOptions {
            cuts,
            eatmydata: false,
            precreate_queue_dir: std::env::var("POWERCUT_PRECREATE_QUEUE_DIR").as_deref()
                == Ok("1"),
            flapping_every: 3,
            kill_after_ms: (300, 1500),
            exe: service_exe(),
            drain_limit: Duration::from_secs(60),
            restart_before_cut: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    pub cuts: usize,
    pub requests: u64,
    pub rejected: u64,
    pub acknowledged: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicates: u64,
    pub seconds: f64,
    /// Of which the final drain.
    pub drain_seconds: f64,
    /// Longest time from spawn to the reported address.
    pub slowest_start_ms: u128,
    /// Up to five lost ids.
    pub lost_examples: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} cuts, {} requests ({} not 202), acknowledged {}, delivered {}, lost {}, \
             duplicates {}, {:.1} s (drain {:.1} s, slowest start {} ms)",
            self.cuts,
            self.requests,
            self.rejected,
            self.acknowledged,
            self.delivered,
            self.lost,
            self.duplicates,
            self.seconds,
            self.drain_seconds,
            self.slowest_start_ms
        )
    }
}

/// xorshift64*: reproducible kill moments from a printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn seed() -> u64 {
    if let Some(s) = std::env::var("POWERCUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return s;
    }
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    nanos | 1
}

#[derive(Default)]
struct Tally {
    acked: Mutex<HashSet<String>>,
    requests: AtomicU64,
    rejected: AtomicU64,
}

/// Posts batches until `stop` or until the server is gone; records the ids
/// of every entry acknowledged with 202.
async fn client_loop(base: String, tag: String, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let c = reqwest::Client::new();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let ids = numbered_batch_ids(&tag, n);
        n += 1;
        tally.requests.fetch_add(1, Ordering::Relaxed);
        let resp = c
            .post(format!("{base}/logs"))
            .header("content-type", "application/json")
            .header("x-api-key", KEY)
            .json(&log_batch(&ids))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match resp {
            Ok(r) if r.status().as_u16() == 202 => tally
                .acked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(ids),
            Ok(_) => {
                // Not acknowledged: nothing promised. Counted and shown.
                tally.rejected.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // The server died under us: not acknowledged.
            Err(_) => break,
        }
    }
}

/// A script that runs `exe` under eatmydata, so `Binary` can start it.
fn eatmydata_wrapper(dir: &Path, exe: &Path) -> PathBuf {
    let exe = exe.to_str().expect("binary path is UTF-8");
    assert!(!exe.contains('\''), "binary path contains a quote: {exe}");
    let path = dir.join("edge-ingester-eatmydata.sh");
    std::fs::write(&path, format!("#!/bin/sh\nexec eatmydata '{exe}' \"$@\"\n"))
        .expect("write the eatmydata wrapper");
    let mut perm = std::fs::metadata(&path)
        .expect("stat the wrapper")
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&path, perm).expect("chmod the wrapper");
    path
}

fn sync_dir(path: &Path) {
    std::fs::File::open(path)
        .and_then(|d| d.sync_all())
        .unwrap_or_else(|e| panic!("fsync {}: {e}", path.display()));
}

/// The whole run. `None` when the FUSE mount is impossible here (reported
/// through [`skip`], which panics under `CI=true`).
pub fn run(opts: &RunOptions) -> Option<Report> {
    let _one_at_a_time = RUN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("create the mount point");
    let mut fs: Handle = match PowercutFs::mount(&mnt) {
        Ok(h) => h,
        Err(e) => {
            skip(&format!(
                "cannot mount the power-cut FUSE filesystem (needs root and /dev/fuse): {e}"
            ));
            return None;
        }
    };
    let capture = dir.path().join("capture.jsonl");
    let queue_dir = mnt.join("queue");
    if opts.precreate_queue_dir {
        std::fs::create_dir(&queue_dir).expect("pre-create the queue dir");
        sync_dir(&queue_dir);
        sync_dir(&mnt);
    }
    let exe = if opts.eatmydata {
        eatmydata_wrapper(dir.path(), &opts.exe)
    } else {
        opts.exe.clone()
    };
    let seed = seed();
    let mut rng = Rng(seed);
    say(&format!(
        "power-cut run: {} cuts, exe {}{}{}, POWERCUT_SEED={seed}",
        opts.cuts,
        opts.exe.display(),
        if opts.eatmydata {
            " under eatmydata"
        } else {
            ""
        },
        if opts.precreate_queue_dir {
            ", queue dir pre-created and synced"
        } else {
            ""
        },
    ));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let tally = Arc::new(Tally::default());
    let mut slowest_start_ms = 0;

    for cycle in 0..opts.cuts {
        let mut cfg = test_config(dir.path());
        cfg.queue.path = queue_dir.clone();
        let flapping = opts.flapping_every > 0 && cycle % opts.flapping_every == 2;
        if flapping {
            cfg.mock.fail = MockFail::Flapping;
            cfg.mock.flap_ms = 300;
            cfg.mock.capture_path = capture.clone();
            cfg.forwarder.initial_backoff_ms = 20;
            cfg.forwarder.max_backoff_ms = 200;
            cfg.forwarder.breaker_open_ms = 200;
        }
        let path = write_config(dir.path(), "power_cut.toml", &cfg);
        // Panics ("server did not report its address") if it refuses to start.
        let t = Instant::now();
        let mut server = Binary::start_exe(&exe, &path);
        slowest_start_ms = slowest_start_ms.max(t.elapsed().as_millis());
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|k| {
                rt.spawn(client_loop(
                    server.base.clone(),
                    format!("c{cycle}-k{k}"),
                    stop.clone(),
                    tally.clone(),
                ))
            })
            .collect();
        let kill_after = rng.between(opts.kill_after_ms.0, opts.kill_after_ms.1);
        std::thread::sleep(Duration::from_millis(kill_after));
        server.sigkill();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            rt.block_on(c).expect("client task");
        }
        drop(server);
        if opts.restart_before_cut {
            // Panics if it refuses to start, like every other start.
            let mut again = Binary::start_exe(&exe, &path);
            again.sigkill();
        }
        fs.power_cut()
            .unwrap_or_else(|e| panic!("power cut {cycle}: {e}"));
        eprintln!(
            "cut {cycle} at {kill_after} ms ({}): {} entries acknowledged so far",
            if flapping {
                "flapping sink"
            } else {
                "sink failing"
            },
            tally.acked.lock().unwrap_or_else(|e| e.into_inner()).len()
        );
    }

    // Drain with a working sink, then stop cleanly.
    let mut cfg = test_config(dir.path());
    cfg.queue.path = queue_dir.clone();
    cfg.mock.fail = MockFail::Never;
    cfg.mock.capture_path = capture.clone();
    let path = write_config(dir.path(), "drain.toml", &cfg);
    let drain_started = Instant::now();
    let mut server = Binary::start_exe(&exe, &path);
    rt.block_on(wait_for_stats(
        &client(),
        &server.base,
        opts.drain_limit,
        |s| s["queue"]["depth_batches"] == 0,
    ));
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    let status = server.sigterm();
    assert!(status.success(), "drain server exited with {status}");
    drop(server);
    if let Err(e) = fs.unmount() {
        say(&format!("power-cut run: {e}"));
    }

    let acked = tally.acked.lock().unwrap_or_else(|e| e.into_inner());
    let mut counts: HashMap<String, u64> = HashMap::new();
    for m in captured_messages(&capture) {
        *counts.entry(m).or_default() += 1;
    }
    let mut lost: Vec<&String> = acked
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    lost.sort();
    let report = Report {
        cuts: opts.cuts,
        requests: tally.requests.load(Ordering::Relaxed),
        rejected: tally.rejected.load(Ordering::Relaxed),
        acknowledged: acked.len(),
        delivered: counts.len(),
        lost: lost.len(),
        duplicates: counts.values().map(|n| n - 1).sum(),
        seconds: started.elapsed().as_secs_f64(),
        drain_seconds,
        slowest_start_ms,
        lost_examples: lost.iter().take(5).map(|s| s.to_string()).collect(),
    };
    say(&format!("power-cut run: {report}"));
    Some(report)
}
