//! The metrics agent (SPEC §7) as a user runs it: the real binary against
//! the real server, what reached the sink checked for names, types, units
//! and plausible values.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::agent::*;
use common::*;
use edge_ingester::config::MockFail;
use serde_json::Value;

fn captured(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_metrics_have_otel_names_types_units_and_plausible_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.mock.fail = MockFail::Never;
    cfg.mock.capture_path = dir.path().join("capture.jsonl");
    let capture = cfg.mock.capture_path.clone();
    let srv = InProcess::start(cfg).await;
    let log = dir.path().join("agent.log");
    let mut agent = spawn_agent(
        &[
            "metrics",
            "--service",
            "web-server",
            "--interval",
            "1",
            "--batch-size",
            "10",
            "--url",
            &srv.base,
            "--api-key",
            KEY,
        ],
        &log,
        Stdio::null(),
    );
    // Two collections (two distinct timestamps) reach the sink.
    let by_time = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut by_time: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for v in captured(&capture) {
                by_time
                    .entry(v["timestamp"].as_str().unwrap().to_string())
                    .or_default()
                    .push(v);
            }
            if by_time.len() >= 3 {
                // The first two are complete once the third has begun.
                return by_time.into_values().take(2).collect::<Vec<_>>();
            }
            assert!(
                Instant::now() < deadline,
                "fewer than 3 collections in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    sigterm(&agent);
    assert_eq!(wait_exit(&mut agent, Duration::from_secs(20)), 0);
    let stderr = std::fs::read_to_string(&log).unwrap();
    for said in [
        "Metrics agent starting service=web-server interval=1.0",
        "Metrics collected buffer_size=",
        "Sending batch batch_size=",
        "Batch sent successfully",
    ] {
        assert!(stderr.contains(said), "missing {said:?}:\n{stderr}");
    }

    let find = |c: &[Value], name: &str| -> Vec<Value> {
        c.iter().filter(|v| v["name"] == name).cloned().collect()
    };
    let (first, second) = (&by_time[0], &by_time[1]);
    for v in first {
        assert_eq!(v["service"], "web-server");
        assert!(v["value"].as_f64().is_some_and(f64::is_finite), "{v}");
        assert!(v["host"].as_str().is_some_and(|h| !h.is_empty()));
    }
    for (name, kind, unit) in [
        ("system.cpu.utilization", "gauge", "1"),
        ("system.cpu.load_average.1m", "gauge", "{thread}"),
        ("system.cpu.load_average.5m", "gauge", "{thread}"),
        ("system.cpu.load_average.15m", "gauge", "{thread}"),
        ("system.memory.usage", "gauge", "By"),
        ("system.memory.utilization", "gauge", "1"),
        ("system.filesystem.usage", "gauge", "By"),
        ("system.disk.io", "counter", "By"),
        ("system.network.io", "counter", "By"),
        ("system.processes.count", "gauge", "{process}"),
        ("system.uptime", "gauge", "s"),
    ] {
        let got = find(first, name);
        assert!(!got.is_empty(), "{name} missing from {first:?}");
        for v in &got {
            assert_eq!(
                (v["metric_type"].as_str(), v["unit"].as_str()),
                (Some(kind), Some(unit)),
                "{v}"
            );
        }
    }
    let value = |v: &Value| v["value"].as_f64().unwrap();
    let utilization = find(first, "system.cpu.utilization");
    assert!(
        utilization
            .iter()
            .any(|v| v["attributes"].get("cpu").is_none()),
        "no total"
    );
    assert!(
        utilization.iter().any(|v| v["attributes"]["cpu"] == "cpu0"),
        "no per-cpu"
    );
    assert!(utilization.iter().all(|v| (0.0..=1.0).contains(&value(v))));
    let memory = find(first, "system.memory.usage");
    let state = |st: &str| {
        memory
            .iter()
            .find(|v| v["attributes"]["state"] == st)
            .map(value)
            .unwrap()
    };
    let total: f64 = memory.iter().map(value).sum();
    assert!(state("used") > 0.0 && state("used") <= total);
    for st in ["free", "cached", "buffers"] {
        assert!(state(st) >= 0.0);
    }
    assert!(find(first, "system.memory.utilization")
        .iter()
        .all(|v| (0.0..=1.0).contains(&value(v))));
    for v in find(first, "system.filesystem.usage") {
        assert!(
            v["attributes"]["device"].is_string() && v["attributes"]["mountpoint"].is_string(),
            "{v}"
        );
        assert!(["used", "free"].contains(&v["attributes"]["state"].as_str().unwrap()));
        let mp = v["attributes"]["mountpoint"].as_str().unwrap();
        assert!(
            !mp.starts_with("/proc") && !mp.starts_with("/sys"),
            "pseudo filesystem: {v}"
        );
    }
    assert!(find(first, "system.cpu.load_average.1m")
        .iter()
        .all(|v| value(v) >= 0.0));
    assert!(find(first, "system.uptime").iter().all(|v| value(v) > 0.0));
    // Counters never go down between two collections.
    for name in ["system.disk.io", "system.network.io"] {
        let key = |v: &Value| v["attributes"].to_string();
        let before: BTreeMap<String, f64> = find(first, name)
            .iter()
            .map(|v| (key(v), value(v)))
            .collect();
        for v in find(second, name) {
            if let Some(b) = before.get(&key(&v)) {
                assert!(value(&v) >= *b, "{name} went down: {b} → {v}");
            }
        }
        assert!(find(first, name)
            .iter()
            .all(|v| v["attributes"]["direction"].is_string()));
    }
    srv.stop().await;
}

#[test]
fn a_missing_service_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    let mut agent = spawn_agent(&["metrics", "--interval", "1"], &log, Stdio::null());
    assert_eq!(wait_exit(&mut agent, Duration::from_secs(10)), 2);
    assert!(std::fs::read_to_string(&log).unwrap().contains("--service"));
}
