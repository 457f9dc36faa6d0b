//! `POST /logs` and `POST /metrics`: auth → rate limit → read → validate →
//! durable append → 202.
//!
//! The order matters: a request without a valid key or over its rate costs no
//! parsing, and nothing reaches the queue unless the whole batch validated.

use std::sync::Arc;
use std::time::{Duration, Instant};

use poem_openapi::param::Header;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use sha2::{Digest, Sha256};

use super::auth::Auth;
use super::body::JsonBody;
use super::budget::Held;
use super::error::{IngestResponse, RateHeaders, Rejection};
use super::rate_limit::Decision;
use super::schema::{LogBatchSchema, MetricBatchSchema};
use super::AppState;
use crate::model::{self, Batch, Kind, Problem};
use crate::queue::{encode_record, Appended, IdempotencyKey, IndexEntry, QueueError};

/// Longest `Idempotency-Key` (SPEC §3).
const MAX_IDEMPOTENCY_KEY: usize = 128;

/// The 202 body.
#[derive(Debug, Object)]
pub struct Accepted {
    /// Always `accepted`.
    pub status: String,
    /// Entries accepted (POST /logs).
    #[oai(skip_serializing_if_is_none)]
    pub logs_received: Option<u64>,
    /// Entries accepted (POST /metrics).
    #[oai(skip_serializing_if_is_none)]
    pub metrics_received: Option<u64>,
    /// The `service` of the first entry.
    pub service: String,
    pub message: String,
    /// `<node_id>:<sequence>`; unique per edge and never reused.
    pub batch_id: String,
}

pub struct IngestApi {
    pub state: Arc<AppState>,
}

#[OpenApi]
impl IngestApi {
    /// Accept a batch of log entries.
    ///
    /// Answers 202 only once the batch is durable on disk.
    #[oai(path = "/logs", method = "post")]
    async fn post_logs(
        &self,
        auth: Auth,
        /// Makes retries safe: the same key (1 to 128 chars) from the same API
        /// key within `server.idempotency_window_s` answers 202 with the
        /// original `batch_id` and stores nothing; with a different body it is
        /// a 422. Keys survive restarts.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: JsonBody<LogBatchSchema>,
    ) -> IngestResponse {
        let read = body.read_with(&self.state);
        self.ingest(auth, Kind::Logs, idempotency_key.0, read).await
    }

    /// Accept a batch of metric samples.
    ///
    /// Answers 202 only once the batch is durable on disk.
    #[oai(path = "/metrics", method = "post")]
    async fn post_metrics(
        &self,
        auth: Auth,
        /// As for `POST /logs`; keys are scoped per endpoint and API key.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: JsonBody<MetricBatchSchema>,
    ) -> IngestResponse {
        let read = body.read_with(&self.state);
        self.ingest(auth, Kind::Metrics, idempotency_key.0, read)
            .await
    }
}

impl<T> JsonBody<T> {
    /// Reads under the configured size limit, in-flight budget and request
    /// timeout; the body comes with its share of the budget.
    async fn read_with(self, state: &AppState) -> Result<(Vec<u8>, Held), Rejection> {
        let timeout = Duration::from_millis(state.config.server.request_timeout_ms);
        let mut held = Held::default();
        let limit = state.config.server.max_body_bytes;
        let bytes = tokio::time::timeout(timeout, self.read(limit, &state.inflight, &mut held))
            .await
            .unwrap_or(Err(Rejection::Timeout))?;
        Ok((bytes, held))
    }
}

impl IngestApi {
    async fn ingest(
        &self,
        auth: Auth,
        kind: Kind,
        idempotency_key: Option<String>,
        body: impl std::future::Future<Output = Result<(Vec<u8>, Held), Rejection>>,
    ) -> IngestResponse {
        let state = &self.state;
        let key = match auth.key() {
            Ok(k) => k,
            Err(r) => return r.into_response(None),
        };
        let limit = state.limiter.limit();
        let rate = match state.limiter.check(key, Instant::now()) {
            Decision::Allow { remaining } => RateHeaders { limit, remaining },
            Decision::Deny { retry_after_s } => {
                state
                    .stats
                    .rate_limited
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let headers = RateHeaders {
                    limit,
                    remaining: 0,
                };
                return Rejection::RateLimited { retry_after_s }.into_response(Some(headers));
            }
        };
        let scope = match idempotency_key
            .map(|k| self.scope(key, kind, &k))
            .transpose()
        {
            Ok(scope) => scope,
            Err(r) => return r.into_response(Some(rate)),
        };
        match self.accept(kind, scope, body).await {
            Ok(accepted) => IngestResponse::Accepted(Json(accepted), rate.limit, rate.remaining),
            Err(r) => r.into_response(Some(rate)),
        }
    }

    /// Checks an `Idempotency-Key` and scopes it to (API key, endpoint).
    fn scope(&self, api_key: usize, kind: Kind, key: &str) -> Result<[u8; 32], Rejection> {
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
            return Err(Rejection::BadHeader(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters"
            )));
        }
        let mut h = Sha256::new();
        h.update(self.state.keys.digest(api_key));
        h.update(kind.as_str().as_bytes());
        h.update([0]);
        h.update(key.as_bytes());
        Ok(h.finalize().into())
    }

    async fn accept(
        &self,
        kind: Kind,
        scope: Option<[u8; 32]>,
        body: impl std::future::Future<Output = Result<(Vec<u8>, Held), Rejection>>,
    ) -> Result<Accepted, Rejection> {
        let state = &self.state;
        // Held until the request ends: the body's share of the budget.
        let (bytes, _held) = body.await?;
        let limits = model::Limits {
            max_batch_entries: state.config.server.max_batch_entries,
        };
        let large = bytes.len() > OFFLOAD_BYTES;
        let prepare = move || prepare(kind, scope, &bytes, limits);
        // NOTE: parsing, validating and compressing a 10 MiB body takes tens
        // of milliseconds of CPU, long enough to stall every other request
        // on that worker thread: large bodies go to the blocking pool.
        let Prepared {
            record,
            index,
            idempotency,
            entries,
            service,
        } = if large {
            tokio::task::spawn_blocking(prepare)
                .await
                .map_err(|e| Rejection::Queue(QueueError::Disk(e.to_string())))??
        } else {
            prepare()?
        };
        let appended = match state
            .queue
            .append_idempotent(record, index, idempotency)
            .await
        {
            Ok(a) => a,
            Err(QueueError::IdempotencyConflict) => {
                return Err(Rejection::Invalid(vec![Problem {
                    field: "Idempotency-Key".into(),
                    problem: "was used before with a different body".into(),
                }]))
            }
            Err(e) => return Err(Rejection::Queue(e)),
        };
        let (seq, entries, service) = match appended {
            Appended::Stored(seq) => {
                state.stats.received(kind, entries);
                (seq, entries, service)
            }
            // A retry: the original batch's figures, nothing counted again.
            Appended::Replayed {
                seq,
                entries,
                service,
            } => (seq, u64::from(entries), service),
        };
        let (logs_received, metrics_received, message) = match kind {
            Kind::Logs => (Some(entries), None, "Log batch accepted for processing"),
            Kind::Metrics => (None, Some(entries), "Metric batch accepted for processing"),
        };
        Ok(Accepted {
            status: "accepted".into(),
            logs_received,
            metrics_received,
            service,
            message: message.into(),
            batch_id: format!("{}:{seq}", state.queue.node_id()),
        })
    }
}

/// Bodies above this are parsed and encoded on the blocking pool.
const OFFLOAD_BYTES: usize = 256 * 1024;

/// A request body turned into what the queue stores.
struct Prepared {
    record: Vec<u8>,
    index: IndexEntry,
    idempotency: Option<IdempotencyKey>,
    entries: u64,
    service: String,
}

/// Parses and validates a body and encodes its record (CPU-bound).
fn prepare(
    kind: Kind,
    scope: Option<[u8; 32]>,
    bytes: &[u8],
    limits: model::Limits,
) -> Result<Prepared, Rejection> {
    let batch = parse(kind, bytes, limits)?;
    let entries = batch.len() as u64;
    let service = batch.first_service().to_string();
    let idempotency = scope.map(|scope| IdempotencyKey {
        scope,
        body: Sha256::digest(bytes).into(),
        entries: entries as u32,
        service: service.clone(),
    });
    let record = encode_record(&batch);
    let index = IndexEntry {
        kind,
        entries: entries as u32,
        record_bytes: u32::try_from(record.len()).unwrap_or(u32::MAX),
        enqueued_at_ms: 0,
    };
    Ok(Prepared {
        record,
        index,
        idempotency,
        entries,
        service,
    })
}

/// JSON → validated batch. Syntax errors are 400; a value of the wrong type
/// or a rule broken is 422 naming the field.
pub fn parse(kind: Kind, bytes: &[u8], limits: model::Limits) -> Result<Batch, Rejection> {
    match kind {
        Kind::Logs => {
            let wire = serde_json::from_slice::<model::WireLogBatch>(bytes)
                .map_err(|e| classify::<model::WireLogBatch>(e, bytes))?;
            model::validate_logs(wire, limits).map_err(Rejection::Invalid)
        }
        Kind::Metrics => {
            let wire = serde_json::from_slice::<model::WireMetricBatch>(bytes)
                .map_err(|e| classify::<model::WireMetricBatch>(e, bytes))?;
            model::validate_metrics(wire, limits).map_err(Rejection::Invalid)
        }
    }
}

/// On a type error, parses again with path tracking to name the field; the
/// happy path pays nothing for it.
fn classify<'de, T: serde::Deserialize<'de>>(
    err: serde_json::Error,
    bytes: &'de [u8],
) -> Rejection {
    if !err.is_data() {
        return Rejection::MalformedJson(err.to_string());
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let field = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Err(e) => e.path().to_string(),
        Ok(_) => ".".to_string(),
    };
    let field = if field == "." {
        "body".to_string()
    } else {
        field
    };
    let problem = err.to_string();
    let problem = problem
        .split(" at line ")
        .next()
        .unwrap_or(&problem)
        .to_string();
    Rejection::Invalid(vec![Problem { field, problem }])
}
