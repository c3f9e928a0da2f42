//! A job's `schedule`: a cron expression of five fields (minute, hour,
//! day of month, month, day of week), read in UTC. UTC because a service
//! in a container often has no time zone database, and because a local
//! schedule skips or repeats an hour twice a year.
//!
//! Each field takes `*`, a number, a range `a-b`, a step `*/n`, `a-b/n`
//! or `a/n`, and lists of those (`1,15,30-40/5`); months and days of the
//! week also take English names (`jan`, `mon-fri`); day 7 is Sunday, as
//! day 0. As in cron, when both the day of month and the day of week are
//! restricted (neither starts with `*`), a day matching either runs.

use std::time::{Duration, Instant};

use jiff::civil::{DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The expression as written, for logs.
    text: String,
    minutes: Bits,
    hours: Bits,
    days: Bits,
    months: Bits,
    /// Sunday is 0.
    weekdays: Bits,
    /// Whether the day-of-month / day-of-week field starts with `*`.
    any_day: bool,
    any_weekday: bool,
}

/// The values a field allows, one bit each.
type Bits = u64;

/// One field's name (for errors), bounds, and names for its values.
struct Field {
    name: &'static str,
    lo: u8,
    hi: u8,
    names: &'static [&'static str],
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        lo: 0,
        hi: 59,
        names: &[],
    },
    Field {
        name: "hour",
        lo: 0,
        hi: 23,
        names: &[],
    },
    Field {
        name: "day of month",
        lo: 1,
        hi: 31,
        names: &[],
    },
    Field {
        name: "month",
        lo: 1,
        hi: 12,
        names: MONTHS,
    },
    Field {
        name: "day of week",
        lo: 0,
        hi: 7,
        names: WEEKDAYS,
    },
];

/// How far ahead `next_after` looks: a 29 February can be 8 years away.
const HORIZON_YEARS: i16 = 9;

impl Schedule {
    /// Parses a five-field expression; the error says which field and why.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "{text:?} has {} field(s); a schedule has 5: minute hour day-of-month month day-of-week, e.g. \"0 6 * * 1-5\" (06:00 UTC on weekdays)",
                parts.len()
            ));
        }
        let mut bits = [0; 5];
        for ((part, field), out) in parts.iter().zip(&FIELDS).zip(&mut bits) {
            *out = field
                .parse(part)
                .map_err(|why| format!("{text:?}: {} field {part:?}: {why}", field.name))?;
        }
        let [minutes, hours, days, months, mut weekdays] = bits;
        // Sunday is both 0 and 7.
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        let schedule = Schedule {
            text: parts.join(" "),
            minutes,
            hours,
            days,
            months,
            weekdays,
            any_day: parts[2].starts_with('*'),
            any_weekday: parts[4].starts_with('*'),
        };
        if !schedule.can_match() {
            return Err(format!(
                "{text:?} never matches: none of its months has such a day"
            ));
        }
        Ok(schedule)
    }

    /// The first whole minute strictly after `t` that the schedule
    /// matches. `None` only past the horizon, which a parsed schedule
    /// never reaches (`parse` refuses one that cannot match).
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let now = TimeZone::UTC.to_datetime(t);
        let mut at = now
            .date()
            .at(now.hour(), now.minute(), 0, 0)
            .checked_add(1.minute())
            .ok()?;
        let horizon = at.year().checked_add(HORIZON_YEARS)?;
        while at.year() <= horizon {
            at = if !has(self.months, at.month()) {
                at.first_of_month()
                    .date()
                    .checked_add(1.month())
                    .ok()?
                    .to_datetime(Time::midnight())
            } else if !self.day_matches(at) {
                at.date().tomorrow().ok()?.to_datetime(Time::midnight())
            } else if !has(self.hours, at.hour()) {
                at.date()
                    .at(at.hour(), 0, 0, 0)
                    .checked_add(1.hour())
                    .ok()?
            } else if !has(self.minutes, at.minute()) {
                at.checked_add(1.minute()).ok()?
            } else {
                return TimeZone::UTC.to_timestamp(at).ok();
            };
        }
        None
    }

    /// The service's next scheduled pass, seen at `now` (wall clock) and
    /// `mono` (the same moment on the monotonic clock the service sleeps
    /// on): the first match after both `now` and `done`, the minute whose
    /// pass just ran. The two clocks drift apart a little: a wake-up a
    /// few milliseconds before the minute must not run that minute twice.
    /// Returns when to wake, and the minute it stands for. A match missed
    /// (the service stopped, or asleep) is not made up for.
    pub fn next_pass(
        &self,
        done: Option<Timestamp>,
        now: Timestamp,
        mono: Instant,
    ) -> Option<(Instant, Timestamp)> {
        let from = done.map_or(now, |d| d.max(now));
        let minute = self.next_after(from)?;
        let wait = Duration::try_from(minute.duration_since(now)).ok()?;
        Some((mono + wait, minute))
    }

    fn day_matches(&self, at: DateTime) -> bool {
        let day = has(self.days, at.day());
        let weekday = has(self.weekdays, at.weekday().to_sunday_zero_offset());
        if self.any_day || self.any_weekday {
            day && weekday
        } else {
            day || weekday
        }
    }

    /// Whether some month allowed has a day allowed (30 February never
    /// comes); a day of week restricted as well always comes.
    fn can_match(&self) -> bool {
        const LONGEST: [i8; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        if self.any_day || !self.any_weekday {
            return true;
        }
        (1..=12)
            .filter(|m| has(self.months, *m))
            .any(|m| (1..=LONGEST[m as usize - 1]).any(|d| has(self.days, d)))
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn has(bits: Bits, v: i8) -> bool {
    (0..64).contains(&v) && bits & (1 << v) != 0
}

impl Field {
    /// A list of ranges and steps → the values it allows.
    fn parse(&self, text: &str) -> Result<Bits, String> {
        let mut bits = 0;
        for item in text.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((range, step)) => (range, Some(step)),
                None => (item, None),
            };
            let (lo, hi) = match range {
                "*" => (self.lo, self.hi),
                _ => match range.split_once('-') {
                    Some((a, b)) => (self.value(a)?, self.value(b)?),
                    // `a/n`: from a to the end, every n.
                    None if step.is_some() => (self.value(range)?, self.hi),
                    None => (self.value(range)?, self.value(range)?),
                },
            };
            if lo > hi {
                return Err(format!("the range {range} runs backwards"));
            }
            let step = match step {
                None => 1,
                Some(s) => match s.parse::<u8>() {
                    Ok(n) if n > 0 => n,
                    _ => return Err(format!("the step {s:?} is not a number from 1")),
                },
            };
            for v in (lo..=hi).step_by(step.into()) {
                bits |= 1 << v;
            }
        }
        Ok(bits)
    }

    fn value(&self, text: &str) -> Result<u8, String> {
        let named = self
            .names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(text))
            .map(|i| i as u8 + if self.lo == 1 { 1 } else { 0 });
        match named.or_else(|| text.parse().ok()) {
            Some(v) if (self.lo..=self.hi).contains(&v) => Ok(v),
            _ => Err(format!(
                "{text:?} is not a value from {} to {}{}",
                self.lo,
                self.hi,
                if self.names.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (or {}-{})",
                        self.names[0],
                        self.names[self.names.len() - 1]
                    )
                }
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(expr: &str, after: &str) -> String {
        Schedule::parse(expr)
            .unwrap()
            .next_after(at(after))
            .unwrap()
            .to_string()
    }

    #[test]
    fn weekday_ranges_skip_the_weekend() {
        // Friday 2026-12-04 06:00 is a match; the next is Monday's.
        assert_eq!(
            next("0 6 * * 1-5", "2026-12-04T06:00:00Z"),
            "2026-12-07T06:00:00Z"
        );
        assert_eq!(
            next("0 6 * * mon-fri", "2026-12-05T12:00:00Z"),
            "2026-12-07T06:00:00Z"
        );
        // Before 06:00 on a weekday: the same day.
        assert_eq!(
            next("0 6 * * 1-5", "2026-12-08T05:59:59Z"),
            "2026-12-08T06:00:00Z"
        );
        // Sunday as 7 and as 0.
        assert_eq!(
            next("30 1 * * 7", "2026-12-01T00:00:00Z"),
            "2026-12-06T01:30:00Z"
        );
        assert_eq!(
            next("30 1 * * 0", "2026-12-01T00:00:00Z"),
            "2026-12-06T01:30:00Z"
        );
    }

    #[test]
    fn steps_lists_and_ranges() {
        assert_eq!(
            next("*/15 * * * *", "2026-12-04T10:07:00Z"),
            "2026-12-04T10:15:00Z"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-12-04T10:45:00Z"),
            "2026-12-04T11:00:00Z"
        );
        assert_eq!(
            next("5,20,40 * * * *", "2026-12-04T10:20:00Z"),
            "2026-12-04T10:40:00Z"
        );
        assert_eq!(
            next("10-20/5 3 * * *", "2026-12-04T03:16:00Z"),
            "2026-12-04T03:20:00Z"
        );
        assert_eq!(
            next("10-20/5 3 * * *", "2026-12-04T03:20:00Z"),
            "2026-12-05T03:10:00Z"
        );
        assert_eq!(
            next("50/5 * * * *", "2026-12-04T03:56:00Z"),
            "2026-12-04T04:50:00Z"
        );
        assert_eq!(
            next("0 0 1 jan,jul *", "2026-02-01T00:00:00Z"),
            "2026-07-01T00:00:00Z"
        );
    }

    #[test]
    fn the_minute_after_a_match_is_not_the_match() {
        let s = Schedule::parse("* * * * *").unwrap();
        assert_eq!(
            s.next_after(at("2026-12-04T10:07:00Z")).unwrap(),
            at("2026-12-04T10:08:00Z")
        );
        // Seconds into a minute: the next whole minute.
        assert_eq!(
            s.next_after(at("2026-12-04T10:07:59.9Z")).unwrap(),
            at("2026-12-04T10:08:00Z")
        );
    }

    /// The service's decision: when to wake for the next pass.
    #[test]
    fn the_next_pass_waits_for_the_minute_and_never_runs_one_twice() {
        let s = Schedule::parse("0 6 * * 1-5").unwrap();
        let mono = Instant::now();
        // Tuesday 05:59:45: fifteen seconds on.
        let (wake, minute) = s.next_pass(None, at("2026-12-08T05:59:45Z"), mono).unwrap();
        assert_eq!(wake - mono, Duration::from_secs(15));
        assert_eq!(minute, at("2026-12-08T06:00:00Z"));
        // Woken a little early by a drifting clock, just after running
        // 06:00: the next pass is Wednesday's, not 06:00 again.
        let (wake, minute) = s
            .next_pass(Some(minute), at("2026-12-08T05:59:59.990Z"), mono)
            .unwrap();
        assert_eq!(minute, at("2026-12-09T06:00:00Z"));
        assert_eq!(wake - mono, Duration::from_millis(86_400_010));
        // Friday 06:00's pass done, seen at 06:00:02: Monday's.
        let (_, minute) = s
            .next_pass(
                Some(at("2026-12-11T06:00:00Z")),
                at("2026-12-11T06:00:02Z"),
                mono,
            )
            .unwrap();
        assert_eq!(minute, at("2026-12-14T06:00:00Z"));
    }

    #[test]
    fn month_ends_and_leap_days() {
        // The 31st skips the months without one.
        assert_eq!(
            next("0 0 31 * *", "2026-04-01T00:00:00Z"),
            "2026-05-31T00:00:00Z"
        );
        // Through the year's end.
        assert_eq!(
            next("59 23 31 12 *", "2026-12-31T23:59:00Z"),
            "2027-12-31T23:59:00Z"
        );
        // 29 February: the next leap year.
        assert_eq!(
            next("0 12 29 2 *", "2026-03-01T00:00:00Z"),
            "2028-02-29T12:00:00Z"
        );
        // The day after the last of February.
        assert_eq!(
            next("0 0 * 3 *", "2027-02-28T23:59:00Z"),
            "2027-03-01T00:00:00Z"
        );
    }

    #[test]
    fn day_of_month_and_weekday_both_restricted_run_on_either() {
        // The 13th (a Sunday in December 2026) or any Friday.
        assert_eq!(
            next("0 0 13 * 5", "2026-12-05T00:00:00Z"),
            "2026-12-11T00:00:00Z"
        );
        assert_eq!(
            next("0 0 13 * 5", "2026-12-11T00:00:00Z"),
            "2026-12-13T00:00:00Z"
        );
        // One of them starts with `*`: both must hold (the 1st, 11th, 21st
        // or 31st when it is a Friday: 1 May 2026).
        assert_eq!(
            next("0 0 */10 * 5", "2026-01-02T00:00:00Z"),
            "2026-05-01T00:00:00Z"
        );
    }

    /// A polled job with a schedule is polled on it alone (no interval,
    /// no periodic full pass); a watched one keeps its watch.
    #[test]
    fn a_schedule_replaces_polling_and_adds_to_watching() {
        use crate::config::Config;
        use crate::source::Trigger;

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        let sink = |id: &str| {
            format!("[sync.dify]\nbase_url = \"https://dify.example.com/v1\"\ndataset_id = \"{id}\"\napi_key_env = \"K\"\n")
        };
        let web = "[sync.web]\nurls = [\"https://docs.example.com/a.md\"]\n";
        let text = format!(
            "[[sync]]\nname = \"web\"\nschedule = \"0 6 * * 1-5\"\n{web}{}\
             [[sync]]\nname = \"folder\"\nschedule = \"0 6 * * 1-5\"\n[sync.folder]\nroot = \"docs\"\n{}\
             [[sync]]\nname = \"polled\"\n{web}poll_interval_secs = 42\n{}",
            sink("a"),
            sink("b"),
            sink("c"),
        );
        let config = Config::parse(&dir.path().join("kbsync.toml"), &text).unwrap();
        let [web, folder, polled] = &config.jobs[..] else {
            panic!("three jobs")
        };
        assert_eq!(web.schedule.as_ref().unwrap().to_string(), "0 6 * * 1-5");
        assert_eq!(web.poll_every(), None);
        assert!(web.on_schedule_only());
        assert!(matches!(folder.source.trigger(), Trigger::Watch(_)));
        assert!(folder.schedule.is_some() && !folder.on_schedule_only());
        assert_eq!(polled.poll_every(), Some(Duration::from_secs(42)));
        assert!(polled.schedule.is_none() && !polled.on_schedule_only());
    }

    #[test]
    fn bad_expressions_say_which_field() {
        let why = |e: &str| Schedule::parse(e).unwrap_err();
        assert!(
            why("0 6 * *").contains("has 4 field(s)"),
            "{}",
            why("0 6 * *")
        );
        assert!(
            why("0 24 * * *").contains("hour field \"24\""),
            "{}",
            why("0 24 * * *")
        );
        assert!(why("61 * * * *").contains("minute field"));
        assert!(why("* * * * 1-8").contains("day of week field"));
        assert!(why("*/0 * * * *").contains("step"));
        assert!(why("5-1 * * * *").contains("backwards"));
        assert!(why("* * * foo *").contains("month field"));
        assert!(why("0 0 30 2 *").contains("never matches"));
    }
}
