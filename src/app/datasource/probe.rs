//! Connection tests: connect as a query would, ask the server for its version, and time one
//! round trip. The connection is closed afterwards; nothing is kept.

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use super::settings::{PostgresSettings, Settings, SqliteSettings, TlsMode};

/// How long a test waits for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a successful test learned.
#[derive(Debug, Clone)]
pub struct Probed {
    pub server_version: String,
    pub round_trip: Duration,
}

/// Connects with `settings`; the error says why not, in the database's words.
pub async fn probe(settings: &Settings) -> Result<Probed, String> {
    let run = async {
        match settings {
            Settings::Postgres(s) => postgres(s).await,
            Settings::Sqlite(s) => sqlite(s).await,
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, run)
        .await
        .map_err(|_| format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()))?
}

/// The options a connection to `s` uses.
pub fn postgres_options(s: &PostgresSettings) -> Result<PgConnectOptions, String> {
    let mut o = match &s.url {
        Some(url) => PgConnectOptions::from_str(url).map_err(|e| format!("url: {e}"))?,
        None => PgConnectOptions::new_without_pgpass(),
    };
    if let Some(host) = &s.host {
        o = o.host(host);
    }
    if let Some(port) = s.port {
        o = o.port(port);
    }
    if let Some(db) = &s.database {
        o = o.database(db);
    }
    if let Some(user) = &s.user {
        o = o.username(user);
    }
    if let Some(pw) = &s.password {
        o = o.password(pw);
    }
    let ssl = match s.tls {
        TlsMode::Disable => PgSslMode::Disable,
        TlsMode::Prefer => PgSslMode::Prefer,
        TlsMode::Require => PgSslMode::Require,
    };
    Ok(o.ssl_mode(ssl).application_name("quire data source"))
}

async fn postgres(s: &PostgresSettings) -> Result<Probed, String> {
    let mut conn = postgres_options(s)?
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    sqlx::query("SELECT 1")
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let round_trip = started.elapsed();
    let _ = conn.close().await;
    Ok(Probed {
        server_version: version,
        round_trip,
    })
}

async fn sqlite(s: &SqliteSettings) -> Result<Probed, String> {
    // Read-only, and never created: a missing file is an error, not an empty database.
    let mut conn = SqliteConnectOptions::new()
        .filename(&s.path)
        .read_only(true)
        .create_if_missing(false)
        .connect()
        .await
        .map_err(|e| format!("{}: {e}", s.path))?;
    let version: String = sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    // An empty or non-database file opens fine; reading its schema tells.
    sqlx::query("SELECT count(*) FROM sqlite_schema")
        .execute(&mut conn)
        .await
        .map_err(|e| format!("{}: {e}", s.path))?;
    let started = Instant::now();
    sqlx::query("SELECT 1")
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let round_trip = started.elapsed();
    let _ = conn.close().await;
    Ok(Probed {
        server_version: format!("SQLite {version}"),
        round_trip,
    })
}
