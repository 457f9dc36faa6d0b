//! The request decoding path, as `POST /logs` and `POST /metrics` run it:
//! wire bytes → Content-Encoding (none, gzip, zstd) under the body limit →
//! JSON → validation → record encoding → record decoding.
//!
//! With bit 3 of the first byte set, the OTLP path instead (`POST /v1/logs`,
//! `/v1/metrics`): protobuf or OTLP JSON (bit 4) → decode → mapping.
//!
//! Must never panic; a batch that validates or maps must come back from its
//! record unchanged. The first byte picks the encoding and the endpoint.
#![no_main]

use edge_ingester::api::{decode_body, parse_batch};
use edge_ingester::model::{Batch, Kind, Limits};
use edge_ingester::otlp;
use edge_ingester::queue::{decode_record, encode_record};
use libfuzzer_sys::fuzz_target;

const LIMIT: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, wire)) = data.split_first() else {
        return;
    };
    let encoding = [None, Some("gzip"), Some("zstd"), Some("identity")][usize::from(selector & 3)];
    let kind = if selector & 4 == 0 {
        Kind::Logs
    } else {
        Kind::Metrics
    };
    let Ok(json) = decode_body(wire, encoding, LIMIT) else {
        return;
    };
    assert!(json.len() as u64 <= LIMIT, "inflated past the limit");
    let max_entries = 1000;
    let batch = if selector & 8 == 0 {
        let limits = Limits {
            max_batch_entries: max_entries,
        };
        let Ok(batch) = parse_batch(kind, &json, limits) else {
            return;
        };
        // The bytes must not depend on whether the strings are borrowed.
        let owned = batch.clone().into_owned();
        assert_eq!(
            encode_record(&batch),
            encode_record(&owned),
            "borrowed batch encodes differently"
        );
        owned
    } else {
        let Some(batch) = map_otlp(kind, selector & 16 == 0, &json, max_entries) else {
            return;
        };
        batch
    };
    assert_eq!(batch.kind(), kind);
    assert!(batch.len() <= max_entries, "more entries than the limit");
    let record = encode_record(&batch);
    let back = decode_record(&record).expect("a record we wrote decodes");
    assert_eq!(back, batch, "record round trip changed the batch");
});

fn map_otlp(kind: Kind, protobuf: bool, body: &[u8], max_entries: usize) -> Option<Batch> {
    let format = if protobuf {
        otlp::Format::Protobuf
    } else {
        otlp::Format::Json
    };
    let ctx = otlp::Context {
        received_at: "2026-11-29T00:00:00Z".into(),
        agent_version: None,
        max_entries,
        max_bytes: 1 << 20,
    };
    let mapped = match kind {
        Kind::Logs => otlp::map_logs(otlp::decode_logs(body, format).ok()?, &ctx),
        Kind::Metrics => otlp::map_metrics(otlp::decode_metrics(body, format).ok()?, &ctx),
    };
    assert_eq!(
        mapped.rejected > 0,
        !mapped.error_message.is_empty(),
        "a rejection without its reason, or a reason without a rejection"
    );
    mapped.batch
}
