//! Disaster recovery with real streaming replication on one machine: region A on a PostgreSQL
//! primary, region B's instances waiting as standbys on a replica made with `pg_basebackup -R`.
//! Standbys write nothing and refuse the API; a promotion turns them active by themselves within
//! `dr.check_every` + 5 s, with the schedules and jobs of the lost region going on; the old
//! region, back on its old primary, fences itself; a lagging replica shows its lag.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::app::{AppOptions, Instance, TestClient, busy_template, invoice_data};
use crate::support::dr::{
    DrDeployment, STATUS_ACTIVE, STATUS_FAILING_OR_FENCED, STATUS_STANDBY, Side, TAKEOVER_GOAL,
    connect, dr_status, readyz, wait_all_active, wait_role,
};
use crate::support::wait_for;

const ROLES: [&str; 3] = ["janitor", "mailer", "scheduler"];

/// The timeline a fresh cluster writes on, and the one its replica's promotion starts.
const FIRST_TIMELINE: u32 = 1;
const PROMOTED_TIMELINE: u32 = 2;

/// The schedule of the takeover test fires every 2 s.
const EVERY_MS: i64 = 2000;

/// An occurrence as the database has it: (id, fire time, created at), epoch milliseconds.
type OccurrenceRow = (String, i64, i64);

#[tokio::test]
async fn standbys_refuse_work_then_take_over_on_promotion_and_the_old_region_fences_itself() {
    let mut d = DrDeployment::start(0, 0, &[]).await;
    // One render worker per active instance, so two long jobs leave a third queued.
    for _ in 0..2 {
        d.add_active(AppOptions::default().env("QUIRE_RENDER__WORKERS", "1"))
            .await;
    }
    for _ in 0..2 {
        d.add_standby(AppOptions::default()).await;
    }
    let a = d.a.instances[0].client().await;
    for standby in &d.b.instances {
        assert_standby(standby, d.a.pg.port).await;
    }
    let before = a.get_json("/api/v1/cluster").await["dr"].clone();
    assert_eq!(before["role"], "active", "{before}");
    assert!(
        before["replication"]
            .as_array()
            .is_some_and(|r| r.len() == 1),
        "the primary lists its one streaming replica: {before}"
    );
    let epoch = before["epoch"].as_i64().expect("an epoch");

    render_reaches_the_replica(&d, &a).await;
    let schedule = start_schedule(&d, &a).await;
    let in_flight = jobs_in_flight(&a).await;
    let log = d.b.pg.log();
    assert!(
        !log.contains("read-only transaction"),
        "a standby tried to write:\n{log}"
    );

    // The jobs reached the replica (what had not would be lost with the region: the lag).
    d.b.pg.wait_caught_up(&d.a.pg).await;
    // The disaster, then the operator's one step: promote the replica.
    let lost_at = d.lose_region_a();
    d.b.pg.promote().await;
    let promoted = Instant::now();
    let promoted_ms = jiff::Timestamp::now().as_millisecond();
    let took = wait_all_active(&d.b.instances, promoted, Duration::from_secs(60)).await;
    eprintln!("promotion → ready: {took:?}");
    for t in &took {
        assert!(
            *t <= TAKEOVER_GOAL,
            "a standby took {t:?} to turn ready (goal {TAKEOVER_GOAL:?})"
        );
    }
    let b = d.b.instances[0].client().await;
    let b_ids = d.b.ids().await;
    assert_registered(&b, &b_ids).await;
    wait_roles_held_by(&b, &b_ids).await;
    assert_takeover_recorded(&b, epoch + 1).await;
    for id in &in_flight {
        let done = b.wait_job(id, Duration::from_secs(120)).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        let by = done["instance"].as_str().unwrap_or_default();
        assert!(b_ids.iter().any(|i| i == by), "region B ran it: {done}");
    }
    schedule_goes_on(&d, &schedule, promoted_ms).await;

    // Region A comes back on its old primary, now an independent database.
    d.a.pg.start_again();
    assert!(!d.a.pg.in_recovery().await, "the old primary is writable");
    assert_eq!(d.a.pg.timeline().await, FIRST_TIMELINE);
    assert_eq!(d.b.pg.timeline().await, PROMOTED_TIMELINE);
    fired_twice_only_within_the_lag(&d, &schedule, lost_at).await;
    d.a.nats.restart().await;
    d.restart_unready(Side::A).await;
    for inst in &d.a.instances {
        assert_fenced_by(inst, epoch + 1).await;
    }
    old_region_stays_fenced(&d).await;
    let (code, out) = dr_status(&d.a.db_url, Some(&d.b.db_url)).await;
    assert_eq!(code, STATUS_FAILING_OR_FENCED, "old region: {out}");
    let (code, out) = dr_status(&d.b.db_url, Some(&d.a.db_url)).await;
    assert_eq!(code, STATUS_ACTIVE, "new region: {out}");
}

#[tokio::test]
async fn a_region_still_running_when_its_peer_takes_over_exits_and_comes_back_fenced() {
    let mut d = DrDeployment::start(1, 1, &[]).await;
    let a = d.a.instances[0].client().await;
    let epoch = a.get_json("/api/v1/cluster").await["dr"]["epoch"]
        .as_i64()
        .expect("an epoch");
    // Split brain: the replica is promoted while region A still runs on its primary.
    d.b.pg.promote().await;
    wait_all_active(&d.b.instances, Instant::now(), Duration::from_secs(60)).await;
    let exited = d.a.instances[0].proc.wait_exit(Duration::from_secs(60));
    let status = exited.unwrap_or_else(|| {
        panic!(
            "the fenced instance kept running:\n{}",
            d.a.instances[0].log()
        )
    });
    // EX_TEMPFAIL: its supervisor starts it again, into the role its database now gives it.
    assert_eq!(status.code(), Some(75), "{status}");
    d.restart_unready(Side::A).await;
    assert_fenced_by(&d.a.instances[0], epoch + 1).await;
    let (code, out) = dr_status(&d.a.db_url, Some(&d.b.db_url)).await;
    assert_eq!(code, STATUS_FAILING_OR_FENCED, "fenced region: {out}");
    let (code, out) = dr_status(&d.b.db_url, Some(&d.a.db_url)).await;
    assert_eq!(code, STATUS_ACTIVE, "region that took over: {out}");
    let (status, body) = readyz(&d.b.instances[0]).await;
    assert_eq!((status, &body["role"]), (200, &json!("active")), "{body}");
}

#[tokio::test]
async fn a_lagging_replica_shows_its_lag_and_the_warning_on_the_standby() {
    let d = DrDeployment::start(1, 1, &[("QUIRE_DR__LAG_WARNING", "2s")]).await;
    let standby = &d.b.instances[0];
    let body = wait_role(standby, "standby", Duration::from_secs(10)).await;
    assert_eq!(body["lag_warning"], false, "{body}");
    let (code, out) = dr_status(&d.b.db_url, Some(&d.a.db_url)).await;
    assert_eq!(code, STATUS_STANDBY, "standby region: {out}");
    let (code, out) = dr_status(&d.a.db_url, Some(&d.b.db_url)).await;
    assert_eq!(code, STATUS_ACTIVE, "active region: {out}");

    d.b.pg.pause_replay().await;
    let a = d.a.instances[0].client().await;
    a.create_template("written-while-paused", json!({"main.typ": "Paused"}))
        .await;
    let body = wait_for(
        "the standby to report a lag past the warning",
        Duration::from_secs(30),
        || async {
            let (_, body) = readyz(standby).await;
            (lag(&body) >= 2.0 && body["lag_warning"] == true).then_some(body)
        },
    )
    .await;
    assert_eq!(body["role"], "standby", "{body}");
    // The metric may be refreshed on the role check rather than per scrape; the lag only grows.
    wait_for(
        "the lag metric past 2 s",
        Duration::from_secs(10),
        || async {
            (metric(standby, "quire_db_replication_lag_seconds").await >= 2.0).then_some(())
        },
    )
    .await;
    assert_eq!(
        templates_named(&d.b.db_url, "written-while-paused").await,
        0
    );

    d.b.pg.resume_replay().await;
    d.b.pg.wait_caught_up(&d.a.pg).await;
    assert_eq!(
        templates_named(&d.b.db_url, "written-while-paused").await,
        1
    );
    // Region A heartbeats every second, so a caught-up replica's newest transaction is at most
    // about a second old: the lag falls back under the warning.
    wait_for(
        "the lag to fall back under the warning",
        Duration::from_secs(15),
        || async {
            let (_, body) = readyz(standby).await;
            (lag(&body) < 2.0 && body["lag_warning"] == false).then_some(())
        },
    )
    .await;
}

/// Everything a standby answers: not ready (with its role, lag, primary and schema), alive,
/// metrics, the API refused as not processed, a console page that says what it waits for.
async fn assert_standby(inst: &Instance, primary_port: u16) {
    let body = wait_role(inst, "standby", Duration::from_secs(10)).await;
    assert_eq!(body["status"], "standby", "{body}");
    assert!(body["replication_lag_seconds"].is_number(), "{body}");
    assert_eq!(body["lag_warning"], false, "{body}");
    assert_eq!(
        body["primary"],
        format!("127.0.0.1:{primary_port}"),
        "{body}"
    );
    let schema = &body["schema"];
    assert!(
        schema["binary"].is_i64() && schema["binary"] == schema["database"],
        "{body}"
    );
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{}{path}", inst.url)).send();
    assert_eq!(get("/healthz").await.expect("healthz").status(), 503);
    assert_eq!(get("/livez").await.expect("livez").status(), 200);
    let metrics = get("/metrics").await.expect("metrics");
    assert_eq!(metrics.status(), 200);
    let metrics = metrics.text().await.expect("metrics text");
    assert!(
        metrics.contains("quire_db_replication_lag_seconds"),
        "{metrics}"
    );
    assert_not_processed(get("/api/v1/templates").await.expect("api")).await;
    let login = http
        .post(format!("{}/api/v1/auth/login", inst.url))
        .json(&json!({"email": crate::support::app::ROOT_EMAIL, "password": crate::support::app::ROOT_PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_not_processed(login).await;
    let page = get("/").await.expect("console");
    assert_eq!(page.status(), 200);
    let page = page.text().await.expect("page");
    assert!(
        page.contains("standby") && page.contains("will take over when the database is promoted"),
        "{page}"
    );
}

/// A standby's answer to an API call: 503, `Quire-Not-Processed: 1` (so a load balancer may
/// send it to the active region), and a problem document of the standby type.
async fn assert_not_processed(r: reqwest::Response) {
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers()
            .get("quire-not-processed")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let problem: Value = r.json().await.expect("a problem document");
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("/standby")),
        "{problem}"
    );
}

/// A job rendered in region A reaches the replica whole, where region B's instances read; the
/// standbys themselves refuse to answer for it (they answer no API call).
async fn render_reaches_the_replica(d: &DrDeployment, a: &TestClient) {
    let job = a.render("invoice", invoice_data()).await;
    let id = job["id"].as_str().expect("job id");
    let done = a.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let pdf = a.pdf(id).await;
    d.b.pg.wait_caught_up(&d.a.pg).await;
    let mut conn = connect(&d.b.db_url).await;
    let (state, replicated): (String, Vec<u8>) = sqlx::query_as(
        "SELECT j.state, o.pdf FROM render_jobs j JOIN render_outputs o ON o.job_id = j.id \
         WHERE j.id = $1",
    )
    .bind(id)
    .fetch_one(&mut conn)
    .await
    .expect("the job on the replica");
    assert_eq!(state, "succeeded");
    assert!(replicated == pdf, "the replica has the same PDF");
    for standby in &d.b.instances {
        let r = reqwest::get(format!("{}/api/v1/renders/{id}", standby.url))
            .await
            .expect("GET render");
        assert_not_processed(r).await;
        let (_, body) = readyz(standby).await;
        assert_eq!(body["lag_warning"], false, "caught up: {body}");
    }
}

/// A schedule firing every 2 s (held for review: no mail server needed), created in region A;
/// returns it once it has fired there twice.
async fn start_schedule(d: &DrDeployment, a: &TestClient) -> Value {
    let body = json!({
        "name": "Through the disaster",
        "template": "invoice",
        "cron": "*/2 * * * * *",
        "timezone": "Europe/Berlin",
        "data": invoice_data(),
        "recipients": ["ops@example.com"],
        "subject": "{schedule} for {date}",
        "hold_for_review": true,
    });
    let r = a.post("/api/v1/schedules", &body).await;
    let status = r.status();
    let schedule: Value = r.json().await.expect("schedule");
    assert_eq!(status, 201, "{schedule}");
    wait_for(
        "the schedule to fire twice in region A",
        Duration::from_secs(30),
        || async { (occurrence_rows(&d.a.db_url, &schedule).await.len() >= 2).then_some(()) },
    )
    .await;
    schedule
}

/// Jobs in flight at the disaster: two long ones running on region A's two render workers, and
/// one queued behind them. Returns their ids.
async fn jobs_in_flight(a: &TestClient) -> Vec<String> {
    a.create_template("busy", busy_template(8)).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let job = a.render("busy", json!({})).await;
        ids.push(job["id"].as_str().expect("job id").to_owned());
    }
    for id in &ids {
        wait_for("a long job to run", Duration::from_secs(60), || async {
            let j = a.get_json(&format!("/api/v1/renders/{id}")).await;
            (j["state"] == "running").then_some(())
        })
        .await;
    }
    let queued = a.render("invoice", invoice_data()).await;
    let id = queued["id"].as_str().expect("job id").to_owned();
    let j = a.get_json(&format!("/api/v1/renders/{id}")).await;
    assert_eq!(j["state"], "queued", "no worker is free: {j}");
    ids.push(id);
    ids
}

/// Every instance in `ids` is in the cluster's registry.
async fn assert_registered(b: &TestClient, ids: &[String]) {
    let o = b.get_json("/api/v1/cluster").await;
    let listed: Vec<&str> = o["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    for id in ids {
        assert!(listed.contains(&id.as_str()), "{id} registered: {o}");
    }
}

/// Waits until instances of region B (`ids`) hold every leader role.
async fn wait_roles_held_by(b: &TestClient, ids: &[String]) {
    wait_for(
        "region B to hold every role",
        Duration::from_secs(20),
        || async {
            let o = b.get_json("/api/v1/cluster").await;
            let leases = o["leases"].as_array()?;
            ROLES
                .iter()
                .all(|role| {
                    leases.iter().any(|l| {
                        l["role"] == *role
                            && l["holder"]
                                .as_str()
                                .is_some_and(|h| ids.iter().any(|i| i == h))
                    })
                })
                .then_some(())
        },
    )
    .await;
}

/// One takeover, at the new epoch and on the promoted timeline, in the cluster's DR history.
async fn assert_takeover_recorded(b: &TestClient, epoch: i64) {
    let dr = b.get_json("/api/v1/cluster").await["dr"].clone();
    assert_eq!(dr["role"], "active", "{dr}");
    assert_eq!(dr["epoch"], epoch, "the takeover counts one epoch: {dr}");
    let takeovers: Vec<&Value> = dr["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["event"] == "takeover")
        .collect();
    assert_eq!(takeovers.len(), 1, "one takeover per promotion: {dr}");
    assert_eq!(takeovers[0]["epoch"], epoch, "{dr}");
    assert_eq!(takeovers[0]["timeline"], PROMOTED_TIMELINE, "{dr}");
}

/// The schedule keeps firing on the new primary: three fire times after the promotion, and from
/// its first fire time on every 2 s slot exactly once — the ones missed during the outage run
/// late (they are within the misfire grace), none is skipped.
async fn schedule_goes_on(d: &DrDeployment, schedule: &Value, promoted_ms: i64) {
    let rows = wait_for(
        "three fire times after the promotion",
        Duration::from_secs(60),
        || async {
            let rows = occurrence_rows(&d.b.db_url, schedule).await;
            (rows.iter().filter(|(_, at, _)| *at > promoted_ms).count() >= 3).then_some(rows)
        },
    )
    .await;
    for w in rows.windows(2) {
        assert_eq!(
            w[1].1 - w[0].1,
            EVERY_MS,
            "every slot once, none skipped: {w:?}"
        );
    }
}

/// The second duplicate window: slots the old primary fired that never reached the replica are
/// fired again by the new primary. Compares the old primary's occurrences with the new one's:
/// every slot the old one fired is on the new one; a slot fired on both with different
/// occurrences was created on the old primary no earlier than (about) the last transaction the
/// replica received before the disaster — within the replication lag at that moment.
async fn fired_twice_only_within_the_lag(d: &DrDeployment, schedule: &Value, lost_at: i64) {
    let old = occurrence_rows(&d.a.db_url, schedule).await;
    let new = occurrence_rows(&d.b.db_url, schedule).await;
    let replicated_until =
        d.b.pg
            .last_replay_at()
            .await
            .expect("the replica replayed transactions");
    // A transaction's rows carry its start time, its commit comes a little later.
    let slack_ms = 1000;
    let mut twice = Vec::new();
    for (id, fire_at, created_at) in &old {
        let again = new
            .iter()
            .find(|(_, at, _)| at == fire_at)
            .unwrap_or_else(|| panic!("slot {fire_at} fired before the disaster is lost"));
        if &again.0 != id {
            assert!(
                *created_at >= replicated_until - slack_ms,
                "slot {fire_at} fired twice though its first occurrence ({created_at}) is older \
                 than the replica's last transaction ({replicated_until})"
            );
            twice.push(*fire_at);
        }
    }
    eprintln!(
        "replication lag at the disaster: {} ms; slots fired twice: {twice:?}",
        lost_at - replicated_until
    );
}

/// Region A's instances, back on the old primary, are fenced by the newer epoch: not ready, no
/// roles.
async fn assert_fenced_by(inst: &Instance, epoch: i64) {
    let body = wait_role(inst, "fenced", Duration::from_secs(30)).await;
    assert_eq!(body["status"], "fenced", "{body}");
    assert_eq!(body["by"]["epoch"], epoch, "{body}");
    assert_eq!(body["by"]["timeline"], PROMOTED_TIMELINE, "{body}");
    assert!(!body["by"]["at"].is_null(), "{body}");
    assert!(
        body["roles"].as_array().is_none_or(|r| r.is_empty()),
        "{body}"
    );
}

/// For a few leader-lease renewals, the fenced region stays fenced and idle — no live lease, no
/// new occurrence and no claim on the old primary — while region B stays active. There is no
/// event to wait for: the point is that nothing happens.
async fn old_region_stays_fenced(d: &DrDeployment) {
    let mut old = connect(&d.a.db_url).await;
    let occurrences_at_start = count(&mut old, "SELECT count(*) FROM occurrences").await;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let live_leases = count(
            &mut old,
            "SELECT count(*) FROM leases WHERE holder IS NOT NULL \
             AND expires_at > (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
        )
        .await;
        assert_eq!(live_leases, 0, "a fenced instance took a leader role");
        assert_eq!(
            count(&mut old, "SELECT count(*) FROM occurrences").await,
            occurrences_at_start,
            "a fenced instance fired a schedule"
        );
        for inst in &d.a.instances {
            let (status, body) = readyz(inst).await;
            assert_eq!((status, &body["role"]), (503, &json!("fenced")), "{body}");
        }
        for inst in &d.b.instances {
            let (status, body) = readyz(inst).await;
            assert_eq!((status, &body["role"]), (200, &json!("active")), "{body}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let claimed = count(
        &mut old,
        "SELECT count(*) FROM render_jobs WHERE claimed_by IS NOT NULL \
         AND claim_expires_at > (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
    )
    .await;
    assert_eq!(claimed, 0, "a fenced instance claimed a job");
}

/// The schedule's occurrences in one region's database, by fire time.
async fn occurrence_rows(url: &str, schedule: &Value) -> Vec<OccurrenceRow> {
    let mut conn = connect(url).await;
    sqlx::query_as(
        "SELECT id, fire_at, created_at FROM occurrences WHERE schedule_id = $1 ORDER BY fire_at",
    )
    .bind(schedule["id"].as_str().expect("schedule id"))
    .fetch_all(&mut conn)
    .await
    .expect("occurrences")
}

async fn templates_named(url: &str, name: &str) -> i64 {
    let mut conn = connect(url).await;
    sqlx::query_scalar("SELECT count(*) FROM templates WHERE name = $1")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .expect("templates")
}

async fn count(conn: &mut sqlx::PgConnection, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// `replication_lag_seconds` from a `/readyz` body (NaN when absent, failing comparisons).
fn lag(body: &Value) -> f64 {
    body["replication_lag_seconds"].as_f64().unwrap_or(f64::NAN)
}

/// The value of a metric on the instance's `/metrics` (its first series, labelled or not).
async fn metric(inst: &Instance, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", inst.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .find_map(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}
