//! A clean restart keeps the queue: depth, entries, bytes and order, while
//! counters that are "since process start" begin again at zero.

mod common;

use std::time::Duration;

use common::*;
use edge_ingester::config::MockFail;
use serde_json::json;

#[tokio::test]
async fn queue_depth_order_and_counters_survive_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let c = client();

    let srv = InProcess::start(test_config(dir.path())).await;
    let mut expected_order = Vec::new();
    for b in 0..6 {
        let ids: Vec<String> = (0..=b).map(|i| format!("log-b{b}-e{i}")).collect();
        expected_order.extend(ids.clone());
        assert_eq!(
            post_json(&c, &srv.url("/logs"), &log_batch(&ids))
                .await
                .status(),
            202
        );
    }
    let metric = json!({"entries":[{"timestamp":"2026-11-27T10:00:00Z","name":"m-last","value":1,
        "metric_type":"counter","service":"svc","host":"h"}]});
    assert_eq!(
        post_json(&c, &srv.url("/metrics"), &metric).await.status(),
        202
    );
    let before = stats(&c, &srv.base).await;
    assert_eq!(before["queue"]["depth_batches"], 7);
    assert_eq!(before["queue"]["depth_entries"], 22);
    assert_eq!(before["logs_received"], 21);
    srv.stop().await;

    let srv = InProcess::start(test_config(dir.path())).await;
    let after = stats(&c, &srv.base).await;
    for field in [
        "depth_batches",
        "depth_entries",
        "bytes",
        "max_bytes",
        "dead_letter_batches",
    ] {
        assert_eq!(
            after["queue"][field], before["queue"][field],
            "queue.{field}"
        );
    }
    assert!(after["queue"]["oldest_age_seconds"].as_f64().unwrap() >= 0.0);
    assert!(after["queue"]["disk_bytes"].as_u64().unwrap() > 0);
    // Counters describe this process.
    assert_eq!(after["logs_received"], 0);
    assert_eq!(after["metrics_received"], 0);
    srv.stop().await;

    // With a working sink the queue drains in the order it was accepted.
    let mut cfg = test_config(dir.path());
    let capture = dir.path().join("capture.jsonl");
    cfg.mock.fail = MockFail::Never;
    cfg.mock.capture_path = capture.clone();
    let srv = InProcess::start(cfg).await;
    let drained = wait_for_stats(&c, &srv.base, Duration::from_secs(10), |s| {
        s["queue"]["depth_batches"] == 0
    })
    .await;
    assert_eq!(drained["logs_sent"], 21);
    assert_eq!(drained["metrics_sent"], 1);
    srv.stop().await;

    let lines = std::fs::read_to_string(&capture).unwrap();
    let values: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let logs: Vec<String> = values
        .iter()
        .filter_map(|v| v["message"].as_str().map(str::to_string))
        .collect();
    assert_eq!(logs, expected_order);
    assert_eq!(values.last().unwrap()["name"], "m-last");
}

#[tokio::test]
async fn batch_ids_are_never_reused_after_the_queue_drains_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    let mut cfg = test_config(dir.path());
    cfg.mock.fail = MockFail::Never;
    let srv = InProcess::start(cfg.clone()).await;
    let first: serde_json::Value = post_json(&c, &srv.url("/logs"), &log_batch(&["a".into()]))
        .await
        .json()
        .await
        .unwrap();
    wait_for_stats(&c, &srv.base, Duration::from_secs(10), |s| {
        s["queue"]["depth_batches"] == 0
    })
    .await;
    srv.stop().await;

    let srv = InProcess::start(cfg).await;
    let second: serde_json::Value = post_json(&c, &srv.url("/logs"), &log_batch(&["b".into()]))
        .await
        .json()
        .await
        .unwrap();
    srv.stop().await;
    let (a, b) = (
        first["batch_id"].as_str().unwrap(),
        second["batch_id"].as_str().unwrap(),
    );
    assert_ne!(a, b);
    assert_eq!(a.split(':').next(), b.split(':').next(), "node id is kept");
}
