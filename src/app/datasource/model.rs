//! The records of the data source domain, as the store keeps them.

use crate::app::model::Millis;
use crate::connector::DataSourceKind;

/// A data source as stored: its settings as JSON without secrets, the secret settings sealed.
#[derive(Debug, Clone)]
pub struct DataSource {
    pub id: String,
    pub name: String,
    pub kind: DataSourceKind,
    /// JSON object of the settings that are not secret.
    pub settings: String,
    /// The secret settings as a JSON object, sealed with `encryption.key`; `None` when none.
    pub secrets: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub created_by: Option<String>,
    /// When the last connection test ran, and its error (`None`: it succeeded).
    pub checked_at: Option<Millis>,
    pub last_error: Option<String>,
}

/// A data source as created or replaced.
#[derive(Debug, Clone)]
pub struct NewDataSource {
    pub name: String,
    pub kind: DataSourceKind,
    pub settings: String,
    pub secrets: Option<String>,
    pub created_by: Option<String>,
}
