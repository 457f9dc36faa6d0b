//! SIGHUP reload (SPEC §9), driven as an operator does it: edit the file,
//! `kill -HUP` the running binary, read the log and `/stats`.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{captured_messages, log_batch, stats_as, test_config, write_config, Binary};
use edge_ingester::config::{Config, MockFail};

/// Sends SIGHUP and waits for the outcome's log line (the `n`th of its
/// kind); returns when it was seen.
fn reload(server: &Binary, n: usize, outcome: &str) -> Instant {
    server.sighup();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = server
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(outcome))
            .count();
        if seen >= n {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "no `{outcome}` line after SIGHUP; log:\n{}",
            server.log.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

async fn post(c: &reqwest::Client, base: &str, key: &str, ids: &[String]) -> reqwest::Result<u16> {
    let r = c
        .post(format!("{base}/logs"))
        .header("content-type", "application/json")
        .header("x-api-key", key)
        .body(serde_json::to_vec(&log_batch(ids)).unwrap())
        .send()
        .await?;
    Ok(r.status().as_u16())
}

fn delivering_config(dir: &Path) -> Config {
    let mut cfg = test_config(dir);
    cfg.mock.fail = MockFail::Never;
    cfg.mock.capture_path = dir.join("capture.jsonl");
    cfg
}

/// One request of the load: who sent it, when it started, what came back.
struct Sent {
    key: &'static str,
    started: Instant,
    status: Result<u16, String>,
    ids: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_rotated_under_load_is_refused_from_the_logged_reload_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = delivering_config(dir.path());
    cfg.auth.keys = vec![common::KEY.into(), "stay-key".into(), "old-key".into()];
    let path = write_config(dir.path(), "c.toml", &cfg);
    let server = Binary::start(&path);
    let pid = server.child.id();
    let base = server.base.clone();

    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for (n, key) in ["stay-key", "stay-key", "stay-key", "old-key", "new-key"]
        .into_iter()
        .enumerate()
    {
        let (sent, stop, base) = (sent.clone(), stop.clone(), base.clone());
        clients.push(tokio::spawn(async move {
            // Keep-alive connections, opened before the reload and used
            // across it.
            let c = reqwest::Client::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ids: Vec<String> = (0..5).map(|e| format!("{key}-{n}-{i}-{e}")).collect();
                let started = Instant::now();
                let status = post(&c, &base, key, &ids).await.map_err(|e| e.to_string());
                sent.lock().unwrap().push(Sent {
                    key,
                    started,
                    status,
                    ids,
                });
                i += 1;
            }
        }));
    }
    // Load before the reload, on every key.
    let t0 = Instant::now();
    while sent.lock().unwrap().len() < 200 {
        assert!(t0.elapsed() < Duration::from_secs(30), "no load");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cfg.auth.keys = vec![common::KEY.into(), "stay-key".into(), "new-key".into()];
    write_config(dir.path(), "c.toml", &cfg);
    let logged = tokio::task::block_in_place(|| reload(&server, 1, "config reloaded"));
    let before = sent.lock().unwrap().len();
    while sent.lock().unwrap().len() < before + 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    let sent = std::mem::take(&mut *sent.lock().unwrap());
    let after = |s: &&Sent| s.started > logged;
    let of = |key: &'static str| sent.iter().filter(move |s| s.key == key);
    // The key that stayed: not one failed request, before or after.
    let stay: Vec<_> = of("stay-key").collect();
    assert!(
        stay.iter().all(|s| s.status == Ok(202)),
        "a stay-key request failed: {:?}",
        stay.iter()
            .filter(|s| s.status != Ok(202))
            .map(|s| &s.status)
            .collect::<Vec<_>>()
    );
    assert!(stay.iter().any(|s| s.started > logged));
    // The old key: 202 before the reload, 401 for every request started
    // once the reload was logged.
    assert!(of("old-key").any(|s| s.status == Ok(202)));
    let old_after: Vec<_> = of("old-key").filter(after).collect();
    assert!(!old_after.is_empty());
    assert!(old_after.iter().all(|s| s.status == Ok(401)));
    // The new key: 401 before, 202 from the reload on.
    assert!(of("new-key").any(|s| s.status == Ok(401)));
    let new_after: Vec<_> = of("new-key").filter(after).collect();
    assert!(!new_after.is_empty() && new_after.iter().all(|s| s.status == Ok(202)));

    // Same process, and every acknowledged entry reached the sink.
    assert_eq!(server.child.id(), pid);
    let c = reqwest::Client::new();
    let acked: Vec<&String> = sent
        .iter()
        .filter(|s| s.status == Ok(202))
        .flat_map(|s| &s.ids)
        .collect();
    let st = common::wait_for_stats(&c, &base, Duration::from_secs(30), |s| {
        s["logs_sent"].as_u64() == Some(acked.len() as u64)
    })
    .await;
    assert_eq!(st["config"]["reloads"], 1);
    assert_eq!(st["config"]["reload_failures"], 0);
    let captured: std::collections::HashSet<String> =
        captured_messages(&dir.path().join("capture.jsonl"))
            .into_iter()
            .collect();
    let missing = acked.iter().filter(|id| !captured.contains(**id)).count();
    assert_eq!(missing, 0, "acknowledged entries missing from the sink");
    // No key reaches the log.
    let log = server.log.lock().unwrap().join("\n");
    assert!(!log.contains("old-key") && !log.contains("new-key") && !log.contains("stay-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_changes_nothing_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.auth.keys = vec!["k1".into()];
    let path = write_config(dir.path(), "c.toml", &cfg);
    let server = Binary::start(&path);
    let c = reqwest::Client::new();
    let loaded_at = stats_as(&c, &server.base, "k1").await["config"]["loaded_at"].clone();

    // Out of range, with a new key in it: the key must not take.
    let mut bad = cfg.clone();
    bad.auth.keys = vec!["k2-secret".into()];
    bad.rate_limit.burst = 0;
    write_config(dir.path(), "c.toml", &bad);
    tokio::task::block_in_place(|| reload(&server, 1, "config reload failed"));
    // Not TOML at all.
    std::fs::write(&path, "[server\nlisten = ").unwrap();
    tokio::task::block_in_place(|| reload(&server, 2, "config reload failed"));

    assert_eq!(
        post(&c, &server.base, "k1", &["a".into()]).await.unwrap(),
        202
    );
    assert_eq!(
        post(&c, &server.base, "k2-secret", &["b".into()])
            .await
            .unwrap(),
        401
    );
    let st = stats_as(&c, &server.base, "k1").await;
    assert_eq!(st["config"]["reloads"], 0);
    assert_eq!(st["config"]["reload_failures"], 2);
    assert_eq!(st["config"]["loaded_at"], loaded_at);
    let prom = c
        .get(format!("{}/stats/prometheus", server.base))
        .header("x-api-key", "k1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        prom.contains("edge_ingester_config_reload_failures_total 2"),
        "{prom}"
    );
    let log = server.log.lock().unwrap().join("\n");
    assert!(
        log.contains("rate_limit.burst"),
        "the failure names the key:\n{log}"
    );
    assert!(!log.contains("k2-secret"));

    // A good file afterwards is taken.
    write_config(dir.path(), "c.toml", &cfg);
    tokio::task::block_in_place(|| reload(&server, 1, "config reloaded"));
    let st = stats_as(&c, &server.base, "k1").await;
    assert_eq!(st["config"]["reloads"], 1);
    assert_ne!(st["config"]["loaded_at"], loaded_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_only_keys_are_named_and_kept_while_live_ones_apply() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = delivering_config(dir.path());
    cfg.forwarder.initial_backoff_ms = 100;
    cfg.forwarder.max_backoff_ms = 100;
    let path = write_config(dir.path(), "c.toml", &cfg);
    let server = Binary::start(&path);
    let base = server.base.clone();
    let c = reqwest::Client::new();
    let key = common::KEY;
    let big: Vec<String> = (0..40).map(|i| format!("big-{i}")).collect();

    let mut next = cfg.clone();
    // Restart-only: named in the log, running values kept.
    next.queue.path = dir.path().join("elsewhere");
    next.server.max_body_bytes = 1_000;
    next.server.max_inflight_bytes = 2_000;
    // Live: the rate limit, the mock producer, the breaker.
    next.rate_limit.burst = 7;
    next.mock.fail = MockFail::Always;
    next.forwarder.breaker_failure_threshold = 1;
    next.forwarder.breaker_open_ms = 600_000;
    write_config(dir.path(), "c.toml", &next);
    tokio::task::block_in_place(|| reload(&server, 1, "config reloaded"));
    let log = server.log.lock().unwrap().join("\n");
    for k in [
        "queue.path",
        "server.max_body_bytes",
        "server.max_inflight_bytes",
    ] {
        assert!(
            log.contains(&format!("`{k}` changed in the file but needs a restart")),
            "{k} not reported:\n{log}"
        );
    }

    // The body limit is still the running one: 40 entries (~6 KB) pass.
    let r = c
        .post(format!("{base}/logs"))
        .header("content-type", "application/json")
        .header("x-api-key", key)
        .body(serde_json::to_vec(&log_batch(&big)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // The new burst is what the rate headers say.
    assert_eq!(r.headers()["x-ratelimit-limit"], "7");
    // The mock now fails and one failure opens the circuit, for long.
    let st = common::wait_for_stats(&c, &base, Duration::from_secs(20), |s| {
        s["forwarder"]["circuit"] == "open"
    })
    .await;
    assert_eq!(st["queue"]["depth_batches"], 1);
    assert!(!dir.path().join("elsewhere").exists());
    assert!(
        st["forwarder"]["next_retry_in_seconds"].as_f64().unwrap() > 500.0,
        "{st}"
    );

    // And back: the batch is delivered once the mock works again.
    next.mock.fail = MockFail::Never;
    next.forwarder.breaker_open_ms = 100;
    write_config(dir.path(), "c.toml", &next);
    tokio::task::block_in_place(|| reload(&server, 2, "config reloaded"));
    // The open period is measured again with the new setting: the probe
    // goes out, succeeds, and the batch is delivered without a restart.
    let st =
        common::wait_for_stats(&c, &base, Duration::from_secs(20), |s| s["logs_sent"] == 40).await;
    assert_eq!(st["forwarder"]["circuit"], "closed");
    assert_eq!(st["config"]["reloads"], 2);
    assert_eq!(
        captured_messages(&dir.path().join("capture.jsonl")).len(),
        40
    );
}
