//! Every way an ingest request can be refused, and its HTTP form — in one place.

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

use crate::model::Problem;
use crate::queue::QueueError;

/// Seconds an agent should wait after a 503 for a full queue: about the time
/// the forwarder needs to drain a few hundred batches once the sink is back.
const QUEUE_FULL_RETRY_AFTER_S: u64 = 5;
/// Seconds after a failed disk write: long enough not to hammer a sick disk.
const DISK_RETRY_AFTER_S: u64 = 2;
/// Seconds after the in-flight body budget was spent: bodies in progress
/// are read and stored within about that.
const BUSY_RETRY_AFTER_S: u64 = 1;

/// Every error body: `{"detail": ...}`, with `errors` on validation failures.
#[derive(Debug, Object)]
pub struct ErrorBody {
    /// What went wrong, in words a person can act on.
    pub detail: String,
    /// One item per invalid field (422 only).
    #[oai(skip_serializing_if_is_none)]
    pub errors: Option<Vec<FieldProblem>>,
}

#[derive(Debug, Object)]
pub struct FieldProblem {
    /// Path of the field, e.g. `entries[3].level`.
    pub field: String,
    pub problem: String,
}

impl ErrorBody {
    pub fn new(detail: impl Into<String>) -> Json<ErrorBody> {
        Json(ErrorBody {
            detail: detail.into(),
            errors: None,
        })
    }
}

/// Why a request was refused.
#[derive(Debug)]
pub enum Rejection {
    MalformedJson(String),
    /// A body that is not what the endpoint reads (OTLP); the text says why.
    Undecodable(String),
    BadHeader(String),
    MissingKey,
    InvalidKey,
    TooLarge {
        limit: u64,
        decompressed: bool,
    },
    UnsupportedMediaType(String),
    /// A body that would decode into more memory than the in-flight budget
    /// holds.
    TooComplex {
        decoded: u64,
        budget: u64,
    },
    Invalid(Vec<Problem>),
    RateLimited {
        retry_after_s: u64,
    },
    /// The body did not arrive within `server.request_timeout_ms`.
    Timeout,
    /// Taking this body would exceed `server.max_inflight_bytes`.
    Busy {
        in_flight: u64,
        budget: u64,
    },
    Queue(QueueError),
}

/// Headers every keyed ingest response carries.
#[derive(Debug, Clone, Copy)]
pub struct RateHeaders {
    pub limit: u64,
    pub remaining: u64,
}

#[derive(ApiResponse)]
pub enum IngestResponse {
    /// The batch is durable on disk and queued for forwarding.
    #[oai(status = 202)]
    Accepted(
        Json<super::ingest::Accepted>,
        #[oai(header = "X-RateLimit-Limit")] u64,
        #[oai(header = "X-RateLimit-Remaining")] u64,
    ),
    /// Malformed JSON or an invalid header.
    #[oai(status = 400)]
    BadRequest(
        Json<ErrorBody>,
        #[oai(header = "X-RateLimit-Limit")] Option<u64>,
        #[oai(header = "X-RateLimit-Remaining")] Option<u64>,
    ),
    /// The body did not arrive within `server.request_timeout_ms`.
    #[oai(status = 408)]
    RequestTimeout(Json<ErrorBody>),
    /// No API key, or one that matches no configured key.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The body exceeds `max_body_bytes`, on the wire or decompressed.
    #[oai(status = 413)]
    PayloadTooLarge(
        Json<ErrorBody>,
        #[oai(header = "X-RateLimit-Limit")] Option<u64>,
        #[oai(header = "X-RateLimit-Remaining")] Option<u64>,
    ),
    /// Content-Type is not application/json, or Content-Encoding is not
    /// identity, gzip or zstd.
    #[oai(status = 415)]
    UnsupportedMediaType(
        Json<ErrorBody>,
        #[oai(header = "X-RateLimit-Limit")] Option<u64>,
        #[oai(header = "X-RateLimit-Remaining")] Option<u64>,
    ),
    /// Valid JSON that breaks the schema; `errors` names each field.
    #[oai(status = 422)]
    UnprocessableEntity(
        Json<ErrorBody>,
        #[oai(header = "X-RateLimit-Limit")] Option<u64>,
        #[oai(header = "X-RateLimit-Remaining")] Option<u64>,
    ),
    /// The key's token bucket is empty.
    #[oai(status = 429)]
    TooManyRequests(
        Json<ErrorBody>,
        #[oai(header = "Retry-After")] u64,
        #[oai(header = "X-RateLimit-Limit")] Option<u64>,
        #[oai(header = "X-RateLimit-Remaining")] Option<u64>,
    ),
    /// The queue is full, the disk failed, or too many request bodies are
    /// in progress (`server.max_inflight_bytes`); nothing was stored.
    #[oai(status = 503)]
    ServiceUnavailable(
        Json<ErrorBody>,
        #[oai(header = "Retry-After")] u64,
        #[oai(header = "X-RateLimit-Limit")] Option<u64>,
        #[oai(header = "X-RateLimit-Remaining")] Option<u64>,
    ),
}

impl Rejection {
    /// The status, the message a person can act on, and `Retry-After`.
    pub fn describe(&self) -> (u16, String, Option<u64>) {
        match self {
            Rejection::MalformedJson(why) => (400, format!("Malformed JSON body: {why}"), None),
            Rejection::Undecodable(why) => (400, why.clone(), None),
            Rejection::BadHeader(why) => (400, why.clone(), None),
            Rejection::MissingKey => (
                401,
                "Missing API key: send it as X-API-Key or Authorization: Bearer".into(),
                None,
            ),
            Rejection::InvalidKey => (401, "Invalid API key".into(), None),
            Rejection::TooLarge {
                limit,
                decompressed,
            } => (
                413,
                format!(
                    "Request body exceeds {limit} bytes{} (server.max_body_bytes)",
                    if *decompressed {
                        " after decompression"
                    } else {
                        ""
                    }
                ),
                None,
            ),
            Rejection::UnsupportedMediaType(why) => (415, why.clone(), None),
            Rejection::TooComplex { decoded, budget } => (
                413,
                format!(
                    "The body would take about {decoded} bytes once decoded, more than \
                     server.max_inflight_bytes ({budget}) allows; send smaller batches"
                ),
                None,
            ),
            Rejection::Invalid(problems) => {
                let detail = match problems.first() {
                    Some(p) if problems.len() == 1 => {
                        format!("Validation failed: {} {}", p.field, p.problem)
                    }
                    _ => format!("Validation failed for {} fields", problems.len()),
                };
                (422, detail, None)
            }
            Rejection::Timeout => (
                408,
                "Request body not received within server.request_timeout_ms".into(),
                None,
            ),
            Rejection::RateLimited { retry_after_s } => (
                429,
                format!("Rate limit exceeded. Try again in {retry_after_s} seconds."),
                Some(*retry_after_s),
            ),
            Rejection::Busy { in_flight, budget } => (
                503,
                format!(
                    "Too many request bodies in progress ({in_flight} of {budget} bytes, \
                     server.max_inflight_bytes); batch not stored. Retry after \
                     {BUSY_RETRY_AFTER_S} s"
                ),
                Some(BUSY_RETRY_AFTER_S),
            ),
            Rejection::Queue(err) => {
                let (detail, retry) = match err {
                    QueueError::Full { .. } => (
                        format!("Queue is full; batch not stored. {err}"),
                        QUEUE_FULL_RETRY_AFTER_S,
                    ),
                    QueueError::Closed => ("Server is shutting down; batch not stored".into(), 1),
                    _ => (
                        "Cannot write to the queue (disk failure); batch not stored".into(),
                        DISK_RETRY_AFTER_S,
                    ),
                };
                (503, detail, Some(retry))
            }
        }
    }

    pub fn into_response(self, rate: Option<RateHeaders>) -> IngestResponse {
        use IngestResponse as R;
        let (l, r) = (rate.map(|h| h.limit), rate.map(|h| h.remaining));
        let (status, detail, retry) = self.describe();
        let retry = retry.unwrap_or(1);
        let body = ErrorBody::new(detail);
        match status {
            401 => R::Unauthorized(body),
            408 => R::RequestTimeout(body),
            413 => R::PayloadTooLarge(body, l, r),
            415 => R::UnsupportedMediaType(body, l, r),
            422 => {
                let errors = match self {
                    Rejection::Invalid(problems) => problems
                        .into_iter()
                        .map(|p| FieldProblem {
                            field: p.field,
                            problem: p.problem,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                R::UnprocessableEntity(
                    Json(ErrorBody {
                        detail: body.0.detail,
                        errors: Some(errors),
                    }),
                    l,
                    r,
                )
            }
            429 => R::TooManyRequests(body, retry, l, r),
            503 => R::ServiceUnavailable(body, retry, l, r),
            _ => R::BadRequest(body, l, r),
        }
    }
}
