//! `edge-ingester top` (SPEC §9): a running server's `/stats`, live, as
//! `vector top` shows Vector.
//!
//! It only reads `/stats` over HTTP, like any client: it needs the URL and a
//! key, never the server's files. A poller thread asks every interval and
//! hands each outcome to the main thread, which owns the terminal: a key
//! press is handled within a quarter second even while a poll hangs.
//!
//! - `state.rs` — connection status and the last answer (kept, as stale,
//!   through an outage); `sample.rs` — rates and the trend ring buffer.
//! - `view.rs` — the full screen; `plain.rs` — the same as `label=value`
//!   lines when stdout is not a terminal (or with `--once`).
//! - `poll.rs` — the HTTP side; `text.rs` — number formats both views share.
//!
//! The terminal is restored on every way out: `q`/Esc/Ctrl-C, an error
//! (a guard's `Drop`) and a panic (ratatui's hook).

mod plain;
mod poll;
mod sample;
mod state;
mod text;
mod view;

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use self::poll::Poller;
use self::state::TopState;

/// How often the screen is redrawn and keys are read, apart from polls:
/// the "since" clocks tick and a key never waits for a slow server.
const FRAME: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// Defaults to INGESTION_API_KEY, then the development key.
    #[arg(long, env = "INGESTION_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Time between polls of /stats (at least 50 ms).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..))]
    pub interval_ms: u64,
    /// Print one plain snapshot and exit (1 if the server cannot be read).
    #[arg(long)]
    pub once: bool,
    /// PEM certificate(s) to trust for an `https://` URL, besides the
    /// system store.
    #[arg(long, env = "INGESTION_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
}

/// Runs `top`; returns the exit code (0, or 1 when it could not run).
pub fn main(args: TopArgs) -> u8 {
    let key = args
        .api_key
        .clone()
        .unwrap_or_else(|| crate::config::DEFAULT_API_KEY.into());
    let interval = Duration::from_millis(args.interval_ms);
    let poller = match Poller::new(&args.url, &key, interval, args.ca_cert.as_deref()) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let mut st = TopState::new(&args.url, interval);
    if args.once {
        return match poller.poll() {
            Ok(s) => {
                st.record(Ok(s), SystemTime::now());
                let _ =
                    std::io::stdout().write_all(plain::snapshot(&st, SystemTime::now()).as_bytes());
                0
            }
            Err(e) => fail(&e),
        };
    }
    if !std::io::stdout().is_terminal() {
        print_snapshots(&poller, st, interval);
        return 0;
    }
    let polls = match poller.spawn(interval) {
        Ok(rx) => rx,
        Err(e) => return fail(&format!("cannot start the poller: {e}")),
    };
    match run_screen(st, polls) {
        Ok(()) => 0,
        Err(e) => fail(&format!("terminal: {e}")),
    }
}

fn fail(message: &str) -> u8 {
    eprintln!("error: {message}");
    1
}

/// One plain snapshot per interval until stdout is closed (a reader that
/// went away ends this quietly, not with a broken-pipe panic).
fn print_snapshots(poller: &Poller, mut st: TopState, interval: Duration) {
    let mut out = std::io::stdout();
    loop {
        let started = Instant::now();
        st.record(poller.poll(), SystemTime::now());
        let text = plain::snapshot(&st, SystemTime::now());
        if out
            .write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .is_err()
        {
            return;
        }
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
}

/// Leaves raw mode and the alternate screen however `run_screen` ends.
struct RestoreTerminal;

impl Drop for RestoreTerminal {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

fn run_screen(
    mut st: TopState,
    polls: std::sync::mpsc::Receiver<poll::Polled>,
) -> std::io::Result<()> {
    // Before init: a failure halfway through (raw mode on, no alternate
    // screen) is undone too.
    let _restore = RestoreTerminal;
    let mut terminal = ratatui::try_init()?;
    loop {
        while let Ok((at, outcome)) = polls.try_recv() {
            st.record(outcome, at);
        }
        terminal.draw(|frame| view::render(frame, &st, SystemTime::now()))?;
        if event::poll(FRAME)? {
            if let Event::Key(key) = event::read()? {
                let ctrl_c =
                    key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
                let quit = matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c;
                if key.kind == KeyEventKind::Press && quit {
                    return Ok(());
                }
            }
        }
    }
}
