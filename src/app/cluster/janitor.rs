//! The `janitor` role's work: purge jobs past their retention, take back jobs whose claim lapsed
//! or whose instance went silent, and forget instances long gone. Only the role's holder does
//! it, so instances do not race each other for the same rows.

use std::sync::Arc;
use std::time::Duration;

use super::leases::Roles;
use crate::app::jobs::Jobs;
use crate::app::store::Store;
use crate::lifecycle::Shutdown;

pub fn spawn(
    jobs: Jobs,
    store: Arc<dyn Store>,
    roles: Roles,
    every: Duration,
    forget_after: Duration,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let forget_ms = i64::try_from(forget_after.as_millis()).unwrap_or(i64::MAX);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.draining() => return,
            }
            if roles.term("janitor").is_none() {
                continue;
            }
            jobs.sweep().await;
            match store.forget_instances(forget_ms).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    instances = n,
                    "forgot instances that have been silent for long"
                ),
                Err(e) => tracing::warn!(error = %e, "could not forget old instances"),
            }
        }
    })
}
