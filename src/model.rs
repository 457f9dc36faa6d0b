//! Batches as agents send them, and as the queue keeps them.
//!
//! Wire types borrow from the request body and make every field optional, so
//! that validation — not serde — decides what is missing and can name each
//! field at fault (`entries[3].level`). Validation produces the normalized
//! form (`Batch`) that the queue stores and the sinks render: canonical level
//! names, lower-case metric types, RFC 3339 UTC timestamps.

use std::borrow::Cow;
use std::fmt;

use bincode::{Decode, Encode};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Longest `message`, in bytes of UTF-8.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Longest `service`, `host`, metric `name` and attribute key, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Problems listed in one 422 before the rest are summarised.
const MAX_REPORTED_PROBLEMS: usize = 20;

/// Which endpoint a batch came through; picks the Kafka topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum Kind {
    Logs,
    Metrics,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Logs => "logs",
            Kind::Metrics => "metrics",
        }
    }
}

// ---------------------------------------------------------------- wire types

#[derive(Deserialize)]
pub struct WireLogBatch<'a> {
    #[serde(borrow)]
    pub entries: Option<Vec<WireLogEntry<'a>>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub agent_version: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub struct WireLogEntry<'a> {
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub timestamp: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub level: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub message: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub service: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub host: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub attributes: Option<WireAttrs<'a>>,
}

#[derive(Deserialize)]
pub struct WireMetricBatch<'a> {
    #[serde(borrow)]
    pub entries: Option<Vec<WireMetricEntry<'a>>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub agent_version: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub struct WireMetricEntry<'a> {
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub timestamp: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub name: Option<Cow<'a, str>>,
    pub value: Option<f64>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub metric_type: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub service: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub host: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub unit: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub attributes: Option<WireAttrs<'a>>,
}

/// An optional string field, borrowed from the body when it has no escapes.
/// NOTE: `#[serde(borrow)]` borrows a `Cow<str>` field but not an
/// `Option<Cow<str>>`: serde's own `Cow` impl then copies every string into
/// a `String` (the largest allocation site of W1's ingest).
fn borrowed<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    Ok(Option::<BorrowedCow<'a>>::deserialize(d)?.map(|s| s.0))
}

/// An entry's `attributes` object, sorted by key; a key given twice keeps
/// its last value (as a map would). NOTE: a `BTreeMap` here allocated tree
/// nodes for every entry of every batch; a sorted `Vec` does the same job.
pub struct WireAttrs<'a>(Vec<(Cow<'a, str>, AttrValue<Cow<'a, str>>)>);

impl<'de: 'a, 'a> Deserialize<'de> for WireAttrs<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> de::Visitor<'de> for V<'a> {
            type Value = WireAttrs<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<M: de::MapAccess<'de>>(self, mut m: M) -> Result<Self::Value, M::Error> {
                let mut v: Vec<(Cow<'a, str>, AttrValue<Cow<'a, str>>)> =
                    Vec::with_capacity(m.size_hint().unwrap_or(4).min(1024));
                while let Some(key) = m.next_key::<BorrowedCow<'a>>()? {
                    v.push((key.0, m.next_value()?));
                }
                // Stable: of equal keys the last given ends up last.
                v.sort_by(|a, b| a.0.cmp(&b.0));
                // In place: `dedup_by` keeps the first of a run, so move the
                // later value into it first (the last given wins).
                v.dedup_by(|later, kept| {
                    let same = later.0 == kept.0;
                    if same {
                        std::mem::swap(&mut later.1, &mut kept.1);
                    }
                    same
                });
                Ok(WireAttrs(v))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A string borrowed from the body when it has no escapes.
struct BorrowedCow<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for BorrowedCow<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // NOTE: `deserialize_str` straight, not through a newtype struct:
        // serde_path_to_error (`classify`) captures a map key only from the
        // `visit_*str` it sees, and a newtype hides them, so a 422 would name
        // `entries[0].attributes.?` instead of the key.
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = BorrowedCow<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(BorrowedCow(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(BorrowedCow(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(BorrowedCow(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

// ------------------------------------------------------------ stored types

/// An attribute value: string, number or bool (SPEC §3). Like every stored
/// type, generic over its strings: owned (`String`) as the queue hands
/// batches around, `Cow<str>` borrowed from a request body where ingest
/// validates and encodes them, or `&str` borrowed from a record's bytes
/// where the drain only renders them (`record::decode_view`). The encoded
/// bytes are the same for all three.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum AttrValue<S = String> {
    Str(S),
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
}

/// Hand-written so no untagged-enum buffering sits on the hot path; a
/// string without escapes stays borrowed from the body.
impl<'de: 'a, 'a> Deserialize<'de> for AttrValue<Cow<'a, str>> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = AttrValue<Cow<'a, str>>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or bool")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(AttrValue::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(AttrValue::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(AttrValue::UInt(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(AttrValue::Float(v))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(AttrValue::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(AttrValue::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(AttrValue::Str(Cow::Owned(v)))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl Level {
    /// Case-insensitive, with the aliases WARN and FATAL.
    pub fn parse(s: &str) -> Option<Level> {
        const NAMES: [(&str, Level); 8] = [
            ("TRACE", Level::Trace),
            ("DEBUG", Level::Debug),
            ("INFO", Level::Info),
            ("WARNING", Level::Warning),
            ("WARN", Level::Warning),
            ("ERROR", Level::Error),
            ("CRITICAL", Level::Critical),
            ("FATAL", Level::Critical),
        ];
        NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|(_, level)| *level)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

impl MetricType {
    pub fn parse(s: &str) -> Option<MetricType> {
        [
            ("counter", MetricType::Counter),
            ("gauge", MetricType::Gauge),
            ("histogram", MetricType::Histogram),
        ]
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(s))
        .map(|(_, t)| *t)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct LogRecord<S = String> {
    /// RFC 3339 in UTC.
    pub timestamp: S,
    pub level: Level,
    pub message: S,
    pub service: S,
    pub host: S,
    pub attributes: Vec<(S, AttrValue<S>)>,
}

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct MetricRecord<S = String> {
    pub timestamp: S,
    pub name: S,
    pub value: f64,
    pub metric_type: MetricType,
    pub service: S,
    pub host: S,
    pub unit: Option<S>,
    pub attributes: Vec<(S, AttrValue<S>)>,
}

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum Entries<S = String> {
    Logs(Vec<LogRecord<S>>),
    Metrics(Vec<MetricRecord<S>>),
}

/// One accepted batch, normalized: what the queue stores.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Batch<S = String> {
    /// Ingest time, RFC 3339 UTC; becomes `received_at` in every message.
    pub received_at: S,
    pub agent_version: Option<S>,
    pub entries: Entries<S>,
}

impl<S: AsRef<str>> Batch<S> {
    pub fn kind(&self) -> Kind {
        match self.entries {
            Entries::Logs(_) => Kind::Logs,
            Entries::Metrics(_) => Kind::Metrics,
        }
    }

    pub fn len(&self) -> usize {
        match &self.entries {
            Entries::Logs(v) => v.len(),
            Entries::Metrics(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `service` of the first entry: echoed in the 202 body.
    pub fn first_service(&self) -> &str {
        match &self.entries {
            Entries::Logs(v) => v.first().map_or("", |e| e.service.as_ref()),
            Entries::Metrics(v) => v.first().map_or("", |e| e.service.as_ref()),
        }
    }
}

impl Batch {
    /// The same batch holding only the entries at `positions` (in range,
    /// ascending): what goes to the dead letters when Kafka refused only some.
    pub fn only(&self, positions: &[usize]) -> Batch {
        fn pick<T: Clone>(v: &[T], positions: &[usize]) -> Vec<T> {
            positions.iter().map(|&i| v[i].clone()).collect()
        }
        Batch {
            received_at: self.received_at.clone(),
            agent_version: self.agent_version.clone(),
            entries: match &self.entries {
                Entries::Logs(v) => Entries::Logs(pick(v, positions)),
                Entries::Metrics(v) => Entries::Metrics(pick(v, positions)),
            },
        }
    }
}

// ---------------------------------------------------------------- validation

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub problem: String,
}

/// Collects problems with the field path of each.
#[derive(Default)]
struct Problems {
    list: Vec<Problem>,
    total: usize,
}

impl Problems {
    fn add(&mut self, field: impl FnOnce() -> String, problem: impl Into<String>) {
        self.total += 1;
        if self.list.len() < MAX_REPORTED_PROBLEMS {
            self.list.push(Problem {
                field: field(),
                problem: problem.into(),
            });
        }
    }

    fn into_result<T>(self, value: T) -> Result<T, Vec<Problem>> {
        if self.total == 0 {
            return Ok(value);
        }
        let mut list = self.list;
        if self.total > list.len() {
            list.push(Problem {
                field: "entries".into(),
                problem: format!("{} more problems not listed", self.total - list.len()),
            });
        }
        Err(list)
    }
}

/// Limits that validation enforces besides the fixed field sizes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_batch_entries: usize,
}

pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

fn check_entries_len(len: usize, limits: Limits, p: &mut Problems) {
    if len == 0 {
        p.add(|| "entries".into(), "must hold at least one entry");
    } else if len > limits.max_batch_entries {
        p.add(
            || "entries".into(),
            format!(
                "holds {len} entries; at most {} are allowed",
                limits.max_batch_entries
            ),
        );
    }
}

/// `t` in UTC, if RFC 3339 can write it there. NOTE: an offset can carry a
/// valid local date past the years 0000–9999 in UTC
/// ("9999-12-31T23:59:59-00:01"); `to_offset` panicked on it.
fn in_utc(t: OffsetDateTime) -> Option<OffsetDateTime> {
    t.checked_to_offset(time::UtcOffset::UTC)
        .filter(|u| (0..=9999).contains(&u.year()))
}

/// Whether ingest takes `raw` as an entry's `timestamp`: what an agent
/// checks before sending one it did not make (a 422 refuses the batch).
pub fn is_valid_timestamp(raw: &str) -> bool {
    OffsetDateTime::parse(raw, &Rfc3339)
        .ok()
        .and_then(in_utc)
        .is_some()
}

fn timestamp<'a>(v: Option<Cow<'a, str>>, i: usize, p: &mut Problems) -> Cow<'a, str> {
    let Some(raw) = v else {
        p.add(|| format!("entries[{i}].timestamp"), "is required");
        return Cow::Borrowed("");
    };
    let Ok(t) = OffsetDateTime::parse(&raw, &Rfc3339) else {
        p.add(
            || format!("entries[{i}].timestamp"),
            "must be an RFC 3339 date-time such as 2024-05-01T12:00:00Z",
        );
        return Cow::Borrowed("");
    };
    let Some(utc) = in_utc(t) else {
        p.add(
            || format!("entries[{i}].timestamp"),
            "must fall within the years 0000 to 9999 in UTC",
        );
        return Cow::Borrowed("");
    };
    // Formatted on the stack first: most agents already send the canonical
    // form, which then stays borrowed from the body. NOTE: the count that
    // `format_into` returns leaves out the sub-second digits (time 0.3.55),
    // so what was written is measured from the buffer left.
    let mut buf = [0u8; 64];
    let cap = buf.len();
    let mut w = &mut buf[..];
    // (Formatting cannot fail within the years `in_utc` lets through; if it
    // did, the timestamp as sent is kept, as before.)
    let formatted = utc.format_into(&mut w, &Rfc3339);
    let n = cap - w.len();
    if formatted.is_err() || buf[..n] == *raw.as_bytes() {
        return raw;
    }
    Cow::Owned(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn name<'a>(v: Option<Cow<'a, str>>, i: usize, field: &str, p: &mut Problems) -> Cow<'a, str> {
    match v {
        None => p.add(|| format!("entries[{i}].{field}"), "is required"),
        Some(s) if s.trim().is_empty() => {
            p.add(|| format!("entries[{i}].{field}"), "must not be empty")
        }
        Some(s) if s.len() > MAX_NAME_BYTES => p.add(
            || format!("entries[{i}].{field}"),
            format!("is {} bytes; at most {MAX_NAME_BYTES} are allowed", s.len()),
        ),
        Some(s) => return s,
    }
    Cow::Borrowed("")
}

fn attributes<'a>(
    v: Option<WireAttrs<'a>>,
    i: usize,
    p: &mut Problems,
) -> Vec<(Cow<'a, str>, AttrValue<Cow<'a, str>>)> {
    let Some(WireAttrs(map)) = v else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in map {
        if key.is_empty() || key.len() > MAX_NAME_BYTES {
            p.add(
                || format!("entries[{i}].attributes"),
                format!("keys must be 1 to {MAX_NAME_BYTES} bytes"),
            );
            continue;
        }
        if let AttrValue::Float(f) = value {
            if !f.is_finite() {
                p.add(
                    || format!("entries[{i}].attributes.{key}"),
                    "must be a finite number",
                );
            }
        }
        out.push((key, value));
    }
    out
}

pub fn validate_logs(
    wire: WireLogBatch<'_>,
    limits: Limits,
) -> Result<Batch<Cow<'_, str>>, Vec<Problem>> {
    let mut p = Problems::default();
    let Some(entries) = wire.entries else {
        p.add(|| "entries".into(), "is required");
        return p.into_result(Batch::placeholder());
    };
    check_entries_len(entries.len(), limits, &mut p);
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.into_iter().enumerate() {
        let level = match &e.level {
            None => Level::Info,
            Some(l) => Level::parse(l).unwrap_or_else(|| {
                p.add(
                    || format!("entries[{i}].level"),
                    "must be one of TRACE, DEBUG, INFO, WARNING (WARN), ERROR, CRITICAL (FATAL)",
                );
                Level::Info
            }),
        };
        let message = match e.message {
            None => {
                p.add(|| format!("entries[{i}].message"), "is required");
                Cow::Borrowed("")
            }
            Some(m) if m.len() > MAX_MESSAGE_BYTES => {
                p.add(
                    || format!("entries[{i}].message"),
                    format!(
                        "is {} bytes; at most {MAX_MESSAGE_BYTES} are allowed",
                        m.len()
                    ),
                );
                Cow::Borrowed("")
            }
            Some(m) => m,
        };
        out.push(LogRecord {
            timestamp: timestamp(e.timestamp, i, &mut p),
            level,
            message,
            service: name(e.service, i, "service", &mut p),
            host: name(e.host, i, "host", &mut p),
            attributes: attributes(e.attributes, i, &mut p),
        });
    }
    p.into_result(Batch {
        received_at: Cow::Owned(now_rfc3339()),
        agent_version: wire.agent_version,
        entries: Entries::Logs(out),
    })
}

pub fn validate_metrics(
    wire: WireMetricBatch<'_>,
    limits: Limits,
) -> Result<Batch<Cow<'_, str>>, Vec<Problem>> {
    let mut p = Problems::default();
    let Some(entries) = wire.entries else {
        p.add(|| "entries".into(), "is required");
        return p.into_result(Batch::placeholder());
    };
    check_entries_len(entries.len(), limits, &mut p);
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.into_iter().enumerate() {
        let value = match e.value {
            Some(v) if v.is_finite() => v,
            Some(_) => {
                p.add(|| format!("entries[{i}].value"), "must be a finite number");
                0.0
            }
            None => {
                p.add(|| format!("entries[{i}].value"), "is required");
                0.0
            }
        };
        let metric_type = match &e.metric_type {
            Some(t) => MetricType::parse(t),
            None => None,
        }
        .unwrap_or_else(|| {
            p.add(
                || format!("entries[{i}].metric_type"),
                "must be one of counter, gauge, histogram",
            );
            MetricType::Gauge
        });
        let unit = match e.unit {
            Some(u) if u.len() > MAX_NAME_BYTES => {
                p.add(
                    || format!("entries[{i}].unit"),
                    format!("at most {MAX_NAME_BYTES} bytes are allowed"),
                );
                None
            }
            other => other,
        };
        out.push(MetricRecord {
            timestamp: timestamp(e.timestamp, i, &mut p),
            name: name(e.name, i, "name", &mut p),
            value,
            metric_type,
            service: name(e.service, i, "service", &mut p),
            host: name(e.host, i, "host", &mut p),
            unit,
            attributes: attributes(e.attributes, i, &mut p),
        });
    }
    p.into_result(Batch {
        received_at: Cow::Owned(now_rfc3339()),
        agent_version: wire.agent_version,
        entries: Entries::Metrics(out),
    })
}

impl<'a> Batch<Cow<'a, str>> {
    fn placeholder() -> Self {
        Batch {
            received_at: Cow::Borrowed(""),
            agent_version: None,
            entries: Entries::Logs(Vec::new()),
        }
    }

    /// The same batch with every string owned, for the rare caller that
    /// keeps a parsed batch beyond its request body.
    pub fn into_owned(self) -> Batch {
        self.map_strings(Cow::into_owned)
    }
}

impl<S> Batch<S> {
    /// The same batch with each string passed through `f`.
    pub fn map_strings<T>(self, mut f: impl FnMut(S) -> T) -> Batch<T> {
        let attrs = |v: Vec<(S, AttrValue<S>)>, f: &mut dyn FnMut(S) -> T| {
            v.into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        AttrValue::Str(x) => AttrValue::Str(f(x)),
                        AttrValue::Int(x) => AttrValue::Int(x),
                        AttrValue::UInt(x) => AttrValue::UInt(x),
                        AttrValue::Float(x) => AttrValue::Float(x),
                        AttrValue::Bool(x) => AttrValue::Bool(x),
                    };
                    (f(k), v)
                })
                .collect()
        };
        let entries = match self.entries {
            Entries::Logs(v) => Entries::Logs(
                v.into_iter()
                    .map(|e| LogRecord {
                        timestamp: f(e.timestamp),
                        level: e.level,
                        message: f(e.message),
                        service: f(e.service),
                        host: f(e.host),
                        attributes: attrs(e.attributes, &mut f),
                    })
                    .collect(),
            ),
            Entries::Metrics(v) => Entries::Metrics(
                v.into_iter()
                    .map(|e| MetricRecord {
                        timestamp: f(e.timestamp),
                        name: f(e.name),
                        value: e.value,
                        metric_type: e.metric_type,
                        service: f(e.service),
                        host: f(e.host),
                        unit: e.unit.map(&mut f),
                        attributes: attrs(e.attributes, &mut f),
                    })
                    .collect(),
            ),
        };
        Batch {
            received_at: f(self.received_at),
            agent_version: self.agent_version.map(f),
            entries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_batch_entries: 3,
    };

    fn logs(json: &str) -> Result<Batch, Vec<Problem>> {
        validate_logs(serde_json::from_str(json).unwrap(), LIMITS).map(Batch::into_owned)
    }

    /// The canonical UTC form stays borrowed from the body, fractions
    /// included; any other form is rewritten; a date that leaves the years
    /// RFC 3339 can write once in UTC is refused, not a panic.
    #[test]
    fn timestamps_are_normalized_to_utc_and_canonical_ones_borrowed() {
        let ts = |raw: &'static str| {
            let mut p = Problems::default();
            let out = timestamp(Some(Cow::Borrowed(raw)), 0, &mut p);
            (out, p.list)
        };
        for canonical in [
            "2024-05-01T12:00:00Z",
            "2024-05-01T12:00:00.5Z",
            "2024-05-01T12:00:00.123456789Z",
        ] {
            let (out, problems) = ts(canonical);
            assert!(problems.is_empty(), "{problems:?}");
            assert!(matches!(out, Cow::Borrowed(s) if s == canonical), "{out:?}");
        }
        for (raw, want) in [
            ("2024-05-01t12:00:00z", "2024-05-01T12:00:00Z"),
            ("2024-05-01T14:00:00.500+02:00", "2024-05-01T12:00:00.5Z"),
        ] {
            let (out, problems) = ts(raw);
            assert!(problems.is_empty(), "{problems:?}");
            assert!(matches!(out, Cow::Owned(ref s) if s == want), "{out:?}");
        }
        for out_of_range in ["9999-12-31T23:59:59-00:01", "0000-01-01T00:30:00+01:00"] {
            let (_, problems) = ts(out_of_range);
            assert_eq!(problems.len(), 1, "{out_of_range}");
            assert_eq!(problems[0].field, "entries[0].timestamp");
            assert!(problems[0].problem.contains("0000 to 9999"), "{problems:?}");
        }
    }

    #[test]
    fn levels_are_case_insensitive_with_aliases_and_default_info() {
        let b = logs(
            r#"{"entries":[
            {"timestamp":"2024-01-01T00:00:00Z","level":"warn","message":"m","service":"s","host":"h"},
            {"timestamp":"2024-01-01T00:00:00+02:00","level":"Fatal","message":"m","service":"s","host":"h"},
            {"timestamp":"2024-01-01T00:00:00Z","message":"m","service":"s","host":"h","extra":1}]}"#,
        )
        .unwrap();
        let Entries::Logs(v) = b.entries else {
            panic!()
        };
        assert_eq!(v[0].level, Level::Warning);
        assert_eq!(v[1].level, Level::Critical);
        assert_eq!(v[1].timestamp, "2023-12-31T22:00:00Z");
        assert_eq!(v[2].level, Level::Info);
    }

    #[test]
    fn every_bad_field_is_named_with_its_index() {
        let errs = logs(
            r#"{"entries":[
            {"timestamp":"2024-01-01T00:00:00Z","level":"LOUD","message":"m","service":"s","host":"h"},
            {"timestamp":"yesterday","message":"m","service":"","host":"h"}]}"#,
        )
        .unwrap_err();
        let fields: Vec<_> = errs.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "entries[0].level",
                "entries[1].timestamp",
                "entries[1].service"
            ]
        );
    }

    #[test]
    fn attributes_are_sorted_and_a_repeated_key_keeps_its_last_value() {
        let b = logs(
            r#"{"entries":[{"service":"s","message":"m","host":"h","timestamp":"2024-01-01T00:00:00Z","attributes":
                {"z":1,"a":"x","m":true,"a":"y","esc\u0041":2}}]}"#,
        )
        .unwrap();
        let Entries::Logs(v) = &b.entries else {
            panic!("logs")
        };
        assert_eq!(
            v[0].attributes,
            vec![
                ("a".to_string(), AttrValue::Str("y".into())),
                ("escA".to_string(), AttrValue::UInt(2)),
                ("m".to_string(), AttrValue::Bool(true)),
                ("z".to_string(), AttrValue::UInt(1)),
            ]
        );
        let not_an_object = r#"{"entries":[{"attributes":[1]}]}"#;
        let err = serde_json::from_str::<WireLogBatch>(not_an_object)
            .err()
            .unwrap();
        assert!(err.to_string().contains("expected a map"), "{err}");
    }

    #[test]
    fn batch_size_bounds_are_enforced() {
        assert!(logs(r#"{"entries":[]}"#).is_err());
        let e = r#"{"timestamp":"2024-01-01T00:00:00Z","message":"m","service":"s","host":"h"}"#;
        let four = format!(r#"{{"entries":[{e},{e},{e},{e}]}}"#);
        let errs = logs(&four).unwrap_err();
        assert_eq!(errs[0].field, "entries");
    }

    #[test]
    fn metric_types_are_stored_lower_case() {
        let b = validate_metrics(
            serde_json::from_str(
                r#"{"entries":[{"timestamp":"2024-01-01T00:00:00Z","name":"cpu","value":1,
                "metric_type":"GAUGE","service":"s","host":"h","attributes":{"core":0,"ok":true}}]}"#,
            )
            .unwrap(),
            LIMITS,
        )
        .unwrap();
        let Entries::Metrics(v) = b.entries else {
            panic!()
        };
        assert_eq!(v[0].metric_type, MetricType::Gauge);
        assert_eq!(v[0].attributes.len(), 2);
    }
}
