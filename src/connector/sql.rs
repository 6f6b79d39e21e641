//! Running a query against a database source: in a read-only transaction with the statement
//! timeout, every `:name` bound as a typed driver parameter, rows read one at a time into a
//! [`Table`] within its limits. Values become JSON by these rules (the README's "Types"):
//! integers and floats are numbers; decimals are numbers when they have at most 15 significant
//! digits, else exact strings; booleans are booleans; dates, times and timestamps are RFC 3339
//! text (`2026-12-01`, `10:30:00`, `2026-12-01T10:30:00` without a zone, `…Z` with one); bytes
//! are base64; JSON columns are JSON; NULL is null. Other types are refused by name, so the author
//! can cast them (`::text`).

use base64::Engine;
use futures_util::TryStreamExt;
use serde_json::{Map, Value};
use sqlx::mysql::{MySql, MySqlRow};
use sqlx::postgres::{PgDatabaseError, PgErrorPosition, PgRow, Postgres};
use sqlx::sqlite::{Sqlite, SqliteRow};
use sqlx::{
    AssertSqlSafe, Column, Database, Decode, Encode, Executor, Row, SqlSafeStr, Statement as _,
    Type, TypeInfo, ValueRef,
};

use super::pool::Pool;
use super::statement::Statement;
use super::table::{Bound, Limits, QueryError, Table, TableBuilder, decimal, float};

/// Runs `statement` with `binds` (one per slot) on `pool`.
pub async fn run(
    pool: &Pool,
    statement: &Statement,
    binds: &[Bound],
    limits: &Limits,
) -> Result<Table, QueryError> {
    let run = async {
        match pool {
            Pool::Postgres(p) => {
                let mut tx = p
                    .begin_with("BEGIN TRANSACTION READ ONLY")
                    .await
                    .map_err(|e| error(e, statement))?;
                read::<Postgres>(&mut *tx, statement, binds, limits, postgres_value).await
            }
            Pool::Mysql(p) => {
                let mut conn = p.acquire().await.map_err(|e| error(e, statement))?;
                conn.execute("START TRANSACTION READ ONLY")
                    .await
                    .map_err(|e| error(e, statement))?;
                let out = read::<MySql>(&mut *conn, statement, binds, limits, mysql_value).await;
                let _ = conn.execute("ROLLBACK").await;
                out
            }
            Pool::Sqlite(p) => {
                // The file is opened read-only; the transaction keeps one snapshot.
                let mut tx = p.begin().await.map_err(|e| error(e, statement))?;
                read::<Sqlite>(&mut *tx, statement, binds, limits, sqlite_value).await
            }
        }
    };
    // The server stops the statement at the data source's statement timeout (set on each
    // connection, `pools.rs`); this one also bounds connecting and reading.
    tokio::time::timeout(limits.timeout + std::time::Duration::from_secs(2), run)
        .await
        .map_err(|_| {
            QueryError::Limit(format!(
                "no result within {}s (statement_timeout)",
                limits.timeout.as_secs_f64()
            ))
        })?
}

type Convert<DB> = fn(&<DB as Database>::Row, usize) -> Result<Value, QueryError>;

async fn read<'c, DB>(
    conn: &'c mut DB::Connection,
    statement: &Statement,
    binds: &[Bound],
    limits: &Limits,
    convert: Convert<DB>,
) -> Result<Table, QueryError>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> time::Date: Encode<'q, DB> + Type<DB>,
    for<'q> time::OffsetDateTime: Encode<'q, DB> + Type<DB>,
    for<'q> <DB as Database>::Arguments: sqlx::IntoArguments<DB>,
{
    let prepared = (&mut *conn)
        .prepare(AssertSqlSafe(statement.sql.clone()).into_sql_str())
        .await
        .map_err(|e| error(e, statement))?;
    let columns: Vec<String> = prepared
        .columns()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    let mut query = prepared.query();
    for b in binds {
        query = match b.clone() {
            Bound::Null => query.bind(None::<String>),
            Bound::Bool(v) => query.bind(v),
            Bound::Int(v) => query.bind(v),
            Bound::Float(v) => query.bind(v),
            Bound::Text(v) => query.bind(v),
            Bound::Date(d) => query.bind(to_time_date(d)?),
            Bound::Timestamp(t) => query.bind(to_time_stamp(t)?),
        };
    }
    let mut table = TableBuilder::new(columns.clone(), *limits);
    let mut rows = query.fetch(&mut *conn);
    while let Some(row) = rows.try_next().await.map_err(|e| error(e, statement))? {
        let mut out = Map::with_capacity(columns.len());
        for (i, name) in columns.iter().enumerate() {
            out.insert(name.clone(), convert(&row, i)?);
        }
        if !table.push(out)? {
            break;
        }
    }
    Ok(table.finish())
}

/// The database's own words; a position in the query is turned back into the author's text.
fn error(e: sqlx::Error, statement: &Statement) -> QueryError {
    match e {
        sqlx::Error::Database(db) => {
            let position =
                db.try_downcast_ref::<PgDatabaseError>()
                    .and_then(|pg| match pg.position() {
                        Some(PgErrorPosition::Original(p)) => Some(p),
                        _ => None,
                    });
            let message = match position {
                Some(p) => {
                    let (line, column) = statement.text_position(p);
                    format!("{} (line {line}, column {column})", db.message())
                }
                None => db.message().to_owned(),
            };
            QueryError::Query { message, position }
        }
        sqlx::Error::ColumnDecode { index, source } => {
            QueryError::Convert(format!("column {index}: {source}"))
        }
        other => QueryError::Unreachable(other.to_string()),
    }
}

fn to_time_date(d: jiff::civil::Date) -> Result<time::Date, QueryError> {
    let month = time::Month::try_from(d.month() as u8).map_err(|e| bind_error(e.to_string()))?;
    time::Date::from_calendar_date(d.year().into(), month, d.day() as u8)
        .map_err(|e| bind_error(e.to_string()))
}

fn to_time_stamp(t: jiff::Timestamp) -> Result<time::OffsetDateTime, QueryError> {
    time::OffsetDateTime::from_unix_timestamp_nanos(t.as_nanosecond())
        .map_err(|e| bind_error(e.to_string()))
}

fn bind_error(message: String) -> QueryError {
    QueryError::Convert(format!("a parameter cannot be bound: {message}"))
}

/// Decodes column `i` as `T`, naming the column when it fails.
fn get<'r, DB, T>(row: &'r DB::Row, i: usize) -> Result<T, QueryError>
where
    DB: Database,
    T: Decode<'r, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    row.try_get_unchecked::<T, _>(i).map_err(|e| {
        let name = row.columns()[i].name().to_owned();
        QueryError::Convert(format!("column \"{name}\": {e}"))
    })
}

fn unsupported<DB: Database>(row: &DB::Row, i: usize, ty: &str) -> QueryError {
    let name = row.columns()[i].name().to_owned();
    QueryError::Convert(format!(
        "column \"{name}\" has type {ty}, which a template cannot receive; cast it to text in the query"
    ))
}

fn is_null<DB: Database>(row: &DB::Row, i: usize) -> bool
where
    usize: sqlx::ColumnIndex<DB::Row>,
{
    row.try_get_raw(i).map(|v| v.is_null()).unwrap_or(true)
}

fn base64(bytes: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn date_text(d: time::Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), d.month() as u8, d.day())
}

/// `10:30:00`, with microseconds when there are any.
fn clock_text(t: time::Time) -> String {
    let frac = match t.nanosecond() {
        0 => String::new(),
        n => format!(".{:06}", n / 1000),
    };
    format!("{:02}:{:02}:{:02}{frac}", t.hour(), t.minute(), t.second())
}

fn date(d: time::Date) -> Value {
    Value::String(date_text(d))
}

fn clock(t: time::Time) -> Value {
    Value::String(clock_text(t))
}

/// A date and time without a zone: `2026-12-01T10:30:00`.
fn local_datetime(t: time::PrimitiveDateTime) -> Value {
    Value::String(format!("{}T{}", date_text(t.date()), clock_text(t.time())))
}

fn timestamp(t: time::OffsetDateTime) -> Value {
    match jiff::Timestamp::from_nanosecond(t.unix_timestamp_nanos()) {
        Ok(ts) => Value::String(ts.to_string()),
        Err(_) => Value::Null,
    }
}

fn postgres_value(row: &PgRow, i: usize) -> Result<Value, QueryError> {
    if is_null::<Postgres>(row, i) {
        return Ok(Value::Null);
    }
    let ty = row.columns()[i].type_info().name().to_owned();
    Ok(match ty.as_str() {
        "BOOL" => Value::Bool(get::<Postgres, bool>(row, i)?),
        "INT2" => get::<Postgres, i16>(row, i)?.into(),
        "INT4" => get::<Postgres, i32>(row, i)?.into(),
        "INT8" => get::<Postgres, i64>(row, i)?.into(),
        "OID" => get::<Postgres, sqlx::postgres::types::Oid>(row, i)?
            .0
            .into(),
        "FLOAT4" => float(get::<Postgres, f32>(row, i)?.into()),
        "FLOAT8" => float(get::<Postgres, f64>(row, i)?),
        // NUMERIC's NaN and infinities have no decimal; they read as text.
        "NUMERIC" => match get::<Postgres, bigdecimal::BigDecimal>(row, i) {
            Ok(d) => decimal(&d),
            Err(_) => Value::String("NaN".into()),
        },
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "\"CHAR\"" | "CITEXT" | "UNKNOWN" => {
            Value::String(get::<Postgres, String>(row, i)?)
        }
        "UUID" => Value::String(get::<Postgres, uuid::Uuid>(row, i)?.to_string()),
        "JSON" | "JSONB" => get::<Postgres, Value>(row, i)?,
        "BYTEA" => base64(&get::<Postgres, Vec<u8>>(row, i)?),
        "DATE" => date(get::<Postgres, time::Date>(row, i)?),
        "TIME" => clock(get::<Postgres, time::Time>(row, i)?),
        "TIMESTAMP" => local_datetime(get::<Postgres, time::PrimitiveDateTime>(row, i)?),
        "TIMESTAMPTZ" => timestamp(get::<Postgres, time::OffsetDateTime>(row, i)?),
        "INT2[]" => array(get::<Postgres, Vec<Option<i16>>>(row, i)?),
        "INT4[]" => array(get::<Postgres, Vec<Option<i32>>>(row, i)?),
        "INT8[]" => array(get::<Postgres, Vec<Option<i64>>>(row, i)?),
        "TEXT[]" | "VARCHAR[]" => array(get::<Postgres, Vec<Option<String>>>(row, i)?),
        "BOOL[]" => array(get::<Postgres, Vec<Option<bool>>>(row, i)?),
        "FLOAT8[]" => Value::Array(
            get::<Postgres, Vec<Option<f64>>>(row, i)?
                .into_iter()
                .map(|f| f.map_or(Value::Null, float))
                .collect(),
        ),
        "NUMERIC[]" => Value::Array(
            get::<Postgres, Vec<Option<bigdecimal::BigDecimal>>>(row, i)?
                .iter()
                .map(|d| d.as_ref().map_or(Value::Null, decimal))
                .collect(),
        ),
        other => return Err(unsupported::<Postgres>(row, i, other)),
    })
}

fn array<T: Into<Value>>(items: Vec<Option<T>>) -> Value {
    Value::Array(
        items
            .into_iter()
            .map(|v| v.map_or(Value::Null, Into::into))
            .collect(),
    )
}

fn mysql_value(row: &MySqlRow, i: usize) -> Result<Value, QueryError> {
    if is_null::<MySql>(row, i) {
        return Ok(Value::Null);
    }
    let ty = row.columns()[i].type_info().name().to_owned();
    Ok(match ty.as_str() {
        "BOOLEAN" => Value::Bool(get::<MySql, bool>(row, i)?),
        "TINYINT" | "SMALLINT" | "INT" | "MEDIUMINT" | "BIGINT" | "YEAR" => {
            get::<MySql, i64>(row, i)?.into()
        }
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "INT UNSIGNED" | "MEDIUMINT UNSIGNED"
        | "BIGINT UNSIGNED" | "BIT" => get::<MySql, u64>(row, i)?.into(),
        "FLOAT" => float(get::<MySql, f32>(row, i)?.into()),
        "DOUBLE" => float(get::<MySql, f64>(row, i)?),
        "DECIMAL" => decimal(&get::<MySql, bigdecimal::BigDecimal>(row, i)?),
        "CHAR" | "VARCHAR" | "TEXT" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET" => {
            Value::String(get::<MySql, String>(row, i)?)
        }
        "JSON" => get::<MySql, Value>(row, i)?,
        "BINARY" | "VARBINARY" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" => {
            base64(&get::<MySql, Vec<u8>>(row, i)?)
        }
        "DATE" => date(get::<MySql, time::Date>(row, i)?),
        "TIME" => clock(get::<MySql, time::Time>(row, i)?),
        "DATETIME" => local_datetime(get::<MySql, time::PrimitiveDateTime>(row, i)?),
        "TIMESTAMP" => timestamp(get::<MySql, time::OffsetDateTime>(row, i)?),
        other => return Err(unsupported::<MySql>(row, i, other)),
    })
}

/// SQLite values carry their own type; a column declared BOOLEAN reads as true/false.
fn sqlite_value(row: &SqliteRow, i: usize) -> Result<Value, QueryError> {
    let raw = row
        .try_get_raw(i)
        .map_err(|e| QueryError::Convert(e.to_string()))?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let stored = raw.type_info().name().to_owned();
    let declared = row.columns()[i].type_info().name().to_ascii_uppercase();
    Ok(match stored.as_str() {
        "INTEGER" if declared == "BOOLEAN" => Value::Bool(get::<Sqlite, bool>(row, i)?),
        "INTEGER" => get::<Sqlite, i64>(row, i)?.into(),
        "REAL" => float(get::<Sqlite, f64>(row, i)?),
        "TEXT" => Value::String(get::<Sqlite, String>(row, i)?),
        "BLOB" => base64(&get::<Sqlite, Vec<u8>>(row, i)?),
        other => return Err(unsupported::<Sqlite>(row, i, other)),
    })
}
