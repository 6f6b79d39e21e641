//! When a failed attempt may be sent to another upstream: like nginx's `proxy_next_upstream
//! error timeout http_502 http_503 http_504`, but only where a second execution cannot happen.
//!
//! - Nothing reached the upstream (connect failed), or the upstream says it did nothing with the
//!   request (`Quire-Not-Processed`): any method, as long as the body can still be sent whole.
//! - The request reached the upstream and then failed, timed out or got 502/503/504: only
//!   idempotent methods whose body was small enough to keep.
//! - Never once a response byte went to the client: retries happen before the response head is
//!   passed on, so this holds by construction.

use hyper::http::Method;

use crate::lb::metrics::RetryReason;

/// How an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The TCP connection could not be opened: no byte was sent.
    Connect,
    /// 503 with `Quire-Not-Processed`: the instance refused before doing anything.
    NotProcessed,
    /// The connection failed after the request (or part of it) went out.
    Error,
    /// No response head within the first-byte timeout.
    Timeout,
    /// The upstream answered 502, 503 or 504.
    Status(u16),
}

impl Failure {
    pub fn reason(self) -> RetryReason {
        match self {
            Failure::Connect => RetryReason::Connect,
            Failure::NotProcessed => RetryReason::NotProcessed,
            Failure::Error => RetryReason::Error,
            Failure::Timeout => RetryReason::Timeout,
            Failure::Status(_) => RetryReason::Status,
        }
    }

    /// Whether the upstream may have acted on the request.
    pub fn maybe_processed(self) -> bool {
        !matches!(self, Failure::Connect | Failure::NotProcessed)
    }

    /// Whether this counts against the upstream for passive ejection. A draining instance is
    /// handled separately (it is marked down at once).
    pub fn counts_against_upstream(self) -> bool {
        !matches!(self, Failure::NotProcessed)
    }
}

/// Statuses that may be retried, as in `proxy_next_upstream http_502 http_503 http_504`.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 502..=504)
}

/// Methods that mean the same when sent twice (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether `failure` may be retried for a request with `method` whose body is (still)
/// `replayable`. Tries and the time budget are checked by the caller.
pub fn may_retry(failure: Failure, method: &Method, replayable: bool) -> bool {
    if !replayable {
        return false;
    }
    match failure {
        Failure::Connect | Failure::NotProcessed => true,
        Failure::Error | Failure::Timeout | Failure::Status(_) => is_idempotent(method),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_sent_retries_any_method() {
        assert!(may_retry(Failure::Connect, &Method::POST, true));
        assert!(may_retry(Failure::NotProcessed, &Method::PATCH, true));
    }

    #[test]
    fn after_sending_only_idempotent_methods_retry() {
        for f in [Failure::Error, Failure::Timeout, Failure::Status(502)] {
            assert!(may_retry(f, &Method::GET, true), "{f:?}");
            assert!(may_retry(f, &Method::PUT, true), "{f:?}");
            assert!(!may_retry(f, &Method::POST, true), "{f:?}");
            assert!(!may_retry(f, &Method::PATCH, true), "{f:?}");
        }
    }

    #[test]
    fn a_body_that_cannot_be_sent_again_stops_everything() {
        for f in [Failure::Connect, Failure::NotProcessed, Failure::Error] {
            assert!(!may_retry(f, &Method::GET, false), "{f:?}");
        }
    }

    #[test]
    fn retryable_statuses() {
        assert!([502, 503, 504].into_iter().all(is_retryable_status));
        assert!(![500, 501, 505, 429].into_iter().any(is_retryable_status));
    }
}
