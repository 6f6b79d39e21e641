//! `quire agent`: runs next to a database in a private network and serves its queries to the
//! report service over one outbound WebSocket; it accepts no connections.
//!
//! Goes in: the `[agent]` section (the server, the token, the sources on this host with their
//! credentials), `data_dir` and the process lifecycle. Comes out: a connection to an instance
//! of the report service that answers its queries, `READY=1` once the first one is welcomed,
//! and the status file `quire agent status` reads.
//!
//! The supervisor here keeps one current connection: it opens one, waits until it ends, waits
//! out the backoff and opens the next. A `Reconnect` from the server opens the next one at once
//! while the old one finishes its queries (`connection.rs`).

mod backoff;
pub mod config;
mod connection;
mod dial;
pub mod protocol;
mod sources;
pub mod status;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

pub use config::AgentConfig;
pub use dial::SetupError;

use backoff::Backoff;
use connection::{Connection, End, Event, What};
use dial::{DialError, Dialer};
use protocol::{Hello, PROTOCOL};
use sources::Sources;
use status::{State, Status, StatusFile};

use crate::lifecycle::Lifecycle;

/// The same failure is logged at most this often; in between it is a debug line.
const REPEAT_LOG: Duration = Duration::from_secs(60);

/// Runs the agent until drain, then closes its connections once their queries are answered
/// (at most `agent.timeout` later). Fails only when it cannot start (`ca_file`, TLS setup),
/// which a restart would not mend.
pub async fn run(
    config: &AgentConfig,
    data_dir: &Path,
    lifecycle: Lifecycle,
) -> Result<(), SetupError> {
    let dialer = Arc::new(Dialer::new(config)?);
    let sources = Arc::new(Sources::open(config));
    let served = sources.probe().await;
    let hello = Hello {
        protocol: PROTOCOL,
        agent_id: uuid::Uuid::new_v4().to_string(),
        name: config.name(),
        version: crate::version().to_owned(),
        datasources: served,
    };
    let status_path = config.status_file(data_dir);
    tracing::info!(
        server = %dialer.url(),
        agent_id = %hello.agent_id,
        name = %hello.name,
        sources = hello.datasources.len(),
        status_file = %status_path.display(),
        "starting the agent"
    );
    let status = StatusFile::create(status_path, initial_status(config, &hello));
    // The agent's health is its connection, which STATUS and the status file report; a restart
    // would not reconnect any sooner, so the watchdog only guards a hung process.
    lifecycle.spawn_watchdog(|| true);
    let supervisor = Supervisor {
        dialer,
        sources,
        hello,
        status,
        lifecycle,
        tracker: TaskTracker::new(),
        log: Throttle::default(),
    };
    supervisor.run(config.timeout.get()).await;
    Ok(())
}

/// `quire agent status`: the report on the agent's status file, and whether it is connected.
pub fn status(path: &Path) -> Result<status::Report, status::StatusError> {
    let found = status::read(path)?;
    let alive = status::alive(found.pid);
    Ok(status::report(&found, jiff::Timestamp::now(), alive))
}

fn initial_status(config: &AgentConfig, hello: &Hello) -> Status {
    let now = jiff::Timestamp::now();
    Status {
        state: State::Connecting,
        since: now,
        server_url: config
            .server_url
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        instance: None,
        agent_id: hello.agent_id.clone(),
        name: hello.name.clone(),
        pid: std::process::id(),
        version: hello.version.clone(),
        heartbeat_secs: None,
        updated_at: now,
        datasources: hello.datasources.clone(),
        last_error: None,
    }
}

struct Supervisor {
    dialer: Arc<Dialer>,
    sources: Arc<Sources>,
    hello: Hello,
    status: StatusFile,
    lifecycle: Lifecycle,
    /// Every connection task, the current one and any still finishing after a reconnect.
    tracker: TaskTracker,
    log: Throttle,
}

impl Supervisor {
    async fn run(mut self, drain_bound: Duration) {
        let (events, mut inbox) = mpsc::unbounded_channel();
        let shutdown = self.lifecycle.shutdown().clone();
        let mut backoff = Backoff::default();
        let mut number = 0;
        while !shutdown.is_draining() {
            number += 1;
            self.status.set(State::Connecting, None, None);
            self.tracker.spawn(
                Connection {
                    number,
                    dialer: self.dialer.clone(),
                    sources: self.sources.clone(),
                    hello: self.hello.clone(),
                    events: events.clone(),
                    shutdown: shutdown.clone(),
                }
                .run(),
            );
            let wait = tokio::select! {
                wait = self.follow(number, &mut inbox, &mut backoff) => wait,
                _ = shutdown.draining() => break,
            };
            if !wait.is_zero() {
                self.lifecycle
                    .notifier()
                    .status(&format!("disconnected; retrying in {}s", wait.as_secs()));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.draining() => break,
                }
            }
        }
        self.tracker.close();
        let finished = crate::lifecycle::within(&shutdown, drain_bound, self.tracker.wait()).await;
        if !finished {
            tracing::warn!("queries still running at the end of the drain: stopping");
            shutdown.stop();
            self.tracker.wait().await;
        }
        self.status
            .set(State::Disconnected, None, Some("the agent stopped".into()));
    }

    /// Follows connection `current` until the supervisor should open the next one; returns how
    /// long to wait first. Events of earlier connections (finishing after a reconnect) only
    /// get logged.
    async fn follow(
        &mut self,
        current: u64,
        inbox: &mut mpsc::UnboundedReceiver<Event>,
        backoff: &mut Backoff,
    ) -> Duration {
        while let Some(Event { connection, what }) = inbox.recv().await {
            if connection != current {
                if let What::Ended(end) = what {
                    tracing::info!(connection, reason = %end, "an earlier connection closed");
                }
                continue;
            }
            match what {
                What::Welcomed {
                    instance,
                    heartbeat_secs,
                } => {
                    backoff.reset();
                    self.log = Throttle::default();
                    tracing::info!(server = %self.dialer.url(), %instance, heartbeat_secs, "connected");
                    self.status.set_heartbeat(heartbeat_secs);
                    self.status
                        .set(State::Connected, Some(instance.clone()), None);
                    let text = format!("connected to {} (instance {instance})", self.dialer.url());
                    self.lifecycle.service_ready("agent", &text);
                }
                What::Heartbeat => self.status.touch(),
                What::Reconnect { reason } => {
                    let text = format!("reconnecting: {reason}");
                    self.lifecycle.notifier().status(&text);
                    return Duration::ZERO;
                }
                What::Ended(end) => {
                    let wait = backoff.next();
                    self.report(&end, wait);
                    self.status
                        .set(State::Disconnected, None, Some(end.to_string()));
                    return wait;
                }
            }
        }
        // The supervisor holds a sender: the inbox never ends while it runs.
        Duration::ZERO
    }

    /// Logs why the connection ended: refusals at error, other failures at warn, each the same
    /// failure at most once a minute.
    fn report(&mut self, end: &End, wait: Duration) {
        let text = end.to_string();
        let retry = format!("{:.1}s", wait.as_secs_f64());
        if !self.log.admit(&text) {
            tracing::debug!(reason = %text, retry_in = %retry, "connection failed again");
            return;
        }
        match end {
            End::Dial(DialError::TokenRefused) | End::Refused(_) => {
                tracing::error!(reason = %text, retry_in = %retry, "not admitted by the server")
            }
            End::Finished => tracing::info!("connection closed"),
            _ => {
                tracing::warn!(server = %self.dialer.url(), reason = %text, retry_in = %retry, "not connected")
            }
        }
    }
}

/// Lets the same message through once per [`REPEAT_LOG`], and a different one at once.
#[derive(Default)]
struct Throttle {
    last: Option<(String, Instant)>,
}

impl Throttle {
    fn admit(&mut self, message: &str) -> bool {
        let now = Instant::now();
        let repeat = self
            .last
            .as_ref()
            .is_some_and(|(m, at)| m == message && now.duration_since(*at) < REPEAT_LOG);
        if !repeat {
            self.last = Some((message.to_owned(), now));
        }
        !repeat
    }
}

#[cfg(test)]
mod tests;
