//! The HTTP API (SPEC §3): routes, auth, rate limit, body reading, errors.
//!
//! `ingest.rs` holds the write path and `otlp.rs` its OTLP/HTTP front; `info.rs` the read-only endpoints;
//! `error.rs` maps every refusal to its status and JSON body in one place.

mod auth;
mod body;
mod budget;
mod error;
mod info;
mod ingest;
mod otlp;
mod rate_limit;
mod schema;
pub mod server;
mod tls;

use std::sync::Arc;
use std::time::Instant;

use poem::http::StatusCode;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route};
use poem_openapi::OpenApiService;

pub use auth::KeyRing;
pub use body::decode as decode_body;
pub use budget::Budget;
pub use ingest::parse as parse_batch;
pub use rate_limit::RateLimiter;
pub use tls::{server_config as tls_server_config, Tls, TlsError};

use crate::config::Config;
use crate::queue::Queue;
use crate::stats::Stats;

/// `service` in `/health` (the name the seed agents expect).
pub const SERVICE_NAME: &str = "ingestion-service";

/// Who may post and how often. Replaced whole by a SIGHUP reload, so a
/// request sees one consistent key set and limiter.
pub struct Access {
    pub keys: KeyRing,
    pub limiter: RateLimiter,
}

impl Access {
    /// `auth.keys` plus `INGESTION_API_KEY`, with `rate_limit.*`.
    pub fn from_config(config: &Config, now: Instant) -> Access {
        let mut keys: Vec<String> = config.auth.keys.clone();
        if let Ok(extra) = std::env::var("INGESTION_API_KEY") {
            if !extra.is_empty() {
                keys.push(extra);
            }
        }
        let keys = KeyRing::new(keys.iter().map(String::as_str));
        let limiter = RateLimiter::new(
            keys.digests(),
            config.rate_limit.requests_per_second,
            config.rate_limit.burst,
            now,
        );
        Access { keys, limiter }
    }
}

/// What every handler shares.
pub struct AppState {
    /// The configuration the server started with; what a reload changes
    /// lives in `access` (and in the forwarder, sink, log filter and TLS).
    pub config: Config,
    /// `server.max_inflight_bytes`: request bodies held at once.
    pub inflight: Budget,
    pub access: arc_swap::ArcSwap<Access>,
    pub queue: Queue,
    pub stats: Arc<Stats>,
}

fn openapi(
    state: &Arc<AppState>,
) -> OpenApiService<(ingest::IngestApi, otlp::OtlpApi, info::InfoApi), ()> {
    OpenApiService::new(
        (
            ingest::IngestApi {
                state: state.clone(),
            },
            otlp::OtlpApi {
                state: state.clone(),
            },
            info::InfoApi::new(state.clone()),
        ),
        "edge-ingester",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Durable buffering edge ingester: batches are acknowledged (202) only once \
         they are on disk, then forwarded to Kafka.",
    )
}

/// The OpenAPI document as `/openapi.json` serves it.
pub fn openapi_json(state: &Arc<AppState>) -> String {
    openapi(state).spec()
}

/// The whole application: routes plus request logging and metrics.
pub fn app(state: Arc<AppState>) -> impl Endpoint<Output = Response> {
    let api = openapi(&state);
    let spec = api.spec_endpoint();
    let docs = docs(&state);
    let stats = state.stats.clone();
    Route::new()
        .nest("/", api)
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .data(state)
        .catch_all_error(|err: poem::Error| async move {
            let status = err.status();
            let detail = if status == StatusCode::NOT_FOUND {
                "Not found: see GET / for the endpoints".to_string()
            } else {
                err.to_string()
            };
            poem::web::Json(serde_json::json!({ "detail": detail }))
                .with_status(status)
                .into_response()
        })
        .around(move |ep, req| observe(ep, req, stats.clone()))
}

/// Swagger UI at `/docs`, built on its first request. NOTE: poem-openapi's
/// `swagger_ui()` builds the 1.6 MB page (its bundled JavaScript and CSS)
/// when the routes are made: 1.6 MB of heap plus 1.6 MB of the binary read
/// into memory, ~3 MB of the idle RSS of a process that may never serve it.
fn docs(state: &Arc<AppState>) -> Route {
    let state = state.clone();
    let page = Arc::new(std::sync::OnceLock::<String>::new());
    Route::new().at(
        "/",
        poem::endpoint::make_sync(move |_| {
            poem::web::Html(
                page.get_or_init(|| openapi(&state).swagger_ui_html())
                    .clone(),
            )
        }),
    )
}

/// Logs and counts every request. Never logs headers: they carry keys.
async fn observe<E: Endpoint>(
    ep: Arc<E>,
    req: Request,
    stats: Arc<Stats>,
) -> poem::Result<Response> {
    let start = Instant::now();
    let method = req.method().clone();
    let route = route_label(req.uri().path());
    let resp = ep.get_response(req).await;
    let took = start.elapsed();
    let status = resp.status().as_u16();
    stats.record_request(route, status, took);
    tracing::info!(
        target: "edge_ingester::http",
        method = %method,
        path = route,
        status,
        // Whole microseconds: `1.28`, not `1.2800140000000002`.
        duration_ms = took.as_micros() as f64 / 1000.0,
        "request"
    );
    Ok(resp)
}

/// A fixed label per route, so metrics cannot be blown up by random paths.
fn route_label(path: &str) -> &'static str {
    match path {
        "/" => "/",
        "/logs" => "/logs",
        "/metrics" => "/metrics",
        "/v1/logs" => "/v1/logs",
        "/v1/metrics" => "/v1/metrics",
        "/health" => "/health",
        "/ready" => "/ready",
        "/stats" => "/stats",
        "/stats/prometheus" => "/stats/prometheus",
        "/openapi.json" => "/openapi.json",
        p if p.starts_with("/docs") => "/docs",
        _ => "other",
    }
}
