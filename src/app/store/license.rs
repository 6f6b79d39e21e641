//! Licensing: the seats instances hold under a licence and the history of their changes.

use async_trait::async_trait;

use super::Result;
use crate::app::model::Millis;
use crate::license::model::{Activation, Seat, SeatEvent, SeatEventKind, SeatRequest};

#[async_trait]
pub trait LicenseStore: Send + Sync {
    /// Grants, keeps or refuses the requesting instance's seat, in one transaction that holds
    /// the pool's lock: seats unseen for `release_after_ms` are released first, then the
    /// instance keeps its seat, takes back its name's seat, or takes a free one while fewer than
    /// `capacity` are in use.
    async fn activate_seat(&self, request: &SeatRequest) -> Result<Activation>;
    /// Releases the seats held under instance name or id `instance` (in any pool), recording
    /// `kind` by `actor`; answers the seats released.
    async fn release_seats(
        &self,
        instance: &str,
        kind: SeatEventKind,
        actor: &str,
        detail: Option<&str>,
    ) -> Result<Vec<Seat>>;
    /// Every seat in use, by pool and name, and the database clock.
    async fn seats(&self) -> Result<(Millis, Vec<Seat>)>;
    /// The newest `limit` seat events, newest first.
    async fn seat_events(&self, limit: i64) -> Result<Vec<SeatEvent>>;
}
