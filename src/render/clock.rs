//! How text output shows a point in time: tcpdump's choices (wall clock with
//! microseconds, epoch seconds, ISO 8601, relative to the first time shown, delta to
//! the previous line), in the local zone or UTC. JSON always keeps epoch numbers.

use crate::time::Ts;
use chrono::{DateTime, FixedOffset, Local, NaiveDate, TimeZone, Utc};

/// The layout of times in text output (`--time-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeStyle {
    /// `14:02:05.137301`, with a `date` line whenever the date changes (tcpdump's
    /// default).
    #[default]
    Clock,
    /// `1795959325.137301`, seconds since the Unix epoch (tcpdump -tt).
    Epoch,
    /// `2026-12-03T14:02:05.137301+01:00`, RFC 3339 (tcpdump -tttt, with the zone).
    Iso,
    /// `+12.345678`, seconds since the first time shown (tcpdump -ttttt).
    Relative,
    /// `+0.001234`, seconds since the previous line's time (tcpdump -ttt); other
    /// times on a line are shown relative to the first.
    Delta,
}

/// Formats the times of one text output, remembering what delta, relative times and
/// date lines need: the first and the previous time shown and the last date shown.
#[derive(Clone, Debug)]
pub struct TimeFormat {
    style: TimeStyle,
    utc: bool,
    first: Option<Ts>,
    previous: Option<Ts>,
    last_date: Option<NaiveDate>,
}

impl Default for TimeFormat {
    fn default() -> Self {
        TimeFormat::new(TimeStyle::Clock, false)
    }
}

impl TimeFormat {
    /// A formatter of `style`, in UTC when `utc`, else in the local zone (`TZ`, then
    /// /etc/localtime).
    pub fn new(style: TimeStyle, utc: bool) -> Self {
        TimeFormat {
            style,
            utc,
            first: None,
            previous: None,
            last_date: None,
        }
    }

    /// Epoch seconds, as the text output printed before there was a choice.
    pub fn epoch() -> Self {
        TimeFormat::new(TimeStyle::Epoch, true)
    }

    fn zoned(&self, ts: Ts) -> DateTime<FixedOffset> {
        let utc = Utc.timestamp_nanos(ts.0);
        if self.utc {
            utc.fixed_offset()
        } else {
            utc.with_timezone(&Local).fixed_offset()
        }
    }

    /// The line to print before a line that starts at `ts`, when the date changed
    /// since the last one shown (`Clock` only): `date 2026-12-03 (UTC+01:00)`.
    pub fn date_line(&mut self, ts: Ts) -> Option<String> {
        if self.style != TimeStyle::Clock {
            return None;
        }
        let t = self.zoned(ts);
        let date = t.date_naive();
        if self.last_date == Some(date) {
            return None;
        }
        self.last_date = Some(date);
        Some(if self.utc {
            t.format("date %Y-%m-%d (UTC)").to_string()
        } else {
            t.format("date %Y-%m-%d (UTC%:z)").to_string()
        })
    }

    /// Makes `ts` the time relative times count from, unless one was shown already.
    pub fn anchor(&mut self, ts: Ts) {
        self.first.get_or_insert(ts);
    }

    /// `ts` as the first time of a line: in `Delta` style relative to the previous
    /// line's, which it then becomes.
    pub fn line_start(&mut self, ts: Ts) -> String {
        self.first.get_or_insert(ts);
        let text = match self.style {
            TimeStyle::Delta => {
                let since = self.previous.unwrap_or(ts);
                format!("+{:.6}", ts.secs_since(since).max(0.0))
            }
            _ => self.point(ts),
        };
        self.previous = Some(ts);
        text
    }

    /// `ts` anywhere else on a line (an end time, a summary's times).
    pub fn point(&mut self, ts: Ts) -> String {
        let first = *self.first.get_or_insert(ts);
        match self.style {
            TimeStyle::Clock => self.zoned(ts).format("%H:%M:%S%.6f").to_string(),
            TimeStyle::Epoch => ts.to_string(),
            TimeStyle::Iso => self
                .zoned(ts)
                .format("%Y-%m-%dT%H:%M:%S%.6f%:z")
                .to_string(),
            TimeStyle::Relative | TimeStyle::Delta => {
                format!("{:+.6}", ts.secs_since(first))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Ts = Ts(1_795_959_325_137_301_000); // 2026-11-29T13:35:25.137301Z

    #[test]
    fn clock_in_utc_with_a_date_line_when_the_date_changes() {
        let mut f = TimeFormat::new(TimeStyle::Clock, true);
        assert_eq!(f.date_line(T).as_deref(), Some("date 2026-11-29 (UTC)"));
        assert_eq!(f.line_start(T), "13:35:25.137301");
        assert_eq!(f.date_line(Ts(T.0 + 1_000_000_000)), None);
        let next_day = Ts(T.0 + 86_400 * 1_000_000_000);
        assert_eq!(
            f.date_line(next_day).as_deref(),
            Some("date 2026-11-30 (UTC)")
        );
    }

    #[test]
    fn epoch_iso_relative_and_delta() {
        assert_eq!(TimeFormat::epoch().line_start(T), "1795959325.137301");
        let mut iso = TimeFormat::new(TimeStyle::Iso, true);
        assert_eq!(iso.line_start(T), "2026-11-29T13:35:25.137301+00:00");
        assert_eq!(iso.date_line(T), None);
        let mut rel = TimeFormat::new(TimeStyle::Relative, true);
        assert_eq!(rel.line_start(T), "+0.000000");
        assert_eq!(rel.line_start(Ts(T.0 + 1_500_000_000)), "+1.500000");
        let mut delta = TimeFormat::new(TimeStyle::Delta, true);
        assert_eq!(delta.line_start(T), "+0.000000");
        assert_eq!(delta.line_start(Ts(T.0 + 2_000)), "+0.000002");
        assert_eq!(delta.line_start(Ts(T.0 + 5_000)), "+0.000003");
        assert_eq!(delta.point(Ts(T.0 + 5_000)), "+0.000005");
    }

    #[test]
    fn before_the_epoch_does_not_panic() {
        let mut f = TimeFormat::new(TimeStyle::Clock, true);
        assert_eq!(f.line_start(Ts(-1_000)), "23:59:59.999999");
        let mut f = TimeFormat::new(TimeStyle::Iso, false);
        assert!(!f.point(Ts(i64::MIN)).is_empty());
    }
}
