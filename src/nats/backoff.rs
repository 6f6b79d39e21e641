//! How long to wait before restarting a nats-server that exited: short at first, so one crash
//! costs little, then doubling, so a server that cannot start does not spin.

use std::time::Duration;

const FIRST: Duration = Duration::from_millis(250);
const MAX: Duration = Duration::from_secs(30);
/// A child that ran this long was healthy enough that its exit starts the sequence over.
const STABLE: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST }
    }
}

impl Backoff {
    /// The delay before the next start, given how long the last run lasted.
    pub fn after_run(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= STABLE {
            self.next = FIRST;
        }
        let delay = self.next;
        self.next = (delay * 2).min(MAX);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_a_cap_and_resets_after_a_stable_run() {
        let mut b = Backoff::default();
        let quick = Duration::from_secs(1);
        let delays: Vec<u128> = (0..9).map(|_| b.after_run(quick).as_millis()).collect();
        assert_eq!(
            delays,
            [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]
        );
        assert_eq!(b.after_run(STABLE), FIRST);
        assert_eq!(b.after_run(quick), FIRST * 2);
    }
}
