//! A guard outside sled against a queue that silently lost its data.
//!
//! NOTE: sled opens a truncated or overwritten log file as an *empty*
//! database without any error (measured: `truncate -s 100 db`, and 4 KiB of
//! random bytes over its start — both opened as 0 batches). A queue that
//! starts empty over acknowledged batches breaks the promise silently, so
//! the committed sequence high-water mark is also kept here, in a tiny file
//! replaced atomically (write, fsync, rename, fsync the directory) at open,
//! at close and at most once a second while commits happen. At open, a
//! database whose `next_seq` is below the ledger's has lost acknowledged
//! writes, and the queue refuses to start.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

const FILE: &str = "edge-ingester.ledger";

pub struct Ledger {
    path: PathBuf,
    dir: PathBuf,
}

impl Ledger {
    pub fn new(dir: &Path) -> Ledger {
        Ledger {
            path: dir.join(FILE),
            dir: dir.to_path_buf(),
        }
    }

    /// The recorded `next_seq`, if the ledger exists and reads well.
    pub fn read(&self) -> Option<u64> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("next_seq="))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Records `next_seq` durably.
    pub fn write(&self, next_seq: u64) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut f = File::create(&tmp)?;
        writeln!(f, "version=1\nnext_seq={next_seq}")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_tolerates_absence() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::new(dir.path());
        assert_eq!(l.read(), None);
        l.write(42).unwrap();
        assert_eq!(l.read(), Some(42));
        l.write(43).unwrap();
        assert_eq!(l.read(), Some(43));
    }
}
