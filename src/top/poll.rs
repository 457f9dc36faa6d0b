//! Asking the server for `/stats`, once or on a timer from a thread of its
//! own (so a slow or hung server never delays a key press in the view).

use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use crate::stats::Snapshot;

/// One poll's outcome and when it arrived.
pub type Polled = (SystemTime, Result<Snapshot, String>);

/// A client for one server and key, with its own small runtime.
pub struct Poller {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    url: String,
    api_key: String,
}

impl Poller {
    pub fn new(
        url: &str,
        api_key: &str,
        interval: Duration,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<Poller, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))?;
        let client = crate::client_tls::builder(ca_cert)?
            // A hung server shows as an error within about one interval.
            .timeout(interval.clamp(Duration::from_secs(1), Duration::from_secs(10)))
            // NOTE: a pooled connection to a server that has since restarted
            // fails once on reuse; polls are seconds apart, so a fresh
            // connection each costs nothing and shows no false outage.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Poller {
            runtime,
            client,
            url: url.to_string(),
            api_key: api_key.to_string(),
        })
    }

    /// One `GET /stats`; an error never carries the key.
    pub fn poll(&self) -> Result<Snapshot, String> {
        self.runtime
            .block_on(crate::cli::fetch_stats(
                &self.client,
                &self.url,
                &self.api_key,
            ))
            .map_err(|e| redact(&e, &self.api_key))
    }

    /// Polls every `interval` on a thread until the receiver is dropped.
    pub fn spawn(self, interval: Duration) -> std::io::Result<mpsc::Receiver<Polled>> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("top-poller".into())
            .spawn(move || loop {
                let started = Instant::now();
                let outcome = self.poll();
                if tx.send((SystemTime::now(), outcome)).is_err() {
                    return;
                }
                std::thread::sleep(interval.saturating_sub(started.elapsed()));
            })?;
        Ok(rx)
    }
}

/// A server's error body or a URL could echo the key; a screen or a log
/// must not.
pub fn redact(message: &str, key: &str) -> String {
    if key.is_empty() {
        message.to_string()
    } else {
        message.replace(key, "[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_removes_every_copy_of_the_key() {
        assert_eq!(
            redact("401: key s3cret is not s3cret-2", "s3cret"),
            "401: key [redacted] is not [redacted]-2"
        );
        assert_eq!(redact("plain", ""), "plain");
    }
}
