//! edge-ingester: a durable buffering edge ingester.
//!
//! The path of a batch is the module layout:
//!
//! - [`api`] — HTTP (poem + poem-openapi): auth, per-key rate limit, body
//!   limits and decompression, validation into a normalized [`model::Batch`].
//! - [`queue`] — the sled write-ahead queue. A 202 is sent only after the
//!   batch's group commit was flushed *and* fdatasync'ed; the durability
//!   contract is written at the top of `queue/mod.rs`.
//! - [`forward`] — one task that drains the queue head first into a sink, with
//!   exponential backoff and a circuit breaker (pure state machines).
//! - [`sink`] — where batches go: Kafka or the mock producer; both
//!   render the same Kafka message per entry (`sink/message.rs`).
//! - [`stats`] — counters for `/stats` and Prometheus.
//! - [`top`] — `edge-ingester top`, the live view of a running server's `/stats`.
//! - [`config`] — the TOML file, defaults and validation; [`cli`] the
//!   command line; [`bench`] the load generator, the soak and the
//!   disk-churn runs.
//!
//! [`run`] wires them together and is what `main` and the tests call.

#![forbid(unsafe_code)]

pub mod agent;
pub mod api;
pub mod bench;
pub mod cli;
pub mod config;
pub mod fd_limit;
pub mod forward;
pub mod model;
pub mod otlp;
pub mod queue;
pub mod sink;
pub mod stats;
pub mod top;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::api::{AppState, KeyRing, RateLimiter};
use crate::config::{Config, SinkKind};
use crate::forward::Forwarder;
use crate::queue::{Queue, QueueError};
use crate::sink::kafka::KafkaSink;
use crate::sink::mock::MockSink;
use crate::sink::Sink;
use crate::stats::Stats;

/// Logged with the bound address at start-up; tests and the bench read it to
/// find a port the OS chose (`--listen 127.0.0.1:0`).
pub const LISTENING_ON: &str = "listening on ";

/// Why the service could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("cannot start the {sink} sink: {reason}")]
    Sink { sink: &'static str, reason: String },
    #[error("HTTP server failed: {0}")]
    Http(#[from] std::io::Error),
}

fn build_sink(config: &Config, node_id: &str) -> Result<Arc<dyn Sink>, RunError> {
    match config.forwarder.sink {
        SinkKind::Mock => MockSink::new(&config.mock)
            .map(|s| Arc::new(s) as Arc<dyn Sink>)
            .map_err(|e| RunError::Sink {
                sink: "mock",
                reason: format!("capture_path: {e}"),
            }),
        // Brokers need not be reachable now: the queue holds the batches and
        // the forwarder retries until they are.
        SinkKind::Kafka => KafkaSink::new(&config.kafka, node_id)
            .map(|s| Arc::new(s) as Arc<dyn Sink>)
            .map_err(|reason| RunError::Sink {
                sink: "kafka",
                reason,
            }),
    }
}

/// Serves until `shutdown` resolves, then stops in order: HTTP (in-flight
/// requests finish, their batches durable) → forwarder (after its current
/// send) → queue writer (commits what is pending) → final flush.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    // Opening blocks (sled recovery, a lock wait of up to 2 s): off the reactor.
    let queue_cfg = config.queue.clone();
    let queue = tokio::task::spawn_blocking(move || Queue::open(&queue_cfg))
        .await
        .map_err(std::io::Error::other)??;
    queue.set_idempotency_window(Duration::from_secs(config.server.idempotency_window_s));
    let sink = build_sink(&config, queue.node_id())?;
    let stats = Arc::new(Stats::new(sink.producer_type()));

    let mut keys: Vec<String> = config.auth.keys.clone();
    if let Ok(extra) = std::env::var("INGESTION_API_KEY") {
        if !extra.is_empty() {
            keys.push(extra);
        }
    }
    let key_ring = KeyRing::new(keys.iter().map(String::as_str));
    let limiter = RateLimiter::new(
        key_ring.len(),
        config.rate_limit.requests_per_second,
        config.rate_limit.burst,
        Instant::now(),
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let forwarder = tokio::spawn(
        Forwarder::new(&config.forwarder, queue.clone(), sink, stats.clone()).run(stop_rx),
    );

    let limits = api::server::Limits::from_config(&config.server);
    let state = Arc::new(AppState {
        inflight: api::Budget::new(config.server.max_inflight_bytes),
        config,
        keys: key_ring,
        limiter,
        queue: queue.clone(),
        stats,
    });
    // Tests and the bench read this line to find a port chosen by the OS.
    tracing::info!(target: "edge_ingester", "{LISTENING_ON}{}", listener.local_addr()?);
    let served = api::server::serve(listener, api::app(state), limits, shutdown).await;

    let _ = stop_tx.send(true);
    if let Err(e) = forwarder.await {
        tracing::error!(error = %e, "forwarder task failed");
    }
    let closing = queue.clone();
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .map_err(std::io::Error::other)?;
    tracing::info!("stopped");
    served.map_err(RunError::Http)
}
