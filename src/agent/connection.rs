//! One connection to the server, from hello to close: heartbeats both ways, each query on a task
//! of its own, cancels, and the end of the connection said as an [`End`]. A connection asked to
//! reconnect, or one of a draining agent, takes no new query and closes once its queries are
//! answered.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::dial::{DialError, Dialer, Socket};
use super::protocol::{AgentMessage, Hello, Query, SILENCE_FACTOR, ServerMessage};
use super::sources::{Sources, encode};
use crate::connector::table::QueryError;
use crate::lifecycle::Shutdown;

/// How long the server may take to answer the hello.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(15);

/// Frames waiting for the writer; query tasks wait when it is full, so a slow link slows them
/// down instead of filling memory.
const QUEUE: usize = 64;

/// How long a closing connection waits for its frames to go out.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// What a connection tells the agent's supervisor, tagged with the connection's number.
#[derive(Debug)]
pub struct Event {
    pub connection: u64,
    pub what: What,
}

#[derive(Debug)]
pub enum What {
    Welcomed {
        instance: String,
        heartbeat_secs: u32,
    },
    Heartbeat,
    /// The instance is going away: open another connection now.
    Reconnect {
        reason: String,
    },
    Ended(End),
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum End {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("the server refused this agent: {0}")]
    Refused(String),
    #[error("the server closed the connection{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed { reason: Option<String> },
    #[error("connection lost: {0}")]
    Lost(String),
    #[error("nothing heard from the server for {0}s")]
    Silent(u64),
    #[error("the server broke the protocol: {0}")]
    Protocol(String),
    /// Closed by the agent: after a reconnect or at drain, its queries answered.
    #[error("closed by the agent")]
    Finished,
}

/// One connection's part of the agent.
pub struct Connection {
    pub number: u64,
    pub dialer: Arc<Dialer>,
    pub sources: Arc<Sources>,
    pub hello: Hello,
    pub events: mpsc::UnboundedSender<Event>,
    pub shutdown: Shutdown,
}

impl Connection {
    /// Runs the connection to its end, telling the supervisor along the way. A connection not
    /// yet welcomed when the agent drains is given up: it has nothing to finish.
    pub async fn run(self) {
        let opened = tokio::select! {
            opened = self.open() => opened,
            _ = self.shutdown.draining() => Err(End::Finished),
        };
        let end = match opened {
            Ok((socket, heartbeat_secs)) => self.serve(socket, heartbeat_secs).await,
            Err(end) => end,
        };
        self.tell(What::Ended(end));
    }

    fn tell(&self, what: What) {
        let _ = self.events.send(Event {
            connection: self.number,
            what,
        });
    }

    /// Dials, says hello and waits for the welcome.
    async fn open(&self) -> Result<(Socket, u32), End> {
        let mut socket = self.dialer.dial().await?;
        let hello = encode(&AgentMessage::Hello(self.hello.clone()));
        socket
            .send(Message::text(hello))
            .await
            .map_err(|e| End::Lost(e.to_string()))?;
        let (instance, heartbeat_secs) = welcome(&mut socket).await?;
        self.tell(What::Welcomed {
            instance,
            heartbeat_secs,
        });
        Ok((socket, heartbeat_secs))
    }

    async fn serve(&self, socket: Socket, heartbeat_secs: u32) -> End {
        let (sink, mut stream) = socket.split();
        let (frames, queue) = mpsc::channel(QUEUE);
        let writer = tokio::spawn(write(sink, queue));
        let mut session = Session {
            connection: self,
            frames,
            queries: JoinSet::new(),
            running: BTreeMap::new(),
            closing: false,
        };
        let end = session.run(&mut stream, heartbeat_secs).await;
        session.queries.abort_all();
        drop(session);
        // The writer ends once every sender is gone, with a close frame.
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, writer).await;
        end
    }
}

/// What the server sends, frame by frame.
trait Incoming: futures_util::Stream<Item = Result<Message, WsError>> + Unpin {}
impl<S: futures_util::Stream<Item = Result<Message, WsError>> + Unpin> Incoming for S {}

/// Waits for the answer to the hello: the instance and the heartbeat interval.
async fn welcome(stream: &mut impl Incoming) -> Result<(String, u32), End> {
    let first = tokio::time::timeout(WELCOME_TIMEOUT, next_message(stream))
        .await
        .map_err(|_| End::Protocol(format!("no welcome within {}s", WELCOME_TIMEOUT.as_secs())))?;
    match first? {
        ServerMessage::Welcome {
            instance,
            heartbeat_secs,
            ..
        } => Ok((instance, heartbeat_secs.max(1))),
        ServerMessage::Refused { message } => Err(End::Refused(message)),
        other => Err(End::Protocol(format!("expected a welcome, got {other:?}"))),
    }
}

/// The next protocol message, skipping pings and pongs.
async fn next_message(stream: &mut impl Incoming) -> Result<ServerMessage, End> {
    loop {
        match read(stream.next().await)? {
            Some(message) => return Ok(message),
            None => continue,
        }
    }
}

/// One frame as a message: `None` for control frames, an [`End`] when the connection is over.
fn read(frame: Option<Result<Message, WsError>>) -> Result<Option<ServerMessage>, End> {
    match frame {
        None => Err(End::Lost("closed without a close frame".into())),
        Some(Err(e)) => Err(End::Lost(e.to_string())),
        Some(Ok(Message::Text(text))) => serde_json::from_str(&text).map(Some).map_err(|e| {
            End::Protocol(format!(
                "{e} in {}",
                text.chars().take(200).collect::<String>()
            ))
        }),
        Some(Ok(Message::Close(frame))) => Err(End::Closed {
            reason: frame
                .map(|f| f.reason.to_string())
                .filter(|r| !r.is_empty()),
        }),
        Some(Ok(Message::Binary(_))) => Err(End::Protocol("a binary frame".into())),
        Some(Ok(_)) => Ok(None),
    }
}

/// Sends frames in order until every sender is gone, then closes.
async fn write<S>(mut sink: S, mut queue: mpsc::Receiver<String>)
where
    S: futures_util::Sink<Message> + Unpin,
{
    while let Some(text) = queue.recv().await {
        if sink.send(Message::text(text)).await.is_err() {
            return;
        }
    }
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "agent closing".into(),
    };
    let _ = sink.send(Message::Close(Some(close))).await;
    let _ = sink.close().await;
}

/// A welcomed connection's state.
struct Session<'c> {
    connection: &'c Connection,
    frames: mpsc::Sender<String>,
    queries: JoinSet<()>,
    /// Each running query's task, by query id, for cancels.
    running: BTreeMap<u64, AbortHandle>,
    /// Asked to reconnect, or draining: no new query; close once none runs.
    closing: bool,
}

impl Session<'_> {
    async fn run(&mut self, stream: &mut impl Incoming, heartbeat_secs: u32) -> End {
        let every = Duration::from_secs(heartbeat_secs.into());
        let silence = every * SILENCE_FACTOR;
        let mut heard = Instant::now();
        let mut tick = tokio::time::interval_at(Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.connection.shutdown.clone();
        loop {
            if self.closing && self.running.is_empty() {
                return End::Finished;
            }
            tokio::select! {
                frame = stream.next() => match read(frame) {
                    Ok(Some(message)) => {
                        heard = Instant::now();
                        self.handle(message).await;
                    }
                    Ok(None) => heard = Instant::now(),
                    Err(end) => return end,
                },
                _ = tick.tick() => {
                    if heard.elapsed() > silence {
                        return End::Silent(silence.as_secs());
                    }
                    let in_flight = u32::try_from(self.running.len()).unwrap_or(u32::MAX);
                    self.send(AgentMessage::Heartbeat { in_flight }).await;
                    self.connection.tell(What::Heartbeat);
                }
                Some(done) = self.queries.join_next_with_id() => {
                    let task = match done {
                        Ok((task, ())) => task,
                        Err(e) => e.id(),
                    };
                    self.running.retain(|_, handle| handle.id() != task);
                }
                _ = shutdown.draining(), if !self.closing => {
                    tracing::info!(in_flight = self.running.len(), "draining: closing once the running queries are answered");
                    self.closing = true;
                }
                _ = shutdown.stopped() => return End::Finished,
            }
        }
    }

    async fn handle(&mut self, message: ServerMessage) {
        match message {
            ServerMessage::Query(query) => self.start(query).await,
            ServerMessage::Cancel { id } => {
                if let Some(handle) = self.running.remove(&id) {
                    tracing::info!(id, "query cancelled by the server");
                    handle.abort();
                }
            }
            ServerMessage::Reconnect { reason } => {
                tracing::info!(%reason, in_flight = self.running.len(), "the server asked for a new connection; this one closes once its queries are answered");
                self.closing = true;
                self.connection.tell(What::Reconnect { reason });
            }
            ServerMessage::Heartbeat => {}
            other => {
                tracing::warn!(message = ?other, "unexpected message from the server, ignored")
            }
        }
    }

    async fn start(&mut self, query: Query) {
        if self.closing {
            // The server retries it on another agent (or on this one's next connection).
            let error = QueryError::Unreachable("this agent connection is closing".into());
            self.send(AgentMessage::Failed {
                id: query.id,
                error,
            })
            .await;
            return;
        }
        let (id, sources, frames) = (
            query.id,
            self.connection.sources.clone(),
            self.frames.clone(),
        );
        let handle = self.queries.spawn(async move {
            for frame in sources.answer(&query).await {
                if frames.send(frame).await.is_err() {
                    return;
                }
            }
        });
        if let Some(earlier) = self.running.insert(id, handle) {
            tracing::warn!(
                id,
                "the server reused a running query's id; the earlier one is cancelled"
            );
            earlier.abort();
        }
    }

    async fn send(&self, message: AgentMessage) {
        let _ = self.frames.send(encode(&message)).await;
    }
}
