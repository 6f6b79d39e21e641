//! Sign-in rate limiting: failed attempts are counted per client address and per account within
//! a sliding window; past the limit, sign-ins are refused (429) until old failures age out.
//! Counting both keys stops one address guessing many accounts and many addresses guessing one.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Beyond this many tracked keys the oldest half is dropped, bounding memory under a spray.
const MAX_KEYS: usize = 100_000;

pub struct LoginLimiter {
    max_failures: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginLimiter {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        LoginLimiter {
            max_failures: max_failures.max(1) as usize,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds)` to wait when any key is over the limit.
    pub fn check(&self, keys: &[String]) -> Result<(), u64> {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let mut wait = None::<Duration>;
        for key in keys {
            let Some(times) = map.get_mut(key) else {
                continue;
            };
            prune(times, now, self.window);
            if times.len() >= self.max_failures
                && let Some(oldest) = times.front()
            {
                let left = self.window.saturating_sub(now - *oldest);
                wait = Some(wait.map_or(left, |w| w.max(left)));
            }
        }
        match wait {
            Some(w) => Err(w.as_secs().max(1)),
            None => Ok(()),
        }
    }

    pub fn record_failure(&self, keys: &[String]) {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > MAX_KEYS {
            let window = self.window;
            map.retain(|_, times| times.back().is_some_and(|t| now - *t < window / 2));
        }
        for key in keys {
            let times = map.entry(key.clone()).or_default();
            prune(times, now, self.window);
            times.push_back(now);
        }
    }

    /// A successful sign-in clears the account's failures (not the address's).
    pub fn clear(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

fn prune(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times.front().is_some_and(|t| now - *t >= window) {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_max_failures_until_the_window_passes() {
        let l = LoginLimiter::new(3, Duration::from_millis(200));
        let keys = vec!["ip:1".to_string(), "email:a".to_string()];
        for _ in 0..3 {
            assert!(l.check(&keys).is_ok());
            l.record_failure(&keys);
        }
        assert!(l.check(&keys).is_err());
        assert!(
            l.check(&["ip:2".to_string(), "email:a".to_string()])
                .is_err(),
            "the account is limited too"
        );
        assert!(
            l.check(&["ip:2".to_string(), "email:b".to_string()])
                .is_ok()
        );
        std::thread::sleep(Duration::from_millis(220));
        assert!(l.check(&keys).is_ok());
    }
}
