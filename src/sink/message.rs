//! The Kafka message of one entry (SPEC §4): key, JSON value and headers.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::model::{AttrValue, Batch, Entries, Kind, LogRecord, MetricRecord};
use crate::queue::Stored;

/// One message, borrowed from a `Rendered` batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Message<'a> {
    pub kind: Kind,
    /// The entry's `service`: keeps per-service order within a partition.
    pub key: &'a str,
    /// The normalized entry plus `agent_version` and `received_at`.
    pub value: &'a [u8],
    /// `<node_id>:<batch_seq>:<index>`: the same on every redelivery, and
    /// on a replay from the dead letters (`Stored::write_ingest_id`).
    pub ingest_id: &'a str,
}

/// Every message of a batch rendered into a few shared buffers.
/// NOTE: one allocation per message (value, id) showed up as ~20% of the
/// Kafka drain's CPU in malloc/free; producers copy what they send anyway.
pub struct Rendered<'a> {
    kind: Kind,
    keys: Vec<&'a str>,
    values: Vec<u8>,
    value_ends: Vec<usize>,
    ids: String,
    id_ends: Vec<usize>,
}

impl<'a> Rendered<'a> {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn get(&self, i: usize) -> Message<'_> {
        let v0 = if i == 0 { 0 } else { self.value_ends[i - 1] };
        let d0 = if i == 0 { 0 } else { self.id_ends[i - 1] };
        Message {
            kind: self.kind,
            key: self.keys[i],
            value: &self.values[v0..self.value_ends[i]],
            ingest_id: &self.ids[d0..self.id_ends[i]],
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Message<'_>> {
        (0..self.len()).map(|i| self.get(i))
    }
}

pub const CONTENT_TYPE: &str = "application/json";

struct Attrs<'a>(&'a [(String, AttrValue)]);

impl Serialize for Attrs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            match v {
                AttrValue::Str(x) => m.serialize_entry(k, x)?,
                AttrValue::Int(x) => m.serialize_entry(k, x)?,
                AttrValue::UInt(x) => m.serialize_entry(k, x)?,
                AttrValue::Float(x) => m.serialize_entry(k, x)?,
                AttrValue::Bool(x) => m.serialize_entry(k, x)?,
            }
        }
        m.end()
    }
}

#[derive(Serialize)]
struct LogValue<'a> {
    timestamp: &'a str,
    level: &'static str,
    message: &'a str,
    service: &'a str,
    host: &'a str,
    attributes: Attrs<'a>,
    agent_version: Option<&'a str>,
    received_at: &'a str,
}

#[derive(Serialize)]
struct MetricValue<'a> {
    timestamp: &'a str,
    name: &'a str,
    value: f64,
    metric_type: &'static str,
    service: &'a str,
    host: &'a str,
    unit: Option<&'a str>,
    attributes: Attrs<'a>,
    agent_version: Option<&'a str>,
    received_at: &'a str,
}

fn write_log(out: &mut Vec<u8>, e: &LogRecord, b: &Batch) {
    serde_json::to_writer(
        out,
        &LogValue {
            timestamp: &e.timestamp,
            level: e.level.as_str(),
            message: &e.message,
            service: &e.service,
            host: &e.host,
            attributes: Attrs(&e.attributes),
            agent_version: b.agent_version.as_deref(),
            received_at: &b.received_at,
        },
    )
    .expect("a struct of strings and finite numbers always serializes");
}

fn write_metric(out: &mut Vec<u8>, e: &MetricRecord, b: &Batch) {
    serde_json::to_writer(
        out,
        &MetricValue {
            timestamp: &e.timestamp,
            name: &e.name,
            value: e.value,
            metric_type: e.metric_type.as_str(),
            service: &e.service,
            host: &e.host,
            unit: e.unit.as_deref(),
            attributes: Attrs(&e.attributes),
            agent_version: b.agent_version.as_deref(),
            received_at: &b.received_at,
        },
    )
    .expect("a struct of strings and finite numbers always serializes");
}

/// Renders every message of a batch, in entry order.
pub fn render<'a>(stored: &'a Stored, node_id: &str) -> Rendered<'a> {
    let batch = &stored.batch;
    let n = batch.len();
    let mut r = Rendered {
        kind: batch.kind(),
        keys: Vec::with_capacity(n),
        values: Vec::with_capacity(n * 320),
        value_ends: Vec::with_capacity(n),
        ids: String::with_capacity(n * (node_id.len() + 16)),
        id_ends: Vec::with_capacity(n),
    };
    for i in 0..n {
        match &batch.entries {
            Entries::Logs(v) => {
                r.keys.push(&v[i].service);
                write_log(&mut r.values, &v[i], batch);
            }
            Entries::Metrics(v) => {
                r.keys.push(&v[i].service);
                write_metric(&mut r.values, &v[i], batch);
            }
        }
        r.value_ends.push(r.values.len());
        stored.write_ingest_id(node_id, i, &mut r.ids);
        r.id_ends.push(r.ids.len());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Level, MetricType};

    #[test]
    fn log_value_is_the_normalized_entry_plus_ingest_fields() {
        let b = Batch {
            received_at: "2024-05-01T00:00:01Z".into(),
            agent_version: Some("0.1.0".into()),
            entries: Entries::Logs(vec![LogRecord {
                timestamp: "2024-05-01T00:00:00Z".into(),
                level: Level::Warning,
                message: "disk \"almost\" full".into(),
                service: "api".into(),
                host: "edge-1".into(),
                attributes: vec![("pct".into(), AttrValue::Float(91.5))],
            }]),
        };
        let s = Stored {
            seq: 7,
            batch: b,
            origin: None,
        };
        let r = render(&s, "node");
        let m = r.get(0);
        assert_eq!(m.ingest_id, "node:7:0");
        assert_eq!(m.key, "api");
        let v: serde_json::Value = serde_json::from_slice(m.value).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"timestamp":"2024-05-01T00:00:00Z","level":"WARNING",
                "message":"disk \"almost\" full","service":"api","host":"edge-1",
                "attributes":{"pct":91.5},"agent_version":"0.1.0",
                "received_at":"2024-05-01T00:00:01Z"})
        );
    }

    #[test]
    fn metric_value_carries_lower_case_type_and_unit() {
        let b = Batch {
            received_at: "2024-05-01T00:00:01Z".into(),
            agent_version: None,
            entries: Entries::Metrics(vec![MetricRecord {
                timestamp: "2024-05-01T00:00:00Z".into(),
                name: "cpu".into(),
                value: 0.5,
                metric_type: MetricType::Gauge,
                service: "api".into(),
                host: "h".into(),
                unit: Some("ratio".into()),
                attributes: vec![],
            }]),
        };
        let s = Stored {
            seq: 1,
            batch: b,
            origin: None,
        };
        let v: serde_json::Value = serde_json::from_slice(render(&s, "n").get(0).value).unwrap();
        assert_eq!(v["metric_type"], "gauge");
        assert_eq!(v["unit"], "ratio");
        assert_eq!(v["agent_version"], serde_json::Value::Null);
    }
}
