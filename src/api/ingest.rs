//! `POST /logs` and `POST /metrics`: auth → rate limit → read → validate →
//! durable append → 202.
//!
//! The order matters: a request without a valid key or over its rate costs no
//! parsing, and nothing reaches the queue unless the whole batch validated.

use std::sync::Arc;
use std::time::{Duration, Instant};

use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::auth::Auth;
use super::body::JsonBody;
use super::error::{IngestResponse, RateHeaders, Rejection};
use super::rate_limit::Decision;
use super::schema::{LogBatchSchema, MetricBatchSchema};
use super::AppState;
use crate::model::{self, Batch, Kind, Problem};
use crate::queue::{encode_record, IndexEntry};

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
    async fn post_logs(&self, auth: Auth, body: JsonBody<LogBatchSchema>) -> IngestResponse {
        self.ingest(auth, Kind::Logs, body.read_with(&self.state))
            .await
    }

    /// Accept a batch of metric samples.
    ///
    /// Answers 202 only once the batch is durable on disk.
    #[oai(path = "/metrics", method = "post")]
    async fn post_metrics(&self, auth: Auth, body: JsonBody<MetricBatchSchema>) -> IngestResponse {
        self.ingest(auth, Kind::Metrics, body.read_with(&self.state))
            .await
    }
}

impl<T> JsonBody<T> {
    /// Reads under the configured size limit and request timeout.
    async fn read_with(self, state: &AppState) -> Result<Vec<u8>, Rejection> {
        let timeout = Duration::from_millis(state.config.server.request_timeout_ms);
        tokio::time::timeout(timeout, self.read(state.config.server.max_body_bytes))
            .await
            .unwrap_or(Err(Rejection::Timeout))
    }
}

impl IngestApi {
    async fn ingest(
        &self,
        auth: Auth,
        kind: Kind,
        body: impl std::future::Future<Output = Result<Vec<u8>, Rejection>>,
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
        match self.accept(kind, body).await {
            Ok(accepted) => IngestResponse::Accepted(Json(accepted), rate.limit, rate.remaining),
            Err(r) => r.into_response(Some(rate)),
        }
    }

    async fn accept(
        &self,
        kind: Kind,
        body: impl std::future::Future<Output = Result<Vec<u8>, Rejection>>,
    ) -> Result<Accepted, Rejection> {
        let state = &self.state;
        let bytes = body.await?;
        let limits = model::Limits {
            max_batch_entries: state.config.server.max_batch_entries,
        };
        let batch = parse(kind, &bytes, limits)?;
        drop(bytes);
        let entries = batch.len() as u64;
        let service = batch.first_service().to_string();
        let record = encode_record(&batch);
        drop(batch);
        let index = IndexEntry {
            kind,
            entries: entries as u32,
            record_bytes: u32::try_from(record.len()).unwrap_or(u32::MAX),
            enqueued_at_ms: 0,
        };
        let seq = state
            .queue
            .append(record, index)
            .await
            .map_err(Rejection::Queue)?;
        state.stats.received(kind, entries);
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
