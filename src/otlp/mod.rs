//! OTLP/HTTP ingest (SPEC §8): an `Export{Logs,Metrics}ServiceRequest`, in
//! protobuf or OTLP JSON, mapped into the same normalized entries as
//! `POST /logs` and `POST /metrics`, so Kafka consumers see one format
//! whatever sent it.
//!
//! A record that cannot be mapped is rejected on its own and reported in
//! the response's `partial_success`; the rest of the request is accepted.

pub mod json;
mod logs;
mod metrics;
pub mod scan;
mod value;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message as _;

pub use logs::map as map_logs;
pub use metrics::map as map_metrics;

use crate::model::Batch;

/// How a request body is encoded (its `Content-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Protobuf,
    Json,
}

/// Decodes a logs request. The error says what is wrong, for a 400.
pub fn decode_logs(bytes: &[u8], format: Format) -> Result<ExportLogsServiceRequest, String> {
    match format {
        Format::Protobuf => ExportLogsServiceRequest::decode(bytes)
            .map_err(|e| format!("not an ExportLogsServiceRequest in protobuf: {e}")),
        Format::Json => json::logs(bytes).map_err(|e| format!("invalid OTLP JSON: {e}")),
    }
}

/// Decodes a metrics request. The error says what is wrong, for a 400.
pub fn decode_metrics(bytes: &[u8], format: Format) -> Result<ExportMetricsServiceRequest, String> {
    match format {
        Format::Protobuf => ExportMetricsServiceRequest::decode(bytes)
            .map_err(|e| format!("not an ExportMetricsServiceRequest in protobuf: {e}")),
        Format::Json => json::metrics(bytes).map_err(|e| format!("invalid OTLP JSON: {e}")),
    }
}

/// What mapping needs besides the request.
#[derive(Debug, Clone)]
pub struct Context {
    /// Ingest time, RFC 3339 UTC: `received_at`, and the timestamp of a
    /// record that carries none.
    pub received_at: String,
    /// Stored as the batch's `agent_version` (we use the `User-Agent`).
    pub agent_version: Option<String>,
    /// `server.max_batch_entries`: entries one request may map to.
    pub max_entries: usize,
    /// Bytes of entries (text, names, attributes) one request may map to:
    /// resource attributes are copied into every entry, so a small request
    /// could otherwise map to gigabytes. We use `server.max_body_bytes`.
    pub max_bytes: usize,
}

/// Memory an entry takes besides its text and attributes (the struct and
/// its allocations).
const ENTRY_OVERHEAD: usize = 128;

/// What one entry of a base copies: service, host and attributes.
fn base_weight(service: &str, host: &str, attrs: &value::Attributes) -> usize {
    ENTRY_OVERHEAD + service.len() + host.len() + attrs.weight()
}

/// What a request may still map to.
struct Room {
    entries: usize,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl Room {
    fn new(ctx: &Context) -> Room {
        Room {
            entries: ctx.max_entries,
            bytes: ctx.max_bytes,
            max_entries: ctx.max_entries,
            max_bytes: ctx.max_bytes,
        }
    }

    /// Whether `entries` more entries of `bytes` fit, without taking them.
    fn check(&self, entries: usize, bytes: usize) -> Result<(), String> {
        if entries > self.entries {
            return Err(too_many(self.max_entries));
        }
        if bytes > self.bytes {
            return Err(format!(
                "the request maps to more than server.max_body_bytes ({}) of entries \
                 (resource and scope attributes are copied into each); send smaller \
                 batches or fewer resource attributes",
                self.max_bytes
            ));
        }
        Ok(())
    }

    fn take(&mut self, entries: usize, bytes: usize) {
        self.entries -= entries;
        self.bytes -= bytes;
    }
}

/// A mapped request: the batch to store (none when nothing mapped) and
/// what was rejected, for `partial_success`.
#[derive(Debug)]
pub struct Mapped {
    pub batch: Option<Batch>,
    /// Log records or data points rejected (OTLP counts those, not entries).
    pub rejected: i64,
    /// Empty when nothing was rejected.
    pub error_message: String,
}

/// Counts rejections and keeps the first reason, which is what a client
/// logs.
#[derive(Default)]
struct Rejects {
    count: i64,
    first: Option<String>,
}

impl Rejects {
    fn add(&mut self, n: i64, why: impl FnOnce() -> String) {
        self.count += n;
        if self.first.is_none() {
            self.first = Some(why());
        }
    }

    fn message(&self, what: &str) -> String {
        match (&self.first, self.count) {
            (None, _) => String::new(),
            (Some(first), 1) => format!("1 {what} rejected: {first}"),
            (Some(first), n) => format!("{n} {what}s rejected; the first: {first}"),
        }
    }
}

/// What every entry of a resource (and scope) shares: its service and
/// host, and the attributes merged so far; or why its records are rejected.
type Base = Result<(Names, value::Attributes), String>;

/// `service` and `host`.
type Names = (String, String);

fn resource_base(resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>) -> Base {
    let attrs = resource.map_or(&[][..], |r| &r.attributes[..]);
    let service = resource_name(attrs, "service.name", "unknown_service")?;
    let host = resource_name(attrs, "host.name", "unknown")?;
    let mut merged = value::Attributes::default();
    merged.merge(attrs)?;
    Ok(((service, host), merged))
}

/// The base of a scope's entries: the resource's merged with the scope's
/// attributes. The merge copies the resource's attributes, so it is done
/// only when an entry of them still fits in `room`, and paid from it.
fn scope_base(
    room: &mut Room,
    base: &Base,
    scope: Option<&opentelemetry_proto::tonic::common::v1::InstrumentationScope>,
) -> Base {
    let ((service, host), attrs) = base.as_ref().map_err(Clone::clone)?;
    let copy = base_weight(service, host, attrs);
    room.check(1, copy)?;
    let mut attrs = attrs.clone();
    room.take(0, copy);
    attrs.merge(scope.map_or(&[][..], |s| &s.attributes[..]))?;
    Ok(((service.clone(), host.clone()), attrs))
}

/// The name a resource gives itself (`service.name`, `host.name`), or the
/// default; at most `MAX_NAME_BYTES`, or the resource's records are
/// rejected.
fn resource_name(
    attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
    default: &str,
) -> Result<String, String> {
    let name =
        value::find(attrs, key).map_or_else(|| default.to_string(), |v| value::name_of(Some(v)));
    if name.len() > crate::model::MAX_NAME_BYTES {
        return Err(format!(
            "resource {key} is {} bytes; at most {} are allowed",
            name.len(),
            crate::model::MAX_NAME_BYTES
        ));
    }
    Ok(name)
}

fn too_many(max: usize) -> String {
    format!(
        "the request maps to more than server.max_batch_entries ({max}) entries; \
         send smaller batches (the exporter's batch size) or raise the limit"
    )
}
