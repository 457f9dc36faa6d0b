//! OTLP values (`AnyValue`, attributes, times, ids) in the terms of our
//! entries (SPEC §8): a string stays a string, anything else becomes compact
//! JSON; attributes merge resource < scope < record.

use std::fmt::Write as _;

use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::model::{AttrValue, MAX_NAME_BYTES};

/// A log body or attribute as text: a string as is, any other value as
/// compact JSON (an unset value is `null`).
pub fn text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        other => {
            let mut out = String::new();
            write_json(&mut out, other);
            out
        }
    }
}

/// An attribute value as our entries hold it: strings, booleans and finite
/// numbers keep their type; arrays, maps, bytes, non-finite doubles and
/// unset values become their compact JSON text.
pub fn attr(v: Option<&AnyValue>) -> AttrValue {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => AttrValue::Str(s.clone()),
        Some(Value::BoolValue(b)) => AttrValue::Bool(*b),
        Some(Value::IntValue(i)) => AttrValue::Int(*i),
        Some(Value::DoubleValue(d)) if d.is_finite() => AttrValue::Float(*d),
        other => {
            let mut out = String::new();
            write_json(&mut out, other);
            AttrValue::Str(out)
        }
    }
}

/// `attr`, taking the value: a string moves instead of being copied.
pub fn attr_owned(v: Option<AnyValue>) -> AttrValue {
    match v.and_then(|v| v.value) {
        Some(Value::StringValue(s)) => AttrValue::Str(s),
        other => attr(Some(&AnyValue { value: other })),
    }
}

/// `text`, taking the value: a string body moves instead of being copied.
pub fn text_owned(v: AnyValue) -> String {
    match v.value {
        Some(Value::StringValue(s)) => s,
        other => text(Some(&AnyValue { value: other })),
    }
}

/// The string form of an attribute that names something (`service.name`):
/// the string itself, or the compact JSON of any other value.
pub fn name_of(v: Option<&AnyValue>) -> String {
    text(v)
}

/// Compact JSON of a value. Recursion is bounded by the decoders (prost's
/// limit of 100 nested messages, serde_json's of 128 nested values).
fn write_json(out: &mut String, v: Option<&Value>) {
    match v {
        None => out.push_str("null"),
        Some(Value::StringValue(s)) => write_str(out, s),
        Some(Value::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(Value::IntValue(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(Value::DoubleValue(d)) => write_double(out, *d),
        Some(Value::BytesValue(b)) => {
            write_str(out, &base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(Value::StringValueStrindex(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(Value::ArrayValue(a)) => {
            out.push('[');
            for (i, item) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item.value.as_ref());
            }
            out.push(']');
        }
        Some(Value::KvlistValue(kv)) => {
            out.push('{');
            for (i, item) in kv.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(out, &item.key);
                out.push(':');
                write_json(out, item.value.as_ref().and_then(|v| v.value.as_ref()));
            }
            out.push('}');
        }
    }
}

/// JSON has no NaN or infinities: those are written as the strings
/// `"NaN"`, `"Infinity"` and `"-Infinity"`, as proto3 JSON does.
fn write_double(out: &mut String, d: f64) {
    if d.is_nan() {
        out.push_str("\"NaN\"");
    } else if d.is_infinite() {
        out.push_str(if d > 0.0 {
            "\"Infinity\""
        } else {
            "\"-Infinity\""
        });
    } else {
        // serde_json's shortest round-trip form, like every other number
        // we write.
        out.push_str(&serde_json::Number::from_f64(d).map_or("null".into(), |n| n.to_string()));
    }
}

fn write_str(out: &mut String, s: &str) {
    // serde_json escapes exactly as JSON requires; a String never fails.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

/// Attributes merged in order, a later key replacing an earlier one, kept
/// sorted by key (as `/logs` stores them) so that merging n keys costs
/// O(n log n), not a search per key.
#[derive(Debug, Clone, Default)]
pub struct Attributes(pub Vec<(String, AttrValue)>);

impl Attributes {
    /// Adds `kvs` over what is there. A key that is empty or longer than
    /// `MAX_NAME_BYTES` makes the record unmappable (as on `/logs`).
    pub fn merge(&mut self, kvs: &[KeyValue]) -> Result<(), String> {
        self.0.reserve(kvs.len());
        for kv in kvs {
            check_key(&kv.key)?;
            self.0.push((kv.key.clone(), attr(kv.value.as_ref())));
        }
        self.settle();
        Ok(())
    }

    /// `merge`, taking the attributes: keys and strings move. The keys were
    /// checked (`check_key`) before anything was copied for the record.
    pub fn merge_owned(&mut self, kvs: Vec<KeyValue>) {
        self.0.reserve(kvs.len());
        for kv in kvs {
            self.0.push((kv.key, attr_owned(kv.value)));
        }
        self.settle();
    }

    /// Sets one key in the sorted list.
    pub fn set(&mut self, key: String, value: AttrValue) {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(&key)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (key, value)),
        }
    }

    /// Bytes of keys and values, the measure of `Context::max_bytes`.
    pub fn weight(&self) -> usize {
        weight_of(&self.0)
    }

    /// Sorts by key (stable: equal keys stay in the order added) and keeps
    /// the value added last for each key.
    fn settle(&mut self) {
        if self.0.len() < 2 {
            return;
        }
        self.0.sort_by(|a, b| a.0.cmp(&b.0));
        self.0.dedup_by(|later, kept| {
            if later.0 == kept.0 {
                std::mem::swap(&mut later.1, &mut kept.1);
                true
            } else {
                false
            }
        });
    }
}

/// Memory an attribute takes besides its text: the tuple and the key's
/// allocation.
const ATTRIBUTE_OVERHEAD: usize = 56;

/// Bytes an attribute list takes in memory: keys, string values and what
/// each attribute costs besides.
pub fn weight_of(list: &[(String, AttrValue)]) -> usize {
    list.iter()
        .map(|(k, v)| {
            ATTRIBUTE_OVERHEAD
                + k.len()
                + match v {
                    AttrValue::Str(s) => s.len(),
                    _ => 0,
                }
        })
        .sum()
}

pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_NAME_BYTES {
        return Err(format!(
            "attribute key `{}` must be 1 to {MAX_NAME_BYTES} bytes",
            key.chars().take(32).collect::<String>()
        ));
    }
    Ok(())
}

/// The string value of the attribute `key` in `kvs`, if set and non-empty.
pub fn find<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    kvs.iter()
        .rev()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .filter(|v| match &v.value {
            None => false,
            Some(Value::StringValue(s)) => !s.is_empty(),
            Some(_) => true,
        })
}

/// Nanoseconds since the epoch as RFC 3339 UTC; 0 means "not set". Every
/// u64 is a representable time (it ends in 2554).
pub fn time_of(nanos: u64) -> Option<String> {
    if nanos == 0 {
        return None;
    }
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
}

/// A trace or span id as lower-case hex; empty and all-zero ids are unset.
pub fn id_hex(id: &[u8]) -> Option<String> {
    (!id.is_empty() && id.iter().any(|b| *b != 0)).then(|| hex::encode(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn v(value: Value) -> AnyValue {
        AnyValue { value: Some(value) }
    }

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(v(value)),
            key_strindex: 0,
        }
    }

    #[test]
    fn a_string_body_is_kept_as_is_and_any_other_as_compact_json() {
        assert_eq!(
            text(Some(&v(Value::StringValue("a \"b\"".into())))),
            "a \"b\""
        );
        assert_eq!(text(Some(&v(Value::IntValue(-7)))), "-7");
        assert_eq!(text(Some(&v(Value::BoolValue(true)))), "true");
        assert_eq!(text(Some(&v(Value::DoubleValue(0.5)))), "0.5");
        assert_eq!(text(Some(&v(Value::DoubleValue(f64::NAN)))), "\"NaN\"");
        assert_eq!(text(Some(&v(Value::BytesValue(vec![1, 2])))), "\"AQI=\"");
        assert_eq!(text(None), "null");
        assert_eq!(text(Some(&AnyValue { value: None })), "null");
        let nested = v(Value::KvlistValue(KeyValueList {
            values: vec![
                kv(
                    "a",
                    Value::ArrayValue(ArrayValue {
                        values: vec![v(Value::IntValue(1)), v(Value::StringValue("x".into()))],
                    }),
                ),
                kv("b\n", Value::BoolValue(false)),
            ],
        }));
        assert_eq!(text(Some(&nested)), r#"{"a":[1,"x"],"b\n":false}"#);
    }

    #[test]
    fn scalar_attributes_keep_their_type_and_the_rest_become_json_text() {
        assert_eq!(attr(Some(&v(Value::IntValue(3)))), AttrValue::Int(3));
        assert_eq!(
            attr(Some(&v(Value::BoolValue(true)))),
            AttrValue::Bool(true)
        );
        assert_eq!(
            attr(Some(&v(Value::DoubleValue(1.5)))),
            AttrValue::Float(1.5)
        );
        assert_eq!(
            attr(Some(&v(Value::DoubleValue(f64::INFINITY)))),
            AttrValue::Str("\"Infinity\"".into())
        );
        let list = v(Value::ArrayValue(ArrayValue {
            values: vec![v(Value::IntValue(1)), v(Value::IntValue(2))],
        }));
        assert_eq!(attr(Some(&list)), AttrValue::Str("[1,2]".into()));
    }

    #[test]
    fn later_attributes_replace_earlier_ones_and_bad_keys_are_refused() {
        let mut a = Attributes::default();
        a.merge(&[
            kv("r", Value::IntValue(1)),
            kv("k", Value::StringValue("resource".into())),
            kv("k", Value::StringValue("resource again".into())),
        ])
        .unwrap();
        assert_eq!(
            a.0[0],
            ("k".to_string(), AttrValue::Str("resource again".into()))
        );
        a.merge(&[kv("k", Value::StringValue("record".into()))])
            .unwrap();
        assert_eq!(
            a.0,
            vec![
                ("k".to_string(), AttrValue::Str("record".into())),
                ("r".to_string(), AttrValue::Int(1))
            ]
        );
        assert!(a.merge(&[kv("", Value::IntValue(1))]).is_err());
        assert!(a
            .merge(&[kv(&"x".repeat(257), Value::IntValue(1))])
            .is_err());
        a.set("a".into(), AttrValue::Bool(true));
        a.set("r".into(), AttrValue::Int(2));
        let keys: Vec<_> = a.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "k", "r"]);
    }

    #[test]
    fn merging_many_keys_is_not_quadratic() {
        // 200,000 distinct keys: a search per key would take minutes.
        let kvs: Vec<_> = (0..200_000)
            .map(|i| kv(&format!("k{i}"), Value::IntValue(i)))
            .collect();
        let start = std::time::Instant::now();
        let mut a = Attributes::default();
        a.merge(&kvs).unwrap();
        assert_eq!(a.0.len(), 200_000);
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn times_and_ids() {
        assert_eq!(time_of(0), None);
        assert_eq!(
            time_of(1_700_000_000_123_456_789).unwrap(),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert!(time_of(u64::MAX).unwrap().starts_with("2554-"));
        assert_eq!(id_hex(&[]), None);
        assert_eq!(id_hex(&[0; 8]), None);
        assert_eq!(id_hex(&[0xab, 0x01]).unwrap(), "ab01");
    }
}
