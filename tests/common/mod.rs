//! Shared helpers: start the service in-process (`run()`) or as the real
//! binary, always on 127.0.0.1:0 with a temporary queue directory.
#![allow(dead_code)]

pub mod agent;
pub mod kafka;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edge_ingester::config::{Config, MockFail};
use serde_json::{json, Value};
use tokio::sync::oneshot;

pub const KEY: &str = "test-key";

/// Environment variables that override the config file of a spawned server.
pub use edge_ingester::cli::OVERRIDE_ENV as OVERRIDE_VARS;

/// A test that cannot run here says why where `cargo test` shows it even
/// when it captures output (libtest captures only the print macros, not
/// writes to the stderr handle) — and under `CI=true`, where everything
/// must run, it fails instead.
pub fn skip_or_fail(test: &str, reason: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} cannot run under CI: {reason}");
    }
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("SKIPPED {test}: {reason}\n").as_bytes());
}

/// A config for tests: its own queue dir, a generous rate limit, and a
/// failing sink with long backoff so accepted batches stay queued.
pub fn test_config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.server.listen = "127.0.0.1:0".into();
    c.auth.keys = vec![KEY.into()];
    c.rate_limit.requests_per_second = 100_000.0;
    c.rate_limit.burst = 100_000;
    c.queue.path = dir.join("queue");
    c.mock.fail = MockFail::Always;
    c.forwarder.initial_backoff_ms = 60_000;
    c.forwarder.max_backoff_ms = 60_000;
    c.forwarder.jitter = false;
    c
}

/// The service running inside the test process.
pub struct InProcess {
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), edge_ingester::RunError>>>,
}

impl InProcess {
    pub async fn start(config: Config) -> InProcess {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(edge_ingester::run(config, listener, async {
            let _ = rx.await;
        }));
        InProcess {
            base,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Graceful stop, as SIGTERM does in the binary.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// A valid log entry whose message carries `id`.
pub fn log_entry(id: &str, service: &str) -> Value {
    json!({
        "timestamp": "2026-11-27T10:00:00Z",
        "level": "info",
        "message": id,
        "service": service,
        "host": "edge-test",
        "attributes": {"n": 1}
    })
}

pub fn log_batch(ids: &[String]) -> Value {
    json!({
        "entries": ids.iter().map(|id| log_entry(id, "svc")).collect::<Vec<_>>(),
        "agent_version": "0.1.0"
    })
}

pub async fn post_json(c: &reqwest::Client, url: &str, body: &Value) -> reqwest::Response {
    c.post(url)
        .header("content-type", "application/json")
        .header("x-api-key", KEY)
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .await
        .unwrap()
}

pub async fn stats(c: &reqwest::Client, base: &str) -> Value {
    stats_as(c, base, KEY).await
}

/// `/stats` asked with `key`.
pub async fn stats_as(c: &reqwest::Client, base: &str, key: &str) -> Value {
    c.get(format!("{base}/stats"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The Prometheus text of `/stats/prometheus`.
pub async fn prometheus(c: &reqwest::Client, base: &str) -> String {
    c.get(format!("{base}/stats/prometheus"))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The `size` entry ids of the `n`th batch a load client tagged `tag` sends
/// (1 to 40 entries, varied); `{tag}-b{n}-e{i}`.
pub fn numbered_batch_ids(tag: &str, n: usize) -> Vec<String> {
    let size = 1 + (n * 7) % 40;
    (0..size).map(|i| format!("{tag}-b{n}-e{i}")).collect()
}

/// Polls until `cond` holds on `/stats`, or panics after `limit`.
pub async fn wait_for_stats(
    c: &reqwest::Client,
    base: &str,
    limit: Duration,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let s = stats(c, base).await;
        if cond(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "condition not reached; last stats: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes a config to a TOML file for the real binary.
pub fn write_config(dir: &Path, name: &str, config: &Config) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, toml::to_string(config).unwrap()).unwrap();
    path
}

/// The real binary, serving; killed on drop.
pub struct Binary {
    pub child: Child,
    pub base: String,
    /// Every stderr line so far (the service's log), for tests of what an
    /// operator reads.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Binary {
    pub fn start(config_path: &Path) -> Binary {
        Self::start_exe(Path::new(env!("CARGO_BIN_EXE_edge-ingester")), config_path)
    }

    /// `EDGE_INGESTER_BIN` (CI points it at the release build), else the
    /// binary cargo built for the tests.
    pub fn start_release_or_test(config_path: &Path) -> Binary {
        match std::env::var_os("EDGE_INGESTER_BIN") {
            Some(exe) => Self::start_exe(Path::new(&exe), config_path),
            None => Self::start(config_path),
        }
    }

    pub fn start_exe(exe: &Path, config_path: &Path) -> Binary {
        Self::start_with_env(exe, config_path, &[])
    }

    /// `start_exe` with extra environment variables (`NOTIFY_SOCKET`, …).
    pub fn start_with_env(exe: &Path, config_path: &Path, env: &[(&str, &str)]) -> Binary {
        let mut cmd = Command::new(exe);
        // A test runner started by systemd must not make every server
        // notify it; the systemd tests set these explicitly.
        for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        // NOTE: these variables override the config file (flag > env > file),
        // and CI exports KAFKA_BROKERS for the real-broker test: inherited,
        // it pointed every mock-cluster test's server at tansu instead.
        for var in OVERRIDE_VARS {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .args(["serve", "--config"])
            .arg(config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start edge-ingester");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = log.clone();
        // Keep draining stderr for the life of the process, or it blocks.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line.clone());
                if let Some(rest) = line.split(edge_ingester::LISTENING_ON).nth(1) {
                    // Text or JSON (`…127.0.0.1:41234","target":…`) logs.
                    let addr = rest.split(['"', ' ']).next().unwrap_or_default();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr.to_string());
                    }
                }
                // Shown with a failing test's output: enough to diagnose.
                if line.contains("ERROR") || line.contains("WARN") || line.contains("panicked") {
                    eprintln!("server: {line}");
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server did not report its address");
        Binary {
            child,
            base: format!("http://{addr}"),
            log,
        }
    }

    /// The log lines that match `pred`, once at least one does; panics with
    /// the whole log after `limit`.
    pub fn wait_for_log(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let found: Vec<String> = self
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|l| pred(l))
                .cloned()
                .collect();
            if !found.is_empty() {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no such log line; the log:\n{}",
                self.log.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn sigkill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGHUP: reload the config file.
    pub fn sighup(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(sent.success());
    }

    /// SIGTERM, then the exit status.
    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Messages of every line in a capture file. A kill -9 during an append
/// can leave one torn line per kill: that batch was not confirmed and is
/// captured again in full, so torn lines are skipped (and counted).
pub fn captured_messages(path: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut torn = 0;
    let messages = text
        .lines()
        .filter(|l| !l.is_empty())
        .filter_map(|l| match serde_json::from_str::<serde_json::Value>(l) {
            Ok(v) => Some(v["message"].as_str().unwrap().to_string()),
            Err(_) => {
                torn += 1;
                None
            }
        })
        .collect();
    if torn > 0 {
        eprintln!("capture: {torn} torn line(s) from kills mid-append skipped");
    }
    messages
}
