//! A connected agent as this instance sees it: the way to send it queries, the queries waiting
//! for its answers, and how busy it is. The session (`session.rs`) owns the socket and feeds the
//! answers in; everything else asks a [`Link`] to run a query and reads the [`Answers`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::stats::Stats;
use crate::agent::protocol::{Query, ServerMessage};
use crate::connector::table::{Limits, QueryError, Table, TableBuilder};

/// Messages waiting for the socket's writer.
const OUTGOING: usize = 256;

/// A part of an agent's answer to one query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "part", rename_all = "snake_case")]
pub enum Answer {
    Rows {
        columns: Option<Vec<String>>,
        rows: Vec<Vec<Value>>,
    },
    Done {
        truncated: bool,
    },
    Failed {
        error: QueryError,
    },
}

/// Why a query sent to an agent gave no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    /// The connection closed before the answer was complete; the query may be run elsewhere
    /// (it is read-only).
    #[error("the agent's connection closed during the query")]
    Lost,
    /// Nothing was sent: the agent is not (or no longer) connected here.
    #[error("the agent is not connected here")]
    Missing,
    /// The agent ran it, and it failed.
    #[error(transparent)]
    Failed(#[from] QueryError),
}

/// Who the agent is, from its row and its hello.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The agent's row.
    pub agent: String,
    /// The admin's name for it.
    pub name: String,
    /// This connection.
    pub session: String,
    /// The agent process.
    pub agent_id: String,
    pub sources: Vec<String>,
}

pub struct Link {
    pub who: Identity,
    out: mpsc::Sender<ServerMessage>,
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<Answer>>>,
    next_id: AtomicU64,
    in_flight: AtomicU32,
    /// Told to reconnect elsewhere: used only when no other agent serves the source.
    leaving: AtomicBool,
    /// Cancelled to close the connection (token revoked, instance stopping).
    pub closed: CancellationToken,
    stats: Mutex<Stats>,
}

impl Link {
    /// A link and the receiver of what it sends, for the session's writer.
    pub fn new(who: Identity) -> (Arc<Link>, mpsc::Receiver<ServerMessage>) {
        let (out, rx) = mpsc::channel(OUTGOING);
        let link = Link {
            who,
            out,
            pending: Mutex::default(),
            next_id: AtomicU64::new(1),
            in_flight: AtomicU32::new(0),
            leaving: AtomicBool::new(false),
            closed: CancellationToken::new(),
            stats: Mutex::default(),
        };
        (Arc::new(link), rx)
    }

    pub fn serves(&self, source: &str) -> bool {
        self.who.sources.iter().any(|s| s == source)
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Relaxed)
    }

    /// Asks the agent to connect again (to another instance) and keeps the link only for what
    /// is in flight.
    pub fn leave(&self, reason: &str) {
        if !self.leaving.swap(true, Ordering::Relaxed) {
            let _ = self.out.try_send(ServerMessage::Reconnect {
                reason: reason.to_owned(),
            });
        }
    }

    /// Sends a query; its answers arrive on the returned [`Answers`] in order.
    pub async fn open(self: &Arc<Self>, mut query: Query) -> Result<Answers, RunError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        query.id = id;
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock_pending().insert(id, tx);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let answers = Answers {
            link: self.clone(),
            id,
            rx,
            started: Instant::now(),
            finished: false,
        };
        if self.out.send(ServerMessage::Query(query)).await.is_err() {
            return Err(RunError::Missing);
        }
        Ok(answers)
    }

    /// An answer from the agent for query `id` (the session calls this).
    pub fn deliver(&self, id: u64, answer: Answer) {
        let mut pending = self.lock_pending();
        let last = !matches!(answer, Answer::Rows { .. });
        if let Some(tx) = pending.get(&id) {
            let _ = tx.send(answer);
        }
        if last {
            pending.remove(&id);
        }
    }

    /// The connection ended: every query waiting here learns it was lost.
    pub fn close_all(&self) {
        self.lock_pending().clear();
        self.closed.cancel();
    }

    pub fn heartbeat(&self) {
        let _ = self.out.try_send(ServerMessage::Heartbeat);
    }

    /// Counts, percentiles and the last error, for the agent's row.
    pub fn with_stats<T>(&self, f: impl FnOnce(&Stats) -> T) -> T {
        f(&self.stats.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn finished(&self, id: u64, took: Duration, error: Option<&str>) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(took, error);
        if self.lock_pending().remove(&id).is_some() {
            // Given up before the agent finished: it may stop.
            let _ = self.out.try_send(ServerMessage::Cancel { id });
        }
    }

    fn lock_pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::UnboundedSender<Answer>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The answers to one query, in order; dropping it before the end cancels the query.
pub struct Answers {
    link: Arc<Link>,
    id: u64,
    rx: mpsc::UnboundedReceiver<Answer>,
    started: Instant,
    finished: bool,
}

impl Answers {
    /// The next part; `Err(Lost)` when the connection closed first.
    pub async fn next(&mut self) -> Result<Answer, RunError> {
        let Some(answer) = self.rx.recv().await else {
            self.finish(Some("the connection closed during the query"));
            return Err(RunError::Lost);
        };
        match &answer {
            Answer::Rows { .. } => {}
            Answer::Done { .. } => self.finish(None),
            Answer::Failed { error } => self.finish(Some(&error.to_string())),
        }
        Ok(answer)
    }

    fn finish(&mut self, error: Option<&str>) {
        if !self.finished {
            self.finished = true;
            self.link.finished(self.id, self.started.elapsed(), error);
        }
    }

    /// Reads every part into a table within `limits`.
    pub async fn collect(mut self, limits: &Limits) -> Result<Table, RunError> {
        let mut table = Collector::new(limits);
        loop {
            if let Some(done) = table.feed(self.next().await?)? {
                return Ok(done);
            }
        }
    }
}

/// Builds a table from an agent's answer within the server's limits (the agent applies its own
/// as well; these keep a misbehaving one from filling this instance's memory).
pub struct Collector {
    builder: Option<TableBuilder>,
    columns: Vec<String>,
}

impl Collector {
    pub fn new(limits: &Limits) -> Self {
        Collector {
            builder: Some(TableBuilder::new(Vec::new(), *limits)),
            columns: Vec::new(),
        }
    }

    /// Takes the next part; the table once the answer is complete (or enough rows came for a
    /// truncating preview).
    pub fn feed(&mut self, answer: Answer) -> Result<Option<Table>, RunError> {
        let Some(builder) = self.builder.as_mut() else {
            return Err(RunError::Lost);
        };
        match answer {
            Answer::Rows { columns, rows } => {
                if let Some(c) = columns {
                    builder.set_columns(c.clone());
                    self.columns = c;
                }
                for row in rows {
                    let row: Map<String, Value> = self.columns.iter().cloned().zip(row).collect();
                    if !builder.push(row)? {
                        return Ok(self.finish(true));
                    }
                }
                Ok(None)
            }
            Answer::Done { truncated } => Ok(self.finish(truncated)),
            Answer::Failed { error } => Err(RunError::Failed(error)),
        }
    }

    fn finish(&mut self, truncated: bool) -> Option<Table> {
        self.builder.take().map(|b| {
            let mut table = b.finish();
            table.truncated |= truncated;
            table
        })
    }
}

impl Drop for Answers {
    /// Given up early (enough rows for a preview, a timeout): the agent is told to stop.
    fn drop(&mut self) {
        self.finish(None);
    }
}
