//! `POST /v1/logs` and `POST /v1/metrics` (SPEC §8): OTLP/HTTP into the
//! same pipeline as `POST /logs` — auth → rate limit → read → decode and
//! map → durable append — answered the way OTLP clients expect: 200 with
//! an Export response, or a `google.rpc.Status`, in the request's encoding.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::param::Header;
use poem_openapi::registry::{
    MetaHeader, MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry,
};
use poem_openapi::types::{Binary, Type};
use poem_openapi::{ApiResponse, Object, OpenApi};
use prost::Message as _;

use super::auth::Auth;
use super::body::{MediaTypes, RawBody, TypedBody};
use super::budget::Held;
use super::error::{RateHeaders, Rejection};
use super::ingest::{admit, charge, off_reactor, scope, store, Prepared, OFFLOAD_BYTES};
use super::AppState;
use crate::model::{self, Kind, MAX_NAME_BYTES};
use crate::otlp::{self, Format};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";
/// What the OTLP endpoints read.
const OTLP_TYPES: &[&str] = &[PROTOBUF, JSON];

pub struct OtlpApi {
    pub state: Arc<AppState>,
}

#[OpenApi]
impl OtlpApi {
    /// Accept OTLP logs (an ExportLogsServiceRequest).
    ///
    /// Protobuf (`application/x-protobuf`) or OTLP JSON (`application/json`),
    /// gzip or zstd. Each log record becomes one log entry (SPEC §8). Answers
    /// 200, in the request's encoding, only once the batch is durable on
    /// disk; records that cannot be mapped are counted in `partialSuccess`.
    #[oai(path = "/v1/logs", method = "post")]
    async fn post_logs(
        &self,
        auth: Auth,
        /// As for `POST /logs`; scoped to this endpoint and the API key.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: OtlpBody<LogsRequestSchema>,
    ) -> OtlpResponse {
        self.export(Kind::Logs, auth, idempotency_key.0, body.raw)
            .await
    }

    /// Accept OTLP metrics (an ExportMetricsServiceRequest).
    ///
    /// As `POST /v1/logs`; each data point becomes one or more metric
    /// entries (histograms and summaries several, SPEC §8).
    #[oai(path = "/v1/metrics", method = "post")]
    async fn post_metrics(
        &self,
        auth: Auth,
        /// As for `POST /logs`; scoped to this endpoint and the API key.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: OtlpBody<MetricsRequestSchema>,
    ) -> OtlpResponse {
        self.export(Kind::Metrics, auth, idempotency_key.0, body.raw)
            .await
    }
}

impl OtlpApi {
    async fn export(
        &self,
        kind: Kind,
        auth: Auth,
        idempotency_key: Option<String>,
        body: RawBody,
    ) -> OtlpResponse {
        // Every answer, refusals included, is in the request's encoding;
        // anything but protobuf is answered in JSON.
        let format = match body.media_type().as_deref() {
            Some(PROTOBUF) => Format::Protobuf,
            _ => Format::Json,
        };
        let (key, rate) = match admit(&self.state, &auth) {
            Ok(admitted) => admitted,
            Err((r, rate)) => return OtlpResponse::refused(format, r, rate),
        };
        let endpoint = match kind {
            Kind::Logs => "v1/logs",
            Kind::Metrics => "v1/metrics",
        };
        let scope = match idempotency_key
            .map(|k| scope(key, endpoint, &k))
            .transpose()
        {
            Ok(scope) => scope,
            Err(r) => return OtlpResponse::refused(format, r, Some(rate)),
        };
        match self.accept(kind, format, scope, body).await {
            Ok((rejected, message)) => {
                OtlpResponse::exported(kind, format, rejected, message, rate)
            }
            Err(r) => OtlpResponse::refused(format, r, Some(rate)),
        }
    }

    /// Reads, decodes, maps and stores; returns what was rejected.
    async fn accept(
        &self,
        kind: Kind,
        format: Format,
        scope: Option<[u8; 32]>,
        body: RawBody,
    ) -> Result<(i64, String), Rejection> {
        let state = &self.state;
        let ctx = otlp::Context {
            received_at: model::now_rfc3339(),
            agent_version: body.user_agent().map(|ua| truncate(ua, MAX_NAME_BYTES)),
            max_entries: state.config.server.max_batch_entries,
            max_bytes: usize::try_from(state.config.server.max_body_bytes).unwrap_or(usize::MAX),
        };
        // Held until the request ends: the body's share of the budget.
        let (bytes, mut held) = body.read_with(state, OTLP_TYPES).await?;
        if bytes.is_empty() {
            // Valid protobuf for "no records", but no client sends it on
            // purpose: a body lost on the way is more likely.
            return Err(Rejection::Undecodable(
                "empty body: send an OTLP Export request (protobuf or JSON)".into(),
            ));
        }
        // What decoding will take is charged before it is taken: here for
        // a small body (a scan of microseconds), on the blocking pool for a
        // large one. A small body that decodes large is mapped there too.
        let small = bytes.len() <= OFFLOAD_BYTES;
        let large =
            !small || charge_decoding(state, kind, format, &bytes, &mut held)? > 4 * OFFLOAD_BYTES;
        let shared = self.state.clone();
        let (prepared, rejected, message, _held) = off_reactor(large, move || {
            if !small {
                charge_decoding(&shared, kind, format, &bytes, &mut held)?;
            }
            let mapped = match kind {
                Kind::Logs => otlp::map_logs(
                    otlp::decode_logs(&bytes, format).map_err(Rejection::Undecodable)?,
                    &ctx,
                ),
                Kind::Metrics => otlp::map_metrics(
                    otlp::decode_metrics(&bytes, format).map_err(Rejection::Undecodable)?,
                    &ctx,
                ),
            };
            let prepared = mapped
                .batch
                .as_ref()
                .map(|b| Prepared::new(b, scope, &bytes));
            Ok((prepared, mapped.rejected, mapped.error_message, held))
        })
        .await?;
        if let Some(prepared) = prepared {
            store(state, kind, prepared).await?;
        }
        if rejected > 0 {
            tracing::warn!(
                target: "edge_ingester::otlp",
                kind = kind.as_str(),
                rejected,
                reason = %message,
                "OTLP records rejected"
            );
        }
        Ok((rejected, message))
    }
}

/// Takes the memory the decoded request will hold from the in-flight
/// budget (`server.max_inflight_bytes`): a 503 when it is spent for now, a
/// 413 when the request alone could never fit. Returns the bytes charged.
fn charge_decoding(
    state: &AppState,
    kind: Kind,
    format: Format,
    bytes: &[u8],
    held: &mut Held,
) -> Result<usize, Rejection> {
    let decoded = match format {
        Format::Protobuf => otlp::scan::protobuf_decoded_bytes(bytes, kind == Kind::Metrics)
            .map_err(Rejection::Undecodable)?,
        Format::Json => otlp::scan::json_decoded_bytes(bytes),
    };
    charge(state, decoded, held)?;
    Ok(decoded)
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

// ------------------------------------------------------------ request body

/// OTLP request bodies: protobuf or OTLP JSON.
pub struct Otlp;

impl MediaTypes for Otlp {
    const DESCRIPTION: &'static str = "OTLP/HTTP request: protobuf or OTLP JSON; \
         Content-Encoding gzip or zstd accepted. max_body_bytes applies before and after \
         decompression.";
    fn content(json_schema: MetaSchemaRef) -> Vec<MetaMediaType> {
        vec![
            MetaMediaType {
                content_type: PROTOBUF,
                schema: Binary::<Vec<u8>>::schema_ref(),
            },
            MetaMediaType {
                content_type: JSON,
                schema: json_schema,
            },
        ]
    }
}

type OtlpBody<T> = TypedBody<T, Otlp>;

// ------------------------------------------------------------ responses

/// `google.rpc.Status`, the body of every OTLP failure (without details).
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// An answer in the request's encoding.
pub struct OtlpResponse {
    status: StatusCode,
    format: Format,
    body: Vec<u8>,
    retry_after: Option<u64>,
    rate: Option<RateHeaders>,
}

impl OtlpResponse {
    fn exported(
        kind: Kind,
        format: Format,
        rejected: i64,
        message: String,
        rate: RateHeaders,
    ) -> OtlpResponse {
        let body = match (format, kind) {
            (Format::Protobuf, Kind::Logs) => ExportLogsServiceResponse {
                partial_success: (rejected > 0).then_some(ExportLogsPartialSuccess {
                    rejected_log_records: rejected,
                    error_message: message,
                }),
            }
            .encode_to_vec(),
            (Format::Protobuf, Kind::Metrics) => ExportMetricsServiceResponse {
                partial_success: (rejected > 0).then_some(ExportMetricsPartialSuccess {
                    rejected_data_points: rejected,
                    error_message: message,
                }),
            }
            .encode_to_vec(),
            // OTLP JSON writes 64-bit integers as strings.
            (Format::Json, kind) if rejected > 0 => {
                let count = match kind {
                    Kind::Logs => "rejectedLogRecords",
                    Kind::Metrics => "rejectedDataPoints",
                };
                serde_json::json!({"partialSuccess": {count: rejected.to_string(), "errorMessage": message}})
                    .to_string()
                    .into_bytes()
            }
            (Format::Json, _) => b"{}".to_vec(),
        };
        OtlpResponse {
            status: StatusCode::OK,
            format,
            body,
            retry_after: None,
            rate: Some(rate),
        }
    }

    fn refused(format: Format, r: Rejection, rate: Option<RateHeaders>) -> OtlpResponse {
        let (status, message, retry_after) = r.describe();
        let code = match status {
            401 => 16, // UNAUTHENTICATED
            408 => 4,  // DEADLINE_EXCEEDED
            429 => 8,  // RESOURCE_EXHAUSTED
            503 => 14, // UNAVAILABLE
            _ => 3,    // INVALID_ARGUMENT
        };
        let body = match format {
            Format::Protobuf => RpcStatus { code, message }.encode_to_vec(),
            Format::Json => serde_json::json!({"code": code, "message": message})
                .to_string()
                .into_bytes(),
        };
        OtlpResponse {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            format,
            body,
            retry_after,
            // As on /logs: a 401 carries no rate headers.
            rate: rate.filter(|_| status != 401),
        }
    }
}

impl IntoResponse for OtlpResponse {
    fn into_response(self) -> Response {
        let mut resp = Response::builder()
            .status(self.status)
            .content_type(match self.format {
                Format::Protobuf => PROTOBUF,
                Format::Json => JSON,
            });
        if let Some(s) = self.retry_after {
            resp = resp.header("Retry-After", s.to_string());
        }
        if let Some(rate) = self.rate {
            resp = resp
                .header("X-RateLimit-Limit", rate.limit.to_string())
                .header("X-RateLimit-Remaining", rate.remaining.to_string());
        }
        resp.body(self.body)
    }
}

impl ApiResponse for OtlpResponse {
    fn meta() -> MetaResponses {
        fn header(name: &str, description: &str) -> MetaHeader {
            MetaHeader {
                name: name.into(),
                description: Some(description.into()),
                required: false,
                deprecated: false,
                schema: u64::schema_ref(),
            }
        }
        let rate = || {
            vec![
                header("X-RateLimit-Limit", "The key's burst."),
                header("X-RateLimit-Remaining", "Whole tokens left."),
            ]
        };
        let retry = || {
            let mut h = rate();
            h.push(header("Retry-After", "Seconds to wait before retrying."));
            h
        };
        let content = |json: poem_openapi::registry::MetaSchemaRef| {
            vec![
                MetaMediaType {
                    content_type: PROTOBUF,
                    schema: Binary::<Vec<u8>>::schema_ref(),
                },
                MetaMediaType {
                    content_type: JSON,
                    schema: json,
                },
            ]
        };
        let failure = |status, description, headers| MetaResponse {
            description,
            status: Some(status),
            status_range: None,
            content: content(RpcStatusSchema::schema_ref()),
            headers,
        };
        MetaResponses {
            responses: vec![
                MetaResponse {
                    description: "Durable on disk (an Export*ServiceResponse; records that \
                                  could not be mapped are counted in partialSuccess).",
                    status: Some(200),
                    status_range: None,
                    content: content(ExportResponseSchema::schema_ref()),
                    headers: rate(),
                },
                failure(
                    400,
                    "The body is not an OTLP request, or a header is invalid.",
                    rate(),
                ),
                failure(
                    401,
                    "No API key, or one that matches no configured key.",
                    vec![],
                ),
                failure(
                    408,
                    "The body did not arrive within server.request_timeout_ms.",
                    vec![],
                ),
                failure(
                    413,
                    "The body exceeds max_body_bytes, on the wire or decompressed.",
                    rate(),
                ),
                failure(
                    415,
                    "Content-Type or Content-Encoding not supported.",
                    rate(),
                ),
                failure(
                    422,
                    "The Idempotency-Key was used before with a different body.",
                    rate(),
                ),
                failure(429, "The key's token bucket is empty.", retry()),
                failure(
                    503,
                    "Queue full, disk failure or too many bodies in progress.",
                    retry(),
                ),
            ],
        }
    }

    fn register(registry: &mut Registry) {
        RpcStatusSchema::register(registry);
        ExportResponseSchema::register(registry);
    }
}

// ------------------------------------------------------------ schemas (docs)

/// `google.rpc.Status` in JSON.
#[derive(Debug, Object)]
#[oai(rename = "RpcStatus")]
struct RpcStatusSchema {
    /// gRPC status code (3 invalid argument, 8 resource exhausted, 14 unavailable, 16 unauthenticated).
    code: i32,
    message: String,
}

/// `Export{Logs,Metrics}ServiceResponse` in JSON: `{}` on full success.
#[derive(Debug, Object)]
#[oai(rename = "ExportServiceResponse", rename_all = "camelCase")]
struct ExportResponseSchema {
    partial_success: Option<PartialSuccessSchema>,
}

#[derive(Debug, Object)]
#[oai(rename = "ExportPartialSuccess", rename_all = "camelCase")]
struct PartialSuccessSchema {
    /// Log records rejected (`/v1/logs`), as a decimal string.
    rejected_log_records: Option<String>,
    /// Data points rejected (`/v1/metrics`), as a decimal string.
    rejected_data_points: Option<String>,
    error_message: Option<String>,
}

/// An OTLP JSON `ExportLogsServiceRequest` (see the OTLP specification).
#[derive(Debug, Object)]
#[oai(rename = "ExportLogsServiceRequest", rename_all = "camelCase")]
pub struct LogsRequestSchema {
    resource_logs: Option<Vec<serde_json::Value>>,
}

/// An OTLP JSON `ExportMetricsServiceRequest` (see the OTLP specification).
#[derive(Debug, Object)]
#[oai(rename = "ExportMetricsServiceRequest", rename_all = "camelCase")]
pub struct MetricsRequestSchema {
    resource_metrics: Option<Vec<serde_json::Value>>,
}
