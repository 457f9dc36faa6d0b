//! The Kafka message of one entry (SPEC §4): key, JSON value and headers.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::model::{AttrValue, Batch, Entries, Kind, LogRecord, MetricRecord};

/// One message ready for a producer.
#[derive(Debug, Clone, PartialEq)]
pub struct Message<'a> {
    pub kind: Kind,
    /// The entry's `service`: keeps per-service order within a partition.
    pub key: &'a str,
    /// The normalized entry plus `agent_version` and `received_at`.
    pub value: Vec<u8>,
    /// `<node_id>:<batch_seq>:<index>`: the same on every redelivery.
    pub ingest_id: String,
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

fn log_value(e: &LogRecord, b: &Batch) -> Vec<u8> {
    serde_json::to_vec(&LogValue {
        timestamp: &e.timestamp,
        level: e.level.as_str(),
        message: &e.message,
        service: &e.service,
        host: &e.host,
        attributes: Attrs(&e.attributes),
        agent_version: b.agent_version.as_deref(),
        received_at: &b.received_at,
    })
    .expect("a struct of strings and finite numbers always serializes")
}

fn metric_value(e: &MetricRecord, b: &Batch) -> Vec<u8> {
    serde_json::to_vec(&MetricValue {
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
    })
    .expect("a struct of strings and finite numbers always serializes")
}

/// Every message of a batch, in entry order.
pub fn messages<'a>(batch: &'a Batch, node_id: &str, seq: u64) -> Vec<Message<'a>> {
    let id = |i: usize| format!("{node_id}:{seq}:{i}");
    match &batch.entries {
        Entries::Logs(v) => v
            .iter()
            .enumerate()
            .map(|(i, e)| Message {
                kind: Kind::Logs,
                key: &e.service,
                value: log_value(e, batch),
                ingest_id: id(i),
            })
            .collect(),
        Entries::Metrics(v) => v
            .iter()
            .enumerate()
            .map(|(i, e)| Message {
                kind: Kind::Metrics,
                key: &e.service,
                value: metric_value(e, batch),
                ingest_id: id(i),
            })
            .collect(),
    }
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
        let m = messages(&b, "node", 7);
        assert_eq!(m[0].ingest_id, "node:7:0");
        assert_eq!(m[0].key, "api");
        let v: serde_json::Value = serde_json::from_slice(&m[0].value).unwrap();
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
        let v: serde_json::Value = serde_json::from_slice(&messages(&b, "n", 1)[0].value).unwrap();
        assert_eq!(v["metric_type"], "gauge");
        assert_eq!(v["unit"], "ratio");
        assert_eq!(v["agent_version"], serde_json::Value::Null);
    }
}
