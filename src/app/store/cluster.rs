//! Running as one of several instances: the registry of instances, leader leases (with their
//! history) and cache versions, all timed by the database clock.

use async_trait::async_trait;

use super::Result;
use crate::app::model::{Grant, Handover, InstanceInfo, InstanceRow, Lease, Millis};

/// Instances, leases and cache versions.
#[async_trait]
pub trait ClusterStore: Send + Sync {
    /// The database clock, in epoch milliseconds.
    async fn db_now(&self) -> Result<Millis>;
    /// Records (or refreshes) this process in the instance registry.
    async fn register_instance(&self, info: &InstanceInfo) -> Result<()>;
    /// Records a heartbeat; answers whether an admin asked this instance to drain, or `None`
    /// when the row is gone (forgotten) and the instance must register again.
    async fn heartbeat(&self, id: &str, draining: bool, nats: &str) -> Result<Option<bool>>;
    /// Marks an instance as stopped (it keeps its row until forgotten).
    async fn instance_stopped(&self, id: &str) -> Result<()>;
    /// Every registered instance and the database clock the ages are measured against.
    async fn instances(&self) -> Result<(Millis, Vec<InstanceRow>)>;
    /// Deletes instances silent for `older_than_ms`.
    async fn forget_instances(&self, older_than_ms: i64) -> Result<u64>;
    /// Asks an instance to drain (or to resume); false when there is no such instance.
    async fn request_drain(&self, id: &str, drain: bool) -> Result<bool>;
    /// Takes `role` if it is free or expired: one statement, a new term.
    async fn acquire_lease(&self, role: &str, holder: &str, lease_ms: i64)
    -> Result<Option<Grant>>;
    /// Extends a lease still held under `term`: one statement.
    async fn renew_lease(
        &self,
        role: &str,
        holder: &str,
        term: i64,
        lease_ms: i64,
    ) -> Result<Option<Grant>>;
    /// Gives a role up at once so another instance can take it.
    async fn release_lease(&self, role: &str, holder: &str, term: i64) -> Result<bool>;
    /// Every role's lease, by role.
    async fn leases(&self) -> Result<Vec<Lease>>;
    /// The most recent changes of holder, newest first.
    async fn lease_history(&self, limit: i64) -> Result<Vec<Handover>>;
    /// The version of a cache's contents (0 before the first change).
    async fn cache_version(&self, kind: &str) -> Result<i64>;
    /// Counts a change of a cache's contents; answers the new version.
    async fn bump_cache(&self, kind: &str) -> Result<i64>;
}
