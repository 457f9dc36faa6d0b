//! One log line → one LogEntry (SPEC §7), serialized once.
//!
//! A line that is a JSON object with a string `message` is taken as an entry
//! (its `timestamp`, `level` and `attributes` used when valid); any other line
//! is the message, with the level taken from a leading token (`ERROR:`,
//! `[WARN]`, `level=info`, `CRITICAL ...`, case-insensitive), else INFO.
//! Invalid UTF-8 is replaced with U+FFFD; a message over 64 KiB is cut at a
//! character boundary and marked `"truncated": "true"`.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Map, Value};

/// The server's limit on `message` (SPEC §3).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Who the entries are from.
pub struct Source<'a> {
    pub service: &'a str,
    pub host: &'a str,
}

#[derive(Serialize)]
struct Entry<'a> {
    timestamp: &'a str,
    level: &'static str,
    message: &'a str,
    service: &'a str,
    host: &'a str,
    #[serde(skip_serializing_if = "Map::is_empty")]
    attributes: Map<String, Value>,
}

/// The entry for `line` (without its line ending), as JSON bytes; `None`
/// for an empty line. `read_at` is the RFC 3339 time it was read.
pub fn entry(line: &[u8], source: &Source<'_>, read_at: &str) -> Option<Vec<u8>> {
    let line = strip_line_end(line);
    if line.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(line);
    let mut attributes = Map::new();
    let (mut timestamp, mut level, mut message): (Cow<'_, str>, &'static str, Cow<'_, str>) = (
        Cow::Borrowed(read_at),
        level_of(&text),
        Cow::Borrowed(&*text),
    );
    if text.starts_with('{') {
        if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(&text) {
            if let Some(Value::String(m)) = obj.get("message") {
                message = Cow::Owned(m.clone());
                level = obj
                    .get("level")
                    .and_then(Value::as_str)
                    .and_then(canonical_level)
                    .unwrap_or("INFO");
                if let Some(Value::String(t)) = obj.get("timestamp") {
                    if crate::model::is_valid_timestamp(t) {
                        timestamp = Cow::Owned(t.clone());
                    }
                }
                if let Some(Value::Object(attrs)) = obj.get("attributes") {
                    for (k, v) in attrs {
                        if matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
                            && !k.is_empty()
                            && k.len() <= 256
                        {
                            attributes.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
        }
    }
    let (message, truncated) = truncate(&message, MAX_MESSAGE_BYTES);
    if truncated {
        attributes.insert("truncated".into(), Value::String("true".into()));
    }
    let entry = Entry {
        timestamp: &timestamp,
        level,
        message,
        service: source.service,
        host: source.host,
        attributes,
    };
    Some(serde_json::to_vec(&entry).expect("strings and JSON values always serialize"))
}

fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// At most `max` bytes, cut at a character boundary; whether it was cut.
fn truncate(s: &str, max: usize) -> (&str, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

/// The canonical level of a name (SPEC §3: aliases WARN, FATAL).
fn canonical_level(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_uppercase().as_str() {
        "TRACE" => "TRACE",
        "DEBUG" => "DEBUG",
        "INFO" => "INFO",
        "WARN" | "WARNING" => "WARNING",
        "ERROR" => "ERROR",
        "CRITICAL" | "FATAL" => "CRITICAL",
        _ => return None,
    })
}

/// The level a plain line announces in its first token, else INFO.
fn level_of(text: &str) -> &'static str {
    let first = text.split_whitespace().next().unwrap_or("");
    let token = first.trim_start_matches('[');
    let token = match token.split_once('=') {
        Some((k, v)) if k.eq_ignore_ascii_case("level") => v.trim_matches('"'),
        _ => token,
    };
    // The leading word: `ERROR:`, `[WARN]` and `ERROR:Database` alike.
    let word = token
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("");
    let rest = &token[word.len()..];
    if !(rest.is_empty() || rest.starts_with([':', ']', '"'])) {
        return "INFO"; // e.g. `error-prone`
    }
    canonical_level(word).unwrap_or("INFO")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &[u8]) -> Value {
        let src = Source {
            service: "api-server",
            host: "edge-1",
        };
        serde_json::from_slice(&entry(line, &src, "2026-11-29T00:00:00Z").unwrap()).unwrap()
    }

    #[test]
    fn levels_come_from_the_leading_token() {
        for (line, level) in [
            ("ERROR: Database connection failed", "ERROR"),
            ("[warn] disk almost full", "WARNING"),
            ("level=info msg=ok", "INFO"),
            ("level=\"debug\" x", "DEBUG"),
            ("CRITICAL reactor breach", "CRITICAL"),
            ("fatal: giving up", "CRITICAL"),
            ("errors are fine", "INFO"),
            ("ERROR:Database down", "ERROR"),
            ("error-prone code", "INFO"),
            ("just text", "INFO"),
        ] {
            let v = parse(line.as_bytes());
            assert_eq!(v["level"], level, "{line}");
            assert_eq!(v["message"], line);
            assert_eq!(v["service"], "api-server");
            assert_eq!(v["host"], "edge-1");
            assert_eq!(v["timestamp"], "2026-11-29T00:00:00Z");
        }
    }

    #[test]
    fn a_json_line_is_taken_as_an_entry_where_valid() {
        let v = parse(br#"{"message":"hi","level":"warn","timestamp":"2026-01-02T03:04:05Z","attributes":{"a":1,"b":"x","c":[1],"d":true}}"#);
        assert_eq!(v["message"], "hi");
        assert_eq!(v["level"], "WARNING");
        assert_eq!(v["timestamp"], "2026-01-02T03:04:05Z");
        assert_eq!(v["attributes"], serde_json::json!({"a":1,"b":"x","d":true}));
        let v = parse(br#"{"message":"hi","level":"loud","timestamp":"yesterday"}"#);
        assert_eq!(
            (v["level"].as_str(), v["timestamp"].as_str()),
            (Some("INFO"), Some("2026-11-29T00:00:00Z"))
        );
        // Valid RFC 3339, but past the years ingest can store in UTC: the
        // line's own time is dropped, not the batch it would get refused.
        let v = parse(br#"{"message":"hi","timestamp":"9999-12-31T23:59:59-00:01"}"#);
        assert_eq!(v["timestamp"], "2026-11-29T00:00:00Z");
        // Without a string message it is just text.
        let v = parse(br#"{"msg":"hi"}"#);
        assert_eq!(v["message"], r#"{"msg":"hi"}"#);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_long_lines_are_cut_and_marked() {
        let v = parse(b"ERROR: bad \xff\xfe bytes\r\n");
        assert_eq!(v["message"], "ERROR: bad \u{fffd}\u{fffd} bytes");
        let long = "é".repeat(40_000); // 80,000 bytes
        let v = parse(long.as_bytes());
        let m = v["message"].as_str().unwrap();
        assert!(m.len() <= MAX_MESSAGE_BYTES && m.len() > MAX_MESSAGE_BYTES - 2);
        assert_eq!(v["attributes"]["truncated"], "true");
        assert!(entry(
            b"\n",
            &Source {
                service: "s",
                host: "h"
            },
            "t"
        )
        .is_none());
    }
}
