//! Agents: `quire agent` next to a PostgreSQL serves its queries to the report service over an
//! outbound WebSocket — through `quire lb`, several agents per data source, across instances
//! over NATS, and without NATS; revoked tokens, protocol versions and draining instances.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::agent::{self, Agent, postgres_source};
use crate::support::app::{AppOptions, Instance, TestClient, pdf_text};
use crate::support::ha::{HaCluster, set_draining};
use crate::support::lb::Lb;
use crate::support::postgres::Postgres;
use crate::support::wait_for;

const KEY: &str = "0123456789abcdef0123456789abcdef";

/// Lists the rows of query `sales` as `region=amount` lines.
const LISTING: &str = r#"#set page(width: 12cm, height: auto, margin: 1cm)
#let q = json("queries/sales.json")
#for r in q.rows [ #r.region=#r.amount \ ]
rows #q.row_count
"#;

/// A database with a `sales` table; its URL carries a password that only the agent may know
/// (the throwaway server trusts local connections, so it is not checked).
async fn warehouse(pg: &Postgres) -> String {
    use sqlx::Connection;
    let url = pg.fresh_database().await;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE sales (region text, amount numeric(12,2));
         INSERT INTO sales VALUES ('north', 12.50), ('north', 99.00), ('south', 7.00);",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    url.replacen(
        "postgres://quire@",
        "postgres://quire:agent-only-s3cret@",
        1,
    )
}

/// The data source of kind `agent` and a template whose query `sleep_s` long reads it.
async fn agent_template(admin: &TestClient, template: &str, sleep_s: f64) {
    let body = json!({"name": "warehouse", "kind": "agent", "settings": {"source": "warehouse"}});
    let (status, out) = admin
        .send_json(reqwest::Method::POST, "/api/v1/datasources", &body)
        .await;
    assert!(status == 201 || status == 409, "{out}");
    let text = format!(
        "select region, amount from sales, pg_sleep({sleep_s}) where region = :region order by amount"
    );
    let body = json!({
        "name": template,
        "files": {"main.typ": LISTING},
        "parameters": [{"name": "region", "type": "string", "default": "north"}],
        "queries": [{"name": "sales", "datasource": "warehouse", "text": text}]
    });
    let (status, out) = admin
        .send_json(reqwest::Method::POST, "/api/v1/templates", &body)
        .await;
    assert_eq!(status, 201, "{out}");
}

/// Renders `template` synchronously through `base`; the status and the PDF's text.
async fn render(http: &reqwest::Client, base: &str, token: &str, template: &str) -> (u16, String) {
    let r = http
        .post(format!("{base}/api/v1/render"))
        .bearer_auth(token)
        .json(&json!({"template": template, "parameters": {"region": "north"}}))
        .send()
        .await
        .expect("render request");
    let status = r.status().as_u16();
    let bytes = r.bytes().await.unwrap_or_default();
    let text = if status == 200 {
        pdf_text(&bytes)
    } else {
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (status, text)
}

fn with_key() -> AppOptions {
    AppOptions::default().env("QUIRE_ENCRYPTION__KEY", KEY)
}

#[tokio::test]
async fn a_template_queries_postgresql_through_an_agent_whose_credentials_stay_on_its_host() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = warehouse(&pg).await;
    let app = Instance::start(with_key()).await;
    let admin = app.client().await;
    let (id, token) = agent::create(&admin, "dc1-a").await;
    assert!(token.starts_with("qag_"), "{token}");
    let mut a = Agent::start(
        "dc1-a",
        &app.url,
        &token,
        &postgres_source("warehouse", &url),
    );
    let seen = agent::wait_connected(&admin, "dc1-a", None, Duration::from_secs(20)).await;
    assert_eq!(seen["datasources"][0]["name"], "warehouse", "{seen}");
    assert!(
        seen["datasources"][0]["server_version"]
            .as_str()
            .unwrap_or("")
            .contains("PostgreSQL"),
        "the agent reports its source's version: {seen}"
    );
    agent_template(&admin, "agent-sales", 0.0).await;

    let http = reqwest::Client::new();
    let api = admin.token_client("renders").await;
    let (status, text) = render(&http, &app.url, api.token().unwrap(), "agent-sales").await;
    assert_eq!(status, 200, "{text}\n{}", a.log());
    assert!(
        text.contains("north=12.5") && text.contains("north=99"),
        "{text}"
    );
    assert!(text.contains("rows 2") && !text.contains("south"), "{text}");

    // A job runs the same way.
    let job = admin.render("agent-sales", json!({})).await;
    let done = admin
        .wait_job(job["id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(done["state"], "succeeded", "{done}");

    // The data source's test names the agent and the server it reached.
    let (status, tested) = admin
        .send_json(
            reqwest::Method::POST,
            "/api/v1/datasources/warehouse/test",
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{tested}");
    assert!(tested.to_string().contains("dc1-a"), "{tested}");

    // The agent logged the template and the row count, not the parameter's value.
    let log = a.log();
    assert!(log.contains("sales") && log.contains("rows"), "{log}");
    assert!(
        !log.contains("\"north\""),
        "no parameter values in the agent's log:\n{log}"
    );
    // The password never left the agent's host: not in the API, not in the server's log.
    let listed = admin.get_json("/api/v1/agents").await.to_string();
    assert!(!listed.contains("agent-only-s3cret"), "{listed}");
    assert!(!app.log().contains("agent-only-s3cret"));
    let (code, status_text) = a.status();
    assert_eq!(code, 0, "quire agent status while connected: {status_text}");
    assert!(status_text.contains("warehouse"), "{status_text}");

    // The page shows the counters after the next round.
    let counted = wait_for("the query counters", Duration::from_secs(10), || async {
        let a = agent::find(&admin, "dc1-a").await?;
        (a["queries"].as_i64()? >= 2).then_some(a)
    })
    .await;
    assert!(counted["p50_ms"].as_f64().is_some(), "{counted}");
    assert!(counted["instance"].is_string(), "{counted}");

    // Revoked: the connection closes within 5 s and reconnects are refused, said clearly.
    let revoked = Instant::now();
    let r = admin
        .request(reqwest::Method::DELETE, &format!("/api/v1/agents/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    wait_for(
        "the agent to lose its connection",
        Duration::from_secs(5),
        || async { (a.status().0 == 1).then_some(()) },
    )
    .await;
    assert!(revoked.elapsed() <= Duration::from_secs(5));
    wait_for(
        "the agent to say its token was refused",
        Duration::from_secs(10),
        || async { a.log().contains("revoked").then_some(()) },
    )
    .await;
    let (status, text) = render(&http, &app.url, api.token().unwrap(), "agent-sales").await;
    assert_eq!(status, 503, "no agent serves it any more: {text}");
    assert!(text.contains("no connected agent"), "{text}");
    a.proc.kill9();
}

#[tokio::test]
async fn tokens_and_protocol_versions_are_checked_before_anything_is_served() {
    let app = Instance::start(with_key()).await;
    let admin = app.client().await;
    let (_, token) = agent::create(&admin, "probe").await;
    let ws = app.url.replace("http://", "ws://") + "/api/v1/agents/connect";

    // No token, a wrong one: 401 before any upgrade.
    for auth in [None, Some("qag_wrong")] {
        let mut req = ws.clone().into_client_request().unwrap();
        if let Some(t) = auth {
            req.headers_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
            other => panic!("expected 401, got {:?}", other.map(|_| ())),
        }
    }

    // A protocol the server does not speak is refused, naming both versions.
    let mut req = ws.clone().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    let hello = json!({"type": "hello", "protocol": 99, "agent_id": "x", "name": "future",
        "version": "9.0.0", "datasources": []});
    socket
        .send(Message::Text(hello.to_string().into()))
        .await
        .unwrap();
    let answer = socket.next().await.expect("an answer").expect("a message");
    let Message::Text(text) = answer else {
        panic!("{answer:?}")
    };
    let refused: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(refused["type"], "refused", "{refused}");
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("99") && message.contains("speaks 1"),
        "{message}"
    );
    // Nobody may create or revoke agents but admins.
    let editor = admin.signed_in_user("ed@test.local", "editor").await;
    let (status, _) = editor
        .send_json(
            reqwest::Method::POST,
            "/api/v1/agents",
            &json!({"name": "x"}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, out) = admin
        .send_json(
            reqwest::Method::POST,
            "/api/v1/agents",
            &json!({"name": "bad name"}),
        )
        .await;
    assert_eq!(
        (status, out["field"].as_str()),
        (422, Some("name")),
        "{out}"
    );
}

/// Whether a query of the `slow` template is running on the database now.
async fn running_sleeps(url: &str) -> bool {
    use sqlx::Connection;
    let Ok(mut conn) = sqlx::PgConnection::connect(url).await else {
        return false;
    };
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() \
         AND query LIKE '%pg_sleep(1)%'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap_or(0);
    n > 0
}

/// Renders `template` `n` times through `base`, `at_once` at a time; the failures.
async fn burst(base: &str, token: &str, template: &str, n: usize, at_once: usize) -> Vec<String> {
    let http = reqwest::Client::new();
    let results = futures_util::stream::iter(0..n)
        .map(|_| {
            let http = http.clone();
            async move { render(&http, base, token, template).await }
        })
        .buffer_unordered(at_once)
        .collect::<Vec<_>>()
        .await;
    results
        .into_iter()
        .filter(|(status, text)| *status != 200 || !text.contains("rows 2"))
        .map(|(status, text)| format!("{status}: {text}"))
        .collect()
}

/// Queues 4 jobs of `agent-sales` through `via`; each succeeds, claimed by instance `by`.
async fn jobs_succeed_on(via: &TestClient, by: &str, context: &str) {
    let mut jobs = Vec::new();
    for _ in 0..4 {
        let job = via.render("agent-sales", json!({})).await;
        jobs.push(job["id"].as_str().unwrap().to_owned());
    }
    for id in &jobs {
        let done = via.wait_job(id, Duration::from_secs(30)).await;
        assert_eq!(done["state"], "succeeded", "{done}\n{context}");
        assert_eq!(done["instance"], by, "{context}: {done}");
    }
}

/// The id of the instance agent `name` is connected to.
async fn holder(admin: &TestClient, name: &str) -> String {
    let a = agent::wait_connected(admin, name, None, Duration::from_secs(20)).await;
    a["instance"].as_str().expect("instance").to_owned()
}

#[tokio::test]
async fn two_agents_through_quire_lb_share_the_load_survive_a_kill_and_follow_a_drain() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = warehouse(&pg).await;
    let cluster = HaCluster::start(2).await;
    let upstreams: Vec<String> = cluster.instances.iter().map(|i| i.url.clone()).collect();
    let lb = Lb::start(&upstreams, &[]).await;
    let admin = cluster.client(0).await;
    let source = postgres_source("warehouse", &url);
    let (_, token_a) = agent::create(&admin, "dc1-a").await;
    let (_, token_b) = agent::create(&admin, "dc1-b").await;
    let mut a = Agent::start("dc1-a", &lb.url(""), &token_a, &source);
    let b = Agent::start("dc1-b", &lb.url(""), &token_b, &source);
    holder(&admin, "dc1-a").await;
    holder(&admin, "dc1-b").await;
    agent_template(&admin, "agent-sales", 0.05).await;
    let token = admin
        .token_client("renders")
        .await
        .token()
        .unwrap()
        .to_owned();

    // Both agents take queries.
    let failed = burst(&lb.url(""), &token, "agent-sales", 20, 4).await;
    assert!(failed.is_empty(), "{failed:?}");
    wait_for(
        "both agents to have served queries",
        Duration::from_secs(10),
        || async {
            let qa = agent::find(&admin, "dc1-a").await?["queries"].as_i64()?;
            let qb = agent::find(&admin, "dc1-b").await?["queries"].as_i64()?;
            (qa >= 3 && qb >= 3 && qa + qb >= 20).then_some(())
        },
    )
    .await;

    // One agent killed during a burst (queries of 200 ms, 8 at a time: both agents are busy
    // when it dies): every render still succeeds, the lost queries run again on the other.
    agent_template(&admin, "agent-burst", 0.2).await;
    let lb_url = lb.url("");
    let renders = tokio::spawn({
        let token = token.clone();
        async move { burst(&lb_url, &token, "agent-burst", 50, 8).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.proc.kill9();
    let failed = renders.await.unwrap();
    assert!(
        failed.is_empty(),
        "renders failed after an agent was killed: {failed:?}\n{}",
        b.log()
    );
    assert!(
        cluster
            .instances
            .iter()
            .any(|i| i.log().contains("agent lost during a query")),
        "the kill hit queries in flight, which ran again"
    );

    // The instance holding the other agent stops: the agent is back on the other instance
    // within 2 s, and the query it was running when the drain began still completes.
    agent_template(&admin, "slow", 1.0).await;
    let from = holder(&admin, "dc1-b").await;
    let i = cluster.index_of(&from).await;
    let other = cluster.id(1 - i).await;
    let survivor = cluster.client(1 - i).await;
    let base = cluster.instances[i].url.clone();
    let slow = tokio::spawn({
        let token = token.clone();
        async move { render(&reqwest::Client::new(), &base, &token, "slow").await }
    });
    wait_for(
        "the slow query to run on the database",
        Duration::from_secs(20),
        || async { running_sleeps(&url).await.then_some(()) },
    )
    .await;
    let stopped = Instant::now();
    cluster.instances[i].proc.terminate();
    agent::wait_connected(&survivor, "dc1-b", Some(&other), Duration::from_secs(10)).await;
    let moved = stopped.elapsed();
    assert!(
        moved <= Duration::from_secs(2),
        "the agent took {moved:?} to move"
    );
    let (status, text) = slow.await.unwrap();
    assert_eq!(
        status, 200,
        "the query in flight finished during the drain: {text}"
    );
    let failed = burst(&lb.url(""), &token, "agent-sales", 5, 2).await;
    assert!(failed.is_empty(), "{failed:?}");
}

#[tokio::test]
async fn jobs_reach_an_agent_on_another_instance_and_still_run_with_nats_down() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = warehouse(&pg).await;
    let mut cluster = HaCluster::start(2).await;
    let upstreams: Vec<String> = cluster.instances.iter().map(|i| i.url.clone()).collect();
    let lb = Lb::start(&upstreams, &[]).await;
    let (a_id, b_id) = (cluster.id(0).await, cluster.id(1).await);
    let on_a = cluster.client(0).await;
    let on_b = cluster.client(1).await;
    let (_, token) = agent::create(&on_a, "dc1-a").await;
    let agent = Agent::start(
        "dc1-a",
        &cluster.instances[0].url,
        &token,
        &postgres_source("warehouse", &url),
    );
    assert_eq!(holder(&on_b, "dc1-a").await, a_id);
    agent_template(&on_a, "agent-sales", 0.0).await;

    // Instance A takes no jobs: B claims them and reaches the agent on A over NATS.
    set_draining(&on_b, &a_id, true).await;
    jobs_succeed_on(&on_b, &b_id, &agent.log()).await;
    set_draining(&on_b, &a_id, false).await;

    // NATS down: only A reaches the agent. Synchronous renders through the lb still succeed
    // (B answers 503 untouched and the lb retries on A); jobs are claimed by A alone.
    cluster.nats.kill9();
    wait_for(
        "both instances to notice NATS is gone",
        Duration::from_secs(15),
        || async {
            for inst in &cluster.instances {
                let r: Value = reqwest::get(format!("{}/readyz", inst.url))
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                if r["nats"] != "disconnected" {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    let api = on_b.token_client("renders").await;
    let failed = burst(&lb.url(""), api.token().unwrap(), "agent-sales", 10, 2).await;
    assert!(failed.is_empty(), "{failed:?}");
    let (status, text) = render(
        &reqwest::Client::new(),
        &cluster.instances[1].url,
        api.token().unwrap(),
        "agent-sales",
    )
    .await;
    assert_eq!(status, 503, "B alone cannot reach the agent: {text}");
    assert!(text.contains("NATS"), "{text}");
    jobs_succeed_on(&on_b, &a_id, "only A reaches the agent").await;
}
