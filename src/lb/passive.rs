//! Passive ejection: an upstream whose real requests keep failing is taken out for a while,
//! without waiting for the next health probe. Repeated ejections last longer each time, so a
//! flapping instance costs fewer failed requests; a long enough good stretch forgets them.

use crate::lb::config::PassiveConfig;

/// Failure bookkeeping of one upstream. Times are milliseconds on the lb's clock.
#[derive(Debug, Default, Clone)]
pub struct Passive {
    failures: u32,
    first_failure: u64,
    /// Ejections in a row; the next one lasts `ejection_time × (ejections + 1)`.
    ejections: u32,
    /// When the last ejection ended.
    returned_at: u64,
}

impl Passive {
    /// Counts a failure; true when it completes a run that should eject the upstream.
    pub fn failure(&mut self, now: u64, cfg: &PassiveConfig) -> bool {
        if self.failures == 0 || now.saturating_sub(self.first_failure) > millis(cfg.window.get()) {
            self.failures = 0;
            self.first_failure = now;
        }
        self.failures += 1;
        cfg.failures > 0 && self.failures >= cfg.failures
    }

    /// Starts an ejection; returns when it ends.
    pub fn eject(&mut self, now: u64, cfg: &PassiveConfig) -> u64 {
        self.failures = 0;
        self.ejections = self.ejections.saturating_add(1);
        let base = millis(cfg.ejection_time.get());
        let length = base
            .saturating_mul(u64::from(self.ejections))
            .min(millis(cfg.max_ejection_time.get()));
        self.returned_at = now + length;
        self.returned_at
    }

    /// A run that ejects nothing (the upstream was the last one available) starts over.
    pub fn spare(&mut self) {
        self.failures = 0;
    }

    /// A success ends a failure run; after `max_ejection_time` without trouble, past ejections
    /// no longer lengthen the next one.
    pub fn success(&mut self, now: u64, cfg: &PassiveConfig) {
        self.failures = 0;
        if self.ejections > 0 && now >= self.returned_at + millis(cfg.max_ejection_time.get()) {
            self.ejections = 0;
        }
    }

    /// Nothing left for a success to clear.
    pub fn is_clean(&self) -> bool {
        self.failures == 0 && self.ejections == 0
    }

    pub fn ejections(&self) -> u32 {
        self.ejections
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

pub fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Span;

    fn cfg() -> PassiveConfig {
        PassiveConfig {
            failures: 3,
            window: Span::secs(10),
            ejection_time: Span::secs(10),
            max_ejection_time: Span::secs(25),
        }
    }

    #[test]
    fn consecutive_failures_within_the_window_eject() {
        let c = cfg();
        let mut p = Passive::default();
        assert!(!p.failure(0, &c));
        assert!(!p.failure(1_000, &c));
        assert!(p.failure(2_000, &c));
        assert_eq!(p.eject(2_000, &c), 12_000);
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not() {
        let c = cfg();
        let mut p = Passive::default();
        assert!(!p.failure(0, &c));
        assert!(!p.failure(5_000, &c));
        assert!(!p.failure(11_000, &c), "the run restarted at 11s");
        assert!(!p.failure(12_000, &c));
        assert!(p.failure(13_000, &c));
    }

    #[test]
    fn a_success_breaks_the_run() {
        let c = cfg();
        let mut p = Passive::default();
        p.failure(0, &c);
        p.failure(1, &c);
        p.success(2, &c);
        assert!(!p.failure(3, &c));
    }

    #[test]
    fn repeated_ejections_grow_up_to_the_cap_and_are_forgotten() {
        let c = cfg();
        let mut p = Passive::default();
        assert_eq!(p.eject(0, &c), 10_000);
        assert_eq!(p.eject(10_000, &c), 30_000);
        assert_eq!(p.eject(30_000, &c), 55_000, "capped at 25s");
        p.success(60_000, &c);
        assert_eq!(
            p.ejections(),
            3,
            "not yet max_ejection_time after the return"
        );
        p.success(80_000, &c);
        assert_eq!(p.ejections(), 0);
        assert!(p.is_clean());
    }

    #[test]
    fn zero_failures_turns_ejection_off() {
        let c = PassiveConfig {
            failures: 0,
            ..cfg()
        };
        let mut p = Passive::default();
        assert!((0..10).all(|t| !p.failure(t, &c)));
    }
}
