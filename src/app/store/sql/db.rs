//! The small database layer the store's SQL is written against, so that every statement is
//! written once, as ordinary generic code, for SQLite and PostgreSQL alike:
//! - [`Backend`]: what the SQL needs from a sqlx driver (binding, fetching, raw statements) and
//!   its [`Dialect`]; implemented for `sqlx::Sqlite` (`../sqlite.rs`) and `sqlx::Postgres`
//!   (`../postgres.rs`);
//! - [`Sql`]: a statement whose text differs between backends only in the dialect's fragments,
//!   rendered once per backend on first use (plain `&'static str` statements are used as they
//!   are);
//! - [`Db`] and [`Tx`]: the pool (each statement on its own) and a write transaction, both handing
//!   out [`Query`]s to bind and run;
//! - [`Row`]: reading the columns of a row of either backend, for row mappers written once.

use std::future::Future;
use std::sync::OnceLock;

use sqlx::database::HasStatementCache;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{ColumnIndex, Decode, Encode, Pool, Postgres, Sqlite, Transaction, Type};

use super::super::Result;
use super::super::migrate::Migration;

/// Where the backends' SQL differs. Every other part of a statement is portable: `$N` parameters,
/// `ON CONFLICT`, `RETURNING`, integer booleans and times.
pub(crate) struct Dialect {
    /// `sqlite` or `postgres`, as `BaseStore::backend` answers.
    pub(crate) name: &'static str,
    /// Which of an [`Sql`]'s renderings is this dialect's.
    pub(crate) slot: usize,
    /// `{now}`: the database clock in epoch milliseconds. Leases and claims are timed by it, not
    /// by the clocks of the instances.
    pub(crate) now: &'static str,
    /// `{skip_locked}`: the row-locking clause of claims (`FOR UPDATE SKIP LOCKED`), so that
    /// concurrent claimers pass each other's rows by.
    pub(crate) skip_locked: &'static str,
    /// `{share_lock}`: keeps a checked lease row from changing hands until commit (`FOR SHARE`).
    pub(crate) share_lock: &'static str,
    /// How a write transaction starts (`BEGIN IMMEDIATE` on SQLite takes the write lock up front,
    /// so two writers never deadlock upgrading a read lock).
    pub(crate) begin_write: &'static str,
    /// Serializes instances migrating at the same time, inside the migration's transaction;
    /// empty when the write transaction already does.
    pub(crate) migrate_lock: &'static str,
    /// The backend's migrations, in order.
    pub(crate) migrations: &'static [Migration],
}

/// How many dialects there are: the number of renderings an [`Sql`] keeps.
const DIALECTS: usize = 2;

/// A statement written once for every backend: `parts` are joined, and the placeholders `{now}`,
/// `{skip_locked}` and `{share_lock}` replaced by the dialect's fragments. Declared `static`,
/// so each backend's text is rendered once and then handed out as `&'static str`.
pub(crate) struct Sql {
    parts: &'static [&'static str],
    texts: [OnceLock<String>; DIALECTS],
}

impl Sql {
    pub(crate) const fn new(parts: &'static [&'static str]) -> Sql {
        Sql {
            parts,
            texts: [const { OnceLock::new() }; DIALECTS],
        }
    }

    fn render(&'static self, dialect: &Dialect) -> &'static str {
        self.texts[dialect.slot].get_or_init(|| {
            self.parts
                .concat()
                .replace("{now}", dialect.now)
                .replace("{skip_locked}", dialect.skip_locked)
                .replace("{share_lock}", dialect.share_lock)
        })
    }
}

/// The text of a statement in a dialect: an [`Sql`], or a plain string the same for every
/// backend.
pub(crate) trait Statement {
    fn text(self, dialect: &Dialect) -> &'static str;
}

impl Statement for &'static str {
    fn text(self, _: &Dialect) -> &'static str {
        self
    }
}

impl Statement for &'static Sql {
    fn text(self, dialect: &Dialect) -> &'static str {
        self.render(dialect)
    }
}

/// A statement with its arguments, as sqlx builds it.
pub(crate) type SqlxQuery<B> = sqlx::query::Query<'static, B, <B as sqlx::Database>::Arguments>;

/// A value every backend can bind (text, integers, bytes, and `Option`s and references of them).
pub(crate) trait Param<'q>:
    Encode<'q, Sqlite> + Type<Sqlite> + Encode<'q, Postgres> + Type<Postgres>
{
}

impl<'q, T> Param<'q> for T where
    T: Encode<'q, Sqlite> + Type<Sqlite> + Encode<'q, Postgres> + Type<Postgres>
{
}

/// A column type every backend can read.
pub(crate) trait Value:
    for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

impl<T> Value for T where
    T: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

/// A column of a row of every backend: its name or its position.
pub(crate) trait Col: ColumnIndex<SqliteRow> + ColumnIndex<PgRow> {}

impl<T: ColumnIndex<SqliteRow> + ColumnIndex<PgRow>> Col for T {}

/// Reading a row of any backend, so that row mappers are written once.
pub(crate) trait Row {
    fn try_get<T: Value, I: Col>(&self, col: I) -> Result<T>;
}

/// A sqlx driver as the SQL uses it. Running a statement generically would need sqlx's
/// higher-ranked executor bounds on every generic function; instead each backend implements these
/// few functions for its concrete types, and everything else is generic over `B: Backend` alone.
pub(crate) trait Backend: sqlx::Database<Row: Row> + HasStatementCache {
    const DIALECT: Dialect;

    fn bind<'q>(q: SqlxQuery<Self>, value: impl Param<'q>) -> SqlxQuery<Self>;

    fn fetch_optional(
        conn: &mut Self::Connection,
        q: SqlxQuery<Self>,
    ) -> impl Future<Output = sqlx::Result<Option<Self::Row>>> + Send;

    fn fetch_all(
        conn: &mut Self::Connection,
        q: SqlxQuery<Self>,
    ) -> impl Future<Output = sqlx::Result<Vec<Self::Row>>> + Send;

    /// Runs a statement; answers the number of rows it changed.
    fn execute(
        conn: &mut Self::Connection,
        q: SqlxQuery<Self>,
    ) -> impl Future<Output = sqlx::Result<u64>> + Send;

    /// Runs SQL without arguments through the simple query protocol (DDL, several statements).
    fn execute_raw(
        conn: &mut Self::Connection,
        sql: &'static str,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
}

fn statement<B: Backend>(sql: impl Statement, persistent: bool) -> SqlxQuery<B> {
    sqlx::query(sql.text(&B::DIALECT)).persistent(persistent)
}

/// The pool: each statement runs on its own.
pub(crate) struct Db<B: Backend> {
    pool: Pool<B>,
    /// False behind a transaction-mode pooler: statements are then unnamed and every statement
    /// runs inside a transaction, so its parse and execute steps reach the same server
    /// connection.
    persistent: bool,
}

impl<B: Backend> Db<B> {
    pub(crate) fn new(pool: Pool<B>, persistent: bool) -> Db<B> {
        Db { pool, persistent }
    }

    pub(crate) fn query(&self, sql: impl Statement) -> Query<'_, B> {
        Query {
            target: Target::Pool(self),
            statement: statement::<B>(sql, self.persistent),
        }
    }

    /// Starts a write transaction (`Dialect::begin_write`); it rolls back unless committed.
    pub(crate) async fn begin_write(&self) -> Result<Tx<B>> {
        Ok(Tx {
            tx: self.pool.begin_with(B::DIALECT.begin_write).await?,
            persistent: self.persistent,
        })
    }

    /// Runs SQL without arguments on a connection of the pool.
    pub(crate) async fn execute_raw(&self, sql: &'static str) -> sqlx::Result<()> {
        let mut conn = self.pool.acquire().await?;
        B::execute_raw(&mut *conn, sql).await
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

/// A write transaction: every statement run through it commits together, or not at all.
pub(crate) struct Tx<B: Backend> {
    tx: Transaction<'static, B>,
    persistent: bool,
}

impl<B: Backend> Tx<B> {
    pub(crate) fn query(&mut self, sql: impl Statement) -> Query<'_, B> {
        let statement = statement::<B>(sql, self.persistent);
        Query {
            target: Target::Tx(self),
            statement,
        }
    }

    /// Runs SQL without arguments inside the transaction.
    pub(crate) async fn execute_raw(&mut self, sql: &'static str) -> sqlx::Result<()> {
        B::execute_raw(&mut *self.tx, sql).await
    }

    pub(crate) async fn commit(self) -> Result<()> {
        Ok(self.tx.commit().await?)
    }
}

enum Target<'a, B: Backend> {
    Pool(&'a Db<B>),
    Tx(&'a mut Tx<B>),
}

/// A statement to bind arguments to (`$1`, `$2`, … in order) and run.
pub(crate) struct Query<'a, B: Backend> {
    target: Target<'a, B>,
    statement: SqlxQuery<B>,
}

impl<B: Backend> Query<'_, B> {
    pub(crate) fn bind<'q>(mut self, value: impl Param<'q>) -> Self {
        self.statement = B::bind(self.statement, value);
        self
    }

    pub(crate) async fn fetch_optional(self) -> Result<Option<B::Row>> {
        self.run::<Optional>().await
    }

    /// The first row; `sqlx::Error::RowNotFound` when there is none.
    pub(crate) async fn fetch_one(self) -> Result<B::Row> {
        self.run::<One>().await
    }

    pub(crate) async fn fetch_all(self) -> Result<Vec<B::Row>> {
        self.run::<All>().await
    }

    /// The row, if any, read by `map`.
    pub(crate) async fn fetch_optional_as<T>(
        self,
        map: impl Fn(&B::Row) -> Result<T>,
    ) -> Result<Option<T>> {
        self.fetch_optional().await?.as_ref().map(map).transpose()
    }

    /// Every row, each read by `map`.
    pub(crate) async fn fetch_all_as<T>(
        self,
        map: impl Fn(&B::Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.fetch_all().await?.iter().map(map).collect()
    }

    /// Runs the statement; answers the number of rows it changed.
    pub(crate) async fn execute(self) -> Result<u64> {
        self.run::<Execute>().await
    }

    async fn run<O: Op<B>>(self) -> Result<O::Output> {
        let q = self.statement;
        match self.target {
            Target::Tx(tx) => Ok(O::run(&mut *tx.tx, q).await?),
            Target::Pool(db) if db.persistent => {
                let mut conn = db.pool.acquire().await?;
                Ok(O::run(&mut *conn, q).await?)
            }
            Target::Pool(db) => {
                let mut tx = db.pool.begin().await?;
                let out = O::run(&mut *tx, q).await?;
                tx.commit().await?;
                Ok(out)
            }
        }
    }
}

/// What is wanted of a statement: one of sqlx's `fetch_*` or `execute`.
trait Op<B: Backend> {
    type Output: Send;
    fn run(
        conn: &mut B::Connection,
        q: SqlxQuery<B>,
    ) -> impl Future<Output = sqlx::Result<Self::Output>> + Send;
}

struct Optional;
struct One;
struct All;
struct Execute;

impl<B: Backend> Op<B> for Optional {
    type Output = Option<B::Row>;
    fn run(
        conn: &mut B::Connection,
        q: SqlxQuery<B>,
    ) -> impl Future<Output = sqlx::Result<Self::Output>> + Send {
        B::fetch_optional(conn, q)
    }
}

impl<B: Backend> Op<B> for One {
    type Output = B::Row;
    async fn run(conn: &mut B::Connection, q: SqlxQuery<B>) -> sqlx::Result<Self::Output> {
        B::fetch_optional(conn, q)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }
}

impl<B: Backend> Op<B> for All {
    type Output = Vec<B::Row>;
    fn run(
        conn: &mut B::Connection,
        q: SqlxQuery<B>,
    ) -> impl Future<Output = sqlx::Result<Self::Output>> + Send {
        B::fetch_all(conn, q)
    }
}

impl<B: Backend> Op<B> for Execute {
    type Output = u64;
    fn run(
        conn: &mut B::Connection,
        q: SqlxQuery<B>,
    ) -> impl Future<Output = sqlx::Result<Self::Output>> + Send {
        B::execute(conn, q)
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{Postgres, Sqlite};

    use super::*;

    #[test]
    fn each_backend_gets_its_own_rendering() {
        static S: Sql = Sql::new(&[
            "SELECT {now}, '{}' FROM t ",
            "WHERE a = $1 {skip_locked}{share_lock}",
        ]);
        let lite = S.render(&Sqlite::DIALECT);
        let pg = S.render(&Postgres::DIALECT);
        assert_eq!(
            lite,
            "SELECT CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER), '{}' FROM t \
             WHERE a = $1 "
        );
        assert_eq!(
            pg,
            "SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT, '{}' FROM t \
             WHERE a = $1 FOR UPDATE SKIP LOCKEDFOR SHARE"
        );
        assert_eq!(S.render(&Sqlite::DIALECT), lite, "rendered once, kept");
        assert_ne!(Sqlite::DIALECT.slot, Postgres::DIALECT.slot);
    }
}
