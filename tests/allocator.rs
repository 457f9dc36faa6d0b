//! The allocator settings `src/alloc.rs` makes, read back from mimalloc's
//! own report of its options at process start (`MIMALLOC_VERBOSE=1`).

use std::process::Command;

fn options_reported(env: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_edge-ingester"))
        .arg("--version")
        .env_remove("MIMALLOC_ARENA_EAGER_COMMIT")
        .env_remove("MIMALLOC_PURGE_DELAY")
        .env("MIMALLOC_VERBOSE", "1")
        .envs(env.iter().copied())
        .output()
        .expect("run edge-ingester --version");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn arenas_commit_on_demand_and_freed_pages_go_back_at_once() {
    let report = options_reported(&[]);
    // Printed when mimalloc initialises, before its first arena: so the
    // settings are in force for all of the process's memory.
    let options = report
        .find("reserved")
        .map_or(report.as_str(), |end| &report[..end]);
    assert!(
        options.contains("option 'arena_eager_commit': 0"),
        "{report}"
    );
    assert!(options.contains("option 'purge_delay': 0"), "{report}");
}

#[test]
fn the_environment_still_overrides_them() {
    let report = options_reported(&[
        ("MIMALLOC_ARENA_EAGER_COMMIT", "1"),
        ("MIMALLOC_PURGE_DELAY", "250"),
    ]);
    assert!(
        report.contains("option 'arena_eager_commit': 1"),
        "{report}"
    );
    assert!(report.contains("option 'purge_delay': 250"), "{report}");
}
