//! How much memory a request will take once decoded, counted before it is
//! decoded.
//!
//! NOTE: a log record costs 2 bytes of protobuf (or 3 of JSON, `{},`) but
//! about 190 bytes as a decoded struct, so a 10 MiB body of empty records
//! decodes into ~1 GB. Counting the messages (objects) a body holds, with
//! tags and lengths only, lets the caller charge that memory to the
//! in-flight budget — or refuse — before decoding.

/// What one decoded message (or JSON object) is charged: about the size of
/// the largest generated structs (`LogRecord`, `HistogramDataPoint`) with
/// the decoder's spare capacity.
pub const BYTES_PER_ELEMENT: usize = 256;

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
            (Resource, 3) => Leaf,
            (KeyValue, 2) | (ArrayValue, 1) => AnyValue,
            (AnyValue, 5) => ArrayValue,
            (AnyValue, 6) => KvList,
            _ => return None,
        })
    }
}

/// prost refuses deeper nesting; no need to count below it.
const MAX_DEPTH: usize = 100;

/// Messages in an OTLP protobuf logs (`metrics = false`) or metrics request.
/// A malformed body is counted as far as it reads: the decoder refuses it.
pub fn protobuf_elements(body: &[u8], metrics: bool) -> usize {
    let root = if metrics {
        M::MetricsRequest
    } else {
        M::LogsRequest
    };
    let mut count = 0;
    walk(body, root, 0, &mut count);
    count
}

fn walk(mut buf: &[u8], m: M, depth: usize, count: &mut usize) {
    while !buf.is_empty() {
        let Some(key) = varint(&mut buf) else { return };
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                if varint(&mut buf).is_none() {
                    return;
                }
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                if buf.len() < n {
                    return;
                }
                buf = &buf[n..];
            }
            2 => {
                let Some(len) = varint(&mut buf).and_then(|l| usize::try_from(l).ok()) else {
                    return;
                };
                if buf.len() < len {
                    return;
                }
                let (inner, rest) = buf.split_at(len);
                buf = rest;
                match (m, field, m.child(field)) {
                    // Packed varint bucket counts: 1 byte each on the wire,
                    // 8 decoded.
                    (M::Buckets, 2, _) => *count += len / (BYTES_PER_ELEMENT / 8),
                    (_, _, Some(child)) => {
                        *count += 1;
                        if depth < MAX_DEPTH {
                            walk(inner, child, depth + 1, count);
                        }
                    }
                    _ => {}
                }
            }
            _ => return,
        }
    }
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

/// Objects in a JSON body (outside strings): each decodes into a struct.
pub fn json_elements(body: &[u8]) -> usize {
    let (mut count, mut in_string, mut escaped) = (0, false, false);
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if b == b'{' {
            count += 1;
        }
    }
    count
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
            protobuf_elements(&req.encode_to_vec(), false),
            2 + 10 * (1 + 2 * 6)
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
        assert_eq!(protobuf_elements(&req.encode_to_vec(), true), 4 + 7);
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
        assert_eq!(protobuf_elements(&body, false), n + 2);
        // Truncated: the outer message's length runs past the end, so
        // nothing is counted; the decoder refuses the body anyway.
        assert_eq!(protobuf_elements(&body[..body.len() / 2], false), 0);
    }

    #[test]
    fn json_objects_are_counted_outside_strings() {
        assert_eq!(json_elements(br#"{"a":[{},{"b":"{\"{"}]}"#), 3);
        assert_eq!(json_elements(b"[]"), 0);
    }
}
