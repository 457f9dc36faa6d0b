//! `edge-ingester top` as a person sees it: the real binary in a headless
//! tmux pane against the real server, the screen read back with
//! `capture-pane` and compared with what `/stats` says; and the plain
//! snapshots a script reads when stdout is not a terminal.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use edge_ingester::config::{Config, MockFail, DEFAULT_API_KEY};
use serde_json::Value;

/// `EDGE_INGESTER_BIN` (CI points it at the release build of the same
/// commit), else the binary cargo built for the tests.
fn exe() -> std::path::PathBuf {
    std::env::var_os("EDGE_INGESTER_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_edge-ingester").into())
        .into()
}
/// Long enough for a debug binary on a busy 2-core machine.
const LIMIT: Duration = Duration::from_secs(20);

/// A server whose sink always fails and whose circuit, once open, stays
/// open for ten minutes: the depth and circuit on screen cannot move while
/// a test compares them with `/stats`.
fn stuck_config(dir: &std::path::Path) -> Config {
    let mut c = test_config(dir);
    // `top` is run with no key, so it uses the default one, as an operator would.
    c.auth.keys = vec![KEY.into(), DEFAULT_API_KEY.into()];
    c.mock.fail = MockFail::Always;
    c.forwarder.initial_backoff_ms = 10;
    c.forwarder.max_backoff_ms = 10;
    c.forwarder.breaker_failure_threshold = 1;
    c.forwarder.breaker_open_ms = 600_000;
    c
}

/// Posts `sizes.len()` log batches with the default key; returns the entries.
async fn post_batches(base: &str, sizes: &[usize]) -> usize {
    let c = client();
    for (b, &n) in sizes.iter().enumerate() {
        let ids: Vec<String> = (0..n).map(|i| format!("top-b{b}-e{i}")).collect();
        let resp = c
            .post(format!("{base}/logs"))
            .header("content-type", "application/json")
            .header("x-api-key", DEFAULT_API_KEY)
            .body(serde_json::to_vec(&log_batch(&ids)).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
    }
    sizes.iter().sum()
}

/// Waits until the batches are queued and the circuit has opened.
async fn wait_until_stuck(base: &str, batches: u64) -> Value {
    wait_for_stats(&client(), base, LIMIT, |s| {
        s["queue"]["depth_batches"] == batches && s["forwarder"]["circuit"] == "open"
    })
    .await
}

/// The lines of `stats` that the screen must show.
fn expected_on_screen(s: &Value) -> [String; 2] {
    [
        format!(
            "depth: {} batches, {} entries",
            s["queue"]["depth_batches"], s["queue"]["depth_entries"]
        ),
        format!("circuit: {}", s["forwarder"]["circuit"].as_str().unwrap()),
    ]
}

/// `top` every 200 ms with stdout piped (no terminal), and its lines.
fn piped_top(base: &str) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = top()
        .args(["--url", base, "--interval-ms", "200"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

fn top() -> Command {
    let mut c = Command::new(exe());
    for var in OVERRIDE_VARS {
        c.env_remove(var);
    }
    c.arg("top");
    c
}

/// One headless tmux server of its own (a unique socket, so parallel tests
/// never see each other's sessions), killed on drop even when a test fails.
struct Tmux {
    socket: String,
    /// The exit code of the command in the pane is written here.
    exit_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    /// `None` (after saying why) when tmux is not installed.
    fn start(test: &str, args: &str) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            skip_or_fail(test, "tmux is not installed (apt-get install tmux)");
            return None;
        }
        static N: AtomicUsize = AtomicUsize::new(0);
        let socket = format!(
            "ei-top-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::tempdir().unwrap();
        let exit_file = dir.path().join("exit");
        let cmd = format!(
            "'{}' top {args}; echo $? > '{}'",
            exe().display(),
            exit_file.display()
        );
        let mut tmux = Command::new("tmux");
        for var in OVERRIDE_VARS {
            tmux.env_remove(var);
        }
        let status = tmux
            .args(["-L", &socket, "-f", "/dev/null"])
            .args(["new-session", "-d", "-s", "top", "-x", "140", "-y", "45"])
            .arg(cmd)
            .status()
            .unwrap();
        assert!(status.success(), "tmux new-session failed");
        Some(Tmux {
            socket,
            exit_file,
            _dir: dir,
        })
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .unwrap()
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", "top"]).stdout).into()
    }

    /// Polls the screen until it shows every one of `texts` (and none of
    /// `absent`); panics with the last screen after [`LIMIT`].
    async fn wait_for(&self, texts: &[String], absent: &[&str]) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let screen = self.screen();
            if texts.iter().all(|t| screen.contains(t.as_str()))
                && !absent.iter().any(|t| screen.contains(t))
            {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "screen never showed {texts:?} without {absent:?}:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn send_keys(&self, keys: &str) {
        assert!(self
            .tmux(&["send-keys", "-t", "top", keys])
            .status
            .success());
    }

    /// Waits for the program to exit (the pane, its only one, closes) and
    /// returns its exit code.
    async fn wait_for_exit(&self) -> i32 {
        let deadline = Instant::now() + LIMIT;
        loop {
            let gone = !self.tmux(&["has-session", "-t", "top"]).status.success();
            if gone {
                let code = std::fs::read_to_string(&self.exit_file).unwrap();
                return code.trim().parse().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "top still running:\n{}",
                self.screen()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn top_shows_the_depth_and_circuit_that_stats_reports_and_q_quits() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::start_release_or_test(&write_config(
        dir.path(),
        "c.toml",
        &stuck_config(dir.path()),
    ));
    let entries = post_batches(&server.base, &[3, 5, 7]).await;
    let stats = wait_until_stuck(&server.base, 3).await;
    assert_eq!(stats["queue"]["depth_entries"], entries);

    let args = format!("--url {} --interval-ms 200", server.base);
    let Some(tmux) = Tmux::start(
        "top_shows_the_depth_and_circuit_that_stats_reports_and_q_quits",
        &args,
    ) else {
        return;
    };
    let [depth, circuit] = expected_on_screen(&stats);
    let screen = tmux
        .wait_for(
            &[
                depth,
                circuit,
                " connected since".into(),
                format!("{}  every 200 ms", server.base),
                "q quits".into(),
                "live ".into(),
                "consecutive failures: 1".into(),
            ],
            &[],
        )
        .await;
    assert!(screen.contains("depth: 3 batches, 15 entries"), "{screen}");
    assert!(screen.contains("circuit: open"), "{screen}");

    tmux.send_keys("q");
    assert_eq!(tmux.wait_for_exit().await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn top_shows_disconnected_while_the_server_is_down_and_resumes_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = stuck_config(dir.path());
    let path = write_config(dir.path(), "c.toml", &config);
    let mut server = Binary::start_release_or_test(&path);
    post_batches(&server.base, &[2, 4]).await;
    let stats = wait_until_stuck(&server.base, 2).await;

    let args = format!("--url {} --interval-ms 200", server.base);
    let Some(tmux) = Tmux::start(
        "top_shows_disconnected_while_the_server_is_down_and_resumes_when_it_returns",
        &args,
    ) else {
        return;
    };
    tmux.wait_for(&expected_on_screen(&stats), &["disconnected"])
        .await;

    assert!(server.sigterm().success());
    let screen = tmux
        .wait_for(
            &[
                "disconnected since".into(),
                "error: cannot reach".into(),
                "queue (stale)".into(),
                // The last values stay, greyed.
                expected_on_screen(&stats)[0].clone(),
            ],
            &[],
        )
        .await;
    assert!(!screen.contains(DEFAULT_API_KEY), "{screen}");

    // Back on the same address, with the same queue.
    config.server.listen = server.base.trim_start_matches("http://").to_string();
    let server = Binary::start_release_or_test(&write_config(dir.path(), "c.toml", &config));
    let stats = wait_until_stuck(&server.base, 2).await;
    let [depth, circuit] = expected_on_screen(&stats);
    tmux.wait_for(
        &[depth, circuit, " connected since".into()],
        &["disconnected", "stale"],
    )
    .await;

    tmux.send_keys("Escape");
    assert_eq!(tmux.wait_for_exit().await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn top_once_without_a_terminal_prints_the_depth_and_circuit_of_stats() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::start_release_or_test(&write_config(
        dir.path(),
        "c.toml",
        &stuck_config(dir.path()),
    ));
    post_batches(&server.base, &[1, 2, 3, 4]).await;
    let stats = wait_until_stuck(&server.base, 4).await;

    let out = top()
        .args(["--once", "--url", &server.base])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for expected in [
        format!(
            "depth_batches={} depth_entries={} ",
            stats["queue"]["depth_batches"], stats["queue"]["depth_entries"]
        ),
        "circuit=open ".to_string(),
        "status=connected".to_string(),
    ] {
        assert!(
            stdout.contains(&expected),
            "missing {expected:?} in\n{stdout}"
        );
    }
    assert_eq!(stdout.matches("status=").count(), 1, "{stdout}");
}

#[test]
fn top_once_against_a_closed_port_exits_1_with_a_message() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = top()
        .args(["--once", "--url", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("error: cannot reach"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn top_without_a_terminal_prints_a_snapshot_every_interval() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::start_release_or_test(&write_config(
        dir.path(),
        "c.toml",
        &stuck_config(dir.path()),
    ));
    post_batches(&server.base, &[6]).await;
    wait_until_stuck(&server.base, 1).await;

    let (mut child, rx) = piped_top(&server.base);
    let deadline = Instant::now() + LIMIT;
    let mut headers = 0;
    let mut depths = 0;
    while headers < 2 || depths < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("two snapshots in time");
        headers += line.contains("status=connected") as usize;
        depths += line.contains("depth_batches=1 depth_entries=6 ") as usize;
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A server that answers every request with `status` and `body`, then
/// closes; stands in for something that is not edge-ingester.
fn fake_server(status: &'static str, body: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut conn in listener.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    base
}

#[test]
fn a_malformed_stats_answer_is_an_error_not_a_crash() {
    let base = fake_server("200 OK", r#"{"status":"ok","queue":42}"#.into());
    let out = top().args(["--once", "--url", &base]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("unexpected /stats body"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn an_error_that_echoes_the_key_never_prints_it() {
    let key = "k3y-that-must-not-show";
    let base = fake_server(
        "401 Unauthorized",
        format!(r#"{{"error":"bad key {key}"}}"#),
    );
    let out = top()
        .args(["--once", "--url", &base, "--api-key", key])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("401"), "{stderr}");
    assert!(stderr.contains("[redacted]"), "{stderr}");
    assert!(!stderr.contains(key), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn top_started_before_the_server_shows_disconnected_and_ctrl_c_quits() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let args = format!("--url http://127.0.0.1:{port} --interval-ms 200");
    let Some(tmux) = Tmux::start(
        "top_started_before_the_server_shows_disconnected_and_ctrl_c_quits",
        &args,
    ) else {
        return;
    };
    tmux.wait_for(
        &[
            "disconnected since".into(),
            "error: cannot reach".into(),
            "depth: -".into(),
        ],
        &["stale"],
    )
    .await;
    tmux.send_keys("C-c");
    assert_eq!(tmux.wait_for_exit().await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_posted_between_two_polls_show_as_a_receive_rate() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::start_release_or_test(&write_config(
        dir.path(),
        "c.toml",
        &stuck_config(dir.path()),
    ));
    let (mut child, rx) = piped_top(&server.base);
    // Wait for a step that has a rate (two polls in), so the post lands in
    // a step between two answers from the same server.
    let deadline = Instant::now() + LIMIT;
    let next_line = || {
        let left = deadline.saturating_duration_since(Instant::now());
        rx.recv_timeout(left).expect("snapshots in time")
    };
    let mut rate_lines = 0;
    while rate_lines < 1 {
        rate_lines += next_line().starts_with("rates_per_s logs_received=0.0 ") as usize;
    }
    post_batches(&server.base, &[40]).await;
    loop {
        let line = next_line();
        let rate = line
            .strip_prefix("rates_per_s logs_received=")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|v| v.parse::<f64>().ok());
        if rate.is_some_and(|r| r > 0.0) {
            assert!(line.contains(" metrics_received=0.0 "), "{line}");
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
