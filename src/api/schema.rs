//! Request schemas as the OpenAPI document shows them.
//!
//! Parsing itself goes through `model`'s borrowed wire types (faster, and
//! validation names every field at fault); these types only describe the
//! contract of SPEC §3 to `/docs` and `/openapi.json`.

use std::collections::BTreeMap;

use poem_openapi::{Object, Union};

/// An attribute value.
#[derive(Debug, Union)]
#[oai(one_of = false)]
pub enum AttributeSchema {
    Str(String),
    Num(f64),
    Bool(bool),
}

/// One log entry. Unknown fields are ignored.
#[derive(Debug, Object)]
#[oai(rename = "LogEntry")]
pub struct LogEntrySchema {
    /// RFC 3339 date-time; stored in UTC.
    #[oai(validator(
        pattern = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])[Tt](0[0-9]|1[0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+-](0[0-9]|1[0-3]):[0-5][0-9])$"
    ))]
    pub timestamp: String,
    /// TRACE, DEBUG, INFO, WARNING (or WARN), ERROR, CRITICAL (or FATAL);
    /// case-insensitive; INFO when omitted.
    #[oai(validator(
        pattern = "^([Tt][Rr][Aa][Cc][Ee]|[Dd][Ee][Bb][Uu][Gg]|[Ii][Nn][Ff][Oo]|[Ww][Aa][Rr][Nn]([Ii][Nn][Gg])?|[Ee][Rr][Rr][Oo][Rr]|[Cc][Rr][Ii][Tt][Ii][Cc][Aa][Ll]|[Ff][Aa][Tt][Aa][Ll])$"
    ))]
    pub level: Option<String>,
    /// At most 64 KiB of UTF-8.
    #[oai(validator(max_length = 65536))]
    pub message: String,
    /// Non-empty, at most 256 bytes; the Kafka message key.
    #[oai(validator(min_length = 1, max_length = 256))]
    pub service: String,
    /// Non-empty, at most 256 bytes.
    #[oai(validator(min_length = 1, max_length = 256))]
    pub host: String,
    /// String keys (≤ 256 bytes) to string, number or bool.
    pub attributes: Option<BTreeMap<String, AttributeSchema>>,
}

/// A batch of log entries.
#[derive(Debug, Object)]
#[oai(rename = "LogBatch")]
pub struct LogBatchSchema {
    /// 1 to `server.max_batch_entries` (default 10000) entries.
    #[oai(validator(min_items = 1, max_items = 10000))]
    pub entries: Vec<LogEntrySchema>,
    pub agent_version: Option<String>,
}

/// One metric sample. Unknown fields are ignored.
#[derive(Debug, Object)]
#[oai(rename = "MetricEntry")]
pub struct MetricEntrySchema {
    /// RFC 3339 date-time; stored in UTC.
    #[oai(validator(
        pattern = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])[Tt](0[0-9]|1[0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+-](0[0-9]|1[0-3]):[0-5][0-9])$"
    ))]
    pub timestamp: String,
    /// Non-empty, at most 256 bytes.
    #[oai(validator(min_length = 1, max_length = 256))]
    pub name: String,
    /// A finite number.
    pub value: f64,
    /// counter, gauge or histogram; case-insensitive, stored lower-case.
    #[oai(validator(
        pattern = "^([Cc][Oo][Uu][Nn][Tt][Ee][Rr]|[Gg][Aa][Uu][Gg][Ee]|[Hh][Ii][Ss][Tt][Oo][Gg][Rr][Aa][Mm])$"
    ))]
    pub metric_type: String,
    #[oai(validator(min_length = 1, max_length = 256))]
    pub service: String,
    #[oai(validator(min_length = 1, max_length = 256))]
    pub host: String,
    pub unit: Option<String>,
    pub attributes: Option<BTreeMap<String, AttributeSchema>>,
}

/// A batch of metric samples.
#[derive(Debug, Object)]
#[oai(rename = "MetricBatch")]
pub struct MetricBatchSchema {
    #[oai(validator(min_items = 1, max_items = 10000))]
    pub entries: Vec<MetricEntrySchema>,
    pub agent_version: Option<String>,
}
