//! The `janitor` role's work: purge jobs past their retention, take back jobs whose claim lapsed
//! or whose instance went silent, and forget instances long gone. Only the role's holder does
//! it, so instances do not race each other for the same rows.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::worker::RoleWorker;
use crate::app::jobs::Jobs;
use crate::app::model::{Fence, LeaderRole, millis};
use crate::app::store::Store;
use crate::lifecycle::Shutdown;

pub struct Janitor {
    pub jobs: Jobs,
    pub store: Arc<dyn Store>,
    /// How often the holder sweeps.
    pub every: Duration,
    /// Instances silent this long are forgotten.
    pub forget_after: Duration,
}

#[async_trait]
impl RoleWorker for Janitor {
    const ROLE: LeaderRole = LeaderRole::Janitor;

    fn every(&self) -> Duration {
        self.every
    }

    async fn round(&mut self, _fence: &Fence, _shutdown: &Shutdown) {
        self.jobs.sweep().await;
        let forget_ms = millis(self.forget_after);
        match self.store.forget_instances(forget_ms).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                instances = n,
                "forgot instances that have been silent for long"
            ),
            Err(e) => tracing::warn!(error = %e, "could not forget old instances"),
        }
    }
}
