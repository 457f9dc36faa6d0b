//! 100 power cuts against a release build: `cargo build --release && \
//! EDGE_INGESTER_BIN=target/release/edge-ingester cargo bench --bench power_cut`.
//! `POWERCUT_CUTS` changes the number of cuts. Needs root and /dev/fuse.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/support/powercut_fs.rs"]
mod powercut_fs;
#[path = "../tests/support/powercut_run.rs"]
mod powercut_run;

fn main() {
    let cuts = std::env::var("POWERCUT_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut opts = powercut_run::RunOptions::new(cuts);
    opts.drain_limit = std::time::Duration::from_secs(600);
    let Some(r) = powercut_run::run(&opts) else {
        return;
    };
    println!(
        "power_cut: {} cuts, acknowledged {}, delivered {}, lost {}, duplicates {}, {:.1} s \
         (final drain {:.1} s, slowest start {} ms)",
        r.cuts,
        r.acknowledged,
        r.delivered,
        r.lost,
        r.duplicates,
        r.seconds,
        r.drain_seconds,
        r.slowest_start_ms
    );
    if r.lost > 0 {
        eprintln!("lost e.g. {:?}", r.lost_examples);
        std::process::exit(1);
    }
}
