//! The agents service: tokens as admins manage them, the overview the Agents page shows, and the
//! router that runs a query on an agent serving its source — connected here, or to another
//! instance reached over NATS.
//!
//! Routing rule: the agent with the fewest queries in flight among those serving the source
//! (connected here, or — while NATS is up — connected to another live instance), ties taken in
//! turn. An agent whose connection drops during a query costs one retry on another agent (the
//! query is read-only); an agent that turns out not to be connected costs nothing. With no
//! agent in reach the query fails as `Unavailable`, which a synchronous render answers with 503
//! and `Quire-Not-Processed: 1` so a load balancer tries another instance, and the job runner
//! avoids by claiming only jobs whose agents it reaches (`reach`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast::error::RecvError;
use tokio_util::task::TaskTracker;

use super::AgentError;
use super::hub::Hub;
use super::link::{Link, RunError};
use super::model::{Agent, Connection, Seen, State};
use super::remote;
use crate::agent::protocol::{Query, WireLimits};
use crate::app::auth::token;
use crate::app::bus::{Bus, Hint};
use crate::app::metrics::Metrics;
use crate::app::store::Store;
use crate::connector::table::{Bound, Limits, QueryError, Table};
use crate::connector::{DataSourceKind, Probed};
use crate::lifecycle::Shutdown;

/// Prefix of agent tokens, so they are recognisable in logs and secret scanners.
pub const TOKEN_PREFIX: &str = "qag_";
/// How often agents and this instance exchange heartbeats.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How often connections here are reported and checked against revoked tokens.
const ROUND: Duration = Duration::from_secs(2);
/// How long a query waits for an agent to (re)connect before it is unavailable.
const WAIT_FOR_AGENT: Duration = Duration::from_secs(3);
/// How old the agent rows used for routing may be.
const ROWS_FRESH: Duration = Duration::from_secs(1);
/// The bus hint that an agent was revoked: its instance closes it at once.
const CACHE_KIND: &str = "agents";

#[derive(Clone)]
pub struct Agents {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    bus: Bus,
    metrics: Arc<Metrics>,
    instance: String,
    hub: Arc<Hub>,
    shutdown: Shutdown,
    /// Agent rows as last read, for routing to other instances.
    rows: Mutex<Option<(Instant, Arc<Vec<Agent>>)>>,
    /// Queries this instance has in flight on agents held elsewhere, by agent.
    outstanding: Mutex<HashMap<String, u32>>,
    turn: std::sync::atomic::AtomicUsize,
}

/// The Agents page: every agent, and what an operator should know.
pub struct Overview {
    pub agents: Vec<Agent>,
    pub warnings: Vec<String>,
}

/// An agent whose last report is older than this is not connected (its instance died).
pub const LIVE_MS: i64 = (HEARTBEAT.as_millis() * 3) as i64;

/// An agent just created, with its token (shown once).
pub struct Created {
    pub agent: Agent,
    pub token: String,
}

/// Where a query may go.
enum Target {
    Here(Arc<Link>),
    Elsewhere {
        holder: String,
        agent: String,
        name: String,
    },
}

impl Agents {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Bus,
        metrics: Arc<Metrics>,
        instance: &str,
        shutdown: Shutdown,
    ) -> Self {
        Agents {
            inner: Arc::new(Inner {
                store,
                bus,
                metrics,
                instance: instance.to_owned(),
                hub: Arc::default(),
                shutdown,
                rows: Mutex::default(),
                outstanding: Mutex::default(),
                turn: Default::default(),
            }),
        }
    }

    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    pub fn heartbeat(&self) -> Duration {
        HEARTBEAT
    }

    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub fn shutdown(&self) -> Shutdown {
        self.inner.shutdown.clone()
    }

    pub fn is_draining(&self) -> bool {
        self.inner.shutdown.is_draining()
    }

    /// Creates an agent and its token; the token is in the answer only.
    pub async fn create(&self, name: &str, by: &str) -> Result<Created, AgentError> {
        let name = name.trim();
        check_name(name)?;
        let token = format!("{TOKEN_PREFIX}{}", token::secret());
        let id = uuid::Uuid::now_v7().to_string();
        let agent = self
            .inner
            .store
            .create_agent(&id, name, &token::digest(&token), Some(by))
            .await?;
        tracing::info!(agent = %agent.name, by, "agent token created");
        Ok(Created { agent, token })
    }

    pub async fn list(&self) -> Result<Vec<Agent>, AgentError> {
        Ok(self.inner.store.agents().await?)
    }

    /// Every agent, with warnings: a data source of kind `agent` that no connected agent
    /// serves, or only one (no redundancy), and agents running another version than this
    /// instance.
    pub async fn overview(&self) -> Result<Overview, AgentError> {
        let agents = self.inner.store.agents().await?;
        let datasources = self.inner.store.datasources().await?;
        let mut warnings = Vec::new();
        for ds in datasources
            .iter()
            .filter(|d| d.kind == DataSourceKind::Agent)
        {
            let settings: serde_json::Value =
                serde_json::from_str(&ds.settings).unwrap_or_default();
            let source = settings["source"].as_str().unwrap_or(&ds.name);
            let serving: Vec<&str> = agents
                .iter()
                .filter(|a| a.serves(source, LIVE_MS))
                .map(|a| a.name.as_str())
                .collect();
            match serving.as_slice() {
                [] => warnings.push(format!(
                    "data source {}: no connected agent serves \"{source}\"; its reports fail",
                    ds.name
                )),
                [one] => warnings.push(format!(
                    "data source {}: only agent {one} serves \"{source}\" (no redundancy)",
                    ds.name
                )),
                _ => {}
            }
        }
        for a in agents
            .iter()
            .filter(|a| a.state(LIVE_MS) == State::Connected)
        {
            let version = a.connection.as_ref().map_or("", |c| c.version.as_str());
            if version != crate::version() {
                warnings.push(format!(
                    "agent {} runs Quire {version}, this instance {}",
                    a.name,
                    crate::version()
                ));
            }
        }
        Ok(Overview { agents, warnings })
    }

    pub async fn get(&self, id: &str) -> Result<Agent, AgentError> {
        self.inner
            .store
            .agent(id)
            .await?
            .ok_or_else(|| AgentError::NotFound(format!("agent {id}")))
    }

    /// Deletes an agent, revoking its token: its connection here closes now, elsewhere on the
    /// hint or the next round.
    pub async fn delete(&self, id: &str, by: &str) -> Result<(), AgentError> {
        let agent = self.get(id).await?;
        self.inner.store.delete_agent(&agent.id).await?;
        self.close_revoked(std::slice::from_ref(&agent.id));
        self.inner.bus.cache_changed(CACHE_KIND);
        tracing::info!(agent = %agent.name, by, "agent token revoked");
        Ok(())
    }

    /// The agent a presented token belongs to.
    pub async fn authenticate(&self, presented: &str) -> Result<Agent, AgentError> {
        if !presented.starts_with(TOKEN_PREFIX) {
            return Err(AgentError::Unauthorized);
        }
        self.inner
            .store
            .agent_by_token(&token::digest(presented))
            .await?
            .ok_or(AgentError::Unauthorized)
    }

    /// Whether this instance takes agent connections now (not while it drains).
    pub fn accepting(&self) -> bool {
        !self.is_draining()
    }

    /// Records a new connection; false when the agent was deleted meanwhile.
    pub(super) async fn connected(&self, id: &str, c: &Connection) -> Result<bool, AgentError> {
        Ok(self.inner.store.agent_connected(id, c).await?)
    }

    pub(super) async fn disconnected(&self, link: &Link, error: Option<&str>) {
        let who = &link.who;
        if let Err(e) = self
            .inner
            .store
            .agent_disconnected(&who.agent, &who.session, error)
            .await
        {
            tracing::warn!(agent = %who.name, error = %e, "could not record an agent's disconnection");
        }
        self.inner.bus.cache_changed(CACHE_KIND);
    }

    /// Whether an agent connected here serves `source`.
    pub fn serves_here(&self, source: &str) -> bool {
        self.inner.hub.serves(source)
    }

    /// Whether any agent is connected here.
    pub fn any_here(&self) -> bool {
        !self.inner.hub.links().is_empty()
    }

    /// Whether queries can reach agents held by other instances (NATS is up).
    pub fn reaches_elsewhere(&self) -> bool {
        self.inner.bus.nats_client().is_some()
    }

    /// A data source's connection test: which connected agents serve `source`, and the
    /// server version the first of them found.
    pub async fn probe(&self, source: &str) -> Result<Probed, String> {
        let started = Instant::now();
        let rows = self.inner.store.agents().await.map_err(|e| e.to_string())?;
        let serving: Vec<(&str, Option<&str>)> = rows
            .iter()
            .filter(|a| a.serves(source, LIVE_MS))
            .filter_map(|a| {
                let c = a.connection.as_ref()?;
                let served = c.datasources.iter().find(|d| d.name == source)?;
                Some((a.name.as_str(), served.server_version.as_deref()))
            })
            .collect();
        let Some((_, version)) = serving.first() else {
            return Err(format!("no connected agent serves \"{source}\""));
        };
        let names: Vec<&str> = serving.iter().map(|(n, _)| *n).collect();
        Ok(Probed {
            server_version: format!(
                "{} (served by {})",
                version.unwrap_or("unknown version"),
                names.join(", ")
            ),
            round_trip: started.elapsed(),
        })
    }

    /// Tells every agent here to reconnect to another instance (this one is draining); their
    /// queries in flight finish here.
    pub fn drain(&self) {
        for link in self.inner.hub.links() {
            link.leave("this instance is stopping");
        }
    }

    /// Waits, at most `within`, until the agents here have answered every query in flight
    /// (they reconnected elsewhere at the drain; their old connections close at the stop).
    pub async fn finish(&self, within: Duration) {
        let busy = || {
            self.inner
                .hub
                .links()
                .iter()
                .map(|l| l.in_flight())
                .sum::<u32>()
        };
        let deadline = Instant::now() + within;
        while busy() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `text` on an agent serving `source` (its name on the agents).
    pub async fn query(
        &self,
        source: &str,
        text: &str,
        values: &BTreeMap<String, Bound>,
        limits: &Limits,
        origin: &str,
    ) -> Result<Table, QueryError> {
        let query = Query {
            id: 0,
            source: source.to_owned(),
            text: text.to_owned(),
            values: values.clone(),
            limits: WireLimits::from(limits),
            origin: origin.to_owned(),
        };
        let waiting_since = Instant::now();
        // Agents that lost a query, and agents that were not where they seemed to be (tried
        // again after a pause: a connection may be moving, or an instance just starting to
        // listen on NATS).
        let (mut lost, mut missing): (Vec<String>, Vec<String>) = Default::default();
        loop {
            let skip: Vec<String> = lost.iter().chain(&missing).cloned().collect();
            let Some(target) = self.pick(source, &skip).await else {
                if waiting_since.elapsed() < WAIT_FOR_AGENT && !self.out_of_reach(source).await {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    missing.clear();
                    continue;
                }
                return Err(QueryError::Unavailable(self.nobody(source)));
            };
            let (agent, name) = match &target {
                Target::Here(l) => (l.who.agent.clone(), l.who.name.clone()),
                Target::Elsewhere { agent, name, .. } => (agent.clone(), name.clone()),
            };
            let started = Instant::now();
            let result = self.run_on(target, query.clone(), limits).await;
            self.observe(&name, started.elapsed(), &result);
            match result {
                Ok(table) => return Ok(table),
                Err(RunError::Failed(e)) => return Err(e),
                Err(RunError::Missing) => missing.push(agent),
                Err(RunError::Lost) if lost.is_empty() => {
                    tracing::warn!(agent = %name, source, "agent lost during a query; running it on another");
                    lost.push(agent);
                }
                Err(RunError::Lost) => {
                    return Err(QueryError::Unreachable(format!(
                        "agents serving \"{source}\" dropped the query twice"
                    )));
                }
            }
        }
    }

    /// Whether an agent serving `source` is connected, but to another instance that NATS
    /// cannot reach now: waiting here would not help, another instance can run it at once.
    async fn out_of_reach(&self, source: &str) -> bool {
        !self.reaches_elsewhere()
            && self.rows().await.iter().any(|a| {
                a.serves(source, LIVE_MS)
                    && a.instance(LIVE_MS) != Some(self.inner.instance.as_str())
            })
    }

    fn nobody(&self, source: &str) -> String {
        if self.inner.bus.nats_state() == "disconnected" {
            format!(
                "no connected agent serves \"{source}\" on this instance, and agents on other \
                 instances are out of reach while NATS is down"
            )
        } else {
            format!("no connected agent serves \"{source}\"")
        }
    }

    async fn run_on(
        &self,
        target: Target,
        query: Query,
        limits: &Limits,
    ) -> Result<Table, RunError> {
        match target {
            Target::Here(link) => link.open(query).await?.collect(limits).await,
            Target::Elsewhere { holder, agent, .. } => {
                let Some((client, prefix)) = self.inner.bus.nats_client() else {
                    return Err(RunError::Missing);
                };
                self.count_outstanding(&agent, 1);
                let result = remote::run(&client, &prefix, &holder, &agent, query, limits).await;
                self.count_outstanding(&agent, -1);
                result
            }
        }
    }

    /// The least busy agent serving `source`, here or (with NATS) elsewhere.
    async fn pick(&self, source: &str, tried: &[String]) -> Option<Target> {
        let mut best: Vec<(u32, Target)> = Vec::new();
        let here = self.inner.hub.links();
        for link in here
            .iter()
            .filter(|l| l.serves(source) && !tried.contains(&l.who.agent))
        {
            let load = if link.is_leaving() {
                u32::MAX
            } else {
                link.in_flight()
            };
            best.push((load, Target::Here(link.clone())));
        }
        if self.reaches_elsewhere() {
            let outstanding = self.lock_outstanding().clone();
            for row in self.rows().await.iter() {
                let Some(c) = &row.connection else { continue };
                let Some(holder) = &c.instance_id else {
                    continue;
                };
                let live = row.state(LIVE_MS) == State::Connected;
                let serves = c.datasources.iter().any(|d| d.name == source);
                let known = tried.contains(&row.id) || here.iter().any(|l| l.who.agent == row.id);
                if live && serves && !known && *holder != self.inner.instance {
                    let load = row.in_flight.max(0) as u32
                        + outstanding.get(&row.id).copied().unwrap_or(0);
                    best.push((
                        load,
                        Target::Elsewhere {
                            holder: holder.clone(),
                            agent: row.id.clone(),
                            name: row.name.clone(),
                        },
                    ));
                }
            }
        }
        let least = best.iter().map(|(load, _)| *load).min()?;
        best.retain(|(load, _)| *load == least);
        let turn = self
            .inner
            .turn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = best.len();
        Some(best.swap_remove(turn % n).1)
    }

    /// The agent rows, read at most every [`ROWS_FRESH`].
    async fn rows(&self) -> Arc<Vec<Agent>> {
        if let Some((at, rows)) = self.lock_rows().as_ref()
            && at.elapsed() < ROWS_FRESH
        {
            return rows.clone();
        }
        match self.inner.store.agents().await {
            Ok(rows) => {
                let rows = Arc::new(rows);
                *self.lock_rows() = Some((Instant::now(), rows.clone()));
                rows
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the agents");
                Arc::default()
            }
        }
    }

    fn observe(&self, agent: &str, took: Duration, result: &Result<Table, RunError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(RunError::Failed(_)) => "failed",
            Err(RunError::Lost) => "lost",
            Err(RunError::Missing) => return,
        };
        self.inner
            .metrics
            .agent_query(agent, outcome, took.as_secs_f64());
    }

    fn count_outstanding(&self, agent: &str, delta: i32) {
        let mut out = self.lock_outstanding();
        let n = out.entry(agent.to_owned()).or_default();
        *n = n.saturating_add_signed(delta);
    }

    /// Closes the connections here of agents that were deleted.
    fn close_revoked(&self, ids: &[String]) {
        for link in self.inner.hub.links() {
            if ids.contains(&link.who.agent) {
                link.closed.cancel();
            }
        }
    }

    /// Reports the connections here every [`ROUND`] until the drain (closing those whose agent
    /// was deleted), and, with NATS, answers other instances' queries for them.
    pub fn spawn(&self, tasks: &TaskTracker) {
        let this = self.clone();
        let mut hints = self.inner.bus.hints();
        let shutdown = self.inner.shutdown.clone();
        tasks.spawn(async move {
            let mut round = tokio::time::interval(ROUND);
            let mut serving = None;
            loop {
                tokio::select! {
                    _ = round.tick() => {}
                    // Revoked somewhere, or NATS (back): a round now, which also starts
                    // answering other instances.
                    hint = hints.recv() => match hint {
                        Ok(Hint::CacheChanged(k)) if k == CACHE_KIND => {}
                        Ok(Hint::Reconnected) => {}
                        Ok(_) | Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => return,
                    },
                    // The tracked tasks are joined before the stop phase; the connections
                    // finishing their queries during the drain need no more rounds.
                    _ = shutdown.draining() => return,
                }
                this.report().await;
                if serving
                    .as_ref()
                    .is_none_or(tokio::task::JoinHandle::is_finished)
                {
                    serving = this.serve_remote();
                }
            }
        });
    }

    /// Starts answering other instances once NATS is connected.
    fn serve_remote(&self) -> Option<tokio::task::JoinHandle<()>> {
        let (client, prefix) = self.inner.bus.nats_client()?;
        let (instance, hub) = (self.inner.instance.clone(), self.inner.hub.clone());
        Some(tokio::spawn(remote::serve(client, prefix, instance, hub)))
    }

    /// One round: every connection here reported, revoked ones closed.
    async fn report(&self) {
        let links = self.inner.hub.links();
        let rows = match self.inner.store.agents().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the agents");
                return;
            }
        };
        let revoked: Vec<String> = links
            .iter()
            .filter(|l| !rows.iter().any(|r| r.id == l.who.agent))
            .map(|l| l.who.agent.clone())
            .collect();
        self.close_revoked(&revoked);
        for link in links.iter().filter(|l| !revoked.contains(&l.who.agent)) {
            let seen = link.with_stats(|s| Seen {
                in_flight: i64::from(link.in_flight()),
                queries: s.queries as i64,
                errors: s.errors as i64,
                p50_us: s.percentile(50).map(|d| d.as_micros() as i64),
                p99_us: s.percentile(99).map(|d| d.as_micros() as i64),
                last_error: s.last_error.clone(),
            });
            if let Err(e) = self
                .inner
                .store
                .agent_seen(&link.who.agent, &link.who.session, &seen)
                .await
            {
                tracing::warn!(agent = %link.who.name, error = %e, "could not record an agent's round");
            }
        }
        self.inner
            .metrics
            .agents_connected(&rows, &self.inner.instance);
        *self.lock_rows() = Some((Instant::now(), Arc::new(rows)));
    }

    fn lock_rows(&self) -> std::sync::MutexGuard<'_, Option<(Instant, Arc<Vec<Agent>>)>> {
        self.inner.rows.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_outstanding(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.inner
            .outstanding
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

fn check_name(name: &str) -> Result<(), AgentError> {
    if crate::connector::valid_name(name) {
        Ok(())
    } else {
        Err(AgentError::Invalid {
            field: "name".into(),
            message: "1 to 100 letters, digits, '-', '_' or '.'".into(),
        })
    }
}
