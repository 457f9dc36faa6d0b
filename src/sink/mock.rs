//! The built-in mock producer: dry runs, outage drills and tests.
//!
//! It renders every entry exactly as the Kafka sink would and, with
//! `capture_path`, appends each value as one JSON line and syncs the file
//! before the batch counts as delivered — so a capture is a faithful record
//! of what was confirmed.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::{Confirmed, Delivery, Rendered, Sink, SinkError, SubmitFuture};
use crate::config::{MockConfig, MockFail};

pub struct MockSink {
    /// Replaced whole by a reload; a batch already submitted finishes with
    /// the settings it was submitted under.
    settings: ArcSwap<Settings>,
    started: Instant,
}

struct Settings {
    latency: Duration,
    fail: MockFail,
    flap: Duration,
    capture_path: PathBuf,
    /// Shared with the blocking task that writes and syncs it.
    capture: Option<Arc<Mutex<File>>>,
}

impl Settings {
    /// Opens the capture file unless `current` already has that very file
    /// open: a file rotated away (renamed or deleted, as logrotate does
    /// before it sends SIGHUP) is opened again at the path.
    fn new(cfg: &MockConfig, current: Option<&Settings>) -> std::io::Result<Settings> {
        let kept = current
            .filter(|c| c.capture_path == cfg.capture_path)
            .and_then(|c| c.capture.clone())
            .filter(|open| same_file(&crate::queue::lock(open), &cfg.capture_path));
        let capture = match kept {
            Some(open) => Some(open),
            None if cfg.capture_path.as_os_str().is_empty() => None,
            None => Some(Arc::new(Mutex::new(open_capture(&cfg.capture_path)?))),
        };
        Ok(Settings {
            latency: Duration::from_millis(cfg.latency_ms),
            fail: cfg.fail,
            flap: Duration::from_millis(cfg.flap_ms.max(1)),
            capture_path: cfg.capture_path.clone(),
            capture,
        })
    }
}

impl MockSink {
    pub fn new(cfg: &MockConfig) -> std::io::Result<MockSink> {
        Ok(MockSink {
            settings: ArcSwap::from_pointee(Settings::new(cfg, None)?),
            started: Instant::now(),
        })
    }

    /// Whether a send finishing now fails, and why.
    fn failing(fail: MockFail, flap: Duration, started: Instant) -> Option<String> {
        match fail {
            MockFail::Never => None,
            MockFail::Always => {
                Some("mock producer is configured to fail (mock.fail = \"always\")".into())
            }
            MockFail::Flapping => {
                let period = started.elapsed().as_millis() / flap.as_millis();
                (period % 2 == 1).then(|| {
                    "mock producer is in a failing period (mock.fail = \"flapping\")".into()
                })
            }
        }
    }
}

/// Whether `path` still names the open `file`.
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Opens the capture for appending. NOTE: a kill -9 in the middle of an
/// append leaves a partial last line (seen in CI); that batch was never
/// confirmed and is captured again in full, but appending right after the
/// fragment would glue it to the next valid line, so a torn tail is
/// terminated first.
fn open_capture(path: &Path) -> std::io::Result<File> {
    use std::io::{Read, Seek, SeekFrom};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    if f.metadata()?.len() > 0 {
        let mut last = [0u8; 1];
        f.seek(SeekFrom::End(-1))?;
        f.read_exact(&mut last)?;
        if last[0] != b'\n' {
            f.write_all(b"\n")?;
            f.sync_data()?;
        }
    }
    Ok(f)
}

impl Sink for MockSink {
    fn producer_type(&self) -> &'static str {
        "MockKafkaProducer"
    }

    /// A configured latency is not an outage.
    fn stall_after(&self) -> Duration {
        self.settings.load().latency + Duration::from_secs(2)
    }

    fn reload(&self, config: &crate::config::Config) -> Result<(), String> {
        let next = Settings::new(&config.mock, Some(&self.settings.load()))
            .map_err(|e| format!("mock.capture_path: {e}"))?;
        self.settings.store(Arc::new(next));
        Ok(())
    }

    fn submit<'a>(&'a self, rendered: &'a Rendered) -> SubmitFuture<'a> {
        let settings = self.settings.load_full();
        let lines = settings.capture.as_ref().map(|_| {
            let mut lines = Vec::with_capacity(rendered.len() * 330);
            for m in rendered.iter() {
                lines.extend_from_slice(m.value);
                lines.push(b'\n');
            }
            lines
        });
        let (latency, fail, capture) = (settings.latency, settings.fail, settings.capture.clone());
        let (flap, started) = (settings.flap, self.started);
        let delivery: Delivery = Box::pin(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            if let Some(why) = Self::failing(fail, flap, started) {
                return Err(SinkError::Retriable(why));
            }
            let (Some(capture), Some(lines)) = (capture, lines) else {
                return Ok(Confirmed::all());
            };
            tokio::task::spawn_blocking(move || {
                let mut f = crate::queue::lock(&capture);
                f.write_all(&lines)?;
                f.sync_data()
            })
            .await
            .map_err(|e| SinkError::Retriable(format!("capture writer failed: {e}")))?
            .map_err(|e| SinkError::Retriable(format!("cannot write capture file: {e}")))?;
            Ok(Confirmed::all())
        });
        Box::pin(async move { Ok(delivery) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flapping_alternates_working_and_failing_periods() {
        let flap = Duration::from_secs(10);
        let ago = |s| Instant::now() - Duration::from_secs(s);
        assert!(MockSink::failing(MockFail::Flapping, flap, ago(1)).is_none());
        assert!(MockSink::failing(MockFail::Flapping, flap, ago(11)).is_some());
        assert!(MockSink::failing(MockFail::Flapping, flap, ago(21)).is_none());
        assert!(MockSink::failing(MockFail::Always, flap, ago(1)).is_some());
        assert!(MockSink::failing(MockFail::Never, flap, ago(11)).is_none());
    }

    #[test]
    fn a_reload_reopens_a_rotated_capture_and_keeps_an_unmoved_one() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = MockConfig {
            capture_path: dir.path().join("capture.jsonl"),
            ..MockConfig::default()
        };
        let first = Settings::new(&cfg, None).unwrap();
        let kept = Settings::new(&cfg, Some(&first)).unwrap();
        assert!(Arc::ptr_eq(
            first.capture.as_ref().unwrap(),
            kept.capture.as_ref().unwrap()
        ));
        std::fs::rename(&cfg.capture_path, dir.path().join("capture.jsonl.1")).unwrap();
        let reopened = Settings::new(&cfg, Some(&kept)).unwrap();
        assert!(!Arc::ptr_eq(
            kept.capture.as_ref().unwrap(),
            reopened.capture.as_ref().unwrap()
        ));
        assert!(cfg.capture_path.exists());
    }

    #[test]
    fn a_torn_last_line_is_terminated_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capture.jsonl");
        std::fs::write(&path, "{\"a\":1}\n{\"torn\":").unwrap();
        let mut f = open_capture(&path).unwrap();
        f.write_all(b"{\"b\":2}\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            ["{\"a\":1}", "{\"torn\":", "{\"b\":2}"]
        );
        // A clean file is left as it is.
        drop(open_capture(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }
}
