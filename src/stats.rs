//! Counters and gauges: the `/stats` JSON (SPEC §5) and Prometheus text.
//!
//! Counters are plain atomics bumped on the request and forwarding paths;
//! queue figures come from the queue's in-memory index when asked for, so a
//! scrape never scans the disk.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::forward::breaker::Circuit;
use crate::model::Kind;
use crate::queue::{lock, QueueStats};

/// Upper bounds (seconds) of the request-duration histogram buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// What the forwarder is doing, for operators asking why the queue grows.
#[derive(Debug, Clone)]
pub struct ForwarderStatus {
    pub circuit: Circuit,
    pub consecutive_failures: u32,
    /// When the next send will be tried, while waiting after a failure.
    pub next_attempt_at: Option<Instant>,
    pub last_error: Option<String>,
    pub last_success_at: Option<String>,
}

impl Default for ForwarderStatus {
    fn default() -> Self {
        Self {
            circuit: Circuit::Closed,
            consecutive_failures: 0,
            next_attempt_at: None,
            last_error: None,
            last_success_at: None,
        }
    }
}

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

pub struct Stats {
    started: Instant,
    producer_type: &'static str,
    logs_received: AtomicU64,
    metrics_received: AtomicU64,
    logs_sent: AtomicU64,
    metrics_sent: AtomicU64,
    pub rate_limited: AtomicU64,
    pub forward_errors: AtomicU64,
    /// (route template, status) → count; routes are a fixed small set.
    http: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Histogram,
    pub forwarder: Mutex<ForwarderStatus>,
    pub config: Mutex<ConfigStatus>,
}

/// The running configuration's history: an operator who sent SIGHUP sees
/// here whether it took.
#[derive(Debug, Clone)]
pub struct ConfigStatus {
    /// When the running configuration was loaded (start-up or last reload).
    pub loaded_at: String,
    pub reloads: u64,
    pub reload_failures: u64,
}

/// Now as RFC 3339, UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The SPEC §5 JSON.
#[derive(Debug, serde::Serialize, serde::Deserialize, poem_openapi::Object)]
pub struct Snapshot {
    /// Always `ok`.
    pub status: String,
    /// `MockKafkaProducer` or `KafkaProducer`.
    pub producer_type: String,
    pub logs_received: u64,
    pub metrics_received: u64,
    pub logs_sent: u64,
    pub metrics_sent: u64,
    pub queue: QueueStats,
    pub forwarder: ForwarderSnapshot,
    /// Absent from servers older than SIGHUP reload: read as empty.
    #[serde(default)]
    pub config: ConfigSnapshot,
    pub uptime_seconds: f64,
}

/// SIGHUP reloads (SPEC §9).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize, poem_openapi::Object)]
pub struct ConfigSnapshot {
    /// When the running configuration was loaded (RFC 3339).
    pub loaded_at: String,
    /// Reloads applied since start.
    pub reloads: u64,
    /// Reloads refused (the file did not validate); nothing changed.
    pub reload_failures: u64,
}

#[derive(Debug, serde::Serialize, serde::Deserialize, poem_openapi::Object)]
pub struct ForwarderSnapshot {
    /// closed, open or half_open.
    pub circuit: String,
    pub consecutive_failures: u32,
    pub next_retry_in_seconds: Nullable<f64>,
    pub last_error: Nullable<String>,
    pub last_success_at: Nullable<String>,
}

/// A value that is present or JSON `null` — never left out, as SPEC §5's
/// `/stats` shows. NOTE: poem-openapi documents an `Option` field as
/// optional but not nullable, so the `null` it sends broke the documented
/// schema (found by schemathesis); this type says `nullable: true`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Nullable<T>(pub Option<T>);

impl<T> std::ops::Deref for Nullable<T> {
    type Target = Option<T>;
    fn deref(&self) -> &Option<T> {
        &self.0
    }
}

impl<T: poem_openapi::types::Type> poem_openapi::types::Type for Nullable<T> {
    const IS_REQUIRED: bool = true;
    type RawValueType = T::RawValueType;
    type RawElementValueType = T::RawElementValueType;

    fn name() -> std::borrow::Cow<'static, str> {
        format!("nullable_{}", T::name()).into()
    }

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
        match T::schema_ref() {
            MetaSchemaRef::Inline(schema) => MetaSchemaRef::Inline(Box::new(MetaSchema {
                nullable: true,
                ..*schema
            })),
            reference => MetaSchemaRef::Inline(Box::new(MetaSchema {
                nullable: true,
                all_of: vec![reference],
                ..MetaSchema::ANY
            })),
        }
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        T::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        self.0.as_ref().and_then(|v| v.as_raw_value())
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        match &self.0 {
            Some(v) => v.raw_element_iter(),
            None => Box::new(std::iter::empty()),
        }
    }
}

impl<T: poem_openapi::types::ToJSON> poem_openapi::types::ToJSON for Nullable<T> {
    fn to_json(&self) -> Option<serde_json::Value> {
        Some(
            self.0
                .as_ref()
                .and_then(|v| v.to_json())
                .unwrap_or(serde_json::Value::Null),
        )
    }
}

impl<T: poem_openapi::types::ParseFromJSON> poem_openapi::types::ParseFromJSON for Nullable<T> {
    fn parse_from_json(value: Option<serde_json::Value>) -> poem_openapi::types::ParseResult<Self> {
        match value.unwrap_or_default() {
            serde_json::Value::Null => Ok(Nullable(None)),
            v => T::parse_from_json(Some(v))
                .map(|v| Nullable(Some(v)))
                .map_err(poem_openapi::types::ParseError::propagate),
        }
    }
}

impl Stats {
    pub fn new(producer_type: &'static str) -> Stats {
        Stats {
            started: Instant::now(),
            producer_type,
            logs_received: AtomicU64::new(0),
            metrics_received: AtomicU64::new(0),
            logs_sent: AtomicU64::new(0),
            metrics_sent: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            forward_errors: AtomicU64::new(0),
            http: Mutex::new(BTreeMap::new()),
            latency: Histogram::default(),
            forwarder: Mutex::new(ForwarderStatus::default()),
            config: Mutex::new(ConfigStatus {
                loaded_at: now_rfc3339(),
                reloads: 0,
                reload_failures: 0,
            }),
        }
    }

    pub fn received(&self, kind: Kind, n: u64) {
        match kind {
            Kind::Logs => self.logs_received.fetch_add(n, Relaxed),
            Kind::Metrics => self.metrics_received.fetch_add(n, Relaxed),
        };
    }

    pub fn sent(&self, kind: Kind, n: u64) {
        match kind {
            Kind::Logs => self.logs_sent.fetch_add(n, Relaxed),
            Kind::Metrics => self.metrics_sent.fetch_add(n, Relaxed),
        };
    }

    pub fn record_request(&self, route: &'static str, status: u16, took: Duration) {
        *lock(&self.http).entry((route, status)).or_insert(0) += 1;
        let secs = took.as_secs_f64();
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.latency.buckets[i].fetch_add(1, Relaxed);
                break;
            }
        }
        self.latency.count.fetch_add(1, Relaxed);
        self.latency
            .sum_micros
            .fetch_add(took.as_micros() as u64, Relaxed);
    }

    pub fn snapshot(&self, queue: QueueStats) -> Snapshot {
        let f = lock(&self.forwarder).clone();
        let c = lock(&self.config).clone();
        let now = Instant::now();
        Snapshot {
            status: "ok".into(),
            producer_type: self.producer_type.into(),
            logs_received: self.logs_received.load(Relaxed),
            metrics_received: self.metrics_received.load(Relaxed),
            logs_sent: self.logs_sent.load(Relaxed),
            metrics_sent: self.metrics_sent.load(Relaxed),
            queue,
            forwarder: ForwarderSnapshot {
                circuit: f.circuit.as_str().into(),
                consecutive_failures: f.consecutive_failures,
                next_retry_in_seconds: Nullable(
                    f.next_attempt_at
                        .map(|t| t.saturating_duration_since(now).as_secs_f64()),
                ),
                last_error: Nullable(f.last_error),
                last_success_at: Nullable(f.last_success_at),
            },
            config: ConfigSnapshot {
                loaded_at: c.loaded_at,
                reloads: c.reloads,
                reload_failures: c.reload_failures,
            },
            uptime_seconds: self.started.elapsed().as_secs_f64(),
        }
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn prometheus(&self, q: &QueueStats) -> String {
        let mut out = String::with_capacity(4096);
        let mut gauge = |name: &str, help: &str, value: f64| {
            let _ = writeln!(out, "# HELP edge_ingester_{name} {help}");
            let _ = writeln!(out, "# TYPE edge_ingester_{name} gauge");
            let _ = writeln!(out, "edge_ingester_{name} {value}");
        };
        gauge(
            "queue_depth_batches",
            "Batches waiting in the queue.",
            q.depth_batches as f64,
        );
        gauge(
            "queue_depth_entries",
            "Entries waiting in the queue.",
            q.depth_entries as f64,
        );
        gauge(
            "queue_bytes",
            "Live record bytes in the queue.",
            q.bytes as f64,
        );
        gauge(
            "queue_disk_bytes",
            "Bytes the queue directory takes on disk.",
            q.disk_bytes as f64,
        );
        gauge(
            "queue_oldest_age_seconds",
            "Age of the oldest queued batch (0 when empty).",
            q.oldest_age_seconds.unwrap_or(0.0),
        );
        gauge(
            "dead_letter_batches",
            "Batches in the dead-letter tree.",
            q.dead_letter_batches as f64,
        );
        gauge(
            "circuit_state",
            "Forwarder circuit: 0 closed, 1 half-open, 2 open.",
            f64::from(lock(&self.forwarder).circuit.gauge()),
        );
        self.write_counters(&mut out, q);
        self.write_http(&mut out);
        out
    }

    fn write_counters(&self, out: &mut String, q: &QueueStats) {
        // NOTE: read before the loop: a guard taken in its iterator
        // expression lives as long as the loop (it deadlocked).
        let (reloads, reload_failures) = {
            let c = lock(&self.config);
            (c.reloads, c.reload_failures)
        };
        for (name, help, pairs) in [
            (
                "entries_received_total",
                "Entries accepted (202) since start.",
                [&self.logs_received, &self.metrics_received],
            ),
            (
                "entries_sent_total",
                "Entries the sink confirmed since start.",
                [&self.logs_sent, &self.metrics_sent],
            ),
        ] {
            let _ = writeln!(out, "# HELP edge_ingester_{name} {help}");
            let _ = writeln!(out, "# TYPE edge_ingester_{name} counter");
            for (kind, v) in ["logs", "metrics"].iter().zip(pairs) {
                let _ = writeln!(
                    out,
                    "edge_ingester_{name}{{kind=\"{kind}\"}} {}",
                    v.load(Relaxed)
                );
            }
        }
        for (name, help, v) in [
            (
                "forward_errors_total",
                "Failed sends to the sink.",
                self.forward_errors.load(Relaxed),
            ),
            (
                "rate_limited_total",
                "Requests answered 429.",
                self.rate_limited.load(Relaxed),
            ),
            (
                "dropped_batches_total",
                "Batches evicted by when_full = drop_oldest.",
                q.dropped_batches,
            ),
            ("config_reloads_total", "SIGHUP reloads applied.", reloads),
            (
                "config_reload_failures_total",
                "SIGHUP reloads refused: the file did not validate.",
                reload_failures,
            ),
            (
                "queue_disk_errors_total",
                "Failed queue commits and syncs (ENOSPC, EIO); see /ready for the state.",
                q.disk_errors,
            ),
        ] {
            let _ = writeln!(out, "# HELP edge_ingester_{name} {help}");
            let _ = writeln!(out, "# TYPE edge_ingester_{name} counter");
            let _ = writeln!(out, "edge_ingester_{name} {v}");
        }
    }

    fn write_http(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP edge_ingester_http_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(out, "# TYPE edge_ingester_http_requests_total counter");
        for ((path, status), n) in lock(&self.http).iter() {
            let _ = writeln!(
                out,
                "edge_ingester_http_requests_total{{path=\"{path}\",status=\"{status}\"}} {n}"
            );
        }
        let name = "edge_ingester_http_request_duration_seconds";
        let _ = writeln!(out, "# HELP {name} HTTP request duration.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&self.latency.buckets) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let total = self.latency.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let sum = self.latency.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {total}");
    }
}
