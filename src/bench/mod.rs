//! `edge-ingester bench`: the load generator for the performance targets.
//!
//! The server under test is this binary started as a child process on a free
//! port with a temporary queue, so its memory (`VmRSS` idle, `VmHWM` peak)
//! is measured apart from the generator's. Workloads:
//!
//! - **w1**: N keep-alive clients POST `/logs` batches of varied entries
//!   (~250 B each) as fast as acknowledgements come, mock sink failing so
//!   every batch stays queued: accepted entries/s, ack latency, RSS.
//! - **w2**: the same clients, paced, into Kafka (`--brokers`): rate steps;
//!   the highest rate at which the queue does not grow.
//! - **w3**: 1,000,000 entries queued while the sink is down, then drained
//!   into Kafka: entries/s of the drain.
//! - **soak**: W1's clients for 10 minutes while the server is SIGKILLed
//!   every 20–60 s and the sink flaps; acknowledged vs delivered (`soak.rs`).
//! - **churn**: 10 M entries through a queue kept near 10k batches; the
//!   directory's size against `max_bytes` (`churn.rs`).
//! - **otlp**: W1 and the same entries as OTLP/protobuf to `POST /v1/logs`,
//!   in alternating rounds on fresh servers: both rates and their ratio
//!   (`otlp.rs`).
//! - **agent-logs**, **agent-metrics**: the agents' throughput, CPU and
//!   memory (`agent.rs`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

mod agent;
mod churn;
mod otlp;
mod soak;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// w1, w2, w3, soak (`--seconds 600` for 10 minutes), churn, otlp
    /// (W1 and its OTLP twin, alternating), agent-logs (`--drain-entries` lines, `--batch` per batch) or
    /// agent-metrics (`--seconds`).
    #[arg(long, default_value = "w1")]
    pub workload: String,
    /// Seconds of measured load (w1, after a 2 s warm-up; w2, per rate step).
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Concurrent keep-alive clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Entries per batch.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Kafka bootstrap servers for w2 and w3.
    #[arg(long, env = "KAFKA_BROKERS")]
    pub brokers: Option<String>,
    /// Entries queued before the drain (w3).
    #[arg(long, default_value_t = 1_000_000)]
    pub drain_entries: u64,
    /// Entries/s the soak's clients send in all (0: unpaced).
    #[arg(long, default_value_t = 20_000.0)]
    pub rate: f64,
    /// Server binary (default: this executable).
    #[arg(long)]
    pub server: Option<PathBuf>,
}

pub(crate) const KEY: &str = "bench-key";
pub(crate) const WARM_UP: Duration = Duration::from_secs(2);
/// Clients step through the pre-built bodies at different offsets.
pub(crate) const BODY_STRIDE: usize = 7;
/// w2 rate steps, entries/s.
const W2_STEPS: [f64; 8] = [
    50_000.0, 100_000.0, 150_000.0, 200_000.0, 250_000.0, 300_000.0, 350_000.0, 400_000.0,
];

pub fn run(args: BenchArgs) -> anyhow::Result<String> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let exe = match &args.server {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("cannot find this executable")?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.workload.as_str() {
        "w1" => {
            let mut server = Server::start(&exe, dir.path(), &mock_failing_sink())?;
            let result = rt.block_on(w1(&args, &server));
            server.stop();
            result
        }
        "w2" | "w3" => {
            let brokers = args
                .brokers
                .clone()
                .context("w2 and w3 need --brokers (or KAFKA_BROKERS)")?;
            let (logs_topic, metrics_topic) = rt.block_on(fresh_topics(&brokers))?;
            let kafka = format!(
                "[forwarder]\nsink = \"kafka\"\n[kafka]\nbrokers = \"{brokers}\"\n\
                 logs_topic = \"{logs_topic}\"\nmetrics_topic = \"{metrics_topic}\"\n"
            );
            if args.workload == "w2" {
                rt.block_on(w2(&args, &exe, dir.path(), &kafka))
            } else {
                rt.block_on(w3(&args, &exe, dir.path(), &kafka))
            }
        }
        "soak" => rt.block_on(soak::run(&args, &exe, dir.path(), args.rate)),
        "churn" => rt.block_on(churn::run(&args, &exe, dir.path())),
        "otlp" => rt.block_on(otlp::run(&args, &exe, dir.path())),
        "agent-logs" => rt.block_on(agent::logs(&args, &exe, dir.path())),
        "agent-metrics" => rt.block_on(agent::metrics(&args, &exe, dir.path())),
        other => bail!(
            "unknown workload `{other}` (available: w1, w2, w3, soak, churn, otlp, agent-logs, agent-metrics)"
        ),
    }
}

pub(crate) fn mock_failing_sink() -> String {
    "[mock]\nfail = \"always\"\n".into()
}

pub(crate) struct Server {
    child: Child,
    pub base: String,
}

impl Server {
    /// Starts the server with the bench's common settings plus `extra` TOML.
    pub fn start(exe: &Path, dir: &Path, extra: &str) -> anyhow::Result<Server> {
        Self::start_with(exe, dir, 4 << 30, extra)
    }

    /// `start`, with the queue's `max_bytes`.
    pub fn start_with(
        exe: &Path,
        dir: &Path,
        max_bytes: u64,
        extra: &str,
    ) -> anyhow::Result<Server> {
        let config = dir.join("bench.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n\
                 [auth]\nkeys = [\"{KEY}\"]\n\
                 [rate_limit]\nrequests_per_second = 1000000.0\nburst = 1000000\n\
                 [queue]\npath = \"{}\"\nmax_bytes = {max_bytes}\n{extra}",
                dir.join("queue").display()
            ),
        )?;
        let mut cmd = Command::new(exe);
        // The bench's config file says everything; nothing may override it.
        for var in crate::cli::OVERRIDE_ENV {
            cmd.env_remove(var);
        }
        let mut child = cmd
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
                if let Some(addr) = line.split(crate::LISTENING_ON).nth(1) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr.trim().to_string());
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .context("server did not report its address")?;
        Ok(Server {
            child,
            base: format!("http://{addr}"),
        })
    }

    /// CPU seconds (user + system) the server has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.child.id())
    }

    pub fn rss_mb(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let kib: u64 = status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        kib as f64 / 1024.0
    }

    /// SIGKILL, as a crash or the OOM killer would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: a clean shutdown, so the queue is intact for the next phase.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Clock ticks per second for /proc/<pid>/stat (the kernel's USER_HZ, 100 on
/// every Linux build we run on).
const TICKS: f64 = 100.0;

pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" that ends the command name: utime is the 12th,
    // stime the 13th of what follows (fields 14 and 15 overall).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (num(11) + num(12)) / TICKS
}

/// The `i`th entry of a body with this salt: the number every field of a
/// bench entry derives from (shared with the OTLP twin, `otlp.rs`).
pub(crate) fn entry_key(salt: usize, i: usize) -> usize {
    salt.wrapping_mul(7919).wrapping_add(i * 104_729)
}

/// The message of entry `k`, like an access log line.
pub(crate) fn entry_message(k: usize) -> String {
    const PATHS: [&str; 6] = [
        "/api/v1/items",
        "/api/v1/users",
        "/login",
        "/cart",
        "/search",
        "/health",
    ];
    format!(
        "GET {}/{} status={} took={}ms user=u{:06} trace={:016x}",
        PATHS[k % PATHS.len()],
        k % 10_000,
        [200, 200, 201, 404, 500][k % 5],
        k % 900,
        k % 999_983,
        k as u64 * 2_654_435_761
    )
}

/// A batch body of `n` varied log entries (~250 B each).
pub fn log_batch_body(n: usize, salt: usize) -> Vec<u8> {
    const LEVELS: [&str; 5] = ["DEBUG", "INFO", "INFO", "WARNING", "ERROR"];
    let mut entries = Vec::with_capacity(n);
    for i in 0..n {
        let k = entry_key(salt, i);
        entries.push(serde_json::json!({
            "timestamp": format!("2026-11-27T10:{:02}:{:02}.{:03}Z", (k / 60) % 60, k % 60, k % 1000),
            "level": LEVELS[k % LEVELS.len()],
            "message": entry_message(k),
            "service": format!("svc-{}", k % 8),
            "host": format!("edge-{:03}", salt % 32),
            "attributes": {"region": "eu-west", "attempt": k % 3, "cached": k.is_multiple_of(2)}
        }));
    }
    serde_json::to_vec(&serde_json::json!({"entries": entries, "agent_version": "0.1.0"}))
        .expect("json")
}

/// What a run of clients achieved.
pub(crate) struct Load {
    pub accepted_entries: u64,
    pub refused: u64,
    /// Ack latencies of accepted requests, µs, sorted.
    latencies: Vec<u64>,
    measured: Duration,
}

impl Load {
    pub fn pct(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i] as f64 / 1000.0
    }

    pub fn rate(&self) -> f64 {
        self.accepted_entries as f64 / self.measured.as_secs_f64()
    }
}

/// What load clients send: batches of `batch` log entries, one body per
/// salt, to one endpoint.
#[derive(Clone, Copy)]
pub(crate) struct Payload {
    path: &'static str,
    content_type: &'static str,
    /// The status that means "accepted".
    ok_status: u16,
    body: fn(usize, usize) -> Vec<u8>,
}

/// W1's bodies: our JSON to `POST /logs`.
pub(crate) const JSON_LOGS: Payload = Payload {
    path: "/logs",
    content_type: "application/json",
    ok_status: 202,
    body: log_batch_body,
};

/// The same entries as OTLP/protobuf to `POST /v1/logs`.
pub(crate) const OTLP_LOGS: Payload = Payload {
    path: "/v1/logs",
    content_type: "application/x-protobuf",
    ok_status: 200,
    body: otlp::log_request_body,
};

/// Runs `clients` keep-alive clients against the payload's endpoint. With `rate`, each
/// client paces itself to its share of that many entries/s; without, it
/// posts as fast as acknowledgements come. Requests that start before
/// `warm_up` has passed are not counted.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn drive(
    base: &str,
    payload: Payload,
    clients: usize,
    batch: usize,
    warm_up: Duration,
    duration: Duration,
    rate: Option<f64>,
    max_entries: Option<u64>,
) -> anyhow::Result<Load> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let bodies: Arc<Vec<Vec<u8>>> =
        Arc::new((0..clients * 4).map(|s| (payload.body)(batch, s)).collect());
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let posted = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + warm_up;
    let end = measure_from + duration;
    let period = rate.map(|r| Duration::from_secs_f64(clients as f64 * batch as f64 / r));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, url, bodies) = (
            client.clone(),
            format!("{base}{}", payload.path),
            bodies.clone(),
        );
        let (content_type, ok_status) = (payload.content_type, payload.ok_status);
        let (accepted, refused, posted) = (accepted.clone(), refused.clone(), posted.clone());
        let batch = batch as u64;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = c;
            let mut tick = period.map(|p| {
                let mut t = tokio::time::interval(p);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            while Instant::now() < end {
                if max_entries.is_some_and(|m| posted.fetch_add(batch, Ordering::Relaxed) >= m) {
                    break;
                }
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let body = bodies[i % bodies.len()].clone();
                i += BODY_STRIDE;
                let t0 = Instant::now();
                let resp = client
                    .post(&url)
                    .header("content-type", content_type)
                    .header("x-api-key", KEY)
                    .body(body)
                    .send()
                    .await;
                let took = t0.elapsed();
                let ok = matches!(&resp, Ok(r) if r.status().as_u16() == ok_status);
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
    latencies.sort_unstable();
    Ok(Load {
        accepted_entries: accepted.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        latencies,
        measured: Instant::now().saturating_duration_since(measure_from),
    })
}

async fn w1(args: &BenchArgs, server: &Server) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    wait_ready(&http, &server.base).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = server.rss_mb("VmRSS:");
    let cpu_before = server.cpu_seconds();
    let load = drive(
        &server.base,
        JSON_LOGS,
        args.clients,
        args.batch,
        WARM_UP,
        Duration::from_secs(args.seconds),
        None,
        None,
    )
    .await?;
    let peak_rss = server.rss_mb("VmHWM:");
    // Includes the 2 s warm-up: CPU per second of load, not of the window.
    let cores = (server.cpu_seconds() - cpu_before) / (load.measured + WARM_UP).as_secs_f64();
    let q = queue_stats(&http, &server.base).await?;
    let (stored, entries, disk) = (
        q["queue"]["bytes"].as_f64().unwrap_or(0.0),
        q["queue"]["depth_entries"].as_f64().unwrap_or(0.0).max(1.0),
        q["queue"]["disk_bytes"].as_f64().unwrap_or(0.0),
    );
    let json_per_entry = log_batch_body(args.batch, 0).len() as f64 / args.batch as f64;
    Ok(format!(
        "workload W1: {} clients, {} entries/batch, {:.1} s measured, mock sink failing\n\
         accepted:    {} entries ({} batches), refused {}\n\
         throughput:  {:.0} entries/s\n\
         ack latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n\
         server RSS:  idle {:.1} MB, peak {:.1} MB\n\
         server CPU:  {:.2} cores\n\
         queue:       {:.0} B stored per entry vs {:.0} B of JSON ({:.1}x smaller); {:.0} MB on disk for {:.0} MB live\n",
        args.clients,
        args.batch,
        load.measured.as_secs_f64(),
        load.accepted_entries,
        load.latencies.len(),
        load.refused,
        load.rate(),
        load.pct(0.50),
        load.pct(0.99),
        load.pct(1.0),
        idle_rss,
        peak_rss,
        cores,
        stored / entries,
        json_per_entry,
        json_per_entry / (stored / entries),
        disk / 1e6,
        stored / 1e6,
    ))
}

pub(crate) async fn queue_stats(
    http: &reqwest::Client,
    base: &str,
) -> anyhow::Result<serde_json::Value> {
    let s = http
        .get(format!("{base}/stats"))
        .header("x-api-key", KEY)
        .send()
        .await?
        .json()
        .await?;
    Ok(s)
}

async fn w2(args: &BenchArgs, exe: &Path, dir: &Path, kafka: &str) -> anyhow::Result<String> {
    let mut server = Server::start(exe, dir, kafka)?;
    let http = reqwest::Client::new();
    wait_ready(&http, &server.base).await?;
    let mut out = format!(
        "workload W2: {} clients, {} entries/batch, {} s per step, into Kafka\n",
        args.clients, args.batch, args.seconds
    );
    let mut best: Option<f64> = None;
    for target in W2_STEPS {
        let before = queue_stats(&http, &server.base).await?;
        let cpu_before = server.cpu_seconds();
        let load = drive(
            &server.base,
            JSON_LOGS,
            args.clients,
            args.batch,
            Duration::ZERO,
            Duration::from_secs(args.seconds),
            Some(target),
            None,
        )
        .await?;
        let after = queue_stats(&http, &server.base).await?;
        let cores = (server.cpu_seconds() - cpu_before) / load.measured.as_secs_f64();
        let depth = after["queue"]["depth_entries"].as_u64().unwrap_or(0);
        let sent =
            after["logs_sent"].as_u64().unwrap_or(0) - before["logs_sent"].as_u64().unwrap_or(0);
        // "Does not grow": what is left queued is under half a second of load.
        let stable = (depth as f64) < target * 0.5 && load.rate() > target * 0.95;
        out += &format!(
            "  target {:>7.0}/s: accepted {:>7.0}/s, sent {:>7.0}/s, queued at end {:>7} entries, p99 {:.1} ms, server {:.2} cores -> {}\n",
            target,
            load.rate(),
            sent as f64 / load.measured.as_secs_f64(),
            depth,
            load.pct(0.99),
            cores,
            if stable { "stable" } else { "queue grows" }
        );
        if !stable {
            break;
        }
        best = Some(load.rate());
        // Let the queue settle before the next step.
        wait_drained(&http, &server.base, Duration::from_secs(60)).await?;
    }
    out += &format!(
        "highest rate without queue growth: {}\nserver peak RSS: {:.1} MB\n",
        best.map_or("none of the steps".into(), |r| format!("{r:.0} entries/s")),
        server.rss_mb("VmHWM:")
    );
    server.stop();
    Ok(out)
}

async fn w3(args: &BenchArgs, exe: &Path, dir: &Path, kafka: &str) -> anyhow::Result<String> {
    // Phase 1: queue the entries while the sink is down.
    let mut filler = Server::start(exe, dir, &mock_failing_sink())?;
    let http = reqwest::Client::new();
    wait_ready(&http, &filler.base).await?;
    let fill = drive(
        &filler.base,
        JSON_LOGS,
        args.clients,
        args.batch,
        Duration::ZERO,
        Duration::from_secs(600),
        None,
        Some(args.drain_entries),
    )
    .await?;
    filler.stop();

    // Phase 2: the sink is back; time the drain.
    let started = Instant::now();
    let mut server = Server::start(exe, dir, kafka)?;
    wait_ready(&http, &server.base).await?;
    let queued = queue_stats(&http, &server.base).await?["queue"]["depth_entries"]
        .as_u64()
        .unwrap_or(0);
    let drain_from = Instant::now();
    let cpu_before = server.cpu_seconds();
    let mut peak_rss: f64 = 0.0;
    loop {
        let s = queue_stats(&http, &server.base).await?;
        peak_rss = peak_rss.max(server.rss_mb("VmRSS:"));
        if s["queue"]["depth_batches"] == 0 {
            break;
        }
        if drain_from.elapsed() > Duration::from_secs(600) {
            bail!("queue did not drain within 10 minutes: {s}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = drain_from.elapsed();
    let cores = (server.cpu_seconds() - cpu_before) / took.as_secs_f64();
    let hwm = server.rss_mb("VmHWM:");
    server.stop();
    Ok(format!(
        "workload W3: drain into Kafka after an outage\n\
         queued:      {} entries ({} accepted at {:.0}/s while the sink was down)\n\
         drained in:  {:.2} s (server start to ready: {:.2} s)\n\
         throughput:  {:.0} entries/s\n\
         server RSS:  peak {:.1} MB during the drain (VmHWM {:.1} MB)\n\
         server CPU:  {:.2} cores during the drain\n",
        queued,
        fill.accepted_entries,
        fill.rate(),
        took.as_secs_f64(),
        (drain_from - started).as_secs_f64(),
        queued as f64 / took.as_secs_f64(),
        peak_rss,
        hwm,
        cores,
    ))
}

async fn wait_drained(http: &reqwest::Client, base: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if queue_stats(http, base).await?["queue"]["depth_batches"] == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("queue did not drain within {limit:?}")
}

pub(crate) async fn wait_ready(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/health")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("server at {base} did not come up")
}

/// Topics of their own for each bench run (tansu does not auto-create).
async fn fresh_topics(brokers: &str) -> anyhow::Result<(String, String)> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let (logs, metrics) = (format!("bench.logs.{id}"), format!("bench.metrics.{id}"));
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let topics = [
        NewTopic::new(&logs, 3, TopicReplication::Fixed(1)),
        NewTopic::new(&metrics, 3, TopicReplication::Fixed(1)),
    ];
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    for r in admin.create_topics(&topics, &opts).await? {
        r.map_err(|(name, e)| anyhow::anyhow!("cannot create topic {name}: {e}"))?;
    }
    Ok((logs, metrics))
}
