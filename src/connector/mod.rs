//! Connectors: how a query reaches the data it names, wherever it runs. The report service runs
//! them for its own data sources and `quire agent` for the sources on its host, so neither owns
//! them: PostgreSQL and MySQL/MariaDB servers, SQLite files, JSON APIs over HTTP and CSV files.
//! Each kind's settings are checked here (`settings`), every `:name` is bound by the driver
//! (`statement`), SQL runs in a read-only transaction with a statement timeout (`sql`), and every
//! query gives one shape of result within its limits (`table`).

pub mod csv;
pub mod http;
pub mod pool;
pub mod probe;
pub mod settings;
pub mod sql;
pub mod statement;
pub mod table;

use std::collections::BTreeMap;

use bytes::Bytes;

use pool::Pool;
use settings::Settings;
use statement::{Dialect, ParamRef, TextError};
use table::{Bound, Limits, QueryError, Table};

/// What a data source connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSourceKind {
    /// PostgreSQL, over the network.
    Postgres,
    /// MySQL 8 or MariaDB, over the network.
    Mysql,
    /// A SQLite file, opened read-only.
    Sqlite,
    /// A JSON API, fetched with GET.
    Http,
    /// A CSV file (uploaded to Quire, or a file on an agent's host).
    Csv,
    /// Served by `quire agent`s: the query runs on an agent next to the data.
    Agent,
}

impl DataSourceKind {
    pub const NAMES: &[&str] = &["postgres", "mysql", "sqlite", "http", "csv", "agent"];

    pub fn as_str(self) -> &'static str {
        match self {
            DataSourceKind::Postgres => "postgres",
            DataSourceKind::Mysql => "mysql",
            DataSourceKind::Sqlite => "sqlite",
            DataSourceKind::Http => "http",
            DataSourceKind::Csv => "csv",
            DataSourceKind::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<DataSourceKind> {
        match s {
            "postgres" => Some(DataSourceKind::Postgres),
            "mysql" => Some(DataSourceKind::Mysql),
            "sqlite" => Some(DataSourceKind::Sqlite),
            "http" => Some(DataSourceKind::Http),
            "csv" => Some(DataSourceKind::Csv),
            "agent" => Some(DataSourceKind::Agent),
            _ => None,
        }
    }
}

/// The longest name of a data source or an agent.
pub const MAX_NAME: usize = 100;

/// Whether `name` is a valid data source (or agent) name: 1 to 100 letters, digits, `-`, `_`
/// or `.`, so that queries and configurations can name it plainly.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// What a successful connection test learned.
#[derive(Debug, Clone)]
pub struct Probed {
    pub server_version: String,
    pub round_trip: std::time::Duration,
}

/// A setting that is not valid, named by its field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

/// Runs `text` against a source with `settings`: SQL on `pool`, HTTP as a request, CSV on
/// `file` (the caller reads it: Quire from its database, an agent from its disk). Each `:name`
/// is bound from `values`; a name without a value binds NULL (or is empty in an HTTP URL).
pub async fn query(
    settings: &Settings,
    pool: Option<&Pool>,
    file: Option<Bytes>,
    text: &str,
    values: &BTreeMap<String, Bound>,
    limits: &Limits,
) -> Result<Table, QueryError> {
    match settings {
        Settings::Http(s) => http::run(s, text, values, limits).await,
        Settings::Csv(s) => {
            let file = file.ok_or_else(|| QueryError::Unreachable("no file to read".into()))?;
            let (s, text, limits) = (s.clone(), text.to_owned(), *limits);
            blocking(move || csv::run(&file, &s, &text, &limits)).await
        }
        Settings::Agent(s) => Err(QueryError::Unreachable(format!(
            "\"{}\" is served by agents, not run here",
            s.source
        ))),
        Settings::Postgres(_) | Settings::Mysql(_) | Settings::Sqlite(_) => {
            let pool = pool.ok_or_else(|| QueryError::Unreachable("no connection pool".into()))?;
            query_sql(settings, pool, text, values, limits).await
        }
    }
}

/// Runs a SQL source's query on its pool, every `:name` bound.
async fn query_sql(
    settings: &Settings,
    pool: &Pool,
    text: &str,
    values: &BTreeMap<String, Bound>,
    limits: &Limits,
) -> Result<Table, QueryError> {
    let dialect = match pool {
        Pool::Postgres(_) => Dialect::Postgres,
        Pool::Mysql(_) => Dialect::Mysql,
        Pool::Sqlite(_) => Dialect::Sqlite,
    };
    let statement = statement::parse(text, dialect).map_err(|e| QueryError::Query {
        message: e.to_string(),
        position: None,
    })?;
    let binds: Vec<Bound> = statement
        .slots
        .iter()
        .map(|name| values.get(name).cloned().unwrap_or(Bound::Null))
        .collect();
    let limits = match settings {
        Settings::Postgres(s) | Settings::Mysql(s) => Limits {
            timeout: limits.timeout.min(s.statement_timeout.get()),
            ..*limits
        },
        _ => *limits,
    };
    sql::run(pool, &statement, &binds, &limits).await
}

/// Every `:name` a query's text uses, for checking them when the query is saved. A CSV query
/// names columns, not parameters. An agent's source may be any kind: its text is read as
/// PostgreSQL reads it (the widest of the SQL dialects here), and the agent binds it in its own.
pub fn references(kind: DataSourceKind, text: &str) -> Result<Vec<ParamRef>, TextError> {
    match kind {
        DataSourceKind::Postgres | DataSourceKind::Agent => {
            Ok(statement::parse(text, Dialect::Postgres)?.refs)
        }
        DataSourceKind::Mysql => Ok(statement::parse(text, Dialect::Mysql)?.refs),
        DataSourceKind::Sqlite => Ok(statement::parse(text, Dialect::Sqlite)?.refs),
        DataSourceKind::Http => Ok(http::parse(text)?.refs),
        DataSourceKind::Csv => Ok(Vec::new()),
    }
}

/// Runs CPU-bound work (reading a CSV file whole) off the async threads; a panic in it is the
/// caller's.
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(out) => out,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
