//! The host-metrics agent (SPEC §7): a collection of host metrics
//! (`host.rs`) every `--interval`, shipped once `--batch-size` are buffered,
//! else at the next interval. One collection is never split (except into the
//! halves of a 413).

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use super::client::{Endpoint, Fatal};
use super::host::{Host, Sample};
use super::ship::{self, Item};
use super::{client::Client, stopped, Target, SIGNAL_GIVE_UP};

/// CPU utilization needs two readings: the first collection comes this long
/// after the start.
const FIRST_SAMPLE: Duration = Duration::from_millis(250);
/// The shortest `--interval`: /proc is read on every collection.
const MIN_INTERVAL: f64 = 0.1;

#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// `service` of every metric.
    #[arg(long)]
    pub service: String,
    /// Seconds between collections.
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    pub interval: f64,
    /// Send once at least this many metrics are buffered (a collection is
    /// never split), else at the next interval.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    #[command(flatten)]
    pub target: Target,
}

pub async fn run(args: MetricsArgs, mut shutdown: watch::Receiver<bool>) -> Result<(), Fatal> {
    let host = args.target.host();
    tracing::info!(
        service = %args.service,
        interval = %format!("{:.1}", args.interval),
        "Metrics agent starting"
    );
    let client = Client::new(&args.target)?;
    let interval = Duration::from_secs_f64(args.interval);
    let mut collector = Host::new();
    let mut buffer: Vec<Item> = Vec::new();
    let mut next = Instant::now() + FIRST_SAMPLE;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = stopped(&mut shutdown) => return deliver_before_exit(&client, &buffer).await,
        }
        next += interval;
        // What the last collection left below --batch-size goes now, at the
        // next interval.
        if !buffer.is_empty() {
            if let Flow::Stop = deliver(&client, &buffer, &mut shutdown).await? {
                return Ok(());
            }
            buffer.clear();
        }
        let at = crate::model::now_rfc3339();
        let samples = collector.collect();
        buffer.extend(samples.iter().map(|s| Item {
            json: entry(s, &at, &args.service, &host),
            start: 0,
            end: 0,
        }));
        tracing::info!(buffer_size = buffer.len(), "Metrics collected");
        if buffer.len() >= args.batch_size {
            if let Flow::Stop = deliver(&client, &buffer, &mut shutdown).await? {
                return Ok(());
            }
            buffer.clear();
        }
        // Behind (a long outage): collect again one interval from now.
        let now = Instant::now();
        if next < now {
            next = now + interval;
        }
    }
}

fn seconds(s: &str) -> Result<f64, String> {
    super::seconds_at_least(s, MIN_INTERVAL)
}

/// Whether the agent goes on after a send.
enum Flow {
    Continue,
    Stop,
}

/// Sends `items`, however long an outage lasts, unless a signal comes
/// meanwhile: then the send gets [`SIGNAL_GIVE_UP`] more and the agent stops.
async fn deliver(
    client: &Client,
    items: &[Item],
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Flow, Fatal> {
    let sending = send(client, items);
    tokio::pin!(sending);
    tokio::select! {
        sent = &mut sending => return sent.map(|()| Flow::Continue),
        _ = stopped(shutdown) => {}
    }
    give_up_after(sending, items.len()).await?;
    Ok(Flow::Stop)
}

/// On a signal between collections: what is buffered goes, within
/// [`SIGNAL_GIVE_UP`].
async fn deliver_before_exit(client: &Client, items: &[Item]) -> Result<(), Fatal> {
    if items.is_empty() {
        return Ok(());
    }
    give_up_after(send(client, items), items.len()).await
}

async fn give_up_after(
    sending: impl std::future::Future<Output = Result<(), Fatal>>,
    metrics: usize,
) -> Result<(), Fatal> {
    match tokio::time::timeout(SIGNAL_GIVE_UP, sending).await {
        Ok(sent) => sent,
        Err(_) => {
            tracing::warn!(
                metrics,
                give_up_s = SIGNAL_GIVE_UP.as_secs(),
                "stopping with metrics unsent"
            );
            Ok(())
        }
    }
}

async fn send(client: &Client, items: &[Item]) -> Result<(), Fatal> {
    let mut items = items.to_vec();
    for (n, item) in items.iter_mut().enumerate() {
        (item.start, item.end) = (n as u64, n as u64 + 1);
    }
    let sent = ship::ship(client, Endpoint::Metrics, &items, &ship::random_key()).await?;
    if sent.dropped > 0 {
        tracing::warn!(
            dropped = sent.dropped,
            "metrics the server refused for good were dropped"
        );
    }
    Ok(())
}

fn entry(s: &Sample, at: &str, service: &str, host: &str) -> Vec<u8> {
    let attributes: Map<String, Value> = s
        .attributes
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
        .collect();
    serde_json::to_vec(&json!({
        "timestamp": at,
        "name": s.name,
        "value": s.value,
        "metric_type": s.kind.as_str(),
        "service": service,
        "host": host,
        "unit": s.unit,
        "attributes": attributes,
    }))
    .expect("JSON values always serialize")
}
