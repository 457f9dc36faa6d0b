//! Running under systemd (SPEC §9): the sd_notify protocol as a
//! `Type=notify` unit's manager sees it, and the unit file as systemd's own
//! tools judge it.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Exposure `systemd-analyze security` may report for the unit (0 is the
/// best, 10 the worst; below 3 counts as well protected there).
const MAX_EXPOSURE: f64 = 3.0;

fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd/edge-ingester.service")
}

/// The next notification, or `None` once `deadline` passes.
fn next_state(socket: &UnixDatagram, deadline: Instant) -> Option<String> {
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match socket.recv(&mut buf) {
            Ok(n) => return Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("notify socket: {e}"),
        }
    }
}

fn start_notifying(dir: &Path, notify_socket: &str) -> Binary {
    let mut cfg = test_config(dir);
    cfg.mock.fail = edge_ingester::config::MockFail::Never;
    let path = write_config(dir, "c.toml", &cfg);
    Binary::start_with_env(
        Path::new(env!("CARGO_BIN_EXE_edge-ingester")),
        &path,
        &[
            ("NOTIFY_SOCKET", notify_socket),
            ("WATCHDOG_USEC", "200000"),
        ],
    )
}

#[tokio::test]
async fn systemd_hears_ready_after_the_listener_answers_then_watchdog_then_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&sock_path).unwrap();
    let mut server = start_notifying(dir.path(), sock_path.to_str().unwrap());

    let deadline = Instant::now() + Duration::from_secs(10);
    assert_eq!(next_state(&socket, deadline).as_deref(), Some("READY=1"));
    // READY=1 promises a bound listener: the first request must succeed.
    let health = client()
        .get(format!("{}/health", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // WATCHDOG_USEC=200000: a ping every 100 ms while writer and forwarder live.
    let mut pings = 0;
    while pings < 3 {
        match next_state(&socket, deadline).as_deref() {
            Some("WATCHDOG=1") => pings += 1,
            other => panic!("expected WATCHDOG=1, got {other:?}"),
        }
    }

    let pid = server.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match next_state(&socket, deadline).as_deref() {
            Some("WATCHDOG=1") => continue,
            Some("STOPPING=1") => break,
            other => panic!("expected STOPPING=1, got {other:?}"),
        }
    }
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn an_abstract_notify_socket_hears_ready() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr;
    let name = format!(
        "edge-ingester-test-{}-{:?}",
        std::process::id(),
        Instant::now()
    );
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_notifying(dir.path(), &format!("@{name}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    assert_eq!(next_state(&socket, deadline).as_deref(), Some("READY=1"));
    assert_eq!(server.sigterm().code(), Some(0));
}

/// `systemd-analyze`, or `None` (with the skip said) where it is missing.
fn systemd_analyze(test: &str) -> Option<Command> {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        skip_or_fail(test, "systemd-analyze is not installed (Debian: systemd)");
        return None;
    }
    Some(Command::new("systemd-analyze"))
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let Some(mut cmd) = systemd_analyze("the_unit_file_passes_systemd_analyze_verify") else {
        return;
    };
    // verify insists that ExecStart= exists: point it at the binary just built.
    let unit = std::fs::read_to_string(unit_path()).unwrap();
    let exe = env!("CARGO_BIN_EXE_edge-ingester");
    assert!(unit.contains("ExecStart=/usr/local/bin/edge-ingester serve"));
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("edge-ingester.service");
    std::fs::write(
        &copy,
        unit.replace(
            "ExecStart=/usr/local/bin/edge-ingester",
            &format!("ExecStart={exe}"),
        ),
    )
    .unwrap();
    let out = cmd.arg("verify").arg(&copy).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

#[test]
fn the_unit_file_exposure_is_below_3() {
    let test = "the_unit_file_exposure_is_below_3";
    let Some(mut cmd) = systemd_analyze(test) else {
        return;
    };
    let out = cmd
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--offline") {
        skip_or_fail(
            test,
            "this systemd-analyze has no --offline (systemd < 250)",
        );
        return;
    }
    // "→ Overall exposure level for edge-ingester.service: 1.4 OK 🙂"
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for").nth(1))
        .and_then(|rest| rest.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure figure in:\n{text}"));
    assert!(exposure < MAX_EXPOSURE, "exposure {exposure}:\n{text}");
}
