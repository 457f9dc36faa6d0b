//! The log agent (SPEC §7). Being written.

use std::path::PathBuf;

use clap::Args;

use super::client::Fatal;
use super::Target;

#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// `service` of every entry.
    #[arg(long)]
    pub service: String,
    /// Send once a batch holds this many lines.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Or this many seconds after its first line.
    #[arg(long, default_value_t = 1.0)]
    pub flush_interval: f64,
    /// Follow this file like `tail -F` (repeatable); without it, stdin.
    #[arg(long = "file")]
    pub files: Vec<PathBuf>,
    /// Read a followed file from its start on the first run (default: its end).
    #[arg(long)]
    pub from_beginning: bool,
    /// Where followed files' positions are kept.
    #[arg(long, default_value = "data/agent")]
    pub state_dir: PathBuf,
    #[command(flatten)]
    pub target: Target,
    /// Lines that may wait unsent before reading pauses.
    #[arg(long, default_value_t = 10_000)]
    pub max_buffer: usize,
    /// Give up on unacknowledged lines after this many seconds (at EOF of
    /// stdin: no limit by default; on SIGTERM: 10 s by default).
    #[arg(long)]
    pub give_up_after: Option<f64>,
}

/// Returns the number of lines given up.
pub async fn run(
    _args: LogsArgs,
    _shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<u64, Fatal> {
    unimplemented!("log agent")
}
