//! The agent protocol: JSON text frames over one WebSocket that the agent opens to
//! `/api/v1/agents/connect` with `Authorization: Bearer <agent token>`.
//!
//! 1. The agent says [`AgentMessage::Hello`]: who it is, its protocol version and the sources it
//!    serves. The server answers [`ServerMessage::Welcome`], or [`ServerMessage::Refused`] and
//!    closes (a protocol it does not speak, for example).
//! 2. Both sides send [`AgentMessage::Heartbeat`] / [`ServerMessage::Heartbeat`] every
//!    `heartbeat_secs`; a side that hears nothing for [`SILENCE_FACTOR`] intervals closes.
//! 3. The server sends [`ServerMessage::Query`]s, any number at once, each with its own id. The
//!    agent answers each with [`AgentMessage::Rows`] chunks and one [`AgentMessage::Done`], or
//!    one [`AgentMessage::Failed`]. [`ServerMessage::Cancel`] ends a query early.
//! 4. A server that is going away sends [`ServerMessage::Reconnect`]: the agent connects again
//!    (through the load balancer, so to another instance) and lets the queries in flight on the
//!    old connection finish there before closing it.
//!
//! Versions: an agent says its [`PROTOCOL`]; a server speaks its own and the one before
//! ([`supported`]), so servers are upgraded first and agents after.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::connector::table::{Bound, Limits, Overflow, QueryError};

/// The protocol this build speaks.
pub const PROTOCOL: u32 = 1;

/// Heartbeats missed before a side gives the connection up.
pub const SILENCE_FACTOR: u32 = 3;

/// Whether a server of this build talks to an agent speaking `version`: this protocol and the
/// one before it.
pub fn supported(version: u32) -> bool {
    version == PROTOCOL || version + 1 == PROTOCOL
}

/// The oldest protocol a server of this build speaks.
pub fn oldest_supported() -> u32 {
    PROTOCOL.saturating_sub(1).max(1)
}

/// What an agent sends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    Hello(Hello),
    Heartbeat {
        in_flight: u32,
    },
    /// Rows of query `id`, in order; the first chunk carries the columns.
    Rows {
        id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        columns: Option<Vec<String>>,
        /// Each row's values in the order of the columns.
        rows: Vec<Vec<Value>>,
    },
    /// Query `id` gave all its rows; `truncated` as in a table.
    Done {
        id: u64,
        truncated: bool,
    },
    Failed {
        id: u64,
        error: QueryError,
    },
}

/// The first message of a connection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hello {
    pub protocol: u32,
    /// Fresh per agent process, so a restarted agent is told apart from its predecessor.
    pub agent_id: String,
    /// The host's name unless configured.
    pub name: String,
    /// Quire's version on the agent.
    pub version: String,
    pub datasources: Vec<Served>,
}

/// A source an agent serves, as it found it when it started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Served {
    pub name: String,
    /// `postgres`, `mysql`, `sqlite`, `http` or `csv`.
    pub kind: String,
    /// What a connection test learnt; `None` with `error` when the source could not be reached.
    #[serde(default)]
    pub server_version: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

/// What a server sends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Welcome {
        protocol: u32,
        /// The instance holding the connection.
        instance: String,
        heartbeat_secs: u32,
    },
    /// The connection is not accepted; the agent logs `message` and closes.
    Refused {
        message: String,
    },
    Heartbeat,
    Query(Query),
    Cancel {
        id: u64,
    },
    /// This instance is going away: connect again, finish what is in flight here, then close.
    Reconnect {
        reason: String,
    },
}

/// One query for an agent to run on one of its sources.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Query {
    pub id: u64,
    /// The name of the source on the agent.
    pub source: String,
    pub text: String,
    /// A value for each `:name` the text may use.
    pub values: BTreeMap<String, Bound>,
    pub limits: WireLimits,
    /// The template (or the editor, or a schedule) asking, for the agent's log.
    pub origin: String,
}

/// [`Limits`] as they travel.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireLimits {
    pub max_rows: usize,
    pub max_bytes: usize,
    pub timeout_ms: u64,
    pub overflow: Overflow,
}

impl From<&Limits> for WireLimits {
    fn from(l: &Limits) -> Self {
        WireLimits {
            max_rows: l.max_rows,
            max_bytes: l.max_bytes,
            timeout_ms: u64::try_from(l.timeout.as_millis()).unwrap_or(u64::MAX),
            overflow: l.overflow,
        }
    }
}

impl From<WireLimits> for Limits {
    fn from(l: WireLimits) -> Self {
        Limits {
            max_rows: l.max_rows,
            max_bytes: l.max_bytes,
            timeout: Duration::from_millis(l.timeout_ms),
            overflow: l.overflow,
        }
    }
}

/// Rows per [`AgentMessage::Rows`] chunk: large enough that framing costs little, small enough
/// that a chunk is a few hundred KiB at most for ordinary rows.
pub const CHUNK_ROWS: usize = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_protocol_is_supported_and_far_ones_are_not() {
        assert!(supported(PROTOCOL));
        assert!(!supported(PROTOCOL + 1));
        assert!(!supported(PROTOCOL + 2));
        assert!(oldest_supported() <= PROTOCOL);
    }

    #[test]
    fn messages_round_trip_with_typed_values_and_errors() {
        let q = ServerMessage::Query(Query {
            id: 7,
            source: "warehouse".into(),
            text: "select :d".into(),
            values: BTreeMap::from([
                ("d".into(), Bound::Date(jiff::civil::date(2026, 12, 1))),
                ("n".into(), Bound::Int(3)),
                ("x".into(), Bound::Null),
            ]),
            limits: WireLimits {
                max_rows: 10,
                max_bytes: 100,
                timeout_ms: 2000,
                overflow: Overflow::Fail,
            },
            origin: "sales".into(),
        });
        let text = serde_json::to_string(&q).unwrap();
        assert_eq!(serde_json::from_str::<ServerMessage>(&text).unwrap(), q);
        let f = AgentMessage::Failed {
            id: 7,
            error: QueryError::Query {
                message: "syntax".into(),
                position: Some(3),
            },
        };
        let text = serde_json::to_string(&f).unwrap();
        assert!(text.contains("\"type\":\"failed\""), "{text}");
        assert_eq!(serde_json::from_str::<AgentMessage>(&text).unwrap(), f);
    }
}
