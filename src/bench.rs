//! `edge-ingester bench`: the load generator for the performance targets.
//!
//! W1: N concurrent keep-alive clients POST `/logs` batches of varied log
//! entries (~250 B each) against a fresh release server whose mock sink
//! fails, so every accepted batch stays in the queue. It prints accepted
//! entries/s, ack latency percentiles and the server's idle and peak RSS
//! (`VmRSS` before load, `VmHWM` after). The server is a child process so its
//! memory is measured apart from the generator's.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Workload; only w1 for now.
    #[arg(long, default_value = "w1")]
    pub workload: String,
    /// Seconds of measured load (after a 2 s warm-up).
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Concurrent keep-alive clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Entries per batch.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Server binary (default: this executable).
    #[arg(long)]
    pub server: Option<PathBuf>,
}

const KEY: &str = "bench-key";
const WARM_UP: Duration = Duration::from_secs(2);
/// Clients step through the pre-built bodies at different offsets.
const BODY_STRIDE: usize = 7;

pub fn run(args: BenchArgs) -> anyhow::Result<String> {
    if args.workload != "w1" {
        bail!("unknown workload `{}` (available: w1)", args.workload);
    }
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let exe = match &args.server {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("cannot find this executable")?,
    };
    let mut server = Server::start(&exe, dir.path())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(w1(&args, &server));
    server.stop();
    result
}

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(exe: &Path, dir: &Path) -> anyhow::Result<Server> {
        let config = dir.join("bench.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n\
                 [auth]\nkeys = [\"{KEY}\"]\n\
                 [rate_limit]\nrequests_per_second = 1000000.0\nburst = 1000000\n\
                 [queue]\npath = \"{}\"\n\
                 [mock]\nfail = \"always\"\n",
                dir.join("queue").display()
            ),
        )?;
        let mut child = Command::new(exe)
            .args(["serve", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line
                    .split("listening on ")
                    .nth(1)
                    .map(|a| a.trim_start_matches("socket://"))
                {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr.trim().to_string());
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .context("server did not report its address")?;
        Ok(Server { child, addr })
    }

    fn rss_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn stop(&mut self) {
        // SIGTERM for a clean shutdown; the queue is thrown away with the dir.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// A batch body of `n` varied log entries (~250 B each).
pub fn log_batch_body(n: usize, salt: usize) -> Vec<u8> {
    const LEVELS: [&str; 5] = ["DEBUG", "INFO", "INFO", "WARNING", "ERROR"];
    const PATHS: [&str; 6] = [
        "/api/v1/items",
        "/api/v1/users",
        "/login",
        "/cart",
        "/search",
        "/health",
    ];
    let mut entries = Vec::with_capacity(n);
    for i in 0..n {
        let k = salt.wrapping_mul(7919).wrapping_add(i * 104_729);
        entries.push(serde_json::json!({
            "timestamp": format!("2026-11-27T10:{:02}:{:02}.{:03}Z", (k / 60) % 60, k % 60, k % 1000),
            "level": LEVELS[k % LEVELS.len()],
            "message": format!(
                "GET {}/{} status={} took={}ms user=u{:06} trace={:016x}",
                PATHS[k % PATHS.len()], k % 10_000, [200, 200, 201, 404, 500][k % 5], k % 900, k % 999_983, k as u64 * 2_654_435_761
            ),
            "service": format!("svc-{}", k % 8),
            "host": format!("edge-{:03}", salt % 32),
            "attributes": {"region": "eu-west", "attempt": k % 3, "cached": k % 2 == 0}
        }));
    }
    serde_json::to_vec(&serde_json::json!({"entries": entries, "agent_version": "0.1.0"}))
        .expect("json")
}

async fn w1(args: &BenchArgs, server: &Server) -> anyhow::Result<String> {
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;
    wait_ready(&client, &base).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = server.rss_kib("VmRSS:");

    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..args.clients * 4)
            .map(|s| log_batch_body(args.batch, s))
            .collect(),
    );
    let body_bytes = bodies[0].len();
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + WARM_UP;
    let end = measure_from + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (client, url, bodies) = (client.clone(), format!("{base}/logs"), bodies.clone());
        let (accepted, refused) = (accepted.clone(), refused.clone());
        let batch = args.batch as u64;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = c;
            while Instant::now() < end {
                let body = bodies[i % bodies.len()].clone();
                i += BODY_STRIDE;
                let t0 = Instant::now();
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-api-key", KEY)
                    .body(body)
                    .send()
                    .await;
                let took = t0.elapsed();
                let ok = matches!(&resp, Ok(r) if r.status().as_u16() == 202);
                if let Ok(r) = resp {
                    let _ = r.bytes().await;
                }
                if t0 >= measure_from {
                    if ok {
                        accepted.fetch_add(batch, Ordering::Relaxed);
                        latencies.push(took.as_micros() as u64);
                    } else {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await?);
    }
    let measured = Instant::now()
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    let peak_rss = server.rss_kib("VmHWM:");
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i] as f64 / 1000.0
    };
    let entries = accepted.load(Ordering::Relaxed);
    Ok(format!(
        "workload W1: {} clients, {} entries/batch, body {} B, {:.1} s measured\n\
         accepted:    {} entries ({} batches), refused {}\n\
         throughput:  {:.0} entries/s\n\
         ack latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n\
         server RSS:  idle {:.1} MB, peak {:.1} MB\n",
        args.clients,
        args.batch,
        body_bytes,
        measured,
        entries,
        latencies.len(),
        refused.load(Ordering::Relaxed),
        entries as f64 / measured,
        pct(0.50),
        pct(0.99),
        pct(1.0),
        idle_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
    ))
}

async fn wait_ready(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/ready")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("server at {base} did not become ready")
}
