//! Seats as the store keeps them and activation asks for them.

use serde::Serialize;

/// Milliseconds since the Unix epoch, on the database clock.
type Millis = i64;

/// The pool of an instance without a (valid) key: Quire is free on one server.
pub const UNLICENSED_POOL: &str = "unlicensed";
/// Seats of [`UNLICENSED_POOL`].
pub const UNLICENSED_SEATS: u32 = 1;

/// One instance name licensed under one pool (a licence id, or [`UNLICENSED_POOL`]). The name,
/// not the process, holds the seat: a process restarted under the same name takes it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seat {
    pub pool: String,
    pub instance_name: String,
    /// The process holding it now.
    pub instance_id: String,
    pub taken_at: Millis,
    /// The holder's last activation; a seat unseen for `license.release_after` is released.
    pub seen_at: Millis,
}

/// A change of a seat, for the HA page's seat history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeatEvent {
    pub id: String,
    pub at: Millis,
    pub pool: String,
    pub instance_name: String,
    pub instance_id: String,
    /// See [`SeatEventKind`].
    pub event: String,
    /// Who did it: the instance that acted, or the admin's email.
    pub actor: String,
    pub detail: Option<String>,
}

/// What happened to a seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatEventKind {
    /// A free seat was granted.
    Taken,
    /// A new process under the seat's name took it over from a process gone or older.
    TakenBack,
    /// Its holder stopped gracefully.
    Stopped,
    /// Its holder was silent for `license.release_after`.
    Expired,
    /// An admin released it.
    Released,
}

impl SeatEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SeatEventKind::Taken => "taken",
            SeatEventKind::TakenBack => "taken back",
            SeatEventKind::Stopped => "stopped",
            SeatEventKind::Expired => "expired",
            SeatEventKind::Released => "released",
        }
    }
}

/// An instance asking for (or keeping) its seat.
#[derive(Debug, Clone)]
pub struct SeatRequest {
    pub pool: String,
    /// Seats the pool has: the licence's servers plus its allowance.
    pub capacity: u32,
    pub instance_id: String,
    pub instance_name: String,
    pub started_at: Millis,
    /// A holder whose heartbeat is older than this is gone (the registry's `stale_after`).
    pub alive_ms: i64,
    /// Seats unseen this long are released first (`license.release_after`).
    pub release_after_ms: i64,
}

/// What the database answered an activation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    pub outcome: Outcome,
    /// Seats of the pool in use after the activation.
    pub in_use: u32,
    /// Seats released as expired on the way.
    pub expired: Vec<Seat>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// This process held the seat already.
    Held,
    /// A free seat, granted now.
    Taken,
    /// The seat of this instance's name, taken over from the process that held it.
    TakenBack { from: String },
    /// Every seat is in use.
    Full,
    /// Another live, newer process with the same instance name holds the name's seat.
    NameInUse { holder: String },
}

impl Outcome {
    pub fn licensed(&self) -> bool {
        matches!(
            self,
            Outcome::Held | Outcome::Taken | Outcome::TakenBack { .. }
        )
    }
}
