//! What the view knows between polls: whether the server answers, since
//! when, and the last answer it gave.
//!
//! A failed poll keeps the last answer (shown as stale) instead of blanking
//! the screen: during an outage the last depth and error are what an
//! operator wants to see. Time comes in as an argument so tests drive it.

use std::time::{Duration, SystemTime};

use super::sample::{History, Point, Rates};
use crate::stats::Snapshot;

/// Whether the server answered its last poll.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    /// Before the first answer or failure.
    Connecting,
    Connected {
        since: SystemTime,
    },
    /// `error` is what the last failed poll said (keys already redacted).
    Disconnected {
        since: SystemTime,
        error: String,
    },
}

/// Everything a frame or a plain snapshot is drawn from.
#[derive(Debug)]
pub struct TopState {
    /// Shown in the title so a screen says which server it watches.
    pub url: String,
    pub interval: Duration,
    pub link: Link,
    /// The last good answer; kept across failures.
    pub last: Option<Snapshot>,
    /// Rates of the last step between two good answers, if it had any.
    pub rates: Option<Rates>,
    pub history: History,
}

impl TopState {
    pub fn new(url: &str, interval: Duration) -> TopState {
        TopState {
            url: url.to_string(),
            interval,
            link: Link::Connecting,
            last: None,
            rates: None,
            history: History::for_interval(interval),
        }
    }

    /// Takes in one poll's outcome, received at `at`.
    pub fn record(&mut self, outcome: Result<Snapshot, String>, at: SystemTime) {
        match outcome {
            Ok(snapshot) => {
                if !matches!(self.link, Link::Connected { .. }) {
                    self.link = Link::Connected { since: at };
                }
                // A step across an outage spans a possible restart; `between`
                // tells from the uptime whether it did.
                self.rates = self
                    .last
                    .as_ref()
                    .and_then(|prev| Rates::between(prev, &snapshot));
                let rates = self.rates.unwrap_or_default();
                self.history.push(Point {
                    depth_batches: snapshot.queue.depth_batches,
                    depth_entries: snapshot.queue.depth_entries,
                    received: rates.received(),
                    sent: rates.sent(),
                });
                self.last = Some(snapshot);
            }
            Err(error) => {
                let since = match &self.link {
                    Link::Disconnected { since, .. } => *since,
                    _ => at,
                };
                self.link = Link::Disconnected { since, error };
                self.rates = None;
            }
        }
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.link, Link::Connected { .. })
    }

    /// The shown values are the last good answer's, not the server's now.
    pub fn is_stale(&self) -> bool {
        self.last.is_some() && !self.is_connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::sample::tests::snapshot;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn first_answer_connects_and_has_no_rate_yet() {
        let mut st = TopState::new("http://x", Duration::from_secs(1));
        assert_eq!(st.link, Link::Connecting);
        st.record(Ok(snapshot(1.0, 10, 0)), at(100));
        assert_eq!(st.link, Link::Connected { since: at(100) });
        assert_eq!(st.rates, None);
        assert_eq!(st.history.len(), 1);
        st.record(Ok(snapshot(2.0, 20, 0)), at(101));
        assert_eq!(st.link, Link::Connected { since: at(100) });
        assert_eq!(st.rates.unwrap().logs_received, 10.0);
    }

    #[test]
    fn a_failure_keeps_the_last_answer_as_stale_and_the_first_failure_time() {
        let mut st = TopState::new("http://x", Duration::from_secs(1));
        st.record(Ok(snapshot(1.0, 10, 0)), at(100));
        st.record(Err("refused".into()), at(101));
        st.record(Err("refused again".into()), at(102));
        assert_eq!(
            st.link,
            Link::Disconnected {
                since: at(101),
                error: "refused again".into()
            }
        );
        assert!(st.is_stale());
        assert_eq!(st.last.as_ref().unwrap().logs_received, 10);
        assert_eq!(st.history.len(), 1);
    }

    #[test]
    fn coming_back_resumes_with_a_new_since() {
        let mut st = TopState::new("http://x", Duration::from_secs(1));
        st.record(Ok(snapshot(50.0, 10, 0)), at(100));
        st.record(Err("refused".into()), at(101));
        // Restarted: uptime went down, so the step has no rate.
        st.record(Ok(snapshot(0.5, 0, 0)), at(105));
        assert_eq!(st.link, Link::Connected { since: at(105) });
        assert!(!st.is_stale());
        assert_eq!(st.rates, None);
        assert_eq!(st.history.len(), 2);
    }
}
