//! Who may do what: everything but health and the sign-in page needs authentication; sessions
//! need their CSRF token; tokens are hashed, usable, revocable; roles are enforced; sign-in
//! failures are rate limited.

use serde_json::{Value, json};

use crate::support::app::{AppOptions, Instance, ROOT_EMAIL, ROOT_PASSWORD, TestClient};

#[tokio::test]
async fn everything_but_health_and_login_needs_auth() {
    let app = Instance::start(AppOptions::default()).await;
    let anon = TestClient::anonymous(&app.url);
    for path in ["/livez", "/readyz", "/health", "/healthz", "/login"] {
        assert_eq!(anon.get(path).await.status(), 200, "{path}");
    }
    let head = anon
        .http
        .head(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    for path in [
        "/api/v1/templates",
        "/api/v1/renders",
        "/api/v1/fonts",
        "/api/v1/users",
        "/api/v1/auth/me",
        "/metrics",
    ] {
        let r = anon.get(path).await;
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    let r = anon
        .post("/api/v1/render", &json!({"template": "invoice"}))
        .await;
    assert_eq!(r.status(), 401);
    // Console pages send people to the sign-in page instead.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect
        .get(format!("{}/jobs", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login?next=%2Fjobs");
}

#[tokio::test]
async fn sessions_are_httponly_cookies_and_need_csrf_to_change_things() {
    let app = Instance::start(AppOptions::default()).await;
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let r = http
        .post(format!("{}/api/v1/auth/login", app.url))
        .json(&json!({"email": ROOT_EMAIL, "password": ROOT_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("quire_session="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let body: Value = r.json().await.unwrap();
    let csrf = body["csrf_token"].as_str().unwrap();
    assert_eq!(body["user"]["email"], ROOT_EMAIL);
    assert_eq!(body["user"]["role"], "admin");

    // Reading works with the cookie alone; changing needs the CSRF token.
    let r = http
        .get(format!("{}/api/v1/templates", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let new_token = json!({"name": "x"});
    let r = http
        .post(format!("{}/api/v1/tokens", app.url))
        .json(&new_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let problem: Value = r.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("CSRF"),
        "{problem}"
    );
    let r = http
        .post(format!("{}/api/v1/tokens", app.url))
        .header("x-csrf-token", csrf)
        .json(&new_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Signing out ends the session on the server.
    let r = http
        .post(format!("{}/api/v1/auth/logout", app.url))
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .get(format!("{}/api/v1/templates", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn personal_tokens_work_until_revoked() {
    let app = Instance::start(AppOptions::default()).await;
    let admin = app.client().await;
    let api = admin.token_client("ci").await;
    assert!(api.token().unwrap().starts_with("qt_"));
    assert_eq!(api.get("/api/v1/templates").await.status(), 200);
    let tokens = admin.get_json("/api/v1/tokens").await;
    let listed = &tokens.as_array().unwrap()[0];
    assert_eq!(listed["name"], "ci");
    assert!(
        listed.get("token").is_none(),
        "the secret is shown once only"
    );
    let id = listed["id"].as_str().unwrap();
    assert!(listed["last_used_at"].is_string());
    let r = admin
        .request(reqwest::Method::DELETE, &format!("/api/v1/tokens/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(api.get("/api/v1/templates").await.status(), 401);
    let bogus = reqwest::Client::new()
        .get(format!("{}/api/v1/templates", app.url))
        .bearer_auth("qt_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bogus.status(), 401);
}

#[tokio::test]
async fn roles_limit_what_users_can_do() {
    let app = Instance::start(AppOptions::default()).await;
    let admin = app.client().await;
    for (email, role) in [
        ("viewer@test.local", "viewer"),
        ("editor@test.local", "editor"),
    ] {
        let r = admin
            .post(
                "/api/v1/users",
                &json!({"email": email, "password": "long-enough-pw", "role": role}),
            )
            .await;
        assert_eq!(r.status(), 201);
    }
    let dup = admin
        .post(
            "/api/v1/users",
            &json!({"email": "viewer@test.local", "password": "long-enough-pw"}),
        )
        .await;
    assert_eq!(dup.status(), 409);
    let short = admin
        .post(
            "/api/v1/users",
            &json!({"email": "x@test.local", "password": "short"}),
        )
        .await;
    assert_eq!(short.status(), 422);
    assert_eq!(short.json::<Value>().await.unwrap()["field"], "password");

    let viewer = TestClient::login(&app.url, "viewer@test.local", "long-enough-pw").await;
    let editor = TestClient::login(&app.url, "editor@test.local", "long-enough-pw").await;
    let files = json!({"main.typ": "Hello"});
    let r = viewer
        .post("/api/v1/templates", &json!({"name": "v", "files": files}))
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(viewer.get("/api/v1/users").await.status(), 403);
    editor.create_template("e", files).await;
    assert_eq!(editor.get("/api/v1/users").await.status(), 403);

    // Viewers render and see their own jobs only.
    let mine = viewer.render("e", json!({})).await;
    let admins = admin.render("e", json!({})).await;
    let listed = viewer.get_json("/api/v1/renders").await;
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![mine["id"].as_str().unwrap()]);
    let other = viewer
        .get(&format!(
            "/api/v1/renders/{}",
            admins["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(other.status(), 404);
}

#[tokio::test]
async fn failed_sign_ins_are_rate_limited() {
    let app =
        Instance::start(AppOptions::default().env("QUIRE_AUTH__LOGIN_MAX_FAILURES", "3")).await;
    let http = reqwest::Client::new();
    let attempt = |password: &'static str| {
        let http = http.clone();
        let url = format!("{}/api/v1/auth/login", app.url);
        async move {
            http.post(url)
                .json(&json!({"email": ROOT_EMAIL, "password": password}))
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..3 {
        assert_eq!(attempt("wrong-password").await.status(), 401);
    }
    let r = attempt("wrong-password").await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    // Even the right password waits: the account is locked for the window.
    assert_eq!(attempt(ROOT_PASSWORD).await.status(), 429);
}
