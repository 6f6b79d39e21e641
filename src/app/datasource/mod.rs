//! Data sources: where reports fetch their data (PostgreSQL and MySQL/MariaDB servers, SQLite
//! files, JSON APIs over HTTP, uploaded CSV files, or any of those behind `quire agent`s). Admins
//! manage them; their secret settings are sealed with `encryption.key` and never shown again. A
//! connection test reports the server's version and the round-trip time. Queries run through
//! `crate::connector` (here, or on an agent) and give templates tables of JSON.

pub mod model;
pub mod pools;
pub mod service;

use crate::app::secrets::SealError;
use crate::app::store::StoreError;
use crate::connector::Invalid;

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

impl From<Invalid> for DataSourceError {
    fn from(e: Invalid) -> Self {
        DataSourceError::Invalid {
            field: e.field,
            message: e.message,
        }
    }
}
