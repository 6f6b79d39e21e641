//! `scripts/bench datasources`: what fetching its own data costs a report, on real servers the
//! harness starts (PostgreSQL, MariaDB) and the release `quire` binary:
//! - conversion: a 100,000-row query read and converted to JSON rows in-process (goal:
//!   ≥ 500,000 rows/s), per server;
//! - a 1,000-row listing rendered through `POST /api/v1/render`, its rows queried from
//!   PostgreSQL and from MariaDB, interleaved with the same rows posted as JSON: the end-to-end
//!   difference, and query + conversion time (measured in-process, as a render runs it) as a
//!   share of the render time (goal: < 10%).
//!
//! `--quick` renders fewer times.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::time::{Duration, Instant};

use quire::connector::pool::Pool;
use quire::connector::sql;
use quire::connector::statement::{Dialect, parse};
use quire::connector::table::{Limits, Overflow};
use serde_json::{Value, json};
use support::app::{AppOptions, Instance, TestClient};
use support::mariadb::MariaDb;
use support::postgres::Postgres;

/// The listing: a table of every row.
const LISTING: &str = r#"#set page(paper: "a4", margin: 1.5cm)
#set text(size: 8pt)
#let rows = if sys.inputs.at("source", default: "json") == "json" { json("data.json").rows } else { json("queries/orders.json").rows }
#table(columns: 5, ..rows.map(r => (str(r.id), r.customer, r.day, r.status, str(r.amount))).flatten())
"#;

const ORDERS: &str = "SELECT id, customer, day, status, amount FROM orders ORDER BY id";

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let renders = if quick { 10 } else { 40 };
    println!("data sources benchmark: PostgreSQL and MariaDB started here, release quire binary");

    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let pg_url = pg.fresh_database().await;
    fill_postgres(&pg_url).await;
    let maria = tokio::task::spawn_blocking(MariaDb::start).await.unwrap();
    fill_mariadb(&maria);
    let my_url = format!("mysql://root@127.0.0.1:{}/bench", maria.port);

    println!("\nconversion: 100,000 rows (id, customer, day, status, amount numeric) to JSON rows");
    let pg_pool = Pool::Postgres(sqlx::postgres::PgPool::connect(&pg_url).await.unwrap());
    let my_pool = Pool::Mysql(sqlx::mysql::MySqlPool::connect(&my_url).await.unwrap());
    for (name, pool, dialect) in [
        ("PostgreSQL", &pg_pool, Dialect::Postgres),
        ("MariaDB", &my_pool, Dialect::Mysql),
    ] {
        let best = convert(pool, dialect, 100_000, 3).await;
        let rate = 100_000.0 / best.as_secs_f64();
        println!(
            "  {name:<10} {:>8.1} ms  {:>9.0} rows/s  goal ≥ 500000: {}",
            ms(best),
            rate,
            if rate >= 500_000.0 { "met" } else { "NOT met" }
        );
    }

    println!("\n1,000-row listing, {renders} renders each through POST /api/v1/render (p50)");
    let app = Instance::start(
        AppOptions::default().env("QUIRE_ENCRYPTION__KEY", "0123456789abcdef0123456789abcdef"),
    )
    .await;
    let api = app.client().await;
    setup(&api, &pg_url, &my_url).await;
    // Interleaved (JSON, PostgreSQL, MariaDB, JSON, …) so that drift on a busy machine falls on
    // all three alike.
    let bodies = [
        json!({"template": "listing-json", "data": rows_json(1000)}),
        json!({"template": "listing-pg"}),
        json!({"template": "listing-my"}),
    ];
    let mut times: [Vec<Duration>; 3] = Default::default();
    for _ in 0..renders {
        for (body, t) in bodies.iter().zip(times.iter_mut()) {
            t.push(render(&api, body).await);
        }
    }
    let [json_p50, pg_p50, my_p50] = times.map(|mut t| {
        t.sort();
        t[t.len() / 2]
    });
    println!("  posted JSON            {:>7.1} ms", ms(json_p50));
    for (name, pool, dialect, total) in [
        ("PostgreSQL", &pg_pool, Dialect::Postgres, pg_p50),
        ("MariaDB", &my_pool, Dialect::Mysql, my_p50),
    ] {
        let fetch = convert(pool, dialect, 1000, 20).await;
        let added = (total.as_secs_f64() / json_p50.as_secs_f64() - 1.0) * 100.0;
        let share = fetch.as_secs_f64() / json_p50.as_secs_f64() * 100.0;
        println!(
            "  queried from {name:<10} {:>7.1} ms  adds {added:+.1}% end to end; query + \
             conversion {:.2} ms = {share:.1}% of the render  goal < 10%: {}",
            ms(total),
            ms(fetch),
            if share < 10.0 { "met" } else { "NOT met" }
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The best of `rounds` reads of the first `rows` orders, converted.
async fn convert(pool: &Pool, dialect: Dialect, rows: usize, rounds: usize) -> Duration {
    let text = format!("{ORDERS} LIMIT {rows}");
    let statement = parse(&text, dialect).unwrap();
    let limits = Limits {
        max_rows: rows,
        max_bytes: usize::MAX,
        timeout: Duration::from_secs(120),
        overflow: Overflow::Fail,
    };
    let mut best = Duration::MAX;
    for _ in 0..rounds {
        let started = Instant::now();
        let table = sql::run(pool, &statement, &[], &limits).await.unwrap();
        assert_eq!(table.row_count, rows);
        best = best.min(started.elapsed());
    }
    best
}

async fn render(api: &TestClient, body: &Value) -> Duration {
    let started = Instant::now();
    let r = api.post("/api/v1/render", body).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    r.bytes().await.unwrap();
    started.elapsed()
}

fn rows_json(n: usize) -> Value {
    let rows: Vec<Value> = (1..=n)
        .map(|i| {
            json!({"id": i, "customer": format!("Customer {}", i % 97), "day": day(i),
                "status": status(i), "amount": amount(i)})
        })
        .collect();
    json!({ "rows": rows })
}

fn day(i: usize) -> String {
    format!("2026-{:02}-{:02}", 1 + i % 12, 1 + i % 28)
}

fn status(i: usize) -> &'static str {
    ["paid", "open", "overdue"][i % 3]
}

fn amount(i: usize) -> f64 {
    ((i * 7919) % 100_000) as f64 / 100.0 + 1.0
}

async fn fill_postgres(url: &str) {
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

fn fill_mariadb(db: &MariaDb) {
    db.sql("CREATE DATABASE bench");
    db.sql(
        "CREATE TABLE bench.orders (id INT PRIMARY KEY, customer VARCHAR(40), day VARCHAR(10), \
         status VARCHAR(10), amount DECIMAL(12,2))",
    );
    db.sql(
        "INSERT INTO bench.orders SELECT seq, CONCAT('Customer ', seq % 97), \
         CONCAT('2026-', LPAD(1 + seq % 12, 2, '0'), '-', LPAD(1 + seq % 28, 2, '0')), \
         ELT(1 + seq % 3, 'paid', 'open', 'overdue'), ((seq * 7919) % 100000) / 100.0 + 1 \
         FROM bench.seq_1_to_100000",
    );
}

async fn setup(api: &TestClient, pg_url: &str, my_url: &str) {
    for (name, kind, url) in [("pg", "postgres", pg_url), ("my", "mysql", my_url)] {
        let body = json!({"name": name, "kind": kind, "settings": {"url": url, "tls": "disable"}});
        let r = api.post("/api/v1/datasources", &body).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    }
    let template = |name: &str, source: &str, queries: Value| {
        json!({"name": name, "files": {"main.typ": LISTING},
            "parameters": [{"name": "source", "type": "string", "default": source}],
            "queries": queries})
    };
    let query = |ds: &str| json!([{"name": "orders", "datasource": ds, "text": format!("{ORDERS} LIMIT 1000")}]);
    for body in [
        template("listing-json", "json", json!([])),
        template("listing-pg", "query", query("pg")),
        template("listing-my", "query", query("my")),
    ] {
        let r = api.post("/api/v1/templates", &body).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    }
}
