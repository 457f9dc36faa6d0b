//! The command line (SPEC §2): arguments, config precedence, and the
//! commands that do not serve (`check-config`, `stats`, `queue …`).
//!
//! Precedence is flag > environment variable > config file > default: clap
//! fills each override from its flag or, failing that, its variable; an
//! override that is set replaces the file's value.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError, SinkKind};
use crate::queue::{Queue, QueueStats};

/// Environment variables that override the config file (SPEC §2). A process
/// that starts a server with its own config file must clear them, or an
/// inherited `KAFKA_BROKERS` silently redirects it (it did, in CI).
pub const OVERRIDE_ENV: [&str; 6] = [
    "EDGE_INGESTER_CONFIG",
    "EDGE_INGESTER_LISTEN",
    "EDGE_INGESTER_DATA_DIR",
    "EDGE_INGESTER_SINK",
    "KAFKA_BROKERS",
    "INGESTION_API_KEY",
];

/// Used when no `--config` is given and this file exists.
pub const DEFAULT_CONFIG_PATH: &str = "config/edge-ingester.toml";

#[derive(Debug, Parser)]
#[command(
    name = "edge-ingester",
    version,
    about = "Durable buffering edge ingester"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Without a subcommand: `serve` with these flags.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API and forward the queue (the default).
    Serve(ServeArgs),
    /// Validate a config file and print the effective config, keys redacted.
    CheckConfig {
        #[arg(long, env = "EDGE_INGESTER_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print a running server's stats.
    Stats {
        #[arg(long, default_value = "http://127.0.0.1:8000")]
        url: String,
        /// Defaults to INGESTION_API_KEY, then the development key.
        #[arg(long, env = "INGESTION_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// PEM certificate(s) to trust for an `https://` URL, besides the
        /// system store.
        #[arg(long, env = "INGESTION_CA_CERT")]
        ca_cert: Option<PathBuf>,
    },
    /// Offline queue tools (the server must be stopped).
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Load generator: runs a workload against a fresh server and prints figures.
    Bench(crate::bench::BenchArgs),
    /// The agents that feed a running ingester (SPEC §7).
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// A live full-screen view of a running server (SPEC §9).
    Top(crate::top::TopArgs),
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Ship log lines from stdin or followed files.
    Logs(crate::agent::logs::LogsArgs),
    /// Ship this host's metrics every interval.
    Metrics(crate::agent::metrics::MetricsArgs),
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Depth, bytes, oldest/newest batch and dead letters. Writes nothing of
    /// its own; opening the database is sled's usual recovery, which zeroes
    /// the unused tail of its last log segment and writes a new snapshot
    /// file (`snap.<lsn>`): no record, index or ledger byte changes.
    Inspect {
        #[arg(long)]
        data_dir: PathBuf,
        /// Print the `queue` object of `/stats` as JSON.
        #[arg(long)]
        json: bool,
        /// Read `queue.max_bytes` from this config.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Batches that could never be delivered.
    DeadLetter {
        #[command(subcommand)]
        command: DeadLetterCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// List dead letters with their reasons.
    List {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Put every decodable dead letter back at the tail of the queue.
    Replay {
        #[arg(long)]
        data_dir: PathBuf,
        /// Use this config's `queue.max_bytes`, `when_full` and `node_id`.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Config file (default: config/edge-ingester.toml if present, else built-in defaults).
    #[arg(long, env = "EDGE_INGESTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to bind, e.g. 127.0.0.1:8000 (port 0 picks a free one).
    #[arg(long, env = "EDGE_INGESTER_LISTEN")]
    pub listen: Option<String>,
    /// Queue directory (overrides queue.path).
    #[arg(long, env = "EDGE_INGESTER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// mock or kafka.
    #[arg(long, env = "EDGE_INGESTER_SINK")]
    pub sink: Option<SinkKind>,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS")]
    pub brokers: Option<String>,
}

/// Loads the file (or the built-in defaults) without overrides.
pub fn load_config(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
            Config::load(Path::new(DEFAULT_CONFIG_PATH))
        }
        None => Ok(Config::default()),
    }
}

impl ServeArgs {
    /// The effective, validated config.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let mut cfg = load_config(self.config.as_deref())?;
        if let Some(v) = &self.listen {
            cfg.server.listen = v.clone();
        }
        if let Some(v) = &self.data_dir {
            cfg.queue.path = v.clone();
        }
        if let Some(v) = self.sink {
            cfg.forwarder.sink = v;
        }
        if let Some(v) = &self.brokers {
            cfg.kafka.brokers = v.clone();
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// `--data-dir` may name the queue directory or the data directory that
/// holds `queue/`; offline tools never create a queue where there is none.
pub fn resolve_queue_dir(dir: &Path) -> Result<PathBuf, String> {
    if dir.join("db").exists() {
        return Ok(dir.to_path_buf());
    }
    let nested = dir.join("queue");
    if nested.join("db").exists() {
        return Ok(nested);
    }
    Err(format!(
        "no queue found at {} (nor at {})",
        dir.display(),
        nested.display()
    ))
}

fn open_offline(data_dir: &Path, config: Option<&Path>) -> Result<Queue, String> {
    let mut cfg = match config {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?.queue,
        None => Config::default().queue,
    };
    cfg.path = resolve_queue_dir(data_dir)?;
    Queue::open_read_only(&cfg).map_err(|e| e.to_string())
}

/// `queue inspect`; returns the text to print.
pub fn queue_inspect(data_dir: &Path, json: bool, config: Option<&Path>) -> Result<String, String> {
    let queue = open_offline(data_dir, config)?;
    let stats = queue.stats();
    if json {
        return serde_json::to_string_pretty(&stats).map_err(|e| e.to_string());
    }
    let range = queue
        .seq_range()
        .map_or("-".to_string(), |(a, b)| format!("{a} .. {b}"));
    Ok(format!(
        "queue:        {}\nnode id:      {}\n{}batch seqs:   {range}\n",
        queue.path().display(),
        queue.node_id(),
        render_queue(&stats)
    ))
}

fn render_queue(q: &QueueStats) -> String {
    format!(
        "depth:        {} batches, {} entries\n\
         bytes:        {} live, {} on disk, max {}\n\
         oldest:       {}\n\
         dropped:      {} batches (when_full = drop_oldest)\n\
         dead letters: {} batches\n",
        q.depth_batches,
        q.depth_entries,
        human_bytes(q.bytes),
        human_bytes(q.disk_bytes),
        human_bytes(q.max_bytes),
        q.oldest_age_seconds
            .map_or("-".to_string(), |s| format!("{s:.1} s old")),
        q.dropped_batches,
        q.dead_letter_batches
    )
}

pub fn dead_letter_list(data_dir: &Path) -> Result<String, String> {
    let queue = open_offline(data_dir, None)?;
    let letters = queue.dead_letters();
    let mut out = format!("{} dead letters\n", letters.len());
    for (seq, reason) in letters {
        out.push_str(&format!("{seq}\t{reason}\n"));
    }
    Ok(out)
}

pub fn dead_letter_replay(data_dir: &Path, config: Option<&Path>) -> Result<String, String> {
    let mut cfg = match config {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?.queue,
        None => Config::default().queue,
    };
    cfg.path = resolve_queue_dir(data_dir)?;
    let queue = Queue::open(&cfg).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| e.to_string())?;
    let outcome = runtime.block_on(queue.replay_dead_letters());
    queue.close();
    let (replayed, kept) = outcome.map_err(|e| e.to_string())?;
    Ok(format!(
        "replayed {replayed} dead letters to the queue; {kept} cannot be decoded and stay\n"
    ))
}

/// `GET {url}/stats`, parsed; shared by `stats` and `top` (which brings its
/// own client, with a timeout).
pub async fn fetch_stats(
    client: &reqwest::Client,
    url: &str,
    api_key: &str,
) -> Result<crate::stats::Snapshot, String> {
    let url = format!("{}/stats", url.trim_end_matches('/'));
    let resp = client
        .get(&url)
        .header("X-API-Key", api_key)
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {}", error_chain(&e.without_url())))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{url} answered {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("unexpected /stats body: {e}"))
}

/// reqwest's own message is only "error sending request"; the reason
/// (refused, timed out, reset) is the last of its sources. The ones between
/// ("client error (Connect)") only push the reason off a narrow screen.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut root = None;
    let mut source = e.source();
    while let Some(s) = source {
        root = Some(s);
        source = s.source();
    }
    match root {
        Some(root) => format!("{e}: {root}"),
        None => e.to_string(),
    }
}

/// `stats`: fetches `/stats` and renders it for a person.
pub async fn stats(url: &str, api_key: &str, ca_cert: Option<&Path>) -> Result<String, String> {
    let client = crate::client_tls::builder(ca_cert)?
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let s = fetch_stats(&client, url, api_key).await?;
    let f = &s.forwarder;
    Ok(format!(
        "producer:     {} (up {:.0} s)\n\
         received:     {} logs, {} metrics\n\
         sent:         {} logs, {} metrics\n{}\
         circuit:      {} ({} consecutive failures{})\n\
         last error:   {}\n\
         last success: {}\n",
        s.producer_type,
        s.uptime_seconds,
        s.logs_received,
        s.metrics_received,
        s.logs_sent,
        s.metrics_sent,
        render_queue(&s.queue),
        f.circuit,
        f.consecutive_failures,
        f.next_retry_in_seconds
            .map_or(String::new(), |t| format!(", next retry in {t:.1} s")),
        f.last_error.as_deref().unwrap_or("-"),
        f.last_success_at.as_deref().unwrap_or("-"),
    ))
}

pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
