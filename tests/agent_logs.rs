//! The log agent (SPEC §7), driven as a user drives it: the real binary
//! against the real server (or a scripted one for answers the server will
//! not give on demand).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::agent::*;
use common::*;
use edge_ingester::config::MockFail;

fn capture_config(dir: &Path) -> edge_ingester::config::Config {
    let mut cfg = test_config(dir);
    cfg.mock.fail = MockFail::Never;
    cfg.mock.capture_path = dir.join("capture.jsonl");
    cfg
}

/// Polls until `cond` holds on the captured messages, or panics at the limit.
fn wait_capture(path: &Path, limit: Duration, cond: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let got = captured_messages(path);
        if cond(&got) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "capture never got there: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_command_sends_one_error_entry_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = capture_config(dir.path());
    let capture = cfg.mock.capture_path.clone();
    let srv = InProcess::start(cfg).await;
    let base = srv.base.clone();
    let (code, stderr) = tokio::task::spawn_blocking(move || {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_edge-ingester"))
            .env("INGESTION_API_URL", &base)
            .env("INGESTION_API_KEY", KEY)
            .args([
                "agent",
                "logs",
                "--service",
                "api-server",
                "--batch-size",
                "1",
                "--flush-interval",
                "1",
            ])
            .stdin(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"ERROR: Database connection failed\n")
            .unwrap();
        let code = wait_exit(&mut child, Duration::from_secs(20));
        (code, std::fs::read_to_string(log.path()).unwrap())
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{stderr}");
    for said in [
        "Log agent starting service=api-server",
        "Collected log from stdin",
        "Sending batch batch_size=1",
        "Batch sent successfully",
    ] {
        assert!(stderr.contains(said), "missing {said:?} in:\n{stderr}");
    }
    let text = wait_text(&capture, Duration::from_secs(10));
    let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(v["level"], "ERROR");
    assert_eq!(v["service"], "api-server");
    assert_eq!(v["message"], "ERROR: Database connection failed");
    assert_eq!(text.lines().count(), 1);
    srv.stop().await;
}

fn wait_text(path: &Path, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let t = std::fs::read_to_string(path).unwrap_or_default();
        if !t.is_empty() {
            return t;
        }
        assert!(Instant::now() < deadline, "nothing captured");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_lines_are_sent_with_replacement_characters() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = capture_config(dir.path());
    let capture = cfg.mock.capture_path.clone();
    let srv = InProcess::start(cfg).await;
    let args = ["--service", "s", "--url", &srv.base, "--api-key", KEY].map(String::from);
    let (code, stderr) = tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        run_stdin_bytes(&a, b"bin \xff\x00\xfe end\nplain\n")
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{stderr}");
    let got = wait_capture(&capture, Duration::from_secs(10), |m| m.len() == 2);
    assert_eq!(got, ["bin \u{fffd}\u{0}\u{fffd} end", "plain"]);
    srv.stop().await;
}

fn run_stdin_bytes(args: &[&str], bytes: &[u8]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    let mut full = vec!["logs"];
    full.extend_from_slice(args);
    let mut child = spawn_agent(&full, &log, Stdio::piped());
    use std::io::Write;
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let code = wait_exit(&mut child, Duration::from_secs(30));
    (code, std::fs::read_to_string(&log).unwrap())
}

async fn stdin_against(script: &Scripted, extra: &[&str], input: &str) -> (i32, String) {
    let mut args: Vec<String> = ["--service", "s", "--url", &script.url, "--api-key", "k"]
        .map(String::from)
        .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    let input = input.to_string();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        run_stdin_agent(&a, &input, Duration::from_secs(60))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_on_429_and_503_with_the_same_key() {
    let ra = || vec![("retry-after", "1".to_string())];
    let script = Scripted::start(vec![
        (
            429,
            ra(),
            r#"{"detail":"Rate limit exceeded. Try again in 1 seconds."}"#.into(),
        ),
        (503, ra(), r#"{"detail":"queue is full"}"#.into()),
    ])
    .await;
    let (code, stderr) = stdin_against(&script, &[], "one line\n").await;
    assert_eq!(code, 0, "{stderr}");
    let seen = script.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for pair in seen.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(950),
            "Retry-After not honoured: {gap:?}"
        );
        assert_eq!(pair[0].idempotency_key, pair[1].idempotency_key);
    }
    assert!(!seen[0].idempotency_key.is_empty());
    assert_eq!(
        (seen[0].path.as_str(), seen[0].api_key.as_str()),
        ("/logs", "k")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_with_growing_jittered_backoff() {
    let e = || (500, vec![], r#"{"detail":"boom"}"#.to_string());
    let script = Scripted::start(vec![e(), e(), e(), e()]).await;
    let (code, stderr) = stdin_against(&script, &[], "one line\n").await;
    assert_eq!(code, 0, "{stderr}");
    let seen = script.seen();
    assert_eq!(seen.len(), 5);
    let gaps: Vec<Duration> = seen.windows(2).map(|p| p[1].at - p[0].at).collect();
    // 100 ms doubling, each in [d/2, d] (+ scheduling slack).
    for (i, g) in gaps.iter().enumerate() {
        let d = Duration::from_millis(100 << i);
        assert!(
            *g >= d / 2 && *g <= d + Duration::from_secs(1),
            "gap {i}: {g:?} for {d:?}: {gaps:?}"
        );
    }
    assert!(gaps[3] > gaps[0], "{gaps:?}");
    assert!(seen
        .iter()
        .all(|s| s.idempotency_key == seen[0].idempotency_key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_splits_the_batch_in_halves() {
    let script = Scripted::start(vec![(413, vec![], r#"{"detail":"too large"}"#.into())]).await;
    let (code, stderr) = stdin_against(
        &script,
        &["--batch-size", "4", "--flush-interval", "5"],
        "a\nb\nc\nd\n",
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let seen = script.seen();
    let sizes: Vec<usize> = seen.iter().map(|s| s.entries).collect();
    assert_eq!(sizes, [4, 2, 2]);
    assert_eq!(seen[1].messages, ["a", "b"]);
    assert_eq!(seen[2].messages, ["c", "d"]);
    assert_ne!(seen[1].idempotency_key, seen[2].idempotency_key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_422_is_dropped_with_the_servers_detail_and_the_agent_goes_on() {
    let detail = "Validation failed: entries[0].timestamp is not RFC 3339";
    let script = Scripted::start(vec![(422, vec![], format!(r#"{{"detail":"{detail}"}}"#))]).await;
    let (code, stderr) = stdin_against(&script, &["--batch-size", "1"], "bad\ngood\n").await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains(detail), "{stderr}");
    let seen = script.seen();
    assert_eq!(seen.len(), 2, "dropped, not retried: {seen:?}");
    assert_eq!(seen[1].messages, ["good"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_stops_the_agent_with_exit_1_naming_the_key_variable() {
    let script = Scripted::start(vec![(
        401,
        vec![],
        r#"{"detail":"Invalid API key"}"#.into(),
    )])
    .await;
    let (code, stderr) = stdin_against(&script, &[], "x\n").await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("INGESTION_API_KEY"), "{stderr}");
    assert_eq!(script.seen().len(), 1);
}

#[test]
fn a_missing_service_is_a_usage_error() {
    let (code, stderr) = run_stdin_agent(&[], "", Duration::from_secs(10));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--service"), "{stderr}");
}

/// tail -F: a file that appears after the start (read from its start), a
/// line written in two pieces, rotation by rename (the old file finished,
/// the new one read from its start) and by copytruncate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_file_is_read_through_late_creation_pieces_rename_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = capture_config(dir.path());
    let capture = cfg.mock.capture_path.clone();
    let srv = InProcess::start(cfg).await;
    let file = dir.path().join("app.log");
    let log = dir.path().join("agent.log");
    let state = dir.path().join("state");
    let mut agent = spawn_agent(
        &[
            "logs",
            "--service",
            "s",
            "--file",
            &path_str(&file),
            "--state-dir",
            &path_str(&state),
            "--url",
            &srv.base,
            "--api-key",
            KEY,
            "--flush-interval",
            "0.1",
        ],
        &log,
        Stdio::null(),
    );
    let cap = capture.clone();
    let f = file.clone();
    let log2 = log.clone();
    tokio::task::spawn_blocking(move || {
        wait_log(&log2, "waiting for the file to appear");
        append(&f, "first\nsecond in ");
        wait_capture(&cap, Duration::from_secs(10), |m| m == ["first"]);
        append(&f, "two pieces\n");
        wait_capture(&cap, Duration::from_secs(10), |m| m.len() == 2);
        // logrotate "create": rename, then a new file; the old one gets a
        // last line first.
        append(&f, "last of the old file\n");
        std::fs::rename(&f, f.with_extension("log.1")).unwrap();
        append(&f, "new file\n");
        wait_capture(&cap, Duration::from_secs(10), |m| m.len() == 4);
        // copytruncate: copy, truncate, then the program writes on.
        std::fs::copy(&f, f.with_extension("log.2")).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&f, "trunc\n");
        wait_capture(&cap, Duration::from_secs(10), |m| m.len() == 5);
    })
    .await
    .unwrap();
    sigterm(&agent);
    assert_eq!(wait_exit(&mut agent, Duration::from_secs(20)), 0);
    let got = captured_messages(&capture);
    assert_eq!(
        got,
        [
            "first",
            "second in two pieces",
            "last of the old file",
            "new file",
            "trunc"
        ],
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    srv.stop().await;
}

// ---- exactly once, under kills and outages ------------------------------

/// xorshift, seeded from the clock and printed so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("AGENT_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("AGENT_CHAOS_SEED={seed}");
        Rng(seed)
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo + 1)
    }
}

#[derive(Clone, Copy)]
enum Chaos {
    KillAgent,
    KillServer,
    StopServer(Duration),
}

struct Server {
    bin: Binary,
    config: std::path::PathBuf,
}

impl Server {
    fn start(dir: &Path, port: u16) -> Server {
        let mut cfg = test_config(dir);
        cfg.server.listen = format!("127.0.0.1:{port}");
        let config = write_config(dir, "server.toml", &cfg);
        Server {
            bin: Binary::start(&config),
            config,
        }
    }
    fn restart(&mut self) {
        self.bin = Binary::start(&self.config);
    }
}

fn agent_args(file: &Path, state: &Path, url: &str) -> Vec<String> {
    [
        "logs",
        "--service",
        "chaos",
        "--file",
        &path_str(file),
        "--from-beginning",
        "--state-dir",
        &path_str(state),
        "--url",
        url,
        "--api-key",
        KEY,
        "--batch-size",
        "200",
        "--flush-interval",
        "0.05",
    ]
    .map(String::from)
    .to_vec()
}

fn start_agent(args: &[String], log: &Path) -> Reaped {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn_agent(&a, log, Stdio::null())
}

/// A program logging `total` numbered lines at a steady pace, its file
/// rotated by rename at each of `rotate_at`.
fn writer(
    file: std::path::PathBuf,
    total: usize,
    rotate_at: Vec<usize>,
    pace: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use std::io::Write;
        let open = |p: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap()
        };
        let mut out = open(&file);
        let mut rotations = 0;
        for n in 0..total {
            if rotate_at.contains(&n) {
                rotations += 1;
                std::fs::rename(&file, file.with_extension(format!("log.{rotations}"))).unwrap();
                out = open(&file);
            }
            out.write_all(format!("line-{n:06}\n").as_bytes()).unwrap();
            if n % 100 == 99 {
                std::thread::sleep(pace);
            }
        }
    })
}

/// Every line of the followed file(s) reached the queue exactly once:
/// drained into a capture by a server with a working sink, each line once.
fn assert_exactly_once(dir: &Path, port: u16, total: usize) {
    let mut cfg = capture_config(dir);
    cfg.server.listen = format!("127.0.0.1:{port}");
    let mut drain = Binary::start(&write_config(dir, "drain.toml", &cfg));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(wait_for_stats(
        &client(),
        &drain.base,
        Duration::from_secs(60),
        |s| s["queue"]["depth_batches"] == 0,
    ));
    assert!(drain.sigterm().success());
    let mut counts: HashMap<String, usize> = HashMap::new();
    for m in captured_messages(&cfg.mock.capture_path) {
        *counts.entry(m).or_default() += 1;
    }
    let missing: Vec<String> = (0..total)
        .map(|n| format!("line-{n:06}"))
        .filter(|l| !counts.contains_key(l))
        .collect();
    let twice: Vec<(&String, &usize)> = counts.iter().filter(|(_, c)| **c > 1).collect();
    eprintln!(
        "exactly once: {total} lines written, {} distinct captured, {} missing, {} more than once",
        counts.len(),
        missing.len(),
        twice.len()
    );
    assert!(
        missing.is_empty(),
        "{} lines missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        twice.is_empty(),
        "{} lines stored more than once, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    assert_eq!(
        counts.len(),
        total,
        "unexpected lines: {:?}",
        counts
            .keys()
            .filter(|k| !k.starts_with("line-"))
            .take(5)
            .collect::<Vec<_>>()
    );
}

/// Waits until the server holds at least `total` entries and the agent has
/// stayed quiet for a second (so a late duplicate would show too).
fn wait_caught_up(base: &str, total: usize, limit: Duration, agent_log: &Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = client();
    let deadline = Instant::now() + limit;
    let mut last = (0u64, Instant::now());
    loop {
        let s = rt.block_on(stats(&c, base));
        let depth = s["queue"]["depth_entries"].as_u64().unwrap_or(0);
        if depth != last.0 {
            last = (depth, Instant::now());
        }
        if depth >= total as u64 && last.1.elapsed() > Duration::from_secs(1) {
            return;
        }
        if Instant::now() >= deadline {
            let text = std::fs::read_to_string(agent_log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            panic!(
                "the agent never caught up: {depth} of {total} queued; agent log, last lines first:\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn chaos_run(chaos: Chaos) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = Server::start(dir.path(), port);
    let file = dir.path().join("app.log");
    let state = dir.path().join("state");
    let log = dir.path().join("agent.log");
    let args = agent_args(&file, &state, &server.bin.base);
    let total = 30_000;
    let w = writer(
        file.clone(),
        total,
        vec![10_000, 20_000],
        Duration::from_millis(2),
    );
    let mut agent = start_agent(&args, &log);
    let mut rng = Rng::new();
    match chaos {
        Chaos::KillAgent => {
            for _ in 0..10 {
                std::thread::sleep(Duration::from_millis(rng.between(100, 600)));
                agent.kill().unwrap();
                agent.wait().unwrap();
                agent = start_agent(&args, &log);
            }
        }
        Chaos::KillServer => {
            for _ in 0..5 {
                std::thread::sleep(Duration::from_millis(rng.between(200, 800)));
                server.bin.sigkill();
                server.restart();
            }
        }
        Chaos::StopServer(pause) => {
            std::thread::sleep(Duration::from_millis(rng.between(300, 800)));
            assert!(server.bin.sigterm().success());
            std::thread::sleep(pause);
            server.restart();
        }
    }
    w.join().unwrap();
    wait_caught_up(&server.bin.base, total, Duration::from_secs(90), &log);
    sigterm(&agent);
    assert_eq!(wait_exit(&mut agent, Duration::from_secs(30)), 0);
    assert!(server.bin.sigterm().success());
    drop(server);
    assert_exactly_once(dir.path(), port, total);
}

#[test]
fn every_line_reaches_the_queue_once_across_ten_agent_kills_and_two_rotations() {
    chaos_run(Chaos::KillAgent);
}

#[test]
fn every_line_reaches_the_queue_once_across_server_kills() {
    chaos_run(Chaos::KillServer);
}

#[test]
fn every_line_reaches_the_queue_once_across_a_20_s_server_outage() {
    chaos_run(Chaos::StopServer(Duration::from_secs(20)));
}

/// A file rotated away while the agent was stopped, with lines it never got
/// acknowledged: found again by its identity in the same directory and
/// finished, in order, before the new file is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rotated_away_while_the_agent_was_stopped_is_finished_first() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.log");
    let state = dir.path().join("state");
    let log = dir.path().join("agent.log");
    append(&file, "old-1\nold-2\nold-3\n");
    // First run: nobody listens, so nothing is acknowledged.
    let args = |url: &str| follow_args(&file, &state, url);
    read_while_nobody_listens(&args, &log);
    // Rotated while it was down: a last line, rename, a new file.
    append(&file, "old-4\n");
    std::fs::rename(&file, dir.path().join("app.log.1")).unwrap();
    append(&file, "new-1\n");

    let cfg = capture_config(dir.path());
    let capture = cfg.mock.capture_path.clone();
    let srv = InProcess::start(cfg).await;
    let second = args(&srv.base);
    let mut agent = start_agent(&second, &log);
    let got = tokio::task::spawn_blocking(move || {
        wait_capture(&capture, Duration::from_secs(20), |m| m.len() >= 5)
    })
    .await
    .unwrap();
    sigterm(&agent);
    assert_eq!(wait_exit(&mut agent, Duration::from_secs(20)), 0);
    assert_eq!(
        got,
        ["old-1", "old-2", "old-3", "old-4", "new-1"],
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    srv.stop().await;
}

#[test]
fn stdin_lines_never_acknowledged_are_given_up_with_exit_1_saying_how_many() {
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let (code, stderr) = run_stdin_agent(
        &["--service", "s", "--url", &nobody, "--give-up-after", "1"],
        "a\nb\nc\n",
        Duration::from_secs(20),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("3 lines"), "{stderr}");
}

/// Memory is bounded: while the server refuses (503), at most
/// `--max-buffer` lines wait and reading stops, so a program writing into
/// the agent's stdin blocks instead of the agent growing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_server_makes_a_stdin_writer_block_not_the_agent_grow() {
    let busy = || {
        (
            503,
            vec![("retry-after", "2".to_string())],
            r#"{"detail":"queue is full"}"#.to_string(),
        )
    };
    let script = Scripted::start(vec![busy(), busy(), busy()]).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    let mut agent = spawn_agent(
        &[
            "logs",
            "--service",
            "s",
            "--url",
            &script.url,
            "--api-key",
            "k",
            "--batch-size",
            "100",
            "--max-buffer",
            "100",
        ],
        &log,
        Stdio::piped(),
    );
    let mut stdin = agent.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let line = format!("{}\n", "x".repeat(99));
        let mut written = 0u64;
        for _ in 0..500_000 {
            if stdin.write_all(line.as_bytes()).is_err() {
                break;
            }
            written += 100;
        }
        let _ = tx.send(written);
    });
    // The server refuses for ~6 s: the 50 MB cannot all be taken by then.
    let blocked = rx.recv_timeout(Duration::from_secs(3)).is_err();
    let rss_kb: u64 = std::fs::read_to_string(format!("/proc/{}/status", agent.id()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = writer.join();
    assert!(
        blocked,
        "the writer was never blocked: the agent read everything"
    );
    assert!(rss_kb < 32 * 1024, "agent RSS {rss_kb} kB while blocked");
    assert!(script.seen().iter().all(|s| s.entries <= 100));
}

/// Follows `file` from its start, giving up 0.5 s after a signal.
fn follow_args(file: &Path, state: &Path, url: &str) -> Vec<String> {
    [
        "logs",
        "--service",
        "s",
        "--file",
        &path_str(file),
        "--from-beginning",
        "--state-dir",
        &path_str(state),
        "--url",
        url,
        "--api-key",
        KEY,
        "--flush-interval",
        "0.05",
        "--give-up-after",
        "0.5",
    ]
    .map(String::from)
    .to_vec()
}

/// One run of the agent while nothing listens: it reads the file, nothing
/// is acknowledged, and it stops on SIGTERM (exit 0).
fn read_while_nobody_listens(args: &dyn Fn(&str) -> Vec<String>, log: &Path) {
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let mut agent = start_agent(&args(&nobody), log);
    wait_log(log, "cannot reach the ingester");
    sigterm(&agent);
    assert_eq!(wait_exit(&mut agent, Duration::from_secs(20)), 0);
}

/// Waits until the agent's log holds `text` (the agent got that far).
fn wait_log(log: &Path, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(text)
    {
        assert!(Instant::now() < deadline, "the agent never logged {text:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two rotations while the agent was down: the file it was reading, then
/// the one rotated after it, then the new one — none skipped, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rotations_while_the_agent_was_down_skip_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.log");
    let state = dir.path().join("state");
    let log = dir.path().join("agent.log");
    append(&file, "x-1\nx-2\n");
    let args = |url: &str| follow_args(&file, &state, url);
    read_while_nobody_listens(&args, &log);
    // logrotate twice (with a rest between: birth times order the files).
    std::fs::rename(&file, dir.path().join("app.log.2")).unwrap();
    append(&file, "y-1\ny-2\n");
    std::thread::sleep(Duration::from_millis(20));
    std::fs::rename(&file, dir.path().join("app.log.1")).unwrap();
    append(&file, "z-1\n");

    let cfg = capture_config(dir.path());
    let capture = cfg.mock.capture_path.clone();
    let srv = InProcess::start(cfg).await;
    let mut agent = start_agent(&args(&srv.base), &log);
    let got = tokio::task::spawn_blocking(move || {
        wait_capture(&capture, Duration::from_secs(20), |m| m.len() >= 5)
    })
    .await
    .unwrap();
    sigterm(&agent);
    assert_eq!(wait_exit(&mut agent, Duration::from_secs(20)), 0);
    assert_eq!(
        got,
        ["x-1", "x-2", "y-1", "y-2", "z-1"],
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_that_is_not_an_ingester_stops_the_agent_naming_the_variable() {
    let script = Scripted::start(vec![(404, vec![], "not found".into())]).await;
    let (code, stderr) = stdin_against(&script, &[], "x\n").await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("INGESTION_API_URL"), "{stderr}");
}

/// SIGTERM while a batch (not the last) is retried against a dead server:
/// the agent gives it --give-up-after more, then exits 0.
#[test]
fn sigterm_while_the_server_is_down_exits_within_the_give_up_bound() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let mut agent = spawn_agent(
        &[
            "logs",
            "--service",
            "s",
            "--url",
            &nobody,
            "--batch-size",
            "1",
            "--give-up-after",
            "1",
        ],
        &log,
        Stdio::piped(),
    );
    let mut stdin = agent.stdin.take().unwrap();
    use std::io::Write;
    stdin.write_all(b"a\nb\n").unwrap(); // stdin stays open: no EOF
    wait_log(&log, "cannot reach the ingester");
    let t = Instant::now();
    sigterm(&agent);
    assert_eq!(wait_exit(&mut agent, Duration::from_secs(15)), 0);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    drop(stdin);
}
