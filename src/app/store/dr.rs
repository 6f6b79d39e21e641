//! Disaster recovery: the replication state of the database, the epochs of takeovers and the
//! history of roles.

use async_trait::async_trait;

use super::Result;
use crate::app::dr::model::{DrEvent, Epoch, Replication};

#[async_trait]
pub trait DrStore: Send + Sync {
    /// Whether the database is a replica, its timeline, WAL position and lags. SQLite is never
    /// a replica.
    async fn replication(&self) -> Result<Replication>;
    /// The newest takeover recorded; `None` before the first.
    async fn epoch(&self) -> Result<Option<Epoch>>;
    /// Records the takeover at `timeline` (the next epoch) unless one is recorded for it
    /// already; either way, the takeover of that timeline.
    async fn record_takeover(
        &self,
        timeline: i64,
        wal: Option<&str>,
        instance: &str,
    ) -> Result<Epoch>;
    async fn record_dr_event(&self, event: &DrEvent) -> Result<()>;
    /// The newest `limit` events, newest first.
    async fn dr_events(&self, limit: i64) -> Result<Vec<DrEvent>>;
}
