//! Data sources: where reports fetch their data (PostgreSQL servers and SQLite files so far).
//! Admins manage them; their secret settings are sealed with `encryption.key` and never shown
//! again. A connection test reports the server's version and the round-trip time.

pub mod model;
pub mod probe;
pub mod service;
pub mod settings;

use crate::app::secrets::SealError;
use crate::app::store::StoreError;

/// Why a data source cannot be saved or used.
#[derive(Debug, thiserror::Error)]
pub enum DataSourceError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Store(#[from] StoreError),
}
