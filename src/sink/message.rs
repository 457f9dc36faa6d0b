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

/// Every message of a queued batch, rendered into a few shared buffers:
/// what the forwarder hands a sink.
/// NOTE: one allocation per message (value, id) showed up as ~20% of the
/// Kafka drain's CPU in malloc/free; producers copy what they send anyway.
/// Owned, so it is rendered where the record is read (on the blocking pool,
/// from strings borrowed from the record) and the forwarder only sends.
#[derive(Debug)]
pub struct Rendered {
    /// The batch's queue sequence number.
    pub seq: u64,
    kind: Kind,
    keys: String,
    values: Vec<u8>,
    ids: String,
    /// Where message `i` ends in `keys`, `values` and `ids`.
    ends: Vec<[usize; 3]>,
}

impl Rendered {
    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, i: usize) -> Message<'_> {
        let [k0, v0, d0] = if i == 0 { [0; 3] } else { self.ends[i - 1] };
        let [k1, v1, d1] = self.ends[i];
        Message {
            kind: self.kind,
            key: &self.keys[k0..k1],
            value: &self.values[v0..v1],
            ingest_id: &self.ids[d0..d1],
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Message<'_>> {
        (0..self.len()).map(|i| self.get(i))
    }
}

pub const CONTENT_TYPE: &str = "application/json";

struct Attrs<'a, T>(&'a [(T, AttrValue<T>)]);

impl<T: AsRef<str>> Serialize for Attrs<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            let k = k.as_ref();
            match v {
                AttrValue::Str(x) => m.serialize_entry(k, x.as_ref())?,
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
#[serde(bound = "")]
struct LogValue<'a, S: AsRef<str>> {
    timestamp: &'a str,
    level: &'static str,
    message: &'a str,
    service: &'a str,
    host: &'a str,
    attributes: Attrs<'a, S>,
    agent_version: Option<&'a str>,
    received_at: &'a str,
}

#[derive(Serialize)]
#[serde(bound = "")]
struct MetricValue<'a, S: AsRef<str>> {
    timestamp: &'a str,
    name: &'a str,
    value: f64,
    metric_type: &'static str,
    service: &'a str,
    host: &'a str,
    unit: Option<&'a str>,
    attributes: Attrs<'a, S>,
    agent_version: Option<&'a str>,
    received_at: &'a str,
}

fn write_log<S: AsRef<str>>(out: &mut Vec<u8>, e: &LogRecord<S>, b: &Batch<S>) {
    serde_json::to_writer(
        out,
        &LogValue {
            timestamp: e.timestamp.as_ref(),
            level: e.level.as_str(),
            message: e.message.as_ref(),
            service: e.service.as_ref(),
            host: e.host.as_ref(),
            attributes: Attrs(&e.attributes),
            agent_version: b.agent_version.as_ref().map(AsRef::as_ref),
            received_at: b.received_at.as_ref(),
        },
    )
    .expect("a struct of strings and finite numbers always serializes");
}

fn write_metric<S: AsRef<str>>(out: &mut Vec<u8>, e: &MetricRecord<S>, b: &Batch<S>) {
    serde_json::to_writer(
        out,
        &MetricValue {
            timestamp: e.timestamp.as_ref(),
            name: e.name.as_ref(),
            value: e.value,
            metric_type: e.metric_type.as_str(),
            service: e.service.as_ref(),
            host: e.host.as_ref(),
            unit: e.unit.as_ref().map(AsRef::as_ref),
            attributes: Attrs(&e.attributes),
            agent_version: b.agent_version.as_ref().map(AsRef::as_ref),
            received_at: b.received_at.as_ref(),
        },
    )
    .expect("a struct of strings and finite numbers always serializes");
}

/// Renders every message of a batch, in entry order.
pub fn render<S: AsRef<str>>(stored: &Stored<S>, node_id: &str) -> Rendered {
    let batch = &stored.batch;
    let n = batch.len();
    let mut r = Rendered {
        seq: stored.seq,
        kind: batch.kind(),
        keys: String::with_capacity(n * 16),
        values: Vec::with_capacity(n * 320),
        ids: String::with_capacity(n * (node_id.len() + 16)),
        ends: Vec::with_capacity(n),
    };
    for i in 0..n {
        match &batch.entries {
            Entries::Logs(v) => {
                r.keys.push_str(v[i].service.as_ref());
                write_log(&mut r.values, &v[i], batch);
            }
            Entries::Metrics(v) => {
                r.keys.push_str(v[i].service.as_ref());
                write_metric(&mut r.values, &v[i], batch);
            }
        }
        stored.write_ingest_id(node_id, i, &mut r.ids);
        r.ends.push([r.keys.len(), r.values.len(), r.ids.len()]);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Level, MetricType};

    #[test]
    fn log_value_is_the_normalized_entry_plus_ingest_fields() {
        let b: Batch = Batch {
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
        let b: Batch = Batch {
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
