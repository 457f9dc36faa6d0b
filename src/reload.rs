//! SIGHUP: the config file is read again and applied without a restart
//! (SPEC §9), without dropping a connection or an accepted batch.
//!
//! What may change while serving is swapped whole, so a request sees either
//! the old settings or the new ones, never a mix: the API keys and rate
//! limits (`api::Access`), the log level, the forwarder's backoff and
//! breaker, the mock producer's settings and the TLS certificate. Anything
//! else that changed in the file (`listen`, `queue.*`, `sink`, `kafka.*`, …)
//! is named in a warning and keeps its running value until a restart. A file
//! that does not load or validate changes nothing: all the fallible steps
//! (reading, validating, loading the certificate, opening a capture file)
//! run before anything is swapped.

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use tokio::sync::watch;

use crate::api::{Access, AppState, Tls, TlsError};
use crate::config::{Config, ConfigError, ForwarderConfig};
use crate::queue::lock;
use crate::sink::Sink;
use crate::stats::{now_rfc3339, Stats};

/// Settings (dotted paths, or a prefix ending in `.`) applied while serving.
const LIVE_KEYS: &[&str] = &[
    "auth.keys",
    "rate_limit.",
    "log.level",
    "forwarder.initial_backoff_ms",
    "forwarder.max_backoff_ms",
    "forwarder.multiplier",
    "forwarder.jitter",
    "forwarder.breaker_failure_threshold",
    "forwarder.breaker_open_ms",
    "mock.",
    "server.tls.",
];

/// How the process reads its config again; given by `main`, which knows the
/// flags and the log subscriber.
pub struct Reloader {
    /// The file again, with the same flags and environment overrides as at
    /// start-up (so `--listen` still wins over the file).
    pub load: Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>,
    /// Applies `log.level` to the running subscriber.
    pub set_log_level: Box<dyn Fn(tracing::Level) -> Result<(), String> + Send + Sync>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("server.tls: {0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Sink(String),
}

/// What a successful reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Settings that changed and took effect.
    pub changed: Vec<String>,
    /// Settings that changed in the file but need a restart.
    pub restart_only: Vec<String>,
}

/// The parts of a running server that a reload reaches.
pub struct Live {
    /// What is in effect now: the start-up config with every applied
    /// reload's live settings.
    pub running: Config,
    pub state: Arc<AppState>,
    pub sink: Arc<dyn Sink>,
    pub tls: Option<Arc<Tls>>,
    /// The forwarder's backoff and breaker settings.
    pub forwarder: watch::Sender<ForwarderConfig>,
    pub stats: Arc<Stats>,
}

impl Live {
    /// One SIGHUP: reload, log the outcome, count it in `/stats`. Never
    /// fails the process.
    pub fn on_hangup(&mut self, reloader: &Reloader) {
        match self.reload(reloader) {
            Ok(applied) => {
                {
                    let mut c = lock(&self.stats.config);
                    c.reloads += 1;
                    c.loaded_at = now_rfc3339();
                }
                for key in &applied.restart_only {
                    tracing::warn!(
                        key = key.as_str(),
                        "config reload: `{key}` changed in the file but needs a restart; \
                         the running value is kept"
                    );
                }
                tracing::info!(
                    changed = applied.changed.join(",").as_str(),
                    needs_restart = applied.restart_only.join(",").as_str(),
                    "config reloaded"
                );
            }
            Err(e) => {
                lock(&self.stats.config).reload_failures += 1;
                // toml's message spans lines (a caret under the column): one
                // log line per event.
                let error = e
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                tracing::error!(error, "config reload failed; nothing changed");
            }
        }
    }

    fn reload(&mut self, reloader: &Reloader) -> Result<Applied, ReloadError> {
        let file = (reloader.load)()?;
        file.validate()?;
        let (next, applied) = merge(&self.running, &file);

        // Everything that can fail, before anything is swapped.
        let tls = match &self.tls {
            // Read again even if the paths are the same: a renewed
            // certificate is usually written over the old file.
            Some(_) => Some(crate::api::tls_server_config(&next.server.tls)?),
            None => None,
        };
        // `validate` checked it.
        let level: tracing::Level = next.log.level.parse().unwrap_or(tracing::Level::INFO);
        self.sink.reload(&next).map_err(ReloadError::Sink)?;

        // Commit: none of these can fail.
        if let (Some(current), Some(new)) = (&self.tls, tls) {
            current.replace(new);
        }
        let now = Instant::now();
        let mut access = Access::from_config(&next, now);
        access.limiter.carry_over(&self.state.access.load().limiter);
        self.state.access.store(Arc::new(access));
        self.forwarder.send_if_modified(|running| {
            let modified = *running != next.forwarder;
            if modified {
                *running = next.forwarder.clone();
            }
            modified
        });
        if let Err(e) = (reloader.set_log_level)(level) {
            tracing::warn!(error = %e, "config reload: cannot change the log level");
        }
        self.running = next;
        Ok(applied)
    }
}

/// The config to run with after a reload of `file`: `running` with the live
/// settings taken from `file`, and what changed.
fn merge(running: &Config, file: &Config) -> (Config, Applied) {
    let mut applied = Applied::default();
    let tls_toggled = running.server.tls.enabled() != file.server.tls.enabled();
    // The mock's settings only act while the mock is the sink.
    let mock_inert = running.forwarder.sink != crate::config::SinkKind::Mock;
    for key in changed_keys(running, file) {
        let live = LIVE_KEYS.iter().any(|k| match k.strip_suffix('.') {
            Some(section) => key.starts_with(*k) || key == section,
            None => key == *k,
        }) && !(mock_inert && key.starts_with("mock."));
        // Turning TLS on or off changes what the listener speaks: a restart.
        if live && !(tls_toggled && key.starts_with("server.tls")) {
            applied.changed.push(key);
        } else {
            applied.restart_only.push(key);
        }
    }
    let mut next = running.clone();
    next.auth = file.auth.clone();
    next.rate_limit = file.rate_limit.clone();
    next.log.level = file.log.level.clone();
    next.forwarder = ForwarderConfig {
        sink: running.forwarder.sink,
        ..file.forwarder.clone()
    };
    next.mock = file.mock.clone();
    if !tls_toggled {
        next.server.tls = file.server.tls.clone();
    }
    (next, applied)
}

/// Dotted paths of the settings that differ. Values are never returned:
/// they may be secrets.
fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    let (Ok(a), Ok(b)) = (serde_json::to_value(a), serde_json::to_value(b)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    diff("", &a, &b, &mut out);
    out
}

fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff(
                    &sub,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ if a != b => out.push(path.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::from_toml(text, "t").unwrap()
    }

    #[test]
    fn live_settings_are_taken_and_the_rest_kept_and_named() {
        let running = parse("[queue]\npath = \"a\"\n");
        let file = parse(
            "[auth]\nkeys = [\"new\"]\n[rate_limit]\nburst = 5\n[queue]\npath = \"b\"\n\
             [forwarder]\nsink = \"kafka\"\nbreaker_open_ms = 7\n[kafka]\nbrokers = \"x:1\"\n\
             [kafka.properties]\n\"sasl.password\" = \"hunter2\"\n[log]\nlevel = \"debug\"\n",
        );
        let (next, applied) = merge(&running, &file);
        assert_eq!(next.auth.keys, ["new"]);
        assert_eq!(next.rate_limit.burst, 5);
        assert_eq!(next.forwarder.breaker_open_ms, 7);
        assert_eq!(next.log.level, "debug");
        // Restart-only: kept.
        assert_eq!(next.queue.path, std::path::Path::new("a"));
        assert_eq!(next.forwarder.sink, running.forwarder.sink);
        assert_eq!(next.kafka.brokers, running.kafka.brokers);
        assert_eq!(
            applied.changed,
            [
                "auth.keys",
                "forwarder.breaker_open_ms",
                "log.level",
                "rate_limit.burst"
            ]
        );
        assert_eq!(
            applied.restart_only,
            [
                "forwarder.sink",
                "kafka.brokers",
                "kafka.properties.sasl.password",
                "queue.path"
            ]
        );
        assert!(!format!("{applied:?}").contains("hunter2"));
    }

    #[test]
    fn turning_tls_on_needs_a_restart_but_new_paths_do_not() {
        let plain = parse("");
        let tls = parse("[server.tls]\ncert_path = \"c\"\nkey_path = \"k\"\n");
        let (next, applied) = merge(&plain, &tls);
        assert!(!next.server.tls.enabled());
        assert_eq!(
            applied.restart_only,
            ["server.tls.cert_path", "server.tls.key_path"]
        );
        let moved = parse("[server.tls]\ncert_path = \"c2\"\nkey_path = \"k\"\n");
        let (next, applied) = merge(&tls, &moved);
        assert_eq!(next.server.tls.cert_path, std::path::Path::new("c2"));
        assert_eq!(applied.changed, ["server.tls.cert_path"]);
    }

    #[test]
    fn mock_settings_are_not_live_when_kafka_is_the_sink() {
        let running = parse("[forwarder]\nsink = \"kafka\"\n");
        let file = parse("[forwarder]\nsink = \"kafka\"\n[mock]\nlatency_ms = 5\n");
        let applied = merge(&running, &file).1;
        assert_eq!(applied.restart_only, ["mock.latency_ms"]);
        assert!(applied.changed.is_empty());
    }

    #[test]
    fn an_unchanged_file_changes_nothing() {
        let cfg = parse("[mock]\nlatency_ms = 3\n");
        assert_eq!(merge(&cfg, &cfg).1, Applied::default());
    }
}
