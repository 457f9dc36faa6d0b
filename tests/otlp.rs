//! OTLP/HTTP ingest (SPEC §8) driven over HTTP: what reaches the sink, the
//! answers OTLP clients read, and bad input refused with nothing stored.
//! (`otlp_sdk.rs` drives the same endpoints with the OpenTelemetry SDK.)

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::*;
use edge_ingester::config::{Config, MockFail};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::{json, Value};

/// `google.rpc.Status` as an OTLP client decodes it.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

const PROTOBUF: &str = "application/x-protobuf";

fn kv(key: &str, v: Any) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        key_strindex: 0,
    }
}

fn s(v: &str) -> Any {
    Any::StringValue(v.into())
}

fn logs_request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s("checkout")),
                    kv("host.name", s("edge-3")),
                    kv("deployment", s("prod")),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

fn record(body: Any, severity: i32) -> LogRecord {
    LogRecord {
        time_unix_nano: 1_764_000_000_000_000_000,
        severity_number: severity,
        body: Some(AnyValue { value: Some(body) }),
        attributes: vec![kv("user", s("u1")), kv("deployment", s("canary"))],
        trace_id: vec![0x5b; 16],
        span_id: vec![0xee; 8],
        ..Default::default()
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

async fn post(
    c: &reqwest::Client,
    url: &str,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = c
        .post(url)
        .header("user-agent", "test-exporter/1.0")
        .header("content-type", content_type)
        .header("x-api-key", KEY);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    req.body(body).send().await.unwrap()
}

/// Exports `req` in protobuf, expects the 200, and decodes the answer.
async fn export_logs(
    c: &reqwest::Client,
    base: &str,
    req: &ExportLogsServiceRequest,
) -> ExportLogsServiceResponse {
    let url = format!("{base}/v1/logs");
    let resp = post(c, &url, PROTOBUF, None, req.encode_to_vec()).await;
    assert_eq!(resp.status(), 200);
    ExportLogsServiceResponse::decode(resp.bytes().await.unwrap()).unwrap()
}

/// A server whose sink delivers at once into `capture`.
fn capturing_config(dir: &Path) -> Config {
    let mut c = test_config(dir);
    c.mock.fail = MockFail::Never;
    c.mock.capture_path = dir.join("capture.jsonl");
    c.forwarder.initial_backoff_ms = 10;
    c.forwarder.max_backoff_ms = 50;
    c
}

/// Every captured Kafka value, once `n` have arrived.
async fn captured(c: &reqwest::Client, base: &str, path: &Path, kind: &str, n: u64) -> Vec<Value> {
    let sent = format!("{kind}_sent");
    wait_for_stats(c, base, Duration::from_secs(20), |s| {
        s["forwarder"][&sent].as_u64().or(s[&sent].as_u64()) >= Some(n)
    })
    .await;
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn protobuf_logs_reach_the_sink_mapped_and_the_answer_is_protobuf() {
    let dir = tempfile::tempdir().unwrap();
    let config = capturing_config(dir.path());
    let capture = config.mock.capture_path.clone();
    let server = InProcess::start(config).await;
    let c = client();
    let body = Any::KvlistValue(KeyValueList {
        values: vec![kv("event", s("paid")), kv("cents", Any::IntValue(1250))],
    });
    let req = logs_request(vec![record(s("card declined"), 17), record(body, 9)]);
    let resp = post(
        &c,
        &server.url("/v1/logs"),
        PROTOBUF,
        Some("gzip"),
        gzip(&req.encode_to_vec()),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], PROTOBUF);
    let answer = ExportLogsServiceResponse::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(answer.partial_success, None, "full success leaves it unset");

    let values = captured(&c, &server.base, &capture, "logs", 2).await;
    assert_eq!(values.len(), 2);
    let first = &values[0];
    assert_eq!(first["message"], "card declined");
    assert_eq!(first["level"], "ERROR");
    assert_eq!(first["service"], "checkout");
    assert_eq!(first["host"], "edge-3");
    assert_eq!(first["timestamp"], "2025-11-24T16:00:00Z");
    assert_eq!(first["attributes"]["deployment"], "canary", "record wins");
    assert_eq!(first["attributes"]["user"], "u1");
    assert_eq!(first["attributes"]["service.name"], "checkout");
    assert_eq!(first["attributes"]["trace_id"], "5b".repeat(16));
    assert_eq!(first["attributes"]["span_id"], "ee".repeat(8));
    assert!(first["received_at"].is_string());
    assert_eq!(
        first["agent_version"], "test-exporter/1.0",
        "the User-Agent"
    );
    assert_eq!(values[1]["message"], r#"{"event":"paid","cents":1250}"#);
    assert_eq!(values[1]["level"], "INFO");
    let s = stats(&c, &server.base).await;
    assert_eq!(
        s["logs_received"]
            .as_u64()
            .or(s["ingest"]["logs_received"].as_u64()),
        Some(2)
    );
    server.stop().await;
}

#[tokio::test]
async fn otlp_json_metrics_in_zstd_map_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    let config = capturing_config(dir.path());
    let capture = config.mock.capture_path.clone();
    let server = InProcess::start(config).await;
    let c = client();
    let t = "1764000000000000000";
    let body = json!({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
        "scopeMetrics": [{"scope": {"name": "m"}, "metrics": [
            {"name": "temp", "unit": "Cel", "gauge": {"dataPoints": [{"asDouble": 21.5, "timeUnixNano": t}]}},
            {"name": "reqs", "sum": {"isMonotonic": true, "aggregationTemporality": 2,
                "dataPoints": [{"asInt": "42", "timeUnixNano": t, "attributes": [{"key": "route", "value": {"stringValue": "/a"}}]}]}},
            {"name": "inflight", "sum": {"isMonotonic": false, "dataPoints": [{"asInt": 3, "timeUnixNano": t}]}},
            {"name": "lat", "histogram": {"aggregationTemporality": 2, "dataPoints": [
                {"count": "3", "sum": 38, "bucketCounts": ["1", "1", "1"], "explicitBounds": [5, 10], "timeUnixNano": t}]}},
            {"name": "size", "exponentialHistogram": {"aggregationTemporality": 2, "dataPoints": [
                {"count": "4", "sum": 10, "scale": 1, "positive": {"offset": 0, "bucketCounts": ["4"]}, "timeUnixNano": t}]}},
            {"name": "rtt", "summary": {"dataPoints": [{"count": "2", "sum": 3, "timeUnixNano": t,
                "quantileValues": [{"quantile": 0.5, "value": 1}, {"quantile": 0.99, "value": 2}]}]}}
        ]}]
    }]});
    let zstd = zstd::encode_all(&serde_json::to_vec(&body).unwrap()[..], 3).unwrap();
    let resp = post(
        &c,
        &server.url("/v1/metrics"),
        "application/json",
        Some("zstd"),
        zstd,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({}));

    let values = captured(&c, &server.base, &capture, "metrics", 14).await;
    let rows: Vec<(String, f64, String, Value)> = values
        .iter()
        .map(|v| {
            let label = v["attributes"]
                .get("le")
                .or(v["attributes"].get("quantile"))
                .cloned();
            (
                v["name"].as_str().unwrap().to_string(),
                v["value"].as_f64().unwrap(),
                v["metric_type"].as_str().unwrap().to_string(),
                label.unwrap_or(Value::Null),
            )
        })
        .collect();
    let want = [
        ("temp", 21.5, "gauge", Value::Null),
        ("reqs", 42.0, "counter", Value::Null),
        ("inflight", 3.0, "gauge", Value::Null),
        ("lat_count", 3.0, "counter", Value::Null),
        ("lat_sum", 38.0, "counter", Value::Null),
        ("lat_bucket", 1.0, "counter", json!("5")),
        ("lat_bucket", 2.0, "counter", json!("10")),
        ("lat_bucket", 3.0, "counter", json!("+Inf")),
        ("size_count", 4.0, "counter", Value::Null),
        ("size_sum", 10.0, "counter", Value::Null),
        ("rtt", 1.0, "gauge", json!("0.5")),
        ("rtt", 2.0, "gauge", json!("0.99")),
        ("rtt_count", 2.0, "counter", Value::Null),
        ("rtt_sum", 3.0, "counter", Value::Null),
    ];
    let want: Vec<_> = want
        .into_iter()
        .map(|(n, v, t, l)| (n.to_string(), v, t.to_string(), l))
        .collect();
    assert_eq!(rows, want);
    assert_eq!(values[0]["unit"], "Cel");
    assert_eq!(values[0]["service"], "api");
    assert_eq!(values[0]["host"], "unknown");
    assert_eq!(values[1]["attributes"]["route"], "/a");
    server.stop().await;
}

#[tokio::test]
async fn records_that_cannot_be_mapped_are_counted_in_partial_success_and_the_rest_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(test_config(dir.path())).await;
    let c = client();
    let huge = record(s(&"x".repeat(70_000)), 9);
    let req = logs_request(vec![record(s("ok"), 9), huge.clone()]);
    let answer = export_logs(&c, &server.base, &req).await;
    let partial = answer.partial_success.expect("partial_success set");
    assert_eq!(partial.rejected_log_records, 1);
    assert!(
        partial
            .error_message
            .contains("logRecords[1]: body is 70000 bytes"),
        "{}",
        partial.error_message
    );

    // The same in OTLP JSON: the count as a string, keys in lowerCamelCase.
    let json_req = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"body": {"stringValue": "ok"}},
        {"body": {"stringValue": "x".repeat(70_000)}}]}]}]});
    let resp = post(
        &c,
        &server.url("/v1/logs"),
        "application/json",
        None,
        serde_json::to_vec(&json_req).unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["partialSuccess"]["rejectedLogRecords"], "1");
    assert!(answer["partialSuccess"]["errorMessage"]
        .as_str()
        .unwrap()
        .contains("65536"));

    // Nothing mappable: 200, all counted, nothing stored.
    let answer = export_logs(&c, &server.base, &logs_request(vec![huge])).await;
    assert_eq!(answer.partial_success.unwrap().rejected_log_records, 1);

    let s = stats(&c, &server.base).await;
    assert_eq!(s["queue"]["depth_batches"], 2, "{s}");
    assert_eq!(s["queue"]["depth_entries"], 2, "{s}");
    server.stop().await;
}

/// A protobuf depth bomb: `n` AnyValues nested in arrays, as a log body,
/// built inside out (bytes reversed, so it is linear).
fn nested_arrays(n: usize) -> Vec<u8> {
    fn varint_rev(out: &mut Vec<u8>, mut v: usize) {
        let mut bytes = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                bytes.push(b);
                break;
            }
            bytes.push(b | 0x80);
        }
        out.extend(bytes.iter().rev());
    }
    fn wrap(rev: &mut Vec<u8>, tag: u8) {
        let len = rev.len();
        varint_rev(rev, len);
        rev.push(tag);
    }
    let mut rev = Vec::new();
    for _ in 0..n {
        wrap(&mut rev, 0x0a); // ArrayValue.values = 1
        wrap(&mut rev, 0x2a); // AnyValue.array_value = 5
    }
    wrap(&mut rev, 0x2a); // LogRecord.body = 5
    wrap(&mut rev, 0x12); // ScopeLogs.log_records = 2
    wrap(&mut rev, 0x12); // ResourceLogs.scope_logs = 2
    wrap(&mut rev, 0x0a); // ExportLogsServiceRequest.resource_logs = 1
    rev.reverse();
    rev
}

#[tokio::test]
async fn bad_bodies_are_400_with_a_status_in_the_request_encoding_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(test_config(dir.path())).await;
    let c = client();
    let good = logs_request(vec![record(s("ok"), 9)]).encode_to_vec();
    let bomb = nested_arrays(1_000_000);
    assert!(
        bomb.len() > 9_000_000 && bomb.len() < 10 << 20,
        "{}",
        bomb.len()
    );
    let json_bomb = format!(
        r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"body":{}{}}}]}}]}}]}}"#,
        r#"{"arrayValue":{"values":["#.repeat(340_000),
        "]}}".repeat(340_000)
    );
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "truncated protobuf",
            PROTOBUF,
            good[..good.len() - 3].to_vec(),
            "protobuf",
        ),
        ("empty protobuf", PROTOBUF, Vec::new(), "empty body"),
        ("empty JSON", "application/json", Vec::new(), "empty body"),
        (
            "JSON of wrong types",
            "application/json",
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":true}]}]}]}"#
                .to_vec(),
            "resourceLogs[0].scopeLogs[0].logRecords[0].timeUnixNano",
        ),
        (
            "JSON array",
            "application/json",
            b"[]".to_vec(),
            "JSON object",
        ),
        ("protobuf depth bomb", PROTOBUF, bomb, "recursion limit"),
        (
            "JSON depth bomb",
            "application/json",
            json_bomb.into_bytes(),
            "recursion limit",
        ),
    ];
    for (what, ct, body, says) in cases {
        let resp = post(&c, &server.url("/v1/logs"), ct, None, body).await;
        assert_eq!(resp.status(), 400, "{what}");
        assert_eq!(resp.headers()["content-type"], ct, "{what}");
        let bytes = resp.bytes().await.unwrap();
        let (code, message) = if ct == PROTOBUF {
            let st = RpcStatus::decode(bytes).unwrap();
            (st.code, st.message)
        } else {
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            (
                v["code"].as_i64().unwrap() as i32,
                v["message"].as_str().unwrap().to_string(),
            )
        };
        assert_eq!(code, 3, "{what}: INVALID_ARGUMENT");
        assert!(message.contains(says), "{what}: {message}");
    }
    let s = stats(&c, &server.base).await;
    assert_eq!(s["queue"]["depth_batches"], 0, "{s}");
    // Still serving.
    let resp = post(&c, &server.url("/v1/logs"), PROTOBUF, None, good).await;
    assert_eq!(resp.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn small_requests_that_would_take_gigabytes_are_refused_or_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.server.max_batch_entries = 20_000;
    let server = InProcess::start(config).await;
    let c = client();
    // 1,500,000 empty records: 3 MB of protobuf, ~400 MB decoded.
    let empties = logs_request(vec![LogRecord::default(); 1_500_000]).encode_to_vec();
    let resp = post(&c, &server.url("/v1/logs"), PROTOBUF, None, empties.clone()).await;
    assert_eq!(resp.status(), 413);
    let st = RpcStatus::decode(resp.bytes().await.unwrap()).unwrap();
    assert!(st.message.contains("bytes once decoded"), "{}", st.message);
    // A group field (prost skips it unseen) cannot hide the records from
    // the count: the body is refused.
    let hidden = [&[0x7b, 0x7c][..], &empties].concat();
    let resp = post(&c, &server.url("/v1/logs"), PROTOBUF, None, hidden).await;
    assert_eq!(resp.status(), 400);
    // Nor can records written as arrays, which serde reads as structs.
    let as_arrays = format!(
        r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{}[]]}}]}}]}}"#,
        "[],".repeat(500_000)
    );
    let resp = post(
        &c,
        &server.url("/v1/logs"),
        "application/json",
        None,
        as_arrays.into_bytes(),
    )
    .await;
    assert_eq!(resp.status(), 413);
    // The same in JSON.
    let json_empties = format!(
        r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{}{{}}]}}]}}]}}"#,
        "{},".repeat(1_200_000)
    );
    let resp = post(
        &c,
        &server.url("/v1/logs"),
        "application/json",
        None,
        json_empties.into_bytes(),
    )
    .await;
    assert_eq!(resp.status(), 413);
    // A 100 kB resource attribute copied into 10,000 records would be 1 GB
    // of entries: what fits in max_body_bytes (10 MiB) is stored, the rest
    // counted in partial_success.
    let mut req = logs_request(vec![LogRecord::default(); 10_000]);
    req.resource_logs[0]
        .resource
        .as_mut()
        .unwrap()
        .attributes
        .push(kv("blob", s(&"x".repeat(100_000))));
    let answer = export_logs(&c, &server.base, &req).await;
    let partial = answer.partial_success.unwrap();
    assert!(
        partial.error_message.contains("max_body_bytes"),
        "{}",
        partial.error_message
    );
    let s = stats(&c, &server.base).await;
    let stored = s["queue"]["depth_entries"].as_i64().unwrap();
    assert_eq!(stored + partial.rejected_log_records, 10_000);
    assert!(
        (90..=105).contains(&stored),
        "{stored} entries of ~100 kB each in 10 MiB"
    );
    server.stop().await;
}

#[tokio::test]
async fn refusals_carry_a_status_and_retry_after_where_clients_retry() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.rate_limit.requests_per_second = 0.001;
    config.rate_limit.burst = 2;
    config.server.max_body_bytes = 64 * 1024;
    let server = InProcess::start(config).await;
    let c = client();
    let body = logs_request(vec![record(s("ok"), 9)]).encode_to_vec();

    // 401, in protobuf because the request was.
    let resp = c
        .post(server.url("/v1/logs"))
        .header("content-type", PROTOBUF)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let st = RpcStatus::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(st.code, 16);
    assert!(st.message.contains("API key"));

    // 415, in JSON: the request's type is not one we speak.
    let resp = post(
        &c,
        &server.url("/v1/logs"),
        "text/plain",
        None,
        b"hi".to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 415);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("application/x-protobuf"),
        "{v}"
    );

    // 413 on the decompressed size (a gzip bomb of a valid request).
    let mut padded = logs_request(vec![
        record(s(&"a".repeat(60_000)), 9),
        record(s(&"b".repeat(60_000)), 9),
    ]);
    padded.resource_logs[0].schema_url = String::new();
    let resp = post(
        &c,
        &server.url("/v1/logs"),
        PROTOBUF,
        Some("gzip"),
        gzip(&padded.encode_to_vec()),
    )
    .await;
    assert_eq!(resp.status(), 413);
    let st = RpcStatus::decode(resp.bytes().await.unwrap()).unwrap();
    assert!(st.message.contains("after decompression"), "{}", st.message);

    // The burst of 2 is spent by now (415 and 413 were keyed): 429.
    let resp = post(&c, &server.url("/v1/logs"), PROTOBUF, None, body).await;
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "0");
    let st = RpcStatus::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(st.code, 8);
    assert!(st.message.contains("Rate limit"));
    let s = stats(&c, &server.base).await;
    assert_eq!(s["queue"]["depth_batches"], 0);
    server.stop().await;
}

#[tokio::test]
async fn an_idempotent_retry_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(test_config(dir.path())).await;
    let c = client();
    let body = logs_request(vec![record(s("once"), 9)]).encode_to_vec();
    for _ in 0..3 {
        let resp = c
            .post(server.url("/v1/logs"))
            .header("content-type", PROTOBUF)
            .header("x-api-key", KEY)
            .header("idempotency-key", "export-1")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let s = stats(&c, &server.base).await;
    assert_eq!(s["queue"]["depth_entries"], 1, "{s}");
    server.stop().await;
}

#[tokio::test]
async fn what_a_stock_agent_sends_to_our_json_endpoints_gets_a_422_that_points_to_otlp() {
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(test_config(dir.path())).await;
    let c = client();
    // Fluent Bit's `http` output: `format json` is an array of records,
    // `format json_lines` one record per line.
    let fluent = [
        (r#"[{"date":1764000000.0,"log":"hello"}]"#, "a JSON array"),
        (
            "{\"date\":1764000000.0,\"log\":\"a\"}\n{\"date\":1764000000.1,\"log\":\"b\"}\n",
            "NDJSON",
        ),
        ("{\"date\":1764000000.0,\"log\":\"a\"}\n", "a single record"),
    ];
    for (path, otlp) in [("/logs", "/v1/logs"), ("/metrics", "/v1/metrics")] {
        for (body, shape) in fluent {
            let resp = c
                .post(server.url(path))
                .header("content-type", "application/json")
                .header("x-api-key", KEY)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 422, "{path} {shape}");
            let v: Value = resp.json().await.unwrap();
            let detail = v["detail"].as_str().unwrap();
            assert!(detail.contains(shape), "{detail}");
            assert!(detail.contains(r#"{"entries": [...]}"#), "{detail}");
            assert!(detail.contains(otlp), "{detail}");
            assert_eq!(v["errors"][0]["field"], "body");
        }
    }
    // Not every malformed body is NDJSON: a batch with a stray brace is
    // still a 400, as before.
    let mut stray = serde_json::to_vec(&log_batch(&["x".to_string()])).unwrap();
    stray.extend_from_slice(b"}");
    for body in [stray, b"{\"entries\":[]} x".to_vec()] {
        let resp = c
            .post(server.url("/logs"))
            .header("content-type", "application/json")
            .header("x-api-key", KEY)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
    }
    let s = stats(&c, &server.base).await;
    assert_eq!(s["queue"]["depth_batches"], 0);
    server.stop().await;
}

#[tokio::test]
async fn the_openapi_document_lists_both_endpoints_and_both_encodings() {
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(test_config(dir.path())).await;
    let doc: Value = client()
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in ["/v1/logs", "/v1/metrics"] {
        let op = &doc["paths"][path]["post"];
        let content = &op["requestBody"]["content"];
        assert_eq!(content[PROTOBUF]["schema"]["format"], "binary", "{path}");
        assert!(content["application/json"]["schema"].is_object(), "{path}");
        for status in ["200", "400", "401", "413", "415", "429", "503"] {
            assert!(op["responses"][status].is_object(), "{path} {status}");
        }
        assert!(op["responses"]["429"]["headers"]["Retry-After"].is_object());
    }
    server.stop().await;
}
