//! Agents: `quire agent`s that run next to databases in networks the instances cannot reach,
//! connect out to an instance, and run the queries of data sources of kind `agent`. Admins
//! create an agent with its token (`service.rs`); an agent's connection (`session.rs`) is a
//! [`link::Link`] in this instance's [`hub::Hub`]; a query goes to the least busy agent serving
//! its source, here or on another instance over NATS (`remote.rs`); jobs that need agents are
//! claimed only where their agents are in reach (`reach.rs`).

pub mod hub;
pub mod link;
pub mod model;
pub mod reach;
pub mod remote;
pub mod service;
pub mod session;
pub mod stats;

use crate::app::store::StoreError;

/// Why an agent cannot be created, found or accepted.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0} not found")]
    NotFound(String),
    /// The token is unknown or was revoked.
    #[error("the agent token is not valid (revoked or mistyped)")]
    Unauthorized,
    #[error(transparent)]
    Store(#[from] StoreError),
}
