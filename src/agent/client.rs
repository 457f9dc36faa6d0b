//! Ships one batch to the ingester and applies the retry rules of SPEC §7
//! until the server gives a final answer:
//!
//! | answer                        | what the agent does                        |
//! |-------------------------------|--------------------------------------------|
//! | 2xx                           | accepted                                   |
//! | 429, 503                      | waits `Retry-After` (1 s if absent), again |
//! | no connection, timeout, 5xx,  | backoff 100 ms doubling to 30 s, jittered  |
//! | 408 (body too slow), 409      |                                            |
//! | 413                           | `TooLarge`: the caller splits the batch    |
//! | 422 naming `Idempotency-Key`  | accepted before (the same byte range)      |
//! | 400, 422, other 4xx           | dropped, counted, the server's detail kept |
//! | 401                           | fatal: the key is wrong (exit 1)           |
//! | 404, 405, a redirect          | fatal: --url is not an ingester (exit 1)   |
//!
//! The same body and `Idempotency-Key` are sent on every retry, so a batch
//! whose 202 was lost is recognised by the server instead of stored twice.

use std::time::Duration;

use bytes::Bytes;

use super::Target;

const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A request that takes longer is abandoned and retried (same key).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A `Retry-After` beyond this is taken as this (a broken header must not
/// park the agent for a day).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Logs,
    Metrics,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::Logs => "/logs",
            Endpoint::Metrics => "/metrics",
        }
    }
}

/// The server's final word on a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Stored (or, for a repeated `Idempotency-Key`, stored before).
    Accepted,
    /// 413: the caller splits the batch in halves and sends each.
    TooLarge,
    /// 400/422 (or another 4xx): the server will never take this batch.
    Dropped { status: u16, detail: String },
}

/// Errors that no retry can fix: the agent stops (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    #[error(
        "the server at {0} refused the API key (401): set INGESTION_API_KEY (or --api-key) \
         to a key the server accepts"
    )]
    Unauthorized(String),
    #[error(
        "{0} answered {1} to a POST: set INGESTION_API_URL (or --url) to the ingester's base URL, \
         e.g. http://localhost:8000"
    )]
    NotAnIngester(String, u16),
    /// `--ca-cert` cannot be read, or the HTTPS client cannot be built.
    #[error("{0}")]
    Tls(String),
    /// The followed file or the state directory cannot be used.
    #[error("{0}")]
    State(String),
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    pub fn new(target: &Target) -> Result<Client, Fatal> {
        // NOTE: no redirects: reqwest would turn the POST into a GET (the
        // batch then refused as 405 and dropped) and carry the API key to
        // whatever host it was sent to.
        let http = crate::client_tls::builder(target.ca_cert.as_deref())
            .map_err(Fatal::Tls)?
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Fatal::Tls(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base: target.url.trim_end_matches('/').to_string(),
            key: target.api_key.clone(),
        })
    }

    /// Sends `body` (a JSON batch) until the server answers for good.
    /// Retries forever on transient failures; callers bound it with a
    /// timeout where SPEC §7 asks for one (`--give-up-after`).
    pub async fn send(
        &self,
        endpoint: Endpoint,
        body: Bytes,
        idempotency_key: &str,
    ) -> Result<Answer, Fatal> {
        let url = format!("{}{}", self.base, endpoint.path());
        let mut backoff = INITIAL_BACKOFF;
        let mut rng = Jitter::seeded();
        let mut failing = false;
        loop {
            let sent = self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .header("x-api-key", &self.key)
                .header("idempotency-key", idempotency_key)
                .body(body.clone())
                .send()
                .await;
            let wait = match sent {
                Err(e) => {
                    if !failing {
                        tracing::warn!(url = %url, error = %e, "cannot reach the ingester; retrying with backoff");
                    }
                    failing = true;
                    let d = rng.around(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    d
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match status {
                        200..=299 => {
                            if failing {
                                tracing::info!("ingester reachable again");
                            }
                            return Ok(Answer::Accepted);
                        }
                        429 | 503 => {
                            let d = retry_after(&resp);
                            tracing::debug!(
                                status,
                                wait_s = d.as_secs(),
                                "ingester busy; waiting Retry-After"
                            );
                            d
                        }
                        401 => return Err(Fatal::Unauthorized(self.base.clone())),
                        413 => return Ok(Answer::TooLarge),
                        300..=399 | 404 | 405 => {
                            return Err(Fatal::NotAnIngester(url.clone(), status))
                        }
                        408 | 409 | 500..=599 => {
                            let detail = detail(resp).await;
                            if !failing {
                                tracing::warn!(
                                    status,
                                    detail,
                                    "ingester failed; retrying with backoff"
                                );
                            }
                            failing = true;
                            let d = rng.around(backoff);
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                            d
                        }
                        _ => {
                            let detail = detail(resp).await;
                            // NOTE: a batch re-read after an agent restart has
                            // the same key and range; the server already holds
                            // it, so this is not a loss.
                            if status == 422 && detail.contains("Idempotency-Key") {
                                tracing::debug!(detail, "batch was accepted before");
                                return Ok(Answer::Accepted);
                            }
                            return Ok(Answer::Dropped { status, detail });
                        }
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// `Retry-After` in whole seconds (1 s if absent or unreadable).
fn retry_after(resp: &reqwest::Response) -> Duration {
    resp.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
        .clamp(Duration::from_millis(100), MAX_RETRY_AFTER)
}

/// The `detail` of an error body, else the body itself (cut short).
async fn detail(resp: reqwest::Response) -> String {
    let text = resp.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| match &v["detail"] {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        })
        .unwrap_or(text);
    detail.chars().take(1000).collect()
}

/// Full jitter in [d/2, d]: agents that lost the server together do not
/// come back in step.
struct Jitter(u64);

impl Jitter {
    fn seeded() -> Jitter {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Jitter(nanos | 1)
    }

    fn around(&mut self, d: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let half = d / 2;
        half + Duration::from_nanos(self.0 % (half.as_nanos() as u64 + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_to_full_delay() {
        let mut j = Jitter(12345);
        for _ in 0..1000 {
            let d = j.around(Duration::from_millis(100));
            assert!(
                d >= Duration::from_millis(50) && d <= Duration::from_millis(100),
                "{d:?}"
            );
        }
    }
}
