//! What a verified licence allows on a given day. Days are calendar days in UTC, the same as
//! the claims' dates: a licence is valid from the start of `not_before` through the end of
//! `expires_at`, warns during its last `WARN_DAYS` days, and keeps licensing for `GRACE_DAYS`
//! days after it expired (so a renewal that arrives a little late breaks nothing), then stops.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

use super::key::License;

/// The last days of a licence that warn that it expires.
pub const WARN_DAYS: i32 = 30;
/// The days after expiry during which the licence still licenses, with a warning.
pub const GRACE_DAYS: i32 = 14;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// Before `not_before`: the licence does not license yet.
    NotYetValid,
    Valid,
    /// In its last `WARN_DAYS` days; `days` counts the days left including today (1 on the
    /// day it expires at midnight UTC).
    ExpiringSoon {
        days: u32,
    },
    /// Expired, still licensing; `days_left` counts the days of grace left including today
    /// (`GRACE_DAYS` on the day after expiry, 1 on the last day of grace).
    InGrace {
        days_left: u32,
    },
    /// Past the grace period: the licence no longer licenses.
    Expired,
}

impl Validity {
    /// Whether the licence grants seats in this state (with or without a warning).
    pub fn licenses(self) -> bool {
        matches!(
            self,
            Validity::Valid | Validity::ExpiringSoon { .. } | Validity::InGrace { .. }
        )
    }
}

impl License {
    /// The licence's state at `now`.
    pub fn state_at(&self, now: Timestamp) -> Validity {
        let claims = self.claims();
        state_on(claims.not_before, claims.expires_at, utc_day(now))
    }
}

pub fn utc_day(now: Timestamp) -> Date {
    now.to_zoned(TimeZone::UTC).date()
}

fn state_on(not_before: Date, expires_at: Option<Date>, today: Date) -> Validity {
    if today < not_before {
        return Validity::NotYetValid;
    }
    let Some(expires_at) = expires_at else {
        return Validity::Valid;
    };
    // Dates lie within ±9999 years, so a difference in days never overflows.
    let days_left = (expires_at - today).get_days() + 1;
    if days_left > WARN_DAYS {
        Validity::Valid
    } else if days_left >= 1 {
        Validity::ExpiringSoon {
            days: days_left.unsigned_abs(),
        }
    } else {
        let days_expired = 1 - days_left;
        if days_expired <= GRACE_DAYS {
            Validity::InGrace {
                days_left: (GRACE_DAYS - days_expired + 1).unsigned_abs(),
            }
        } else {
            Validity::Expired
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::signing::{test_claims, test_license};
    use jiff::civil::date;

    fn license(expires_at: Option<Date>) -> License {
        test_license(&crate::license::Claims {
            not_before: date(2026, 2, 1),
            expires_at,
            ..test_claims()
        })
    }

    fn at(ts: &str) -> Timestamp {
        ts.parse().unwrap()
    }

    #[test]
    fn not_before_starts_at_midnight_utc() {
        let l = license(None);
        assert_eq!(
            l.state_at(at("2026-01-31T23:59:59Z")),
            Validity::NotYetValid
        );
        assert_eq!(l.state_at(at("2026-02-01T00:00:00Z")), Validity::Valid);
        // The UTC day counts, not the local one.
        assert_eq!(
            l.state_at(at("2026-02-01T01:00:00+02:00")),
            Validity::NotYetValid
        );
    }

    #[test]
    fn without_expiry_valid_forever() {
        assert_eq!(
            license(None).state_at(at("2999-01-01T00:00:00Z")),
            Validity::Valid
        );
    }

    #[test]
    fn warning_window_and_grace_boundaries() {
        let l = license(Some(date(2027, 12, 31)));
        let state = |ts| l.state_at(at(ts));
        assert_eq!(state("2027-12-01T23:59:59Z"), Validity::Valid);
        assert_eq!(
            state("2027-12-02T00:00:00Z"),
            Validity::ExpiringSoon { days: 30 }
        );
        assert_eq!(
            state("2027-12-31T23:59:59Z"),
            Validity::ExpiringSoon { days: 1 }
        );
        assert_eq!(
            state("2028-01-01T00:00:00Z"),
            Validity::InGrace { days_left: 14 }
        );
        assert_eq!(
            state("2028-01-14T23:59:59Z"),
            Validity::InGrace { days_left: 1 }
        );
        assert_eq!(state("2028-01-15T00:00:00Z"), Validity::Expired);
    }

    #[test]
    fn which_states_license() {
        assert!(Validity::Valid.licenses());
        assert!(Validity::ExpiringSoon { days: 3 }.licenses());
        assert!(Validity::InGrace { days_left: 3 }.licenses());
        assert!(!Validity::Expired.licenses());
        assert!(!Validity::NotYetValid.licenses());
    }

    #[test]
    fn a_licence_valid_for_one_day_warns_at_once() {
        assert_eq!(
            state_on(date(2026, 3, 1), Some(date(2026, 3, 1)), date(2026, 3, 1)),
            Validity::ExpiringSoon { days: 1 }
        );
    }
}
