//! The promise under a power cut, not just kill -9: the queue lives in a
//! FUSE filesystem that forgets everything not fsynced (file bytes, and
//! directory entries whose directory was not fsynced) at each cut.
//!
//! Needs root and /dev/fuse (and `eatmydata` for the negative control);
//! without them the tests say why on stderr and pass, except with `CI=true`.
//! `POWERCUT_PRECREATE_QUEUE_DIR=1` creates the queue directory (and fsyncs
//! it and its parent) before the first start; `POWERCUT_SEED` replays kill
//! moments.

mod common;
#[path = "support/powercut_fs.rs"]
mod powercut_fs;
#[path = "support/powercut_run.rs"]
mod powercut_run;

use powercut_run::{eatmydata_available, run, skip, RunOptions};

#[test]
fn acknowledged_entries_survive_power_cuts() {
    // The queue directory does not exist before the first start (unless
    // POWERCUT_PRECREATE_QUEUE_DIR=1): the service creates it.
    let opts = RunOptions::new(10);
    let Some(r) = run(&opts) else {
        return;
    };
    assert!(
        r.acknowledged > 1_000,
        "too little load to mean anything: {r}"
    );
    assert_eq!(
        r.lost, 0,
        "acknowledged entries lost to power cuts: {r}; e.g. {:?}",
        r.lost_examples
    );
}

/// Defect 9: after a kill -9 the page cache can hold a commit that was
/// never synced. A start-up that records the queue's high-water mark (the
/// ledger) before making that commit durable, followed by a power cut, left
/// the ledger ahead of the disk, and the next start refused a good queue.
/// Every cycle here restarts the server between the kill and the cut; every
/// start must succeed and nothing acknowledged may be lost.
#[test]
fn a_restart_between_a_kill_and_a_power_cut_never_refuses_the_queue() {
    let mut opts = RunOptions::new(8);
    opts.restart_before_cut = true;
    opts.flapping_every = 0;
    let Some(r) = run(&opts) else {
        return;
    };
    assert!(r.acknowledged > 1_000, "too little load: {r}");
    assert_eq!(r.lost, 0, "lost: {r}; e.g. {:?}", r.lost_examples);
}

/// Proves `acknowledged_entries_survive_power_cuts` can fail: with fsync turned into a no-op the same
/// run must lose acknowledged entries. The queue directory is pre-created
/// and synced so that only the missing fsyncs can be the cause.
#[test]
fn negative_control_without_fsync_loses_entries() {
    if let Err(reason) = eatmydata_available() {
        skip(&reason);
        return;
    }
    let mut opts = RunOptions::new(4);
    opts.eatmydata = true;
    opts.precreate_queue_dir = true;
    let Some(r) = run(&opts) else {
        return;
    };
    assert!(r.acknowledged > 1_000, "too little load: {r}");
    assert!(
        r.lost > 0,
        "under eatmydata nothing was lost: the power cut is not simulated ({r})"
    );
}

/// The filesystem itself: what a cut keeps, and the two failure switches.
mod powercut_fs_tests {
    use super::powercut_fs::{Handle, PowercutFs};
    use std::fs::File;
    use std::io::{Read, Write};
    use std::path::Path;

    /// Mounts in a temp dir, or explains why not (see `powercut_run::skip`).
    fn mounted() -> Option<(tempfile::TempDir, Handle)> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mount point");
        match PowercutFs::mount(&mnt) {
            Ok(h) => Some((dir, h)),
            Err(e) => {
                crate::powercut_run::skip(&format!("cannot mount the power-cut FUSE: {e}"));
                None
            }
        }
    }

    fn sync_dir(p: &Path) {
        File::open(p).unwrap().sync_all().unwrap();
    }

    #[test]
    fn a_cut_keeps_exactly_what_was_synced() {
        let Some((_dir, mut h)) = mounted() else {
            return;
        };
        let m = h.mountpoint().to_path_buf();
        std::fs::create_dir(m.join("d")).unwrap();
        sync_dir(&m);
        // Synced file in a synced directory: kept, with its synced bytes only.
        let mut f = File::create(m.join("d/kept")).unwrap();
        f.write_all(b"durable").unwrap();
        f.sync_data().unwrap();
        f.write_all(b" volatile").unwrap();
        drop(f);
        sync_dir(&m.join("d"));
        // Synced file whose directory entry was never synced: gone.
        let mut f = File::create(m.join("d/unnamed")).unwrap();
        f.write_all(b"x").unwrap();
        f.sync_all().unwrap();
        drop(f);
        // A sparse write past the end reads zeros in between.
        let f = File::create(m.join("sparse")).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"z", 100_000).unwrap();
        let mut back = Vec::new();
        File::open(m.join("sparse"))
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back.len(), 100_001);
        assert!(back[..100_000].iter().all(|b| *b == 0));
        drop(f);
        // Created directory, parent never synced: gone with its contents.
        std::fs::create_dir(m.join("new")).unwrap();
        std::fs::write(m.join("new/f"), b"y").unwrap();
        sync_dir(&m.join("new"));

        h.power_cut().unwrap();
        assert_eq!(std::fs::read(m.join("d/kept")).unwrap(), b"durable");
        assert!(!m.join("d/unnamed").exists());
        assert!(!m.join("sparse").exists());
        assert!(!m.join("new").exists());
        // An unsynced rename is undone; a synced one stays.
        std::fs::rename(m.join("d/kept"), m.join("d/renamed")).unwrap();
        h.power_cut().unwrap();
        assert!(m.join("d/kept").exists() && !m.join("d/renamed").exists());
        std::fs::rename(m.join("d/kept"), m.join("d/renamed")).unwrap();
        sync_dir(&m.join("d"));
        h.power_cut().unwrap();
        assert!(!m.join("d/kept").exists() && m.join("d/renamed").exists());
        assert!(h.sync_counts().0 >= 2);
    }

    #[test]
    fn fail_fsync_answers_the_errno_and_keeps_nothing() {
        let Some((_dir, mut h)) = mounted() else {
            return;
        };
        let m = h.mountpoint().to_path_buf();
        let mut f = File::create(m.join("f")).unwrap();
        f.write_all(b"one").unwrap();
        f.sync_data().unwrap();
        sync_dir(&m);
        f.write_all(b" two").unwrap();
        h.fail_fsync(Some(libc::EIO));
        let err = f.sync_data().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        let err = File::open(&m).unwrap().sync_all().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        h.fail_fsync(None);
        drop(f);
        h.power_cut().unwrap();
        assert_eq!(std::fs::read(m.join("f")).unwrap(), b"one");
        File::open(m.join("f")).unwrap().sync_all().unwrap();
    }

    #[test]
    fn fail_open_refuses_paths_under_the_prefix() {
        let Some((_dir, h)) = mounted() else {
            return;
        };
        let m = h.mountpoint().to_path_buf();
        std::fs::create_dir(m.join("q")).unwrap();
        std::fs::write(m.join("q/db"), b"x").unwrap();
        std::fs::write(m.join("other"), b"x").unwrap();
        h.fail_open(Some(("q/".into(), libc::EMFILE)));
        let err = File::open(m.join("q/db")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EMFILE));
        // Creating is not refused; opening what was created is.
        File::create(m.join("q/new")).unwrap();
        let err = File::open(m.join("q/new")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EMFILE));
        assert_eq!(std::fs::read(m.join("other")).unwrap(), b"x");
        h.fail_open(None);
        assert_eq!(std::fs::read(m.join("q/db")).unwrap(), b"x");
    }
}
