//! The records of the data source domain, as the store keeps them.

use crate::app::model::Millis;

/// What a data source connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSourceKind {
    /// PostgreSQL, over the network.
    Postgres,
    /// MySQL 8 or MariaDB, over the network.
    Mysql,
    /// A SQLite file on the server, opened read-only.
    Sqlite,
    /// A JSON API, fetched with GET.
    Http,
    /// A CSV file uploaded to Quire and kept in its database.
    Csv,
}

impl DataSourceKind {
    pub const NAMES: &[&str] = &["postgres", "mysql", "sqlite", "http", "csv"];

    pub fn as_str(self) -> &'static str {
        match self {
            DataSourceKind::Postgres => "postgres",
            DataSourceKind::Mysql => "mysql",
            DataSourceKind::Sqlite => "sqlite",
            DataSourceKind::Http => "http",
            DataSourceKind::Csv => "csv",
        }
    }

    pub fn parse(s: &str) -> Option<DataSourceKind> {
        match s {
            "postgres" => Some(DataSourceKind::Postgres),
            "mysql" => Some(DataSourceKind::Mysql),
            "sqlite" => Some(DataSourceKind::Sqlite),
            "http" => Some(DataSourceKind::Http),
            "csv" => Some(DataSourceKind::Csv),
            _ => None,
        }
    }
}

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

/// What a successful connection test learned.
#[derive(Debug, Clone)]
pub struct Probed {
    pub server_version: String,
    pub round_trip: std::time::Duration,
}
