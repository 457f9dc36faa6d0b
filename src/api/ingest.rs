//! `POST /logs` and `POST /metrics`: auth → rate limit → read → validate →
//! durable append → 202.
//!
//! The order matters: a request without a valid key or over its rate costs no
//! parsing, and nothing reaches the queue unless the whole batch validated.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use poem_openapi::param::Header;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use sha2::{Digest, Sha256};

use super::auth::Auth;
use super::body::JsonBody;
use super::budget::Held;
use super::error::{IngestResponse, RateHeaders, Rejection};
use super::rate_limit::{Decision, KeyDigest};
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
        let read = body.raw.read_with(&self.state, JSON);
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
        let read = body.raw.read_with(&self.state, JSON);
        self.ingest(auth, Kind::Metrics, idempotency_key.0, read)
            .await
    }
}

/// The media types `POST /logs` and `POST /metrics` read.
const JSON: &[&str] = &["application/json"];

impl IngestApi {
    async fn ingest(
        &self,
        auth: Auth,
        kind: Kind,
        idempotency_key: Option<String>,
        body: impl std::future::Future<Output = Result<(Vec<u8>, Held), Rejection>>,
    ) -> IngestResponse {
        let state = &self.state;
        let (key, rate) = match admit(state, &auth) {
            Ok(admitted) => admitted,
            Err((r, rate)) => return r.into_response(rate),
        };
        let scope = match idempotency_key
            .map(|k| scope(key, kind.as_str(), &k))
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
        let shared = self.state.clone();
        let prepared = off_reactor(large, move || {
            // NOTE: `{},` is 3 bytes of JSON but a few hundred parsed, so a
            // 10 MB body of empty entries took ~1 GB before validation
            // refused it. A body that would parse into more than the whole
            // in-flight budget is refused before parsing. (Not charged: a
            // valid batch of max_batch_entries at the smallest budget the
            // config allows must still fit.)
            refuse_beyond_budget(&shared, &bytes)?;
            let batch = parse(kind, &bytes, limits)?;
            Ok(Prepared::new(&batch, scope, &bytes))
        })
        .await?;
        let stored = store(state, kind, prepared).await?;
        let (logs_received, metrics_received, message) = match kind {
            Kind::Logs => (
                Some(stored.entries),
                None,
                "Log batch accepted for processing",
            ),
            Kind::Metrics => (
                None,
                Some(stored.entries),
                "Metric batch accepted for processing",
            ),
        };
        Ok(Accepted {
            status: "accepted".into(),
            logs_received,
            metrics_received,
            service: stored.service,
            message: message.into(),
            batch_id: format!("{}:{}", state.queue.node_id(), stored.seq),
        })
    }
}

/// Auth, then the rate limit: a request without a valid key or over its
/// rate costs no parsing. The refusal comes with the rate headers it
/// carries, if any.
pub(super) fn admit(
    state: &AppState,
    auth: &Auth,
) -> Result<(KeyDigest, RateHeaders), (Rejection, Option<RateHeaders>)> {
    let key = auth.key().map_err(|r| (r, None))?;
    let access = state.access.load();
    let limit = access.limiter.limit();
    match access.limiter.check(&key, Instant::now()) {
        // Removed by a reload since the key was checked.
        None => Err((Rejection::InvalidKey, None)),
        Some(Decision::Allow { remaining }) => Ok((key, RateHeaders { limit, remaining })),
        Some(Decision::Deny { retry_after_s }) => {
            state
                .stats
                .rate_limited
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let headers = RateHeaders {
                limit,
                remaining: 0,
            };
            Err((Rejection::RateLimited { retry_after_s }, Some(headers)))
        }
    }
}

/// Checks an `Idempotency-Key` and scopes it to (API key, endpoint).
pub(super) fn scope(api_key: KeyDigest, endpoint: &str, key: &str) -> Result<[u8; 32], Rejection> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(Rejection::BadHeader(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters"
        )));
    }
    let mut h = Sha256::new();
    h.update(api_key);
    h.update(endpoint.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    Ok(h.finalize().into())
}

/// Runs CPU-bound work on a body: inline when small, on the blocking pool
/// when `large`.
///
/// NOTE: parsing, validating and compressing a 10 MiB body takes tens of
/// milliseconds of CPU, long enough to stall every other request on that
/// worker thread.
pub(super) async fn off_reactor<T: Send + 'static>(
    large: bool,
    work: impl FnOnce() -> Result<T, Rejection> + Send + 'static,
) -> Result<T, Rejection> {
    if large {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Rejection::Queue(QueueError::Disk(e.to_string())))?
    } else {
        work()
    }
}

/// Takes `decoded` bytes — what a body will take once parsed — from the
/// in-flight budget (`server.max_inflight_bytes`) with the body: a 503 when
/// it is spent for now, a 413 when the request alone could never fit.
pub(super) fn charge(state: &AppState, decoded: usize, held: &mut Held) -> Result<(), Rejection> {
    within(decoded, one_take(state))?;
    state.inflight.take(held, decoded)
}

/// A 413 when a JSON body would parse into more than the whole in-flight
/// budget. A body too short to reach it even if every byte opened an
/// object (W1's 24 KB, at any budget the config allows) is not scanned.
fn refuse_beyond_budget(state: &AppState, json: &[u8]) -> Result<(), Rejection> {
    use crate::otlp::scan::{json_decoded_bytes, BYTES_PER_JSON_CONTAINER};
    let budget = one_take(state);
    if (json.len() as u64).saturating_mul(BYTES_PER_JSON_CONTAINER as u64) <= budget {
        return Ok(());
    }
    within(json_decoded_bytes(json), budget)
}

/// The budget one request may take: `server.max_inflight_bytes`, and at
/// most u32::MAX bytes (the semaphore's unit).
fn one_take(state: &AppState) -> u64 {
    state
        .config
        .server
        .max_inflight_bytes
        .min(u64::from(u32::MAX))
}

fn within(decoded: usize, budget: u64) -> Result<(), Rejection> {
    if decoded as u64 > budget {
        return Err(Rejection::TooComplex {
            decoded: decoded as u64,
            budget,
        });
    }
    Ok(())
}

/// A batch as stored: its sequence number and the figures the answer gives.
pub(super) struct Stored {
    pub seq: u64,
    pub entries: u64,
    pub service: String,
}

/// Appends durably (the answer waits for the sync), or finds the batch an
/// earlier request with the same `Idempotency-Key` stored.
pub(super) async fn store(
    state: &AppState,
    kind: Kind,
    prepared: Prepared,
) -> Result<Stored, Rejection> {
    let Prepared {
        record,
        index,
        idempotency,
        entries,
        service,
    } = prepared;
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
    Ok(match appended {
        Appended::Stored(seq) => {
            state.stats.received(kind, entries);
            Stored {
                seq,
                entries,
                service,
            }
        }
        // A retry: the original batch's figures, nothing counted again.
        Appended::Replayed {
            seq,
            entries,
            service,
        } => Stored {
            seq,
            entries: u64::from(entries),
            service,
        },
    })
}

/// Bodies above this are parsed and encoded on the blocking pool.
pub(super) const OFFLOAD_BYTES: usize = 256 * 1024;

/// A request body turned into what the queue stores.
pub(super) struct Prepared {
    record: Vec<u8>,
    index: IndexEntry,
    idempotency: Option<IdempotencyKey>,
    entries: u64,
    service: String,
}

impl Prepared {
    /// Encodes the record (CPU-bound). `body` is the request as received,
    /// after decompression: what "the same body" of a retry is compared by.
    pub(super) fn new<S: AsRef<str> + bincode::Encode>(
        batch: &Batch<S>,
        scope: Option<[u8; 32]>,
        body: &[u8],
    ) -> Prepared {
        let entries = batch.len() as u64;
        let service = batch.first_service().to_string();
        let idempotency = scope.map(|scope| IdempotencyKey {
            scope,
            body: Sha256::digest(body).into(),
            entries: entries as u32,
            service: service.clone(),
        });
        let record = encode_record(batch);
        let index = IndexEntry {
            kind: batch.kind(),
            entries: entries as u32,
            record_bytes: u32::try_from(record.len()).unwrap_or(u32::MAX),
            enqueued_at_ms: 0,
        };
        Prepared {
            record,
            index,
            idempotency,
            entries,
            service,
        }
    }
}

/// JSON → validated batch. Syntax errors are 400; a value of the wrong type
/// or a rule broken is 422 naming the field.
/// The batch's strings borrow from `bytes` where the JSON had no escapes.
pub fn parse(
    kind: Kind,
    bytes: &[u8],
    limits: model::Limits,
) -> Result<Batch<Cow<'_, str>>, Rejection> {
    if is_array(bytes) {
        return Err(shape_problem(kind, "a JSON array"));
    }
    match kind {
        Kind::Logs => {
            let wire = serde_json::from_slice::<model::WireLogBatch>(bytes)
                .map_err(|e| classify::<model::WireLogBatch>(kind, e, bytes))?;
            model::validate_logs(wire, limits).map_err(|p| invalid(kind, p, bytes))
        }
        Kind::Metrics => {
            let wire = serde_json::from_slice::<model::WireMetricBatch>(bytes)
                .map_err(|e| classify::<model::WireMetricBatch>(kind, e, bytes))?;
            model::validate_metrics(wire, limits).map_err(|p| invalid(kind, p, bytes))
        }
    }
}

/// What stock agents send to a JSON endpoint instead of one batch object:
/// an array of records (Fluent Bit's `http` output, `format json`)...
fn is_array(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

/// ...or one object per line (`format json_lines`, NDJSON): the first
/// value parses, then more follow. Checked only once parsing failed.
fn is_ndjson(bytes: &[u8]) -> bool {
    let values = serde_json::Deserializer::from_slice(bytes).into_iter::<serde::de::IgnoredAny>();
    let mut n = 0;
    for v in values {
        if v.is_err() {
            return false;
        }
        n += 1;
    }
    n >= 2
}

/// ...or one record on its own (a chunk of one line): an object with
/// fields, none of them `entries`. Checked only once validation failed.
fn is_single_record(problems: &[Problem], bytes: &[u8]) -> bool {
    let [p] = problems else { return false };
    p.field == "entries"
        && p.problem == "is required"
        && serde_json::from_slice::<std::collections::BTreeMap<String, serde::de::IgnoredAny>>(
            bytes,
        )
        .is_ok_and(|m| !m.is_empty())
}

fn invalid(kind: Kind, problems: Vec<Problem>, bytes: &[u8]) -> Rejection {
    if is_single_record(&problems, bytes) {
        return shape_problem(kind, "a single record, not a batch");
    }
    Rejection::Invalid(problems)
}

fn shape_problem(kind: Kind, shape: &str) -> Rejection {
    let (endpoint, otlp) = match kind {
        Kind::Logs => ("/logs", "/v1/logs"),
        Kind::Metrics => ("/metrics", "/v1/metrics"),
    };
    Rejection::Invalid(vec![Problem {
        field: "body".into(),
        problem: format!(
            "is {shape}; {endpoint} takes one JSON object {{\"entries\": [...]}}. \
             Agents that speak OTLP (the OpenTelemetry Collector and SDKs, Fluent Bit's \
             `opentelemetry` output, Vector's `opentelemetry` sink) should send to {otlp}"
        ),
    }])
}

/// On a type error, parses again with path tracking to name the field; the
/// happy path pays nothing for it.
fn classify<'de, T: serde::Deserialize<'de>>(
    kind: Kind,
    err: serde_json::Error,
    bytes: &'de [u8],
) -> Rejection {
    if !err.is_data() {
        if is_ndjson(bytes) {
            return shape_problem(kind, "several JSON values (NDJSON)");
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A wrong-typed string field is a 422 naming it, and a string with
    /// escapes is taken whole (string fields borrow from the body when
    /// they can, and copy when they must).
    #[test]
    fn string_fields_are_named_when_wrong_and_kept_whole_with_escapes() {
        let limits = model::Limits {
            max_batch_entries: 10,
        };
        let entry = r#""service":"s","host":"h","timestamp":"2024-01-01T00:00:00Z""#;
        let body = format!(r#"{{"entries":[{{{entry},"message":5}}]}}"#);
        match parse(Kind::Logs, body.as_bytes(), limits) {
            Err(Rejection::Invalid(p)) => {
                assert_eq!(p[0].field, "entries[0].message", "{p:?}");
                assert!(p[0].problem.contains("expected a string"), "{p:?}");
            }
            other => panic!("{other:?}"),
        }
        let body = format!(
            r#"{{"entries":[{{{entry},"message":"a \"b\"\n","attributes":{{"k\u00e9":"v\t"}}}}]}}"#
        );
        let batch = parse(Kind::Logs, body.as_bytes(), limits)
            .unwrap()
            .into_owned();
        let model::Entries::Logs(v) = batch.entries else {
            panic!()
        };
        assert_eq!(v[0].message, "a \"b\"\n");
        assert_eq!(
            v[0].attributes,
            vec![("k\u{e9}".to_string(), model::AttrValue::Str("v\t".into()))]
        );
    }

    /// A wrong-typed attribute value is a 422 naming the key, for both
    /// endpoints (serde_path_to_error must see the key as a string).
    #[test]
    fn a_bad_attribute_value_names_its_key() {
        let limits = model::Limits {
            max_batch_entries: 10,
        };
        for (kind, entry) in [
            (
                Kind::Logs,
                r#""service":"s","message":"m","host":"h","timestamp":"2024-01-01T00:00:00Z""#,
            ),
            (
                Kind::Metrics,
                r#""service":"s","name":"n","value":1,"metric_type":"gauge","host":"h","timestamp":"2024-01-01T00:00:00Z""#,
            ),
        ] {
            let body = format!(r#"{{"entries":[{{{entry},"attributes":{{"ok":1,"k":[1]}}}}]}}"#);
            match parse(kind, body.as_bytes(), limits) {
                Err(Rejection::Invalid(p)) => {
                    assert_eq!(p[0].field, "entries[0].attributes.k", "{p:?}")
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
