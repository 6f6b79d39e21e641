//! `Core`: what the worker threads, the probes and the admin listener share.

use crate::lb::config::Policy;
use crate::lb::metrics::Metrics;
use crate::lb::upstream::Upstreams;

/// State shared by the workers, the probes and the admin listener: atomics and short locks only
/// (see `upstream`), so no worker waits on another.
pub struct Core {
    pub upstreams: Upstreams,
    pub metrics: Metrics,
    pub policy: Policy,
    pub access_log: bool,
}
