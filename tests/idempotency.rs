//! `Idempotency-Key`: agents that retry after a timeout get the original
//! answer and nothing is stored twice (SPEC §3).

mod common;

use std::time::Duration;

use common::*;
use edge_ingester::config::MockFail;
use serde_json::Value;

async fn post_keyed(
    c: &reqwest::Client,
    url: &str,
    api_key: &str,
    idem: &str,
    body: &Value,
) -> (u16, Value) {
    let r = c
        .post(url)
        .header("content-type", "application/json")
        .header("x-api-key", api_key)
        .header("idempotency-key", idem)
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn depth(s: &Value) -> u64 {
    s["queue"]["depth_batches"].as_u64().unwrap()
}

#[tokio::test]
async fn a_retry_with_the_same_key_and_body_gets_the_original_batch_and_is_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let capture = dir.path().join("capture.jsonl");
    cfg.mock.fail = MockFail::Never;
    cfg.mock.capture_path = capture.clone();
    let srv = InProcess::start(cfg).await;
    let c = client();
    let body = log_batch(&["retried-1".into(), "retried-2".into()]);
    let (s1, first) = post_keyed(&c, &srv.url("/logs"), KEY, "req-1", &body).await;
    let (s2, second) = post_keyed(&c, &srv.url("/logs"), KEY, "req-1", &body).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(first["batch_id"], second["batch_id"]);
    assert_eq!(second["logs_received"], 2);
    let s = wait_for_stats(&c, &srv.base, Duration::from_secs(10), |s| {
        s["logs_sent"] == 2
    })
    .await;
    assert_eq!(s["logs_received"], 2, "the retry is not counted again");
    srv.stop().await;
    assert_eq!(captured_messages(&capture), ["retried-1", "retried-2"]);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422_and_long_keys_are_400() {
    let dir = tempfile::tempdir().unwrap();
    let srv = InProcess::start(test_config(dir.path())).await;
    let c = client();
    let (s, _) = post_keyed(&c, &srv.url("/logs"), KEY, "k", &log_batch(&["a".into()])).await;
    assert_eq!(s, 202);
    let (s, v) = post_keyed(&c, &srv.url("/logs"), KEY, "k", &log_batch(&["b".into()])).await;
    assert_eq!(s, 422);
    assert_eq!(v["errors"][0]["field"], "Idempotency-Key", "{v}");
    let long = "x".repeat(129);
    let (s, v) = post_keyed(&c, &srv.url("/logs"), KEY, &long, &log_batch(&["c".into()])).await;
    assert_eq!(s, 400);
    assert!(
        v["detail"].as_str().unwrap().contains("Idempotency-Key"),
        "{v}"
    );
    let ok = "y".repeat(128);
    assert_eq!(
        post_keyed(&c, &srv.url("/logs"), KEY, &ok, &log_batch(&["d".into()]))
            .await
            .0,
        202
    );
    assert_eq!(depth(&stats(&c, &srv.base).await), 2);
    srv.stop().await;
}

#[tokio::test]
async fn keys_are_scoped_to_the_endpoint_and_the_api_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.auth.keys.push("second-key".into());
    let srv = InProcess::start(cfg).await;
    let c = client();
    let logs = log_batch(&["same".into()]);
    let metrics = serde_json::json!({"entries":[{"timestamp":"2026-11-27T10:00:00Z","name":"m",
        "value":1,"metric_type":"gauge","service":"s","host":"h"}]});
    let (_, a) = post_keyed(&c, &srv.url("/logs"), KEY, "shared", &logs).await;
    let (_, b) = post_keyed(&c, &srv.url("/logs"), "second-key", "shared", &logs).await;
    let (s, m) = post_keyed(&c, &srv.url("/metrics"), KEY, "shared", &metrics).await;
    assert_eq!(s, 202);
    assert_ne!(a["batch_id"], b["batch_id"]);
    assert_ne!(a["batch_id"], m["batch_id"]);
    assert_eq!(depth(&stats(&c, &srv.base).await), 3);
    srv.stop().await;
}

#[tokio::test]
async fn keys_survive_a_restart_and_expire_after_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    // NOTE: long enough for a restart on a loaded machine (opening the
    // queue may wait up to 2 s for sled's lock); expiry is then polled for.
    cfg.server.idempotency_window_s = 6;
    let window = Duration::from_secs(cfg.server.idempotency_window_s);
    let c = client();
    let body = log_batch(&["durable".into()]);

    let t0 = std::time::Instant::now();
    let srv = InProcess::start(cfg.clone()).await;
    let (_, first) = post_keyed(&c, &srv.url("/logs"), KEY, "across", &body).await;
    srv.stop().await;

    let srv = InProcess::start(cfg).await;
    let (s, again) = post_keyed(&c, &srv.url("/logs"), KEY, "across", &body).await;
    assert_eq!(s, 202);
    assert!(t0.elapsed() < window, "the restart took the whole window");
    assert_eq!(
        again["batch_id"], first["batch_id"],
        "remembered across the restart"
    );
    assert_eq!(depth(&stats(&c, &srv.base).await), 1);

    // Replayed until the window has passed, a new batch after.
    let deadline = t0 + window + Duration::from_secs(10);
    loop {
        let (s, later) = post_keyed(&c, &srv.url("/logs"), KEY, "across", &body).await;
        assert_eq!(s, 202);
        if later["batch_id"] != first["batch_id"] {
            assert!(t0.elapsed() >= window, "forgotten after {:?}", t0.elapsed());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(depth(&stats(&c, &srv.base).await), 2);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_of_one_key_store_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let srv = InProcess::start(test_config(dir.path())).await;
    let body = log_batch(&["raced".into()]);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (url, body) = (srv.url("/logs"), body.clone());
            tokio::spawn(async move { post_keyed(&client(), &url, KEY, "race", &body).await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let (s, v) = t.await.unwrap();
        assert_eq!(s, 202);
        ids.insert(v["batch_id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let s = stats(&client(), &srv.base).await;
    assert_eq!(depth(&s), 1);
    assert_eq!(s["logs_received"], 1);
    srv.stop().await;
}
