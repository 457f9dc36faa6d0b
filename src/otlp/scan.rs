//! How much memory a request will take once decoded, counted before it is
//! decoded (the JSON count serves `/logs` and `/metrics` too).
//!
//! NOTE: a log record costs 2 bytes of protobuf (or 3 of JSON, `{},`) but
//! about 190 bytes as a decoded struct, so a 10 MiB body of empty records
//! decodes into ~1 GB. Counting the messages (objects) a body holds, with
//! tags and lengths only, lets the caller charge that memory to the
//! in-flight budget — or refuse — before decoding.

/// What one decoded message is charged: about the size of the largest
/// generated structs (`LogRecord`, `HistogramDataPoint`) with the decoder's
/// spare capacity.
pub const BYTES_PER_MESSAGE: usize = 256;
/// A JSON object or array: it decodes into a mirror struct that is then
/// converted, so both exist at once (measured: ~540 bytes per `{}` record).
pub const BYTES_PER_JSON_CONTAINER: usize = 600;
/// A scalar in a JSON array, or a string or varint in a repeated field.
pub const BYTES_PER_ITEM: usize = 24;

/// The messages of an OTLP protobuf request that decode into structs; the
/// fields that are neither messages nor packed varints cost no more decoded
/// than on the wire.
#[derive(Clone, Copy)]
enum M {
    LogsRequest,
    ResourceLogs,
    ScopeLogs,
    LogRecord,
    MetricsRequest,
    ResourceMetrics,
    ScopeMetrics,
    Metric,
    NumberPoints,
    HistogramPoints,
    ExpHistogramPoints,
    SummaryPoints,
    NumberPoint,
    HistogramPoint,
    ExpHistogramPoint,
    Buckets,
    SummaryPoint,
    Exemplar,
    Resource,
    Scope,
    KeyValue,
    AnyValue,
    ArrayValue,
    KvList,
    EntityRef,
    Leaf,
}

impl M {
    /// The message a length-delimited field holds, by field number.
    fn child(self, field: u64) -> Option<M> {
        use M::*;
        Some(match (self, field) {
            (LogsRequest, 1) => ResourceLogs,
            (ResourceLogs, 1) | (ResourceMetrics, 1) => Resource,
            (ResourceLogs, 2) => ScopeLogs,
            (ScopeLogs, 1) | (ScopeMetrics, 1) => Scope,
            (ScopeLogs, 2) => LogRecord,
            (LogRecord, 5) => AnyValue,
            (LogRecord, 6) => KeyValue,
            (MetricsRequest, 1) => ResourceMetrics,
            (ResourceMetrics, 2) => ScopeMetrics,
            (ScopeMetrics, 2) => Metric,
            (Metric, 5 | 7) => NumberPoints,
            (Metric, 9) => HistogramPoints,
            (Metric, 10) => ExpHistogramPoints,
            (Metric, 11) => SummaryPoints,
            (Metric, 12) => KeyValue,
            (NumberPoints, 1) => NumberPoint,
            (HistogramPoints, 1) => HistogramPoint,
            (ExpHistogramPoints, 1) => ExpHistogramPoint,
            (SummaryPoints, 1) => SummaryPoint,
            (NumberPoint, 7) | (HistogramPoint, 9) | (ExpHistogramPoint, 1) => KeyValue,
            (SummaryPoint, 7) | (Exemplar, 7) => KeyValue,
            (NumberPoint, 5) | (HistogramPoint, 8) | (ExpHistogramPoint, 11) => Exemplar,
            (ExpHistogramPoint, 8 | 9) => Buckets,
            (SummaryPoint, 6) => Leaf,
            (Resource, 1) | (Scope, 3) | (KvList, 1) => KeyValue,
            (Resource, 3) => EntityRef,
            (KeyValue, 2) | (ArrayValue, 1) => AnyValue,
            (AnyValue, 5) => ArrayValue,
            (AnyValue, 6) => KvList,
            _ => return None,
        })
    }
}

/// prost refuses deeper nesting; no need to count below it.
const MAX_DEPTH: usize = 100;

/// Bytes an OTLP protobuf logs (`metrics = false`) or metrics request will
/// take once decoded. A body it cannot walk — truncated, a bad wire type,
/// a group (OTLP has none; prost would skip one unseen) — is refused.
pub fn protobuf_decoded_bytes(body: &[u8], metrics: bool) -> Result<usize, String> {
    let root = if metrics {
        M::MetricsRequest
    } else {
        M::LogsRequest
    };
    let mut bytes = 0;
    walk(body, root, 0, &mut bytes)?;
    Ok(bytes)
}

fn walk(mut buf: &[u8], m: M, depth: usize, bytes: &mut usize) -> Result<(), String> {
    let truncated = || "malformed protobuf: a field runs past the end of its message".to_string();
    while !buf.is_empty() {
        let key = varint(&mut buf).ok_or_else(truncated)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(&mut buf).ok_or_else(truncated)?;
                // Unpacked repeated varints (bucket counts): 8 bytes each
                // decoded from 2 on the wire.
                if matches!(m, M::Buckets) {
                    *bytes += BYTES_PER_ITEM;
                }
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                if buf.len() < n {
                    return Err(truncated());
                }
                buf = &buf[n..];
            }
            2 => {
                let len = varint(&mut buf)
                    .and_then(|l| usize::try_from(l).ok())
                    .filter(|l| *l <= buf.len())
                    .ok_or_else(truncated)?;
                let (inner, rest) = buf.split_at(len);
                buf = rest;
                match (m, field, m.child(field)) {
                    // Packed varint bucket counts: 1 byte each on the wire,
                    // 8 decoded.
                    (M::Buckets, 2, _) => *bytes += len * 8,
                    // EntityRef's repeated strings: a String each.
                    (M::EntityRef, 3 | 4, _) => *bytes += BYTES_PER_ITEM,
                    (_, _, Some(child)) => {
                        *bytes += BYTES_PER_MESSAGE;
                        if depth < MAX_DEPTH {
                            walk(inner, child, depth + 1, bytes)?;
                        }
                    }
                    _ => {}
                }
            }
            w => {
                return Err(format!(
                    "malformed protobuf: wire type {w} (groups are not OTLP)"
                ))
            }
        }
    }
    Ok(())
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for (i, b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Some(v);
        }
    }
    None
}

/// serde_json refuses deeper nesting (a 400); nothing below it is decoded.
const JSON_MAX_DEPTH: usize = 128;

/// Bytes a JSON body will take once decoded: every object and array
/// (serde also reads a struct from an array), and every item of an array,
/// outside strings and above the depth serde_json refuses.
pub fn json_decoded_bytes(body: &[u8]) -> usize {
    let (mut containers, mut items, mut depth) = (0, 0, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth <= JSON_MAX_DEPTH {
                    containers += 1;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth <= JSON_MAX_DEPTH => items += 1,
            _ => {}
        }
    }
    containers * BYTES_PER_JSON_CONTAINER + items * BYTES_PER_ITEM
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        metric, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    };
    use prost::Message;

    #[test]
    fn counts_every_message_that_decodes_into_a_struct() {
        let kv = KeyValue {
            key: "k".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue::default(); 3],
                })),
            }),
            key_strindex: 0,
        };
        let record = LogRecord {
            attributes: vec![kv; 2],
            ..Default::default()
        };
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![record; 10],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        // 1 ResourceLogs + 1 ScopeLogs + 10 × (record + 2 × (KeyValue + AnyValue + ArrayValue + 3 AnyValues)).
        assert_eq!(
            protobuf_decoded_bytes(&req.encode_to_vec(), false).unwrap(),
            (2 + 10 * (1 + 2 * 6)) * BYTES_PER_MESSAGE
        );
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint::default(); 7],
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        assert_eq!(
            protobuf_decoded_bytes(&req.encode_to_vec(), true).unwrap(),
            (4 + 7) * BYTES_PER_MESSAGE
        );
    }

    #[test]
    fn a_body_of_empty_records_is_counted_before_it_is_decoded() {
        let n = 100_000;
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default(); n],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let body = req.encode_to_vec();
        assert!(body.len() < 3 * n);
        assert_eq!(
            protobuf_decoded_bytes(&body, false).unwrap(),
            (n + 2) * BYTES_PER_MESSAGE
        );
        // A group that prost would skip unseen hides nothing: refused.
        let hidden = [&[0x7b, 0x7c][..], &body].concat();
        assert!(protobuf_decoded_bytes(&hidden, false).is_err());
        assert!(protobuf_decoded_bytes(&body[..body.len() / 2], false).is_err());
    }

    #[test]
    fn entity_ref_strings_and_unpacked_bucket_counts_are_charged() {
        // Resource { entity_refs: [EntityRef { id_keys: ["", ""] }] }
        let entity = [0x1a, 0x00, 0x1a, 0x00];
        let resource = [&[0x1a, entity.len() as u8][..], &entity].concat();
        let resource_logs = [&[0x0a, resource.len() as u8][..], &resource].concat();
        let body = [&[0x0a, resource_logs.len() as u8][..], &resource_logs].concat();
        assert_eq!(
            protobuf_decoded_bytes(&body, false).unwrap(),
            3 * BYTES_PER_MESSAGE + 2 * BYTES_PER_ITEM
        );
    }

    #[test]
    fn json_containers_and_items_are_counted_outside_strings() {
        let c = BYTES_PER_JSON_CONTAINER;
        assert_eq!(
            json_decoded_bytes(br#"{"a":[{},{"b":"{\"{,["}]}"#),
            4 * c + BYTES_PER_ITEM
        );
        // Structs written as arrays, and scalars in arrays, count too.
        assert_eq!(json_decoded_bytes(b"[[],[]]"), 3 * c + BYTES_PER_ITEM);
        assert_eq!(json_decoded_bytes(b"[0,0,0]"), c + 2 * BYTES_PER_ITEM);
    }
}
