//! The host-metrics agent (SPEC §7). Being written; see the helper brief.

use clap::Args;

use super::client::Fatal;
use super::Target;

#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// `service` of every metric.
    #[arg(long)]
    pub service: String,
    /// Seconds between collections.
    #[arg(long, default_value_t = 10.0)]
    pub interval: f64,
    /// Send once at least this many metrics are buffered (a collection is
    /// never split), else at the next interval.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    #[command(flatten)]
    pub target: Target,
}

pub async fn run(
    _args: MetricsArgs,
    _shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Fatal> {
    unimplemented!("metrics agent")
}
