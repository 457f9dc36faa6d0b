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
use super::{client::Client, Target};

/// CPU utilization needs two readings: the first collection comes this long
/// after the start.
const FIRST_SAMPLE: Duration = Duration::from_millis(250);
/// What is buffered is sent within this on SIGTERM, else dropped.
const SIGNAL_GIVE_UP: Duration = Duration::from_secs(10);

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

pub async fn run(args: MetricsArgs, mut shutdown: watch::Receiver<bool>) -> Result<(), Fatal> {
    let host = args.target.host();
    tracing::info!(
        service = %args.service,
        interval = %format!("{:.1}", args.interval),
        "Metrics agent starting"
    );
    let client = Client::new(&args.target);
    let interval = Duration::from_secs_f64(args.interval.max(0.1));
    let mut collector = Host::new();
    let mut buffer: Vec<Item> = Vec::new();
    let mut next = Instant::now() + FIRST_SAMPLE;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = shutdown.changed() => {
                if !buffer.is_empty() {
                    match tokio::time::timeout(SIGNAL_GIVE_UP, send(&client, &buffer)).await {
                        Ok(r) => r?,
                        Err(_) => tracing::warn!(metrics = buffer.len(), "stopping with metrics unsent"),
                    }
                }
                return Ok(());
            }
        }
        next += interval;
        // What the last collection left below --batch-size goes now, at the
        // next interval.
        if !buffer.is_empty() {
            send(&client, &buffer).await?;
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
            send(&client, &buffer).await?;
            buffer.clear();
        }
        // Behind (a long outage): collect again one interval from now.
        let now = Instant::now();
        if next < now {
            next = now + interval;
        }
    }
}

async fn send(client: &Client, items: &[Item]) -> Result<(), Fatal> {
    let key = uuid::Uuid::new_v4().to_string();
    let mut items = items.to_vec();
    for (n, item) in items.iter_mut().enumerate() {
        (item.start, item.end) = (n as u64, n as u64 + 1);
    }
    let sent = ship::ship(client, Endpoint::Metrics, &items, &|part: &[Item]| {
        format!("{key}-{}-{}", part[0].start, part[part.len() - 1].end)
    })
    .await?;
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
