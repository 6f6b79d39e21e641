//! Data sources: admins register PostgreSQL servers and SQLite files; secret settings are sealed
//! and never shown again; connection tests run against real servers and are recorded.

use serde_json::{Value, json};

use crate::support::app::{AppOptions, Instance, TestClient};
use crate::support::mariadb::MariaDb;
use crate::support::postgres::Postgres;

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn with_key() -> AppOptions {
    AppOptions::default().env("QUIRE_ENCRYPTION__KEY", KEY)
}

async fn send(
    client: &TestClient,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (u16, Value) {
    client.send_json(method, path, &body).await
}

async fn test_source(client: &TestClient, name: &str) -> Value {
    let r = client
        .post(&format!("/api/v1/datasources/{name}/test"), &json!({}))
        .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Replaces data source `name` with `body`.
async fn replace(client: &TestClient, name: &str, body: Value) {
    let path = format!("/api/v1/datasources/{name}");
    let (status, answer) = send(client, reqwest::Method::PUT, &path, body).await;
    assert_eq!(status, 200, "{answer}");
}

/// Everything Quire wrote to its SQLite database, as text.
fn stored_bytes(app: &Instance) -> String {
    ["quire.db", "quire.db-wal"]
        .iter()
        .filter_map(|f| std::fs::read(app.data_dir.join(f)).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect()
}

#[tokio::test]
async fn a_postgres_source_keeps_its_password_sealed_and_tests_against_the_server() {
    let pg = Postgres::start();
    let db_url = pg.fresh_database().await;
    let secret_url = db_url.replace("quire@", "quire:pw-Sekr1t@");
    let app = Instance::start(with_key()).await;
    let admin = app.client().await;
    let body = json!({"name": "warehouse", "kind": "postgres",
        "settings": {"url": secret_url, "statement_timeout": "5s"}});
    let (status, created) = send(&admin, reqwest::Method::POST, "/api/v1/datasources", body).await;
    assert_eq!(status, 201, "{created}");
    assert!(!created.to_string().contains("Sekr1t"), "{created}");
    assert_eq!(created["settings"]["statement_timeout"], "5s");

    let tested = test_source(&admin, "warehouse").await;
    assert_eq!(tested["ok"], true, "{tested}");
    assert!(
        tested["server_version"]
            .as_str()
            .unwrap()
            .contains("PostgreSQL"),
        "{tested}"
    );
    assert!(tested["round_trip_ms"].as_f64().unwrap() >= 0.0);
    assert!(tested["datasource"]["checked_at"].is_string());
    assert!(
        !stored_bytes(&app).contains("Sekr1t"),
        "the password is sealed at rest"
    );

    // "set" keeps the stored URL; a changed one that cannot connect fails the test, recorded.
    let keep = json!({"name": "warehouse", "kind": "postgres", "settings": {"url": "set"}});
    replace(&admin, "warehouse", keep).await;
    assert_eq!(test_source(&admin, "warehouse").await["ok"], true);
    let gone = db_url.rsplit_once('/').unwrap().0.to_owned() + "/no_such_db";
    let wrong = json!({"name": "warehouse", "kind": "postgres", "settings": {"url": gone}});
    replace(&admin, "warehouse", wrong).await;
    let failed = test_source(&admin, "warehouse").await;
    assert_eq!(failed["ok"], false, "{failed}");
    assert!(
        failed["error"].as_str().unwrap().contains("no_such_db"),
        "{failed}"
    );
    let listed = admin.get_json("/api/v1/datasources/warehouse").await;
    assert!(
        listed["last_error"]
            .as_str()
            .unwrap()
            .contains("no_such_db")
    );
}

#[tokio::test]
async fn a_mysql_source_signs_in_to_mariadb_with_its_sealed_password() {
    let db = MariaDb::start();
    db.sql("CREATE DATABASE shop");
    db.sql("CREATE USER 'reader'@'%' IDENTIFIED BY 'pw-Sekr1t'");
    db.sql("GRANT SELECT ON shop.* TO 'reader'@'%'");
    let app = Instance::start(with_key()).await;
    let admin = app.client().await;
    let settings = |password: &str| {
        json!({"host": "127.0.0.1", "port": db.port, "database": "shop", "user": "reader",
            "password": password, "tls": "disable"})
    };
    let body = json!({"name": "shop", "kind": "mysql", "settings": settings("pw-Sekr1t")});
    let (status, created) = send(&admin, reqwest::Method::POST, "/api/v1/datasources", body).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["settings"]["password"], "set");
    assert!(
        !stored_bytes(&app).contains("Sekr1t"),
        "the password is sealed at rest"
    );
    let tested = test_source(&admin, "shop").await;
    assert_eq!(tested["ok"], true, "{tested}");
    assert!(
        tested["server_version"]
            .as_str()
            .unwrap()
            .contains("MariaDB"),
        "{tested}"
    );

    // The server checks the password: a wrong one is refused in its words.
    let body = json!({"name": "shop", "kind": "mysql", "settings": settings("wrong")});
    replace(&admin, "shop", body).await;
    let refused = test_source(&admin, "shop").await;
    assert_eq!(refused["ok"], false, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("Access denied"),
        "{refused}"
    );
}

#[tokio::test]
async fn sqlite_sources_are_checked_and_only_admins_manage_them() {
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
        sqlx::query("CREATE TABLE sales (region TEXT, amount INTEGER)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    let app = Instance::start(AppOptions::default()).await;
    let admin = app.client().await;
    let path = file.display().to_string();
    let source = |name: &str, path: &str| json!({"name": name, "kind": "sqlite", "settings": {"path": path}});
    let post = reqwest::Method::POST;
    let (status, _) = send(
        &admin,
        post.clone(),
        "/api/v1/datasources",
        source("sales", &path),
    )
    .await;
    assert_eq!(status, 201);
    let tested = test_source(&admin, "sales").await;
    assert_eq!(tested["ok"], true, "{tested}");
    assert!(
        tested["server_version"]
            .as_str()
            .unwrap()
            .starts_with("SQLite")
    );

    let missing = dir.path().join("missing.db").display().to_string();
    let (status, _) = send(
        &admin,
        post.clone(),
        "/api/v1/datasources",
        source("gone", &missing),
    )
    .await;
    assert_eq!(status, 201);
    let failed = test_source(&admin, "gone").await;
    assert_eq!(failed["ok"], false);
    assert!(
        failed["error"].as_str().unwrap().contains("missing.db"),
        "{failed}"
    );
    assert!(
        !dir.path().join("missing.db").exists(),
        "a test never creates the file"
    );

    for (body, field) in [
        (json!({"name": "x", "kind": "oracle"}), "kind"),
        (source("rel", "relative.db"), "settings.path"),
        (source("bad name!", &path), "name"),
        (
            json!({"name": "pg", "kind": "postgres", "settings": {"url": "postgres://u:p@h/d"}}),
            "settings",
        ),
    ] {
        let (status, problem) = send(&admin, post.clone(), "/api/v1/datasources", body).await;
        if field == "settings" {
            // Secrets need encryption.key, and this instance has none.
            assert_eq!(status, 409, "{problem}");
        } else {
            assert_eq!(status, 422, "{problem}");
            assert_eq!(problem["field"], field, "{problem}");
        }
    }
    let (status, _) = send(
        &admin,
        post.clone(),
        "/api/v1/datasources",
        source("sales", &path),
    )
    .await;
    assert_eq!(status, 409, "names are unique");

    let editor = admin.signed_in_user("e@test.local", "editor").await;
    assert_eq!(editor.get("/api/v1/datasources/sales").await.status(), 200);
    let (status, _) = send(
        &editor,
        post.clone(),
        "/api/v1/datasources",
        source("mine", &path),
    )
    .await;
    assert_eq!(status, 403);
    let viewer = admin.signed_in_user("v@test.local", "viewer").await;
    assert_eq!(viewer.get("/api/v1/datasources").await.status(), 403);
    let r = admin
        .request(reqwest::Method::DELETE, "/api/v1/datasources/gone")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let names: Vec<String> = admin
        .get_json("/api/v1/datasources")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        ["sales", "sales-demo"],
        "the example's and the one kept"
    );
}
