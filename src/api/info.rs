//! Read-only endpoints: `/`, `/health`, `/ready`, `/stats`, `/stats/prometheus`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::auth::Auth;
use super::error::ErrorBody;
use super::AppState;
use crate::stats::Snapshot;

#[derive(Debug, Object)]
pub struct RootBody {
    pub service: String,
    pub version: String,
    pub endpoints: Vec<String>,
    pub docs_url: String,
}

#[derive(Debug, Object)]
pub struct HealthBody {
    /// Always `healthy` while the process serves.
    pub status: String,
    pub service: String,
    pub version: String,
}

#[derive(Debug, Object)]
pub struct ReadyBody {
    /// `ready` or `not_ready`.
    pub status: String,
    /// Why the queue cannot take writes now.
    #[oai(skip_serializing_if_is_none)]
    pub reason: Option<String>,
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// The queue takes writes and is below its high-water mark.
    #[oai(status = 200)]
    Ready(Json<ReadyBody>),
    /// The last queue write failed, or the queue is above its high-water mark.
    #[oai(status = 503)]
    NotReady(Json<ReadyBody>),
}

#[derive(ApiResponse)]
pub enum StatsResponse {
    #[oai(status = 200)]
    Ok(Json<Box<Snapshot>>),
    /// No API key, or one that matches no configured key.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
}

#[derive(ApiResponse)]
pub enum PrometheusResponse {
    /// Prometheus text exposition format 0.0.4.
    #[oai(status = 200)]
    Ok(PlainText<String>),
    /// No API key, or one that matches no configured key.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
}

pub const ENDPOINTS: [&str; 9] = [
    "POST /logs",
    "POST /metrics",
    "GET /health",
    "GET /ready",
    "GET /stats",
    "GET /stats/prometheus",
    "GET /docs",
    "GET /openapi.json",
    "GET /",
];

pub struct InfoApi {
    pub state: Arc<AppState>,
    /// What `/ready` answered last, so a flip is logged once, not per probe.
    pub was_ready: AtomicBool,
}

impl InfoApi {
    pub fn new(state: Arc<AppState>) -> InfoApi {
        InfoApi {
            state,
            // The server starts ready; the first not-ready answer is a change.
            was_ready: AtomicBool::new(true),
        }
    }

    /// Logs a readiness change the moment a probe sees it. NOTE: readiness
    /// is derived on demand from the queue (bytes, write failures), so there
    /// is no single place where it changes; the swap makes exactly one of
    /// concurrent probes log it.
    fn note_readiness(&self, reason: Option<&str>) {
        let ready = reason.is_none();
        if self.was_ready.swap(ready, Ordering::Relaxed) == ready {
            return;
        }
        match reason {
            Some(reason) => tracing::warn!(
                target: "edge_ingester::ready",
                reason,
                "readiness ready -> not_ready: {reason}"
            ),
            None => tracing::info!(target: "edge_ingester::ready", "readiness not_ready -> ready"),
        }
    }
}

/// The 401 body for read endpoints, same words as for ingest.
fn unauthorized(auth: &Auth) -> Option<Json<ErrorBody>> {
    let rejection = auth.key().err()?;
    match rejection.into_response(None) {
        super::error::IngestResponse::Unauthorized(body) => Some(body),
        _ => Some(ErrorBody::new("Invalid API key")),
    }
}

#[OpenApi]
impl InfoApi {
    /// Service name, version and the list of endpoints.
    #[oai(path = "/", method = "get")]
    async fn root(&self) -> Json<RootBody> {
        Json(RootBody {
            service: super::SERVICE_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            endpoints: ENDPOINTS.iter().map(|s| s.to_string()).collect(),
            docs_url: "/docs".into(),
        })
    }

    /// Liveness: the process is up and serving.
    #[oai(path = "/health", method = "get")]
    async fn health(&self) -> Json<HealthBody> {
        Json(HealthBody {
            status: "healthy".into(),
            service: super::SERVICE_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
        })
    }

    /// Readiness: whether a batch posted now would be accepted.
    #[oai(path = "/ready", method = "get")]
    async fn ready(&self) -> ReadyResponse {
        let ratio = self.state.config.queue.high_water_ratio;
        let reason = self.state.queue.not_ready_reason(ratio);
        self.note_readiness(reason.as_deref());
        match reason {
            None => ReadyResponse::Ready(Json(ReadyBody {
                status: "ready".into(),
                reason: None,
            })),
            Some(reason) => ReadyResponse::NotReady(Json(ReadyBody {
                status: "not_ready".into(),
                reason: Some(reason),
            })),
        }
    }

    /// Counters, queue depth and forwarder state (SPEC §5).
    #[oai(path = "/stats", method = "get")]
    async fn stats(&self, auth: Auth) -> StatsResponse {
        if let Some(body) = unauthorized(&auth) {
            return StatsResponse::Unauthorized(body);
        }
        StatsResponse::Ok(Json(Box::new(
            self.state.stats.snapshot(self.state.queue.stats()),
        )))
    }

    /// The same figures in Prometheus text format.
    #[oai(path = "/stats/prometheus", method = "get")]
    async fn prometheus(&self, auth: Auth) -> PrometheusResponse {
        if let Some(body) = unauthorized(&auth) {
            return PrometheusResponse::Unauthorized(body);
        }
        PrometheusResponse::Ok(PlainText(
            self.state.stats.prometheus(&self.state.queue.stats()),
        ))
    }
}
