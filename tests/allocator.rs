//! The allocator defaults `src/alloc.rs` sets, read back from mimalloc's
//! own report of its options at process start (`MIMALLOC_VERBOSE=1`).
#![cfg(target_os = "linux")]

use std::process::Command;

/// mimalloc's option lines (`option 'name': value`), each trimmed, from a
/// run with no `MIMALLOC_*` variable but those given. mimalloc reads its
/// variables in any case and under legacy names: all of them are removed.
fn options_reported(env: &[(&str, &str)]) -> Vec<String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-ingester"));
    for (var, _) in std::env::vars_os() {
        if var
            .to_string_lossy()
            .to_ascii_uppercase()
            .starts_with("MIMALLOC_")
        {
            cmd.env_remove(var);
        }
    }
    let out = cmd
        .arg("--version")
        .env("MIMALLOC_VERBOSE", "1")
        .envs(env.iter().copied())
        .output()
        .expect("run edge-ingester --version");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("option '"))
        .map(|l| l.trim().to_string())
        .collect()
}

fn assert_reported(report: &[String], expected: &[&str]) {
    for line in expected {
        assert!(
            report.iter().any(|l| l == line),
            "{line:?} missing from:\n{}",
            report.join("\n")
        );
    }
}

#[test]
fn arenas_commit_on_demand_freed_pages_go_back_at_once_and_no_huge_pages() {
    let report = options_reported(&[]);
    assert_reported(
        &report,
        &[
            "option 'arena_eager_commit': 0",
            "option 'purge_delay': 0",
            "option 'allow_thp': 0",
        ],
    );
}

#[test]
fn the_environment_still_overrides_them_in_upper_case_and_legacy_names() {
    let report = options_reported(&[
        ("MIMALLOC_ARENA_EAGER_COMMIT", "1"),
        // mimalloc's legacy name for purge_delay, in lower case.
        ("mimalloc_reset_delay", "250"),
        ("MIMALLOC_ALLOW_THP", "1"),
    ]);
    assert_reported(
        &report,
        &[
            "option 'arena_eager_commit': 1",
            "option 'purge_delay': 250",
            "option 'allow_thp': 1",
        ],
    );
}
