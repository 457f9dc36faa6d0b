//! The Kafka message of one entry (SPEC §4): key, JSON value and headers.

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

/// Writes `s` as a JSON string, byte for byte as serde_json writes it.
/// NOTE: serde_json looks every byte up in its escape table
/// (`serialize_str`, 6–8% of the Kafka drain's CPU with mimalloc, issue 12's
/// third pass); most strings need no escape, which a scan the compiler
/// vectorises finds 16 bytes at a time. The rest go to serde_json.
fn write_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        serde_json::to_writer(&mut *out, s).expect("a string always serializes");
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// Whether JSON needs an escape in `bytes`: a quote, a backslash or a
/// control character. No early exit inside a chunk, so it vectorises.
fn needs_escape(bytes: &[u8]) -> bool {
    bytes.chunks(64).any(|chunk| {
        chunk.iter().fold(false, |any, &b| {
            any | (b < 0x20) | (b == b'"') | (b == b'\\')
        })
    })
}

/// A number or a boolean, as serde_json writes it (ryu, itoa, `null` for a
/// float that is not finite).
fn write_scalar<T: Serialize>(out: &mut Vec<u8>, x: T) {
    serde_json::to_writer(&mut *out, &x).expect("a number always serializes");
}

/// One JSON object's fields, written in order: `{"k":v,"k":v,…}`. The keys
/// are ours and need no escape.
struct Object<'o> {
    /// The batch's shared value buffer; the object is appended to it.
    out: &'o mut Vec<u8>,
    /// Whether `{` is written: the next field needs a `,` before it.
    opened: bool,
}

impl<'o> Object<'o> {
    fn new(out: &'o mut Vec<u8>) -> Self {
        Object { out, opened: false }
    }

    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        self.out.push(if self.opened { b',' } else { b'{' });
        self.opened = true;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    fn str(&mut self, key: &str, value: &str) -> &mut Self {
        write_str(self.key(key), value);
        self
    }

    fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.str(key, v),
            None => {
                self.key(key).extend_from_slice(b"null");
                self
            }
        }
    }

    fn scalar<T: Serialize>(&mut self, key: &str, value: T) -> &mut Self {
        write_scalar(self.key(key), value);
        self
    }

    fn attrs<S: AsRef<str>>(&mut self, attrs: &[(S, AttrValue<S>)]) -> &mut Self {
        write_attrs(self.key("attributes"), attrs);
        self
    }

    /// Appends the batch's `IngestFields` and closes the object.
    fn ingest_fields_and_close(&mut self, fields: &IngestFields) {
        self.out.extend_from_slice(&fields.0);
    }
}

/// The fields ingest adds to every entry of a batch, and the closing brace:
/// `,"agent_version":…,"received_at":…}`. NOTE: the same bytes for every
/// entry of a batch, so rendered (and scanned for escapes) once per batch,
/// not once per entry.
struct IngestFields(Vec<u8>);

impl IngestFields {
    fn of<S: AsRef<str>>(b: &Batch<S>) -> IngestFields {
        let mut out = Vec::new();
        // Every value has fields before these, so `{` is written.
        Object {
            out: &mut out,
            opened: true,
        }
        .opt_str("agent_version", b.agent_version.as_ref().map(AsRef::as_ref))
        .str("received_at", b.received_at.as_ref());
        out.push(b'}');
        IngestFields(out)
    }
}

fn write_attrs<S: AsRef<str>>(out: &mut Vec<u8>, attrs: &[(S, AttrValue<S>)]) {
    out.push(b'{');
    for (i, (k, v)) in attrs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k.as_ref());
        out.push(b':');
        match v {
            AttrValue::Str(x) => write_str(out, x.as_ref()),
            AttrValue::Int(x) => write_scalar(out, x),
            AttrValue::UInt(x) => write_scalar(out, x),
            AttrValue::Float(x) => write_scalar(out, x),
            AttrValue::Bool(x) => write_scalar(out, x),
        }
    }
    out.push(b'}');
}

/// `{"timestamp":…,"level":…,"message":…,"service":…,"host":…,
/// "attributes":{…},"agent_version":…,"received_at":…}` (SPEC §4).
fn write_log<S: AsRef<str>>(out: &mut Vec<u8>, e: &LogRecord<S>, b: &IngestFields) {
    Object::new(out)
        .str("timestamp", e.timestamp.as_ref())
        .str("level", e.level.as_str())
        .str("message", e.message.as_ref())
        .str("service", e.service.as_ref())
        .str("host", e.host.as_ref())
        .attrs(&e.attributes)
        .ingest_fields_and_close(b);
}

/// `{"timestamp":…,"name":…,"value":…,"metric_type":…,"service":…,
/// "host":…,"unit":…,"attributes":{…},"agent_version":…,"received_at":…}`.
fn write_metric<S: AsRef<str>>(out: &mut Vec<u8>, e: &MetricRecord<S>, b: &IngestFields) {
    Object::new(out)
        .str("timestamp", e.timestamp.as_ref())
        .str("name", e.name.as_ref())
        .scalar("value", e.value)
        .str("metric_type", e.metric_type.as_str())
        .str("service", e.service.as_ref())
        .str("host", e.host.as_ref())
        .opt_str("unit", e.unit.as_ref().map(AsRef::as_ref))
        .attrs(&e.attributes)
        .ingest_fields_and_close(b);
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
    let fields = IngestFields::of(batch);
    for i in 0..n {
        match &batch.entries {
            Entries::Logs(v) => {
                r.keys.push_str(v[i].service.as_ref());
                write_log(&mut r.values, &v[i], &fields);
            }
            Entries::Metrics(v) => {
                r.keys.push_str(v[i].service.as_ref());
                write_metric(&mut r.values, &v[i], &fields);
            }
        }
        stored.write_ingest_id(node_id, i, &mut r.ids);
        r.ends.push([r.keys.len(), r.values.len(), r.ids.len()]);
    }
    r
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::ser::{SerializeMap, Serializer};

    use super::*;
    use crate::model::{Level, MetricType};

    // The values as serde_json renders them from derived `Serialize`: what
    // every message was before the hand-written renderer, and its oracle.
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

    fn attr_value() -> impl Strategy<Value = AttrValue> {
        prop_oneof![
            text().prop_map(AttrValue::Str),
            any::<i64>().prop_map(AttrValue::Int),
            any::<u64>().prop_map(AttrValue::UInt),
            any::<f64>().prop_map(AttrValue::Float),
            any::<bool>().prop_map(AttrValue::Bool),
        ]
    }

    /// Plain strings, and strings with one byte JSON escapes (a quote, a
    /// backslash, a control character) after a plain run of any length up
    /// to past two 64-byte scan chunks, then anything.
    fn text() -> impl Strategy<Value = String> {
        let escaped = ("[a-zé ]{0,150}", "[\"\\\\\\x00-\\x1f]", any::<String>())
            .prop_map(|(plain, escaped, rest)| plain + &escaped + &rest);
        prop_oneof![any::<String>(), "[a-z\\x7f é]{0,150}", escaped]
    }

    proptest! {
        #[test]
        fn values_are_byte_for_byte_what_serde_json_renders(
            strings in proptest::collection::vec(text(), 6),
            attributes in proptest::collection::vec((text(), attr_value()), 0..6),
            value in any::<f64>(),
            agent_version in proptest::option::of(text()),
            unit in proptest::option::of(text()),
        ) {
            let mut out = Vec::new();
            let log = LogRecord {
                timestamp: strings[0].clone(),
                level: Level::Error,
                message: strings[1].clone(),
                service: strings[2].clone(),
                host: strings[3].clone(),
                attributes: attributes.clone(),
            };
            let batch: Batch = Batch {
                received_at: strings[4].clone(),
                agent_version: agent_version.clone(),
                entries: Entries::Logs(vec![]),
            };
            write_log(&mut out, &log, &IngestFields::of(&batch));
            let expected = serde_json::to_vec(&LogValue {
                timestamp: &log.timestamp,
                level: log.level.as_str(),
                message: &log.message,
                service: &log.service,
                host: &log.host,
                attributes: Attrs(&log.attributes),
                agent_version: agent_version.as_deref(),
                received_at: &batch.received_at,
            }).unwrap();
            prop_assert_eq!(&out, &expected);

            out.clear();
            let metric = MetricRecord {
                timestamp: strings[0].clone(),
                name: strings[5].clone(),
                value,
                metric_type: MetricType::Counter,
                service: strings[2].clone(),
                host: strings[3].clone(),
                unit: unit.clone(),
                attributes: attributes.clone(),
            };
            write_metric(&mut out, &metric, &IngestFields::of(&batch));
            let expected = serde_json::to_vec(&MetricValue {
                timestamp: &metric.timestamp,
                name: &metric.name,
                value,
                metric_type: metric.metric_type.as_str(),
                service: &metric.service,
                host: &metric.host,
                unit: unit.as_deref(),
                attributes: Attrs(&metric.attributes),
                agent_version: agent_version.as_deref(),
                received_at: &batch.received_at,
            }).unwrap();
            prop_assert_eq!(&out, &expected);
        }
    }

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
