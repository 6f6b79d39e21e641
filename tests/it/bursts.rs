//! Bursting: a schedule's burst query makes one report per row, each mailed to the row's
//! recipients through a real SMTP conversation; per-row review; and exactly once per row while
//! the scheduler's leader is killed in the middle of a burst.

use std::collections::HashMap;
use std::time::Duration;

use mail_parser::MimeHeaders;
use serde_json::{Value, json};

use crate::support::app::{AppOptions, Instance, TestClient, pdf_text};
use crate::support::ha::HaCluster;
use crate::support::smtp::{Received, SmtpSink};
use crate::support::wait_for;

const KEY: &str = "0123456789abcdef0123456789abcdef";

/// A statement naming its customer, who comes from the burst row.
const STATEMENT: &str = r#"#set page(width: 12cm, height: auto, margin: 1cm)
= Statement for #sys.inputs.customer
Period ending #sys.inputs.at("quire_period_end", default: "none")
"#;

fn mail_env(sink: &SmtpSink) -> AppOptions {
    AppOptions::default()
        .env("QUIRE_ENCRYPTION__KEY", KEY)
        .env("QUIRE_MAIL__SMTP_URL", &sink.url())
        .env("QUIRE_MAIL__FROM", "Reports <reports@quire.test>")
        .env("QUIRE_MAIL__RETRY_INITIAL", "1s")
        .env("QUIRE_MAIL__RETRY_MAX", "2s")
}

async fn post(client: &TestClient, path: &str, body: Value) -> (u16, Value) {
    client.send_json(reqwest::Method::POST, path, &body).await
}

async fn statement_template(api: &TestClient) {
    let body = json!({
        "name": "statement",
        "files": {"main.typ": STATEMENT},
        "parameters": [{"name": "customer", "type": "string", "required": true}]
    });
    let (status, out) = post(api, "/api/v1/templates", body).await;
    assert_eq!(status, 201, "{out}");
}

/// A cron expression for one second, `secs` from now (UTC).
fn once_in(secs: i64) -> String {
    let at = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC);
    format!(
        "{} {} {} {} {} *",
        at.second(),
        at.minute(),
        at.hour(),
        at.day(),
        at.month()
    )
}

fn burst_schedule(name: &str, cron: &str, datasource: &str, text: &str) -> Value {
    json!({
        "name": name,
        "template": "statement",
        "cron": cron,
        "timezone": "UTC",
        "subject": "Your statement",
        "burst": {
            "datasource": datasource,
            "text": text,
            "key_column": "id",
            "recipients_column": "email",
            "parameters": {"customer": "name"}
        }
    })
}

async fn schedule(api: &TestClient, body: Value) -> Value {
    let (status, out) = post(api, "/api/v1/schedules", body).await;
    assert_eq!(status, 201, "{out}");
    out
}

/// The schedule's one occurrence, once it is in `state`.
async fn occurrence_in(api: &TestClient, s: &Value, state: &str, timeout: Duration) -> Value {
    let path = format!(
        "/api/v1/schedules/{}/occurrences",
        s["id"].as_str().unwrap()
    );
    wait_for(&format!("an occurrence {state}"), timeout, || async {
        let list = api.get_json(&path).await;
        list.as_array()?
            .iter()
            .find(|o| o["state"] == state)
            .cloned()
    })
    .await
}

fn pdf_of(m: &Received) -> Vec<u8> {
    let msg = mail_parser::MessageParser::default()
        .parse(&m.data)
        .expect("a MIME message");
    msg.attachments()
        .find(|a| a.is_content_type("application", "pdf"))
        .expect("a PDF attachment")
        .contents()
        .to_vec()
}

/// Who got a statement for whom: recipient -> the customer named in the PDF.
fn statements(received: &[Received]) -> HashMap<String, String> {
    received
        .iter()
        .map(|m| {
            let text = pdf_text(&pdf_of(m));
            let customer = ["Acme", "Bolt", "Crane"]
                .into_iter()
                .find(|c| text.contains(&format!("Statement for {c}")))
                .unwrap_or("?")
                .to_owned();
            (m.to.join(","), customer)
        })
        .collect()
}

fn expected() -> HashMap<String, String> {
    [
        ("acme@example.com", "Acme"),
        ("bolt@example.com", "Bolt"),
        ("crane@example.com", "Crane"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect()
}

async fn sqlite_customers(dir: &std::path::Path) -> String {
    use sqlx::{ConnectOptions, Connection};
    let file = dir.join("customers.db");
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&file)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE customers (id INTEGER, name TEXT, email TEXT);
         INSERT INTO customers VALUES (1, 'Acme', 'acme@example.com'),
           (2, 'Bolt', 'bolt@example.com'), (3, 'Crane', 'crane@example.com');",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    file.display().to_string()
}

#[tokio::test]
async fn a_burst_mails_each_customer_their_own_statement() {
    let sink = SmtpSink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = sqlite_customers(dir.path()).await;
    let app = Instance::start(mail_env(&sink)).await;
    let api = app.client().await;
    let (status, out) = post(
        &api,
        "/api/v1/datasources",
        json!({"name": "crm", "kind": "sqlite", "settings": {"path": path}}),
    )
    .await;
    assert_eq!(status, 201, "{out}");
    statement_template(&api).await;

    // Mistakes are refused when the schedule is saved.
    let mut bad = burst_schedule(
        "bad",
        "0 0 6 * * MON",
        "crm",
        "select * from customers where id = :nope",
    );
    let (status, out) = post(&api, "/api/v1/schedules", bad.clone()).await;
    assert_eq!(
        (status, out["field"].as_str()),
        (422, Some("burst.text")),
        "{out}"
    );
    bad["burst"]["text"] = json!("select 1");
    bad["burst"]["parameters"] = json!({"customer": "name", "undeclared": "name"});
    let (status, out) = post(&api, "/api/v1/schedules", bad).await;
    assert_eq!(
        (status, out["field"].as_str()),
        (422, Some("burst.parameters.undeclared")),
        "{out}"
    );

    let text = "select id, name, email from customers order by id";
    let s = schedule(&api, burst_schedule("Statements", &once_in(3), "crm", text)).await;
    let o = occurrence_in(&api, &s, "delivered", Duration::from_secs(60)).await;
    assert_eq!(o["burst"]["rows"], 3, "{o}");
    assert_eq!(o["burst"]["counts"]["mailed"], 3, "{o}");
    assert_eq!(o["mails"].as_array().unwrap().len(), 3, "{o}");
    let got = statements(&sink.received());
    assert_eq!(got, expected(), "each customer got their own statement");
    let rows = api
        .get_json(&format!(
            "/api/v1/occurrences/{}/rows",
            o["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(rows[0]["key"], "1");
    assert_eq!(rows[0]["parameters"]["customer"], "Acme");
    assert!(
        rows[0]["parameters"]["quire_period_end"].is_string(),
        "the built-ins travel with each row: {rows}"
    );
}

#[tokio::test]
async fn held_burst_rows_are_approved_one_at_a_time_or_all_together() {
    let sink = SmtpSink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = sqlite_customers(dir.path()).await;
    let app = Instance::start(mail_env(&sink)).await;
    let api = app.client().await;
    let body = json!({"name": "crm", "kind": "sqlite", "settings": {"path": path}});
    assert_eq!(post(&api, "/api/v1/datasources", body).await.0, 201);
    statement_template(&api).await;
    let text = "select id, name, email from customers order by id";
    let mut body = burst_schedule("Reviewed", &once_in(3), "crm", text);
    body["hold_for_review"] = json!(true);
    let s = schedule(&api, body).await;
    let o = occurrence_in(&api, &s, "held", Duration::from_secs(60)).await;
    let id = o["id"].as_str().unwrap();
    assert_eq!(o["burst"]["counts"]["held"], 3, "{o}");
    assert!(sink.received().is_empty(), "nothing goes out before review");

    let (status, one) = post(
        &api,
        &format!("/api/v1/occurrences/{id}/rows/2/approve"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["state"], "held", "two rows still wait: {one}");
    let (status, _) = post(
        &api,
        &format!("/api/v1/occurrences/{id}/rows/3/reject"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = post(
        &api,
        &format!("/api/v1/occurrences/{id}/rows/3/approve"),
        json!({}),
    )
    .await;
    assert_eq!(status, 409, "a rejected row is not held any more");
    let (status, all) = post(
        &api,
        &format!("/api/v1/occurrences/{id}/approve"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{all}");
    occurrence_in(&api, &s, "delivered", Duration::from_secs(30)).await;
    let got = statements(&sink.received());
    let mut want = expected();
    want.remove("crane@example.com");
    assert_eq!(got, want);
}

#[tokio::test]
async fn every_row_of_a_burst_is_mailed_once_while_the_leader_dies() {
    let sink = SmtpSink::start().await;
    let mut c = HaCluster::start(0).await;
    for _ in 0..3 {
        c.add(mail_env(&sink)).await;
    }
    let api = c.client(0).await;
    // The customers live in their own PostgreSQL database; the burst query takes 4 s, so the
    // leader can be killed while it runs.
    let crm = c.pg.fresh_database().await;
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&crm).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE customers (id int, name text, email text);
             INSERT INTO customers VALUES (1, 'Acme', 'acme@example.com'),
               (2, 'Bolt', 'bolt@example.com'), (3, 'Crane', 'crane@example.com');",
        )
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let body = json!({"name": "crm", "kind": "postgres", "settings": {"url": crm}});
    assert_eq!(post(&api, "/api/v1/datasources", body).await.0, 201);
    statement_template(&api).await;
    let leader = c
        .wait_single_leader(&api, Duration::from_secs(30), None)
        .await;
    let text =
        "select c.id, c.name, c.email from customers c, (select pg_sleep(4)) s order by c.id";
    let s = schedule(
        &api,
        burst_schedule("HA statements", &once_in(3), "crm", text),
    )
    .await;
    // Mid-burst: the fire time has passed and the burst query is running on the leader.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let i = c.index_of(&leader).await;
    c.instances[i].proc.kill9();
    let survivor = c.client((i + 1) % 3).await;
    let o = occurrence_in(&survivor, &s, "delivered", Duration::from_secs(90)).await;
    assert_eq!(o["burst"]["rows"], 3, "{o}");
    let mails = o["mails"].as_array().unwrap();
    assert_eq!(mails.len(), 3, "one mail per row, once: {o}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let received = sink.received();
    assert_eq!(received.len(), 3, "each customer mailed once");
    assert_eq!(statements(&received), expected());
    let occurrences = survivor
        .get_json(&format!(
            "/api/v1/schedules/{}/occurrences",
            s["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(occurrences.as_array().unwrap().len(), 1, "{occurrences}");
}
