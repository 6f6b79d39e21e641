//! What the Agents page shows of a connection's queries: counts, the last error, and p50/p99 of
//! the recent query times.

use std::collections::VecDeque;
use std::time::Duration;

/// Query times kept for the percentiles.
const WINDOW: usize = 512;

#[derive(Debug, Default)]
pub struct Stats {
    pub queries: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    times: VecDeque<Duration>,
}

impl Stats {
    pub fn record(&mut self, took: Duration, error: Option<&str>) {
        self.queries += 1;
        if let Some(e) = error {
            self.errors += 1;
            self.last_error = Some(e.to_owned());
        }
        if self.times.len() == WINDOW {
            self.times.pop_front();
        }
        self.times.push_back(took);
    }

    /// The `p`th percentile (0–100) of the recent query times.
    pub fn percentile(&self, p: usize) -> Option<Duration> {
        if self.times.is_empty() {
            return None;
        }
        let mut sorted: Vec<Duration> = self.times.iter().copied().collect();
        sorted.sort_unstable();
        let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
        Some(sorted[rank - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_the_recent_window_and_error_counts() {
        let mut s = Stats::default();
        assert_eq!(s.percentile(50), None);
        for ms in 1..=100 {
            s.record(Duration::from_millis(ms), (ms == 7).then_some("boom"));
        }
        assert_eq!(s.percentile(50), Some(Duration::from_millis(50)));
        assert_eq!(s.percentile(99), Some(Duration::from_millis(99)));
        assert_eq!((s.queries, s.errors), (100, 1));
        assert_eq!(s.last_error.as_deref(), Some("boom"));
        for _ in 0..WINDOW {
            s.record(Duration::from_millis(500), None);
        }
        assert_eq!(s.percentile(50), Some(Duration::from_millis(500)));
    }
}
