//! `edge-ingester bench --workload churn`: is disk usage bounded when the
//! queue is never empty and never still?
//!
//! 10 M entries (W1 bodies, 100-entry batches) pass through a queue that the
//! clients keep near 10k batches: they post while the depth is below the
//! target and wait while it is above, and the mock sink (1 ms per batch)
//! drains behind them. `max_bytes` is set just above what 10k batches hold.
//! Every half second the directory's allocated size (`queue.disk_bytes`) is
//! sampled; the peak and the last sample are reported against `max_bytes`
//! (the target is below 3×).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::{log_batch_body, queue_stats, BenchArgs, Server, BODY_STRIDE, KEY};

const ENTRIES: u64 = 10_000_000;
const TARGET_DEPTH: u64 = 10_000;
/// About 1.3× what 10k W1 batches hold (~3 KB of record each).
const MAX_BYTES: u64 = 40 << 20;
const CLIENTS: usize = 16;
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// What the clients and the sampler share.
#[derive(Default)]
struct Progress {
    /// The queue depth last sampled: clients post only below the target.
    depth: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    done: AtomicBool,
}

pub async fn run(args: &BenchArgs, exe: &Path, dir: &Path) -> anyhow::Result<String> {
    let mut server = Server::start_with(exe, dir, MAX_BYTES, "[mock]\nlatency_ms = 1\n")?;
    let base = server.base.clone();
    let bodies: Arc<Vec<Vec<u8>>> =
        Arc::new((0..64).map(|s| log_batch_body(args.batch, s)).collect());
    let p = Arc::new(Progress::default());
    let started = Instant::now();

    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (base, bodies, p) = (base.clone(), bodies.clone(), p.clone());
            let batch = args.batch as u64;
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut i = c * BODY_STRIDE;
                while !p.done.load(Ordering::Relaxed) {
                    if p.depth.load(Ordering::Relaxed) >= TARGET_DEPTH {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    i += 1;
                    let r = http
                        .post(format!("{base}/logs"))
                        .header("content-type", "application/json")
                        .header("x-api-key", KEY)
                        .body(bodies[i % bodies.len()].clone())
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().as_u16() == 202 => {
                            if p.accepted.fetch_add(batch, Ordering::Relaxed) + batch >= ENTRIES {
                                p.done.store(true, Ordering::Relaxed);
                            }
                        }
                        _ => {
                            p.refused.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
            })
        })
        .collect();

    let http = reqwest::Client::new();
    let (mut peak_disk, mut peak_depth, mut last) = (0u64, 0u64, serde_json::Value::Null);
    let mut next_report = Instant::now();
    while !p.done.load(Ordering::Relaxed) {
        let s = queue_stats(&http, &base).await?;
        let q = &s["queue"];
        let (d, disk) = (
            q["depth_batches"].as_u64().unwrap_or(0),
            q["disk_bytes"].as_u64().unwrap_or(0),
        );
        p.depth.store(d, Ordering::Relaxed);
        peak_disk = peak_disk.max(disk);
        peak_depth = peak_depth.max(d);
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(10);
            eprintln!(
                "churn {:>4.0} s: {} entries accepted, depth {d} batches, live {:.1} MB, dir {:.1} MB",
                started.elapsed().as_secs_f64(),
                p.accepted.load(Ordering::Relaxed),
                q["bytes"].as_u64().unwrap_or(0) as f64 / 1e6,
                disk as f64 / 1e6
            );
        }
        last = q.clone();
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    for c in clients {
        let _ = c.await;
    }
    let elapsed = started.elapsed();
    server.stop();
    if p.accepted.load(Ordering::Relaxed) < ENTRIES {
        bail!(
            "only {} entries accepted",
            p.accepted.load(Ordering::Relaxed)
        );
    }
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    let last_disk = last["disk_bytes"].as_u64().unwrap_or(0);
    Ok(format!(
        "churn: {} entries ({} per batch) through a queue kept near {TARGET_DEPTH} batches \
         in {:.0} s (peak depth {peak_depth}; {} refusals)\n\
         max_bytes:       {:.1} MiB\n\
         directory peak:  {:.1} MiB = {:.2}x max_bytes\n\
         directory last:  {:.1} MiB = {:.2}x max_bytes (live records {:.1} MiB)",
        p.accepted.load(Ordering::Relaxed),
        args.batch,
        elapsed.as_secs_f64(),
        p.refused.load(Ordering::Relaxed),
        mb(MAX_BYTES),
        mb(peak_disk),
        peak_disk as f64 / MAX_BYTES as f64,
        mb(last_disk),
        last_disk as f64 / MAX_BYTES as f64,
        mb(last["bytes"].as_u64().unwrap_or(0)),
    ))
}
