//! Makes what sled wrote durable: `fdatasync` of its log file, of every
//! large-value file under `blobs/` that is new or changed since the last
//! sync, and of the directories whose entries changed.
//!
//! NOTE: sled's `flush()` is only a `sync_file_range` (NOTES.md): it survives
//! kill -9 but not a power cut, and it never syncs a directory, so a file
//! sled created, or the whole `blobs/` directory, could vanish at a power cut
//! with its data already "flushed". Hence this second step, once per group
//! commit.
//!
//! Two kinds of failure, told apart because recovery differs:
//! - [`SyncError::Io`]: listing or opening a file failed (EMFILE, ENOENT of
//!   a directory sled is rebuilding, a transient EIO on open). Nothing is
//!   known to be lost: the commit is refused and the writer reopens sled.
//! - [`SyncError::Fsync`]: `fsync`/`fdatasync` itself failed. NOTE: Linux
//!   reports a writeback error once per open file and then marks the failed
//!   pages clean, so a fresh file handle after a reopen syncs "successfully"
//!   over data that never reached the disk. Nothing written since the last
//!   good sync can be trusted again in this process: the queue stays failed
//!   until an operator restarts it, and the restart re-reads from disk.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Why a sync did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Listing or opening failed before anything was synced: recoverable.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The kernel reported a failed writeback: not recoverable by reopening.
    #[error("fsync of {what} failed: {source}; data written since the last good sync may not be on disk")]
    Fsync {
        what: String,
        source: std::io::Error,
    },
}

impl SyncError {
    /// Whether reopening the database can make the queue trustworthy again.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, SyncError::Io { .. })
    }
}

/// What a blob file looked like when it was last synced: a blob whose size
/// or modification time changed since is synced again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    len: u64,
    modified: Option<SystemTime>,
}

pub(crate) struct Syncer {
    dir: PathBuf,
    /// Opened once: a writeback error is reported to every handle that was
    /// open when it happened, so this one hears of errors sled's own flush
    /// consumed on its handle.
    log: File,
    blobs_dir: PathBuf,
    /// Blob files synced, as they were then.
    synced_blobs: HashMap<OsString, Seen>,
    /// Names in the queue directory when it was last fsynced.
    synced_names: HashSet<OsString>,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SyncError {
    let what = what.into();
    move |source| SyncError::Io { what, source }
}

fn fsync(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SyncError {
    let what = what.into();
    move |source| SyncError::Fsync { what, source }
}

impl Syncer {
    pub fn new(dir: &Path) -> Result<Syncer, SyncError> {
        let log_path = dir.join("db");
        Ok(Syncer {
            dir: dir.to_path_buf(),
            log: File::open(&log_path).map_err(io(format!("open {}", log_path.display())))?,
            blobs_dir: dir.join("blobs"),
            synced_blobs: HashMap::new(),
            synced_names: HashSet::new(),
        })
    }

    /// Syncs the log, new or changed blobs and changed directories.
    pub fn sync(&mut self) -> Result<(), SyncError> {
        self.log.sync_data().map_err(fsync("the queue log"))?;
        self.sync_blobs()?;
        self.sync_dir_if_changed()
    }

    /// Asks the handle opened before a failure whether the kernel lost a
    /// writeback since (see the module doc): `Err` means data may be gone.
    pub fn probe(&self) -> Result<(), SyncError> {
        self.log.sync_data().map_err(fsync("the queue log"))
    }

    fn sync_blobs(&mut self) -> Result<(), SyncError> {
        let entries = match std::fs::read_dir(&self.blobs_dir) {
            Ok(e) => e,
            // sled creates the directory with its first large value.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("list the blobs directory")(e)),
        };
        let mut present = HashMap::with_capacity(self.synced_blobs.len());
        let mut changed = false;
        for entry in entries {
            let entry = entry.map_err(io("list the blobs directory"))?;
            let name = entry.file_name();
            let path = entry.path();
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Removed by sled meanwhile: nothing left to make durable.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io(format!("stat {}", path.display()))(e)),
            };
            let seen = Seen {
                len: meta.len(),
                modified: meta.modified().ok(),
            };
            if self.synced_blobs.get(&name) != Some(&seen) {
                let file = match File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(io(format!("open {}", path.display()))(e)),
                };
                file.sync_data()
                    .map_err(fsync(path.display().to_string()))?;
                changed = true;
                // Marked synced only now that its sync succeeded.
                self.synced_blobs.insert(name.clone(), seen);
            }
            present.insert(name, seen);
        }
        if changed {
            sync_dir(&self.blobs_dir)?;
        }
        self.synced_blobs = present;
        Ok(())
    }

    /// fsyncs the queue directory when sled created, renamed or removed a
    /// name in it (its `blobs/` directory, snapshots) since the last time.
    fn sync_dir_if_changed(&mut self) -> Result<(), SyncError> {
        let mut names = HashSet::with_capacity(self.synced_names.len());
        for entry in std::fs::read_dir(&self.dir).map_err(io("list the queue directory"))? {
            names.insert(entry.map_err(io("list the queue directory"))?.file_name());
        }
        if names != self.synced_names {
            sync_dir(&self.dir)?;
            self.synced_names = names;
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<(), SyncError> {
    File::open(dir)
        .map_err(io(format!("open {}", dir.display())))?
        .sync_all()
        .map_err(fsync(dir.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_is_synced_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), b"log").unwrap();
        let mut s = Syncer::new(dir.path()).unwrap();
        s.sync().unwrap();
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        let blob = dir.path().join("blobs").join("7");
        std::fs::write(&blob, b"a").unwrap();
        s.sync().unwrap();
        let first = s.synced_blobs[&OsString::from("7")];
        std::fs::write(&blob, b"abc").unwrap();
        s.sync().unwrap();
        assert_ne!(s.synced_blobs[&OsString::from("7")], first);
        std::fs::remove_file(&blob).unwrap();
        s.sync().unwrap();
        assert!(s.synced_blobs.is_empty());
        assert!(s.synced_names.contains(&OsString::from("blobs")));
    }

    #[test]
    fn an_unreadable_blobs_directory_fails_the_sync() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), b"log").unwrap();
        // A file where the directory should be: listing fails with ENOTDIR,
        // which must not pass for "no blobs".
        std::fs::write(dir.path().join("blobs"), b"").unwrap();
        let mut s = Syncer::new(dir.path()).unwrap();
        let err = s.sync().unwrap_err();
        assert!(err.is_recoverable(), "{err}");
    }
}
