//! The agents of the seed's Phase 1, in the same binary (SPEC §7): a log
//! agent (`logs.rs`: stdin, or files followed like `tail -F` through
//! `follow.rs` with positions in `state.rs`) and a host-metrics agent
//! (`metrics.rs`, reading `/proc` through `host.rs`). Both ship batches over
//! HTTP through `client.rs`, which applies the retry rules.

pub mod client;
mod follow;
pub mod host;
mod line;
pub mod logs;
pub mod metrics;
mod ship;
mod state;

use clap::Args;

/// Where and as whom an agent sends (SPEC §7: flag > environment > default).
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The ingester's base URL.
    #[arg(
        long,
        env = "INGESTION_API_URL",
        default_value = "http://localhost:8000"
    )]
    pub url: String,
    /// API key (X-API-Key).
    #[arg(
        long,
        env = "INGESTION_API_KEY",
        hide_env_values = true,
        default_value = crate::config::DEFAULT_API_KEY
    )]
    pub api_key: String,
    /// `host` of every entry (default: this machine's hostname).
    #[arg(long)]
    pub host: Option<String>,
    /// PEM certificate(s) to trust for an `https://` URL, besides the
    /// system store (a self-signed ingester).
    #[arg(long, env = "INGESTION_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
}

impl Target {
    pub fn host(&self) -> String {
        self.host.clone().unwrap_or_else(hostname)
    }
}

/// This machine's hostname (the kernel's, as `hostname` prints it), or
/// "localhost" if it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// What is held is sent within this after SIGTERM/SIGINT unless
/// `--give-up-after` says otherwise (SPEC §7).
pub(crate) const SIGNAL_GIVE_UP: std::time::Duration = std::time::Duration::from_secs(10);

/// Resolves once SIGTERM/SIGINT was received; never if the signal handler
/// could not be installed.
pub(crate) async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    if shutdown.wait_for(|&stop| stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A duration flag: finite seconds, at least `min` (else a usage error,
/// exit 2, rather than a busy loop or a panic in `Duration`).
pub(crate) fn seconds_at_least(s: &str, min: f64) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= min => Ok(v),
        Ok(_) => Err(format!(
            "must be a finite number of seconds, at least {min}"
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// The crate version: `agent_version` of every batch.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs an agent command to its end; returns the process exit code
/// (0 done, 1 fatal or lines given up; usage errors are clap's 2).
pub fn main(command: crate::cli::AgentCommand) -> u8 {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                // Keep the sender: a dropped one would read as a signal.
                tracing::warn!("cannot install signal handlers; stop the agent with SIGKILL");
                std::future::pending::<()>().await;
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("signal received; sending what is held, then stopping");
            let _ = stop_tx.send(true);
        });
        let outcome = match command {
            crate::cli::AgentCommand::Logs(args) => logs::run(args, stop_rx).await,
            crate::cli::AgentCommand::Metrics(args) => {
                metrics::run(args, stop_rx).await.map(|()| 0)
            }
        };
        match outcome {
            Ok(0) => 0,
            Ok(given_up) => {
                tracing::error!(
                    lines = given_up,
                    "gave up lines that were never acknowledged"
                );
                eprintln!("error: {given_up} lines were given up without acknowledgement");
                1
            }
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("error: {e}");
                1
            }
        }
    })
}
