//! Cron expressions with optional seconds (`[sec] min hour day-of-month month day-of-week`) and
//! `@hourly`-style shortcuts, evaluated in an IANA time zone.
//!
//! Fire times are wall-clock times in the schedule's zone, and daylight-saving changes are
//! handled the way people expect: a wall time that does not exist (the hour skipped in spring)
//! fires once, at the moment the clocks jump; a wall time that happens twice (the hour repeated in
//! autumn) fires once, the first time.

use std::fmt;
use std::str::FromStr;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, ToSpan};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error(
        "expected 5 fields (minute hour day month weekday) or 6 (with seconds first), found {0}"
    )]
    FieldCount(usize),
    #[error("{field}: \"{value}\" is not valid ({expected})")]
    Field {
        field: &'static str,
        value: String,
        expected: String,
    },
    #[error("unknown shortcut \"{0}\": use @yearly, @monthly, @weekly, @daily or @hourly")]
    Shortcut(String),
}

/// A parsed expression: one bit per allowed value of each field.
#[derive(Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    seconds: u64,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Whether day-of-month / day-of-week were restricted (not `*`); when both are, a day
    /// matching either one fires (classic cron).
    days_restricted: bool,
    weekdays_restricted: bool,
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({})", self.text)
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY: Field = Field {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const WEEKDAY: Field = Field {
    name: "day of week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl Field {
    fn error(&self, value: &str) -> CronError {
        let names = if self.names.is_empty() {
            String::new()
        } else {
            format!(" or names like {}", self.names[0].to_uppercase())
        };
        CronError::Field {
            field: self.name,
            value: value.to_owned(),
            expected: format!(
                "use *, numbers {}-{}{names}, ranges a-b, lists a,b and steps */n",
                self.min, self.max
            ),
        }
    }

    fn number(&self, s: &str) -> Result<u32, CronError> {
        let lower = s.to_ascii_lowercase();
        let n = match self.names.iter().position(|n| *n == lower) {
            Some(i) => i as u32 + self.min,
            None => s.parse().map_err(|_| self.error(s))?,
        };
        if n < self.min || n > self.max {
            Err(self.error(s))
        } else {
            Ok(n)
        }
    }

    /// The set of allowed values as bits, and whether the field was restricted.
    fn parse(&self, spec: &str) -> Result<(u64, bool), CronError> {
        let mut bits = 0u64;
        let restricted = spec != "*" && spec != "?";
        for part in spec.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => (
                    r,
                    s.parse::<u32>()
                        .ok()
                        .filter(|s| *s > 0)
                        .ok_or_else(|| self.error(part))?,
                ),
                None => (part, 1),
            };
            let (lo, hi) = match range {
                "*" | "?" => (self.min, self.max),
                r => match r.split_once('-') {
                    Some((a, b)) => (self.number(a)?, self.number(b)?),
                    // `5/15` means from 5 to the end in steps of 15.
                    None if step > 1 => (self.number(r)?, self.max),
                    None => {
                        let n = self.number(r)?;
                        (n, n)
                    }
                },
            };
            if lo > hi {
                return Err(self.error(part));
            }
            let mut v = lo;
            while v <= hi {
                bits |= 1 << v;
                v += step;
            }
        }
        Ok((bits, restricted))
    }
}

impl FromStr for Cron {
    type Err = CronError;

    fn from_str(s: &str) -> Result<Self, CronError> {
        let text = s.trim();
        let expanded = match text.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *".to_owned(),
            "@monthly" => "0 0 1 * *".to_owned(),
            "@weekly" => "0 0 * * 0".to_owned(),
            "@daily" | "@midnight" => "0 0 * * *".to_owned(),
            "@hourly" => "0 * * * *".to_owned(),
            other if other.starts_with('@') => return Err(CronError::Shortcut(text.to_owned())),
            _ => text.to_owned(),
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (sec, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => return Err(CronError::FieldCount(n)),
        };
        let (seconds, _) = SECOND.parse(sec)?;
        let (minutes, _) = MINUTE.parse(rest[0])?;
        let (hours, _) = HOUR.parse(rest[1])?;
        let (days, days_restricted) = DAY.parse(rest[2])?;
        let (months, _) = MONTH.parse(rest[3])?;
        let (mut weekdays, weekdays_restricted) = WEEKDAY.parse(rest[4])?;
        // 7 is Sunday too.
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & 0x7f;
        }
        Ok(Cron {
            text: text.to_owned(),
            seconds,
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: weekdays as u8,
            days_restricted,
            weekdays_restricted,
        })
    }
}

impl Cron {
    fn day_matches(&self, d: Date) -> bool {
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            _ => dom && dow,
        }
    }

    /// The first fire time strictly after `after`, within the next five years.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = tz.to_datetime(after);
        let limit = start.year().saturating_add(5);
        let mut c = start
            .with()
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.second())
            .ok()?;
        while c.year() <= limit {
            if self.months & (1 << c.month()) == 0 {
                c = first_of_next_month(c)?;
            } else if !self.day_matches(c.date()) {
                c = c.date().tomorrow().ok()?.to_datetime(Time::midnight());
            } else if self.hours & (1 << c.hour()) == 0 {
                c = c
                    .with()
                    .minute(0)
                    .second(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
            } else if self.minutes & (1 << c.minute()) == 0 {
                c = c
                    .with()
                    .second(0)
                    .build()
                    .ok()?
                    .checked_add(1.minute())
                    .ok()?;
            } else if self.seconds & (1 << c.second()) == 0 {
                c = c.checked_add(1.second()).ok()?;
            } else {
                let fire = instant(c, tz)?;
                if fire > after {
                    return Some(fire);
                }
                // A skipped wall time already fired at the jump, or a repeated one the first time.
                c = c.checked_add(1.second()).ok()?;
            }
        }
        None
    }

    /// The last fire time strictly before `before`, within the last five years: found by
    /// looking back further and further for a time whose next fire comes before `before`, then
    /// walking forward to the last of them.
    pub fn previous_before(&self, before: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let mut back = 1.minute();
        let mut t = loop {
            let from = before.checked_sub(back).ok()?;
            match self.next_after(from, tz) {
                Some(t) if t < before => break t,
                _ if back.get_minutes() > 5 * 366 * 24 * 60 => return None,
                _ => back = back.checked_mul(2).ok()?,
            }
        };
        while let Some(next) = self.next_after(t, tz).filter(|n| *n < before) {
            t = next;
        }
        Some(t)
    }

    /// The next `n` fire times after `after`.
    pub fn upcoming(&self, after: Timestamp, tz: &TimeZone, n: usize) -> Vec<Timestamp> {
        let mut out = Vec::with_capacity(n);
        let mut t = after;
        while out.len() < n {
            match self.next_after(t, tz) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }
}

fn first_of_next_month(c: DateTime) -> Option<DateTime> {
    let first = c.date().first_of_month().checked_add(1.month()).ok()?;
    Some(first.to_datetime(Time::midnight()))
}

/// The instant of a wall time: in a spring-forward gap, the moment the clocks jump (the first
/// valid time after it); in an autumn fold, the first of the two.
fn instant(c: DateTime, tz: &TimeZone) -> Option<Timestamp> {
    let ambiguous = tz.to_ambiguous_zoned(c);
    match ambiguous.offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(c).ok(),
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(c).ok(),
        AmbiguousOffset::Gap { after, .. } => {
            // Interpreted with the pre-gap offset's counterpart, the wall time lands before the
            // jump; the transition that follows is the jump itself.
            let early = after.to_timestamp(c).ok()?;
            tz.following(early).next().map(|t| t.timestamp())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str, tz: &str) -> Timestamp {
        s.parse::<DateTime>()
            .unwrap()
            .to_zoned(TimeZone::get(tz).unwrap())
            .unwrap()
            .timestamp()
    }

    fn wall(t: Timestamp, tz: &str) -> String {
        t.to_zoned(TimeZone::get(tz).unwrap())
            .strftime("%Y-%m-%d %H:%M:%S %Z")
            .to_string()
    }

    fn next_n(expr: &str, from: &str, tz: &str, n: usize) -> Vec<String> {
        let cron: Cron = expr.parse().unwrap();
        let zone = TimeZone::get(tz).unwrap();
        cron.upcoming(at(from, tz), &zone, n)
            .into_iter()
            .map(|t| wall(t, tz))
            .collect()
    }

    #[test]
    fn the_previous_fire_time_is_the_slot_before() {
        let prev = |expr: &str, before: &str, tz: &str| {
            let cron: Cron = expr.parse().unwrap();
            let zone = TimeZone::get(tz).unwrap();
            wall(cron.previous_before(at(before, tz), &zone).unwrap(), tz)
        };
        // Weekly on Monday 06:00: the Monday before.
        assert_eq!(
            prev("0 0 6 * * MON", "2026-11-30T06:00:00", "Europe/Berlin"),
            "2026-11-23 06:00:00 CET"
        );
        // Monthly on the 1st: the month before, across a DST change.
        assert_eq!(
            prev("0 0 0 1 * *", "2026-11-01T00:00:00", "Europe/Berlin"),
            "2026-10-01 00:00:00 CEST"
        );
        assert_eq!(
            prev("0 */15 * * * *", "2026-11-30T06:00:00", "UTC"),
            "2026-11-30 05:45:00 UTC"
        );
    }

    #[test]
    fn parses_fields_steps_ranges_names_and_shortcuts() {
        assert_eq!(
            next_n("*/20 * * * * *", "2026-03-01T10:00:05", "UTC", 3),
            vec![
                "2026-03-01 10:00:20 UTC",
                "2026-03-01 10:00:40 UTC",
                "2026-03-01 10:01:00 UTC"
            ]
        );
        assert_eq!(
            next_n("0 9 * * MON-FRI", "2026-11-27T10:00:00", "UTC", 2),
            vec!["2026-11-30 09:00:00 UTC", "2026-12-01 09:00:00 UTC"]
        );
        assert_eq!(
            next_n("30 2 1 jan,jul *", "2026-02-01T00:00:00", "UTC", 1),
            vec!["2026-07-01 02:30:00 UTC"]
        );
        assert_eq!(
            next_n("@daily", "2026-02-01T12:00:00", "UTC", 1),
            vec!["2026-02-02 00:00:00 UTC"]
        );
        assert_eq!(
            next_n("0 0 * * 7", "2026-11-23T00:00:00", "UTC", 1),
            vec!["2026-11-29 00:00:00 UTC"],
            "7 is Sunday"
        );
        // Day of month and day of week both restricted: either matches.
        assert_eq!(
            next_n("0 0 13 * FRI", "2026-11-01T00:00:00", "UTC", 3).len(),
            3
        );
        assert_eq!(
            next_n("0 0 13 * FRI", "2026-11-01T00:00:00", "UTC", 1),
            vec!["2026-11-06 00:00:00 UTC"]
        );
        assert_eq!(
            next_n("0 0 29 2 *", "2026-03-01T00:00:00", "UTC", 1),
            vec!["2028-02-29 00:00:00 UTC"]
        );
        assert!(
            next_n("0 0 31 2 *", "2026-03-01T00:00:00", "UTC", 1).is_empty(),
            "never fires"
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            "* * *".parse::<Cron>().unwrap_err(),
            CronError::FieldCount(3)
        );
        let e = "0 25 * * *".parse::<Cron>().unwrap_err().to_string();
        assert!(
            e.starts_with("hour: \"25\" is not valid (use *, numbers 0-23"),
            "{e}"
        );
        assert!(
            "0 * * * MOO"
                .parse::<Cron>()
                .unwrap_err()
                .to_string()
                .starts_with("day of week")
        );
        assert!("*/0 * * * *".parse::<Cron>().is_err());
        assert!("@fortnightly".parse::<Cron>().is_err());
    }

    #[test]
    fn berlin_spring_forward_fires_once_when_the_clocks_jump() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
        assert_eq!(
            next_n("30 2 * * *", "2026-03-28T03:00:00", "Europe/Berlin", 3),
            vec![
                "2026-03-29 03:00:00 CEST",
                "2026-03-30 02:30:00 CEST",
                "2026-03-31 02:30:00 CEST"
            ]
        );
        // Every 15 minutes: the skipped hour collapses into one firing at the jump.
        assert_eq!(
            next_n("*/15 * * * *", "2026-03-29T01:40:00", "Europe/Berlin", 4),
            vec![
                "2026-03-29 01:45:00 CET",
                "2026-03-29 03:00:00 CEST",
                "2026-03-29 03:15:00 CEST",
                "2026-03-29 03:30:00 CEST"
            ]
        );
    }

    #[test]
    fn berlin_fall_back_fires_the_repeated_hour_once() {
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        let fires = next_n("30 2 * * *", "2026-10-24T12:00:00", "Europe/Berlin", 3);
        assert_eq!(
            fires,
            vec![
                "2026-10-25 02:30:00 CEST",
                "2026-10-26 02:30:00 CET",
                "2026-10-27 02:30:00 CET"
            ]
        );
        let hourly = next_n("0 * * * *", "2026-10-25T01:30:00", "Europe/Berlin", 3);
        assert_eq!(
            hourly,
            vec![
                "2026-10-25 02:00:00 CEST",
                "2026-10-25 03:00:00 CET",
                "2026-10-25 04:00:00 CET"
            ]
        );
    }

    #[test]
    fn new_york_transitions() {
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT. 2026-11-01: 02:00 EDT falls back to 01:00 EST.
        assert_eq!(
            next_n("30 2 * * *", "2026-03-07T12:00:00", "America/New_York", 2),
            vec!["2026-03-08 03:00:00 EDT", "2026-03-09 02:30:00 EDT"]
        );
        assert_eq!(
            next_n("30 1 * * *", "2026-10-31T12:00:00", "America/New_York", 2),
            vec!["2026-11-01 01:30:00 EDT", "2026-11-02 01:30:00 EST"]
        );
        // Starting inside the repeated hour (its second pass) does not fire it again.
        let second_pass = at("2026-11-01T01:10:00", "America/New_York") + 1.hour();
        let cron: Cron = "30 1 * * *".parse().unwrap();
        let next = cron
            .next_after(second_pass, &TimeZone::get("America/New_York").unwrap())
            .unwrap();
        assert_eq!(wall(next, "America/New_York"), "2026-11-02 01:30:00 EST");
    }
}
