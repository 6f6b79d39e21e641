//! A two-region deployment for the disaster-recovery tests, on one machine:
//! - region A: a PostgreSQL primary, its own nats-server and `quire app` instances, active;
//! - region B: a streaming replica of that primary ([`Postgres::replica_of`]), its own
//!   nats-server and instances that wait on it as standbys.
//!
//! Every instance runs HA with [`FAST_HA`] timings, checks its database's role every second
//! ([`CHECK_EVERY`]), shares the encryption key and root user, and is given the other region's
//! database as its peer (`dr.peer_database_url`), as the runbook says to.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::app::{AppOptions, Instance, quire_command};
use super::ha::FAST_HA;
use super::nats::NatsServer;
use super::postgres::Postgres;
use super::wait_for;

/// How often instances check their database's role (and the peer's) in these tests.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The goal for promotion → every standby ready: `dr.check_every` + 5 s.
pub const TAKEOVER_GOAL: Duration = Duration::from_secs(CHECK_EVERY.as_secs() + 5);

/// One key for both regions: the standby region reads secrets the active one sealed.
const ENCRYPTION_KEY: &str = "0123456789abcdef0123456789abcdef";

/// `quire dr status` exit codes.
pub const STATUS_ACTIVE: i32 = 0;
pub const STATUS_FAILING_OR_FENCED: i32 = 1;
pub const STATUS_STANDBY: i32 = 3;

/// Which region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

pub struct Region {
    pub pg: Postgres,
    pub nats: NatsServer,
    pub instances: Vec<Instance>,
    /// This region's database (the same database name in both regions).
    pub db_url: String,
    fonts: tempfile::TempDir,
}

impl Region {
    async fn start(pg: Postgres, database: &str) -> Region {
        Region {
            db_url: pg.url(database),
            pg,
            nats: NatsServer::start().await,
            instances: Vec::new(),
            fonts: tempfile::tempdir().expect("fonts dir"),
        }
    }

    /// The ids of the instances (from `/readyz`, which every role answers with its id).
    pub async fn ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for inst in &self.instances {
            ids.push(instance_id(inst).await);
        }
        ids
    }
}

pub struct DrDeployment {
    pub a: Region,
    pub b: Region,
    /// Settings every instance gets besides the shared ones (e.g. `QUIRE_DR__LAG_WARNING`).
    settings: Vec<(String, String)>,
}

impl DrDeployment {
    /// A primary with a fresh database and a replica of it, a nats-server per region, then
    /// `actives` instances on the primary (which migrate the database) and `standbys` on the
    /// replica, each with `settings` on top of the shared ones.
    pub async fn start(actives: usize, standbys: usize, settings: &[(&str, &str)]) -> DrDeployment {
        let primary = tokio::task::spawn_blocking(Postgres::start)
            .await
            .expect("postgres thread");
        let url = primary.fresh_database().await;
        let database = url.rsplit('/').next().expect("database name").to_owned();
        // A base backup takes a second; nothing else in this process needs to run meanwhile.
        let replica = Postgres::replica_of(&primary);
        let mut d = DrDeployment {
            a: Region::start(primary, &database).await,
            b: Region::start(replica, &database).await,
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        for _ in 0..actives {
            d.add_active(AppOptions::default()).await;
        }
        for _ in 0..standbys {
            d.add_standby(AppOptions::default()).await;
        }
        d
    }

    pub fn region(&self, side: Side) -> &Region {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    fn region_mut(&mut self, side: Side) -> &mut Region {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// The options of an instance in `side`: its region's database, NATS and fonts, the other
    /// region's database as peer, the shared settings, then the deployment's settings and
    /// `extra` (a later value of a variable wins).
    pub fn options(&self, side: Side, extra: AppOptions) -> AppOptions {
        let (own, peer) = match side {
            Side::A => (&self.a, &self.b),
            Side::B => (&self.b, &self.a),
        };
        let mut o = AppOptions::default()
            .env("QUIRE_HA__ENABLED", "true")
            .env("QUIRE_DATABASE__URL", &own.db_url)
            .env("QUIRE_NATS__URL", &own.nats.url())
            .env(
                "QUIRE_FONTS__DIR",
                own.fonts.path().to_str().expect("utf-8 path"),
            )
            .env("QUIRE_ENCRYPTION__KEY", ENCRYPTION_KEY)
            .env(
                "QUIRE_DR__CHECK_EVERY",
                &format!("{}s", CHECK_EVERY.as_secs()),
            )
            .env("QUIRE_DR__PEER_DATABASE_URL", &peer.db_url)
            // A standby answers /metrics, but cannot record a token's use: scrape unauthenticated.
            .env("QUIRE_METRICS__PUBLIC", "true")
            .env("QUIRE_LICENSE__KEY", &super::license::roomy_key());
        for (k, v) in FAST_HA {
            o = o.env(k, v);
        }
        for (k, v) in &self.settings {
            o = o.env(k, v);
        }
        o.env.extend(extra.env);
        o.args.extend(extra.args);
        o
    }

    /// Starts an instance in region A and waits until it is ready; returns its index.
    pub async fn add_active(&mut self, extra: AppOptions) -> usize {
        let inst = Instance::start(self.options(Side::A, extra)).await;
        self.a.instances.push(inst);
        self.a.instances.len() - 1
    }

    /// Starts an instance in region B once the replica has replayed everything the primary has
    /// (so the schema region A migrated is there), and waits until it answers `/livez` — a
    /// standby never turns ready. Returns its index.
    pub async fn add_standby(&mut self, extra: AppOptions) -> usize {
        self.b.pg.wait_caught_up(&self.a.pg).await;
        let inst = Instance::start_unready(self.options(Side::B, extra)).await;
        self.b.instances.push(inst);
        self.b.instances.len() - 1
    }

    /// Region A is lost: its primary crashes (`-m immediate`, so WAL not yet streamed stays
    /// behind), then its instances and NATS are killed. Returns when the primary stopped (epoch
    /// milliseconds).
    pub fn lose_region_a(&mut self) -> i64 {
        let at = jiff::Timestamp::now().as_millisecond();
        self.a.pg.stop_immediate();
        for inst in &mut self.a.instances {
            inst.proc.kill9();
        }
        self.a.nats.kill9();
        at
    }

    /// Starts every instance of `side` again on its data directory and port (after they were
    /// killed), waiting only for `/livez`: what role they come up in is the test's question.
    pub async fn restart_unready(&mut self, side: Side) {
        for inst in &mut self.region_mut(side).instances {
            inst.start_again_unready().await;
        }
    }
}

/// `GET /readyz`: the status code and the JSON body (null when it is not JSON).
pub async fn readyz(inst: &Instance) -> (u16, Value) {
    let r = reqwest::get(format!("{}/readyz", inst.url))
        .await
        .expect("GET /readyz");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The instance's id, from `/readyz`.
pub async fn instance_id(inst: &Instance) -> String {
    let (_, body) = readyz(inst).await;
    body["instance"]
        .as_str()
        .unwrap_or_else(|| panic!("no instance id in /readyz: {body}"))
        .to_owned()
}

/// Waits until `/readyz` reports `role` (with the status code that role answers: 200 only for
/// "active"); returns the body.
pub async fn wait_role(inst: &Instance, role: &str, timeout: Duration) -> Value {
    let code = if role == "active" { 200 } else { 503 };
    wait_for(
        &format!("{} to report role {role}", inst.url),
        timeout,
        || async {
            let (status, body) = readyz(inst).await;
            (status == code && body["role"] == role).then_some(body)
        },
    )
    .await
}

/// Waits until every instance answers `/readyz` 200 with role "active"; returns, per instance,
/// how long after `since` it was first seen so (each polled every 50 ms).
pub async fn wait_all_active(
    instances: &[Instance],
    since: Instant,
    timeout: Duration,
) -> Vec<Duration> {
    let mut took: Vec<Option<Duration>> = vec![None; instances.len()];
    loop {
        for (inst, took) in instances.iter().zip(&mut took) {
            if took.is_none() {
                let (status, body) = readyz(inst).await;
                if status == 200 && body["role"] == "active" {
                    *took = Some(since.elapsed());
                }
            }
        }
        if let Some(all) = took.iter().copied().collect::<Option<Vec<Duration>>>() {
            return all;
        }
        if since.elapsed() > timeout {
            let mut states = Vec::new();
            for inst in instances {
                states.push(readyz(inst).await);
            }
            panic!("not every standby turned active within {timeout:?}: {states:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `quire dr status` against `database` (with `peer` as the peer database): its exit code and
/// what it printed.
pub async fn dr_status(database: &str, peer: Option<&str>) -> (i32, String) {
    // A data directory of its own, in case reading the configuration wants one.
    let data_dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = quire_command(&["dr", "status"]);
    cmd.env("QUIRE_DATABASE__URL", database)
        .env("QUIRE_DATA_DIR", data_dir.path())
        .env("QUIRE_ENCRYPTION__KEY", ENCRYPTION_KEY);
    if let Some(peer) = peer {
        cmd.env("QUIRE_DR__PEER_DATABASE_URL", peer);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("dr status thread")
        .expect("run quire dr status");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let code = out
        .status
        .code()
        .unwrap_or_else(|| panic!("quire dr status died: {}\n{printed}", out.status));
    (code, printed)
}

/// A connection to a database of either region, for what the test checks beneath the API.
pub async fn connect(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}
