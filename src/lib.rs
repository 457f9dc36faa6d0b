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
//! - [`config`] — the TOML file, defaults and validation; [`reload`]
//!   applies it again on SIGHUP; [`cli`] the
//!   command line; [`bench`] the load generator, the soak and the
//!   disk-churn runs.
//! - [`ops`] — what an operator's tools talk to: systemd's sd_notify.
//!
//! [`run`] wires them together and is what `main` and the tests call.

#![forbid(unsafe_code)]

pub mod agent;
pub mod api;
pub mod bench;
pub mod cli;
pub mod client_tls;
pub mod config;
pub mod fd_limit;
pub mod forward;
pub mod model;
pub mod ops;
pub mod otlp;
pub mod queue;
pub mod reload;
pub mod sink;
pub mod stats;
pub mod top;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::api::{Access, AppState, Tls};
use crate::config::{Config, SinkKind};
use crate::forward::Forwarder;
use crate::queue::{Queue, QueueError};
use crate::reload::Reloader;
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
    #[error("server.tls: {0}")]
    Tls(#[from] api::TlsError),
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
    run_with_reload(config, listener, shutdown, None).await
}

/// [`run`], plus a config reload on every SIGHUP when `reload` is given
/// (`main` gives it; in-process tests have no file to reload).
pub async fn run_with_reload(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    reload: Option<(Reloader, tokio::signal::unix::Signal)>,
) -> Result<(), RunError> {
    let tls = if config.server.tls.enabled() {
        Some(Arc::new(Tls::load(&config.server.tls)?))
    } else {
        None
    };
    // Opening blocks (sled recovery, a lock wait of up to 2 s): off the reactor.
    let queue_cfg = config.queue.clone();
    let queue = tokio::task::spawn_blocking(move || Queue::open(&queue_cfg))
        .await
        .map_err(std::io::Error::other)??;
    queue.set_idempotency_window(Duration::from_secs(config.server.idempotency_window_s));
    let sink = build_sink(&config, queue.node_id())?;
    let stats = Arc::new(Stats::new(sink.producer_type()));

    let (stop_tx, stop_rx) = watch::channel(false);
    let (settings_tx, settings_rx) = watch::channel(config.forwarder.clone());
    let forwarder = tokio::spawn(
        Forwarder::new(
            &config.forwarder,
            queue.clone(),
            sink.clone(),
            stats.clone(),
        )
        .with_settings(settings_rx)
        .run(stop_rx),
    );

    let limits = api::server::Limits::from_config(&config.server);
    let state = Arc::new(AppState {
        inflight: api::Budget::new(config.server.max_inflight_bytes),
        access: arc_swap::ArcSwap::from_pointee(Access::from_config(&config, Instant::now())),
        config: config.clone(),
        queue: queue.clone(),
        stats: stats.clone(),
    });
    let reloading = reload.map(|(reloader, mut hangups)| {
        let live = Arc::new(std::sync::Mutex::new(reload::Live {
            running: config,
            state: state.clone(),
            sink,
            tls: tls.clone(),
            forwarder: settings_tx,
            stats,
        }));
        let reloader = Arc::new(reloader);
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the config");
                let (live, reloader) = (live.clone(), reloader.clone());
                // Reading files and asking librdkafka block: off the reactor.
                let _ = tokio::task::spawn_blocking(move || {
                    queue::lock(&live).on_hangup(&reloader);
                })
                .await;
            }
        })
    });
    // Tests and the bench read this line to find a port chosen by the OS.
    tracing::info!(target: "edge_ingester", "{LISTENING_ON}{}", listener.local_addr()?);
    let (shutdown, watchdog) = systemd_ready(shutdown, &queue, &forwarder);
    let served = api::server::serve(listener, api::app(state), limits, tls, shutdown).await;

    // Before the writer and forwarder stop on purpose, or it would report them dead.
    drop(watchdog);
    if let Some(task) = reloading {
        // SIGHUP from here on is caught and ignored: it never stops us.
        task.abort();
    }
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

/// Tells systemd we are ready (queue open, listener bound), starts the
/// watchdog, and wraps `shutdown` so that systemd hears `STOPPING=1` the
/// moment it resolves. Without `NOTIFY_SOCKET`, `shutdown` as it was.
fn systemd_ready(
    shutdown: impl Future<Output = ()> + Send,
    queue: &Queue,
    forwarder: &tokio::task::JoinHandle<()>,
) -> (impl Future<Output = ()> + Send, ops::notify::Watchdog) {
    let notifier = ops::notify::Notifier::from_env();
    if let Some(n) = &notifier {
        n.send("READY=1");
    }
    let (queue, forwarder) = (queue.clone(), forwarder.abort_handle());
    let watchdog = ops::notify::Watchdog::start(notifier.as_ref(), move || {
        if !queue.writer_alive() {
            Err("the queue writer has stopped, or its disk failed an fsync (a restart re-reads the disk)")
        } else if forwarder.is_finished() {
            Err("the forwarder task has stopped")
        } else {
            Ok(())
        }
    });
    let shutdown = async move {
        shutdown.await;
        if let Some(n) = &notifier {
            n.send("STOPPING=1");
        }
    };
    (shutdown, watchdog)
}
