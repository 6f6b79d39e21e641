//! Licence seats. Activation runs in one write transaction whose first statement writes the
//! pool's row: on PostgreSQL that locks the row until commit (also through a transaction-mode
//! pooler, since the lock lives in the transaction), on SQLite `BEGIN IMMEDIATE` holds the write
//! lock already. Either way activations of one pool run one after the other, so counting the
//! seats in use and taking one cannot interleave: no two instances take the last seat.

use async_trait::async_trait;

use super::SqlStore;
use super::db::{Backend, Row, Sql, Tx};
use crate::app::model::Millis;
use crate::app::store::{ClusterStore, LicenseStore, Result};
use crate::license::model::{Activation, Outcome, Seat, SeatEvent, SeatEventKind, SeatRequest};

const SEAT_COLS: &str = "pool, instance_name, instance_id, taken_at, seen_at";
const EVENT_COLS: &str = "id, at, pool, instance_name, instance_id, event, actor, detail";

fn seat_row(r: &impl Row) -> Result<Seat> {
    Ok(Seat {
        pool: r.try_get("pool")?,
        instance_name: r.try_get("instance_name")?,
        instance_id: r.try_get("instance_id")?,
        taken_at: r.try_get("taken_at")?,
        seen_at: r.try_get("seen_at")?,
    })
}

fn event_row(r: &impl Row) -> Result<SeatEvent> {
    Ok(SeatEvent {
        id: r.try_get("id")?,
        at: r.try_get("at")?,
        pool: r.try_get("pool")?,
        instance_name: r.try_get("instance_name")?,
        instance_id: r.try_get("instance_id")?,
        event: r.try_get("event")?,
        actor: r.try_get("actor")?,
        detail: r.try_get("detail")?,
    })
}

/// The seat of the requester's name, with what the registry knows of its holder.
struct Current {
    holder: String,
    /// The holder's start, heartbeat and stop; `None` when the registry forgot it.
    started_at: Option<Millis>,
    heartbeat_at: Option<Millis>,
    stopped_at: Option<Millis>,
}

impl Current {
    /// Whether the requester may take the seat over: its holder is gone (stopped, silent, or
    /// forgotten), or it is an older process under the same name (the newest process of a name
    /// holds its seat, so two of them never take it from each other in turn).
    fn yields_to(&self, r: &SeatRequest, now: Millis) -> bool {
        let (Some(started), Some(beat)) = (self.started_at, self.heartbeat_at) else {
            return true;
        };
        let alive = self.stopped_at.is_none() && now - beat <= r.alive_ms;
        !alive || (started, self.holder.as_str()) < (r.started_at, r.instance_id.as_str())
    }
}

async fn record<B: Backend>(
    tx: &mut Tx<B>,
    seat: &Seat,
    kind: SeatEventKind,
    actor: &str,
    detail: Option<&str>,
) -> Result<()> {
    static INSERT: Sql = Sql::new(&[
        "INSERT INTO license_events (id, at, pool, instance_name, instance_id, event, actor, \
         detail) VALUES ($1, {now}, $2, $3, $4, $5, $6, $7)",
    ]);
    tx.query(&INSERT)
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(&seat.pool)
        .bind(&seat.instance_name)
        .bind(&seat.instance_id)
        .bind(kind.as_str())
        .bind(actor)
        .bind(detail)
        .execute()
        .await?;
    Ok(())
}

/// Locks the pool (creating its row on first use); answers the database clock.
async fn lock_pool<B: Backend>(tx: &mut Tx<B>, pool: &str) -> Result<Millis> {
    static LOCK: Sql = Sql::new(&[
        "INSERT INTO license_pools (pool, touched_at) VALUES ($1, {now}) \
         ON CONFLICT (pool) DO UPDATE SET touched_at = excluded.touched_at RETURNING touched_at",
    ]);
    tx.query(&LOCK).bind(pool).fetch_one().await?.try_get(0)
}

/// Releases the pool's seats unseen since `now - release_after_ms`.
async fn expire<B: Backend>(tx: &mut Tx<B>, r: &SeatRequest, now: Millis) -> Result<Vec<Seat>> {
    static EXPIRE: Sql = Sql::new(&[
        "DELETE FROM license_seats WHERE pool = $1 AND seen_at < $2 RETURNING ",
        SEAT_COLS,
    ]);
    let expired = tx
        .query(&EXPIRE)
        .bind(&r.pool)
        .bind(now - r.release_after_ms)
        .fetch_all_as(seat_row)
        .await?;
    let detail = format!("silent for longer than {} s", r.release_after_ms / 1000);
    for seat in &expired {
        record(
            tx,
            seat,
            SeatEventKind::Expired,
            &r.instance_id,
            Some(&detail),
        )
        .await?;
    }
    Ok(expired)
}

async fn current<B: Backend>(tx: &mut Tx<B>, r: &SeatRequest) -> Result<Option<Current>> {
    static OF_NAME: Sql = Sql::new(&[
        "SELECT s.instance_id, i.started_at, i.heartbeat_at, i.stopped_at \
         FROM license_seats s LEFT JOIN instances i ON i.id = s.instance_id \
         WHERE s.pool = $1 AND s.instance_name = $2",
    ]);
    tx.query(&OF_NAME)
        .bind(&r.pool)
        .bind(&r.instance_name)
        .fetch_optional_as(|row| {
            Ok(Current {
                holder: row.try_get(0)?,
                started_at: row.try_get(1)?,
                heartbeat_at: row.try_get(2)?,
                stopped_at: row.try_get(3)?,
            })
        })
        .await
}

async fn in_use<B: Backend>(tx: &mut Tx<B>, pool: &str) -> Result<u32> {
    let n: i64 = tx
        .query("SELECT COUNT(*) FROM license_seats WHERE pool = $1")
        .bind(pool)
        .fetch_one()
        .await?
        .try_get(0)?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Writes the requester as the holder of its name's seat (a new seat when `take` is true).
async fn hold<B: Backend>(
    tx: &mut Tx<B>,
    r: &SeatRequest,
    now: Millis,
    take: bool,
) -> Result<Seat> {
    static INSERT: Sql = Sql::new(&[
        "INSERT INTO license_seats (pool, instance_name, instance_id, taken_at, seen_at) \
         VALUES ($1, $2, $3, $4, $4) RETURNING ",
        SEAT_COLS,
    ]);
    static UPDATE: Sql = Sql::new(&[
        "UPDATE license_seats SET instance_id = $3, seen_at = $4 \
         WHERE pool = $1 AND instance_name = $2 RETURNING ",
        SEAT_COLS,
    ]);
    tx.query(if take { &INSERT } else { &UPDATE })
        .bind(&r.pool)
        .bind(&r.instance_name)
        .bind(&r.instance_id)
        .bind(now)
        .fetch_one()
        .await
        .and_then(|row| seat_row(&row))
}

#[async_trait]
impl<B: Backend> LicenseStore for SqlStore<B> {
    async fn activate_seat(&self, r: &SeatRequest) -> Result<Activation> {
        let mut tx = self.db.begin_write().await?;
        let now = lock_pool(&mut tx, &r.pool).await?;
        let expired = expire(&mut tx, r, now).await?;
        let outcome = match current(&mut tx, r).await? {
            Some(c) if c.holder == r.instance_id => {
                hold(&mut tx, r, now, false).await?;
                Outcome::Held
            }
            Some(c) if c.yields_to(r, now) => {
                let seat = hold(&mut tx, r, now, false).await?;
                let detail = format!("from {}", c.holder);
                record(
                    &mut tx,
                    &seat,
                    SeatEventKind::TakenBack,
                    &r.instance_id,
                    Some(&detail),
                )
                .await?;
                Outcome::TakenBack { from: c.holder }
            }
            Some(c) => Outcome::NameInUse { holder: c.holder },
            None if in_use(&mut tx, &r.pool).await? < r.capacity => {
                let seat = hold(&mut tx, r, now, true).await?;
                record(&mut tx, &seat, SeatEventKind::Taken, &r.instance_id, None).await?;
                Outcome::Taken
            }
            None => Outcome::Full,
        };
        let in_use = in_use(&mut tx, &r.pool).await?;
        tx.commit().await?;
        Ok(Activation {
            outcome,
            in_use,
            expired,
        })
    }

    async fn release_seats(
        &self,
        instance: &str,
        kind: SeatEventKind,
        actor: &str,
        detail: Option<&str>,
    ) -> Result<Vec<Seat>> {
        static RELEASE: Sql = Sql::new(&[
            "DELETE FROM license_seats WHERE instance_name = $1 OR instance_id = $1 RETURNING ",
            SEAT_COLS,
        ]);
        let mut tx = self.db.begin_write().await?;
        let released = tx
            .query(&RELEASE)
            .bind(instance)
            .fetch_all_as(seat_row)
            .await?;
        for seat in &released {
            record(&mut tx, seat, kind, actor, detail).await?;
        }
        tx.commit().await?;
        Ok(released)
    }

    async fn seats(&self) -> Result<(Millis, Vec<Seat>)> {
        static ALL: Sql = Sql::new(&[
            "SELECT ",
            SEAT_COLS,
            " FROM license_seats ORDER BY pool, instance_name",
        ]);
        let now = self.db_now().await?;
        let seats = self.db.query(&ALL).fetch_all_as(seat_row).await?;
        Ok((now, seats))
    }

    async fn seat_events(&self, limit: i64) -> Result<Vec<SeatEvent>> {
        static NEWEST: Sql = Sql::new(&[
            "SELECT ",
            EVENT_COLS,
            " FROM license_events ORDER BY at DESC, id DESC LIMIT $1",
        ]);
        self.db
            .query(&NEWEST)
            .bind(limit)
            .fetch_all_as(event_row)
            .await
    }
}
