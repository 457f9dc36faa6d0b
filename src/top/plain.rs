//! The view without a terminal: a few lines of `label=value` per poll, for
//! scripts, logs and tests. Labels are stable; a value never contains a
//! space unless quoted, so `grep -o 'depth_batches=[0-9]*'` works.

use std::time::SystemTime;

use super::state::{Link, TopState};
use super::text;

/// One snapshot, ending in a blank line that separates it from the next.
pub fn snapshot(st: &TopState, now: SystemTime) -> String {
    let mut out = format!("edge-ingester top url={} at={}", st.url, text::clock(now));
    match &st.link {
        Link::Connecting => out.push_str(" status=connecting\n"),
        Link::Connected { since } => out.push_str(&format!(
            " status=connected since={}\n",
            text::clock(*since)
        )),
        Link::Disconnected { since, error } => {
            // The last values are not printed: a script must not take them
            // for the server's current ones.
            out.push_str(&format!(
                " status=disconnected since={} error={error:?}\n\n",
                text::clock(*since)
            ));
            return out;
        }
    }
    let Some(s) = &st.last else {
        out.push('\n');
        return out;
    };
    let r = st.rates;
    let (q, f) = (&s.queue, &s.forwarder);
    out.push_str(&format!(
        "rates_per_s logs_received={} metrics_received={} logs_sent={} metrics_sent={}\n",
        text::rate(r.map(|r| r.logs_received)),
        text::rate(r.map(|r| r.metrics_received)),
        text::rate(r.map(|r| r.logs_sent)),
        text::rate(r.map(|r| r.metrics_sent)),
    ));
    out.push_str(&format!(
        "totals logs_received={} metrics_received={} logs_sent={} metrics_sent={} uptime_seconds={:.0} config_reloads={} config_reload_failures={}\n",
        s.logs_received,
        s.metrics_received,
        s.logs_sent,
        s.metrics_sent,
        s.uptime_seconds,
        s.config.reloads,
        s.config.reload_failures
    ));
    out.push_str(&format!(
        "queue depth_batches={} depth_entries={} bytes={} max_bytes={} disk_bytes={} oldest_age_seconds={} dead_letter_batches={} dropped_batches={}\n",
        q.depth_batches,
        q.depth_entries,
        q.bytes,
        q.max_bytes,
        q.disk_bytes,
        q.oldest_age_seconds.map_or("-".into(), |a| format!("{a:.1}")),
        q.dead_letter_batches,
        q.dropped_batches,
    ));
    out.push_str(&format!(
        "forwarder circuit={} consecutive_failures={} next_retry_in_seconds={} last_success_at={} last_error={:?}\n\n",
        bare(&f.circuit),
        f.consecutive_failures,
        f.next_retry_in_seconds.map_or("-".into(), |t| format!("{t:.1}")),
        bare(f.last_success_at.as_deref().unwrap_or("-")),
        f.last_error.as_deref().unwrap_or("-"),
    ));
    out
}

/// A server's word as it is when it is a plain token, else quoted and
/// escaped: a hostile server must not reach the terminal with control
/// characters, nor break the `label=value` format with spaces.
fn bare(s: &str) -> std::borrow::Cow<'_, str> {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-:.+".contains(c));
    if plain {
        s.into()
    } else {
        format!("{s:?}").into()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn server_words_with_control_characters_are_escaped() {
        assert_eq!(super::bare("half_open"), "half_open");
        assert_eq!(super::bare("2026-11-29T10:00:00Z"), "2026-11-29T10:00:00Z");
        let hostile = super::bare("\u{1b}]0;pwned\u{7}");
        assert!(!hostile.contains('\u{1b}'), "{hostile}");
    }

    use std::time::Duration;

    use super::*;
    use crate::top::sample::tests::snapshot as stats;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn a_snapshot_has_stable_labels_and_quoted_errors() {
        let mut st = TopState::new("http://h:1", Duration::from_secs(1));
        let mut s = stats(3.0, 7, 0);
        s.queue.depth_batches = 2;
        s.queue.depth_entries = 7;
        s.forwarder.circuit = "open".into();
        s.forwarder.last_error = crate::stats::Nullable(Some("broker \"down\"".into()));
        st.record(Ok(s), at(10));
        let out = snapshot(&st, at(11));
        for expected in [
            "url=http://h:1 at=00:00:11Z status=connected since=00:00:10Z",
            "rates_per_s logs_received=- ",
            "depth_batches=2 depth_entries=7 ",
            "circuit=open consecutive_failures=0 ",
            "config_reloads=0 config_reload_failures=0\n",
            r#"last_error="broker \"down\"""#,
        ] {
            assert!(out.contains(expected), "missing {expected:?} in\n{out}");
        }
        assert!(out.ends_with("\n\n"));
    }

    #[test]
    fn a_disconnected_snapshot_prints_the_error_and_no_stale_values() {
        let mut st = TopState::new("http://h:1", Duration::from_secs(1));
        st.record(Ok(stats(3.0, 7, 0)), at(10));
        st.record(Err("cannot reach: refused".into()), at(12));
        let out = snapshot(&st, at(13));
        assert!(
            out.contains(r#"status=disconnected since=00:00:12Z error="cannot reach: refused""#),
            "{out}"
        );
        assert!(!out.contains("depth_batches"), "{out}");
    }
}
