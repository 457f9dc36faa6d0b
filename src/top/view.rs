//! The full screen: a frame drawn from a [`TopState`], nothing else.
//!
//! ```text
//! edge-ingester top  ● connected since … (…)  URL  every N ms
//! producer / uptime, or the connection error
//! ┌ entries ───────────────────┐┌ forwarder ────────────────────┐
//! │ kind  recv/s  sent/s  …    ││ circuit, failures, next retry │
//! └────────────────────────────┘└───────────────────────────────┘
//! ┌ queue ─────────────────────────────────────────────────────┐
//! │ depth, oldest, disk, dead letters / dropped; live bytes bar │
//! └─────────────────────────────────────────────────────────────┘
//! trend lines: depth, received/s, sent/s over the last minutes
//! q quits
//! ```
//!
//! While the server does not answer, the last values stay on screen in grey
//! with "(stale)" in their titles: the numbers from before an outage are
//! the ones an operator needs.

use std::time::SystemTime;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Gauge, Padding, Paragraph, Row, Sparkline, Table, Wrap};
use ratatui::Frame;

use super::sample::Point;
use super::state::{Link, TopState};
use super::text;
use crate::stats::Snapshot;

pub fn render(frame: &mut Frame, st: &TopState, now: SystemTime) {
    let [title, body, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(title_bar(st, now), title);
    let [upper, queue, trends] = Layout::vertical([
        // Five forwarder lines and a second one for a long last error.
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Min(0),
    ])
    .areas(body);
    let [rates, forwarder] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(upper);
    let look = Look::of(st);
    frame.render_widget(rates_table(st, &look), rates);
    frame.render_widget(forwarder_panel(st.last.as_ref(), &look), forwarder);
    render_queue(frame, queue, st.last.as_ref(), &look);
    render_trends(frame, trends, st, &look);
    frame.render_widget(
        Paragraph::new(" q quits").style(Style::new().add_modifier(Modifier::REVERSED)),
        footer,
    );
}

/// How values are drawn: normal, or greyed and titled stale.
struct Look {
    values: Style,
    suffix: &'static str,
}

impl Look {
    fn of(st: &TopState) -> Look {
        if st.is_stale() {
            Look {
                values: Style::new().fg(Color::DarkGray),
                suffix: " (stale)",
            }
        } else {
            Look {
                values: Style::new(),
                suffix: "",
            }
        }
    }

    fn block(&self, title: &str) -> Block<'static> {
        Block::bordered()
            .padding(Padding::horizontal(1))
            .title(format!(" {title}{} ", self.suffix))
    }
}

fn title_bar(st: &TopState, now: SystemTime) -> Paragraph<'static> {
    let status = match &st.link {
        Link::Connecting => Span::styled("● connecting", Style::new().fg(Color::Yellow)),
        Link::Connected { since } => Span::styled(
            format!(
                "● connected since {} ({})",
                text::clock(*since),
                text::ago(*since, now)
            ),
            Style::new().fg(Color::Green),
        ),
        Link::Disconnected { since, .. } => Span::styled(
            format!(
                "● disconnected since {} ({})",
                text::clock(*since),
                text::ago(*since, now)
            ),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
    };
    // Status before the URL: on a narrow terminal the URL is what gets cut.
    let first = Line::from(vec![
        Span::styled(
            " edge-ingester top ",
            Style::new().add_modifier(Modifier::REVERSED),
        ),
        Span::raw("  "),
        status,
        Span::raw(format!(
            "  {}  every {} ms",
            st.url,
            st.interval.as_millis()
        )),
    ]);
    let second = match (&st.link, &st.last) {
        (Link::Disconnected { error, .. }, _) => {
            Line::styled(format!(" error: {error}"), Style::new().fg(Color::Red))
        }
        (_, Some(s)) => Line::raw(format!(
            " producer: {}  uptime: {}  config: loaded {}, {} reloads, {} refused",
            s.producer_type,
            text::seconds(Some(s.uptime_seconds)),
            s.config.loaded_at,
            s.config.reloads,
            s.config.reload_failures
        )),
        (_, None) => Line::raw(" waiting for the first answer"),
    };
    Paragraph::new(vec![first, second])
}

fn rates_table(st: &TopState, look: &Look) -> Table<'static> {
    let r = st.rates;
    let total = |f: fn(&Snapshot) -> u64| st.last.as_ref().map_or("-".into(), |s| f(s).to_string());
    let rows = [
        [
            "logs".to_string(),
            text::rate(r.map(|r| r.logs_received)),
            text::rate(r.map(|r| r.logs_sent)),
            total(|s| s.logs_received),
            total(|s| s.logs_sent),
        ],
        [
            "metrics".to_string(),
            text::rate(r.map(|r| r.metrics_received)),
            text::rate(r.map(|r| r.metrics_sent)),
            total(|s| s.metrics_received),
            total(|s| s.metrics_sent),
        ],
    ]
    .map(|cells| Row::new(cells.map(Cell::from)));
    Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Fill(1),
            Constraint::Fill(1),
            Constraint::Fill(1),
            Constraint::Fill(1),
        ],
    )
    .header(
        Row::new(["kind", "recv/s", "sent/s", "recv", "sent"])
            .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .style(look.values)
    .block(look.block("entries: per second, and totals"))
}

fn forwarder_panel(last: Option<&Snapshot>, look: &Look) -> Paragraph<'static> {
    let lines = match last {
        None => vec![Line::raw("circuit: -")],
        Some(s) => {
            let f = &s.forwarder;
            let circuit_style = match f.circuit.as_str() {
                "closed" => look.values,
                _ => look.values.fg(Color::Red).add_modifier(Modifier::BOLD),
            };
            vec![
                Line::from(vec![
                    Span::raw("circuit: "),
                    Span::styled(f.circuit.clone(), circuit_style),
                ]),
                Line::raw(format!("consecutive failures: {}", f.consecutive_failures)),
                Line::raw(format!(
                    "next retry: {}",
                    match *f.next_retry_in_seconds {
                        Some(t) if t.is_finite() => format!("in {t:.1} s"),
                        _ => "-".into(),
                    }
                )),
                Line::raw(format!(
                    "last success: {}",
                    f.last_success_at.as_deref().unwrap_or("-")
                )),
                Line::raw(format!(
                    "last error: {}",
                    f.last_error.as_deref().unwrap_or("-")
                )),
            ]
        }
    };
    Paragraph::new(lines)
        .style(look.values)
        .wrap(Wrap { trim: true })
        .block(look.block("forwarder"))
}

fn render_queue(frame: &mut Frame, area: Rect, last: Option<&Snapshot>, look: &Look) {
    let block = look.block("queue");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [facts, bar] =
        Layout::vertical([Constraint::Length(3), Constraint::Length(1)]).areas(inner);
    let Some(s) = last else {
        frame.render_widget(Paragraph::new("depth: -"), facts);
        return;
    };
    let q = &s.queue;
    let lines = vec![
        Line::raw(format!(
            "depth: {} batches, {} entries   oldest: {}",
            q.depth_batches,
            q.depth_entries,
            text::seconds(*q.oldest_age_seconds)
        )),
        Line::raw(format!("disk: {}", text::bytes(q.disk_bytes))),
        Line::raw(format!(
            "dead letters: {} batches   dropped: {} batches",
            q.dead_letter_batches, q.dropped_batches
        )),
    ];
    frame.render_widget(Paragraph::new(lines).style(look.values), facts);
    let ratio = if q.max_bytes == 0 {
        0.0
    } else {
        q.bytes as f64 / q.max_bytes as f64
    };
    // Gauge panics outside 0..=1; a queue over its soft limit shows full.
    let ratio = if ratio.is_finite() {
        ratio.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let gauge = Gauge::default()
        .ratio(ratio)
        .label(format!(
            "live {} of {} ({:.1}%)",
            text::bytes(q.bytes),
            text::bytes(q.max_bytes),
            ratio * 100.0
        ))
        .gauge_style(if look.suffix.is_empty() {
            Style::new().fg(Color::Cyan)
        } else {
            look.values
        });
    frame.render_widget(gauge, bar);
}

fn render_trends(frame: &mut Frame, area: Rect, st: &TopState, look: &Look) {
    let rows = Layout::vertical([Constraint::Fill(1); 3]).split(area);
    let window = text::duration(st.interval * st.history.capacity() as u32);
    type Series = fn(&Point) -> u64;
    let series: [(&str, Series); 3] = [
        ("queue depth (batches)", |p| p.depth_batches),
        ("received entries/s", |p| p.received.round() as u64),
        ("sent entries/s", |p| p.sent.round() as u64),
    ];
    for ((name, f), row) in series.into_iter().zip(rows.iter()) {
        let width = row.width as usize;
        let data = st.history.last(width, f);
        let max = data.iter().copied().max().unwrap_or(0);
        // A title line and no border: on a 24-line terminal a bordered
        // sparkline has no room left for its bars.
        let block = Block::new().title(Line::styled(
            format!("{name}, last {window}, max {max}{}", look.suffix),
            Style::new().add_modifier(Modifier::BOLD),
        ));
        frame.render_widget(
            Sparkline::default()
                .data(&data)
                .style(if look.suffix.is_empty() {
                    Style::new().fg(Color::Green)
                } else {
                    look.values
                })
                .block(block),
            *row,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    use super::*;
    use crate::top::sample::tests::snapshot;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn screen(st: &TopState, now: SystemTime, w: u16, h: u16) -> String {
        let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
        term.draw(|f| render(f, st, now)).unwrap();
        let buf = term.backend().buffer();
        let mut out = String::new();
        for y in 0..buf.area.height {
            for x in 0..buf.area.width {
                out.push_str(buf[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    fn stuck_queue() -> TopState {
        let mut st = TopState::new("http://127.0.0.1:8000", Duration::from_secs(1));
        let stuck = |uptime, received| {
            let mut s = snapshot(uptime, received, 0);
            s.queue.depth_batches = 3;
            s.queue.depth_entries = 30;
            s.queue.bytes = 512 * 1024;
            s.queue.max_bytes = 1024 * 1024;
            s.forwarder.circuit = "open".into();
            s.forwarder.consecutive_failures = 5;
            s.forwarder.last_error = crate::stats::Nullable(Some("mock sink failing".into()));
            s
        };
        st.record(Ok(stuck(10.0, 30)), at(100));
        st.record(Ok(stuck(12.0, 50)), at(102));
        st
    }

    #[test]
    fn a_connected_screen_shows_depth_circuit_rates_and_the_live_bytes_bar() {
        let out = screen(&stuck_queue(), at(112), 140, 45);
        for expected in [
            "http://127.0.0.1:8000",
            "every 1000 ms",
            "config: loaded 2026-11-29T09:00:00Z, 0 reloads, 0 refused",
            "connected since 00:01:40Z (12s)",
            "depth: 3 batches, 30 entries",
            "circuit: open",
            "last error: mock sink failing",
            "live 512.0 KiB of 1.0 MiB (50.0%)",
            "consecutive failures: 5",
            "q quits",
            "queue depth (batches), last 5m 00s, max 3",
        ] {
            assert!(out.contains(expected), "missing {expected:?} in\n{out}");
        }
        assert!(!out.contains("stale"), "{out}");
        // Rates from the step 10 s → 12 s of uptime, then the totals.
        let row = |kind: &str| -> Vec<String> {
            let line = out
                .lines()
                .find(|l| l.contains(&format!("│ {kind} ")))
                .unwrap();
            let cells = line.split('│').nth(1).unwrap();
            cells.split_whitespace().map(String::from).collect()
        };
        assert_eq!(row("logs"), ["logs", "10.0", "0.0", "50", "0"]);
        assert_eq!(row("metrics"), ["metrics", "5.0", "0.0", "25", "0"]);
    }

    #[test]
    fn a_server_that_stops_answering_shows_disconnected_and_stale_values() {
        let mut st = stuck_queue();
        st.record(
            Err("cannot reach http://127.0.0.1:8000/stats: refused".into()),
            at(120),
        );
        let out = screen(&st, at(125), 140, 45);
        for expected in [
            "disconnected since 00:02:00Z (5s)",
            "error: cannot reach http://127.0.0.1:8000/stats: refused",
            "queue (stale)",
            "depth: 3 batches, 30 entries",
        ] {
            assert!(out.contains(expected), "missing {expected:?} in\n{out}");
        }
    }

    #[test]
    fn before_the_first_answer_the_screen_says_so() {
        let st = TopState::new("http://x", Duration::from_millis(200));
        let out = screen(&st, at(1), 80, 24);
        assert!(out.contains("connecting"), "{out}");
        assert!(out.contains("depth: -"), "{out}");
    }

    #[test]
    fn odd_values_and_tiny_terminals_draw_without_panicking() {
        let mut st = TopState::new("http://x", Duration::from_millis(200));
        let mut s = snapshot(f64::NAN, u64::MAX, u64::MAX);
        s.queue.bytes = u64::MAX;
        s.queue.max_bytes = 1;
        s.queue.oldest_age_seconds = crate::stats::Nullable(Some(f64::INFINITY));
        s.forwarder.next_retry_in_seconds = crate::stats::Nullable(Some(-1e300));
        st.record(Ok(s), at(1));
        for (w, h) in [(140, 45), (80, 24), (20, 6), (1, 1)] {
            screen(&st, at(2), w, h);
        }
    }
}
