//! The `otlp` workload: W1 against its OTLP twin — the same entries as an
//! OTLP/protobuf `ExportLogsServiceRequest` to `POST /v1/logs` — in
//! alternating rounds, each on a fresh server with the mock sink failing
//! (every batch stays queued, synced before the answer, as in W1).
//! Alternating on one machine in one run is what makes the ratio
//! meaningful on a shared, noisy host.

use std::path::Path;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;

use super::{
    drive, entry_key, entry_message, mock_failing_sink, wait_ready, BenchArgs, Load, Payload,
    Server, JSON_LOGS, OTLP_LOGS, WARM_UP,
};

/// Rounds of each payload.
const ROUNDS: usize = 3;

/// `n` log records equal to `log_batch_body(n, salt)`'s entries: the same
/// times, severities, messages and attributes; service and host as resource
/// attributes, one resource per service, as an SDK would send them.
pub fn log_request_body(n: usize, salt: usize) -> Vec<u8> {
    const SEVERITIES: [i32; 5] = [5, 9, 9, 13, 17];
    // 2026-11-27T10:00:00Z
    const BASE_NS: u64 = 1_795_773_600 * 1_000_000_000;
    let kv = |key: &str, value: Value| KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    };
    let mut by_service: Vec<Vec<LogRecord>> = vec![Vec::new(); 8];
    for i in 0..n {
        let k = entry_key(salt, i);
        let secs = ((k / 60) % 60) * 60 + k % 60;
        by_service[k % 8].push(LogRecord {
            time_unix_nano: BASE_NS + secs as u64 * 1_000_000_000 + (k % 1000) as u64 * 1_000_000,
            severity_number: SEVERITIES[k % SEVERITIES.len()],
            body: Some(AnyValue {
                value: Some(Value::StringValue(entry_message(k))),
            }),
            attributes: vec![
                kv("region", Value::StringValue("eu-west".into())),
                kv("attempt", Value::IntValue((k % 3) as i64)),
                kv("cached", Value::BoolValue(k.is_multiple_of(2))),
            ],
            ..Default::default()
        });
    }
    let resource_logs = by_service
        .into_iter()
        .enumerate()
        .filter(|(_, records)| !records.is_empty())
        .map(|(svc, records)| ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", Value::StringValue(format!("svc-{svc}"))),
                    kv(
                        "host.name",
                        Value::StringValue(format!("edge-{:03}", salt % 32)),
                    ),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            schema_url: String::new(),
        })
        .collect();
    ExportLogsServiceRequest { resource_logs }.encode_to_vec()
}

async fn round(
    args: &BenchArgs,
    exe: &Path,
    dir: &Path,
    payload: Payload,
) -> anyhow::Result<(Load, f64)> {
    let _ = std::fs::remove_dir_all(dir.join("queue"));
    let mut server = Server::start(exe, dir, &mock_failing_sink())?;
    wait_ready(&reqwest::Client::new(), &server.base).await?;
    let load = drive(
        &server.base,
        payload,
        args.clients,
        args.batch,
        WARM_UP,
        Duration::from_secs(args.seconds),
        None,
        None,
    )
    .await;
    let peak_rss = server.rss_mb("VmHWM:");
    server.stop();
    Ok((load?, peak_rss))
}

pub async fn run(args: &BenchArgs, exe: &Path, dir: &Path) -> anyhow::Result<String> {
    let mut out = format!(
        "workload OTLP: {} clients, {} entries/request, {} s per round, {ROUNDS} rounds \
         each alternating, mock sink failing\n",
        args.clients, args.batch, args.seconds
    );
    let (mut json, mut otlp) = (Vec::new(), Vec::new());
    for r in 0..ROUNDS {
        for (name, payload, rates) in [
            ("W1 JSON /logs      ", JSON_LOGS, &mut json),
            ("OTLP proto /v1/logs", OTLP_LOGS, &mut otlp),
        ] {
            let (load, rss) = round(args, exe, dir, payload).await?;
            out += &format!(
                "  round {}: {name}: {:>7.0} entries/s, p50 {:.2} ms, p99 {:.2} ms, refused {}, peak RSS {:.1} MB\n",
                r + 1,
                load.rate(),
                load.pct(0.5),
                load.pct(0.99),
                load.refused,
                rss
            );
            rates.push(load.rate());
        }
    }
    let (j, o) = (median(&mut json), median(&mut otlp));
    out += &format!(
        "median: W1 {j:.0} entries/s, OTLP/protobuf {o:.0} entries/s: {:.0}% of W1 (target >= 90%)\n\
         request bodies: JSON {} B, OTLP protobuf {} B for {} entries\n",
        100.0 * o / j,
        (JSON_LOGS.body)(args.batch, 0).len(),
        (OTLP_LOGS.body)(args.batch, 0).len(),
        args.batch
    );
    Ok(out)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Entries;

    /// The twin holds the same entries as W1's body, mapped.
    #[test]
    fn the_otlp_body_maps_to_the_entries_of_the_json_body() {
        let json = crate::api::parse_batch(
            crate::model::Kind::Logs,
            &super::super::log_batch_body(50, 3),
            crate::model::Limits {
                max_batch_entries: 100,
            },
        )
        .unwrap()
        .into_owned();
        let req = crate::otlp::decode_logs(&log_request_body(50, 3), crate::otlp::Format::Protobuf)
            .unwrap();
        let mapped = crate::otlp::map_logs(
            req,
            &crate::otlp::Context {
                received_at: String::new(),
                agent_version: None,
                max_entries: 100,
                max_bytes: 1 << 20,
            },
        );
        let (Entries::Logs(mut a), Entries::Logs(mut b)) =
            (json.entries, mapped.batch.unwrap().entries)
        else {
            panic!()
        };
        let key = |e: &crate::model::LogRecord| (e.message.clone(), e.timestamp.clone());
        a.sort_by_key(key);
        b.sort_by_key(key);
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                (&x.message, &x.timestamp, x.level, &x.service, &x.host),
                (&y.message, &y.timestamp, y.level, &y.service, &y.host)
            );
        }
    }
}
