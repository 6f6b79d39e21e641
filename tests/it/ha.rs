//! HA mode with real processes: a throwaway PostgreSQL, a real nats-server, several `quire app`
//! instances. Leaders fail over within lease + renew interval with clean terms, jobs survive the
//! death of their instance, progress crosses instances, NATS and PostgreSQL outages are survived.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::app::{AppOptions, TestClient, busy_template, invoice_data};
use crate::support::ha::{HaCluster, assert_handovers_clean, set_draining};
use crate::support::postgres::PgBouncer;
use crate::support::wait_for;

const ROLES: [&str; 3] = ["janitor", "mailer", "scheduler"];

/// Holders of every role, from the cluster overview.
async fn holders(api: &TestClient) -> Vec<Option<String>> {
    let o = api.get_json("/api/v1/cluster").await;
    ROLES
        .iter()
        .map(|r| {
            o["leases"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["role"] == *r)
                .and_then(|l| l["holder"].as_str())
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn a_killed_leader_is_replaced_within_lease_plus_renew() {
    let mut c = HaCluster::start(3).await;
    let api = c.client(0).await;
    let leader = c
        .wait_single_leader(&api, Duration::from_secs(15), None)
        .await;
    let i = c.index_of(&leader).await;
    let watcher = c.client((i + 1) % 3).await;
    let killed = Instant::now();
    c.instances[i].proc.kill9();
    let survivors: Vec<String> = vec![c.id((i + 1) % 3).await, c.id((i + 2) % 3).await];
    wait_for(
        "every role held by a survivor",
        Duration::from_secs(10),
        || async {
            let h = holders(&watcher).await;
            h.iter()
                .all(|h| h.as_ref().is_some_and(|h| survivors.contains(h)))
                .then_some(())
        },
    )
    .await;
    let took = killed.elapsed();
    // Lease 3 s + renew interval 1 s, plus a little for this test's polling.
    assert!(took < Duration::from_millis(5500), "failover took {took:?}");
    let o = watcher.get_json("/api/v1/cluster").await;
    assert_handovers_clean(&o);
    wait_for(
        "the dead instance to go stale",
        Duration::from_secs(10),
        || async {
            let o = watcher.get_json("/api/v1/cluster").await;
            let state = o["instances"]
                .as_array()?
                .iter()
                .find(|x| x["id"] == leader.as_str())?["state"]
                .clone();
            (state == "stale").then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_graceful_stop_hands_roles_over_within_a_second() {
    let mut c = HaCluster::start(2).await;
    let api = c.client(0).await;
    let leader = c
        .wait_single_leader(&api, Duration::from_secs(15), None)
        .await;
    let i = c.index_of(&leader).await;
    let other = c.client(1 - i).await;
    c.instances[i].proc.signal(15);
    let other_id = c.id(1 - i).await;
    c.wait_single_leader(&other, Duration::from_secs(5), Some(&leader))
        .await;
    assert_eq!(holders(&other).await, vec![Some(other_id.clone()); 3]);
    let o = other.get_json("/api/v1/cluster").await;
    assert_handovers_clean(&o);
    for role in ROLES {
        let tenures: Vec<&Value> = o["handovers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["role"] == role)
            .collect();
        let old = tenures
            .iter()
            .find(|h| h["holder"] == leader.as_str())
            .unwrap();
        let new = tenures
            .iter()
            .find(|h| h["holder"] == other_id.as_str())
            .unwrap();
        assert_eq!(old["ended"], "released", "{old}");
        let gap = new["from"].as_i64().unwrap() - old["until"].as_i64().unwrap();
        assert!((0..1000).contains(&gap), "{role}: handover took {gap} ms");
    }
    assert!(
        c.instances[i]
            .proc
            .wait_exit(Duration::from_secs(30))
            .unwrap()
            .success()
    );
}

#[tokio::test]
async fn a_job_whose_instance_is_killed_completes_elsewhere() {
    let mut c = HaCluster::start(2).await;
    let a = c.client(0).await;
    let b = c.client(1).await;
    let (a_id, b_id) = (c.id(0).await, c.id(1).await);
    a.create_template("busy", busy_template(4)).await;
    // Keep B from claiming, so the job lands on A.
    set_draining(&a, &b_id, true).await;
    let job = a.render("busy", json!({})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    wait_for("A to run the job", Duration::from_secs(30), || async {
        let j = b.get_json(&format!("/api/v1/renders/{id}")).await;
        (j["state"] == "running" && j["instance"] == a_id.as_str()).then_some(())
    })
    .await;
    set_draining(&b, &b_id, false).await;
    c.instances[0].proc.kill9();
    let done = b.wait_job(&id, Duration::from_secs(90)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["instance"], b_id.as_str());
    assert_eq!(done["attempts"], 1);
    assert!(b.pdf(&id).await.starts_with(b"%PDF"));
}

#[tokio::test]
async fn progress_of_a_job_on_one_instance_is_followed_on_another() {
    let c = HaCluster::start(2).await;
    let a = c.client(0).await.token_client("a").await;
    let b = TestClient::login(
        &c.instances[1].url,
        crate::support::app::ROOT_EMAIL,
        crate::support::app::ROOT_PASSWORD,
    )
    .await
    .token_client("b")
    .await;
    let a_id = c.id(0).await;
    // A only serves; B runs the job.
    let admin = c.client(0).await;
    set_draining(&admin, &a_id, true).await;
    a.create_template("busy", busy_template(2)).await;
    let job = a.render("busy", json!({})).await;
    let id = job["id"].as_str().unwrap();
    let first = a.follow_ws(id, 0, 3).await;
    // The client switches instance (a failover) and resumes where it was.
    let rest = b.follow_ws(id, 3, 100).await;
    let all: Vec<Value> = first.into_iter().chain(rest).collect();
    let seqs: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    assert_eq!(all.last().unwrap()["state"], "succeeded");
    let done = a.get_json(&format!("/api/v1/renders/{id}")).await;
    assert_eq!(done["instance"], c.id(1).await.as_str(), "B ran it");
    // And a follower on A sees a live job on B from start to end.
    let job = a.render("busy", json!({})).await;
    let events = a.follow_ws(job["id"].as_str().unwrap(), 0, 100).await;
    assert_eq!(events.last().unwrap()["state"], "succeeded");
}

/// Largest delay between an event being recorded and a follower receiving it.
async fn follow_lag(api: &TestClient, template: &str) -> Duration {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let job = api.render(template, invoice_data()).await;
    let url = format!(
        "{}/api/v1/renders/{}/events",
        api.base.replace("http://", "ws://"),
        job["id"].as_str().unwrap()
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", api.token().unwrap()).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut worst = Duration::ZERO;
    while let Some(Ok(msg)) = tokio::time::timeout(Duration::from_secs(60), ws.next())
        .await
        .unwrap()
    {
        let tokio_tungstenite::tungstenite::Message::Text(t) = msg else {
            continue;
        };
        let ev: Value = serde_json::from_str(&t).unwrap();
        let at: jiff::Timestamp = ev["at"].as_str().unwrap().parse().unwrap();
        let lag_ms = jiff::Timestamp::now().as_millisecond() - at.as_millisecond();
        if ev["seq"].as_i64().unwrap() > 1 {
            worst = worst.max(Duration::from_millis(lag_ms.max(0) as u64));
        }
        if ev["final"] == true {
            break;
        }
    }
    worst
}

#[tokio::test]
async fn without_nats_progress_comes_from_the_database_and_fan_out_resumes() {
    let mut c = HaCluster::start(2).await;
    let a = c.client(0).await.token_client("a").await;
    let admin = c.client(0).await;
    let a_id = c.id(0).await;
    set_draining(&admin, &a_id, true).await;

    c.nats.kill9();
    wait_for(
        "NATS to be reported down",
        Duration::from_secs(20),
        || async {
            let r: Value = reqwest::get(format!("{}/readyz", c.instances[1].url))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (r["nats"] == "disconnected").then_some(())
        },
    )
    .await;
    let r = reqwest::get(format!("{}/readyz", c.instances[1].url))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "NATS is not needed to be ready");
    // Renders go on (B runs them) and A's follower still gets every event, from the database.
    let job = a.render("invoice", invoice_data()).await;
    let events = a.follow_ws(job["id"].as_str().unwrap(), 0, 100).await;
    assert_eq!(events.last().unwrap()["state"], "succeeded");
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());

    c.nats.restart().await;
    for inst in &c.instances {
        wait_for("NATS to be back", Duration::from_secs(30), || async {
            let r: Value = reqwest::get(format!("{}/readyz", inst.url))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (r["nats"] == "connected").then_some(())
        })
        .await;
    }
    // With fan-out back, events cross instances at once rather than at the next database poll
    // (every 2 s): three jobs in a row all arrive quickly.
    for _ in 0..3 {
        let lag = follow_lag(&a, "invoice").await;
        assert!(lag < Duration::from_millis(800), "fan-out lag {lag:?}");
    }
}

#[tokio::test]
async fn instances_ride_out_a_postgres_restart() {
    let mut c = HaCluster::start(2).await;
    let api = c.client(0).await;
    c.wait_single_leader(&api, Duration::from_secs(15), None)
        .await;
    let stop = c.pg.port;
    c.pg.stop();
    for inst in &c.instances {
        wait_for(
            "readiness off while the database is down",
            Duration::from_secs(15),
            || async {
                let r = reqwest::get(format!("{}/readyz", inst.url)).await.ok()?;
                (r.status() == 503).then_some(())
            },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.pg.restart();
    assert_eq!(c.pg.port, stop);
    for inst in &c.instances {
        wait_for("readiness back", Duration::from_secs(30), || async {
            let r = reqwest::get(format!("{}/readyz", inst.url)).await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
    }
    let api = c.client(1).await;
    c.wait_single_leader(&api, Duration::from_secs(15), None)
        .await;
    assert_handovers_clean(&api.get_json("/api/v1/cluster").await);
    api.render_invoice_now().await;
}

#[tokio::test]
async fn different_encryption_keys_are_flagged() {
    let mut c = HaCluster::start(0).await;
    c.add(AppOptions::default().env("QUIRE_ENCRYPTION__KEY", "0123456789abcdef0123456789abcdef"))
        .await;
    c.add(AppOptions::default().env("Encryption__Key", "ffffffffffffffffffffffffffffffff"))
        .await;
    let api = c.client(0).await;
    let o = api.get_json("/api/v1/cluster").await;
    let warnings: Vec<&str> = o["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("different encryption keys")),
        "{warnings:?}"
    );
    let keys: Vec<&str> = o["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key_fingerprint"].as_str().unwrap())
        .collect();
    assert!(
        keys.iter().all(|k| !k.contains("0123456789abcdef")),
        "fingerprints, not keys: {keys:?}"
    );
    assert_eq!(
        o["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["you"] == true)
            .count(),
        1
    );
}

#[tokio::test]
async fn leases_hold_behind_pgbouncer_in_transaction_mode() {
    let mut c = HaCluster::start(0).await;
    let db = c.db_url.rsplit('/').next().unwrap().to_owned();
    let bouncer = PgBouncer::start(&c.pg, &db);
    let through = AppOptions::default()
        .env("QUIRE_DATABASE__URL", &bouncer.url(&db))
        .env("QUIRE_DATABASE__PGBOUNCER", "true")
        .env("QUIRE_DATABASE__MIGRATE_URL", &c.db_url);
    c.add(through.clone()).await;
    c.add(through).await;
    let api = c.client(0).await;
    let leader = c
        .wait_single_leader(&api, Duration::from_secs(15), None)
        .await;
    let i = c.index_of(&leader).await;
    let other = c.client(1 - i).await;
    c.instances[i].proc.kill9();
    c.wait_single_leader(&other, Duration::from_secs(10), Some(&leader))
        .await;
    assert_handovers_clean(&other.get_json("/api/v1/cluster").await);
    let api = other.token_client("t").await;
    let job = api.render("invoice", invoice_data()).await;
    let done = api
        .wait_job(job["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(done["state"], "succeeded");
    assert!(
        !bouncer.log().contains("prepared statement"),
        "{}",
        bouncer.log()
    );
}

#[tokio::test]
async fn an_admin_drain_stops_work_and_moves_roles() {
    let c = HaCluster::start(2).await;
    let api = c.client(0).await;
    let leader = c
        .wait_single_leader(&api, Duration::from_secs(15), None)
        .await;
    let i = c.index_of(&leader).await;
    set_draining(&api, &leader, true).await;
    let ready = format!("{}/readyz", c.instances[i].url);
    wait_for(
        "the drained instance to turn unready",
        Duration::from_secs(10),
        || async { (reqwest::get(&ready).await.ok()?.status() == 503).then_some(()) },
    )
    .await;
    let other = c.id(1 - i).await;
    c.wait_single_leader(&api, Duration::from_secs(5), Some(&leader))
        .await;
    assert_eq!(holders(&api).await, vec![Some(other.clone()); 3]);
    // It still serves requests, but new jobs run on the other instance.
    let drained = TestClient::login(
        &c.instances[i].url,
        crate::support::app::ROOT_EMAIL,
        crate::support::app::ROOT_PASSWORD,
    )
    .await
    .token_client("d")
    .await;
    let job = drained.render("invoice", invoice_data()).await;
    let done = drained
        .wait_job(job["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(done["instance"], other.as_str());
    wait_for(
        "the registry to show the drain",
        Duration::from_secs(10),
        || async {
            let o = api.get_json("/api/v1/cluster").await;
            let row = o["instances"]
                .as_array()?
                .iter()
                .find(|x| x["id"] == leader.as_str())?
                .clone();
            (row["draining"] == true && row["drain_requested"] == true).then_some(())
        },
    )
    .await;
    set_draining(&api, &leader, false).await;
    wait_for(
        "the instance to be ready again",
        Duration::from_secs(10),
        || async { (reqwest::get(&ready).await.ok()?.status() == 200).then_some(()) },
    )
    .await;
}
