//! `scripts/bench agents`: what a query costs through `quire agent` on loopback, against the
//! same query run by the instance itself, on a PostgreSQL the harness starts and the release
//! binary (instance and agent):
//! - a 1,000-row query: p50 of `POST /api/v1/render` of a template that only counts the rows,
//!   through the agent vs direct, interleaved; the difference is what the agent adds (goal:
//!   < 5 ms);
//! - a 100,000-row query: the query time a render job reports ("N rows in M ms"), through the
//!   agent and direct (goal: ≥ 200,000 rows/s through the agent).
//!
//! `--quick` runs fewer rounds.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::agent::{self, Agent, postgres_source};
use support::app::{AppOptions, Instance, TestClient};
use support::postgres::Postgres;

/// Counts the rows without laying them out, so the render is mostly the query.
const COUNT: &str = r#"#set page(width: 8cm, height: 4cm)
#json("queries/orders.json").row_count rows
"#;

const ORDERS: &str = "SELECT id, customer, day, status, amount FROM orders ORDER BY id";

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (renders, jobs) = if quick { (20, 3) } else { (100, 7) };
    println!(
        "agents benchmark: PostgreSQL started here, release quire instance and agent on loopback"
    );
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = pg.fresh_database().await;
    fill(&url).await;
    let app = Instance::start(
        AppOptions::default().env("QUIRE_ENCRYPTION__KEY", "0123456789abcdef0123456789abcdef"),
    )
    .await;
    let api = app.client().await;
    let (_, token) = agent::create(&api, "bench").await;
    let agent = Agent::start("bench", &app.url, &token, &postgres_source("orders", &url));
    agent::wait_connected(&api, "bench", None, Duration::from_secs(30)).await;
    setup(&api, &url).await;

    println!("\n1,000-row query, {renders} renders each through POST /api/v1/render (interleaved)");
    let mut direct = Vec::new();
    let mut via = Vec::new();
    for _ in 0..renders {
        direct.push(render(&api, "direct-1k").await);
        via.push(render(&api, "agent-1k").await);
    }
    let (d, v) = (p50(&mut direct), p50(&mut via));
    let added = ms(v) - ms(d);
    println!("  direct          p50 {:>7.2} ms", ms(d));
    println!(
        "  through agent   p50 {:>7.2} ms  adds {added:.2} ms  goal < 5 ms: {}",
        ms(v),
        if added < 5.0 { "met" } else { "NOT met" }
    );

    println!(
        "\n100,000-row query, {jobs} render jobs each, query time as the job reports it (best, median)"
    );
    for (name, template) in [("direct", "direct-100k"), ("through agent", "agent-100k")] {
        let mut took = Vec::new();
        for _ in 0..jobs {
            took.push(job_query_time(&api, template).await);
        }
        let best = *took.iter().min().unwrap();
        let median = p50(&mut took);
        let rate = 100_000.0 / median.as_secs_f64();
        let goal = if name == "direct" {
            String::new()
        } else {
            format!(
                "  goal ≥ 200000 rows/s: {}",
                if rate >= 200_000.0 { "met" } else { "NOT met" }
            )
        };
        println!(
            "  {name:<14} best {:>7.1} ms  median {:>7.1} ms  {rate:>9.0} rows/s{goal}",
            ms(best),
            ms(median)
        );
    }
    drop(agent);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn p50(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

async fn render(api: &TestClient, template: &str) -> Duration {
    let started = Instant::now();
    let r = api
        .post("/api/v1/render", &json!({"template": template}))
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    r.bytes().await.unwrap();
    started.elapsed()
}

/// Runs a job of `template` and reads the query time from its "querying" event.
async fn job_query_time(api: &TestClient, template: &str) -> Duration {
    let job = api.render(template, json!({})).await;
    let id = job["id"].as_str().unwrap();
    let done = api.wait_job(id, Duration::from_secs(300)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let events = api.get_json(&format!("/api/v1/renders/{id}/events")).await;
    let message = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .find(|m| m.contains(" rows in "))
        .unwrap_or_else(|| panic!("no query summary in {events}"))
        .to_owned();
    // "orders: 100000 rows in 412 ms"
    let millis: u64 = message
        .rsplit(" rows in ")
        .next()
        .and_then(|t| t.trim_end_matches(" ms").parse().ok())
        .unwrap_or_else(|| panic!("unreadable summary {message}"));
    assert!(message.contains("100000 rows"), "{message}");
    Duration::from_millis(millis)
}

async fn fill(url: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE orders (id int PRIMARY KEY, customer text, day text, status text, \
         amount numeric(12,2));
         INSERT INTO orders SELECT i, 'Customer ' || (i % 97),
           '2026-' || lpad((1 + i % 12)::text, 2, '0') || '-' || lpad((1 + i % 28)::text, 2, '0'),
           (ARRAY['paid','open','overdue'])[1 + i % 3], ((i * 7919) % 100000) / 100.0 + 1
         FROM generate_series(1, 100000) AS i;",
    )
    .execute(&mut conn)
    .await
    .unwrap();
}

async fn setup(api: &TestClient, url: &str) {
    for body in [
        json!({"name": "direct", "kind": "postgres", "settings": {"url": url, "tls": "disable"}}),
        json!({"name": "via-agent", "kind": "agent", "settings": {"source": "orders"}}),
    ] {
        let r = api.post("/api/v1/datasources", &body).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    }
    for (name, ds, rows) in [
        ("direct-1k", "direct", 1000),
        ("agent-1k", "via-agent", 1000),
        ("direct-100k", "direct", 100_000),
        ("agent-100k", "via-agent", 100_000),
    ] {
        let body: Value = json!({"name": name, "files": {"main.typ": COUNT},
            "queries": [{"name": "orders", "datasource": ds,
                "text": format!("{ORDERS} LIMIT {rows}")}]});
        let r = api.post("/api/v1/templates", &body).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    }
}
