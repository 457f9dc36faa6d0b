//! Numbers as a person reads them, shared by the screen and the plain
//! snapshot so both say the same thing the same way.

use std::time::{Duration, SystemTime};

pub(crate) use crate::cli::human_bytes as bytes;

/// `-` for an unknown rate (the first poll, or a step across a restart).
pub fn rate(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.1}"),
        _ => "-".into(),
    }
}

/// `1h 02m`, `3m 07s`, `12s`: precise where it matters, short where not.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Seconds as the server reports them (may be absent or not a number).
pub fn seconds(v: Option<f64>) -> String {
    match v {
        Some(v) => Duration::try_from_secs_f64(v).map_or("-".into(), duration),
        None => "-".into(),
    }
}

/// `09:47:08Z`: UTC, since the process cannot read the local offset safely
/// once threads run.
pub fn clock(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let day = secs % 86_400;
    format!(
        "{:02}:{:02}:{:02}Z",
        day / 3600,
        (day % 3600) / 60,
        day % 60
    )
}

/// How long ago `since` was, `0s` if the clock stepped back.
pub fn ago(since: SystemTime, now: SystemTime) -> String {
    duration(now.duration_since(since).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(Duration::from_secs(12)), "12s");
        assert_eq!(duration(Duration::from_secs(187)), "3m 07s");
        assert_eq!(duration(Duration::from_secs(3720)), "1h 02m");
        assert_eq!(duration(Duration::from_secs(90_000)), "1d 01h");
    }

    #[test]
    fn odd_server_numbers_show_as_unknown() {
        assert_eq!(seconds(None), "-");
        assert_eq!(seconds(Some(f64::NAN)), "-");
        assert_eq!(seconds(Some(-1.0)), "-");
        assert_eq!(seconds(Some(f64::INFINITY)), "-");
        assert_eq!(rate(Some(f64::INFINITY)), "-");
        assert_eq!(rate(Some(2.26)), "2.3");
        assert_eq!(seconds(Some(1e300)), "-");
    }

    #[test]
    fn clock_is_utc_time_of_day() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 9 * 3600 + 47 * 60 + 8);
        assert_eq!(clock(t), "09:47:08Z");
        assert_eq!(ago(t, t - Duration::from_secs(5)), "0s");
    }
}
