//! What two polls of `/stats` in a row say that one cannot: entries per
//! second, and the trend of the last minutes.
//!
//! The counters in `/stats` are totals since the server started. A rate is
//! the growth of a counter over the server's own uptime between two polls —
//! its clock, not ours, so a slow answer does not look like a slow server.
//! A restarted server counts from zero again: a step across a restart has
//! no rate, rather than a negative or wildly wrong one.

use std::collections::VecDeque;
use std::time::Duration;

use crate::stats::Snapshot;

/// How far back the trend lines reach.
pub const TREND_WINDOW: Duration = Duration::from_secs(300);

/// Entries per second over one step between polls, by kind and direction.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    pub logs_received: f64,
    pub metrics_received: f64,
    pub logs_sent: f64,
    pub metrics_sent: f64,
}

impl Rates {
    /// `None` when the step says nothing about a rate: no time passed on the
    /// server, or it restarted in between (uptime or a counter went down).
    pub fn between(prev: &Snapshot, cur: &Snapshot) -> Option<Rates> {
        let dt = cur.uptime_seconds - prev.uptime_seconds;
        if !(dt.is_finite() && dt > 0.0) {
            return None;
        }
        let rate = |a: u64, b: u64| b.checked_sub(a).map(|d| d as f64 / dt);
        Some(Rates {
            logs_received: rate(prev.logs_received, cur.logs_received)?,
            metrics_received: rate(prev.metrics_received, cur.metrics_received)?,
            logs_sent: rate(prev.logs_sent, cur.logs_sent)?,
            metrics_sent: rate(prev.metrics_sent, cur.metrics_sent)?,
        })
    }

    pub fn received(&self) -> f64 {
        self.logs_received + self.metrics_received
    }

    pub fn sent(&self) -> f64 {
        self.logs_sent + self.metrics_sent
    }
}

/// One point of the trend lines.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Point {
    pub depth_batches: u64,
    pub depth_entries: u64,
    /// Entries/s, all kinds; 0 for a step that had no rate.
    pub received: f64,
    pub sent: f64,
}

/// The last points, oldest first; a ring so a view left open for days holds
/// no more than the window.
#[derive(Debug, Clone)]
pub struct History {
    points: VecDeque<Point>,
    capacity: usize,
}

impl History {
    /// Enough points to cover [`TREND_WINDOW`] at this poll interval, within
    /// bounds that keep a line readable (a few points) and small (a thousand).
    pub fn for_interval(interval: Duration) -> History {
        let per_window = TREND_WINDOW.as_millis() / interval.as_millis().max(1);
        let capacity = (per_window as usize).clamp(10, 1_000);
        History {
            points: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    pub fn push(&mut self, point: Point) {
        if self.points.len() == self.capacity {
            self.points.pop_front();
        }
        self.points.push_back(point);
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.points.len()
    }

    /// The last `n` points of one series, oldest first (a sparkline as wide
    /// as the screen shows the newest).
    pub fn last<T>(&self, n: usize, f: impl Fn(&Point) -> T) -> Vec<T> {
        let skip = self.points.len().saturating_sub(n);
        self.points.iter().skip(skip).map(f).collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::queue::QueueStats;
    use crate::stats::{ConfigSnapshot, ForwarderSnapshot, Nullable};

    /// A `/stats` answer with the given totals and uptime.
    pub(crate) fn snapshot(uptime: f64, received: u64, sent: u64) -> Snapshot {
        Snapshot {
            status: "ok".into(),
            producer_type: "MockKafkaProducer".into(),
            logs_received: received,
            metrics_received: received / 2,
            logs_sent: sent,
            metrics_sent: 0,
            queue: QueueStats::default(),
            forwarder: ForwarderSnapshot {
                circuit: "closed".into(),
                consecutive_failures: 0,
                next_retry_in_seconds: Nullable(None),
                last_error: Nullable(None),
                last_success_at: Nullable(None),
            },
            config: ConfigSnapshot {
                loaded_at: "2026-11-29T09:00:00Z".into(),
                reloads: 0,
                reload_failures: 0,
            },
            uptime_seconds: uptime,
        }
    }

    #[test]
    fn rates_are_counter_growth_over_server_uptime() {
        let r = Rates::between(&snapshot(10.0, 100, 40), &snapshot(12.0, 300, 140)).unwrap();
        assert_eq!(r.logs_received, 100.0);
        assert_eq!(r.metrics_received, 50.0);
        assert_eq!(r.logs_sent, 50.0);
        assert_eq!(r.metrics_sent, 0.0);
        assert_eq!(r.received(), 150.0);
        assert_eq!(r.sent(), 50.0);
    }

    #[test]
    fn a_restart_between_polls_gives_no_rate() {
        // Uptime went down: counters restarted, even if they grew past the old ones.
        assert_eq!(
            Rates::between(&snapshot(100.0, 10, 0), &snapshot(1.0, 500, 0)),
            None
        );
        // A counter went down with uptime still growing (clock skew or a bug):
        // no rate rather than a wrapped one.
        assert_eq!(
            Rates::between(&snapshot(1.0, 500, 0), &snapshot(2.0, 10, 0)),
            None
        );
    }

    #[test]
    fn no_time_on_the_server_gives_no_rate() {
        assert_eq!(
            Rates::between(&snapshot(5.0, 1, 0), &snapshot(5.0, 9, 0)),
            None
        );
        assert_eq!(
            Rates::between(&snapshot(5.0, 1, 0), &snapshot(f64::NAN, 9, 0)),
            None
        );
    }

    #[test]
    fn history_keeps_the_window_and_drops_the_oldest() {
        let mut h = History::for_interval(Duration::from_secs(1));
        assert_eq!(h.capacity(), 300);
        for i in 0..305 {
            h.push(Point {
                depth_batches: i,
                ..Point::default()
            });
        }
        assert_eq!(h.len(), 300);
        assert_eq!(h.last(3, |p| p.depth_batches), vec![302, 303, 304]);
        assert_eq!(h.last(1_000, |p| p.depth_batches)[0], 5);
    }

    #[test]
    fn history_capacity_stays_within_bounds() {
        assert_eq!(
            History::for_interval(Duration::from_millis(1)).capacity(),
            1_000
        );
        assert_eq!(
            History::for_interval(Duration::from_secs(3_600)).capacity(),
            10
        );
    }
}
