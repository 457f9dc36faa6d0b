//! What an operator reads in the log: request lines with readable
//! durations, JSON lines a collector can parse, and one line per change of
//! the circuit breaker and of `/ready` — not one per attempt or probe.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use edge_ingester::config::{Config, LogFormat, MockFail};
use serde_json::Value;

use common::*;

const WAIT: Duration = Duration::from_secs(20);

fn start(dir: &Path, cfg: &Config) -> Binary {
    Binary::start(&write_config(dir, "c.toml", cfg))
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_durations_in_whole_microseconds() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.log.format = LogFormat::Json;
    cfg.mock.fail = MockFail::Never;
    let server = start(dir.path(), &cfg);
    let c = client();
    for _ in 0..3 {
        let r = c
            .get(format!("{}/health", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = post_json(
        &c,
        &format!("{}/logs", server.base),
        &log_batch(&["a".into()]),
    )
    .await;
    assert_eq!(r.status(), 202);
    server.wait_for_log(WAIT, |l| l.contains("\"path\":\"/logs\""));

    let lines = server.log.lock().unwrap().clone();
    let mut requests = 0;
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let f = &v["fields"];
        if f["message"] != "request" {
            continue;
        }
        requests += 1;
        assert!(f["method"].is_string() && f["path"].is_string(), "{line}");
        assert!(f["status"].is_u64(), "{line}");
        // As written, not as parsed: `1.28`, never `1.2800140000000002`.
        let raw = line
            .split("\"duration_ms\":")
            .nth(1)
            .and_then(|r| r.split([',', '}']).next())
            .unwrap_or_else(|| panic!("no duration_ms: {line}"));
        let decimals = raw.split('.').nth(1).map_or(0, str::len);
        assert!(decimals <= 3, "duration_ms {raw}: {line}");
        assert!(raw.parse::<f64>().is_ok_and(|d| d >= 0.0), "{line}");
    }
    assert!(requests >= 4, "{lines:#?}");
}

#[tokio::test]
async fn each_change_of_the_circuit_is_logged_naming_both_states() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.mock.fail = MockFail::Always;
    cfg.forwarder.initial_backoff_ms = 10;
    cfg.forwarder.max_backoff_ms = 20;
    cfg.forwarder.breaker_failure_threshold = 2;
    cfg.forwarder.breaker_open_ms = 100;
    let server = start(dir.path(), &cfg);
    let r = post_json(
        &client(),
        &format!("{}/logs", server.base),
        &log_batch(&["x".into()]),
    )
    .await;
    assert_eq!(r.status(), 202);

    let opened = server.wait_for_log(WAIT, |l| l.contains("circuit closed -> open"));
    assert!(opened[0].contains("WARN"), "{}", opened[0]);
    assert!(
        opened[0].contains("2 consecutive failures"),
        "{}",
        opened[0]
    );
    assert!(opened[0].contains("mock.fail"), "{}", opened[0]);
    server.wait_for_log(WAIT, |l| l.contains("circuit open -> half_open"));
    server.wait_for_log(WAIT, |l| l.contains("circuit half_open -> open"));
    // It never closed in between, so it opened from closed exactly once.
    let log = server.log.lock().unwrap().clone();
    let from_closed = log.iter().filter(|l| l.contains("circuit closed -> open"));
    assert_eq!(from_closed.count(), 1, "{log:#?}");
}

#[tokio::test]
async fn a_circuit_that_recovers_logs_its_close_at_info() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.mock.fail = MockFail::Flapping;
    cfg.mock.flap_ms = 200;
    cfg.forwarder.initial_backoff_ms = 10;
    cfg.forwarder.max_backoff_ms = 20;
    cfg.forwarder.breaker_failure_threshold = 1;
    cfg.forwarder.breaker_open_ms = 50;
    let server = start(dir.path(), &cfg);
    let c = client();
    // Batches keep coming through the failing phases, as they would.
    let deadline = Instant::now() + WAIT;
    let mut n = 0;
    let closed = loop {
        let closes: Vec<String> = server
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("circuit half_open -> closed"))
            .cloned()
            .collect();
        if let Some(line) = closes.into_iter().next() {
            break line;
        }
        assert!(Instant::now() < deadline, "the circuit never closed again");
        n += 1;
        let r = post_json(
            &c,
            &format!("{}/logs", server.base),
            &log_batch(&[format!("b{n}")]),
        )
        .await;
        assert_eq!(r.status(), 202);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(closed.contains("INFO"), "{closed}");
}

#[tokio::test]
async fn a_readiness_change_is_logged_once_however_often_ready_is_probed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.queue.max_bytes = 2_000;
    cfg.queue.high_water_ratio = 0.01;
    let server = start(dir.path(), &cfg);
    let c = client();
    let ready = |c: &reqwest::Client| {
        let url = format!("{}/ready", server.base);
        let c = c.clone();
        async move { c.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(ready(&c).await, 200);
    let r = post_json(
        &c,
        &format!("{}/logs", server.base),
        &log_batch(&["x".into()]),
    )
    .await;
    assert_eq!(r.status(), 202);
    for _ in 0..5 {
        assert_eq!(ready(&c).await, 503);
    }
    // The request line of the fifth probe is logged after its flip line.
    let deadline = Instant::now() + WAIT;
    while server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("path=\"/ready\""))
        .count()
        < 6
    {
        assert!(Instant::now() < deadline, "request lines missing");
        std::thread::sleep(Duration::from_millis(20));
    }
    let flips = server.wait_for_log(WAIT, |l| l.contains("readiness ready -> not_ready"));
    assert_eq!(flips.len(), 1, "{flips:#?}");
    assert!(
        flips[0].contains("WARN") && flips[0].contains("high-water"),
        "{}",
        flips[0]
    );
}

#[tokio::test]
async fn kafka_credentials_never_reach_the_log_even_at_debug() {
    const PASSWORD: &str = "pw-that-must-not-appear";
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.log.level = "debug".into();
    cfg.forwarder.sink = edge_ingester::config::SinkKind::Kafka;
    // Nothing listens on port 1: the client reports its failures.
    cfg.kafka.brokers = "127.0.0.1:1".into();
    for (k, v) in [
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanism", "SCRAM-SHA-512"),
        ("sasl.username", "edge"),
        ("sasl.password", PASSWORD),
    ] {
        cfg.kafka.properties.insert(k.into(), v.into());
    }
    let server = start(dir.path(), &cfg);
    let r = post_json(
        &client(),
        &format!("{}/logs", server.base),
        &log_batch(&["x".into()]),
    )
    .await;
    assert_eq!(r.status(), 202);
    server.wait_for_log(WAIT, |l| l.contains("kafka client error"));
    let log = server.log.lock().unwrap().clone();
    assert!(!log.iter().any(|l| l.contains(PASSWORD)), "{log:#?}");
}
