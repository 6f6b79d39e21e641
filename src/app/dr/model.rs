//! The records of disaster recovery: what the database says about replication, the epochs of
//! takeovers, and the history of roles.

use serde::Serialize;

use crate::app::model::Millis;

/// The database's replication state, as it reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Replication {
    /// A replica (`pg_is_in_recovery()`): nothing may be written.
    pub in_recovery: bool,
    /// The WAL timeline (a promotion starts a new one); `None` where it cannot be read.
    pub timeline: Option<i64>,
    /// The current WAL position (a replica's: what it replayed).
    pub wal: Option<String>,
    /// On a replica: how far its replay is behind (0 when it has replayed all it received).
    pub lag_seconds: Option<f64>,
    /// On a replica: the primary it streams from (`host:port`).
    pub primary: Option<String>,
    /// On a primary: its replicas.
    pub replicas: Vec<ReplicaLag>,
}

/// A replica streaming from this primary (`pg_stat_replication`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicaLag {
    pub name: String,
    pub address: Option<String>,
    pub state: Option<String>,
    pub write_lag_seconds: Option<f64>,
    pub flush_lag_seconds: Option<f64>,
    pub replay_lag_seconds: Option<f64>,
}

impl Replication {
    /// The lag that matters here: a replica's own, or on a primary the largest replay lag of
    /// its replicas (`None` with none).
    pub fn lag(&self) -> Option<f64> {
        if self.in_recovery {
            return self.lag_seconds;
        }
        self.replicas
            .iter()
            .filter_map(|r| r.replay_lag_seconds)
            .reduce(f64::max)
    }
}

/// A takeover, as the database records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Epoch {
    pub epoch: i64,
    pub timeline: i64,
    pub wal: Option<String>,
    pub at: Millis,
    pub instance: Option<String>,
}

/// One entry of the role history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrEvent {
    pub id: String,
    pub at: Millis,
    pub instance: String,
    /// `standby`, `active`, `takeover` or `fenced`.
    pub event: String,
    pub timeline: Option<i64>,
    pub wal: Option<String>,
    pub epoch: Option<i64>,
    pub detail: Option<String>,
}
