//! The allocator defaults `src/alloc.rs` sets, read back from mimalloc's
//! own report of its options at process start (`MIMALLOC_VERBOSE=1`).
#![cfg(target_os = "linux")]

use std::process::Command;

const OURS: [&str; 3] = [
    "MIMALLOC_ARENA_EAGER_COMMIT",
    "MIMALLOC_PURGE_DELAY",
    "MIMALLOC_ALLOW_THP",
];

/// mimalloc's option report, up to its first arena reservation.
fn options_reported(env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-ingester"));
    for var in OURS {
        cmd.env_remove(var);
    }
    let out = cmd
        .arg("--version")
        .env("MIMALLOC_VERBOSE", "1")
        .envs(env.iter().copied())
        .output()
        .expect("run edge-ingester --version");
    assert!(out.status.success());
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    // Printed when mimalloc initialises: anything after "reserved" came
    // too late for the first arena.
    let end = report.find("reserved").expect("mimalloc reports its arena");
    report[..end].to_string()
}

#[test]
fn arenas_commit_on_demand_freed_pages_go_back_at_once_and_no_huge_pages() {
    let report = options_reported(&[]);
    for line in [
        "option 'arena_eager_commit': 0",
        "option 'purge_delay': 0",
        "option 'allow_thp': 0",
    ] {
        assert!(report.contains(line), "{line} missing from:\n{report}");
    }
}

#[test]
fn the_environment_still_overrides_them_in_every_spelling_mimalloc_reads() {
    let report = options_reported(&[
        ("MIMALLOC_ARENA_EAGER_COMMIT", "1"),
        // mimalloc's legacy name for purge_delay, in lower case.
        ("mimalloc_reset_delay", "250"),
        ("MIMALLOC_ALLOW_THP", "1"),
    ]);
    for line in [
        "option 'arena_eager_commit': 1",
        "option 'purge_delay': 250",
        "option 'allow_thp': 1",
    ] {
        assert!(report.contains(line), "{line} missing from:\n{report}");
    }
}
