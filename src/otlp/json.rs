//! OTLP JSON, decoded into the generated protobuf types.
//!
//! NOTE: `opentelemetry-proto`'s own serde mode is not used. Its oneofs
//! (`NumberDataPoint.value`, `Metric.data`) sit under `serde(flatten)`, so a
//! value it cannot read turns into "no value" instead of an error
//! (`"asDouble": "NaN"` was dropped that way when we tried it), and it
//! rejects enum names. These mirror types follow the OTLP/HTTP rules
//! instead: lowerCamelCase keys, hex trace and span ids, 64-bit integers as
//! strings or numbers, doubles as numbers or the strings `NaN`, `Infinity`,
//! `-Infinity`, enums as integers or names, `null` as "not set", unknown
//! fields ignored.

use std::fmt;
use std::marker::PhantomData;

use base64::Engine as _;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1 as common;
use opentelemetry_proto::tonic::logs::v1 as logs;
use opentelemetry_proto::tonic::metrics::v1 as metrics;
use opentelemetry_proto::tonic::resource::v1::Resource as PResource;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Decodes an OTLP JSON logs request; the error names the field at fault.
pub fn logs(bytes: &[u8]) -> Result<ExportLogsServiceRequest, String> {
    decode::<LogsRequest>(bytes).map(Into::into)
}

/// Decodes an OTLP JSON metrics request; the error names the field at fault.
pub fn metrics(bytes: &[u8]) -> Result<ExportMetricsServiceRequest, String> {
    decode::<MetricsRequest>(bytes).map(Into::into)
}

/// Parses without path tracking; on failure parses again with it, so the
/// error can name the field and the happy path pays nothing for it.
fn decode<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, String> {
    // serde's derived structs also take arrays (fields by position): a
    // request must be an object.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        return Err("the body must be a JSON object, an Export*ServiceRequest".into());
    }
    match serde_json::from_slice::<T>(bytes) {
        Ok(v) => Ok(v),
        Err(err) => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            let path = match serde_path_to_error::deserialize::<_, T>(&mut de) {
                Err(e) if e.path().to_string() != "." => format!("{}: ", e.path()),
                _ => String::new(),
            };
            Err(format!("{path}{err}"))
        }
    }
}

// ------------------------------------------------------------ scalar forms

/// A field that may be `null`, meaning its default.
struct Or<T>(T);

impl<'de, T: Deserialize<'de> + Default> Deserialize<'de> for Or<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Or(Option::<T>::deserialize(d)?.unwrap_or_default()))
    }
}

impl<T: Default> Default for Or<T> {
    fn default() -> Self {
        Or(T::default())
    }
}

type List<T> = Or<Vec<T>>;

/// A 64-bit integer as a JSON number or a decimal string.
#[derive(Default, Clone, Copy)]
struct Int<T>(T);

impl<'de, T> Deserialize<'de> for Int<T>
where
    T: Default + TryFrom<i64> + TryFrom<u64> + std::str::FromStr,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<T> Visitor<'_> for V<T>
        where
            T: Default + TryFrom<i64> + TryFrom<u64> + std::str::FromStr,
        {
            type Value = Int<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer, as a number or a decimal string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int<T>, E> {
                T::try_from(v)
                    .map(Int)
                    .map_err(|_| E::custom(format!("{v} is out of range")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int<T>, E> {
                T::try_from(v)
                    .map(Int)
                    .map_err(|_| E::custom(format!("{v} is out of range")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Int<T>, E> {
                // `1.0e3` is an integer in proto3 JSON; `1.5` is not.
                if v.fract() == 0.0 && v.abs() < 9.007_199_254_740_992e15 {
                    return self.visit_i64(v as i64);
                }
                Err(E::custom(format!("{v} is not an integer")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Int<T>, E> {
                v.trim()
                    .parse()
                    .map(Int)
                    .map_err(|_| E::custom(format!("`{v}` is not an integer")))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Int<T>, E> {
                Ok(Int(T::default()))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A double as a JSON number or a string (`"1.5"`, `"NaN"`, `"Infinity"`,
/// `"-Infinity"`).
#[derive(Default, Clone, Copy)]
struct Double(f64);

impl<'de> Deserialize<'de> for Double {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Double;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number, or NaN, Infinity or -Infinity as a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Double, E> {
                Ok(Double(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Double, E> {
                Ok(Double(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Double, E> {
                Ok(Double(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Double, E> {
                match v {
                    "NaN" => Ok(Double(f64::NAN)),
                    "Infinity" => Ok(Double(f64::INFINITY)),
                    "-Infinity" => Ok(Double(f64::NEG_INFINITY)),
                    s => s
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .map(Double)
                        .ok_or_else(|| E::custom(format!("`{v}` is not a number"))),
                }
            }
            fn visit_unit<E: de::Error>(self) -> Result<Double, E> {
                Ok(Double(0.0))
            }
        }
        d.deserialize_any(V)
    }
}

/// A trace or span id: hex digits (OTLP JSON's rule, not proto3's base64).
#[derive(Default)]
struct HexId(Vec<u8>);

impl<'de> Deserialize<'de> for HexId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Option::<std::borrow::Cow<'de, str>>::deserialize(d)?.unwrap_or_default();
        hex::decode(s.as_bytes())
            .map(HexId)
            .map_err(|_| de::Error::custom(format!("`{s}` is not a hex id")))
    }
}

/// `bytesValue`: base64, standard or URL-safe alphabet, padded or not.
struct Base64(Vec<u8>);

impl<'de> Deserialize<'de> for Base64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        let trimmed = s.trim_end_matches('=');
        STANDARD_NO_PAD
            .decode(trimmed)
            .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed))
            .map(Base64)
            .map_err(|_| de::Error::custom("bytesValue is not base64"))
    }
}

/// An enum as its number or its name (`"SEVERITY_NUMBER_WARN"`).
struct Enum<E>(i32, PhantomData<E>);

/// The names of an enum's values, as prost generates them.
trait Named {
    fn number(name: &str) -> Option<i32>;
}

struct SeverityNames;
impl Named for SeverityNames {
    fn number(name: &str) -> Option<i32> {
        logs::SeverityNumber::from_str_name(name).map(|s| s as i32)
    }
}

struct TemporalityNames;
impl Named for TemporalityNames {
    fn number(name: &str) -> Option<i32> {
        metrics::AggregationTemporality::from_str_name(name).map(|t| t as i32)
    }
}

type Severity = Enum<SeverityNames>;
type Temporality = Enum<TemporalityNames>;

impl<E> Default for Enum<E> {
    fn default() -> Self {
        Enum(0, PhantomData)
    }
}

impl<'de, E: Named> Deserialize<'de> for Enum<E> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<E>(PhantomData<E>);
        impl<E: Named> Visitor<'_> for V<E> {
            type Value = Enum<E>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an enum value, as its number or its name")
            }
            fn visit_i64<Er: de::Error>(self, v: i64) -> Result<Enum<E>, Er> {
                i32::try_from(v)
                    .map(|n| Enum(n, PhantomData))
                    .map_err(|_| Er::custom(format!("{v} is out of range")))
            }
            fn visit_u64<Er: de::Error>(self, v: u64) -> Result<Enum<E>, Er> {
                i32::try_from(v)
                    .map(|n| Enum(n, PhantomData))
                    .map_err(|_| Er::custom(format!("{v} is out of range")))
            }
            fn visit_str<Er: de::Error>(self, v: &str) -> Result<Enum<E>, Er> {
                E::number(v)
                    .or_else(|| v.parse().ok())
                    .map(|n| Enum(n, PhantomData))
                    .ok_or_else(|| Er::custom(format!("`{v}` is not a known value")))
            }
            fn visit_unit<Er: de::Error>(self) -> Result<Enum<E>, Er> {
                Ok(Enum::default())
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

// ------------------------------------------------------------ common

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct AnyValue {
    string_value: Option<String>,
    bool_value: Option<bool>,
    int_value: Option<Int<i64>>,
    double_value: Option<Double>,
    array_value: Option<ArrayValue>,
    kvlist_value: Option<KvList>,
    bytes_value: Option<Base64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ArrayValue {
    values: List<AnyValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KvList {
    values: List<KeyValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KeyValue {
    key: Or<String>,
    value: Option<AnyValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Resource {
    attributes: List<KeyValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Scope {
    name: Or<String>,
    version: Or<String>,
    attributes: List<KeyValue>,
}

impl From<AnyValue> for common::AnyValue {
    fn from(v: AnyValue) -> Self {
        use common::any_value::Value as V;
        let value = if let Some(s) = v.string_value {
            Some(V::StringValue(s))
        } else if let Some(b) = v.bool_value {
            Some(V::BoolValue(b))
        } else if let Some(i) = v.int_value {
            Some(V::IntValue(i.0))
        } else if let Some(d) = v.double_value {
            Some(V::DoubleValue(d.0))
        } else if let Some(a) = v.array_value {
            Some(V::ArrayValue(common::ArrayValue {
                values: a.values.0.into_iter().map(Into::into).collect(),
            }))
        } else if let Some(kv) = v.kvlist_value {
            Some(V::KvlistValue(common::KeyValueList {
                values: kvs(kv.values),
            }))
        } else {
            v.bytes_value.map(|b| V::BytesValue(b.0))
        };
        common::AnyValue { value }
    }
}

fn kvs(list: List<KeyValue>) -> Vec<common::KeyValue> {
    list.0
        .into_iter()
        .map(|kv| common::KeyValue {
            key: kv.key.0,
            value: kv.value.map(Into::into),
            key_strindex: 0,
        })
        .collect()
}

fn resource(r: Option<Resource>) -> Option<PResource> {
    r.map(|r| PResource {
        attributes: kvs(r.attributes),
        ..Default::default()
    })
}

fn scope(s: Option<Scope>) -> Option<common::InstrumentationScope> {
    s.map(|s| common::InstrumentationScope {
        name: s.name.0,
        version: s.version.0,
        attributes: kvs(s.attributes),
        dropped_attributes_count: 0,
    })
}

// ------------------------------------------------------------ logs

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct LogsRequest {
    resource_logs: List<ResourceLogs>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ResourceLogs {
    resource: Option<Resource>,
    scope_logs: List<ScopeLogs>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ScopeLogs {
    scope: Option<Scope>,
    log_records: List<LogRecord>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct LogRecord {
    time_unix_nano: Int<u64>,
    observed_time_unix_nano: Int<u64>,
    severity_number: Severity,
    severity_text: Or<String>,
    body: Option<AnyValue>,
    attributes: List<KeyValue>,
    flags: Int<u32>,
    trace_id: HexId,
    span_id: HexId,
}

impl From<LogsRequest> for ExportLogsServiceRequest {
    fn from(r: LogsRequest) -> Self {
        let resource_logs = r.resource_logs.0.into_iter().map(|rl| logs::ResourceLogs {
            resource: resource(rl.resource),
            scope_logs: rl
                .scope_logs
                .0
                .into_iter()
                .map(|sl| logs::ScopeLogs {
                    scope: scope(sl.scope),
                    log_records: sl.log_records.0.into_iter().map(Into::into).collect(),
                    schema_url: String::new(),
                })
                .collect(),
            schema_url: String::new(),
        });
        ExportLogsServiceRequest {
            resource_logs: resource_logs.collect(),
        }
    }
}

impl From<LogRecord> for logs::LogRecord {
    fn from(r: LogRecord) -> Self {
        logs::LogRecord {
            time_unix_nano: r.time_unix_nano.0,
            observed_time_unix_nano: r.observed_time_unix_nano.0,
            severity_number: r.severity_number.0,
            severity_text: r.severity_text.0,
            body: r.body.map(Into::into),
            attributes: kvs(r.attributes),
            flags: r.flags.0,
            trace_id: r.trace_id.0,
            span_id: r.span_id.0,
            ..Default::default()
        }
    }
}

// ------------------------------------------------------------ metrics

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct MetricsRequest {
    resource_metrics: List<ResourceMetrics>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ResourceMetrics {
    resource: Option<Resource>,
    scope_metrics: List<ScopeMetrics>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ScopeMetrics {
    scope: Option<Scope>,
    metrics: List<Metric>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Metric {
    name: Or<String>,
    unit: Or<String>,
    gauge: Option<Points<NumberPoint>>,
    sum: Option<SumData>,
    histogram: Option<Points<HistogramPoint>>,
    exponential_histogram: Option<Points<ExpHistogramPoint>>,
    summary: Option<Points<SummaryPoint>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Points<P> {
    data_points: List<P>,
    aggregation_temporality: Temporality,
}

impl<P> Default for Points<P> {
    fn default() -> Self {
        Points {
            data_points: Or(Vec::new()),
            aggregation_temporality: Enum::default(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct SumData {
    data_points: List<NumberPoint>,
    aggregation_temporality: Temporality,
    is_monotonic: Or<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct NumberPoint {
    attributes: List<KeyValue>,
    start_time_unix_nano: Int<u64>,
    time_unix_nano: Int<u64>,
    as_double: Option<Double>,
    as_int: Option<Int<i64>>,
    flags: Int<u32>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct HistogramPoint {
    attributes: List<KeyValue>,
    start_time_unix_nano: Int<u64>,
    time_unix_nano: Int<u64>,
    count: Int<u64>,
    sum: Option<Double>,
    bucket_counts: List<Int<u64>>,
    explicit_bounds: List<Double>,
    flags: Int<u32>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ExpHistogramPoint {
    attributes: List<KeyValue>,
    start_time_unix_nano: Int<u64>,
    time_unix_nano: Int<u64>,
    count: Int<u64>,
    sum: Option<Double>,
    scale: Int<i32>,
    zero_count: Int<u64>,
    flags: Int<u32>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct SummaryPoint {
    attributes: List<KeyValue>,
    start_time_unix_nano: Int<u64>,
    time_unix_nano: Int<u64>,
    count: Int<u64>,
    sum: Double,
    quantile_values: List<Quantile>,
    flags: Int<u32>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Quantile {
    quantile: Double,
    value: Double,
}

impl From<MetricsRequest> for ExportMetricsServiceRequest {
    fn from(r: MetricsRequest) -> Self {
        let resource_metrics =
            r.resource_metrics
                .0
                .into_iter()
                .map(|rm| metrics::ResourceMetrics {
                    resource: resource(rm.resource),
                    scope_metrics: rm
                        .scope_metrics
                        .0
                        .into_iter()
                        .map(|sm| metrics::ScopeMetrics {
                            scope: scope(sm.scope),
                            metrics: sm.metrics.0.into_iter().map(Into::into).collect(),
                            schema_url: String::new(),
                        })
                        .collect(),
                    schema_url: String::new(),
                });
        ExportMetricsServiceRequest {
            resource_metrics: resource_metrics.collect(),
        }
    }
}

impl From<Metric> for metrics::Metric {
    fn from(m: Metric) -> Self {
        use metrics::metric::Data;
        fn points<P, Q: From<P>>(p: List<P>) -> Vec<Q> {
            p.0.into_iter().map(Into::into).collect()
        }
        // The first kind present wins, as in protobuf's oneof the last one
        // read would; a well-formed request has exactly one.
        let data = if let Some(g) = m.gauge {
            Some(Data::Gauge(metrics::Gauge {
                data_points: points(g.data_points),
            }))
        } else if let Some(s) = m.sum {
            Some(Data::Sum(metrics::Sum {
                data_points: points(s.data_points),
                aggregation_temporality: s.aggregation_temporality.0,
                is_monotonic: s.is_monotonic.0,
            }))
        } else if let Some(h) = m.histogram {
            Some(Data::Histogram(metrics::Histogram {
                data_points: points(h.data_points),
                aggregation_temporality: h.aggregation_temporality.0,
            }))
        } else if let Some(h) = m.exponential_histogram {
            Some(Data::ExponentialHistogram(metrics::ExponentialHistogram {
                data_points: points(h.data_points),
                aggregation_temporality: h.aggregation_temporality.0,
            }))
        } else {
            m.summary.map(|s| {
                Data::Summary(metrics::Summary {
                    data_points: points(s.data_points),
                })
            })
        };
        metrics::Metric {
            name: m.name.0,
            unit: m.unit.0,
            data,
            ..Default::default()
        }
    }
}

impl From<NumberPoint> for metrics::NumberDataPoint {
    fn from(p: NumberPoint) -> Self {
        use metrics::number_data_point::Value;
        let value = match (p.as_double, p.as_int) {
            (Some(d), _) => Some(Value::AsDouble(d.0)),
            (None, Some(i)) => Some(Value::AsInt(i.0)),
            (None, None) => None,
        };
        metrics::NumberDataPoint {
            attributes: kvs(p.attributes),
            start_time_unix_nano: p.start_time_unix_nano.0,
            time_unix_nano: p.time_unix_nano.0,
            flags: p.flags.0,
            value,
            ..Default::default()
        }
    }
}

impl From<HistogramPoint> for metrics::HistogramDataPoint {
    fn from(p: HistogramPoint) -> Self {
        metrics::HistogramDataPoint {
            attributes: kvs(p.attributes),
            start_time_unix_nano: p.start_time_unix_nano.0,
            time_unix_nano: p.time_unix_nano.0,
            count: p.count.0,
            sum: p.sum.map(|s| s.0),
            bucket_counts: p.bucket_counts.0.into_iter().map(|c| c.0).collect(),
            explicit_bounds: p.explicit_bounds.0.into_iter().map(|b| b.0).collect(),
            flags: p.flags.0,
            ..Default::default()
        }
    }
}

impl From<ExpHistogramPoint> for metrics::ExponentialHistogramDataPoint {
    fn from(p: ExpHistogramPoint) -> Self {
        metrics::ExponentialHistogramDataPoint {
            attributes: kvs(p.attributes),
            start_time_unix_nano: p.start_time_unix_nano.0,
            time_unix_nano: p.time_unix_nano.0,
            count: p.count.0,
            sum: p.sum.map(|s| s.0),
            scale: p.scale.0,
            zero_count: p.zero_count.0,
            flags: p.flags.0,
            ..Default::default()
        }
    }
}

impl From<SummaryPoint> for metrics::SummaryDataPoint {
    fn from(p: SummaryPoint) -> Self {
        metrics::SummaryDataPoint {
            attributes: kvs(p.attributes),
            start_time_unix_nano: p.start_time_unix_nano.0,
            time_unix_nano: p.time_unix_nano.0,
            count: p.count.0,
            sum: p.sum.0,
            quantile_values: p
                .quantile_values
                .0
                .into_iter()
                .map(|q| metrics::summary_data_point::ValueAtQuantile {
                    quantile: q.quantile.0,
                    value: q.value.0,
                })
                .collect(),
            flags: p.flags.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::any_value::Value;
    use metrics::metric::Data;
    use metrics::number_data_point::Value as Num;

    #[test]
    fn logs_with_every_value_kind_ids_and_64_bit_times_as_strings_or_numbers() {
        let req = logs(
            br#"{"resourceLogs":[{"resource":{"attributes":[
                {"key":"service.name","value":{"stringValue":"svc"}},
                {"key":"n","value":{"intValue":"7"}},{"key":"m","value":{"intValue":8}}]},
              "scopeLogs":[{"scope":{"name":"sc","attributes":[{"key":"s","value":{"boolValue":true}}]},
               "logRecords":[{"timeUnixNano":"1700000000000000001","observedTimeUnixNano":1700000000000000002,
                 "severityNumber":"SEVERITY_NUMBER_WARN","severityText":null,
                 "body":{"kvlistValue":{"values":[{"key":"a","value":{"arrayValue":{"values":[
                    {"doubleValue":"NaN"},{"bytesValue":"AQI="},{"doubleValue":1.5}]}}}]}},
                 "traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"eee19b7ec3c1b174",
                 "unknownField":{"x":[1,2]},"attributes":[{"key":"k","value":{}}]}]}]}]}"#,
        )
        .unwrap();
        let rl = &req.resource_logs[0];
        let attrs = &rl.resource.as_ref().unwrap().attributes;
        assert_eq!(
            attrs[1].value.as_ref().unwrap().value,
            Some(Value::IntValue(7))
        );
        assert_eq!(
            attrs[2].value.as_ref().unwrap().value,
            Some(Value::IntValue(8))
        );
        let r = &rl.scope_logs[0].log_records[0];
        assert_eq!(r.time_unix_nano, 1_700_000_000_000_000_001);
        assert_eq!(r.observed_time_unix_nano, 1_700_000_000_000_000_002);
        assert_eq!(r.severity_number, 13);
        assert_eq!(hex::encode(&r.trace_id), "5b8efff798038103d269b633813fc60c");
        assert_eq!(r.span_id.len(), 8);
        let Some(Value::KvlistValue(kv)) = &r.body.as_ref().unwrap().value else {
            panic!("body is not a kvlist: {:?}", r.body)
        };
        let Some(Value::ArrayValue(a)) = &kv.values[0].value.as_ref().unwrap().value else {
            panic!()
        };
        assert!(matches!(a.values[0].value, Some(Value::DoubleValue(d)) if d.is_nan()));
        assert_eq!(a.values[1].value, Some(Value::BytesValue(vec![1, 2])));
        assert_eq!(r.attributes[0].value.as_ref().unwrap().value, None);
    }

    #[test]
    fn every_metric_kind_and_the_values_the_crate_dropped() {
        let req = metrics(
            br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
              {"name":"c","unit":"1","sum":{"aggregationTemporality":"AGGREGATION_TEMPORALITY_CUMULATIVE","isMonotonic":true,
                "dataPoints":[{"asInt":"5","timeUnixNano":"1700000000000000000"}]}},
              {"name":"g","gauge":{"dataPoints":[{"asDouble":"NaN"},{"asDouble":"2.5"},{"asDouble":3}]}},
              {"name":"h","histogram":{"dataPoints":[{"count":"3","sum":38,"bucketCounts":["1","1",1],"explicitBounds":[5,"10"]}]}},
              {"name":"e","exponentialHistogram":{"dataPoints":[{"count":"3","sum":38,"scale":1,"positive":{"offset":1,"bucketCounts":["1","2"]}}]}},
              {"name":"s","summary":{"dataPoints":[{"count":"3","sum":"38","quantileValues":[{"quantile":0.5,"value":7},{"value":1}]}]}}
            ]}]}]}"#,
        )
        .unwrap();
        let m = &req.resource_metrics[0].scope_metrics[0].metrics;
        let Some(Data::Sum(s)) = &m[0].data else {
            panic!()
        };
        assert!(s.is_monotonic);
        assert_eq!(s.aggregation_temporality, 2);
        assert_eq!(s.data_points[0].value, Some(Num::AsInt(5)));
        let Some(Data::Gauge(g)) = &m[1].data else {
            panic!()
        };
        assert!(matches!(g.data_points[0].value, Some(Num::AsDouble(d)) if d.is_nan()));
        assert_eq!(g.data_points[1].value, Some(Num::AsDouble(2.5)));
        assert_eq!(g.data_points[2].value, Some(Num::AsDouble(3.0)));
        let Some(Data::Histogram(h)) = &m[2].data else {
            panic!()
        };
        assert_eq!(h.data_points[0].bucket_counts, [1, 1, 1]);
        assert_eq!(h.data_points[0].explicit_bounds, [5.0, 10.0]);
        assert_eq!(h.data_points[0].sum, Some(38.0));
        assert!(
            matches!(&m[3].data, Some(Data::ExponentialHistogram(e)) if e.data_points[0].count == 3)
        );
        let Some(Data::Summary(s)) = &m[4].data else {
            panic!()
        };
        assert_eq!(s.data_points[0].sum, 38.0);
        assert_eq!(s.data_points[0].quantile_values[1].quantile, 0.0);
    }

    #[test]
    fn wrong_types_are_errors_that_name_the_field() {
        let err =
            logs(br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"soon"}]}]}]}"#)
                .unwrap_err();
        assert!(
            err.starts_with("resourceLogs[0].scopeLogs[0].logRecords[0].timeUnixNano: "),
            "{err}"
        );
        let err = metrics(br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"gauge":{"dataPoints":[{"asInt":1.5}]}}]}]}]}"#)
            .unwrap_err();
        assert!(err.contains("asInt"), "{err}");
        assert!(
            logs(br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"xyz"}]}]}]}"#)
                .is_err()
        );
        assert!(logs(b"[]").is_err());
        assert!(logs(b"").is_err());
        assert_eq!(logs(b"{}").unwrap().resource_logs.len(), 0);
        assert_eq!(
            logs(br#"{"resourceLogs":null}"#)
                .unwrap()
                .resource_logs
                .len(),
            0
        );
    }

    #[test]
    fn a_depth_bomb_is_an_error_not_a_stack_overflow() {
        let depth = 100_000;
        let mut body = String::from(r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":"#);
        for _ in 0..depth {
            body.push_str(r#"{"arrayValue":{"values":["#);
        }
        for _ in 0..depth {
            body.push_str("]}}");
        }
        body.push_str("}]}]}]}");
        let err = logs(body.as_bytes()).unwrap_err();
        assert!(err.contains("recursion limit"), "{err}");
    }
}
