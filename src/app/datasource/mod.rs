//! Data sources: where reports fetch their data (PostgreSQL and MySQL/MariaDB servers, SQLite
//! files, JSON APIs over HTTP, uploaded CSV files). Admins manage them; their secret settings
//! are sealed with `encryption.key` and never shown again. A connection test reports the
//! server's version and the round-trip time. Queries written against them run in read-only
//! transactions with every parameter bound (or, for HTTP, every parameter encoded into the URL),
//! and give templates tables of JSON.

pub mod csv;
pub mod http;
pub mod model;
pub mod pools;
pub mod probe;
pub mod service;
pub mod settings;
pub mod sql;
pub mod statement;
pub mod table;

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
