//! Sign-in rate limiting. Failed attempts are counted within a sliding window under three keys:
//!
//! - the client address: past the limit the address is refused (429), which stops one address
//!   guessing many accounts;
//! - the (account, address) pair: past the limit that address is refused for that account;
//! - the account alone: past the limit every sign-in for it is *slowed down*, never refused, so
//!   that failures from addresses an attacker controls cannot lock the owner out.
//!
//! An attempt is reserved before its password is verified and counts against every limit while
//! it is in flight, so parallel guesses cannot all pass the check before the first one fails.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Beyond this many tracked keys, keys with no attempt in flight and no recent failure are
/// dropped, bounding memory under a spray of addresses or emails.
const MAX_KEYS: usize = 100_000;

/// How long a sign-in for an account past its failure limit waits before being verified.
pub const ACCOUNT_SLOWDOWN: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Counter {
    failures: VecDeque<Instant>,
    in_flight: usize,
}

#[derive(Clone)]
pub struct LoginLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    max_failures: usize,
    window: Duration,
    counters: Mutex<HashMap<String, Counter>>,
}

/// A sign-in that was refused: the seconds to wait before trying again.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub retry_after_secs: u64,
}

/// A reserved sign-in attempt. It counts as in flight until [`Attempt::succeeded`] or
/// [`Attempt::failed`]; dropped without either (the client went away mid-check), it counts as a
/// failure, so disconnecting early does not make guesses free.
pub struct Attempt {
    limiter: LoginLimiter,
    keys: [String; 3],
    /// How long to wait before verifying (the account is past its limit).
    pub delay: Duration,
    done: bool,
}

impl LoginLimiter {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        LoginLimiter {
            inner: Arc::new(Inner {
                max_failures: max_failures.max(1) as usize,
                window,
                counters: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Reserves an attempt for `email` from `ip`, or refuses it when the address, or the address
    /// for this account, has as many failures and attempts in flight as the limit allows.
    pub fn begin(&self, ip: IpAddr, email: &str) -> Result<Attempt, Refused> {
        let keys = [
            format!("ip:{ip}"),
            format!("pair:{ip}|{email}"),
            format!("account:{email}"),
        ];
        let now = Instant::now();
        let inner = &self.inner;
        let mut map = inner.counters.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > MAX_KEYS {
            map.retain(|_, c| {
                prune(&mut c.failures, now, inner.window);
                c.in_flight > 0 || !c.failures.is_empty()
            });
        }
        let mut wait = None::<Duration>;
        for key in &keys[..2] {
            let Some(c) = map.get_mut(key) else {
                continue;
            };
            prune(&mut c.failures, now, inner.window);
            if c.failures.len() + c.in_flight >= inner.max_failures {
                let left = match c.failures.front() {
                    Some(oldest) if c.failures.len() >= inner.max_failures => {
                        inner.window.saturating_sub(now - *oldest)
                    }
                    // Refused because of attempts still in flight: they end within seconds.
                    _ => Duration::from_secs(1),
                };
                wait = Some(wait.map_or(left, |w| w.max(left)));
            }
        }
        if let Some(w) = wait {
            return Err(Refused {
                retry_after_secs: w.as_secs().max(1),
            });
        }
        let account = map.entry(keys[2].clone()).or_default();
        prune(&mut account.failures, now, inner.window);
        let delay = if account.failures.len() >= inner.max_failures {
            ACCOUNT_SLOWDOWN
        } else {
            Duration::ZERO
        };
        for key in &keys {
            map.entry(key.clone()).or_default().in_flight += 1;
        }
        Ok(Attempt {
            limiter: self.clone(),
            keys,
            delay,
            done: false,
        })
    }

    fn finish(&self, keys: &[String; 3], outcome: Outcome) {
        let now = Instant::now();
        let mut map = self
            .inner
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for key in keys {
            let c = map.entry(key.clone()).or_default();
            c.in_flight = c.in_flight.saturating_sub(1);
            if outcome == Outcome::Failed {
                prune(&mut c.failures, now, self.inner.window);
                c.failures.push_back(now);
            }
        }
        if outcome == Outcome::Succeeded {
            // The owner got in: this address's and the account's failures are forgiven; the
            // address's own count stays, so one address cannot reset it with a known account.
            for key in &keys[1..] {
                if let Some(c) = map.get_mut(key) {
                    c.failures.clear();
                }
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed,
    /// The password was never checked (the server was too busy): nothing is counted.
    NotChecked,
}

impl Attempt {
    pub fn succeeded(self) {
        self.end(Outcome::Succeeded);
    }

    pub fn failed(self) {
        self.end(Outcome::Failed);
    }

    pub fn not_checked(self) {
        self.end(Outcome::NotChecked);
    }

    fn end(mut self, outcome: Outcome) {
        self.done = true;
        self.limiter.finish(&self.keys, outcome);
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.done {
            self.limiter.finish(&self.keys, Outcome::Failed);
        }
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

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn an_address_is_refused_after_max_failures_until_the_window_passes() {
        let l = LoginLimiter::new(3, Duration::from_millis(200));
        for _ in 0..3 {
            l.begin(ip(1), "a@x").unwrap().failed();
        }
        assert!(l.begin(ip(1), "a@x").is_err());
        assert!(l.begin(ip(1), "b@x").is_err(), "the address is limited");
        std::thread::sleep(Duration::from_millis(220));
        assert!(l.begin(ip(1), "a@x").is_ok());
    }

    #[test]
    fn attempts_in_flight_count_against_the_limit() {
        let l = LoginLimiter::new(10, Duration::from_secs(60));
        let held: Vec<Attempt> = (0..40).filter_map(|_| l.begin(ip(1), "a@x").ok()).collect();
        assert_eq!(held.len(), 10, "at most the limit may be verified at once");
        let Err(refused) = l.begin(ip(1), "a@x") else {
            panic!("the 11th attempt in flight is refused")
        };
        assert_eq!(refused.retry_after_secs, 1);
        drop(held);
        assert!(
            l.begin(ip(1), "a@x").is_err(),
            "dropped attempts count as failures"
        );
    }

    #[test]
    fn failures_from_other_addresses_slow_the_account_but_never_lock_the_owner_out() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        for n in 0..10 {
            l.begin(ip(n), "root@x").unwrap().failed();
        }
        let owner = l
            .begin(ip(200), "root@x")
            .expect("a fresh address is never refused");
        assert_eq!(owner.delay, ACCOUNT_SLOWDOWN);
        owner.succeeded();
        let next = l.begin(ip(201), "root@x").unwrap();
        assert_eq!(next.delay, Duration::ZERO, "success forgives the account");
    }

    #[test]
    fn success_keeps_the_address_count() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        l.begin(ip(1), "a@x").unwrap().failed();
        l.begin(ip(1), "b@x").unwrap().failed();
        l.begin(ip(1), "mine@x").unwrap().succeeded();
        l.begin(ip(1), "c@x").unwrap().failed();
        assert!(l.begin(ip(1), "d@x").is_err());
    }
}
