//! The instance registry, leader leases (their history is written by triggers, so taking and
//! releasing a role stay single statements), fences, and cache versions.

use async_trait::async_trait;

use super::SqlStore;
use super::db::{Backend, Row, Sql, Tx};
use crate::app::model::{Fence, Grant, Handover, InstanceInfo, InstanceRow, Lease, Millis};
use crate::app::store::{ClusterStore, Result};

const INSTANCE_COLS: &str = "id, name, version, build, address, started_at, heartbeat_at, \
    key_fingerprint, license_fingerprint, license, schema_version, draining, drain_requested, \
    nats, stopped_at";

fn instance_row(r: &impl Row) -> Result<InstanceRow> {
    Ok(InstanceRow {
        info: InstanceInfo {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            version: r.try_get("version")?,
            build: r.try_get("build")?,
            address: r.try_get("address")?,
            started_at: r.try_get("started_at")?,
            key_fingerprint: r.try_get("key_fingerprint")?,
            license_fingerprint: r.try_get("license_fingerprint")?,
            license: r.try_get("license")?,
            schema_version: r.try_get("schema_version")?,
        },
        heartbeat_at: r.try_get("heartbeat_at")?,
        draining: r.try_get::<i64, _>("draining")? != 0,
        drain_requested: r.try_get::<i64, _>("drain_requested")? != 0,
        nats: r.try_get("nats")?,
        stopped_at: r.try_get("stopped_at")?,
    })
}

fn grant_row(r: &impl Row) -> Result<Grant> {
    Ok(Grant {
        term: r.try_get("term")?,
        expires_at: r.try_get("expires_at")?,
    })
}

/// Whether `fence` still holds, checked inside `tx`: a write guarded by it fails after a change of
/// leader. The lease row stays share-locked until the transaction ends (where the dialect locks
/// rows), so the lease cannot change hands between the check and the commit.
pub(super) async fn fenced<B: Backend>(tx: &mut Tx<B>, fence: &Fence) -> Result<bool> {
    static CHECK: Sql = Sql::new(&[
        "SELECT term FROM leases WHERE role = $1 AND holder = $2 AND term = $3 \
         AND expires_at > {now} {share_lock}",
    ]);
    let row = tx
        .query(&CHECK)
        .bind(fence.role)
        .bind(&fence.holder)
        .bind(fence.term)
        .fetch_optional()
        .await?;
    Ok(row.is_some())
}

#[async_trait]
impl<B: Backend> ClusterStore for SqlStore<B> {
    async fn db_now(&self) -> Result<Millis> {
        static NOW: Sql = Sql::new(&["SELECT {now}"]);
        let row = self.db.query(&NOW).fetch_one().await?;
        row.try_get(0)
    }

    async fn register_instance(&self, i: &InstanceInfo) -> Result<()> {
        static REGISTER: Sql = Sql::new(&[
            "INSERT INTO instances (id, name, version, build, address, started_at, heartbeat_at, \
             key_fingerprint, license_fingerprint, license, schema_version) \
             VALUES ($1, $2, $3, $4, $5, $6, {now}, $7, $8, $9, $10) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, \
             address = excluded.address, schema_version = excluded.schema_version, \
             stopped_at = NULL",
        ]);
        self.db
            .query(&REGISTER)
            .bind(&i.id)
            .bind(&i.name)
            .bind(&i.version)
            .bind(&i.build)
            .bind(&i.address)
            .bind(i.started_at)
            .bind(&i.key_fingerprint)
            .bind(&i.license_fingerprint)
            .bind(&i.license)
            .bind(i.schema_version)
            .execute()
            .await?;
        Ok(())
    }

    async fn heartbeat(&self, id: &str, draining: bool, nats: &str) -> Result<Option<bool>> {
        static BEAT: Sql = Sql::new(&[
            "UPDATE instances SET heartbeat_at = {now}, draining = $2, nats = $3 WHERE id = $1 \
             RETURNING drain_requested",
        ]);
        let row = self
            .db
            .query(&BEAT)
            .bind(id)
            .bind(i64::from(draining))
            .bind(nats)
            .fetch_optional()
            .await?;
        Ok(row
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?
            .map(|d| d != 0))
    }

    async fn instance_stopped(&self, id: &str) -> Result<()> {
        static STOPPED: Sql = Sql::new(&["UPDATE instances SET stopped_at = {now} WHERE id = $1"]);
        self.db.query(&STOPPED).bind(id).execute().await?;
        Ok(())
    }

    async fn instances(&self) -> Result<(Millis, Vec<InstanceRow>)> {
        let now = self.db_now().await?;
        static ALL: Sql = Sql::new(&[
            "SELECT ",
            INSTANCE_COLS,
            " FROM instances ORDER BY started_at, id",
        ]);
        let rows = self.db.query(&ALL).fetch_all().await?;
        Ok((now, rows.iter().map(instance_row).collect::<Result<_>>()?))
    }

    async fn forget_instances(&self, older_than_ms: i64) -> Result<u64> {
        static FORGET: Sql = Sql::new(&["DELETE FROM instances WHERE heartbeat_at < {now} - $1"]);
        self.db.query(&FORGET).bind(older_than_ms).execute().await
    }

    async fn request_drain(&self, id: &str, drain: bool) -> Result<bool> {
        let changed = self
            .db
            .query("UPDATE instances SET drain_requested = $2 WHERE id = $1")
            .bind(id)
            .bind(i64::from(drain))
            .execute()
            .await?;
        Ok(changed == 1)
    }

    async fn acquire_lease(
        &self,
        role: &str,
        holder: &str,
        lease_ms: i64,
    ) -> Result<Option<Grant>> {
        static ACQUIRE: Sql = Sql::new(&[
            "UPDATE leases SET holder = $2, term = term + 1, expires_at = {now} + $3, \
             acquired_at = {now} WHERE role = $1 AND (holder IS NULL OR expires_at <= {now}) \
             RETURNING term, expires_at",
        ]);
        self.db
            .query(&ACQUIRE)
            .bind(role)
            .bind(holder)
            .bind(lease_ms)
            .fetch_optional_as(grant_row)
            .await
    }

    async fn renew_lease(
        &self,
        role: &str,
        holder: &str,
        term: i64,
        lease_ms: i64,
    ) -> Result<Option<Grant>> {
        static RENEW: Sql = Sql::new(&[
            "UPDATE leases SET expires_at = {now} + $4 WHERE role = $1 AND holder = $2 \
             AND term = $3 AND expires_at > {now} RETURNING term, expires_at",
        ]);
        self.db
            .query(&RENEW)
            .bind(role)
            .bind(holder)
            .bind(term)
            .bind(lease_ms)
            .fetch_optional_as(grant_row)
            .await
    }

    async fn release_lease(&self, role: &str, holder: &str, term: i64) -> Result<bool> {
        static RELEASE: Sql = Sql::new(&[
            "UPDATE leases SET holder = NULL, expires_at = {now} WHERE role = $1 \
             AND holder = $2 AND term = $3 AND expires_at > {now}",
        ]);
        let released = self
            .db
            .query(&RELEASE)
            .bind(role)
            .bind(holder)
            .bind(term)
            .execute()
            .await?;
        Ok(released == 1)
    }

    async fn leases(&self) -> Result<Vec<Lease>> {
        let rows = self
            .db
            .query("SELECT role, holder, term, expires_at, acquired_at FROM leases ORDER BY role")
            .fetch_all()
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Lease {
                    role: r.try_get("role")?,
                    holder: r.try_get("holder")?,
                    term: r.try_get("term")?,
                    expires_at: r.try_get("expires_at")?,
                    acquired_at: r.try_get("acquired_at")?,
                })
            })
            .collect()
    }

    async fn lease_history(&self, limit: i64) -> Result<Vec<Handover>> {
        let rows = self
            .db
            .query(
                "SELECT role, term, holder, held_from, held_until, ended FROM lease_history \
                 ORDER BY held_from DESC, role LIMIT $1",
            )
            .bind(limit)
            .fetch_all()
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Handover {
                    role: r.try_get("role")?,
                    term: r.try_get("term")?,
                    holder: r.try_get("holder")?,
                    held_from: r.try_get("held_from")?,
                    held_until: r.try_get("held_until")?,
                    ended: r.try_get("ended")?,
                })
            })
            .collect()
    }

    async fn cache_version(&self, kind: &str) -> Result<i64> {
        let row = self
            .db
            .query("SELECT version FROM cache_versions WHERE kind = $1")
            .bind(kind)
            .fetch_optional()
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?.unwrap_or(0))
    }

    async fn bump_cache(&self, kind: &str) -> Result<i64> {
        let row = self
            .db
            .query(
                "INSERT INTO cache_versions (kind, version) VALUES ($1, 1) ON CONFLICT (kind) \
                 DO UPDATE SET version = cache_versions.version + 1 RETURNING version",
            )
            .bind(kind)
            .fetch_one()
            .await?;
        row.try_get(0)
    }
}
