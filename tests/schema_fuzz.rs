//! Schema fuzzing: schemathesis generates requests for every operation of
//! the live `/openapi.json` (valid and invalid ones, with the API key) and
//! checks that no answer is a 5xx and that every status, header, content
//! type and body matches what the document promises.
//!
//! schemathesis comes from PyPI; `.ci/run` installs it in a virtual
//! environment and exports `EDGE_INGESTER_SCHEMATHESIS`. Without it (or
//! `schemathesis` on PATH) the test prints why it skips.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

/// Examples per operation and phase: bounded, so the run takes seconds.
const MAX_EXAMPLES: &str = "100";
/// Fixed, so a failure in CI reproduces; change it to explore further.
const SEED: &str = "20261127";

fn schemathesis() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("EDGE_INGESTER_SCHEMATHESIS") {
        return Some(PathBuf::from(p));
    }
    let found = Command::new("schemathesis").arg("--version").output();
    found
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from("schemathesis"))
}

#[test]
fn every_operation_answers_as_documented() {
    let Some(st) = schemathesis() else {
        skip_or_fail(
            "schema_fuzz",
            "schemathesis not found (set EDGE_INGESTER_SCHEMATHESIS or put it on PATH; \
             .ci/run installs it)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "schema.toml", &test_config(dir.path()));
    let server = Binary::start(&path);

    let out = Command::new(&st)
        .current_dir(dir.path()) // its report cache stays in the temp dir
        .args(["run", &format!("{}/openapi.json", server.base)])
        .args(["--header", &format!("X-API-Key: {KEY}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED])
        .args(["--no-color"])
        .output()
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("generated") || l.contains("Operations:") || l.contains("passed"))
        .collect();
    eprintln!("schemathesis: {}", summary.join(" | "));
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The run must have exercised every operation, not just loaded the spec.
    assert!(
        report.contains("9 selected / 9 total"),
        "unexpected operations:\n{report}"
    );
}
