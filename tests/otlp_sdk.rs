//! OTLP/HTTP ingest (SPEC §8) driven by a real client nobody here wrote:
//! the OpenTelemetry Python SDK and its two OTLP/HTTP exporters (protobuf,
//! and the JSON one), gzip on, `X-API-Key` in their headers. The scripts
//! in `tests/otlp/` emit known records; what the real binary's mock sink
//! captured (the Kafka message values, SPEC §4) must hold every record
//! exactly once with the fields SPEC §8 maps, and a 429 from the rate
//! limit must be retried by the SDK until accepted.
//!
//! The SDK lives in a virtual environment (`.ci/run` makes it):
//! `EDGE_INGESTER_OTEL_PYTHON`, else `~/.cache/edge-ingester/otel-venv`.
//! Without it these tests say why and pass, except under `CI=true`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::agent::{wait_exit, Reaped};
use common::*;
use edge_ingester::config::MockFail;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Both exporters and their encoders, as the scripts import them.
const IMPORT_CHECK: &str = "import opentelemetry.sdk._logs, opentelemetry.sdk.metrics, \
    opentelemetry.exporter.otlp.proto.http._log_exporter, \
    opentelemetry.exporter.otlp.proto.http.metric_exporter, \
    opentelemetry.exporter.otlp.json.http._log_exporter, \
    opentelemetry.exporter.otlp.json.http.metric_exporter";

/// The SDK's Python, or why there is none (checked once per test binary).
fn find_python() -> &'static Result<PathBuf, String> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let python = match std::env::var_os("EDGE_INGESTER_OTEL_PYTHON") {
            Some(p) => PathBuf::from(p),
            None => {
                let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
                PathBuf::from(home).join(".cache/edge-ingester/otel-venv/bin/python")
            }
        };
        if !python.exists() {
            return Err(format!(
                "no OpenTelemetry SDK venv at {} (run .ci/run, or set EDGE_INGESTER_OTEL_PYTHON)",
                python.display()
            ));
        }
        let out = Command::new(&python)
            .args(["-c", IMPORT_CHECK])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} cannot import the OTLP exporters: {}",
                python.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(python)
    })
}

/// The SDK's Python, or `None` after `skip_or_fail` said why.
fn python_or_skip() -> Option<PathBuf> {
    // libtest runs each test on a thread named after it.
    let current = std::thread::current();
    let test = current.name().unwrap_or("otlp_sdk");
    match find_python() {
        Ok(p) => Some(p.clone()),
        Err(why) => {
            skip_or_fail(test, why);
            None
        }
    }
}

/// The real binary with a working mock sink capturing every value.
struct Server {
    bin: Binary,
    capture: PathBuf,
    dir: tempfile::TempDir,
}

impl Server {
    /// `rate`: the rate limit's (requests_per_second, burst); else the
    /// test config's generous one.
    fn start(rate: Option<(f64, u64)>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = test_config(dir.path());
        cfg.mock.fail = MockFail::Never;
        cfg.mock.capture_path = dir.path().join("capture.jsonl");
        cfg.forwarder.initial_backoff_ms = 10;
        cfg.forwarder.max_backoff_ms = 100;
        if let Some((rps, burst)) = rate {
            cfg.rate_limit.requests_per_second = rps;
            cfg.rate_limit.burst = burst;
        }
        let bin = Binary::start(&write_config(dir.path(), "config.toml", &cfg));
        Server {
            bin,
            capture: cfg.mock.capture_path,
            dir,
        }
    }

    /// Once every accepted entry of `kind` (`logs`/`metrics`) has reached
    /// the capture (the mock syncs the capture before counting an entry
    /// sent): the final stats and every captured value.
    async fn drained(&self, kind: &str) -> (Value, Vec<Value>) {
        let (received, sent) = (format!("{kind}_received"), format!("{kind}_sent"));
        let s = wait_for_stats(&client(), &self.bin.base, Duration::from_secs(20), |s| {
            s[received.as_str()].as_u64() > Some(0) && s[sent.as_str()] == s[received.as_str()]
        })
        .await;
        let text = std::fs::read_to_string(&self.capture).unwrap_or_default();
        let values = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("capture line {l}: {e}")))
            .collect();
        (s, values)
    }
}

/// What a script run left: its exit, its JSON summary, its stderr (the
/// SDK's own warnings) and the wall-clock window it ran in.
struct SdkRun {
    summary: Value,
    stderr: String,
    started: OffsetDateTime,
    ended: OffsetDateTime,
}

/// Runs `tests/otlp/send_<signal>.py` against `/v1/<signal>`; panics
/// with the SDK's output unless it exits 0 (every export accepted) in 60 s.
async fn run_sdk(
    python: &Path,
    server: &Server,
    signal: &str,
    encoding: &str,
    tag: &str,
    rounds: u32,
) -> SdkRun {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/otlp/send_{signal}.py"));
    let endpoint = format!("{}/v1/{signal}", server.bin.base);
    let (out, err) = (
        server.dir.path().join("sdk.out"),
        server.dir.path().join("sdk.err"),
    );
    let mut cmd = Command::new(python);
    cmd.arg(&script)
        .args([
            &endpoint,
            KEY,
            encoding,
            tag,
            "--rounds",
            &rounds.to_string(),
        ])
        // No __pycache__ in the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    // OTEL_* variables (resource attributes, headers, compression, a
    // disabled SDK) would change what is sent.
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("OTEL_") {
            cmd.env_remove(var);
        }
    }
    let started = OffsetDateTime::now_utc();
    let mut child = Reaped(cmd.spawn().expect("start the SDK script"));
    let code = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(60)))
        .await
        .unwrap();
    let ended = OffsetDateTime::now_utc();
    let stdout = std::fs::read_to_string(&out).unwrap();
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(
        code == 0,
        "SDK {encoding} export to {endpoint} failed (exit {code}):\n{stdout}{stderr}"
    );
    let summary = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("summary line {stdout:?}: {e}\n{stderr}"));
    SdkRun {
        summary,
        stderr,
        started,
        ended,
    }
}

/// `v`'s timestamp lies within the script's run (a time the SDK took from
/// the clock: an observed time, a metric point's time).
fn assert_during_run(v: &Value, run: &SdkRun) {
    let (t, slack) = (instant(v), time::Duration::seconds(2));
    assert!(
        t >= run.started - slack && t <= run.ended + slack,
        "time {t} outside the run {}..{}: {v}",
        run.started,
        run.ended
    );
}

fn attr<'a>(v: &'a Value, key: &str) -> &'a Value {
    &v["attributes"][key]
}

fn instant(v: &Value) -> OffsetDateTime {
    let s = v["timestamp"]
        .as_str()
        .unwrap_or_else(|| panic!("no timestamp: {v}"));
    OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|e| panic!("timestamp {s}: {e}"))
}

/// The resource of every script (`otlp_client.py`), as every entry must
/// carry it: host and extra attribute, and one the SDK adds by itself.
fn assert_resource(v: &Value, service: &str) {
    assert_eq!(v["service"], service, "service from service.name: {v}");
    assert_eq!(v["host"], "edge-otel-1", "host from host.name: {v}");
    assert_eq!(
        attr(v, "telemetry.sdk.language"),
        "python",
        "resource attribute: {v}"
    );
    assert!(v["received_at"].is_string(), "{v}");
}

// ---- logs -------------------------------------------------------------

/// `send_logs.py`'s records, by `seq`: the level SPEC §8 maps from
/// severity_number (seq 2 also sends the disagreeing text "WARN"; seq 6
/// sends no number, only the text "Error"), and the span the record was
/// emitted in (seq 0-2 the active span, 3-5 one passed as `context`).
const LOG_RECORDS: [(&str, Option<&str>); 7] = [
    ("TRACE", Some(SPAN_ACTIVE)),
    ("DEBUG", Some(SPAN_ACTIVE)),
    ("INFO", Some(SPAN_ACTIVE)),
    ("WARNING", Some(SPAN_EXPLICIT)),
    ("ERROR", Some(SPAN_EXPLICIT)),
    ("CRITICAL", Some(SPAN_EXPLICIT)),
    ("ERROR", None),
];
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const SPAN_ACTIVE: &str = "00f067aa0ba902b7";
const SPAN_EXPLICIT: &str = "b7ad6b7169203331";
/// 2026-11-27T10:00:00Z; record `seq` (0..=5) is stamped T0 + seq s + 250 ms.
const LOG_T0: &str = "2026-11-27T10:00:00.25Z";

/// Every tagged log value, by (round, seq); panics on a duplicate.
fn logs_by_record(values: &[Value], tag: &str) -> BTreeMap<(u64, u64), Value> {
    let mut by = BTreeMap::new();
    for v in values.iter().filter(|v| attr(v, "run") == tag) {
        let key = ["round", "seq"].map(|k| {
            attr(v, k)
                .as_u64()
                .unwrap_or_else(|| panic!("int attribute {k} is not a number: {v}"))
        });
        if let Some(first) = by.insert((key[0], key[1]), v.clone()) {
            panic!("record {key:?} captured twice:\n{first}\n{v}");
        }
    }
    by
}

fn assert_log_record(v: &Value, tag: &str, round: u64, seq: u64, run: &SdkRun) {
    assert_resource(v, "otel-py-logs");
    let (level, span) = LOG_RECORDS[seq as usize];
    assert_eq!(v["level"], level, "level of seq {seq}: {v}");
    let message = v["message"].as_str().unwrap();
    if seq == 5 {
        // A map body: compact JSON of the AnyValue.
        let parsed: Value = serde_json::from_str(message)
            .unwrap_or_else(|e| panic!("dict body is not JSON ({e}): {v}"));
        let want = json!({"event": "login", "user": {"id": 42, "admin": false}, "tries": [1, 2]});
        assert_eq!(parsed, want, "dict body: {v}");
        assert!(!message.contains([' ', '\n']), "not compact: {message}");
    } else {
        assert_eq!(message, format!("{tag} r{round} record {seq}"), "{v}");
    }
    // Resource, scope and record attributes; the record wins a clash.
    let env = if seq == 3 {
        "record-wins"
    } else {
        "otlp-sdk-test"
    };
    assert_eq!(attr(v, "deployment.environment"), env, "{v}");
    assert_eq!(attr(v, "scope.kind"), "test-scope", "scope attribute: {v}");
    // "Non-string values as compact JSON" (SPEC §8) read with SPEC §3's
    // attributes (string, number or bool): scalars keep their type — in
    // both encodings, though OTLP JSON sends an int64 as a string — and
    // what an entry cannot hold (an array) becomes compact JSON text.
    assert_eq!(attr(v, "seq"), seq, "int attribute: {v}");
    assert_eq!(attr(v, "ok"), true, "bool attribute: {v}");
    assert_eq!(attr(v, "ratio"), 0.25, "double attribute: {v}");
    assert_eq!(attr(v, "tags"), r#"["a","b"]"#, "array attribute: {v}");
    let a = v["attributes"].as_object().unwrap();
    match span {
        Some(span) => {
            assert_eq!(a.get("trace_id"), Some(&json!(TRACE_ID)), "{v}");
            assert_eq!(a.get("span_id"), Some(&json!(span)), "{v}");
        }
        None => assert!(
            !a.contains_key("trace_id") && !a.contains_key("span_id"),
            "no span: {v}"
        ),
    }
    if seq == 6 {
        // No time_unix_nano: observed_time_unix_nano, stamped by the SDK.
        assert_during_run(v, run);
    } else {
        let t0 = OffsetDateTime::parse(LOG_T0, &Rfc3339).unwrap();
        assert_eq!(instant(v), t0 + time::Duration::seconds(seq as i64), "{v}");
    }
}

async fn sdk_logs_arrive_once_with_mapped_fields(encoding: &str) {
    let Some(python) = python_or_skip() else {
        return;
    };
    let server = Server::start(None);
    let tag = format!("logs-{encoding}");
    let run = run_sdk(&python, &server, "logs", encoding, &tag, 1).await;
    assert_eq!(run.summary["exports"], 1, "one request: {}", run.summary);
    let (stats, values) = server.drained("logs").await;
    assert_eq!(stats["logs_received"], 7, "mapped entries counted: {stats}");
    let by = logs_by_record(&values, &tag);
    assert_eq!(by.len(), 7, "records captured: {:?}", by.keys());
    for seq in 0..7 {
        let v = by
            .get(&(0, seq))
            .unwrap_or_else(|| panic!("record {seq} missing"));
        assert_log_record(v, &tag, 0, seq, &run);
    }
    assert_eq!(values.len(), 7, "nothing else captured: {values:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_logs_over_protobuf_gzip_arrive_once_with_mapped_fields() {
    sdk_logs_arrive_once_with_mapped_fields("proto").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_logs_over_json_gzip_arrive_once_with_mapped_fields() {
    sdk_logs_arrive_once_with_mapped_fields("json").await;
}

// ---- metrics ----------------------------------------------------------

/// One entry `send_metrics.py`'s points must map to.
struct Expected {
    name: &'static str,
    metric_type: &'static str,
    value: f64,
    unit: &'static str,
    /// The point attribute that tells a series apart besides `run`.
    series: Option<(&'static str, &'static str)>,
}

const fn expect(
    name: &'static str,
    metric_type: &'static str,
    value: f64,
    unit: &'static str,
) -> Expected {
    Expected {
        name,
        metric_type,
        value,
        unit,
        series: None,
    }
}

impl Expected {
    const fn of(self, key: &'static str, value: &'static str) -> Expected {
        Expected {
            series: Some((key, value)),
            ..self
        }
    }
}

/// Every entry but the histogram buckets (checked apart: order matters).
const METRICS: [Expected; 9] = [
    expect("edge.test.jobs", "counter", 7.0, "{job}").of("queue", "a"),
    expect("edge.test.jobs", "counter", 5.0, "{job}").of("queue", "b"),
    expect("edge.test.connections", "gauge", 7.0, "{connection}"),
    expect("edge.test.temperature", "gauge", 21.5, "Cel").of("room", "lab"),
    expect("edge.test.queue_depth", "gauge", 42.0, "{item}"),
    expect("edge.test.latency_count", "counter", 3.0, "ms"),
    expect("edge.test.latency_sum", "counter", 38.0, "ms"),
    expect("edge.test.size_count", "counter", 3.0, "By"),
    expect("edge.test.size_sum", "counter", 14.0, "By"),
];
/// `edge.test.latency` records 1, 7, 30 with bounds [5, 10]: cumulative.
const BUCKETS: [(&str, f64); 3] = [("5", 1.0), ("10", 2.0), ("+Inf", 3.0)];

fn le_matches(got: &Value, want: &str) -> bool {
    match (got.as_str(), want) {
        (Some(g), "+Inf") => g == "+Inf",
        (Some(g), w) => g.parse::<f64>().ok() == w.parse::<f64>().ok(),
        _ => false,
    }
}

fn assert_metric_common(v: &Value, run: &SdkRun) {
    assert_resource(v, "otel-py-metrics");
    assert_eq!(attr(v, "deployment.environment"), "otlp-sdk-test", "{v}");
    assert_during_run(v, run);
}

async fn sdk_metrics_of_every_kind_arrive_once_mapped(encoding: &str) {
    let Some(python) = python_or_skip() else {
        return;
    };
    let server = Server::start(None);
    let tag = format!("metrics-{encoding}");
    let run = run_sdk(&python, &server, "metrics", encoding, &tag, 1).await;
    assert_eq!(run.summary["exports"], 1, "one request: {}", run.summary);
    let (stats, values) = server.drained("metrics").await;
    let want = METRICS.len() + BUCKETS.len();
    assert_eq!(
        stats["metrics_received"], want,
        "mapped entries counted: {stats}"
    );
    let ours: Vec<&Value> = values
        .iter()
        .filter(|v| attr(v, "run") == tag.as_str())
        .collect();
    assert_eq!(ours.len(), want, "entries captured: {values:#?}");
    assert_eq!(values.len(), want, "nothing else captured");
    for e in &METRICS {
        let (name, series) = (e.name, e.series);
        let found: Vec<&&Value> = ours
            .iter()
            .filter(|v| v["name"] == name)
            .filter(|v| series.is_none_or(|(k, x)| attr(v, k) == x))
            .collect();
        assert_eq!(found.len(), 1, "{name} {series:?} exactly once: {ours:#?}");
        let v = found[0];
        assert_eq!(v["metric_type"], e.metric_type, "{name}: {v}");
        assert_eq!(v["value"].as_f64(), Some(e.value), "{name}: {v}");
        assert_eq!(v["unit"], e.unit, "{name}: {v}");
        assert_metric_common(v, &run);
    }
    let buckets: Vec<&&Value> = ours
        .iter()
        .filter(|v| v["name"] == "edge.test.latency_bucket")
        .collect();
    assert_eq!(
        buckets.len(),
        BUCKETS.len(),
        "one entry per bucket: {buckets:#?}"
    );
    // Captured in the order sent: cumulative, `+Inf` last.
    for (v, (le, count)) in buckets.iter().zip(BUCKETS) {
        assert!(
            le_matches(attr(v, "le"), le),
            "bucket le={le} in order: {buckets:#?}"
        );
        assert_eq!(v["metric_type"], "counter", "{v}");
        assert_eq!(v["value"].as_f64(), Some(count), "le={le}: {v}");
        assert_eq!(v["unit"], "ms", "{v}");
        assert_metric_common(v, &run);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_metrics_of_every_kind_over_protobuf_gzip_arrive_once_mapped() {
    sdk_metrics_of_every_kind_arrive_once_mapped("proto").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_metrics_of_every_kind_over_json_gzip_arrive_once_mapped() {
    sdk_metrics_of_every_kind_arrive_once_mapped("json").await;
}

// ---- 429 --------------------------------------------------------------

/// `edge_ingester_<name> N` from the Prometheus text (the JSON `/stats`
/// of SPEC §5 has no 429 count).
fn prometheus_value(text: &str, name: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"));
    line[name.len()..].trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_retries_a_429_from_the_rate_limit_until_every_record_is_accepted() {
    let Some(python) = python_or_skip() else {
        return;
    };
    // One request a second, no burst: four back-to-back exports cannot all
    // pass at once; each 429 says `Retry-After: 1`, which the SDK honours.
    let server = Server::start(Some((1.0, 1)));
    let tag = "logs-429";
    let rounds = 4;
    let run = run_sdk(&python, &server, "logs", "proto", tag, rounds).await;
    assert_eq!(run.summary["exports"], rounds, "{}", run.summary);
    assert_eq!(run.summary["failures"], 0, "{}", run.summary);
    assert!(
        run.summary["retry_warnings"].as_u64() >= Some(1),
        "the SDK said it retried: {}\n{}",
        run.summary,
        run.stderr
    );
    let prom = prometheus(&client(), &server.bin.base).await;
    let limited = prometheus_value(&prom, "edge_ingester_rate_limited_total");
    assert!(limited >= 1.0, "the server answered 429: {limited}");
    let (stats, values) = server.drained("logs").await;
    assert_eq!(stats["logs_received"], 7 * rounds, "{stats}");
    let by = logs_by_record(&values, tag);
    for round in 0..rounds as u64 {
        for seq in 0..7 {
            let v = by
                .get(&(round, seq))
                .unwrap_or_else(|| panic!("round {round} record {seq} missing: {:?}", by.keys()));
            assert_log_record(v, tag, round, seq, &run);
        }
    }
    assert_eq!(values.len(), 7 * rounds as usize, "each record once");
}
