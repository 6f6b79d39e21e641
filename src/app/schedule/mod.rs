//! Scheduled reports: a cron expression in an IANA time zone, a template with parameters and
//! data, recipients. The `scheduler` role's holder turns due fire times into occurrences — one
//! row per (schedule, fire time), created in the same transaction that advances the schedule and
//! guarded by the role's term, so a change of leader can neither repeat nor skip a slot — and
//! moves rendered occurrences on to review or to the outbox.

pub mod burst;
pub mod cron;
pub mod scheduler;
pub mod service;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use sha2::{Digest, Sha256};

use super::model::{Millis, Misfire};
use cron::Cron;

/// Fire times later than this are missed (the misfire policy decides); sooner ones are simply
/// a little late (a leader change, a busy database) and run as usual.
pub const GRACE_MS: i64 = 60_000;

/// What to do about a due schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Fire times to run now, oldest first.
    pub fires: Vec<Millis>,
    /// Due fire times not run (misfire policy).
    pub skipped: i64,
    /// The next nominal fire time after now.
    pub next: Option<Millis>,
}

/// Most fire times looked at in one go: a schedule every second, down for a day, stays cheap.
const MAX_DUE: usize = 100_000;
/// Most missed fire times run under `Misfire::All`.
const MAX_CATCH_UP: usize = 1000;

/// Decides which due fire times (from `next` up to `now`) run, by lateness and misfire policy.
pub fn plan(
    cron: &Cron,
    tz: &TimeZone,
    next: Millis,
    now: Millis,
    misfire: Misfire,
    window_ms: i64,
    grace_ms: i64,
) -> Plan {
    let mut due = Vec::new();
    let mut upcoming = Some(next);
    while let Some(t) = upcoming.filter(|t| *t <= now) {
        if due.len() == MAX_DUE {
            // Skip ahead rather than walk an enormous backlog.
            upcoming = cron
                .next_after(ms_to_ts(now), tz)
                .map(|ts| ts.as_millisecond());
            break;
        }
        due.push(t);
        upcoming = cron
            .next_after(ms_to_ts(t), tz)
            .map(|ts| ts.as_millisecond());
    }
    let (missed, on_time): (Vec<Millis>, Vec<Millis>) =
        due.iter().partition(|t| now - **t > grace_ms);
    let mut fires: Vec<Millis> = match misfire {
        Misfire::Latest => missed
            .last()
            .filter(|t| now - **t <= window_ms)
            .into_iter()
            .copied()
            .collect(),
        Misfire::Skip => Vec::new(),
        Misfire::All => missed
            .iter()
            .rev()
            .take(MAX_CATCH_UP)
            .rev()
            .copied()
            .collect(),
    };
    fires.extend(on_time);
    Plan {
        skipped: due.len() as i64 - fires.len() as i64,
        fires,
        next: upcoming,
    }
}

fn ms_to_ts(ms: Millis) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A fixed delay within `jitter_ms` for one fire time of one schedule. Every instance computes
/// the same value, so whichever leads fires at the same moment.
pub fn jitter(schedule_id: &str, fire_at: Millis, jitter_ms: i64) -> Millis {
    if jitter_ms <= 0 {
        return 0;
    }
    let digest = Sha256::digest(format!("{schedule_id}/{fire_at}").as_bytes());
    let n = u64::from_le_bytes(digest[..8].try_into().unwrap_or([0; 8]));
    (n % jitter_ms as u64) as Millis
}

/// The slot a fire time stands for: from the fire time before it to it.
pub fn period(cron: &Cron, tz: &TimeZone, fire_at: Millis) -> Option<(Timestamp, Timestamp)> {
    let end = ms_to_ts(fire_at);
    Some((cron.previous_before(end, tz)?, end))
}

/// The next nominal fire time of a schedule after `after`, if it ever fires again.
pub fn next_fire(cron: &Cron, tz: &TimeZone, after: Millis) -> Option<Millis> {
    cron.next_after(ms_to_ts(after), tz)
        .map(|t| t.as_millisecond())
}

/// `{schedule}`, `{date}` (fire date in the schedule's zone) and `{time}` in subjects, bodies
/// and attachment names.
pub fn fill(text: &str, schedule: &str, fire_at: Millis, tz: &TimeZone) -> String {
    let when = ms_to_ts(fire_at).to_zoned(tz.clone());
    text.replace("{schedule}", schedule)
        .replace("{date}", &when.strftime("%Y-%m-%d").to_string())
        .replace("{time}", &when.strftime("%H:%M").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    fn every_minute() -> (Cron, TimeZone) {
        ("0 * * * * *".parse().unwrap(), TimeZone::UTC)
    }

    #[test]
    fn on_time_fires_run_and_the_schedule_moves_on() {
        let (c, tz) = every_minute();
        let p = plan(&c, &tz, 60 * S, 61 * S, Misfire::Latest, 3600 * S, GRACE_MS);
        assert_eq!(
            p,
            Plan {
                fires: vec![60 * S],
                skipped: 0,
                next: Some(120 * S)
            }
        );
    }

    #[test]
    fn after_downtime_only_the_latest_missed_runs_by_default() {
        let (c, tz) = every_minute();
        // Down from minute 1 to minute 30: 30 fire times due, the last ones within the grace.
        let now = 30 * 60 * S + 10 * S;
        let p = plan(&c, &tz, 60 * S, now, Misfire::Latest, 3600 * S, GRACE_MS);
        assert_eq!(
            p.fires,
            vec![29 * 60 * S, 30 * 60 * S],
            "the latest missed one, and the on-time one"
        );
        assert_eq!(p.skipped, 28);
        assert_eq!(p.next, Some(31 * 60 * S));
        // Outside the window, nothing missed runs.
        let p = plan(&c, &tz, 60 * S, now, Misfire::Latest, 60 * S, GRACE_MS);
        assert_eq!(p.fires, vec![30 * 60 * S]);
        let p = plan(&c, &tz, 60 * S, now, Misfire::Skip, 3600 * S, GRACE_MS);
        assert_eq!((p.fires.len(), p.skipped), (1, 29));
        let p = plan(&c, &tz, 60 * S, now, Misfire::All, 3600 * S, GRACE_MS);
        assert_eq!((p.fires.len(), p.skipped), (30, 0));
    }

    #[test]
    fn jitter_is_stable_and_bounded() {
        assert_eq!(jitter("s", 5, 0), 0);
        let a = jitter("s1", 60_000, 30_000);
        assert_eq!(a, jitter("s1", 60_000, 30_000));
        assert!((0..30_000).contains(&a));
        let spread: std::collections::HashSet<_> = (0..50)
            .map(|i| jitter(&format!("s{i}"), 0, 30_000) / 1000)
            .collect();
        assert!(spread.len() > 10, "schedules spread out: {spread:?}");
    }

    #[test]
    fn placeholders_use_the_schedule_zone() {
        let tz = TimeZone::get("America/New_York").unwrap();
        // 2026-11-23T03:30Z is the 22nd in New York.
        let t = "2026-11-23T03:30:00Z"
            .parse::<Timestamp>()
            .unwrap()
            .as_millisecond();
        assert_eq!(
            fill("{schedule} for {date} {time}", "Sales", t, &tz),
            "Sales for 2026-11-22 22:30"
        );
    }
}
