//! Who may do what: everything but health and the sign-in page needs authentication; sessions
//! need their CSRF token; tokens are hashed, usable, revocable; roles are enforced; sign-in
//! failures are rate limited.

use serde_json::{Value, json};

use crate::support::app::{
    AppOptions, Instance, ROOT_EMAIL, ROOT_PASSWORD, TestClient, USER_PASSWORD,
};

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

/// A sign-in request from `addr` (as forwarded by a trusted proxy on loopback).
async fn sign_in(
    http: &reqwest::Client,
    base: &str,
    addr: &str,
    email: &str,
    password: &str,
) -> reqwest::StatusCode {
    http.post(format!("{base}/api/v1/auth/login"))
        .header("x-forwarded-for", addr)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
}

fn behind_trusted_proxy() -> AppOptions {
    AppOptions::default().env("QUIRE_HTTP__TRUSTED_PROXIES", "127.0.0.1/32")
}

#[tokio::test]
async fn parallel_guesses_for_one_account_get_at_most_the_limit_checked() {
    let app = Instance::start(AppOptions::default()).await;
    let http = reqwest::Client::new();
    let guesses = (0..40).map(|_| sign_in(&http, &app.url, "", ROOT_EMAIL, "wrong-password"));
    let codes = futures_util::future::join_all(guesses).await;
    let checked = codes.iter().filter(|c| c.as_u16() == 401).count();
    let refused = codes.iter().filter(|c| c.as_u16() == 429).count();
    assert!(checked <= 10, "{checked} guesses were checked: {codes:?}");
    assert_eq!(checked + refused, 40, "{codes:?}");
}

#[tokio::test]
async fn failures_from_other_addresses_do_not_lock_the_owner_out() {
    let app =
        Instance::start(behind_trusted_proxy().env("QUIRE_AUTH__LOGIN_MAX_FAILURES", "3")).await;
    let http = reqwest::Client::new();
    for n in 1..=8 {
        let addr = format!("203.0.113.{n}");
        assert_eq!(
            sign_in(&http, &app.url, &addr, ROOT_EMAIL, "nope").await,
            401
        );
    }
    // Three failures from one address lock that address out of the account...
    for _ in 0..3 {
        sign_in(&http, &app.url, "198.51.100.9", ROOT_EMAIL, "nope").await;
    }
    let locked = sign_in(&http, &app.url, "198.51.100.9", ROOT_EMAIL, ROOT_PASSWORD).await;
    assert_eq!(locked, 429);
    // ...but the owner on an address that has not failed gets in (slowed down, not refused).
    let owner = sign_in(&http, &app.url, "198.51.100.200", ROOT_EMAIL, ROOT_PASSWORD).await;
    assert_eq!(owner, 200);
}

/// Peak resident memory of a process (kB), from /proc.
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_flood_of_sign_ins_is_hashed_a_few_at_a_time() {
    let app = Instance::start(behind_trusted_proxy()).await;
    let http = reqwest::Client::new();
    let idle = peak_rss_kb(app.proc.pid());
    let flood = (0..500u32).map(|n| {
        let addr = format!("10.{}.{}.1", n / 250, n % 250);
        let http = http.clone();
        let base = app.url.clone();
        async move {
            let email = format!("nobody{n}@example.com");
            sign_in(&http, &base, &addr, &email, "guess").await
        }
    });
    let codes = futures_util::future::join_all(flood).await;
    assert!(
        codes.iter().all(|c| [401, 429].contains(&c.as_u16())),
        "{codes:?}"
    );
    let busy = codes.iter().filter(|c| c.as_u16() == 429).count();
    assert!(busy > 0, "a flood beyond the hashing queue is turned away");
    let grown_mb = (peak_rss_kb(app.proc.pid()) - idle) / 1024;
    assert!(grown_mb < 200, "memory grew by {grown_mb} MB");
    let ready = TestClient::anonymous(&app.url).get("/readyz").await;
    assert_eq!(ready.status(), 200);
}

async fn patch_user(client: &TestClient, id: &str, body: Value) -> reqwest::Response {
    client
        .request(reqwest::Method::PATCH, &format!("/api/v1/users/{id}"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn only_root_changes_root_and_a_new_password_revokes_tokens() {
    let app = Instance::start(AppOptions::default()).await;
    let root = app.client().await;
    let second = root.signed_in_user("second@test.local", "admin").await;
    let me = root.get_json("/api/v1/auth/me").await;
    let root_id = me["user"]["id"].as_str().unwrap();
    let r = patch_user(&second, root_id, json!({"password": "taken-over-123"})).await;
    assert_eq!(
        r.status(),
        403,
        "a non-root admin cannot reset root's password"
    );
    TestClient::login(&app.url, ROOT_EMAIL, ROOT_PASSWORD).await;

    // Root resets a user's password: their tokens stop working unless asked to keep them.
    let viewer_id = root.add_user("v@test.local", "viewer").await;
    let viewer = TestClient::login(&app.url, "v@test.local", USER_PASSWORD).await;
    let kept = viewer.token_client("kept").await;
    let r = patch_user(
        &root,
        &viewer_id,
        json!({"password": "second-password", "revoke_tokens": false}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(kept.get("/api/v1/auth/me").await.status(), 200);
    let viewer = TestClient::login(&app.url, "v@test.local", "second-password").await;
    let revoked = viewer.token_client("revoked").await;
    let r = patch_user(&root, &viewer_id, json!({"password": "third-password"})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(revoked.get("/api/v1/auth/me").await.status(), 401);
    assert_eq!(kept.get("/api/v1/auth/me").await.status(), 401);
}

#[tokio::test]
async fn secrets_and_pdfs_are_not_cached() {
    let app = Instance::start(AppOptions::default()).await;
    let root = app.client().await;
    let r = root.post("/api/v1/tokens", &json!({"name": "t"})).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let job = root
        .render("invoice", crate::support::app::invoice_data())
        .await;
    let id = job["id"].as_str().unwrap();
    root.wait_job(id, std::time::Duration::from_secs(60)).await;
    let pdf = root.get(&format!("/api/v1/renders/{id}/pdf")).await;
    assert_eq!(pdf.status(), 200);
    assert_eq!(pdf.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn a_forwarded_host_from_an_untrusted_peer_does_not_pass_the_websocket_origin_check() {
    let app = Instance::start(AppOptions::default()).await;
    let browser = app.client().await;
    let job = browser
        .render("invoice", crate::support::app::invoice_data())
        .await;
    let path = format!("/api/v1/renders/{}/events", job["id"].as_str().unwrap());
    let upgrade = |origin: &str, forwarded_host: &str| {
        browser
            .request(reqwest::Method::GET, &path)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("origin", origin)
            .header("x-forwarded-host", forwarded_host)
            .send()
    };
    let host = app.url.trim_start_matches("http://").to_owned();
    let r = upgrade("http://evil.example", "evil.example")
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = upgrade(&app.url, &host).await.unwrap();
    assert_eq!(r.status(), 101, "our own origin still upgrades");
}
