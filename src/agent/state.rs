//! Where a followed file has been acknowledged up to, kept in `--state-dir`.
//!
//! One small JSON file per (service, followed path). It is replaced
//! atomically (write a temporary file, rename it over). After a 202 the new
//! position is fsynced, and so is the directory, before the agent reads on
//! (SPEC §7); the record of a batch about to be sent (`pending`) is written
//! and synced the same way, so whatever survives (a kill -9, a power cut) a
//! batch is re-sent with the range, read time and key it was first sent
//! with.

use std::fs::Metadata;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::queue::durable_dir;

/// A file's identity, stable across renames: device, inode and birth time
/// (so a recycled inode is a different file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub born_ns: u64,
}

impl FileId {
    pub fn of(meta: &Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        let born_ns = meta
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            born_ns,
        }
    }
}

/// A batch handed to the server and not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// It covers the bytes from `Position::acked` to here.
    pub end: u64,
    /// The read time its plain lines carry: the same body on a re-send.
    pub read_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub file: FileId,
    /// Random, drawn when the agent first opens this file: a file that
    /// reuses an inode (or a filesystem without birth times) never gets
    /// the keys of an earlier one.
    #[serde(default)]
    pub nonce: u64,
    /// Truncations seen (copytruncate): byte ranges repeat, keys must not.
    pub generation: u32,
    /// Every byte before this one was acknowledged.
    pub acked: u64,
    pub pending: Option<Pending>,
}

pub struct StateFile {
    path: PathBuf,
    tmp: PathBuf,
    dir: PathBuf,
}

impl StateFile {
    /// The state of `followed` for `service`, in `dir` (created, durably).
    pub fn new(dir: &Path, service: &str, followed: &Path) -> std::io::Result<StateFile> {
        durable_dir::create_dir_all(dir)?;
        let mut h = Sha256::new();
        h.update(service.as_bytes());
        h.update([0]);
        h.update(followed.as_os_str().as_encoded_bytes());
        let name = hex::encode(&h.finalize()[..8]);
        Ok(StateFile {
            path: dir.join(format!("{name}.json")),
            tmp: dir.join(format!("{name}.json.tmp")),
            dir: dir.to_path_buf(),
        })
    }

    /// The stored position; `Ok(None)` if there is none. NOTE: an
    /// unreadable one is an error, not a first start: starting over would
    /// send the file again (or skip its unsent tail) without a word.
    pub fn load(&self) -> Result<Option<Position>, String> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(format!(
                    "cannot read the agent's position {}: {e}",
                    self.path.display()
                ))
            }
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            format!(
                "the agent's position {} is unreadable ({e}); remove it to start this file over",
                self.path.display()
            )
        })
    }

    /// Replaces the stored position; `durable` fsyncs it and the directory.
    pub fn save(&self, position: &Position, durable: bool) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(position).map_err(std::io::Error::other)?;
        let mut f = std::fs::File::create(&self.tmp)?;
        f.write_all(&bytes)?;
        if durable {
            f.sync_data()?;
        }
        drop(f);
        std::fs::rename(&self.tmp, &self.path)?;
        if durable {
            durable_dir::sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// The `Idempotency-Key` of the bytes `start..end` of a file: the same for
/// the same range of the same file (and truncation generation), whoever
/// sends it and however often.
pub fn batch_key(service: &str, at: &Position, start: u64, end: u64) -> String {
    let mut h = Sha256::new();
    h.update(service.as_bytes());
    h.update([0]);
    let file = at.file;
    for n in [
        file.dev,
        file.ino,
        file.born_ns,
        at.nonce,
        u64::from(at.generation),
    ] {
        h.update(n.to_le_bytes());
    }
    format!("f-{}-{start}-{end}", hex::encode(&h.finalize()[..10]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_survives_a_save_and_keys_depend_on_range_file_and_generation() {
        let dir = tempfile::tempdir().unwrap();
        let state =
            StateFile::new(&dir.path().join("a/b"), "svc", Path::new("/var/log/x")).unwrap();
        assert_eq!(state.load(), Ok(None));
        let p = Position {
            file: FileId {
                dev: 1,
                ino: 2,
                born_ns: 3,
            },
            nonce: 7,
            generation: 0,
            acked: 10,
            pending: Some(Pending {
                end: 20,
                read_at: "t".into(),
            }),
        };
        state.save(&p, true).unwrap();
        assert_eq!(state.load(), Ok(Some(p.clone())));
        let k = batch_key("svc", &p, 10, 20);
        assert_eq!(k, batch_key("svc", &p, 10, 20));
        assert!(k.len() <= 128);
        let truncated = Position {
            generation: 1,
            ..p.clone()
        };
        assert_ne!(k, batch_key("svc", &truncated, 10, 20));
        let reused_inode = Position {
            nonce: 8,
            ..p.clone()
        };
        assert_ne!(k, batch_key("svc", &reused_inode, 10, 20));
        assert_ne!(k, batch_key("other", &p, 10, 20));
        assert_ne!(k, batch_key("svc", &p, 10, 21));
        std::fs::write(
            dir.path().join("a/b").join(
                std::fs::read_dir(dir.path().join("a/b"))
                    .unwrap()
                    .next()
                    .unwrap()
                    .unwrap()
                    .file_name(),
            ),
            b"",
        )
        .unwrap();
        assert!(state.load().is_err(), "an unreadable position is an error");
    }
}
