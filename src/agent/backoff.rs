//! How long an agent waits before connecting again: exponential, from 1 s up to 60 s, with full
//! jitter (a random delay between zero and the bound), so the agents of a site that lost its
//! server do not all come back in the same second.

use std::time::Duration;

use rand::Rng;

const FIRST: Duration = Duration::from_secs(1);
const MAX: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Backoff {
    bound: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { bound: FIRST }
    }
}

impl Backoff {
    /// The delay before the next attempt; each call doubles the bound for the one after.
    pub fn next(&mut self) -> Duration {
        let bound = self.bound;
        self.bound = (bound * 2).min(MAX);
        let ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=ms))
    }

    /// A connection was welcomed: the next failure starts over from the first bound.
    pub fn reset(&mut self) {
        self.bound = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_a_doubling_bound_capped_at_a_minute() {
        let mut b = Backoff::default();
        let bounds = [1, 2, 4, 8, 16, 32, 60, 60, 60];
        for bound in bounds {
            let d = b.next();
            assert!(d <= Duration::from_secs(bound), "{d:?} > {bound}s");
        }
        b.reset();
        assert!(b.next() <= FIRST);
    }

    #[test]
    fn delays_are_jittered() {
        let delays: std::collections::BTreeSet<Duration> = (0..20)
            .map(|_| {
                let mut b = Backoff { bound: MAX };
                b.next()
            })
            .collect();
        assert!(delays.len() > 10, "{delays:?}");
    }
}
