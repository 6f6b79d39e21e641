//! The peer region's database, read to learn whether it took over after this one. One
//! connection at most, opened when needed; an unreachable peer changes nothing (the normal case
//! during a disaster).

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};

use super::model::Epoch;
use crate::app::config::DatabaseUrl;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What the peer's database says.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerState {
    pub writable: bool,
    /// Its newest takeover (`None` before its first).
    pub epoch: Option<Epoch>,
}

pub struct Peer {
    pool: PgPool,
}

impl Peer {
    /// A peer at `url`, not connected yet; `None` for a SQLite URL (no region has a peer then).
    pub fn new(url: &DatabaseUrl) -> Option<Peer> {
        let DatabaseUrl::Postgres(url) = url else {
            return None;
        };
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(CONNECT_TIMEOUT)
            .idle_timeout(Duration::from_secs(60))
            .connect_lazy(url)
            .ok()?;
        Some(Peer { pool })
    }

    /// The peer's state; the error says why it could not be read.
    pub async fn state(&self) -> Result<PeerState, String> {
        let writable: bool = sqlx::query_scalar("SELECT NOT pg_is_in_recovery()")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        // A peer that never took over may not have the table yet (an old version).
        let epoch = sqlx::query_as::<_, (i64, i64, Option<String>, i64, Option<String>)>(
            "SELECT epoch, timeline, wal, at, instance FROM dr_epochs ORDER BY epoch DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .ok()
        .flatten()
        .map(|(epoch, timeline, wal, at, instance)| Epoch {
            epoch,
            timeline,
            wal,
            at,
            instance,
        });
        Ok(PeerState { writable, epoch })
    }
}
