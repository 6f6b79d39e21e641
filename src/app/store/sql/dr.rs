//! Disaster recovery: replication as PostgreSQL reports it (SQLite is never a replica), and the
//! takeovers and role history both backends keep alike, in one implementation.

use super::SqlStore;
use super::db::{Backend, Row, Sql};
use crate::app::dr::model::{DrEvent, Epoch, ReplicaLag, Replication};
use crate::app::store::{DrStore, Result};
use async_trait::async_trait;

const EPOCH_COLS: &str = "epoch, timeline, wal, at, instance";
const EVENT_COLS: &str = "id, at, instance, event, timeline, wal, epoch, detail";

fn epoch_row(r: &impl Row) -> Result<Epoch> {
    Ok(Epoch {
        epoch: r.try_get("epoch")?,
        timeline: r.try_get("timeline")?,
        wal: r.try_get("wal")?,
        at: r.try_get("at")?,
        instance: r.try_get("instance")?,
    })
}

fn event_row(r: &impl Row) -> Result<DrEvent> {
    Ok(DrEvent {
        id: r.try_get("id")?,
        at: r.try_get("at")?,
        instance: r.try_get("instance")?,
        event: r.try_get("event")?,
        timeline: r.try_get("timeline")?,
        wal: r.try_get("wal")?,
        epoch: r.try_get("epoch")?,
        detail: r.try_get("detail")?,
    })
}

/// A replica's lag is 0 when it has replayed everything it received (an idle primary sends
/// nothing, so the time since the last replayed transaction says nothing then).
const REPLICATION: &str = "SELECT pg_is_in_recovery() AS in_recovery, \
    CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text \
         ELSE pg_current_wal_lsn()::text END AS wal, \
    CASE WHEN NOT pg_is_in_recovery() THEN NULL \
         WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0.0::float8 \
         ELSE COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8, 0.0) END AS lag, \
    (SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver LIMIT 1) AS upstream, \
    CASE WHEN pg_is_in_recovery() THEN (SELECT received_tli::bigint FROM pg_stat_wal_receiver LIMIT 1) \
         ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint END AS timeline";

const REPLICAS: &str = "SELECT COALESCE(application_name, '') AS name, host(client_addr) AS address, \
    state, EXTRACT(EPOCH FROM write_lag)::float8 AS write_lag, \
    EXTRACT(EPOCH FROM flush_lag)::float8 AS flush_lag, \
    EXTRACT(EPOCH FROM replay_lag)::float8 AS replay_lag \
    FROM pg_stat_replication ORDER BY application_name";

#[async_trait]
impl<B: Backend> DrStore for SqlStore<B> {
    async fn replication(&self) -> Result<Replication> {
        // SQLite is never a replica.
        if B::DIALECT.name != "postgres" {
            return Ok(Replication::default());
        }
        let r = self.db.query(REPLICATION).fetch_one().await?;
        let in_recovery: bool = r.try_get("in_recovery")?;
        let replicas = if in_recovery {
            Vec::new()
        } else {
            self.db
                .query(REPLICAS)
                .fetch_all_as(|r| {
                    Ok(ReplicaLag {
                        name: r.try_get("name")?,
                        address: r.try_get("address")?,
                        state: r.try_get("state")?,
                        write_lag_seconds: r.try_get("write_lag")?,
                        flush_lag_seconds: r.try_get("flush_lag")?,
                        replay_lag_seconds: r.try_get("replay_lag")?,
                    })
                })
                .await?
        };
        Ok(Replication {
            in_recovery,
            timeline: r.try_get("timeline")?,
            wal: r.try_get("wal")?,
            lag_seconds: r.try_get("lag")?,
            primary: r.try_get("upstream")?,
            replicas,
        })
    }

    async fn epoch(&self) -> Result<Option<Epoch>> {
        static NEWEST: Sql = Sql::new(&[
            "SELECT ",
            EPOCH_COLS,
            " FROM dr_epochs ORDER BY epoch DESC LIMIT 1",
        ]);
        self.db.query(&NEWEST).fetch_optional_as(epoch_row).await
    }

    /// Instances turning active together race to record the takeover: the first insert wins,
    /// the others find its row (one epoch per timeline).
    async fn record_takeover(
        &self,
        timeline: i64,
        wal: Option<&str>,
        instance: &str,
    ) -> Result<Epoch> {
        static INSERT: Sql = Sql::new(&[
            "INSERT INTO dr_epochs (epoch, timeline, wal, at, instance) \
             SELECT COALESCE(MAX(epoch), 0) + 1, $1, $2, {now}, $3 FROM dr_epochs WHERE true \
             ON CONFLICT DO NOTHING",
        ]);
        static OF_TIMELINE: Sql =
            Sql::new(&["SELECT ", EPOCH_COLS, " FROM dr_epochs WHERE timeline = $1"]);
        for _ in 0..3 {
            if let Some(e) = self
                .db
                .query(&OF_TIMELINE)
                .bind(timeline)
                .fetch_optional_as(epoch_row)
                .await?
            {
                return Ok(e);
            }
            self.db
                .query(&INSERT)
                .bind(timeline)
                .bind(wal)
                .bind(instance)
                .execute()
                .await?;
        }
        self.db
            .query(&OF_TIMELINE)
            .bind(timeline)
            .fetch_one()
            .await
            .and_then(|r| epoch_row(&r))
    }

    async fn record_dr_event(&self, e: &DrEvent) -> Result<()> {
        static INSERT: Sql = Sql::new(&[
            "INSERT INTO dr_events (id, at, instance, event, timeline, wal, epoch, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        ]);
        self.db
            .query(&INSERT)
            .bind(&e.id)
            .bind(e.at)
            .bind(&e.instance)
            .bind(&e.event)
            .bind(e.timeline)
            .bind(&e.wal)
            .bind(e.epoch)
            .bind(&e.detail)
            .execute()
            .await?;
        Ok(())
    }

    async fn dr_events(&self, limit: i64) -> Result<Vec<DrEvent>> {
        static NEWEST: Sql = Sql::new(&[
            "SELECT ",
            EVENT_COLS,
            " FROM dr_events ORDER BY at DESC, id DESC LIMIT $1",
        ]);
        self.db
            .query(&NEWEST)
            .bind(limit)
            .fetch_all_as(event_row)
            .await
    }
}
