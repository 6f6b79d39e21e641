//! The sources on this host, opened once (pools are lazy), and the serving of one query: run it
//! through the connector within the lower of the server's limits and the agent's own, and
//! answer with its rows in chunks.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use super::config::{AgentConfig, Source};
use super::protocol::{AgentMessage, CHUNK_ROWS, Query, Served};
use crate::connector::pool::{self, Pool};
use crate::connector::table::{Limits, Overflow, QueryError, Table};
use crate::connector::{self, probe};

/// The largest text frame a chunk should make; a chunk of wide rows is split until it fits
/// (the server's WebSocket reader refuses far larger frames).
const MAX_FRAME: usize = 4 << 20;

/// Time a query gets beyond its timeout before the agent answers for it: the connector's own
/// limit (the statement timeout) speaks first when it can.
const GRACE: Duration = Duration::from_secs(5);

/// One source, ready to run queries.
struct Opened {
    source: Source,
    /// `Ok(None)` for kinds without a pool (HTTP, CSV); an error for options a driver refused.
    pool: Result<Option<Pool>, QueryError>,
}

/// Every source this agent serves, by name, and the agent's own limits.
pub struct Sources {
    by_name: BTreeMap<String, Opened>,
    limits: Limits,
}

impl Sources {
    /// Opens each configured source without connecting.
    pub fn open(config: &AgentConfig) -> Sources {
        let by_name = config
            .sources()
            .map(|source| {
                let pool = pool::create(&source.settings);
                let opened = Opened {
                    source: source.clone(),
                    pool,
                };
                (source.name.clone(), opened)
            })
            .collect();
        Sources {
            by_name,
            limits: Limits {
                max_rows: config.max_rows,
                max_bytes: config.max_bytes.as_usize(),
                timeout: config.timeout.get(),
                overflow: Overflow::Fail,
            },
        }
    }

    /// Tests each source once, for the hello: its server's version, or why it could not be
    /// reached (which does not stop the agent: the source may come up later).
    pub async fn probe(&self) -> Vec<Served> {
        let probes = self.by_name.values().map(|o| async move {
            let result = match (&o.pool, &o.source.path) {
                (Err(e), _) => Err(e.to_string()),
                (Ok(_), Some(path)) => match read_file(path).await {
                    Ok(file) => probe::probe(&o.source.settings, Some(&file)).await,
                    Err(e) => Err(e.to_string()),
                },
                (Ok(_), None) => probe::probe(&o.source.settings, None).await,
            };
            let (server_version, error) = match result {
                Ok(p) => (Some(p.server_version), None),
                Err(e) => {
                    tracing::warn!(source = %o.source.name, error = %e, "a source cannot be reached; it is offered anyway and queried when asked");
                    (None, Some(e))
                }
            };
            Served {
                name: o.source.name.clone(),
                kind: o.source.kind.as_str().to_owned(),
                server_version,
                error,
            }
        });
        futures_util::future::join_all(probes).await
    }

    /// Runs `query` and gives the messages that answer it, rows in chunks.
    pub async fn answer(&self, query: &Query) -> Vec<String> {
        let started = Instant::now();
        let result = self.run(query).await;
        let elapsed = started.elapsed();
        match &result {
            Ok(table) => tracing::info!(
                origin = %query.origin,
                source = %query.source,
                rows = table.row_count,
                truncated = table.truncated,
                ms = elapsed.as_millis() as u64,
                "query served"
            ),
            Err(e) => tracing::info!(
                origin = %query.origin,
                source = %query.source,
                error = %e,
                ms = elapsed.as_millis() as u64,
                "query failed"
            ),
        }
        match result {
            Ok(table) => frames(query.id, table),
            Err(error) => vec![encode(&AgentMessage::Failed {
                id: query.id,
                error,
            })],
        }
    }

    async fn run(&self, query: &Query) -> Result<Table, QueryError> {
        let opened = self.by_name.get(&query.source).ok_or_else(|| {
            let served: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
            QueryError::Unreachable(format!(
                "this agent serves no source \"{}\"; it serves {}",
                query.source,
                served.join(", ")
            ))
        })?;
        let limits = lower(&query.limits.into(), &self.limits);
        let pool = opened.pool.clone()?;
        let run = async {
            let file = match &opened.source.path {
                Some(path) => Some(read_file(path).await.map_err(|e| {
                    QueryError::Unreachable(format!("cannot read {}: {e}", path.display()))
                })?),
                None => None,
            };
            let (text, values) = (&query.text, &query.values);
            connector::query(
                &opened.source.settings,
                pool.as_ref(),
                file,
                text,
                values,
                &limits,
            )
            .await
        };
        tokio::time::timeout(limits.timeout + GRACE, run)
            .await
            .map_err(|_| {
                QueryError::Limit(format!(
                    "no result within {}s",
                    limits.timeout.as_secs_f64()
                ))
            })?
    }
}

async fn read_file(path: &Path) -> std::io::Result<Bytes> {
    tokio::fs::read(path).await.map(Bytes::from)
}

/// The stricter of two sets of limits; what happens at the row limit is the server's choice (a
/// preview truncates, a render fails).
fn lower(server: &Limits, agent: &Limits) -> Limits {
    Limits {
        max_rows: server.max_rows.min(agent.max_rows),
        max_bytes: server.max_bytes.min(agent.max_bytes),
        timeout: server.timeout.min(agent.timeout),
        overflow: server.overflow,
    }
}

/// A table as the frames that carry it: `Rows` chunks of at most [`CHUNK_ROWS`] (the columns in
/// the first), then `Done`.
fn frames(id: u64, table: Table) -> Vec<String> {
    let Table {
        columns,
        rows,
        truncated,
        ..
    } = table;
    let mut values = rows
        .into_iter()
        .map(|mut row| {
            let in_order = columns.iter().map(|c| row.remove(c).unwrap_or(Value::Null));
            in_order.collect::<Vec<Value>>()
        })
        .peekable();
    let mut out = Vec::new();
    let mut first = Some(columns.clone());
    // Even an empty table sends one chunk: it carries the columns.
    loop {
        let chunk = values.by_ref().take(CHUNK_ROWS).collect();
        rows_frames(id, first.take(), chunk, &mut out);
        if values.peek().is_none() {
            break;
        }
    }
    out.push(encode(&AgentMessage::Done { id, truncated }));
    out
}

/// One chunk as one frame, or split in halves until each fits [`MAX_FRAME`].
fn rows_frames(
    id: u64,
    columns: Option<Vec<String>>,
    rows: Vec<Vec<Value>>,
    out: &mut Vec<String>,
) {
    let message = AgentMessage::Rows { id, columns, rows };
    let text = encode(&message);
    match message {
        AgentMessage::Rows {
            columns, mut rows, ..
        } if text.len() > MAX_FRAME && rows.len() > 1 => {
            let second = rows.split_off(rows.len() / 2);
            rows_frames(id, columns, rows, out);
            rows_frames(id, None, second, out);
        }
        _ => out.push(text),
    }
}

/// A message as its text frame. Serializing plain data into a string cannot fail.
pub fn encode(message: &AgentMessage) -> String {
    serde_json::to_string(message).unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::agent::protocol::WireLimits;
    use crate::config::{ByteSize, Span, load};

    /// A SQLite file with `rows` numbers (`i`, `label`), served as `numbers`.
    pub(crate) async fn sqlite_agent(dir: &tempfile::TempDir, rows: usize) -> AgentConfig {
        use sqlx::ConnectOptions;
        use sqlx::sqlite::SqliteConnectOptions;
        let db = dir.path().join("numbers.db");
        let mut conn = SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::query(
            "CREATE TABLE numbers AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 \
             FROM n WHERE i < ?) SELECT i, 'row ' || i AS label FROM n",
        )
        .bind(rows as i64)
        .execute(&mut conn)
        .await
        .unwrap();
        let f = dir.path().join("quire.toml");
        std::fs::write(
            &f,
            format!(
                "[[agent.datasources]]\nname = \"numbers\"\nkind = \"sqlite\"\npath = \"{}\"\n",
                db.display()
            ),
        )
        .unwrap();
        load::<AgentConfig>(Some(&f), &[]).unwrap().config
    }

    pub(crate) fn query(id: u64, source: &str, text: &str) -> Query {
        Query {
            id,
            source: source.into(),
            text: text.into(),
            values: BTreeMap::new(),
            limits: WireLimits {
                max_rows: 1_000_000,
                max_bytes: 1 << 30,
                timeout_ms: 10_000,
                overflow: Overflow::Fail,
            },
            origin: "sales".into(),
        }
    }

    fn decode(frames: &[String]) -> Vec<AgentMessage> {
        frames
            .iter()
            .map(|f| serde_json::from_str(f).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn rows_come_in_chunks_with_the_columns_first() {
        let dir = tempfile::tempdir().unwrap();
        let sources = Sources::open(&sqlite_agent(&dir, 2500).await);
        let served = sources.probe().await;
        assert!(
            served[0]
                .server_version
                .as_deref()
                .unwrap()
                .starts_with("SQLite")
        );
        let mut q = query(
            7,
            "numbers",
            "SELECT i, label FROM numbers WHERE i > :from ORDER BY i",
        );
        q.values
            .insert("from".into(), crate::connector::table::Bound::Int(0));
        let messages = decode(&sources.answer(&q).await);
        assert_eq!(messages.len(), 4, "3 chunks and done");
        let mut total = 0;
        for (n, m) in messages[..3].iter().enumerate() {
            let AgentMessage::Rows { id, columns, rows } = m else {
                panic!("{m:?}")
            };
            assert_eq!(*id, 7);
            assert_eq!(columns.is_some(), n == 0);
            total += rows.len();
        }
        assert_eq!(total, 2500);
        let AgentMessage::Rows { columns, rows, .. } = &messages[0] else {
            unreachable!()
        };
        assert_eq!(
            columns.as_deref(),
            Some(&["i".to_owned(), "label".to_owned()][..])
        );
        assert_eq!(
            rows[0],
            vec![serde_json::json!(1), serde_json::json!("row 1")]
        );
        assert_eq!(
            messages[3],
            AgentMessage::Done {
                id: 7,
                truncated: false
            }
        );
    }

    #[tokio::test]
    async fn an_unknown_source_names_the_ones_served() {
        let dir = tempfile::tempdir().unwrap();
        let sources = Sources::open(&sqlite_agent(&dir, 1).await);
        let messages = decode(&sources.answer(&query(1, "nope", "SELECT 1")).await);
        assert_eq!(
            messages,
            [AgentMessage::Failed {
                id: 1,
                error: QueryError::Unreachable(
                    "this agent serves no source \"nope\"; it serves numbers".into()
                )
            }]
        );
    }

    #[tokio::test]
    async fn the_agents_own_limits_hold_whatever_the_server_asks() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = sqlite_agent(&dir, 50).await;
        config.max_rows = 10;
        let sources = Sources::open(&config);
        let messages = decode(
            &sources
                .answer(&query(2, "numbers", "SELECT i FROM numbers"))
                .await,
        );
        assert!(
            matches!(
                &messages[..],
                [AgentMessage::Failed {
                    error: QueryError::Limit(_),
                    ..
                }]
            ),
            "{messages:?}"
        );
        // A preview truncates at the lower limit.
        let mut q = query(3, "numbers", "SELECT i FROM numbers");
        q.limits.overflow = Overflow::Truncate;
        q.limits.max_rows = 20;
        let messages = decode(&sources.answer(&q).await);
        let AgentMessage::Rows { rows, .. } = &messages[0] else {
            panic!("{messages:?}")
        };
        assert_eq!(rows.len(), 10);
        assert_eq!(
            messages[1],
            AgentMessage::Done {
                id: 3,
                truncated: true
            }
        );
        let agent = Limits {
            max_rows: 10,
            max_bytes: ByteSize::mib(1).as_usize(),
            timeout: Span::secs(120).get(),
            overflow: Overflow::Fail,
        };
        let server = Limits {
            max_rows: 1000,
            max_bytes: 100,
            timeout: Duration::from_secs(5),
            overflow: Overflow::Truncate,
        };
        let l = lower(&server, &agent);
        assert_eq!(
            (l.max_rows, l.max_bytes, l.timeout),
            (10, 100, Duration::from_secs(5))
        );
        assert_eq!(l.overflow, Overflow::Truncate);
    }

    #[test]
    fn an_empty_table_still_says_its_columns_and_wide_chunks_are_split() {
        let table = Table {
            columns: vec!["a".into()],
            rows: Vec::new(),
            row_count: 0,
            truncated: false,
        };
        let messages = decode(&frames(9, table));
        assert_eq!(
            messages,
            [
                AgentMessage::Rows {
                    id: 9,
                    columns: Some(vec!["a".into()]),
                    rows: vec![]
                },
                AgentMessage::Done {
                    id: 9,
                    truncated: false
                }
            ]
        );
        let wide = "x".repeat(MAX_FRAME / 3);
        let rows = (0..4)
            .map(|_| {
                serde_json::json!({ "a": wide })
                    .as_object()
                    .cloned()
                    .unwrap()
            })
            .collect();
        let table = Table {
            columns: vec!["a".into()],
            rows,
            row_count: 4,
            truncated: false,
        };
        let frames = frames(9, table);
        assert!(
            frames.iter().all(|f| f.len() <= MAX_FRAME),
            "each frame fits"
        );
        assert_eq!(frames.len(), 3, "two frames of two rows, then done");
    }
}
