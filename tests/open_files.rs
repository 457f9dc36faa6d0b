//! Open files: the server raises its soft open-file limit to the hard one,
//! and refuses (exit 2, saying why) a `max_connections` that cannot fit, so
//! connections can never starve the queue of the descriptors it needs to
//! sync a commit.

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Starts `serve` under `ulimit -Sn soft -Hn hard`; returns its exit status,
/// or `None` once it reports that it is listening (then it is killed), and
/// its stderr.
fn serve_with_limits(hard: u64, soft: u64, max_connections: usize) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.server.max_connections = max_connections;
    cfg.server.max_connections_per_ip = max_connections;
    let config = write_config(dir.path(), "c.toml", &cfg);
    let exe = std::env::var_os("EDGE_INGESTER_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_edge-ingester").into());
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$0\" serve --config \"$1\""
        ))
        .arg(&exe)
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for var in OVERRIDE_VARS {
        cmd.env_remove(var);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (listening_tx, listening) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains(edge_ingester::LISTENING_ON) {
                let _ = listening_tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if listening.try_recv().is_ok() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().unwrap())
}

#[test]
fn max_connections_beyond_the_open_file_limit_is_refused_at_start() {
    let (status, stderr) = serve_with_limits(512, 512, 1024);
    assert_eq!(status, Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("server.max_connections = 1024") && stderr.contains("open-file limit"),
        "stderr: {stderr}"
    );
}

#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    // 300 connections + the reserve do not fit in a soft limit of 256, but
    // do in the hard limit of 512: the server raises the soft limit, serves.
    let (status, stderr) = serve_with_limits(512, 256, 300);
    assert_eq!(status, None, "the server exited: {stderr}");
    assert!(
        stderr.contains(edge_ingester::LISTENING_ON),
        "stderr: {stderr}"
    );
}
