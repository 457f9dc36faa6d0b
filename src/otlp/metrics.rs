//! OTLP data points → `MetricRecord` entries (SPEC §8): gauge → gauge,
//! monotonic sum → counter, other sum → gauge; a histogram becomes
//! `_count`, `_sum` and cumulative `_bucket{le}` counters; an exponential
//! histogram `_count` and `_sum`; a summary one gauge per quantile plus
//! `_count` and `_sum`.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as Number;
use opentelemetry_proto::tonic::metrics::v1::{
    HistogramDataPoint, Metric, NumberDataPoint, SummaryDataPoint,
};

use super::value::{self, Attributes};
use super::{resource_base, scope_base, Context, Mapped, Rejects, Room};
use crate::model::{AttrValue, Batch, Entries, MetricRecord, MetricType, MAX_NAME_BYTES};

/// What every entry of one metric shares.
struct Series<'a> {
    name: &'a str,
    unit: Option<String>,
    service: &'a str,
    host: &'a str,
    base: &'a Attributes,
}

/// The entries of one data point, built whole before any is kept, so a
/// point is stored entirely or rejected entirely.
struct Point<'a> {
    series: &'a Series<'a>,
    timestamp: String,
    attrs: Attributes,
    out: Vec<MetricRecord>,
    /// Bytes of `out`, counted against the request's room.
    bytes: usize,
    room: &'a Room,
}

impl Point<'_> {
    fn push(
        &mut self,
        suffix: &str,
        value: f64,
        metric_type: MetricType,
        extra: Option<(&str, String)>,
    ) -> Result<(), String> {
        let name = format!("{}{suffix}", self.series.name);
        if name.len() > MAX_NAME_BYTES {
            return Err(format!(
                "metric name `{name}` is {} bytes; at most {MAX_NAME_BYTES} are allowed",
                name.len()
            ));
        }
        if !value.is_finite() {
            return Err(format!("value of `{name}` is {value}; it must be finite"));
        }
        // Checked before the entry is built: a point with a million
        // quantiles stops at the limit, not after.
        let bytes = super::ENTRY_OVERHEAD
            + name.len()
            + self.timestamp.len()
            + self.series.service.len()
            + self.series.host.len()
            + self.attrs.weight()
            + extra.as_ref().map_or(0, |(k, v)| 56 + k.len() + v.len());
        self.room.check(self.out.len() + 1, self.bytes + bytes)?;
        self.bytes += bytes;
        let mut attributes = self.attrs.clone();
        if let Some((key, v)) = extra {
            attributes.set(key.to_string(), AttrValue::Str(v));
        }
        self.out.push(MetricRecord {
            timestamp: self.timestamp.clone(),
            name,
            value,
            metric_type,
            service: self.series.service.to_string(),
            host: self.series.host.to_string(),
            unit: self.series.unit.clone(),
            attributes: attributes.0,
        });
        Ok(())
    }
}

/// Maps every data point it can; each one it cannot is counted with its
/// reason.
pub fn map(req: ExportMetricsServiceRequest, ctx: &Context) -> Mapped {
    let mut out = Vec::new();
    let mut rejects = Rejects::default();
    let mut room = Room::new(ctx);
    for (ri, rm) in req.resource_metrics.iter().enumerate() {
        let base = resource_base(rm.resource.as_ref());
        for (si, sm) in rm.scope_metrics.iter().enumerate() {
            if sm.metrics.is_empty() {
                continue;
            }
            let scoped = scope_base(&mut room, &base, sm.scope.as_ref());
            for (mi, metric) in sm.metrics.iter().enumerate() {
                let at = || format!("resourceMetrics[{ri}].scopeMetrics[{si}].metrics[{mi}]");
                let points = points_in(metric);
                let ((service, host), attrs) = match &scoped {
                    Ok(s) => s,
                    Err(why) => {
                        if points > 0 {
                            rejects.add(points, || format!("{}: {why}", at()));
                        }
                        continue;
                    }
                };
                let series = match series(metric, service, host, attrs) {
                    Ok(s) => s,
                    Err(why) => {
                        if points > 0 {
                            rejects.add(points, || format!("{}: {why}", at()));
                        }
                        continue;
                    }
                };
                map_metric(metric, &series, ctx, &mut room, &mut out, &mut |pi, why| {
                    rejects.add(1, || format!("{}.dataPoints[{pi}]: {why}", at()))
                });
            }
        }
    }
    Mapped {
        batch: (!out.is_empty()).then(|| Batch {
            received_at: ctx.received_at.clone(),
            agent_version: ctx.agent_version.clone(),
            entries: Entries::Metrics(out),
        }),
        rejected: rejects.count,
        error_message: rejects.message("data point"),
    }
}

fn points_in(m: &Metric) -> i64 {
    (match &m.data {
        None => 0,
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
    }) as i64
}

fn series<'a>(
    m: &'a Metric,
    service: &'a str,
    host: &'a str,
    base: &'a Attributes,
) -> Result<Series<'a>, String> {
    if m.name.trim().is_empty() {
        return Err("metric name is empty".into());
    }
    if m.unit.len() > MAX_NAME_BYTES {
        return Err(format!(
            "unit is {} bytes; at most {MAX_NAME_BYTES} are allowed",
            m.unit.len()
        ));
    }
    if m.data.is_none() {
        return Err(format!("metric `{}` has no data", m.name));
    }
    Ok(Series {
        name: &m.name,
        unit: (!m.unit.is_empty()).then(|| m.unit.clone()),
        service,
        host,
        base,
    })
}

/// Maps each point of one metric into `out`, reporting each point it
/// rejects by its index.
fn map_metric(
    m: &Metric,
    series: &Series,
    ctx: &Context,
    room: &mut Room,
    out: &mut Vec<MetricRecord>,
    reject: &mut dyn FnMut(usize, String),
) {
    // What every entry of this series copies.
    let fixed = super::base_weight(series.service, series.host, series.base);
    let mut each = |i: usize,
                    attributes: &[KeyValue],
                    time: u64,
                    pre: Result<(), String>,
                    fill: &dyn Fn(&mut Point) -> Result<(), String>| {
        // Judged before anything is copied; the copy of the base is paid
        // for whether the point is kept or not, so the copying a request
        // can cause is bounded by the room.
        if let Err(why) = pre.and_then(|()| room.check(1, fixed)) {
            return reject(i, why);
        }
        room.take(0, fixed);
        let mut point = Point {
            series,
            timestamp: value::time_of(time).unwrap_or_else(|| ctx.received_at.clone()),
            attrs: series.base.clone(),
            out: Vec::new(),
            bytes: 0,
            room,
        };
        let built = point
            .attrs
            .merge(attributes)
            .and_then(|()| fill(&mut point));
        match built {
            Err(why) => reject(i, why),
            Ok(()) => {
                let (entries, bytes) = (point.out.len(), point.bytes);
                out.append(&mut point.out);
                room.take(entries, bytes.saturating_sub(fixed));
            }
        }
    };
    match &m.data {
        None => {}
        Some(Data::Gauge(g)) => {
            for (i, p) in g.data_points.iter().enumerate() {
                each(i, &p.attributes, p.time_unix_nano, has_value(p), &|pt| {
                    number(pt, p, MetricType::Gauge)
                });
            }
        }
        Some(Data::Sum(s)) => {
            let ty = if s.is_monotonic {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            for (i, p) in s.data_points.iter().enumerate() {
                each(i, &p.attributes, p.time_unix_nano, has_value(p), &|pt| {
                    number(pt, p, ty)
                });
            }
        }
        Some(Data::Histogram(h)) => {
            for (i, p) in h.data_points.iter().enumerate() {
                each(
                    i,
                    &p.attributes,
                    p.time_unix_nano,
                    no_recorded_value(p.flags),
                    &|pt| histogram(pt, p),
                );
            }
        }
        Some(Data::ExponentialHistogram(h)) => {
            for (i, p) in h.data_points.iter().enumerate() {
                each(
                    i,
                    &p.attributes,
                    p.time_unix_nano,
                    no_recorded_value(p.flags),
                    &|pt| {
                        pt.push("_count", p.count as f64, MetricType::Counter, None)?;
                        match p.sum {
                            Some(sum) => pt.push("_sum", sum, MetricType::Counter, None),
                            None => Ok(()),
                        }
                    },
                );
            }
        }
        Some(Data::Summary(s)) => {
            for (i, p) in s.data_points.iter().enumerate() {
                each(
                    i,
                    &p.attributes,
                    p.time_unix_nano,
                    no_recorded_value(p.flags),
                    &|pt| summary(pt, p),
                );
            }
        }
    }
}

/// OTLP's staleness marker: the point says it has no value.
fn no_recorded_value(flags: u32) -> Result<(), String> {
    if flags & 1 != 0 {
        return Err("the point is flagged as having no recorded value".into());
    }
    Ok(())
}

/// A number point with a value, judged before anything is copied.
fn has_value(p: &NumberDataPoint) -> Result<(), String> {
    no_recorded_value(p.flags)?;
    match p.value {
        Some(Number::AsDouble(d)) if !d.is_finite() => {
            Err(format!("the value is {d}; it must be finite"))
        }
        Some(_) => Ok(()),
        None => Err("the point has no value (asDouble or asInt)".into()),
    }
}

fn number(pt: &mut Point, p: &NumberDataPoint, ty: MetricType) -> Result<(), String> {
    let v = match p.value {
        Some(Number::AsDouble(d)) => d,
        Some(Number::AsInt(i)) => i as f64,
        None => return Err("the point has no value (asDouble or asInt)".into()),
    };
    pt.push("", v, ty, None)
}

fn histogram(pt: &mut Point, p: &HistogramDataPoint) -> Result<(), String> {
    pt.push("_count", p.count as f64, MetricType::Counter, None)?;
    if let Some(sum) = p.sum {
        pt.push("_sum", sum, MetricType::Counter, None)?;
    }
    if p.bucket_counts.is_empty() {
        // No distribution: only count and sum are known (allowed by OTLP).
        return Ok(());
    }
    if p.bucket_counts.len() != p.explicit_bounds.len() + 1 {
        return Err(format!(
            "{} bucket counts for {} explicit bounds; there must be one more count than bounds",
            p.bucket_counts.len(),
            p.explicit_bounds.len()
        ));
    }
    if let Some(b) = p.explicit_bounds.iter().find(|b| !b.is_finite()) {
        return Err(format!("explicit bound {b} is not finite"));
    }
    let mut cumulative: u64 = 0;
    for (i, count) in p.bucket_counts.iter().enumerate() {
        cumulative = cumulative.saturating_add(*count);
        let le = p
            .explicit_bounds
            .get(i)
            .map_or_else(|| "+Inf".to_string(), |b| label(*b));
        pt.push(
            "_bucket",
            cumulative as f64,
            MetricType::Counter,
            Some(("le", le)),
        )?;
    }
    Ok(())
}

fn summary(pt: &mut Point, p: &SummaryDataPoint) -> Result<(), String> {
    for q in &p.quantile_values {
        if !q.quantile.is_finite() {
            return Err(format!("quantile {} is not finite", q.quantile));
        }
        pt.push(
            "",
            q.value,
            MetricType::Gauge,
            Some(("quantile", label(q.quantile))),
        )?;
    }
    pt.push("_count", p.count as f64, MetricType::Counter, None)?;
    pt.push("_sum", p.sum, MetricType::Counter, None)
}

/// A bound or quantile as a label, as Prometheus writes them: `5`, `0.25`,
/// `1e+21` for very large or small values.
fn label(v: f64) -> String {
    let plain = format!("{v}");
    if plain.len() <= 21 {
        plain
    } else {
        format!("{v:e}").replace('e', "e+").replace("e+-", "e-")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::metrics::v1::summary_data_point::ValueAtQuantile;
    use opentelemetry_proto::tonic::metrics::v1::{
        ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, ResourceMetrics,
        ScopeMetrics, Sum, Summary,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;

    fn kv(key: &str, v: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v.into())),
            }),
            key_strindex: 0,
        }
    }

    fn ctx() -> Context {
        Context {
            received_at: "2026-11-29T00:00:00Z".into(),
            agent_version: None,
            max_entries: 1000,
            max_bytes: 1 << 20,
        }
    }

    fn metric(name: &str, data: Data) -> Metric {
        Metric {
            name: name.into(),
            unit: "ms".into(),
            data: Some(data),
            ..Default::default()
        }
    }

    fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "api"), kv("host.name", "h1")],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
        }
    }

    fn mapped(metrics: Vec<Metric>) -> (Vec<MetricRecord>, Mapped) {
        let mut m = map(request(metrics), &ctx());
        let entries = match m.batch.take().map(|b| b.entries) {
            Some(Entries::Metrics(v)) => v,
            None => Vec::new(),
            Some(Entries::Logs(_)) => panic!(),
        };
        (entries, m)
    }

    /// (name, value, type, the given attribute's value)
    fn rows(v: &[MetricRecord], attr: &str) -> Vec<(String, f64, MetricType, Option<String>)> {
        v.iter()
            .map(|e| {
                let a = e
                    .attributes
                    .iter()
                    .find(|(k, _)| k == attr)
                    .map(|(_, v)| match v {
                        AttrValue::Str(s) => s.clone(),
                        other => format!("{other:?}"),
                    });
                (e.name.clone(), e.value, e.metric_type, a)
            })
            .collect()
    }

    fn point(v: Number) -> NumberDataPoint {
        NumberDataPoint {
            attributes: vec![kv("cpu", "0")],
            time_unix_nano: 1_700_000_000_000_000_000,
            value: Some(v),
            ..Default::default()
        }
    }

    #[test]
    fn a_gauge_point_is_a_gauge_with_its_attributes_unit_resource_and_time() {
        let (v, m) = mapped(vec![metric(
            "temp",
            Data::Gauge(Gauge {
                data_points: vec![point(Number::AsDouble(21.5)), point(Number::AsInt(3))],
            }),
        )]);
        assert_eq!(m.rejected, 0);
        assert_eq!(
            rows(&v, "cpu"),
            [
                ("temp".into(), 21.5, MetricType::Gauge, Some("0".into())),
                ("temp".into(), 3.0, MetricType::Gauge, Some("0".into()))
            ]
        );
        assert_eq!(v[0].unit.as_deref(), Some("ms"));
        assert_eq!((v[0].service.as_str(), v[0].host.as_str()), ("api", "h1"));
        assert_eq!(v[0].timestamp, "2023-11-14T22:13:20Z");
        assert!(v[0].attributes.iter().any(|(k, _)| k == "service.name"));
    }

    #[test]
    fn a_monotonic_sum_is_a_counter_and_any_other_sum_a_gauge() {
        let sum = |mono| {
            metric(
                "requests",
                Data::Sum(Sum {
                    data_points: vec![point(Number::AsInt(7))],
                    aggregation_temporality: 2,
                    is_monotonic: mono,
                }),
            )
        };
        let (v, _) = mapped(vec![sum(true), sum(false)]);
        assert_eq!(v[0].metric_type, MetricType::Counter);
        assert_eq!(v[1].metric_type, MetricType::Gauge);
        assert_eq!(v[0].value, 7.0);
    }

    #[test]
    fn a_histogram_is_count_sum_and_cumulative_buckets_with_inf_last() {
        let (v, m) = mapped(vec![metric(
            "latency",
            Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    count: 3,
                    sum: Some(38.0),
                    bucket_counts: vec![1, 1, 1],
                    explicit_bounds: vec![5.0, 10.5],
                    ..Default::default()
                }],
                aggregation_temporality: 2,
            }),
        )]);
        assert_eq!(m.rejected, 0, "{}", m.error_message);
        assert_eq!(
            rows(&v, "le"),
            [
                ("latency_count".into(), 3.0, MetricType::Counter, None),
                ("latency_sum".into(), 38.0, MetricType::Counter, None),
                (
                    "latency_bucket".into(),
                    1.0,
                    MetricType::Counter,
                    Some("5".into())
                ),
                (
                    "latency_bucket".into(),
                    2.0,
                    MetricType::Counter,
                    Some("10.5".into())
                ),
                (
                    "latency_bucket".into(),
                    3.0,
                    MetricType::Counter,
                    Some("+Inf".into())
                ),
            ]
        );
        assert_eq!(
            v[0].timestamp, "2026-11-29T00:00:00Z",
            "no time: receive time"
        );
    }

    #[test]
    fn a_histogram_with_mismatched_buckets_is_rejected_whole() {
        let (v, m) = mapped(vec![metric(
            "latency",
            Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    count: 3,
                    bucket_counts: vec![1, 2],
                    explicit_bounds: vec![1.0, 2.0],
                    ..Default::default()
                }],
                aggregation_temporality: 2,
            }),
        )]);
        assert!(v.is_empty(), "nothing of a rejected point is kept");
        assert_eq!(m.rejected, 1);
        assert!(
            m.error_message
                .contains("metrics[0].dataPoints[0]: 2 bucket counts for 2"),
            "{}",
            m.error_message
        );
    }

    #[test]
    fn an_exponential_histogram_is_count_and_sum() {
        let (v, _) = mapped(vec![metric(
            "size",
            Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    count: 4,
                    sum: Some(10.0),
                    scale: 2,
                    ..Default::default()
                }],
                aggregation_temporality: 1,
            }),
        )]);
        assert_eq!(
            rows(&v, "le"),
            [
                ("size_count".into(), 4.0, MetricType::Counter, None),
                ("size_sum".into(), 10.0, MetricType::Counter, None)
            ]
        );
    }

    #[test]
    fn a_summary_is_a_gauge_per_quantile_plus_count_and_sum() {
        let (v, _) = mapped(vec![metric(
            "rtt",
            Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    count: 10,
                    sum: 55.0,
                    quantile_values: vec![
                        ValueAtQuantile {
                            quantile: 0.5,
                            value: 5.0,
                        },
                        ValueAtQuantile {
                            quantile: 0.99,
                            value: 9.9,
                        },
                    ],
                    ..Default::default()
                }],
            }),
        )]);
        assert_eq!(
            rows(&v, "quantile"),
            [
                ("rtt".into(), 5.0, MetricType::Gauge, Some("0.5".into())),
                ("rtt".into(), 9.9, MetricType::Gauge, Some("0.99".into())),
                ("rtt_count".into(), 10.0, MetricType::Counter, None),
                ("rtt_sum".into(), 55.0, MetricType::Counter, None),
            ]
        );
    }

    #[test]
    fn points_without_a_usable_value_are_rejected_and_counted() {
        let mut no_value = point(Number::AsInt(1));
        no_value.value = None;
        let mut stale = point(Number::AsInt(1));
        stale.flags = 1;
        let (v, m) = mapped(vec![
            metric(
                "g",
                Data::Gauge(Gauge {
                    data_points: vec![
                        point(Number::AsDouble(f64::NAN)),
                        no_value,
                        stale,
                        point(Number::AsInt(2)),
                    ],
                }),
            ),
            Metric {
                name: "empty".into(),
                ..Default::default()
            },
        ]);
        assert_eq!(v.len(), 1);
        // Three points; the metric without data has none to count.
        assert_eq!(m.rejected, 3);
        assert!(
            m.error_message.contains("must be finite"),
            "{}",
            m.error_message
        );
    }

    #[test]
    fn a_point_that_would_pass_the_entry_limit_is_rejected_whole() {
        let mut c = ctx();
        c.max_entries = 4;
        let h = metric(
            "h",
            Data::Histogram(Histogram {
                data_points: vec![
                    HistogramDataPoint {
                        count: 1,
                        bucket_counts: vec![1, 0],
                        explicit_bounds: vec![1.0],
                        ..Default::default()
                    };
                    2
                ],
                aggregation_temporality: 2,
            }),
        );
        let m = map(request(vec![h]), &c);
        assert_eq!(m.batch.unwrap().len(), 3);
        assert_eq!(m.rejected, 1);
    }

    #[test]
    fn a_point_with_too_many_quantiles_stops_at_the_limit_and_is_rejected_whole() {
        let (v, m) = mapped(vec![metric(
            "q",
            Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    quantile_values: vec![ValueAtQuantile::default(); 5_000],
                    ..Default::default()
                }],
            }),
        )]);
        assert!(v.is_empty());
        assert_eq!(m.rejected, 1);
        assert!(
            m.error_message.contains("server.max_batch_entries (1000)"),
            "{}",
            m.error_message
        );
    }

    #[test]
    fn labels_are_short() {
        assert_eq!(label(5.0), "5");
        assert_eq!(label(0.25), "0.25");
        assert_eq!(label(1e21), "1e+21");
        assert_eq!(label(1e-30), "1e-30");
    }
}
