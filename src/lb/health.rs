//! An upstream's health as its probes decide it: `rise` / `fall` consecutive results flip it, the
//! first result decides at once. Pure: the probe loop that feeds it is `probe`.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// Not probed yet: takes requests, the first probe decides.
    Unknown = 0,
    Up = 1,
    Down = 2,
}

impl Health {
    pub fn from_u8(v: u8) -> Health {
        match v {
            1 => Health::Up,
            2 => Health::Down,
            _ => Health::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// Consecutive probe results and the health they add up to.
#[derive(Debug, Clone, Copy)]
pub struct Probes {
    health: Health,
    successes: u32,
    failures: u32,
}

impl Default for Probes {
    fn default() -> Self {
        Probes {
            health: Health::Unknown,
            successes: 0,
            failures: 0,
        }
    }
}

impl Probes {
    /// Counts one result; returns the new health when it changed. The first result decides at
    /// once, so a dead upstream is not offered traffic for `fall` intervals after a start.
    pub fn record(&mut self, healthy: bool, rise: u32, fall: u32) -> Option<Health> {
        if healthy {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let next = match self.health {
            Health::Unknown if healthy => Health::Up,
            Health::Unknown => Health::Down,
            Health::Up if self.failures >= fall => Health::Down,
            Health::Down if self.successes >= rise => Health::Up,
            current => current,
        };
        (next != self.health).then(|| {
            self.health = next;
            next
        })
    }

    /// Down now, whatever the count; `rise` good probes bring it back.
    pub fn force_down(&mut self) -> bool {
        self.successes = 0;
        let changed = self.health != Health::Down;
        self.health = Health::Down;
        changed
    }
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    Answered(u16),
    /// No answer: refused, reset, timed out.
    Unreachable(String),
}

impl ProbeOutcome {
    pub fn is_healthy(&self) -> bool {
        matches!(self, ProbeOutcome::Answered(200..=299))
    }
}

impl fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeOutcome::Answered(status) => write!(f, "answered {status}"),
            ProbeOutcome::Unreachable(e) => write!(f, "unreachable: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_probe_decides_then_rise_and_fall_count() {
        let mut p = Probes::default();
        assert_eq!(p.record(true, 2, 3), Some(Health::Up));
        assert_eq!(p.record(false, 2, 3), None);
        assert_eq!(p.record(false, 2, 3), None);
        assert_eq!(p.record(false, 2, 3), Some(Health::Down));
        assert_eq!(p.record(true, 2, 3), None);
        assert_eq!(
            p.record(false, 2, 3),
            None,
            "a failure resets the rise count"
        );
        assert_eq!(p.record(true, 2, 3), None);
        assert_eq!(p.record(true, 2, 3), Some(Health::Up));

        let mut p = Probes::default();
        assert_eq!(p.record(false, 2, 3), Some(Health::Down));
    }

    #[test]
    fn only_2xx_is_healthy() {
        assert!(ProbeOutcome::Answered(204).is_healthy());
        assert!(!ProbeOutcome::Answered(503).is_healthy());
        assert!(!ProbeOutcome::Unreachable("refused".into()).is_healthy());
    }
}
