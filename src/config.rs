//! The configuration file (SPEC §6): schema, defaults and validation.
//!
//! Every section rejects unknown keys so a typo is an error that names the key
//! instead of a setting silently ignored. Defaults are named constants; the
//! embedded default file `config/edge-ingester.toml` spells out the same
//! values. `validate` runs once at start-up and names the key at fault.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Loopback only by default: the service runs beside agents on the same host.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";
/// 10 MiB after decompression: ~40k log entries, far above what agents send.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
pub const DEFAULT_MAX_BATCH_ENTRIES: usize = 10_000;
/// One day: long enough to cover an agent retrying through a night's outage.
pub const DEFAULT_IDEMPOTENCY_WINDOW_S: u64 = 86_400;
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_MAX_CONNECTIONS: usize = 1_024;
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// 256 MiB of request bodies held at once: 25 maximal bodies, or thousands
/// of typical ones; on an edge host, what one burst may take of its memory.
pub const DEFAULT_MAX_INFLIGHT_BYTES: u64 = 256 * 1024 * 1024;
/// hyper's read buffer cannot be smaller.
pub const MIN_HEADER_BYTES: usize = 8 * 1024;
pub const DEFAULT_API_KEY: &str = "development-key";
pub const DEFAULT_RPS: f64 = 100.0;
pub const DEFAULT_BURST: u64 = 1_000;
pub const DEFAULT_QUEUE_PATH: &str = "data/queue";
/// 16 MiB: sled treats it as a soft limit (NOTES: RSS overshoots it), and the
/// queue is read once, head first, so a large cache buys nothing.
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;
pub const DEFAULT_QUEUE_MAX_BYTES: u64 = 1024 * 1024 * 1024;
pub const DEFAULT_HIGH_WATER_RATIO: f64 = 0.9;
pub const DEFAULT_INITIAL_BACKOFF_MS: u64 = 100;
pub const DEFAULT_MAX_BACKOFF_MS: u64 = 30_000;
pub const DEFAULT_MULTIPLIER: f64 = 2.0;
pub const DEFAULT_BREAKER_THRESHOLD: u32 = 5;
pub const DEFAULT_BREAKER_OPEN_MS: u64 = 10_000;
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// Why a configuration cannot be used. Retrying never helps: fix the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` / `EDGE_INGESTER_CONFIG` cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type; toml's message
    /// names the key and the line.
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    /// A value that parses but is out of range.
    #[error("invalid config: `{key}` {problem}")]
    Invalid { key: &'static str, problem: String },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub rate_limit: RateLimitConfig,
    pub queue: QueueConfig,
    pub forwarder: ForwarderConfig,
    pub kafka: KafkaConfig,
    pub mock: MockConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP API binds.
    pub listen: String,
    /// Largest request body, counted after decompression (zip bombs are 413).
    pub max_body_bytes: u64,
    /// Most entries one batch may carry.
    pub max_batch_entries: usize,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_window_s: u64,
    /// Time a client gets to send its request headers.
    pub header_timeout_ms: u64,
    /// Time a whole request may take, body included.
    pub request_timeout_ms: u64,
    /// Open connections beyond this wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Open connections one client address may hold; more are closed at
    /// once, so one host cannot take every slot.
    pub max_connections_per_ip: usize,
    /// Largest request head (request line and headers); larger is a 431.
    pub max_header_bytes: usize,
    /// Request bodies (as received and decompressed) held in memory at once
    /// across all connections; a request that would exceed it is a 503 with
    /// `Retry-After`, so a crowd of large uploads cannot exhaust memory.
    pub max_inflight_bytes: u64,
    /// HTTPS on the listener when both paths are set (SPEC §9).
    pub tls: TlsConfig,
}

/// `[server.tls]`: PEM files, read at start-up and again on every SIGHUP, so
/// a renewed certificate needs no restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert_path: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert_path.as_os_str().is_empty() || !self.key_path.as_os_str().is_empty()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.into(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_batch_entries: DEFAULT_MAX_BATCH_ENTRIES,
            idempotency_window_s: DEFAULT_IDEMPOTENCY_WINDOW_S,
            header_timeout_ms: DEFAULT_HEADER_TIMEOUT_MS,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
            tls: TlsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accepted API keys: plain, or `sha256:<hex>` so the file holds no secret.
    pub keys: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            keys: vec![DEFAULT_API_KEY.into()],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Token refill rate of each key's bucket.
    pub requests_per_second: f64,
    /// Bucket size: how many requests a key may send at once after idling.
    pub burst: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            requests_per_second: DEFAULT_RPS,
            burst: DEFAULT_BURST,
        }
    }
}

/// What a full queue does with a new batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Answer 503 with `Retry-After`; the agent keeps the batch.
    Reject,
    /// Evict the oldest batches (counted in `dropped_batches`) and accept.
    DropOldest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Directory of the sled database.
    pub path: PathBuf,
    /// sled page cache (a soft limit).
    pub cache_bytes: u64,
    /// Live queue size (stored record bytes) at which `when_full` applies.
    pub max_bytes: u64,
    pub when_full: WhenFull,
    /// `/ready` answers 503 above this fraction of `max_bytes`.
    pub high_water_ratio: f64,
    /// This edge's id in every `batch_id` and Kafka `ingest-id`. Empty: the
    /// id generated once and kept in the queue directory.
    pub node_id: String,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            path: DEFAULT_QUEUE_PATH.into(),
            cache_bytes: DEFAULT_CACHE_BYTES,
            max_bytes: DEFAULT_QUEUE_MAX_BYTES,
            when_full: WhenFull::Reject,
            high_water_ratio: DEFAULT_HIGH_WATER_RATIO,
            node_id: String::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    Mock,
    Kafka,
}

impl std::str::FromStr for SinkKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "mock" => Ok(Self::Mock),
            "kafka" => Ok(Self::Kafka),
            other => Err(format!("unknown sink `{other}` (expected mock or kafka)")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwarderConfig {
    pub sink: SinkKind,
    /// First retry delay after a failed send.
    pub initial_backoff_ms: u64,
    /// Ceiling of the retry delay.
    pub max_backoff_ms: u64,
    /// Growth factor of the delay per consecutive failure.
    pub multiplier: f64,
    /// Randomise each delay by ±50% so many edges do not retry in step.
    pub jitter: bool,
    /// Consecutive failures that open the circuit.
    pub breaker_failure_threshold: u32,
    /// How long the circuit stays open before one half-open probe.
    pub breaker_open_ms: u64,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        Self {
            sink: SinkKind::Mock,
            initial_backoff_ms: DEFAULT_INITIAL_BACKOFF_MS,
            max_backoff_ms: DEFAULT_MAX_BACKOFF_MS,
            multiplier: DEFAULT_MULTIPLIER,
            jitter: true,
            breaker_failure_threshold: DEFAULT_BREAKER_THRESHOLD,
            breaker_open_ms: DEFAULT_BREAKER_OPEN_MS,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    pub brokers: String,
    pub logs_topic: String,
    pub metrics_topic: String,
    pub compression: String,
    /// Passed to librdkafka as they are.
    pub properties: std::collections::BTreeMap<String, String>,
}

impl KafkaConfig {
    /// Refuses producer settings that would break "nothing acknowledged is
    /// lost" or per-key order; the message names the property.
    pub fn check_promise(&self) -> Result<(), String> {
        let get = |k: &str| {
            self.properties
                .get(k)
                .map(|v| v.trim().to_ascii_lowercase())
        };
        for key in ["acks", "request.required.acks"] {
            if let Some(v) = get(key) {
                if v != "all" && v != "-1" {
                    return Err(format!(
                        "`{key} = {v}` can lose acknowledged entries when a broker fails; use all"
                    ));
                }
            }
        }
        if let Some(v) = get("enable.idempotence") {
            if v != "true" {
                return Err(format!(
                    "`enable.idempotence = {v}` lets retries duplicate and reorder entries; keep it true"
                ));
            }
        }
        if let Some(v) = get("transactional.id") {
            return Err(format!("`transactional.id = {v}` is not supported"));
        }
        Ok(())
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: DEFAULT_BROKERS.into(),
            logs_topic: "logs.raw".into(),
            metrics_topic: "metrics.raw".into(),
            compression: "zstd".into(),
            properties: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MockFail {
    Never,
    Always,
    /// Delivers for `flap_ms`, fails for `flap_ms`, and so on: drills of a
    /// sink that keeps coming and going.
    Flapping,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockConfig {
    /// Delay before each batch counts as delivered.
    pub latency_ms: u64,
    /// `always` makes every send fail: outage drills and tests; `flapping`
    /// alternates working and failing periods of `flap_ms`.
    pub fail: MockFail,
    /// Length of each period when `fail = "flapping"`.
    pub flap_ms: u64,
    /// If set, every delivered entry is appended here as one JSON line.
    pub capture_path: PathBuf,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            fail: MockFail::Never,
            flap_ms: 5_000,
            capture_path: PathBuf::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// trace, debug, info, warn or error.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Parses a TOML document; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: describe_toml_error(&e, text),
        })
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Checks ranges once at start-up; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(key: &'static str, problem: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key,
                problem: problem.into(),
            }
        }
        let s = &self.server;
        if s.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(bad("server.listen", "must be IP:PORT, e.g. 127.0.0.1:8000"));
        }
        if s.max_body_bytes == 0 {
            return Err(bad("server.max_body_bytes", "must be at least 1"));
        }
        if s.max_batch_entries == 0 {
            return Err(bad("server.max_batch_entries", "must be at least 1"));
        }
        if s.max_connections == 0 {
            return Err(bad("server.max_connections", "must be at least 1"));
        }
        if s.max_connections_per_ip == 0 {
            return Err(bad("server.max_connections_per_ip", "must be at least 1"));
        }
        // A body may be held twice, as received and inflated: a budget below
        // that could refuse a valid request forever, however often retried.
        if s.max_inflight_bytes < s.max_body_bytes.saturating_mul(2) {
            return Err(bad(
                "server.max_inflight_bytes",
                format!(
                    "must be at least twice server.max_body_bytes ({})",
                    s.max_body_bytes.saturating_mul(2)
                ),
            ));
        }
        if s.max_header_bytes < MIN_HEADER_BYTES {
            return Err(bad(
                "server.max_header_bytes",
                format!("must be at least {MIN_HEADER_BYTES}"),
            ));
        }
        if s.header_timeout_ms == 0 || s.request_timeout_ms == 0 {
            return Err(bad(
                "server.header_timeout_ms/request_timeout_ms",
                "must be at least 1",
            ));
        }
        if s.tls.enabled()
            && (s.tls.cert_path.as_os_str().is_empty() || s.tls.key_path.as_os_str().is_empty())
        {
            return Err(bad(
                "server.tls",
                "needs both cert_path and key_path (or neither, for plain HTTP)",
            ));
        }
        if s.tls.enabled() {
            crate::api::tls_server_config(&s.tls).map_err(|e| bad("server.tls", e.to_string()))?;
        }
        if self.auth.keys.is_empty() && std::env::var_os("INGESTION_API_KEY").is_none() {
            return Err(bad("auth.keys", "must hold at least one key"));
        }
        for key in &self.auth.keys {
            if key.is_empty() {
                return Err(bad("auth.keys", "holds an empty key"));
            }
            if let Some(hex_digest) = key.strip_prefix("sha256:") {
                let ok = hex_digest.len() == 64 && hex::decode(hex_digest).is_ok();
                if !ok {
                    return Err(bad(
                        "auth.keys",
                        "holds a sha256: key that is not 64 hex digits",
                    ));
                }
            }
        }
        let r = &self.rate_limit;
        if !(r.requests_per_second.is_finite() && r.requests_per_second > 0.0) {
            return Err(bad("rate_limit.requests_per_second", "must be above 0"));
        }
        if r.burst == 0 {
            return Err(bad("rate_limit.burst", "must be at least 1"));
        }
        let q = &self.queue;
        if q.path.as_os_str().is_empty() {
            return Err(bad("queue.path", "must not be empty"));
        }
        if q.max_bytes == 0 {
            return Err(bad("queue.max_bytes", "must be at least 1"));
        }
        if q.node_id.contains(':') || q.node_id.len() > 64 {
            return Err(bad(
                "queue.node_id",
                "must be at most 64 characters without ':'",
            ));
        }
        if !(q.high_water_ratio > 0.0 && q.high_water_ratio <= 1.0) {
            return Err(bad("queue.high_water_ratio", "must be in (0, 1]"));
        }
        let f = &self.forwarder;
        if f.initial_backoff_ms == 0 {
            return Err(bad("forwarder.initial_backoff_ms", "must be at least 1"));
        }
        if f.max_backoff_ms < f.initial_backoff_ms {
            return Err(bad(
                "forwarder.max_backoff_ms",
                "must be at least forwarder.initial_backoff_ms",
            ));
        }
        if !(f.multiplier.is_finite() && f.multiplier >= 1.0) {
            return Err(bad("forwarder.multiplier", "must be at least 1.0"));
        }
        if f.breaker_failure_threshold == 0 {
            return Err(bad(
                "forwarder.breaker_failure_threshold",
                "must be at least 1",
            ));
        }
        if f.breaker_open_ms == 0 {
            return Err(bad("forwarder.breaker_open_ms", "must be at least 1"));
        }
        self.kafka
            .check_promise()
            .map_err(|problem| bad("kafka.properties", problem))?;
        // Whatever the sink: `--sink kafka` can switch to it without the
        // file changing, and check-config has no such flag.
        crate::sink::kafka::check_settings(&self.kafka).map_err(|e| bad(e.key, e.problem))?;
        if f.sink == SinkKind::Kafka && self.kafka.brokers.trim().is_empty() {
            return Err(bad("kafka.brokers", "must name at least one broker"));
        }
        if self.log.level.parse::<tracing::Level>().is_err() {
            return Err(bad(
                "log.level",
                "must be one of trace, debug, info, warn, error",
            ));
        }
        Ok(())
    }

    /// The config as `check-config` prints it: API keys and secret Kafka
    /// properties (`sasl.password`, …) replaced by a marker.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.auth.keys = shown
            .auth
            .keys
            .iter()
            .map(|k| {
                if k.starts_with("sha256:") {
                    "sha256:<redacted>".to_string()
                } else {
                    "<redacted>".to_string()
                }
            })
            .collect();
        for (k, v) in shown.kafka.properties.iter_mut() {
            if crate::sink::kafka::is_secret(k) {
                *v = "<redacted>".into();
            }
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

/// Where and what, without the file's text: toml's own message quotes the
/// offending line, and serde's quotes the value — an API key or a Kafka
/// password in a mistyped line went to the log on a reload.
fn describe_toml_error(e: &toml::de::Error, text: &str) -> String {
    let what = redact_quoted(
        &e.message()
            .trim()
            .lines()
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("; "),
    );
    let Some(start) = e.span().map(|s| s.start.min(text.len())) else {
        return what;
    };
    let before = text.get(..start).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    format!("line {line}, column {column}: {what}")
}

/// Replaces every `"…"` (serde's way of quoting a value) by `"<redacted>"`;
/// names, which serde and toml quote with backticks, stay.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find('"') {
        let quoted_name = rest[..open].ends_with('`');
        let close = rest[open + 1..].find('"').map(|c| open + 1 + c);
        match close {
            Some(close) if !quoted_name && !rest[open + 1..close].contains('`') => {
                out.push_str(&rest[..open]);
                out.push_str("\"<redacted>\"");
                rest = &rest[close + 1..];
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_place_but_never_quote_a_value() {
        for text in [
            "[auth]\nkeys = \"S3cretKey-abc\"\n",
            "[auth]\nkeys = [\"S3cretKey-abc]\n",
            "[kafka.properties]\n\"sasl.password\" = S3cretKey-abc\n",
            "[auth]\nkeyz = [\"S3cretKey-abc\"]\n",
        ] {
            let err = Config::from_toml(text, "t").unwrap_err().to_string();
            assert!(!err.contains("S3cret"), "{err}");
            assert!(err.contains("line 2"), "{err}");
        }
        let err = Config::from_toml("[auth]\nkeyz = []\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`keyz`"), "{err}");
    }

    #[test]
    fn embedded_default_file_equals_built_in_defaults() {
        let text = include_str!("../config/edge-ingester.toml");
        let parsed = Config::from_toml(text, "default").unwrap();
        parsed.validate().unwrap();
        assert_eq!(
            toml::to_string(&parsed).unwrap(),
            toml::to_string(&Config::default()).unwrap()
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_key() {
        let err = Config::from_toml("[queue]\nmax_byte = 5\n", "t").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("max_byte"), "{text}");
        assert!(text.contains("line 2"), "{text}");
    }

    #[test]
    fn out_of_range_value_names_the_key() {
        let cfg = Config::from_toml("[queue]\nhigh_water_ratio = 1.5\n", "t").unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("queue.high_water_ratio"), "{err}");
    }

    #[test]
    fn producer_settings_that_break_the_promise_are_refused() {
        for (k, v) in [
            ("acks", "0"),
            ("acks", "1"),
            ("enable.idempotence", "false"),
        ] {
            let text = format!("[kafka.properties]\n\"{k}\" = \"{v}\"\n");
            let err = Config::from_toml(&text, "t")
                .unwrap()
                .validate()
                .unwrap_err();
            assert!(err.to_string().contains(k), "{err}");
        }
        let ok = "[kafka.properties]\n\"linger.ms\" = \"20\"\nacks = \"all\"\n";
        Config::from_toml(ok, "t").unwrap().validate().unwrap();
    }

    #[test]
    fn redaction_hides_every_key() {
        let mut cfg = Config::default();
        cfg.auth.keys = vec!["secret-one".into(), format!("sha256:{}", "ab".repeat(32))];
        let shown = cfg.redacted_toml();
        assert!(!shown.contains("secret-one"));
        assert!(!shown.contains("abab"));
        assert!(shown.contains("<redacted>"));
    }
}
