//! The HTTP contract (SPEC §3), driven over real HTTP against `run()`.
//! The sink fails in these tests, so `queue.depth_batches` counts exactly
//! what was enqueued; every refused request must leave it unchanged.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Depth and received counters: what a refused request must not change.
async fn queue_marks(c: &reqwest::Client, base: &str) -> (u64, u64, u64) {
    let s = stats(c, base).await;
    (
        s["queue"]["depth_batches"].as_u64().unwrap(),
        s["logs_received"].as_u64().unwrap(),
        s["metrics_received"].as_u64().unwrap(),
    )
}

async fn send(
    c: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = c.post(url).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

const JSON_KEYED: [(&str, &str); 2] = [("content-type", "application/json"), ("x-api-key", KEY)];

/// JSON with a key and a Content-Encoding.
fn encoded(encoding: &str) -> [(&str, &str); 3] {
    [
        ("content-type", "application/json"),
        ("x-api-key", KEY),
        ("content-encoding", encoding),
    ]
}

fn one_log() -> Vec<u8> {
    serde_json::to_vec(&log_batch(&["one".into()])).unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn accepted_log_batch_answers_202_with_the_spec_body_and_rate_headers() {
    let dir = tempfile::tempdir().unwrap();
    let srv = InProcess::start(test_config(dir.path())).await;
    let c = client();
    let body = json!({"entries": [log_entry("a", "checkout"), log_entry("b", "other")]});
    let (status, headers, v) = send(
        &c,
        &srv.url("/logs"),
        &JSON_KEYED,
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(v["status"], "accepted");
    assert_eq!(v["logs_received"], 2);
    assert_eq!(v["service"], "checkout");
    assert_eq!(v["message"], "Log batch accepted for processing");
    assert!(v["batch_id"].as_str().unwrap().contains(':'));
    assert_eq!(headers["x-ratelimit-limit"], "100000");
    assert!(headers.contains_key("x-ratelimit-remaining"));
    assert_eq!(queue_marks(&c, &srv.base).await, (1, 2, 0));
    srv.stop().await;
}

#[tokio::test]
async fn metric_batch_accepts_any_case_of_metric_type_and_ignores_unknown_fields() {
    let dir = tempfile::tempdir().unwrap();
    let srv = InProcess::start(test_config(dir.path())).await;
    let c = client();
    let body = json!({"entries": [
        {"timestamp":"2026-11-27T10:00:00Z","name":"cpu","value":0.5,"metric_type":"GAUGE",
         "service":"api","host":"h","unit":"ratio","surprise":[1,2]},
        {"timestamp":"2026-11-27T10:00:00Z","name":"reqs","value":3,"metric_type":"counter",
         "service":"api","host":"h","attributes":{"code":"200","ok":true,"n":1.5}}
    ], "agent_version":"0.1.0", "also_unknown": true});
    let (status, _, v) = send(
        &c,
        &srv.url("/metrics"),
        &JSON_KEYED,
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["metrics_received"], 2);
    assert_eq!(v["message"], "Metric batch accepted for processing");
    assert_eq!(queue_marks(&c, &srv.base).await, (1, 0, 2));
    srv.stop().await;
}

#[tokio::test]
async fn bearer_token_authenticates_like_x_api_key() {
    let dir = tempfile::tempdir().unwrap();
    let srv = InProcess::start(test_config(dir.path())).await;
    let bearer = format!("Bearer {KEY}");
    let (status, _, _) = send(
        &client(),
        &srv.url("/logs"),
        &[
            ("content-type", "application/json"),
            ("authorization", &bearer),
        ],
        one_log(),
    )
    .await;
    assert_eq!(status, 202);
    srv.stop().await;
}

#[tokio::test]
async fn missing_or_wrong_key_is_401_and_enqueues_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let srv = InProcess::start(test_config(dir.path())).await;
    let c = client();
    let before = queue_marks(&c, &srv.base).await;
    let (s1, _, v1) = send(
        &c,
        &srv.url("/logs"),
        &[("content-type", "application/json")],
        one_log(),
    )
    .await;
    assert_eq!(s1, 401);
    assert!(v1["detail"].as_str().unwrap().contains("API key"));
    let (s2, _, v2) = send(
        &c,
        &srv.url("/metrics"),
        &[
            ("content-type", "application/json"),
            ("x-api-key", "test-kez"),
        ],
        one_log(),
    )
    .await;
    assert_eq!((s2, v2), (401, json!({"detail": "Invalid API key"})));
    let stats_status = c.get(srv.url("/stats")).send().await.unwrap().status();
    assert_eq!(stats_status, 401);
    assert_eq!(queue_marks(&c, &srv.base).await, before);
    srv.stop().await;
}

#[tokio::test]
async fn malformed_json_is_400_and_schema_errors_are_422_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let srv = InProcess::start(test_config(dir.path())).await;
    let c = client();
    let before = queue_marks(&c, &srv.base).await;

    let (s, _, v) = send(
        &c,
        &srv.url("/logs"),
        &JSON_KEYED,
        b"{\"entries\": [".to_vec(),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        v["detail"].as_str().unwrap().contains("Malformed JSON"),
        "{v}"
    );

    // One bad entry among good ones: the whole batch is refused.
    let mut bad = log_batch(&["ok-1".into(), "ok-2".into(), "ok-3".into(), "bad".into()]);
    bad["entries"][3]["level"] = json!("LOUD");
    let (s, _, v) = send(
        &c,
        &srv.url("/logs"),
        &JSON_KEYED,
        serde_json::to_vec(&bad).unwrap(),
    )
    .await;
    assert_eq!(s, 422);
    assert_eq!(v["errors"][0]["field"], "entries[3].level", "{v}");

    let mut missing = log_batch(&["x".into()]);
    missing["entries"][0]
        .as_object_mut()
        .unwrap()
        .remove("host");
    let (s, _, v) = send(
        &c,
        &srv.url("/logs"),
        &JSON_KEYED,
        serde_json::to_vec(&missing).unwrap(),
    )
    .await;
    assert_eq!(s, 422);
    assert_eq!(v["errors"][0]["field"], "entries[0].host", "{v}");

    let wrong_type = json!({"entries":[{"timestamp":"2026-11-27T10:00:00Z","name":"cpu","value":"high",
        "metric_type":"gauge","service":"s","host":"h"}]});
    let (s, _, v) = send(
        &c,
        &srv.url("/metrics"),
        &JSON_KEYED,
        serde_json::to_vec(&wrong_type).unwrap(),
    )
    .await;
    assert_eq!(s, 422);
    assert_eq!(v["errors"][0]["field"], "entries[0].value", "{v}");

    let (s, _, _) = send(
        &c,
        &srv.url("/logs"),
        &JSON_KEYED,
        b"{\"entries\": []}".to_vec(),
    )
    .await;
    assert_eq!(s, 422);

    assert_eq!(queue_marks(&c, &srv.base).await, before);
    srv.stop().await;
}

#[tokio::test]
async fn too_many_entries_is_422_and_oversized_message_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.server.max_batch_entries = 3;
    let srv = InProcess::start(cfg).await;
    let c = client();
    let ids: Vec<String> = (0..4).map(|i| i.to_string()).collect();
    let (s, _, v) = send(
        &c,
        &srv.url("/logs"),
        &JSON_KEYED,
        serde_json::to_vec(&log_batch(&ids)).unwrap(),
    )
    .await;
    assert_eq!(s, 422);
    assert_eq!(v["errors"][0]["field"], "entries");
    let huge = "x".repeat(64 * 1024 + 1);
    let (s, _, v) = send(
        &c,
        &srv.url("/logs"),
        &JSON_KEYED,
        serde_json::to_vec(&log_batch(&[huge])).unwrap(),
    )
    .await;
    assert_eq!(s, 422);
    assert_eq!(v["errors"][0]["field"], "entries[0].message");
    assert_eq!(queue_marks(&c, &srv.base).await, (0, 0, 0));
    srv.stop().await;
}

#[tokio::test]
async fn wrong_content_type_or_unknown_encoding_is_415() {
    let dir = tempfile::tempdir().unwrap();
    let srv = InProcess::start(test_config(dir.path())).await;
    let c = client();
    let (s, _, v) = send(
        &c,
        &srv.url("/logs"),
        &[("content-type", "text/plain"), ("x-api-key", KEY)],
        one_log(),
    )
    .await;
    assert_eq!(s, 415);
    assert!(v["detail"].as_str().unwrap().contains("Content-Type"));
    let (s, _, _) = send(&c, &srv.url("/logs"), &[("x-api-key", KEY)], one_log()).await;
    assert_eq!(s, 415);
    let (s, _, v) = send(&c, &srv.url("/logs"), &encoded("br"), one_log()).await;
    assert_eq!(s, 415);
    assert!(v["detail"].as_str().unwrap().contains("Content-Encoding"));
    assert_eq!(queue_marks(&c, &srv.base).await, (0, 0, 0));
    srv.stop().await;
}

#[tokio::test]
async fn gzip_in_any_case_and_zstd_bodies_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let srv = InProcess::start(test_config(dir.path())).await;
    let c = client();
    for enc in ["gzip", "GZIP"] {
        let (s, _, v) = send(&c, &srv.url("/logs"), &encoded(enc), gzip(&one_log())).await;
        assert_eq!(s, 202, "{enc}: {v}");
    }
    let (s, _, v) = send(
        &c,
        &srv.url("/logs"),
        &encoded("zstd"),
        zstd::encode_all(&one_log()[..], 3).unwrap(),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(queue_marks(&c, &srv.base).await, (3, 3, 0));
    srv.stop().await;
}

#[tokio::test]
async fn body_over_the_limit_is_413_on_the_wire_and_after_decompression() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.server.max_body_bytes = 64 * 1024;
    let srv = InProcess::start(cfg).await;
    let c = client();
    let ids: Vec<String> = (0..600).map(|i| format!("entry-{i}")).collect();
    let big = serde_json::to_vec(&log_batch(&ids)).unwrap();
    assert!(big.len() > 64 * 1024);
    let (s, _, v) = send(&c, &srv.url("/logs"), &JSON_KEYED, big.clone()).await;
    assert_eq!(s, 413);
    assert!(v["detail"].as_str().unwrap().contains("65536"), "{v}");

    // Compressed it fits on the wire; inflated it does not.
    let small = gzip(&big);
    assert!(small.len() < 64 * 1024);
    let (s, _, v) = send(&c, &srv.url("/logs"), &encoded("gzip"), small).await;
    assert_eq!(s, 413);
    assert!(
        v["detail"].as_str().unwrap().contains("decompression"),
        "{v}"
    );

    // A gzip bomb: 64 MiB of zeros in ~64 KiB, under the wire limit; it is
    // refused after inflating no more than the limit.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..60 {
        e.write_all(&zeros).unwrap();
    }
    let bomb = e.finish().unwrap();
    assert!(bomb.len() < 64 * 1024, "bomb is {} bytes", bomb.len());
    let (s, _, v) = send(&c, &srv.url("/logs"), &encoded("gzip"), bomb).await;
    assert_eq!(s, 413);
    assert!(
        v["detail"].as_str().unwrap().contains("decompression"),
        "{v}"
    );
    assert_eq!(queue_marks(&c, &srv.base).await, (0, 0, 0));
    srv.stop().await;
}

/// Sends a chunked request (no Content-Length) over a raw socket; returns
/// the status code.
async fn post_chunked(base: &str, body: &[u8]) -> u16 {
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST /logs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         X-API-Key: {KEY}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(1000) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    s.write_all(&req).await.unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp).await;
    let text = String::from_utf8_lossy(&resp);
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn chunked_body_without_content_length_is_accepted_and_limited() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.server.max_body_bytes = 16 * 1024;
    let srv = InProcess::start(cfg).await;
    let c = client();
    let ids: Vec<String> = (0..20).map(|i| format!("chunked-{i}")).collect();
    assert_eq!(
        post_chunked(&srv.base, &serde_json::to_vec(&log_batch(&ids)).unwrap()).await,
        202
    );
    let many: Vec<String> = (0..400).map(|i| format!("chunked-{i}")).collect();
    assert_eq!(
        post_chunked(&srv.base, &serde_json::to_vec(&log_batch(&many)).unwrap()).await,
        413
    );
    assert_eq!(queue_marks(&c, &srv.base).await, (1, 20, 0));
    srv.stop().await;
}

#[tokio::test]
async fn over_the_rate_is_429_with_retry_after_and_stats_stay_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.rate_limit.requests_per_second = 0.2;
    cfg.rate_limit.burst = 2;
    let srv = InProcess::start(cfg).await;
    let c = client();
    let (s, h, _) = send(&c, &srv.url("/logs"), &JSON_KEYED, one_log()).await;
    assert_eq!(
        (s, &h["x-ratelimit-remaining"]),
        (202, &"1".parse().unwrap())
    );
    let (s, _, _) = send(&c, &srv.url("/logs"), &JSON_KEYED, one_log()).await;
    assert_eq!(s, 202);
    let (s, h, v) = send(&c, &srv.url("/metrics"), &JSON_KEYED, one_log()).await;
    assert_eq!(s, 429);
    // One token takes 5 s at 0.2/s; a slow machine may have refilled part of
    // it since the burst was spent, so the wait is 1..=5 whole seconds.
    let wait: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=5).contains(&wait), "Retry-After {wait}");
    assert_eq!(h["x-ratelimit-limit"], "2");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    assert_eq!(
        v,
        json!({"detail": format!("Rate limit exceeded. Try again in {wait} seconds.")})
    );
    // /stats needs a key but is not rate-limited.
    for _ in 0..5 {
        assert_eq!(queue_marks(&c, &srv.base).await, (2, 2, 0));
    }
    let prom = prometheus(&c, &srv.base).await;
    assert!(
        prom.contains("edge_ingester_rate_limited_total 1"),
        "{prom}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn full_queue_rejects_with_503_or_drops_oldest_as_configured() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.queue.max_bytes = 1_000;
    let srv = InProcess::start(cfg).await;
    let c = client();
    let mut accepted = 0;
    let mut refused = None;
    for i in 0..20 {
        let body = serde_json::to_vec(&log_batch(&[format!("fill-{i}")])).unwrap();
        let (s, h, v) = send(&c, &srv.url("/logs"), &JSON_KEYED, body).await;
        match s {
            202 => accepted += 1,
            503 => {
                refused = Some((h, v));
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    let (h, v) = refused.expect("the queue never filled");
    assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert!(v["detail"].as_str().unwrap().contains("full"), "{v}");
    assert_eq!(queue_marks(&c, &srv.base).await, (accepted, accepted, 0));
    srv.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.queue.max_bytes = 1_000;
    cfg.queue.when_full = edge_ingester::config::WhenFull::DropOldest;
    let srv = InProcess::start(cfg).await;
    for i in 0..20 {
        let body = serde_json::to_vec(&log_batch(&[format!("fill-{i}")])).unwrap();
        assert_eq!(send(&c, &srv.url("/logs"), &JSON_KEYED, body).await.0, 202);
    }
    let s = stats(&c, &srv.base).await;
    let depth = s["queue"]["depth_batches"].as_u64().unwrap();
    let dropped = s["queue"]["dropped_batches"].as_u64().unwrap();
    assert_eq!(depth + dropped, 20, "{s}");
    assert!(
        dropped > 0 && s["queue"]["bytes"].as_u64().unwrap() <= 1_000,
        "{s}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn ready_turns_503_above_the_high_water_mark_and_health_stays_200() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.queue.max_bytes = 2_000;
    cfg.queue.high_water_ratio = 0.01;
    let srv = InProcess::start(cfg).await;
    let c = client();
    let ready = c.get(srv.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.unwrap(),
        json!({"status": "ready"})
    );
    assert_eq!(
        send(&c, &srv.url("/logs"), &JSON_KEYED, one_log()).await.0,
        202
    );
    let ready = c.get(srv.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let v: Value = ready.json().await.unwrap();
    assert_eq!(v["status"], "not_ready");
    assert!(v["reason"].as_str().unwrap().contains("high-water"), "{v}");
    let health: Value = c
        .get(srv.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["service"], "ingestion-service");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    srv.stop().await;
}

#[tokio::test]
async fn root_docs_and_openapi_describe_the_real_api() {
    let dir = tempfile::tempdir().unwrap();
    let srv = InProcess::start(test_config(dir.path())).await;
    let c = client();
    let root: Value = c
        .get(srv.url("/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(root["docs_url"], "/docs");
    assert!(root["endpoints"]
        .as_array()
        .unwrap()
        .contains(&json!("POST /logs")));
    let docs = c.get(srv.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    let page = docs.text().await.unwrap();
    assert!(
        page.contains("SwaggerUIBundle"),
        "{}",
        &page[..page.len().min(200)]
    );
    assert!(page.contains("POST /logs") || page.contains("\"/logs\""));
    let spec: Value = c
        .get(srv.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let scheme = &spec["components"]["securitySchemes"]["ApiKeyHeader"];
    assert_eq!(scheme["name"], "X-API-Key");
    assert_eq!(scheme["in"], "header");
    let post_logs = &spec["paths"]["/logs"]["post"];
    for code in ["202", "400", "401", "413", "415", "422", "429", "503"] {
        assert!(
            post_logs["responses"][code].is_object(),
            "missing {code} in /logs"
        );
    }
    let schemas = &spec["components"]["schemas"];
    assert!(schemas["LogEntry"]["properties"]["timestamp"].is_object());
    assert!(schemas["MetricEntry"]["properties"]["metric_type"].is_object());
    let unknown = c.get(srv.url("/nope")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    assert!(unknown.json::<Value>().await.unwrap()["detail"].is_string());
    srv.stop().await;
}

#[tokio::test]
async fn stats_show_the_failing_sink_and_prometheus_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.forwarder.initial_backoff_ms = 10;
    cfg.forwarder.max_backoff_ms = 20;
    cfg.forwarder.breaker_failure_threshold = 2;
    cfg.forwarder.breaker_open_ms = 60_000;
    let srv = InProcess::start(cfg).await;
    let c = client();
    assert_eq!(
        send(&c, &srv.url("/logs"), &JSON_KEYED, one_log()).await.0,
        202
    );
    let s = wait_for_stats(&c, &srv.base, Duration::from_secs(10), |s| {
        s["forwarder"]["circuit"] == "open"
    })
    .await;
    assert_eq!(s["producer_type"], "MockKafkaProducer");
    assert_eq!(s["forwarder"]["consecutive_failures"], 2);
    assert!(s["forwarder"]["last_error"]
        .as_str()
        .unwrap()
        .contains("mock"));
    assert!(s["forwarder"]["next_retry_in_seconds"].as_f64().unwrap() > 50.0);
    assert!(s["queue"]["oldest_age_seconds"].as_f64().is_some());
    assert_eq!(s["logs_sent"], 0);
    let prom = prometheus(&c, &srv.base).await;
    for name in [
        "edge_ingester_queue_depth_batches 1",
        "edge_ingester_queue_depth_entries 1",
        "edge_ingester_queue_bytes ",
        "edge_ingester_queue_oldest_age_seconds ",
        "edge_ingester_entries_received_total{kind=\"logs\"} 1",
        "edge_ingester_entries_sent_total{kind=\"logs\"} 0",
        "edge_ingester_http_requests_total{path=\"/logs\",status=\"202\"} 1",
        "edge_ingester_http_request_duration_seconds_bucket{le=\"+Inf\"}",
        "edge_ingester_circuit_state 2",
        "edge_ingester_forward_errors_total 2",
        "edge_ingester_dead_letter_batches 0",
    ] {
        assert!(prom.contains(name), "missing `{name}` in:\n{prom}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn working_sink_captures_exactly_the_kafka_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let capture = dir.path().join("capture.jsonl");
    cfg.mock.fail = edge_ingester::config::MockFail::Never;
    cfg.mock.capture_path = capture.clone();
    let srv = InProcess::start(cfg).await;
    let c = client();
    let body = json!({"entries":[{"timestamp":"2026-11-27T12:00:00+02:00","level":"Fatal",
        "message":"boom","service":"pay","host":"h1","attributes":{"k":"v"}}],"agent_version":"9.9"});
    assert_eq!(
        send(
            &c,
            &srv.url("/logs"),
            &JSON_KEYED,
            serde_json::to_vec(&body).unwrap()
        )
        .await
        .0,
        202
    );
    wait_for_stats(&c, &srv.base, Duration::from_secs(10), |s| {
        s["logs_sent"] == 1
    })
    .await;
    let line = std::fs::read_to_string(&capture).unwrap();
    let v: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["timestamp"], "2026-11-27T10:00:00Z");
    assert_eq!(v["level"], "CRITICAL");
    assert_eq!(v["service"], "pay");
    assert_eq!(v["attributes"], json!({"k":"v"}));
    assert_eq!(v["agent_version"], "9.9");
    assert!(v["received_at"].as_str().unwrap().ends_with('Z'));
    let s = stats(&c, &srv.base).await;
    assert_eq!(s["queue"]["depth_batches"], 0);
    assert!(s["forwarder"]["last_success_at"].is_string());
    srv.stop().await;
}

#[tokio::test]
async fn slow_body_is_cut_off_with_408() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.server.request_timeout_ms = 300;
    let srv = InProcess::start(cfg).await;
    let addr = srv.base.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /logs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         X-API-Key: {KEY}\r\nContent-Length: 100\r\n\r\n{{\"entries\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("no answer to a stalled body")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    srv.stop().await;
}
