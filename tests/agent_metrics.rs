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

/// Polls `cond` every 50 ms until it yields, or panics at the limit.
async fn until<T>(limit: Duration, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn metrics_against(url: &str, extra: &[&str], log: &std::path::Path) -> Reaped {
    let mut args = vec!["metrics", "--service", "web-server", "--url", url];
    args.extend_from_slice(&["--api-key", KEY]);
    args.extend_from_slice(extra);
    spawn_agent(&args, log, Stdio::null())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_batch_is_whole_collections_with_a_fresh_key_kept_across_retries() {
    let script = Scripted::start(vec![
        (503, vec![("retry-after", "1".to_string())], "{}".into()),
        (413, vec![], r#"{"detail":"too large"}"#.into()),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    let mut agent = metrics_against(
        &script.url,
        &["--interval", "1", "--batch-size", "10"],
        &log,
    );
    // 503 and 413 for the first collection, its two halves, the second.
    let seen = until(Duration::from_secs(30), "five requests", || {
        let seen = script.seen();
        (seen.len() >= 5).then_some(seen)
    })
    .await;
    sigterm(&agent);
    assert_eq!(wait_exit(&mut agent, Duration::from_secs(20)), 0);
    let n = seen[0].entries;
    assert!(n >= 10, "a collection holds every metric: {seen:?}");
    assert!(seen
        .iter()
        .all(|s| s.path == "/metrics" && s.api_key == KEY));
    // Retried after Retry-After with the same body and key.
    assert_eq!(
        (seen[1].entries, &seen[1].idempotency_key),
        (n, &seen[0].idempotency_key)
    );
    // 413: two halves, each with its own key.
    assert_eq!(
        (seen[2].entries + seen[3].entries, seen[2].entries),
        (n, n / 2)
    );
    // The next collection: whole, never mixed with the first.
    assert_eq!(seen[4].entries, n);
    let keys: std::collections::HashSet<&str> = [1, 2, 3, 4]
        .iter()
        .map(|&i| seen[i].idempotency_key.as_str())
        .collect();
    assert_eq!(keys.len(), 4, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_below_batch_size_is_sent_on_sigterm() {
    let script = Scripted::start(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    let mut agent = metrics_against(
        &script.url,
        &["--interval", "600", "--batch-size", "1000"],
        &log,
    );
    until(Duration::from_secs(10), "a first collection", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("Metrics collected buffer_size=")
            .then_some(())
    })
    .await;
    assert!(script.seen().is_empty(), "sent below --batch-size");
    sigterm(&agent);
    assert_eq!(wait_exit(&mut agent, Duration::from_secs(15)), 0);
    let seen = script.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].entries >= 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_outage_exits_0_within_the_give_up_bound() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    let url = format!("http://127.0.0.1:{}", free_port());
    let mut agent = metrics_against(&url, &["--interval", "1", "--batch-size", "1"], &log);
    until(Duration::from_secs(10), "a failed send", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("cannot reach the ingester").then_some(())
    })
    .await;
    let signalled = Instant::now();
    sigterm(&agent);
    // 10 s to deliver, then it gives up.
    assert_eq!(wait_exit(&mut agent, Duration::from_secs(15)), 0);
    assert!(signalled.elapsed() >= Duration::from_secs(9));
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.contains("stopping with metrics unsent"), "{stderr}");
}

#[test]
fn a_zero_or_infinite_interval_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["0", "inf", "-1", "soon"] {
        let log = dir.path().join(format!("agent-{bad}.log"));
        let mut agent = spawn_agent(
            &["metrics", "--service", "s", &format!("--interval={bad}")],
            &log,
            Stdio::null(),
        );
        assert_eq!(wait_exit(&mut agent, Duration::from_secs(10)), 2, "{bad}");
        let stderr = std::fs::read_to_string(&log).unwrap();
        assert!(stderr.contains("--interval"), "{bad}: {stderr}");
    }
}
