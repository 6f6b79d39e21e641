//! Queries: template versions query real data sources (PostgreSQL, MariaDB, SQLite) before they
//! render, with every parameter bound by the driver; the editor's runner shows the rows; the
//! JSON types are stable; mistakes are clear and writes are refused.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::app::{AppOptions, Instance, TestClient, pdf_text};
use crate::support::mariadb::MariaDb;
use crate::support::postgres::Postgres;

/// Lists the rows of query `name` as `region=amount` lines.
const LISTING: &str = r#"#set page(width: 12cm, height: auto, margin: 1cm)
#let q = json("queries/sales.json")
#for r in q.rows [ #r.region=#r.amount \ ]
rows #q.row_count
"#;

fn with_key() -> AppOptions {
    AppOptions::default().env("QUIRE_ENCRYPTION__KEY", "0123456789abcdef0123456789abcdef")
}

async fn send(
    client: &TestClient,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (u16, Value) {
    client.send_json(method, path, &body).await
}

async fn post(client: &TestClient, path: &str, body: Value) -> (u16, Value) {
    send(client, reqwest::Method::POST, path, body).await
}

async fn add_source(client: &TestClient, name: &str, kind: &str, settings: Value) {
    let body = json!({"name": name, "kind": kind, "settings": settings});
    let (status, answer) = post(client, "/api/v1/datasources", body).await;
    assert_eq!(status, 201, "{answer}");
}

/// Runs a query in the editor's runner.
async fn run(
    client: &TestClient,
    ds: &str,
    text: &str,
    parameters: Value,
    declared: Value,
) -> (u16, Value) {
    let body =
        json!({"datasource": ds, "text": text, "parameters": parameters, "declared": declared});
    post(client, "/api/v1/queries/run", body).await
}

/// A template listing query `sales` with a `region` and a `since` parameter.
fn sales_template(name: &str, ds: &str, text: &str) -> Value {
    json!({
        "name": name,
        "files": {"main.typ": LISTING},
        "parameters": [
            {"name": "region", "type": "string", "default": "north"},
            {"name": "since", "type": "date", "default": "2026-01-01"}
        ],
        "queries": [{"name": "sales", "datasource": ds, "text": text}]
    })
}

async fn render_pdf_text(client: &TestClient, template: &str, parameters: Value) -> String {
    let r = client
        .post(
            "/api/v1/render",
            &json!({"template": template, "parameters": parameters}),
        )
        .await;
    let status = r.status();
    let bytes = r.bytes().await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    pdf_text(&bytes)
}

async fn pg_sales(pg: &Postgres) -> String {
    use sqlx::Connection;
    let url = pg.fresh_database().await;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE sales (region text, day date, amount numeric(12,2), qty int, big bigint,
            ratio float8, at timestamptz, local timestamp, ok bool, tags text[], doc jsonb,
            raw bytea, exact numeric(30,10));
         INSERT INTO sales VALUES
           ('north', '2026-03-01', 12.50, 3, 9007199254740993, 0.25, '2026-03-01 10:30:00+00',
            '2026-03-01 10:30:00', true, '{a,b}', '{\"k\": [1, 2]}', '\\x0102',
            12345678901234567890.0123456789),
           ('north', '2025-12-31', 99.00, 1, 1, 1.5, NULL, NULL, false, '{}', 'null', NULL, 1),
           ('south', '2026-04-01', 7.00, 2, 2, 2.5, NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    url
}

#[tokio::test]
async fn postgres_rows_reach_the_template_with_bound_typed_parameters_and_stable_types() {
    let pg = Postgres::start();
    let url = pg_sales(&pg).await;
    let app = Instance::start(with_key()).await;
    let admin = app.client().await;
    add_source(&admin, "warehouse", "postgres", json!({"url": url})).await;

    // Types: every column as the README's rules say.
    let declared = json!([{"name": "since", "type": "date"}]);
    let (status, out) = run(
        &admin,
        "warehouse",
        "select * from sales where day >= :since order by day",
        json!({"since": "2026-01-01"}),
        declared.clone(),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["row_count"], 2, "the date bound as a date: {out}");
    let r = &out["rows"][0];
    assert_eq!(r["region"], "north");
    assert_eq!(r["day"], "2026-03-01");
    assert_eq!(r["amount"], json!(12.5));
    assert_eq!(r["qty"], json!(3));
    assert_eq!(r["big"], json!(9007199254740993_i64));
    assert_eq!(r["ratio"], json!(0.25));
    assert_eq!(r["at"], "2026-03-01T10:30:00Z");
    assert_eq!(r["local"], "2026-03-01T10:30:00");
    assert_eq!(r["ok"], true);
    assert_eq!(r["tags"], json!(["a", "b"]));
    assert_eq!(r["doc"], json!({"k": [1, 2]}));
    assert_eq!(r["raw"], "AQI=");
    assert_eq!(r["exact"], "12345678901234567890.0123456789");
    assert_eq!(out["rows"][1]["at"], Value::Null);
    assert_eq!(
        out["columns"][0], "region",
        "columns in the query's order: {out}"
    );
    assert!(out["took_ms"].as_f64().unwrap() >= 0.0);

    // A hostile value is a value: it matches nothing and changes nothing.
    let (status, out) = run(
        &admin,
        "warehouse",
        "select count(*) as n from sales where region = :region",
        json!({"region": "north'; DROP TABLE sales; --"}),
        json!([]),
    )
    .await;
    assert_eq!((status, &out["rows"][0]["n"]), (200, &json!(0)), "{out}");
    // `:name` inside strings and comments is text; `::` is a cast.
    let (status, out) = run(
        &admin,
        "warehouse",
        "select ':region' as lit, '2026-01-01'::date as d -- :nothing\n from sales limit 1",
        json!({}),
        json!([]),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["rows"][0]["lit"], ":region");

    // Writes are refused by the read-only transaction, in the database's words.
    let (status, out) = run(
        &admin,
        "warehouse",
        "delete from sales",
        json!({}),
        json!([]),
    )
    .await;
    assert_eq!(status, 422, "{out}");
    assert!(
        out["detail"].as_str().unwrap().contains("read-only"),
        "{out}"
    );
    // A syntax error points at the author's text.
    let (status, out) = run(
        &admin,
        "warehouse",
        "select :since,\n  regon from sales",
        json!({"since": "2026-01-01"}),
        declared,
    )
    .await;
    assert_eq!(status, 422, "{out}");
    let detail = out["detail"].as_str().unwrap();
    assert!(
        detail.contains("regon") && detail.contains("line 2, column 3"),
        "{detail}"
    );

    // The template renders the rows its parameters select; the table survived.
    let text =
        "select region, amount from sales where region = :region and day >= :since order by day";
    let (status, created) = post(
        &admin,
        "/api/v1/templates",
        sales_template("regional", "warehouse", text),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let pdf = render_pdf_text(
        &admin,
        "regional",
        json!({"region": "north", "since": "2025-01-01"}),
    )
    .await;
    assert!(
        pdf.contains("north=99") && pdf.contains("north=12.5") && pdf.contains("rows 2"),
        "{pdf}"
    );
    let pdf = render_pdf_text(&admin, "regional", json!({"region": "south"})).await;
    assert!(pdf.contains("south=7") && pdf.contains("rows 1"), "{pdf}");

    // The job path shows a querying stage with the rows and time of each query.
    let job = admin
        .post(
            "/api/v1/renders",
            &json!({"template": "regional", "parameters": {"since": "2025-01-01"}}),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap();
    let done = admin.wait_job(id, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let events = admin.token_client("ws").await.follow_ws(id, 0, 50).await;
    let querying: Vec<&Value> = events.iter().filter(|e| e["stage"] == "querying").collect();
    assert!(
        querying.iter().any(|e| e["message"]
            .as_str()
            .unwrap_or("")
            .contains("sales: 2 rows in")),
        "{events:?}"
    );
    assert!(pdf_text(&admin.pdf(id).await).contains("rows 2"));
}

#[tokio::test]
async fn mistakes_in_queries_are_refused_at_save_and_failures_name_the_source() {
    let pg = Postgres::start();
    let url = pg_sales(&pg).await;
    let app = Instance::start(with_key().env("QUIRE_QUERIES__MAX_ROWS", "2")).await;
    let admin = app.client().await;
    add_source(&admin, "warehouse", "postgres", json!({"url": url})).await;

    // An unknown parameter: 422 naming the query, line and column.
    let body = sales_template(
        "t1",
        "warehouse",
        "select *\nfrom sales where region = :regoin",
    );
    let (status, out) = post(&admin, "/api/v1/templates", body).await;
    assert_eq!(status, 422, "{out}");
    assert_eq!(out["field"], "queries[0].text", "{out}");
    let detail = out["detail"].as_str().unwrap();
    assert!(
        detail.contains("query sales, line 2, column 27: unknown parameter :regoin"),
        "{detail}"
    );
    // An unknown data source, and a parameter named like a built-in.
    let (status, out) = post(
        &admin,
        "/api/v1/templates",
        sales_template("t1", "nowhere", "select 1"),
    )
    .await;
    assert_eq!(
        (status, out["field"].as_str()),
        (422, Some("queries[0].datasource")),
        "{out}"
    );
    let (status, out) = post(
        &admin,
        "/api/v1/render",
        json!({"template": "invoice", "parameters": {"quire_user_email": "boss@example.com"}}),
    )
    .await;
    assert_eq!(
        (status, out["field"].as_str()),
        (422, Some("parameters.quire_user_email")),
        "{out}"
    );

    // More rows than queries.max_rows fail the render; it never silently misses rows.
    let body = sales_template(
        "all",
        "warehouse",
        "select region, amount from sales where :region = :region",
    );
    assert_eq!(post(&admin, "/api/v1/templates", body).await.0, 201);
    let (status, out) = post(&admin, "/api/v1/render", json!({"template": "all"})).await;
    assert_eq!(status, 422, "{out}");
    assert!(
        out["detail"]
            .as_str()
            .unwrap()
            .contains("more than 2 rows (queries.max_rows)"),
        "{out}"
    );
    assert_eq!(out["query"], "sales");

    // The data source's statement timeout stops a long query in the server.
    add_source(
        &admin,
        "slow",
        "postgres",
        json!({"url": url, "statement_timeout": "1s"}),
    )
    .await;
    let (status, out) = run(&admin, "slow", "select pg_sleep(5)", json!({}), json!([])).await;
    assert_eq!(status, 422, "{out}");
    assert!(
        out["detail"]
            .as_str()
            .unwrap()
            .contains("statement timeout"),
        "{out}"
    );

    // An unreachable source fails the job naming the data source.
    let gone = format!(
        "postgres://quire@127.0.0.1:{}/x",
        crate::support::free_port()
    );
    add_source(&admin, "gone", "postgres", json!({"url": gone})).await;
    let body = sales_template("down", "gone", "select 1 as region, 2 as amount");
    assert_eq!(post(&admin, "/api/v1/templates", body).await.0, 201);
    let job = admin.render("down", json!({})).await;
    let done = admin
        .wait_job(job["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["error"]["kind"], "query", "{done}");
    assert!(
        done["error"]["message"]
            .as_str()
            .unwrap()
            .contains("data source gone"),
        "{done}"
    );

    // Viewers render, but never see a query's text, nor run queries.
    let viewer = admin.signed_in_user("viewer@example.com", "viewer").await;
    let t = viewer.get_json("/api/v1/templates/all").await;
    assert_eq!(
        t["version"]["queries"],
        json!([{"name": "sales", "datasource": "warehouse"}]),
        "{t}"
    );
    assert!(!t.to_string().contains("select"), "{t}");
    let (status, _) = run(&viewer, "warehouse", "select 1", json!({}), json!([])).await;
    assert_eq!(status, 403);
    let editor = admin.signed_in_user("editor@example.com", "editor").await;
    let t = editor.get_json("/api/v1/templates/all").await;
    assert!(
        t["version"]["queries"][0]["text"]
            .as_str()
            .unwrap()
            .contains("select"),
        "{t}"
    );
}

#[tokio::test]
async fn mariadb_and_sqlite_sources_feed_templates_too() {
    let db = MariaDb::start();
    db.sql("CREATE DATABASE shop");
    db.sql(
        "CREATE TABLE shop.sales (region VARCHAR(20), amount DECIMAL(10,2), qty INT UNSIGNED, \
         at DATETIME, ok BOOLEAN, doc JSON, raw VARBINARY(4))",
    );
    db.sql(
        "INSERT INTO shop.sales VALUES ('north', 12.50, 3, '2026-03-01 10:30:00', 1, '{\"k\": 1}', x'0102'), \
         ('south', 7.00, 2, NULL, 0, NULL, NULL)",
    );
    let app = Instance::start(AppOptions::default()).await;
    let admin = app.client().await;
    let settings = json!({"host": "127.0.0.1", "port": db.port, "database": "shop", "user": "root", "tls": "disable"});
    add_source(&admin, "shop", "mysql", settings).await;
    let (status, out) = run(
        &admin,
        "shop",
        "select * from sales where region = :region or qty > :qty order by region",
        json!({"region": "north", "qty": 5}),
        json!([{"name": "qty", "type": "integer"}]),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["row_count"], 1, "{out}");
    let r = &out["rows"][0];
    assert_eq!(r["amount"], json!(12.5));
    assert_eq!(r["qty"], json!(3));
    assert_eq!(r["at"], "2026-03-01T10:30:00");
    assert_eq!(r["ok"], true);
    assert_eq!(r["raw"], "AQI=");
    let (status, out) = run(
        &admin,
        "shop",
        "update sales set qty = 0",
        json!({}),
        json!([]),
    )
    .await;
    assert_eq!(status, 422, "writes are refused: {out}");
    let text = "select region, amount from sales where region = :region and :since = :since";
    assert_eq!(
        post(
            &admin,
            "/api/v1/templates",
            sales_template("shop", "shop", text)
        )
        .await
        .0,
        201
    );
    let pdf = render_pdf_text(&admin, "shop", json!({"region": "south"})).await;
    assert!(pdf.contains("south=7") && pdf.contains("rows 1"), "{pdf}");

    // SQLite: a file on the server, and the built-in :quire_user_email.
    let me = admin.get_json("/api/v1/auth/me").await;
    let email = me["user"]["email"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sales.db");
    {
        use sqlx::{ConnectOptions, Connection};
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&file)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::query("CREATE TABLE sales (region TEXT, amount REAL, owner TEXT)")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO sales VALUES ('east', 5.5, ?), ('west', 6.5, 'other@example.com')",
        )
        .bind(&email)
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
    add_source(
        &admin,
        "local",
        "sqlite",
        json!({"path": file.display().to_string()}),
    )
    .await;
    let text = "select region, amount from sales where owner = :quire_user_email";
    assert_eq!(
        post(
            &admin,
            "/api/v1/templates",
            sales_template("mine", "local", text)
        )
        .await
        .0,
        201
    );
    let pdf = render_pdf_text(&admin, "mine", json!({})).await;
    assert!(pdf.contains("east=5.5") && pdf.contains("rows 1"), "{pdf}");
}

/// A JSON API on a free port: `/regions/{region}/sales?since=…` answers the rows of that region
/// (echoing what it was asked, to show how parameters were encoded); `/away` redirects to the
/// cloud metadata address.
async fn sales_api() -> u16 {
    use axum::extract::{Path, Query, RawQuery};
    use axum::response::Redirect;
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/regions/{region}/sales",
            get(
                |Path(region): Path<String>,
                 Query(q): Query<std::collections::HashMap<String, String>>,
                 RawQuery(raw): RawQuery,
                 headers: axum::http::HeaderMap| async move {
                    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
                    if key != Some("k3y") {
                        return (
                            axum::http::StatusCode::UNAUTHORIZED,
                            axum::Json(json!({"error": "key"})),
                        );
                    }
                    let rows = json!([
                        {"region": region, "amount": 10, "since": q.get("since"), "raw": raw},
                        {"region": region, "amount": 20}
                    ]);
                    (
                        axum::http::StatusCode::OK,
                        axum::Json(json!({"data": {"items": rows}})),
                    )
                },
            ),
        )
        .route(
            "/away",
            get(|| async { Redirect::temporary("http://169.254.169.254/latest/meta-data/") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

#[tokio::test]
async fn http_and_csv_sources_feed_templates_and_http_stays_where_it_is_allowed() {
    let port = sales_api().await;
    let app = Instance::start(with_key()).await;
    let admin = app.client().await;
    let settings = json!({"base_url": format!("http://127.0.0.1:{port}"),
        "headers": {"X-Api-Key": "k3y"}, "rows": "/data/items"});
    add_source(&admin, "api", "http", settings).await;
    let listed = admin.get_json("/api/v1/datasources/api").await;
    assert_eq!(
        listed["settings"]["headers"]["X-Api-Key"], "set",
        "{listed}"
    );

    // A hostile value stays one path segment and one query value.
    let (status, out) = run(
        &admin,
        "api",
        "/regions/:region/sales?since=:since",
        json!({"region": "north/../admin?x=1", "since": "2026-01-01&evil=1"}),
        json!([{"name": "since", "type": "date"}]),
    )
    .await;
    assert_eq!(status, 422, "a date parameter must be a date: {out}");
    let (status, out) = run(
        &admin,
        "api",
        "/regions/:region/sales?since=:since",
        json!({"region": "north/../admin?x=1", "since": "2026-01-01&evil=1"}),
        json!([]),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["rows"][0]["region"], "north/../admin?x=1", "{out}");
    assert_eq!(out["rows"][0]["since"], "2026-01-01&evil=1", "{out}");
    assert!(
        !out["rows"][0]["raw"].as_str().unwrap().contains("evil=1&"),
        "{out}"
    );
    let mut columns: Vec<&str> = out["columns"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    columns.sort_unstable();
    assert_eq!(columns, ["amount", "raw", "region", "since"]);

    // Redirects to the metadata address, and the address itself, are refused.
    let (status, out) = run(&admin, "api", "/away", json!({}), json!([])).await;
    assert_ne!(status, 200, "{out}");
    assert!(
        out["detail"]
            .as_str()
            .unwrap()
            .contains("169.254.169.254 is not among"),
        "{out}"
    );
    add_source(
        &admin,
        "metadata",
        "http",
        json!({"base_url": "http://169.254.169.254"}),
    )
    .await;
    let (status, out) = run(
        &admin,
        "metadata",
        "/latest/meta-data/",
        json!({}),
        json!([]),
    )
    .await;
    assert_ne!(status, 200, "{out}");
    assert!(
        out["detail"].as_str().unwrap().contains("metadata"),
        "{out}"
    );

    // An HTTP query in a template, rendered.
    let body = sales_template("api", "api", "/regions/:region/sales");
    let (status, out) = post(&admin, "/api/v1/templates", body).await;
    assert_eq!(status, 201, "{out}");
    let pdf = render_pdf_text(&admin, "api", json!({"region": "east"})).await;
    assert!(pdf.contains("east=10") && pdf.contains("east=20"), "{pdf}");

    // CSV: uploaded once, kept in Quire's database, columns picked by the query text.
    add_source(
        &admin,
        "prices",
        "csv",
        json!({"delimiter": ";", "file_name": "prices.csv"}),
    )
    .await;
    let upload = |body: &'static str| {
        admin
            .request(reqwest::Method::PUT, "/api/v1/datasources/prices/file")
            .header("content-type", "text/csv")
            .body(body)
            .send()
    };
    let bad = upload("region;amount\nnorth;1;extra\n").await.unwrap();
    assert_eq!(bad.status(), 422);
    let good = upload("region;amount;note\nwest;5;a\nsouth;6;b\n")
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    assert_eq!(good.json::<Value>().await.unwrap()["rows"], 2);
    let (status, out) = run(&admin, "prices", "region, amount", json!({}), json!([])).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["columns"], json!(["region", "amount"]));
    assert_eq!(out["rows"][1], json!({"region": "south", "amount": "6"}));
    let body = sales_template("csv", "prices", "region, amount");
    assert_eq!(post(&admin, "/api/v1/templates", body).await.0, 201);
    let pdf = render_pdf_text(&admin, "csv", json!({})).await;
    assert!(pdf.contains("west=5") && pdf.contains("south=6"), "{pdf}");
}

#[tokio::test]
async fn the_sales_example_queries_its_bundled_data_with_no_setup() {
    let app = Instance::start(AppOptions::default()).await;
    let admin = app.client().await;
    let pdf = render_pdf_text(&admin, "sales", json!({})).await;
    assert!(
        pdf.contains("Sales report") && pdf.contains("2000 orders"),
        "{pdf}"
    );
    let north = render_pdf_text(&admin, "sales", json!({"region": "North"})).await;
    assert!(
        north.contains("Region: North") && north.contains("500 orders"),
        "{north}"
    );
    let sources = admin.get_json("/api/v1/datasources").await;
    assert_eq!(sources[0]["name"], "sales-demo", "{sources}");
}
