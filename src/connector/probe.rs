//! Connection tests: connect as a query would, ask the server for its version, and time one
//! round trip. The connection is closed afterwards; nothing is kept. An HTTP source is asked for
//! its base URL; a CSV source's stored file is read.

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use super::Probed;
use super::settings::{ServerSettings, Settings, SqliteSettings, TlsMode};

/// How long a test waits for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects with `settings`; the error says why not, in the database's words. `file` is a CSV
/// source's uploaded file (`None`: none yet); other kinds have none.
pub async fn probe(settings: &Settings, file: Option<&[u8]>) -> Result<Probed, String> {
    let run = async {
        match settings {
            Settings::Postgres(s) => postgres(s).await,
            Settings::Mysql(s) => mysql(s).await,
            Settings::Sqlite(s) => sqlite(s).await,
            Settings::Http(s) => super::http::probe(s).await,
            Settings::Csv(s) => super::csv::probe(s, file),
            Settings::Agent(s) => Err(format!("\"{}\" is served by agents", s.source)),
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, run)
        .await
        .map_err(|_| format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()))?
}

/// Sets the fields of a server's settings on connect options of either server kind (their
/// builders share the method names, not a trait).
macro_rules! with_fields {
    ($options:expr, $s:expr) => {{
        let (mut o, s) = ($options, $s);
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
        o
    }};
}

/// Connects with `$options`, reads the server's version with `$version_sql` and times one round
/// trip; `Result<(String, Duration), String>`.
macro_rules! connect_and_time {
    ($options:expr, $version_sql:literal) => {
        async {
            let mut conn = $options.connect().await.map_err(|e| e.to_string())?;
            let version: String = sqlx::query_scalar($version_sql)
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
            Ok::<_, String>((version, round_trip))
        }
    };
}

/// The options a connection to a PostgreSQL source uses.
pub fn postgres_options(s: &ServerSettings) -> Result<PgConnectOptions, String> {
    let base = match &s.url {
        Some(url) => PgConnectOptions::from_str(url).map_err(|e| format!("url: {e}"))?,
        None => PgConnectOptions::new_without_pgpass(),
    };
    let ssl = match s.tls {
        TlsMode::Disable => PgSslMode::Disable,
        TlsMode::Prefer => PgSslMode::Prefer,
        TlsMode::Require => PgSslMode::Require,
    };
    Ok(with_fields!(base, s)
        .ssl_mode(ssl)
        .application_name("quire data source"))
}

/// The options a connection to a MySQL/MariaDB source uses.
pub fn mysql_options(s: &ServerSettings) -> Result<MySqlConnectOptions, String> {
    let base = match &s.url {
        // sqlx reads mysql:// URLs; MariaDB's own scheme means the same.
        Some(url) => MySqlConnectOptions::from_str(&url.replacen("mariadb://", "mysql://", 1))
            .map_err(|e| format!("url: {e}"))?,
        None => MySqlConnectOptions::new(),
    };
    let ssl = match s.tls {
        TlsMode::Disable => MySqlSslMode::Disabled,
        TlsMode::Prefer => MySqlSslMode::Preferred,
        TlsMode::Require => MySqlSslMode::Required,
    };
    Ok(with_fields!(base, s).ssl_mode(ssl))
}

async fn postgres(s: &ServerSettings) -> Result<Probed, String> {
    let (server_version, round_trip) =
        connect_and_time!(postgres_options(s)?, "SELECT version()").await?;
    Ok(Probed {
        server_version,
        round_trip,
    })
}

async fn mysql(s: &ServerSettings) -> Result<Probed, String> {
    let (version, round_trip) = connect_and_time!(mysql_options(s)?, "SELECT VERSION()").await?;
    // MariaDB says so in its version string; MySQL does not.
    let server_version = if version.contains("MariaDB") {
        version
    } else {
        format!("MySQL {version}")
    };
    Ok(Probed {
        server_version,
        round_trip,
    })
}

async fn sqlite(s: &SqliteSettings) -> Result<Probed, String> {
    // Read-only, and never created: a missing file is an error, not an empty database. A file
    // that is not a database opens fine; reading its schema (in the version query) tells.
    let options = SqliteConnectOptions::new()
        .filename(&s.path)
        .read_only(true)
        .create_if_missing(false);
    let (version, round_trip) = connect_and_time!(
        options,
        "SELECT sqlite_version() FROM (SELECT count(*) FROM sqlite_schema)"
    )
    .await
    .map_err(|e| format!("{}: {e}", s.path))?;
    Ok(Probed {
        server_version: format!("SQLite {version}"),
        round_trip,
    })
}
