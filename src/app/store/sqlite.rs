//! The embedded SQLite backend: one file in `data_dir`, WAL journal so readers never wait for
//! the writer, and `BEGIN IMMEDIATE` for writes.
//!
//! The database holds password hashes, sessions and sealed credentials, so its files are private
//! whatever the umask: Quire creates the directory 0750 and the database file 0640 itself before
//! SQLite opens it (SQLite would create it 0644 minus the umask), and SQLite gives the `-wal` and
//! `-shm` files the database file's mode.

use std::fs::{OpenOptions, Permissions};
use std::future::Future;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use futures_util::TryFutureExt;
use sqlx::Sqlite;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use super::sql::SqlStore;
use super::sql::db::{Backend, Col, Dialect, Param, Row, SqlxQuery, Value};
use super::{Result, StoreError, migrate};
use crate::app::config::DatabaseConfig;

/// The store on SQLite.
pub(crate) type SqliteStore = SqlStore<Sqlite>;

impl Backend for Sqlite {
    const DIALECT: Dialect = Dialect {
        name: "sqlite",
        slot: 0,
        now: "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        // SQLite has one writer at a time: the write transaction (`BEGIN IMMEDIATE`) is the lock.
        skip_locked: "",
        share_lock: "",
        begin_write: "BEGIN IMMEDIATE",
        migrate_lock: "",
        migrations: migrate::SQLITE,
    };

    fn bind<'q>(q: SqlxQuery<Self>, value: impl Param<'q>) -> SqlxQuery<Self> {
        q.bind(value)
    }

    fn fetch_optional(
        conn: &mut SqliteConnection,
        q: SqlxQuery<Self>,
    ) -> impl Future<Output = sqlx::Result<Option<SqliteRow>>> + Send {
        q.fetch_optional(conn)
    }

    fn fetch_all(
        conn: &mut SqliteConnection,
        q: SqlxQuery<Self>,
    ) -> impl Future<Output = sqlx::Result<Vec<SqliteRow>>> + Send {
        q.fetch_all(conn)
    }

    fn execute(
        conn: &mut SqliteConnection,
        q: SqlxQuery<Self>,
    ) -> impl Future<Output = sqlx::Result<u64>> + Send {
        q.execute(conn).map_ok(|r| r.rows_affected())
    }

    fn execute_raw(
        conn: &mut SqliteConnection,
        sql: &'static str,
    ) -> impl Future<Output = sqlx::Result<()>> + Send {
        sqlx::raw_sql(sql).execute(conn).map_ok(|_| ())
    }
}

impl Row for SqliteRow {
    fn try_get<T: Value, I: Col>(&self, col: I) -> Result<T> {
        Ok(sqlx::Row::try_get(self, col)?)
    }
}

/// Mode of the database file, and so of its `-wal` and `-shm` files: the service user writes,
/// its group (a backup job) reads, nobody else.
const FILE_MODE: u32 = 0o640;

/// Why the database's directory or file could not be prepared.
#[derive(Debug, thiserror::Error)]
enum FileError {
    #[error("cannot create {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("cannot create the database file {path}: {source}")]
    File { path: PathBuf, source: io::Error },
}

impl SqlStore<Sqlite> {
    /// Opens (creating if needed) the database at `url`, e.g. `sqlite://./data/quire.db`.
    pub(crate) async fn open(url: &str, cfg: &DatabaseConfig) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL loses no committed transaction on a process crash, only possibly
            // the last ones on a power loss; FULL would fsync every commit.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(10))
            .foreign_keys(true);
        let db = opts.get_filename();
        if !in_memory(url) && !db.as_os_str().is_empty() {
            prepare_files(db).map_err(|e| StoreError::Unsupported(e.to_string()))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(cfg.max_connections())
            .acquire_timeout(cfg.connect_timeout().get())
            .connect_with(opts)
            .await?;
        Ok(SqlStore::new(pool, true))
    }
}

/// Whether sqlx keeps the database at `url` in memory (`sqlite::memory:`, `?mode=memory`), so
/// there is nothing on disk to prepare. sqlx does not say, so this reads the URL as it does.
fn in_memory(url: &str) -> bool {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:"
        || url::form_urlencoded::parse(params.as_bytes()).any(|(k, v)| k == "mode" && v == "memory")
}

/// Creates the database's directory and an empty database file (SQLite takes an empty file for
/// an empty database) with private modes, and takes access away from others on files an older
/// version created.
fn prepare_files(db: &Path) -> Result<(), FileError> {
    if let Some(dir) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
        prepare_dir(dir)?;
    }
    create_file(db)?;
    for path in [db.to_path_buf(), sibling(db, "-wal"), sibling(db, "-shm")] {
        tighten(&path);
    }
    Ok(())
}

/// A missing directory is created 0750. An existing one keeps its mode: it may be a shared
/// mount or any directory the operator chose (even `/tmp`), and the files in it are private
/// anyway; the log says when other users can look into it.
fn prepare_dir(dir: &Path) -> Result<(), FileError> {
    if let Ok(meta) = std::fs::metadata(dir) {
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() && mode & 0o007 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                mode = %format!("{mode:o}"),
                "other users can open the database directory; `chmod o-rwx` it \
                 (Quire creates its own directories 0750)"
            );
        }
    }
    crate::app::create_data_dir(dir).map_err(|source| FileError::Dir {
        path: dir.to_path_buf(),
        source,
    })
}

/// Creates the file with `FILE_MODE` unless it exists; an existing file is left as it is.
fn create_file(path: &Path) -> Result<(), FileError> {
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path);
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(FileError::File {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Narrows an existing file to `FILE_MODE`: a database an older version created 0644, or a
/// `-wal` a crash left behind (SQLite sets the mode only of files it creates). Not fatal when it
/// fails: the file may be on a mount without modes.
fn tighten(path: &Path) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o7777;
    let narrowed = mode & FILE_MODE;
    if narrowed == mode {
        return;
    }
    match std::fs::set_permissions(path, Permissions::from_mode(narrowed)) {
        Ok(()) => tracing::info!(
            file = %path.display(),
            from = %format!("{mode:o}"),
            to = %format!("{narrowed:o}"),
            "made a database file private"
        ),
        Err(e) => tracing::warn!(
            file = %path.display(),
            error = %e,
            "cannot make a database file private"
        ),
    }
}

/// `quire.db` -> `quire.db-wal`: SQLite's names for the files beside the database.
fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::store::BaseStore;

    fn mode(path: &Path) -> u32 {
        let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        meta.permissions().mode() & 0o7777
    }

    async fn open_and_write(db: &Path) -> SqliteStore {
        let url = format!("sqlite://{}", db.display());
        let store = SqliteStore::open(&url, &DatabaseConfig::default())
            .await
            .unwrap();
        // Migrating writes, so the `-wal` and `-shm` files exist.
        store.migrate().await.unwrap();
        store
    }

    /// Under the usual umask (022) SQLite alone would create the database 0644 and
    /// `create_dir_all` the directories 0755.
    #[tokio::test]
    async fn a_new_database_and_its_directories_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data").join("db");
        let db = dir.join("q.db");
        let store = open_and_write(&db).await;
        for d in [tmp.path().join("data"), dir] {
            assert_eq!(mode(&d) & !0o750, 0, "{}: {:o}", d.display(), mode(&d));
        }
        for suffix in ["", "-wal", "-shm"] {
            let f = sibling(&db, suffix);
            assert_eq!(mode(&f) & !FILE_MODE, 0, "{}: {:o}", f.display(), mode(&f));
        }
        store.close().await;
    }

    #[tokio::test]
    async fn an_existing_database_open_to_everyone_is_narrowed() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("q.db");
        let wal = sibling(&db, "-wal");
        for f in [&db, &wal] {
            std::fs::write(f, b"").unwrap();
            std::fs::set_permissions(f, Permissions::from_mode(0o666)).unwrap();
        }
        let store = open_and_write(&db).await;
        assert_eq!(mode(&db), 0o640);
        assert_eq!(mode(&wal), 0o640);
        store.close().await;
    }

    #[test]
    fn memory_databases_have_nothing_on_disk() {
        assert!(in_memory("sqlite::memory:"));
        assert!(in_memory("sqlite://:memory:"));
        assert!(in_memory("sqlite://x.db?mode=memory&cache=shared"));
        assert!(!in_memory("sqlite://./data/quire.db"));
        assert!(!in_memory("sqlite:quire.db?mode=rwc"));
    }
}
