//! `edge-ingester bench --workload soak`: the promise under sustained abuse.
//!
//! W1's client shape (keep-alive clients posting 100-entry batches) against
//! the real binary for `--seconds` (600 for the 10-minute soak), while:
//! - the server is SIGKILLed at random every 20–60 s and restarted at once
//!   on the same queue;
//! - the mock sink flaps (`mock.fail = "flapping"`: 5 s delivering, 5 s
//!   failing) and captures every delivered entry.
//!
//! Every entry carries a unique id. At the end the service drains with a
//! working sink and the capture is checked against what got a 202:
//! acknowledged, delivered, lost (must be 0) and duplicates are printed.
//! Load is paced (`--rate`, default 20,000 entries/s) so the capture of
//! every delivered entry stays a few GB; `--rate 0` runs unpaced.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};

use crate::bench::{BenchArgs, Server, KEY};

const KILL_MIN_S: u64 = 20;
const KILL_MAX_S: u64 = 60;
const FLAP_MS: u64 = 5_000;
/// How long the final drain may take.
const DRAIN_LIMIT: Duration = Duration::from_secs(900);
/// An id is (client, batch): entries are told apart by their index.
type BatchId = (u32, u32);

#[derive(Default)]
struct Tally {
    /// Acknowledged batches and their entry counts.
    acked: Mutex<HashMap<BatchId, u32>>,
    refused: AtomicU64,
    conn_errors: AtomicU64,
}

fn read(base: &RwLock<String>) -> String {
    base.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// A tiny xorshift: kill times vary per run, and the seed is printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn sink_config(capture: &Path, flapping: bool) -> String {
    format!(
        "[mock]\nfail = \"{}\"\nflap_ms = {FLAP_MS}\ncapture_path = \"{}\"\n",
        if flapping { "flapping" } else { "never" },
        capture.display()
    )
}

/// A batch body whose entries say who sent them: `soak c<client> b<batch> e<i>`.
fn body(client: u32, batch: u32, n: usize) -> Vec<u8> {
    let entries: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "timestamp": "2026-11-27T10:00:00Z",
                "level": "INFO",
                "message": format!("soak c{client} b{batch} e{i} GET /api/v1/items status=200"),
                "service": format!("svc-{}", (batch as usize + i) % 8),
                "host": format!("edge-{client:03}"),
                "attributes": {"region": "eu-west", "attempt": i % 3}
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"entries": entries, "agent_version": "soak"}))
        .unwrap_or_default()
}

async fn client_loop(
    client: u32,
    base: Arc<RwLock<String>>,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    batch: usize,
    interval: Option<Duration>,
) {
    let http = reqwest::Client::new();
    let mut n = 0u32;
    let mut next = tokio::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some(i) = interval {
            tokio::time::sleep_until(next).await;
            next += i;
        }
        n += 1;
        let url = format!("{}/logs", read(&base));
        let sent = http
            .post(url)
            .header("content-type", "application/json")
            .header("x-api-key", KEY)
            .body(body(client, n, batch))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().as_u16() == 202 => {
                crate::queue::lock(&tally.acked).insert((client, n), batch as u32);
            }
            Ok(_) => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Killed under us: not acknowledged (it may still be stored).
            Err(_) => {
                tally.conn_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Parses `soak c<client> b<batch> e<i>` out of a capture line.
fn entry_id(line: &str) -> Option<(BatchId, u32)> {
    let rest = &line[line.find("soak c")? + 6..];
    let mut parts = rest.splitn(4, ' ');
    let c = parts.next()?.parse().ok()?;
    let b = parts.next()?.strip_prefix('b')?.parse().ok()?;
    let e = parts.next()?.strip_prefix('e')?.parse().ok()?;
    Some(((c, b), e))
}

pub async fn run(args: &BenchArgs, exe: &Path, dir: &Path, rate: f64) -> anyhow::Result<String> {
    let capture = dir.join("capture.jsonl");
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut rng = Rng(seed);
    let mut server = Server::start(exe, dir, &sink_config(&capture, true))?;
    let base = Arc::new(RwLock::new(server.base.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let interval = (rate > 0.0)
        .then(|| Duration::from_secs_f64(args.batch as f64 * args.clients as f64 / rate));
    let clients: Vec<_> = (0..args.clients as u32)
        .map(|c| {
            tokio::spawn(client_loop(
                c,
                base.clone(),
                stop.clone(),
                tally.clone(),
                args.batch,
                interval,
            ))
        })
        .collect();

    let started = Instant::now();
    let total = Duration::from_secs(args.seconds);
    let mut kills = 0;
    loop {
        let life = Duration::from_secs(rng.between(KILL_MIN_S, KILL_MAX_S));
        let left = total.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(life.min(left)).await;
        if life >= left {
            break;
        }
        server.kill();
        kills += 1;
        server = Server::start(exe, dir, &sink_config(&capture, true))?;
        *base.write().unwrap_or_else(|p| p.into_inner()) = server.base.clone();
        eprintln!(
            "soak {:>4.0} s: SIGKILL #{kills} after {} s; {} batches acknowledged so far",
            started.elapsed().as_secs_f64(),
            life.as_secs(),
            crate::queue::lock(&tally.acked).len()
        );
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let loaded = started.elapsed();

    // Drain with a working sink, then stop cleanly.
    server.stop();
    let mut server = Server::start(exe, dir, &sink_config(&capture, false))?;
    let http = reqwest::Client::new();
    let drain_started = Instant::now();
    loop {
        let q = crate::bench::queue_stats(&http, &server.base).await?;
        if q["queue"]["depth_batches"] == 0 {
            break;
        }
        if drain_started.elapsed() > DRAIN_LIMIT {
            bail!("queue did not drain in {DRAIN_LIMIT:?}: {q}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop();

    // Compare the capture with what was acknowledged.
    let acked = std::mem::take(&mut *crate::queue::lock(&tally.acked));
    let mut seen: HashMap<BatchId, HashSet<u32>> = HashMap::new();
    let (mut lines, mut torn, mut duplicates) = (0u64, 0u64, 0u64);
    let file = std::fs::File::open(&capture).context("no capture file")?;
    for line in BufReader::new(file).lines() {
        let line = line?;
        lines += 1;
        let Some((batch, entry)) = entry_id(&line).filter(|_| line.ends_with('}')) else {
            torn += 1; // a kill mid-append; that batch was captured again
            continue;
        };
        if !seen.entry(batch).or_default().insert(entry) {
            duplicates += 1;
        }
    }
    let acked_entries: u64 = acked.values().map(|&n| u64::from(n)).sum();
    let mut lost = 0u64;
    for (id, n) in &acked {
        let got = seen.get(id);
        lost += (0..*n)
            .filter(|e| !got.is_some_and(|s| s.contains(e)))
            .count() as u64;
    }
    let delivered: u64 = seen.values().map(|s| s.len() as u64).sum();
    let unacked_delivered = delivered - (acked_entries - lost);
    let report = format!(
        "soak: {:.0} s of load ({} clients x {} entries/batch, {}), {kills} SIGKILLs \
         (every {KILL_MIN_S}-{KILL_MAX_S} s, seed {seed}), mock sink flapping every {} s\n\
         acknowledged:  {acked_entries} entries in {} batches\n\
         delivered:     {delivered} distinct entries ({unacked_delivered} of them from \
         requests cut by a kill, never acknowledged)\n\
         lost:          {lost}\n\
         duplicates:    {duplicates} (redelivered after a kill; same ingest-id)\n\
         refused:       {} requests (503: queue full, or not ready after a restart), \
         {} connection errors (kills)\n\
         capture:       {lines} lines, {torn} torn by kills; drain took {:.1} s",
        loaded.as_secs_f64(),
        args.clients,
        args.batch,
        interval.map_or("unpaced".to_string(), |_| format!("{rate:.0} entries/s")),
        FLAP_MS / 1000,
        acked.len(),
        tally.refused.load(Ordering::Relaxed),
        tally.conn_errors.load(Ordering::Relaxed),
        drain_started.elapsed().as_secs_f64(),
    );
    if lost > 0 {
        bail!("{report}\nACKNOWLEDGED ENTRIES WERE LOST");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_back_from_a_capture_line() {
        let line = r#"{"message":"soak c12 b345 e67 GET /api/v1/items status=200","service":"a"}"#;
        assert_eq!(entry_id(line), Some(((12, 345), 67)));
        assert_eq!(entry_id(r#"{"message":"other"}"#), None);
    }
}
