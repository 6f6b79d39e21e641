//! An HA deployment for tests: a throwaway PostgreSQL, a real nats-server and several `quire app`
//! instances sharing them, with short lease timings so failovers take seconds.

use std::time::Duration;

use serde_json::Value;

use super::app::{AppOptions, Instance, TestClient};
use super::nats::NatsServer;
use super::postgres::Postgres;
use super::wait_for;

/// Lease 3 s, renewed every second, acted on until 0.5 s before expiry; heartbeats every second,
/// stale after 4 s. Failover should take at most lease + renew interval: 4 s.
pub const FAST_HA: &[(&str, &str)] = &[
    ("QUIRE_HA__LEASE", "3s"),
    ("QUIRE_HA__RENEW_EVERY", "1s"),
    ("QUIRE_HA__SAFETY_MARGIN", "500ms"),
    ("QUIRE_HA__HEARTBEAT_EVERY", "1s"),
    ("QUIRE_HA__STALE_AFTER", "4s"),
];

pub struct HaCluster {
    pub instances: Vec<Instance>,
    pub nats: NatsServer,
    pub pg: Postgres,
    pub db_url: String,
    pub fonts: tempfile::TempDir,
    /// The HA timing settings every instance gets.
    timings: Vec<(String, String)>,
}

impl HaCluster {
    /// PostgreSQL, NATS, and `n` instances with `FAST_HA` timings, started one after the other.
    pub async fn start(n: usize) -> HaCluster {
        Self::start_with(n, FAST_HA).await
    }

    /// Like `start`, with the given HA timing settings (empty: the defaults).
    pub async fn start_with(n: usize, timings: &[(&str, &str)]) -> HaCluster {
        let pg = tokio::task::spawn_blocking(Postgres::start)
            .await
            .expect("postgres thread");
        let db_url = pg.fresh_database().await;
        let nats = NatsServer::start().await;
        let fonts = tempfile::tempdir().expect("fonts dir");
        let timings = timings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut cluster = HaCluster {
            instances: Vec::new(),
            nats,
            pg,
            db_url,
            fonts,
            timings,
        };
        for _ in 0..n {
            cluster.add(AppOptions::default()).await;
        }
        cluster
    }

    /// The options every instance shares, plus `extra`.
    pub fn options(&self, extra: AppOptions) -> AppOptions {
        let mut o = AppOptions::default()
            .env("QUIRE_HA__ENABLED", "true")
            .env("QUIRE_DATABASE__URL", &self.db_url)
            .env("QUIRE_NATS__URL", &self.nats.url())
            .env(
                "QUIRE_FONTS__DIR",
                self.fonts.path().to_str().expect("utf-8 path"),
            )
            // Seats for every instance a test starts: without a key only one would lead.
            .env("QUIRE_LICENSE__KEY", &super::license::roomy_key());
        for (k, v) in &self.timings {
            o = o.env(k, v);
        }
        o.env.extend(extra.env);
        o.args.extend(extra.args);
        o
    }

    /// Starts one more instance; returns its index.
    pub async fn add(&mut self, extra: AppOptions) -> usize {
        let inst = Instance::start(self.options(extra)).await;
        self.instances.push(inst);
        self.instances.len() - 1
    }

    pub async fn client(&self, i: usize) -> TestClient {
        self.instances[i].client().await
    }

    /// The id of instance `i`, from its /readyz.
    pub async fn id(&self, i: usize) -> String {
        let r: Value = reqwest::get(format!("{}/readyz", self.instances[i].url))
            .await
            .expect("readyz")
            .json()
            .await
            .expect("json");
        r["instance"].as_str().expect("instance").to_owned()
    }

    /// `GET /api/v1/cluster` through instance `i`.
    pub async fn overview(&self, via: &TestClient) -> Value {
        via.get_json("/api/v1/cluster").await
    }

    /// Waits until one instance holds every leader role; returns its id.
    pub async fn wait_single_leader(
        &self,
        via: &TestClient,
        timeout: Duration,
        not: Option<&str>,
    ) -> String {
        wait_for("one instance to hold every role", timeout, || async {
            let o = via
                .get("/api/v1/cluster")
                .await
                .json::<Value>()
                .await
                .ok()?;
            let holders: Vec<Option<&str>> = o["leases"]
                .as_array()?
                .iter()
                .map(|l| l["holder"].as_str())
                .collect();
            let first = holders.first().copied().flatten()?;
            (holders.iter().all(|h| *h == Some(first)) && Some(first) != not)
                .then(|| first.to_owned())
        })
        .await
    }

    /// The index of the running instance with id `id`.
    pub async fn index_of(&self, id: &str) -> usize {
        for (i, inst) in self.instances.iter().enumerate() {
            let Ok(r) = reqwest::get(format!("{}/readyz", inst.url)).await else {
                continue;
            };
            let Ok(body) = r.json::<Value>().await else {
                continue;
            };
            if body["instance"] == id {
                return i;
            }
        }
        panic!("no running instance {id}");
    }
}

/// Checks the recorded tenures of every role: terms strictly increase and never overlap.
/// Asks, through `via`, that instance `id` stop taking work (`drain`) or take it again; asserts
/// the request is accepted.
pub async fn set_draining(via: &TestClient, id: &str, drain: bool) {
    let action = if drain { "drain" } else { "resume" };
    let r = via
        .post(
            &format!("/api/v1/cluster/instances/{id}/{action}"),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(r.status(), 202, "{action} {id}");
}

pub fn assert_handovers_clean(overview: &Value) {
    let mut by_role: std::collections::BTreeMap<&str, Vec<&Value>> = Default::default();
    for h in overview["handovers"].as_array().expect("handovers") {
        by_role
            .entry(h["role"].as_str().expect("role"))
            .or_default()
            .push(h);
    }
    for (role, mut tenures) in by_role {
        tenures.sort_by_key(|h| h["term"].as_i64());
        for w in tenures.windows(2) {
            let (a, b) = (w[0], w[1]);
            assert!(
                b["term"].as_i64() > a["term"].as_i64(),
                "{role}: terms increase: {a} {b}"
            );
            let until = a["until"].as_i64().unwrap_or_else(|| {
                panic!(
                    "{role}: term {} still open while {} began",
                    a["term"], b["term"]
                )
            });
            assert!(
                until <= b["from"].as_i64().expect("from"),
                "{role}: tenures overlap: {a} {b}"
            );
        }
    }
}
