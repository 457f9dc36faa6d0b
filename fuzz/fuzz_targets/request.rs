//! The request decoding path, as `POST /logs` and `POST /metrics` run it:
//! wire bytes → Content-Encoding (none, gzip, zstd) under the body limit →
//! JSON → validation → record encoding → record decoding.
//!
//! Must never panic; a batch that validates must come back from its record
//! unchanged. The first byte picks the encoding and the endpoint.
#![no_main]

use edge_ingester::api::{decode_body, parse_batch};
use edge_ingester::model::{Kind, Limits};
use edge_ingester::queue::{decode_record, encode_record};
use libfuzzer_sys::fuzz_target;

const LIMIT: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, wire)) = data.split_first() else {
        return;
    };
    let encoding = [None, Some("gzip"), Some("zstd"), Some("identity")][usize::from(selector & 3)];
    let kind = if selector & 4 == 0 { Kind::Logs } else { Kind::Metrics };
    let Ok(json) = decode_body(wire, encoding, LIMIT) else {
        return;
    };
    assert!(json.len() as u64 <= LIMIT, "inflated past the limit");
    let limits = Limits {
        max_batch_entries: 1000,
    };
    let Ok(batch) = parse_batch(kind, &json, limits) else {
        return;
    };
    assert_eq!(batch.kind(), kind);
    let record = encode_record(&batch);
    let back = decode_record(&record).expect("a record we wrote decodes");
    assert_eq!(back, batch, "record round trip changed the batch");
});
