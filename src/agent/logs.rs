//! The log agent (SPEC §7): lines from stdin, or from files followed like
//! `tail -F`, shipped in batches.
//!
//! A followed file is worked one batch at a time, so "acknowledged up to"
//! is one offset:
//!
//! ```text
//!   read lines until --batch-size or --flush-interval
//!   → record the batch as pending (its range and read time)
//!   → send it (same Idempotency-Key, from file identity + byte range, on
//!     every retry, and after a restart: the pending range is re-sent first)
//!   → 202: store the position after it, fsynced — only then read on
//! ```
//!
//! At the end of what is written, the path is looked at again: another file
//! there means rotation by rename (the old one is finished first, then the new
//! one is read from its start); the same file, shorter than where we are,
//! means copytruncate (read again from 0, a new key generation).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use tokio::sync::watch;

use super::client::{Client, Endpoint, Fatal};
use super::follow::{Line, LineReader};
use super::line::{self, Source};
use super::ship::{self, Item};
use super::state::{batch_key, FileId, Pending, Position, StateFile};
use super::{stopped, Target, SIGNAL_GIVE_UP};

/// How often the end of a followed file is looked at again.
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// `service` of every entry.
    #[arg(long)]
    pub service: String,
    /// Send once a batch holds this many lines.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Or this many seconds after its first line.
    #[arg(long, default_value_t = 1.0, value_parser = seconds)]
    pub flush_interval: f64,
    /// Follow this file like `tail -F` (repeatable); without it, stdin.
    #[arg(long = "file")]
    pub files: Vec<PathBuf>,
    /// Read a followed file from its start on the first run (default: its end).
    #[arg(long)]
    pub from_beginning: bool,
    /// Where followed files' positions are kept.
    #[arg(long, default_value = "data/agent")]
    pub state_dir: PathBuf,
    #[command(flatten)]
    pub target: Target,
    /// Lines that may wait unsent before reading pauses.
    #[arg(long, default_value_t = 10_000)]
    pub max_buffer: usize,
    /// Give up on unacknowledged lines after this many seconds (at EOF of
    /// stdin: no limit by default; on SIGTERM: 10 s by default).
    #[arg(long, value_parser = seconds)]
    pub give_up_after: Option<f64>,
}

fn seconds(s: &str) -> Result<f64, String> {
    super::seconds_at_least(s, 0.0)
}

/// Runs the agent; returns the number of lines given up.
pub async fn run(args: LogsArgs, shutdown: watch::Receiver<bool>) -> Result<u64, Fatal> {
    let host = args.target.host();
    tracing::info!(service = %args.service, "Log agent starting");
    let client = Client::new(&args.target)?;
    let ctx = Context {
        client,
        service: args.service.clone(),
        host,
        batch_size: args.batch_size.clamp(1, args.max_buffer.max(1)),
        flush: Duration::from_secs_f64(args.flush_interval.max(0.001)),
        give_up: args.give_up_after.map(Duration::from_secs_f64),
    };
    if args.files.is_empty() {
        return stdin(&ctx, shutdown).await;
    }
    let ctx = std::sync::Arc::new(ctx);
    let mut tasks = tokio::task::JoinSet::new();
    let mut seen = std::collections::HashSet::new();
    for path in &args.files {
        // The same file twice would be shipped twice, under two states.
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        if !seen.insert(absolute) {
            tracing::warn!(path = %path.display(), "--file given twice; following it once");
            continue;
        }
        let state = match StateFile::new(&args.state_dir, &args.service, path) {
            Ok(s) => s,
            Err(e) => {
                return Err(Fatal::State(format!(
                    "cannot use the state directory {}: {e}",
                    args.state_dir.display()
                )))
            }
        };
        let f = Follower {
            ctx: ctx.clone(),
            path: path.clone(),
            state,
            from_beginning: args.from_beginning,
        };
        tasks.spawn(f.run(shutdown.clone()));
    }
    // The first follower that fails stops the agent (a 401 is for all).
    let mut given_up = 0;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(n)) => given_up += n,
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(Fatal::State(format!("a file follower failed: {e}"))),
        }
    }
    Ok(given_up)
}

struct Context {
    client: Client,
    service: String,
    host: String,
    batch_size: usize,
    flush: Duration,
    give_up: Option<Duration>,
}

impl Context {
    fn source(&self) -> Source<'_> {
        Source {
            service: &self.service,
            host: &self.host,
        }
    }
}

fn now_rfc3339() -> String {
    crate::model::now_rfc3339()
}

/// stdin: one entry per line; at EOF send what is held and exit.
async fn stdin(ctx: &Context, mut shutdown: watch::Receiver<bool>) -> Result<u64, Fatal> {
    let mut input = tokio::io::BufReader::with_capacity(256 * 1024, tokio::io::stdin());
    let mut batch: Vec<Item> = Vec::new();
    let mut first_at: Option<Instant> = None;
    let mut buf = Vec::new();
    let mut dropped = 0usize;
    let mut signalled = false;
    loop {
        let deadline = first_at.map(|t| t + ctx.flush);
        let eof = tokio::select! {
            r = read_line_bounded(&mut input, &mut buf) => match r {
                Ok(0) => true,
                Ok(_) => {
                    if let Some(json) = line::entry(&buf, &ctx.source(), &now_rfc3339()) {
                        tracing::info!("Collected log from stdin");
                        // Stdin has no offsets: the place in the batch
                        // tells the halves of a 413 apart.
                        let n = batch.len() as u64;
                        batch.push(Item { json, start: n, end: n + 1 });
                        first_at.get_or_insert_with(Instant::now);
                    }
                    buf.clear();
                    false
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read stdin");
                    true
                }
            },
            _ = sleep_until(deadline) => false,
            _ = stopped(&mut shutdown) => { signalled = true; true }
        };
        let due = first_at.is_some_and(|t| t.elapsed() >= ctx.flush);
        if !batch.is_empty() && (eof || due || batch.len() >= ctx.batch_size) {
            let key = ship::random_key();
            let sent = {
                let send = ship::ship(&ctx.client, Endpoint::Logs, &batch, &key);
                tokio::pin!(send);
                // Retried as long as it takes — until EOF (then --give-up-after,
                // if given) or a signal (then --give-up-after, default 10 s).
                let limit = if signalled {
                    Some(ctx.give_up.unwrap_or(SIGNAL_GIVE_UP))
                } else if eof {
                    ctx.give_up
                } else {
                    None
                };
                match limit {
                    Some(d) => tokio::time::timeout(d, &mut send).await.ok(),
                    None => tokio::select! {
                        r = &mut send => Some(r),
                        _ = stopped(&mut shutdown) => {
                            signalled = true;
                            let d = ctx.give_up.unwrap_or(SIGNAL_GIVE_UP);
                            tokio::time::timeout(d, &mut send).await.ok()
                        }
                    },
                }
            };
            match sent {
                Some(r) => dropped += r?.dropped,
                None => {
                    let n = batch.len() as u64;
                    tracing::error!(
                        lines = n,
                        "gave up sending lines that were never acknowledged"
                    );
                    return Ok(if signalled { 0 } else { n });
                }
            }
            batch.clear();
            first_at = None;
            if signalled {
                return Ok(0);
            }
        }
        if eof {
            if dropped > 0 {
                tracing::warn!(dropped, "lines the server refused for good were dropped");
            }
            return Ok(0);
        }
    }
}

/// Reads one line into `buf` (newline included), keeping at most the
/// message limit (+ a few bytes, so the entry knows it was cut) however long
/// the line is; returns the bytes consumed (0 at EOF). Cancel-safe: what was
/// read stays in `buf`, and a line being skipped is known by `buf`'s length.
async fn read_line_bounded<R: tokio::io::AsyncBufRead + Unpin>(
    input: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    use tokio::io::AsyncBufReadExt;
    let mut consumed = 0;
    loop {
        let chunk = input.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(consumed + buf.len().min(1)); // EOF: a last line without newline
        }
        let (take, done) = match memchr::memchr(b'\n', chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = (line::MAX_MESSAGE_BYTES + 8).saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..take.min(room)]);
        input.consume(take);
        consumed += take;
        if done {
            return Ok(consumed);
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// One followed path.
struct Follower {
    ctx: std::sync::Arc<Context>,
    path: PathBuf,
    state: StateFile,
    from_beginning: bool,
}

/// The file being read now.
struct Current {
    reader: LineReader,
    position: Position,
}

impl Follower {
    /// Returns lines given up (always 0: what was not acknowledged is read
    /// again on the next start).
    async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<u64, Fatal> {
        let Some(mut cur) = self.open_at_start(&mut shutdown).await? else {
            return Ok(0);
        };
        // A batch sent before a restart and never acknowledged goes first,
        // as it was: same range, same read time, same key.
        if let Some(p) = cur.position.pending.clone() {
            let lines = self.read_range(&mut cur, p.end)?;
            if !self
                .send(&mut cur, lines, p.read_at, p.end, &mut shutdown)
                .await?
            {
                return Ok(0);
            }
        }
        loop {
            if *shutdown.borrow() {
                return Ok(0);
            }
            let (lines, read_at) = match self.collect(&mut cur, &mut shutdown).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, "cannot read the followed file; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if !lines.is_empty() {
                let end = lines.last().map_or(cur.position.acked, |l| l.end);
                if !self
                    .send(&mut cur, lines, read_at, end, &mut shutdown)
                    .await?
                {
                    return Ok(0);
                }
                continue;
            }
            if *shutdown.borrow() {
                return Ok(0);
            }
            // At the end of what is written, nothing pending: rotated?
            if let Some(next) = self.check_rotation(&mut cur, &mut shutdown).await? {
                cur = next;
            }
        }
    }

    /// Reads the lines up to `end` (a pending batch's range).
    fn read_range(&self, cur: &mut Current, end: u64) -> Result<Vec<Line>, Fatal> {
        let mut lines = Vec::new();
        loop {
            match cur.reader.next_line(Some(end)) {
                Ok(Some(l)) => lines.push(l),
                Ok(None) => break,
                Err(e) => {
                    return Err(Fatal::State(format!(
                        "cannot re-read {}: {e}",
                        self.path.display()
                    )))
                }
            }
        }
        if cur.reader.consumed() < end {
            // A final line without newline (the file was finished so).
            if let Some(l) = cur.reader.finish() {
                lines.push(l);
            }
        }
        Ok(lines)
    }

    /// Reads until a batch is full, or `--flush-interval` after its first
    /// line, or the end of what is written with nothing read.
    async fn collect(
        &self,
        cur: &mut Current,
        shutdown: &mut watch::Receiver<bool>,
    ) -> std::io::Result<(Vec<Line>, String)> {
        let mut lines = Vec::new();
        let mut first_at: Option<Instant> = None;
        let mut read_at = String::new();
        loop {
            while lines.len() < self.ctx.batch_size {
                match cur.reader.next_line(None)? {
                    Some(l) => {
                        if first_at.is_none() {
                            first_at = Some(Instant::now());
                            read_at = now_rfc3339();
                        }
                        lines.push(l);
                    }
                    None => break,
                }
            }
            let due = first_at.is_some_and(|t| t.elapsed() >= self.ctx.flush);
            if lines.len() >= self.ctx.batch_size || due || lines.is_empty() || *shutdown.borrow() {
                return Ok((lines, read_at));
            }
            let wait = first_at.map_or(POLL, |t| {
                (t + self.ctx.flush)
                    .saturating_duration_since(Instant::now())
                    .min(POLL)
            });
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Sends one batch and stores the position after it. `false`: the
    /// agent is stopping and the batch was left for the next start.
    async fn send(
        &self,
        cur: &mut Current,
        lines: Vec<Line>,
        read_at: String,
        end: u64,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool, Fatal> {
        let start = cur.position.acked;
        cur.position.pending = Some(Pending {
            end,
            read_at: read_at.clone(),
        });
        self.save(&cur.position, true)?;
        let source = self.ctx.source();
        let items: Vec<Item> = lines
            .iter()
            .filter_map(|l| {
                line::entry(&l.bytes, &source, &read_at).map(|json| Item {
                    json,
                    start: l.start,
                    end: l.end,
                })
            })
            .collect();
        let at = cur.position.clone();
        let service = self.ctx.service.clone();
        let key = move |part: &[Item]| {
            let (s, e) = (part[0].start, part[part.len() - 1].end);
            batch_key(&service, &at, s, e)
        };
        if !items.is_empty() {
            let send = ship::ship(&self.ctx.client, Endpoint::Logs, &items, &key);
            tokio::pin!(send);
            let shipped = tokio::select! {
                r = &mut send => r?,
                _ = shutdown.changed() => {
                    let limit = self.ctx.give_up.unwrap_or(SIGNAL_GIVE_UP);
                    match tokio::time::timeout(limit, &mut send).await {
                        Ok(r) => r?,
                        Err(_) => {
                            tracing::warn!(path = %self.path.display(), lines = items.len(), "stopping with a batch unacknowledged; it is sent again on the next start");
                            return Ok(false);
                        }
                    }
                }
            };
            if shipped.dropped > 0 {
                tracing::warn!(
                    dropped = shipped.dropped,
                    "lines the server refused for good were dropped"
                );
            }
        }
        debug_assert!(start <= end);
        cur.position.acked = end;
        cur.position.pending = None;
        self.save(&cur.position, true)?;
        Ok(true)
    }

    fn save(&self, p: &Position, durable: bool) -> Result<(), Fatal> {
        self.state.save(p, durable).map_err(|e| {
            Fatal::State(format!(
                "cannot store the position of {}: {e}",
                self.path.display()
            ))
        })
    }

    /// Where to begin: the stored position (in the file it names, found in
    /// the same directory if it was rotated away meanwhile), else the end of
    /// the file (its start with --from-beginning), else wait for it.
    async fn open_at_start(
        &self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Current>, Fatal> {
        if let Some(pos) = self.state.load().map_err(Fatal::State)? {
            let found = match identity(&self.path) {
                Some(id) if id == pos.file => Some(self.path.clone()),
                _ => find_by_identity(&self.path, pos.file),
            };
            match found {
                Some(path) => {
                    let (file, len) = open(&path).map_err(|e| self.io(e))?;
                    let mut position = pos;
                    // Shorter than what was read from it: truncated since.
                    let read_to = position.pending.as_ref().map_or(position.acked, |p| p.end);
                    if len < read_to {
                        tracing::warn!(path = %path.display(), "file was truncated while the agent was stopped; reading it again from the start");
                        position = Position {
                            generation: position.generation + 1,
                            acked: 0,
                            pending: None,
                            ..position
                        };
                    } else if path != self.path {
                        tracing::info!(path = %path.display(), "finishing a rotated file before the new one");
                    }
                    let reader = LineReader::new(file, position.acked).map_err(|e| self.io(e))?;
                    return Ok(Some(Current { reader, position }));
                }
                None => tracing::warn!(
                    path = %self.path.display(),
                    acked = pos.acked,
                    "the file last read was rotated away and is gone; lines after the stored position in it are lost"
                ),
            }
            // Gone: the file at the path is new, read from its start.
            return self.wait_and_open(0, shutdown).await;
        }
        match identity(&self.path) {
            Some(_) if !self.from_beginning => self.wait_and_open(u64::MAX, shutdown).await,
            _ => self.wait_and_open(0, shutdown).await,
        }
    }

    /// Opens the path once it exists, at `at` (u64::MAX: its end).
    async fn wait_and_open(
        &self,
        at: u64,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Current>, Fatal> {
        let mut said = false;
        loop {
            match self.start_file(&self.path, at) {
                Ok(cur) => return Ok(Some(cur)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if !said {
                        tracing::info!(path = %self.path.display(), "waiting for the file to appear");
                        said = true;
                    }
                }
                Err(e) => return Err(self.io(e)),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = shutdown.changed() => return Ok(None),
            }
        }
    }

    /// Starts reading a file the agent has not read before, at `at`
    /// (u64::MAX: its end), with a fresh key nonce; the position is stored.
    fn start_file(&self, path: &Path, at: u64) -> std::io::Result<Current> {
        let (file, len) = open(path)?;
        let id = FileId::of(&file.metadata()?);
        let acked = at.min(len);
        let position = Position {
            file: id,
            nonce: random_nonce(),
            generation: 0,
            acked,
            pending: None,
        };
        self.state.save(&position, true)?;
        let reader = LineReader::new(file, acked)?;
        Ok(Current { reader, position })
    }

    /// A file rotated away after `finished` and before the one now at the
    /// path (two rotations while the agent was behind or stopped): the
    /// oldest such sibling named after the followed file, by birth time.
    fn rotated_after(&self, finished: FileId, now_at_path: Option<FileId>) -> Option<PathBuf> {
        if finished.born_ns == 0 {
            return None; // no birth times here: cannot order them
        }
        let name = self.path.file_name()?.to_str()?.to_string();
        std::fs::read_dir(dir_of(&self.path))
            .ok()?
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_str()?.to_string();
                let compressed = [".gz", ".zst", ".xz", ".bz2", ".lz4"]
                    .iter()
                    .any(|x| n.ends_with(x));
                if !n.starts_with(&name) || n == name || compressed {
                    return None;
                }
                let meta = e.metadata().ok().filter(|m| m.is_file())?;
                let id = FileId::of(&meta);
                let before_current =
                    now_at_path.is_none_or(|c| c.born_ns == 0 || id.born_ns < c.born_ns);
                (id != finished
                    && Some(id) != now_at_path
                    && id.born_ns > finished.born_ns
                    && before_current)
                    .then(|| (id.born_ns, e.path()))
            })
            .min()
            .map(|(_, p)| p)
    }

    /// At the end of what is written: another file at the path (rotation
    /// by rename) or the same file shorter than our position (copytruncate).
    async fn check_rotation(
        &self,
        cur: &mut Current,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Current>, Fatal> {
        let now_there = std::fs::metadata(&self.path).ok();
        match now_there {
            Some(meta)
                if FileId::of(&meta) == cur.position.file && meta.len() < cur.reader.consumed() =>
            {
                tracing::info!(path = %self.path.display(), "file was truncated (copytruncate); reading it from the start");
                let (file, _) = open(&self.path).map_err(|e| self.io(e))?;
                let position = Position {
                    generation: cur.position.generation + 1,
                    acked: 0,
                    pending: None,
                    ..cur.position.clone()
                };
                self.save(&position, true)?;
                let reader = LineReader::new(file, 0).map_err(|e| self.io(e))?;
                return Ok(Some(Current { reader, position }));
            }
            Some(meta) if FileId::of(&meta) == cur.position.file => {}
            Some(_) => {
                // Rotated: what the old file still holds first (one more read:
                // its writer may have added lines before it moved on), then
                // its unfinished last line, then the new file from its start.
                let mut lines = Vec::new();
                while let Some(l) = cur.reader.next_line(None).map_err(|e| self.io(e))? {
                    lines.push(l);
                }
                if lines.is_empty() {
                    if let Some(l) = cur.reader.finish() {
                        lines.push(l);
                    }
                }
                if !lines.is_empty() {
                    let end = lines.last().map_or(cur.position.acked, |l| l.end);
                    // A batch may exceed --batch-size here only by the
                    // lines a writer added in the last moments.
                    self.send(cur, lines, now_rfc3339(), end, shutdown).await?;
                    return Ok(None);
                }
                let at_path = std::fs::metadata(&self.path).ok().map(|m| FileId::of(&m));
                if let Some(between) = self.rotated_after(cur.position.file, at_path) {
                    tracing::info!(path = %between.display(), "reading a file rotated away before the agent reached it");
                    return self
                        .start_file(&between, 0)
                        .map(Some)
                        .map_err(|e| self.io(e));
                }
                tracing::info!(path = %self.path.display(), "file rotated; following the new one");
                return self.wait_and_open(0, shutdown).await;
            }
            None => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => {}
        }
        Ok(None)
    }

    fn io(&self, e: std::io::Error) -> Fatal {
        Fatal::State(format!("{}: {e}", self.path.display()))
    }
}

fn random_nonce() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

/// The directory a followed path is in (where logrotate renames it to).
fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn identity(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|m| FileId::of(&m))
}

fn open(path: &Path) -> std::io::Result<(std::fs::File, u64)> {
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    Ok((f, len))
}

/// A file with this identity in the directory of `path` (where logrotate
/// renames it to).
fn find_by_identity(path: &Path, id: FileId) -> Option<PathBuf> {
    std::fs::read_dir(dir_of(path))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| identity(p) == Some(id))
}
