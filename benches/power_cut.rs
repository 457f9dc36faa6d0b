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
    let opts = powercut_run::RunOptions::new(cuts);
    let Some(r) = powercut_run::run(&opts) else {
        return;
    };
    println!(
        "power_cut: {} cuts, acknowledged {}, delivered {}, lost {}, duplicates {}, {:.1} s",
        r.cuts, r.acknowledged, r.delivered, r.lost, r.duplicates, r.seconds
    );
    if r.lost > 0 {
        eprintln!("lost e.g. {:?}", r.lost_examples);
        std::process::exit(1);
    }
}
