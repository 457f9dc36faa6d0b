//! Forwarding to Kafka over the real protocol: librdkafka's mock cluster,
//! held by the test, with `run()` pointed at it.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::kafka::{check_delivery, consume, seq_index};
use common::*;
use edge_ingester::config::{Config, SinkKind};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::json;

const PARTITIONS: i32 = 3;

fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let c = MockCluster::new(3).unwrap();
    c.create_topic("logs.raw", PARTITIONS, 1).unwrap();
    c.create_topic("metrics.raw", PARTITIONS, 1).unwrap();
    c
}

fn kafka_config(dir: &std::path::Path, bootstrap: &str) -> Config {
    let mut cfg = test_config(dir);
    cfg.forwarder.sink = SinkKind::Kafka;
    cfg.kafka.brokers = bootstrap.to_string();
    cfg.forwarder.initial_backoff_ms = 100;
    cfg.forwarder.max_backoff_ms = 1_000;
    cfg
}

fn batch_for(service: &str, ids: &[String]) -> serde_json::Value {
    json!({"entries": ids.iter().map(|id| log_entry(id, service)).collect::<Vec<_>>(), "agent_version": "1.2.3"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_entry_reaches_kafka_with_key_headers_and_value() {
    let kafka = cluster();
    let bootstrap = kafka.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let srv = InProcess::start(kafka_config(dir.path(), &bootstrap)).await;
    let c = client();
    let mut logs = Vec::new();
    for b in 0..20 {
        let ids: Vec<String> = (0..5).map(|i| format!("log-{b}-{i}")).collect();
        let resp = post_json(
            &c,
            &srv.url("/logs"),
            &batch_for(&format!("svc-{}", b % 4), &ids),
        )
        .await;
        assert_eq!(resp.status(), 202);
        logs.extend(ids);
    }
    let mut metric_names = Vec::new();
    for b in 0..10 {
        let name = format!("metric-{b}");
        let body = json!({"entries":[{"timestamp":"2026-11-27T10:00:00+01:00","name":name,"value":b,
            "metric_type":"Histogram","service":"svc-m","host":"h","unit":"ms"}]});
        assert_eq!(
            post_json(&c, &srv.url("/metrics"), &body).await.status(),
            202
        );
        metric_names.push(name);
    }
    let s = wait_for_stats(&c, &srv.base, Duration::from_secs(30), |s| {
        s["logs_sent"] == 100 && s["metrics_sent"] == 10
    })
    .await;
    assert_eq!(s["producer_type"], "KafkaProducer");
    assert_eq!(s["queue"]["depth_batches"], 0);

    let consumed = tokio::task::spawn_blocking(move || {
        consume(
            &bootstrap,
            &["logs.raw", "metrics.raw"],
            PARTITIONS,
            110,
            Duration::from_secs(30),
        )
    })
    .await
    .unwrap();
    let (distinct, duplicates) = check_delivery(&consumed, &logs);
    assert_eq!((distinct, duplicates), (110, 0));
    for m in &consumed {
        assert_eq!(m.content_type, "application/json");
        assert_eq!(m.ingest_id.split(':').count(), 3, "{}", m.ingest_id);
        if m.topic == "logs.raw" {
            assert_eq!(m.key, m.value["service"].as_str().unwrap());
            assert_eq!(m.value["level"], "INFO");
            assert_eq!(m.value["agent_version"], "1.2.3");
            assert!(m.value["received_at"].is_string());
        } else {
            assert_eq!(m.key, "svc-m");
            assert_eq!(m.value["metric_type"], "histogram");
            assert_eq!(m.value["timestamp"], "2026-11-27T09:00:00Z");
            assert!(metric_names.contains(&m.value["name"].as_str().unwrap().to_string()));
        }
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_outage_under_load_keeps_accepting_and_loses_nothing() {
    let kafka = cluster();
    let bootstrap = kafka.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = kafka_config(dir.path(), &bootstrap);
    cfg.forwarder.breaker_failure_threshold = 3;
    cfg.forwarder.breaker_open_ms = 2_000;
    let srv = InProcess::start(cfg).await;
    let c = client();
    // Warm up: the producer knows the cluster before it goes away.
    assert_eq!(
        post_json(
            &c,
            &srv.url("/logs"),
            &batch_for("warm", &["warm-0".into()])
        )
        .await
        .status(),
        202
    );
    wait_for_stats(&c, &srv.base, Duration::from_secs(20), |s| {
        s["logs_sent"] == 1
    })
    .await;

    for b in 1..=3 {
        kafka.broker_down(b).unwrap();
    }
    let acked = Arc::new(Mutex::new(vec!["warm-0".to_string()]));
    let refused = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|k| {
            let (url, acked, refused, stop) = (
                srv.url("/logs"),
                acked.clone(),
                refused.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let c = reqwest::Client::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let ids: Vec<String> = (0..10).map(|i| format!("k{k}-b{n:05}-e{i}")).collect();
                    n += 1;
                    let r = post_json(&c, &url, &batch_for(&format!("client-{k}"), &ids)).await;
                    if r.status() == 202 {
                        acked.lock().unwrap().extend(ids);
                    } else {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();

    // At least 20 s of outage under load; the breaker must open meanwhile
    // (on a loaded machine it may take longer than 22 s: keep watching, up
    // to a minute, rather than sample a fixed window).
    let mut saw_open = false;
    let mut max_depth = 0;
    let outage = std::time::Instant::now();
    while outage.elapsed() < Duration::from_secs(22)
        || (!saw_open && outage.elapsed() < Duration::from_secs(60))
    {
        let s = stats(&c, &srv.base).await;
        saw_open |= s["forwarder"]["circuit"] == "open";
        max_depth = max_depth.max(s["queue"]["depth_batches"].as_u64().unwrap());
        let ready = c.get(srv.url("/ready")).send().await.unwrap().status();
        assert_eq!(ready, 200, "/ready must stay 200 below the high-water mark");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let during = stats(&c, &srv.base).await;
    assert!(saw_open, "breaker never opened: {during}");
    assert!(during["forwarder"]["last_error"].is_string(), "{during}");
    assert!(max_depth > 50, "queue did not grow: {max_depth}");
    for b in 1..=3 {
        kafka.broker_up(b).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.await.unwrap();
    }
    assert_eq!(
        refused.load(Ordering::Relaxed),
        0,
        "the edge must keep accepting"
    );
    let after = wait_for_stats(&c, &srv.base, Duration::from_secs(60), |s| {
        s["queue"]["depth_batches"] == 0
    })
    .await;
    assert_eq!(after["forwarder"]["circuit"], "closed");
    srv.stop().await;

    let acked = acked.lock().unwrap().clone();
    let n = acked.len();
    let consumed = tokio::task::spawn_blocking(move || {
        consume(
            &bootstrap,
            &["logs.raw"],
            PARTITIONS,
            n,
            Duration::from_secs(60),
        )
    })
    .await
    .unwrap();
    let (distinct, duplicates) = check_delivery(&consumed, &acked);
    eprintln!("outage: acknowledged {n}, delivered distinct {distinct}, duplicates {duplicates}, max depth {max_depth} batches");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanently_rejected_batch_goes_to_dead_letters_and_replay_puts_it_back() {
    let kafka = cluster();
    let bootstrap = kafka.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let cfg = kafka_config(dir.path(), &bootstrap);
    let srv = InProcess::start(cfg.clone()).await;
    let c = client();
    assert_eq!(
        post_json(&c, &srv.url("/logs"), &batch_for("a", &["before".into()]))
            .await
            .status(),
        202
    );
    wait_for_stats(&c, &srv.base, Duration::from_secs(20), |s| {
        s["logs_sent"] == 1
    })
    .await;

    kafka.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    assert_eq!(
        post_json(&c, &srv.url("/logs"), &batch_for("a", &["rejected".into()]))
            .await
            .status(),
        202
    );
    let s = wait_for_stats(&c, &srv.base, Duration::from_secs(20), |s| {
        s["queue"]["dead_letter_batches"] == 1
    })
    .await;
    assert_eq!(
        s["queue"]["depth_batches"], 0,
        "the queue keeps moving: {s}"
    );
    assert_eq!(
        post_json(&c, &srv.url("/logs"), &batch_for("a", &["after".into()]))
            .await
            .status(),
        202
    );
    wait_for_stats(&c, &srv.base, Duration::from_secs(20), |s| {
        s["logs_sent"] == 2
    })
    .await;
    srv.stop().await;

    let listed = edge_ingester::cli::dead_letter_list(&cfg.queue.path).unwrap();
    assert!(listed.starts_with("1 dead letters"), "{listed}");
    assert!(listed.to_lowercase().contains("too large"), "{listed}");
    let replayed = replay(&cfg.queue.path).await;
    assert!(replayed.contains("replayed 1"), "{replayed}");

    let srv = InProcess::start(cfg).await;
    let s = wait_for_stats(&c, &srv.base, Duration::from_secs(20), |s| {
        s["logs_sent"] == 1
    })
    .await;
    assert_eq!(s["queue"]["dead_letter_batches"], 0);
    srv.stop().await;
    let consumed = consume_logs(&bootstrap, 3).await;
    // The replayed entry keeps the ingest-id it was first sent with (so it
    // comes after "after" in its partition: a replay is not in order).
    let id_of = |m: &str| {
        let c = consumed.iter().find(|c| c.value["message"] == m);
        c.unwrap_or_else(|| panic!("{m} not on Kafka: {consumed:?}"))
            .ingest_id
            .clone()
    };
    let (before, rejected, after) = (id_of("before"), id_of("rejected"), id_of("after"));
    let (seq, _) = seq_index(&before);
    let node = before.rsplitn(3, ':').nth(2).unwrap();
    assert_eq!(
        rejected,
        format!("{node}:{}:0", seq + 1),
        "replay changed the id"
    );
    assert_eq!(after, format!("{node}:{}:0", seq + 2));
    let in_order: Vec<_> = consumed
        .iter()
        .filter(|c| c.value["message"] != "rejected")
        .cloned()
        .collect();
    check_delivery(&in_order, &["before", "after"].map(String::from));
}

/// `queue dead-letter replay` on a stopped server's queue; its report.
async fn replay(queue: &std::path::Path) -> String {
    let path = queue.to_path_buf();
    tokio::task::spawn_blocking(move || edge_ingester::cli::dead_letter_replay(&path, None))
        .await
        .unwrap()
        .unwrap()
}

/// Every message on `logs.raw` from the start (waits for at least `expect`).
async fn consume_logs(bootstrap: &str, expect: usize) -> Vec<common::kafka::Consumed> {
    let bootstrap = bootstrap.to_string();
    tokio::task::spawn_blocking(move || {
        consume(
            &bootstrap,
            &["logs.raw"],
            PARTITIONS,
            expect,
            Duration::from_secs(30),
        )
    })
    .await
    .unwrap()
}

/// Entries `e0..e<n>` of one batch, entry `big` carrying a message of
/// `big_bytes`; services cycle through `keys`.
fn batch_with_big_entry(
    tag: &str,
    n: usize,
    keys: usize,
    big: Option<(usize, usize)>,
) -> serde_json::Value {
    let entries: Vec<_> = (0..n)
        .map(|i| {
            let mut e = log_entry(&format!("{tag}-e{i}"), &format!("svc-{}", i % keys));
            if let Some((at, bytes)) = big.filter(|(at, _)| *at == i) {
                e["message"] = json!(format!("{tag}-e{at}-{}", "x".repeat(bytes)));
            }
            e
        })
        .collect();
    json!({ "entries": entries })
}

/// Every consumed entry of `tag` carries `<node>:<seq>:<i>` for its own
/// index i, all with one seq, each exactly once; returns the entry count.
fn assert_original_ids(consumed: &[common::kafka::Consumed], tag: &str) -> usize {
    let mut ids = std::collections::BTreeMap::new();
    let mut prefix: Option<String> = None;
    for c in consumed {
        let m = c.value["message"].as_str().unwrap();
        let Some(rest) = m.strip_prefix(&format!("{tag}-e")) else {
            continue;
        };
        let index: usize = rest.split('-').next().unwrap().parse().unwrap();
        let (p, i) = c.ingest_id.rsplit_once(':').unwrap();
        assert_eq!(i.parse::<usize>().unwrap(), index, "{m}: {}", c.ingest_id);
        assert_eq!(prefix.get_or_insert(p.to_string()), p, "one batch, one seq");
        assert!(
            ids.insert(index, c.ingest_id.clone()).is_none(),
            "{m} delivered twice"
        );
    }
    ids.len()
}

/// Defect 8: librdkafka refuses one entry of five before sending it (larger
/// than `message.max.bytes`); the other four reach Kafka, only that one goes
/// to the dead letters, and a replay sends it under its first ingest-id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_entry_kafka_refuses_goes_to_dead_letters_and_keeps_its_id_on_replay() {
    let kafka = cluster();
    let bootstrap = kafka.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let roomy = kafka_config(dir.path(), &bootstrap);
    let mut strict = roomy.clone();
    strict
        .kafka
        .properties
        .insert("message.max.bytes".into(), "10000".into());
    let srv = InProcess::start(strict).await;
    let c = client();
    let body = batch_with_big_entry("one", 5, 2, Some((2, 20_000)));
    assert_eq!(post_json(&c, &srv.url("/logs"), &body).await.status(), 202);
    let s = wait_for_stats(&c, &srv.base, Duration::from_secs(20), |s| {
        s["queue"]["dead_letter_batches"] == 1 && s["queue"]["depth_batches"] == 0
    })
    .await;
    assert_eq!(
        s["logs_sent"], 4,
        "the four good entries count as sent: {s}"
    );
    srv.stop().await;
    let listed = edge_ingester::cli::dead_letter_list(&roomy.queue.path).unwrap();
    assert!(listed.contains("1 of 5 entries refused"), "{listed}");
    assert!(
        listed.contains(":2)"),
        "names the refused ingest-id: {listed}"
    );

    let replayed = replay(&roomy.queue.path).await;
    assert!(replayed.contains("replayed 1"), "{replayed}");
    let srv = InProcess::start(roomy).await;
    wait_for_stats(&c, &srv.base, Duration::from_secs(20), |s| {
        s["logs_sent"] == 1
    })
    .await;
    srv.stop().await;

    let consumed = consume_logs(&bootstrap, 5).await;
    assert_eq!(consumed.len(), 5, "each entry once: {consumed:?}");
    assert_eq!(assert_original_ids(&consumed, "one"), 5);
}

/// Defect 8, the broker's side: one produce request of a batch spread over
/// three partitions (three leaders) is refused for good. Only the entries
/// of that request are dead-lettered — Kafka took the others, which are not
/// sent again — and after a replay every entry is on Kafka once, under the
/// ingest-id of its place in the original batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_produce_request_dead_letters_only_its_entries() {
    let kafka = cluster();
    for p in 0..PARTITIONS {
        kafka.partition_leader("logs.raw", p, Some(p + 1)).unwrap();
    }
    let bootstrap = kafka.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let cfg = kafka_config(dir.path(), &bootstrap);
    let srv = InProcess::start(cfg.clone()).await;
    let c = client();
    let warm = batch_with_big_entry("warm", 6, 6, None);
    assert_eq!(post_json(&c, &srv.url("/logs"), &warm).await.status(), 202);
    wait_for_stats(&c, &srv.base, Duration::from_secs(20), |s| {
        s["logs_sent"] == 6
    })
    .await;

    kafka.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let n = 30;
    let body = batch_with_big_entry("split", n, 6, None);
    assert_eq!(post_json(&c, &srv.url("/logs"), &body).await.status(), 202);
    let s = wait_for_stats(&c, &srv.base, Duration::from_secs(20), |s| {
        s["queue"]["dead_letter_batches"] == 1 && s["queue"]["depth_batches"] == 0
    })
    .await;
    let sent = s["logs_sent"].as_u64().unwrap() - 6;
    assert!(
        sent > 0 && sent < n as u64,
        "some entries refused, not all: {s}"
    );
    srv.stop().await;
    let listed = edge_ingester::cli::dead_letter_list(&cfg.queue.path).unwrap();
    let refused = n as u64 - sent;
    assert!(
        listed.contains(&format!("{refused} of {n} entries refused")),
        "{listed}"
    );

    let before = consume_logs(&bootstrap, 6 + sent as usize).await;
    assert_eq!(
        assert_original_ids(&before, "split"),
        sent as usize,
        "{before:?}"
    );

    replay(&cfg.queue.path).await;
    let srv = InProcess::start(cfg).await;
    wait_for_stats(&c, &srv.base, Duration::from_secs(20), |s| {
        s["logs_sent"] == refused
    })
    .await;
    srv.stop().await;
    let after = consume_logs(&bootstrap, 6 + n).await;
    assert_eq!(after.len(), 6 + n, "nothing sent twice: {after:?}");
    assert_eq!(assert_original_ids(&after, "split"), n);
}

#[test]
fn sigkill_during_kafka_forwarding_loses_nothing() {
    let kafka = cluster();
    let bootstrap = kafka.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "k.toml", &kafka_config(dir.path(), &bootstrap));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    for cycle in 0..6u64 {
        let mut server = Binary::start(&path);
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..4)
            .map(|k| {
                let (url, acked, stop) =
                    (format!("{}/logs", server.base), acked.clone(), stop.clone());
                rt.spawn(async move {
                    let c = reqwest::Client::new();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let ids: Vec<String> = (0..20)
                            .map(|i| format!("c{cycle}-k{k}-b{n:05}-e{i}"))
                            .collect();
                        n += 1;
                        match c
                            .post(&url)
                            .header("content-type", "application/json")
                            .header("x-api-key", KEY)
                            .json(&batch_for(&format!("client-{k}"), &ids))
                            .send()
                            .await
                        {
                            Ok(r) if r.status() == 202 => acked.lock().unwrap().extend(ids),
                            _ => break,
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300 + (cycle * 457) % 1200));
        server.sigkill();
        stop.store(true, Ordering::Relaxed);
        for t in clients {
            rt.block_on(t).unwrap();
        }
    }
    let mut server = Binary::start(&path);
    // Up to 120 s: a silently wedged producer is recreated after 30 s.
    rt.block_on(wait_for_stats(
        &client(),
        &server.base,
        Duration::from_secs(120),
        |s| s["queue"]["depth_batches"] == 0,
    ));
    assert!(server.sigterm().success());
    let acked = acked.lock().unwrap().clone();
    let consumed = consume(
        &bootstrap,
        &["logs.raw"],
        PARTITIONS,
        acked.len(),
        Duration::from_secs(60),
    );
    let (distinct, duplicates) = check_delivery(&consumed, &acked);
    eprintln!(
        "sigkill x6 while forwarding: acknowledged {}, delivered distinct {distinct}, duplicates {duplicates} (batches in flight at a kill)",
        acked.len()
    );
    assert!(acked.len() > 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_brokers_do_not_stop_ingest_and_show_the_cause() {
    // Port 1 on loopback: nothing listens, connections are refused.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = kafka_config(dir.path(), "127.0.0.1:1");
    cfg.forwarder.breaker_failure_threshold = 2;
    let srv = InProcess::start(cfg).await;
    let c = client();
    for b in 0..5 {
        let r = post_json(
            &c,
            &srv.url("/logs"),
            &batch_for("a", &[format!("queued-{b}")]),
        )
        .await;
        assert_eq!(r.status(), 202);
    }
    let s = wait_for_stats(&c, &srv.base, Duration::from_secs(30), |s| {
        s["forwarder"]["circuit"] == "open"
    })
    .await;
    let err = s["forwarder"]["last_error"].as_str().unwrap();
    assert!(
        err.contains("127.0.0.1:1") || err.to_lowercase().contains("brokers"),
        "{err}"
    );
    assert_eq!(s["queue"]["depth_batches"], 5);
    assert!(s["forwarder"]["next_retry_in_seconds"].is_number(), "{s}");
    assert_eq!(c.get(srv.url("/ready")).send().await.unwrap().status(), 200);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topic_is_visible_and_recovers_once_the_topic_exists() {
    let kafka = cluster();
    let bootstrap = kafka.bootstrap_servers();
    kafka
        .topic_error(
            "logs.raw",
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = kafka_config(dir.path(), &bootstrap);
    cfg.kafka
        .properties
        .insert("topic.metadata.propagation.max.ms".into(), "1000".into());
    let srv = InProcess::start(cfg).await;
    let c = client();
    assert_eq!(
        post_json(&c, &srv.url("/logs"), &batch_for("a", &["waiting".into()]))
            .await
            .status(),
        202
    );
    let s = wait_for_stats(&c, &srv.base, Duration::from_secs(30), |s| {
        s["forwarder"]["consecutive_failures"].as_u64().unwrap() > 0
    })
    .await;
    eprintln!(
        "last_error while the topic is unknown: {}",
        s["forwarder"]["last_error"]
    );
    assert!(s["forwarder"]["last_error"].is_string());
    assert_eq!(s["logs_sent"], 0);
    kafka
        .topic_error("logs.raw", RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR)
        .unwrap();
    let s = wait_for_stats(&c, &srv.base, Duration::from_secs(30), |s| {
        s["logs_sent"] == 1
    })
    .await;
    assert_eq!(s["forwarder"]["circuit"], "closed");
    assert!(s["forwarder"]["last_error"].is_null(), "{s}");
    srv.stop().await;
}

/// A refusal about the destination, not the record (here: no Write ACL on
/// the topic), must not empty the queue into the dead letters: the batch
/// stays queued, `last_error` says what to fix, and it is delivered once
/// the broker accepts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_failure_keeps_the_batch_queued_and_says_what_to_fix() {
    let kafka = cluster();
    let bootstrap = kafka.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let srv = InProcess::start(kafka_config(dir.path(), &bootstrap)).await;
    let c = client();
    assert_eq!(
        post_json(&c, &srv.url("/logs"), &batch_for("a", &["warm".into()]))
            .await
            .status(),
        202
    );
    wait_for_stats(&c, &srv.base, Duration::from_secs(20), |s| {
        s["logs_sent"] == 1
    })
    .await;
    kafka.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 1000],
    );
    assert_eq!(
        post_json(&c, &srv.url("/logs"), &batch_for("a", &["held".into()]))
            .await
            .status(),
        202
    );
    let s = wait_for_stats(&c, &srv.base, Duration::from_secs(20), |s| {
        s["forwarder"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("grant it Write on the topic"))
    })
    .await;
    assert_eq!(s["queue"]["dead_letter_batches"], 0, "{s}");
    assert_eq!(s["queue"]["depth_batches"], 1, "{s}");
    kafka.clear_request_errors(RDKafkaApiKey::Produce);
    let s = wait_for_stats(&c, &srv.base, Duration::from_secs(30), |s| {
        s["logs_sent"] == 2
    })
    .await;
    assert_eq!(s["queue"]["dead_letter_batches"], 0, "{s}");
    srv.stop().await;
}
