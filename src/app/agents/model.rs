//! The records of the agents domain, as the store keeps them.

use serde::{Deserialize, Serialize};

use crate::agent::protocol::Served;
use crate::app::model::Millis;

/// An agent: created with its token, and the last connection an instance reported for it.
#[derive(Debug, Clone)]
pub struct Agent {
    pub id: String,
    pub name: String,
    pub created_at: Millis,
    pub created_by: Option<String>,
    /// The last connection; `None` before the agent first connected.
    pub connection: Option<Connection>,
    /// `now - last_seen` on the database clock when the row was read.
    pub silent_ms: Option<Millis>,
    pub in_flight: i64,
    pub queries: i64,
    pub errors: i64,
    pub p50_us: Option<i64>,
    pub p99_us: Option<i64>,
    pub last_error: Option<String>,
}

/// A connection as the instance holding it reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    /// Names this connection; later writes of an older one are ignored.
    pub session: String,
    /// The agent process (fresh per start).
    pub agent_id: String,
    /// The name the agent gave (its host's, unless configured).
    pub reported_name: String,
    pub version: String,
    pub protocol: i64,
    /// The instance holding the connection; `None` once it closed.
    pub instance_id: Option<String>,
    /// The agent's address as the instance saw it.
    pub address: String,
    pub connected_at: Millis,
    pub disconnected_at: Option<Millis>,
    pub last_seen: Option<Millis>,
    pub datasources: Vec<Served>,
}

/// What the instance holding a connection reports on each round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    pub in_flight: i64,
    pub queries: i64,
    pub errors: i64,
    pub p50_us: Option<i64>,
    pub p99_us: Option<i64>,
    pub last_error: Option<String>,
}

/// Whether an agent is connected now, as the Agents page says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Connected,
    /// Not connected; since when (`None`: never connected).
    Disconnected,
    Never,
}

impl Agent {
    /// Connected when an instance holds its connection and reported it within `live_ms` (an
    /// instance that died stops reporting).
    pub fn state(&self, live_ms: Millis) -> State {
        match &self.connection {
            None => State::Never,
            Some(c) if c.instance_id.is_some() && self.silent_ms.is_some_and(|s| s < live_ms) => {
                State::Connected
            }
            Some(_) => State::Disconnected,
        }
    }

    /// When the agent's current state began.
    pub fn since(&self, live_ms: Millis) -> Option<Millis> {
        let c = self.connection.as_ref()?;
        Some(match self.state(live_ms) {
            State::Connected => c.connected_at,
            _ => c.disconnected_at.or(c.last_seen).unwrap_or(c.connected_at),
        })
    }

    /// The instance holding the connection while connected.
    pub fn instance(&self, live_ms: Millis) -> Option<&str> {
        match self.state(live_ms) {
            State::Connected => self.connection.as_ref()?.instance_id.as_deref(),
            _ => None,
        }
    }

    /// Whether it is connected and serves `source`.
    pub fn serves(&self, source: &str, live_ms: Millis) -> bool {
        self.state(live_ms) == State::Connected
            && self
                .connection
                .as_ref()
                .is_some_and(|c| c.datasources.iter().any(|d| d.name == source))
    }
}
