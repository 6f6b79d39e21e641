//! Real `quire app` instances for tests, and a client that uses the API like a user would.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Proc, free_port, quire_bin, wait_for};

pub const ROOT_EMAIL: &str = "root@test.local";
pub const ROOT_PASSWORD: &str = "root-password-1";

/// How to start an instance; `data_dir` persists across restarts when set by the test.
#[derive(Clone, Default)]
pub struct AppOptions {
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    /// The umask the process starts with; the test runner's when unset.
    pub umask: Option<u32>,
    /// Start it as the leader of its own process group ([`Proc::spawn_group`]).
    pub own_group: bool,
}

impl AppOptions {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Starts the process under `mask` (e.g. `0o000`), to test that it sets its own file modes.
    pub fn umask(mut self, mask: u32) -> Self {
        self.umask = Some(mask);
        self
    }

    /// Starts the process in a process group of its own, with its render workers: killed
    /// together, and their CPU time readable together (the render benchmark needs both).
    pub fn own_group(mut self) -> Self {
        self.own_group = true;
        self
    }
}

pub struct Instance {
    pub proc: Proc,
    pub url: String,
    pub port: u16,
    pub data_dir: PathBuf,
    options: AppOptions,
    /// Owns the data directory unless the test passed its own.
    _dir: Option<tempfile::TempDir>,
}

/// A `Command` for the quire binary with a clean environment: nothing from the developer's
/// shell (QUIRE_*, NOTIFY_SOCKET) leaks into a test.
pub fn quire_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(quire_bin());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(args);
    cmd
}

impl Instance {
    /// Starts an instance in a fresh data directory and waits until it is ready.
    pub async fn start(options: AppOptions) -> Instance {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().to_path_buf();
        Self::start_in(options, data_dir, Some(dir)).await
    }

    /// Starts an instance on an existing data directory.
    pub async fn start_in(
        options: AppOptions,
        data_dir: PathBuf,
        dir: Option<tempfile::TempDir>,
    ) -> Instance {
        let mut inst = Self::spawn_in(options, data_dir, dir);
        inst.wait_ready().await;
        inst
    }

    /// Starts an instance that is not meant to turn ready (a standby on a database replica, a
    /// fenced one); waits only until it answers `/livez`.
    pub async fn start_unready(options: AppOptions) -> Instance {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().to_path_buf();
        let mut inst = Self::spawn_in(options, data_dir, Some(dir));
        inst.wait_live().await;
        inst
    }

    fn spawn_in(
        options: AppOptions,
        data_dir: PathBuf,
        dir: Option<tempfile::TempDir>,
    ) -> Instance {
        let port = free_port();
        let proc = spawn(&options, &data_dir, port);
        Instance {
            proc,
            url: format!("http://127.0.0.1:{port}"),
            port,
            data_dir,
            options,
            _dir: dir,
        }
    }

    /// Waits until `/readyz` answers 200: the instance takes work.
    pub async fn wait_ready(&mut self) {
        self.wait_ok("/readyz", "become ready").await;
    }

    /// Waits until `/livez` answers 200: the process serves HTTP, whatever its role.
    pub async fn wait_live(&mut self) {
        self.wait_ok("/livez", "answer /livez").await;
    }

    async fn wait_ok(&mut self, path: &str, what: &str) {
        let url = format!("{}{path}", self.url);
        let client = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(&url).send().await
                && r.status() == 200
            {
                return;
            }
            if !self.proc.is_running() || std::time::Instant::now() > deadline {
                panic!("instance did not {what}:\n{}", self.proc.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the process (SIGKILL) and starts a new one on the same data directory and port.
    pub async fn restart(&mut self) {
        self.proc.kill9();
        self.start_again().await;
    }

    /// Starts a new process after the previous one exited.
    pub async fn start_again(&mut self) {
        self.proc = spawn(&self.options, &self.data_dir, self.port);
        self.wait_ready().await;
    }

    /// Like [`Instance::start_again`], for an instance not meant to turn ready.
    pub async fn start_again_unready(&mut self) {
        self.proc = spawn(&self.options, &self.data_dir, self.port);
        self.wait_live().await;
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Whether the process is still running (without reaping it).
    pub fn proc_running(&self) -> bool {
        self.proc.exit_status().is_none()
    }

    pub async fn client(&self) -> TestClient {
        TestClient::login(&self.url, ROOT_EMAIL, ROOT_PASSWORD).await
    }
}

fn spawn(options: &AppOptions, data_dir: &Path, port: u16) -> Proc {
    let mut cmd = quire_command(&["app"]);
    cmd.args(&options.args)
        .env("QUIRE_DATA_DIR", data_dir)
        .env("QUIRE_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("QUIRE_ROOT_USER__EMAIL", ROOT_EMAIL)
        .env("QUIRE_ROOT_USER__PASSWORD", ROOT_PASSWORD)
        .env("QUIRE_RENDER__WORKERS", "2")
        .env("QUIRE_LOG__LEVEL", "info")
        // Licence seats belong to instance names: test instances share a host, so each gets a
        // name of its own (kept across restarts, as the port is).
        .env("QUIRE_INSTANCE_NAME", format!("app-{port}"));
    for (k, v) in &options.env {
        cmd.env(k, v);
    }
    if let Some(mask) = options.umask {
        set_umask(&mut cmd, mask);
    }
    let name = format!("quire-app-{port}");
    // A test of how the app creates its data directory passes one that does not exist yet: the
    // log then goes beside it.
    let log_dir = match data_dir.parent() {
        Some(parent) if !data_dir.exists() => parent,
        _ => data_dir,
    };
    if options.own_group {
        Proc::spawn_group(&name, cmd, log_dir)
    } else {
        Proc::spawn(&name, cmd, log_dir)
    }
}

/// Sets the child's umask between fork and exec, leaving the test runner's own alone (other
/// tests create files concurrently).
fn set_umask(cmd: &mut Command, mask: u32) {
    use std::os::unix::process::CommandExt;
    let mask = rustix::fs::Mode::from_raw_mode(mask);
    // SAFETY: the hook runs in the forked child before exec, where only async-signal-safe calls
    // are allowed; it makes one raw syscall (umask) and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            let _ = rustix::process::umask(mask);
            Ok(())
        });
    }
}

/// An API client signed in as a user (session cookie + CSRF token), or holding a token.
/// The password of users created by [`TestClient::add_user`].
pub const USER_PASSWORD: &str = "user-password-1";

pub struct TestClient {
    pub http: reqwest::Client,
    pub base: String,
    csrf: Option<String>,
    bearer: Option<String>,
}

impl TestClient {
    /// A client with no credentials at all.
    pub fn anonymous(base: &str) -> TestClient {
        TestClient {
            http: reqwest::Client::new(),
            base: base.to_owned(),
            csrf: None,
            bearer: None,
        }
    }

    pub async fn login(base: &str, email: &str, password: &str) -> TestClient {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .expect("client");
        let resp = http
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .expect("login request");
        assert_eq!(
            resp.status(),
            200,
            "login failed: {}",
            resp.text().await.unwrap_or_default()
        );
        let body: Value = resp.json().await.expect("login body");
        let csrf = body["csrf_token"].as_str().map(str::to_owned);
        TestClient {
            http,
            base: base.to_owned(),
            csrf,
            bearer: None,
        }
    }

    /// A client that authenticates with a personal API token created by this one.
    pub async fn token_client(&self, name: &str) -> TestClient {
        let t = self.post("/api/v1/tokens", &json!({"name": name})).await;
        assert_eq!(t.status(), 201);
        let body: Value = t.json().await.expect("token");
        let token = body["token"].as_str().expect("token field").to_owned();
        TestClient {
            http: reqwest::Client::new(),
            base: self.base.clone(),
            csrf: None,
            bearer: Some(token),
        }
    }

    pub fn token(&self) -> Option<&str> {
        self.bearer.as_deref()
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let rb = match &self.csrf {
            Some(c) => rb.header("x-csrf-token", c),
            None => rb,
        };
        match &self.bearer {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.auth(self.http.request(method, format!("{}{path}", self.base)))
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("GET")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.expect("json")
    }

    /// Sends `body` as JSON; the status and the answer (null when it is not JSON).
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> (u16, Value) {
        let r = self
            .request(method, path)
            .json(body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.request(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    /// Creates a user with `role` and [`USER_PASSWORD`] (this client must be an admin); its id.
    pub async fn add_user(&self, email: &str, role: &str) -> String {
        let body = json!({"email": email, "password": USER_PASSWORD, "role": role});
        let r = self.post("/api/v1/users", &body).await;
        assert_eq!(r.status(), 201, "creating {email}");
        let user: Value = r.json().await.expect("user");
        user["id"].as_str().expect("user id").to_owned()
    }

    /// Creates a user with `role` and signs it in.
    pub async fn signed_in_user(&self, email: &str, role: &str) -> TestClient {
        self.add_user(email, role).await;
        TestClient::login(&self.base, email, USER_PASSWORD).await
    }

    pub async fn create_template(&self, name: &str, files: Value) -> Value {
        let r = self
            .post("/api/v1/templates", &json!({"name": name, "files": files}))
            .await;
        let status = r.status();
        let body: Value = r.json().await.expect("json");
        assert_eq!(status, 201, "create template {name}: {body}");
        body
    }

    /// Renders the example invoice synchronously (`POST /api/v1/render`); asserts it succeeds.
    pub async fn render_invoice_now(&self) {
        let r = self
            .post(
                "/api/v1/render",
                &json!({"template": "invoice", "data": invoice_data()}),
            )
            .await;
        assert_eq!(r.status(), 200);
    }

    /// Queues a render and returns the job.
    pub async fn render(&self, template: &str, data: Value) -> Value {
        let r = self
            .post(
                "/api/v1/renders",
                &json!({"template": template, "data": data}),
            )
            .await;
        let status = r.status();
        let body: Value = r.json().await.expect("json");
        assert_eq!(status, 202, "render {template}: {body}");
        body
    }

    /// Polls the job until it is final.
    pub async fn wait_job(&self, id: &str, timeout: Duration) -> Value {
        wait_for(&format!("job {id} to finish"), timeout, || async {
            let j = self.get_json(&format!("/api/v1/renders/{id}")).await;
            let state = j["state"].as_str().unwrap_or("");
            matches!(state, "succeeded" | "failed" | "cancelled").then_some(j)
        })
        .await
    }

    pub async fn pdf(&self, id: &str) -> Vec<u8> {
        let r = self.get(&format!("/api/v1/renders/{id}/pdf")).await;
        assert_eq!(r.status(), 200, "pdf of {id}");
        r.bytes().await.expect("pdf").to_vec()
    }

    /// Follows a job's events over a WebSocket from `after`, collecting at most `max` events
    /// (or until the final one).
    pub async fn follow_ws(&self, id: &str, after: i64, max: usize) -> Vec<Value> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!(
            "{}/api/v1/renders/{id}/events?after={after}",
            self.base.replace("http://", "ws://")
        );
        let mut req = url.into_client_request().expect("ws request");
        let token = self
            .bearer
            .as_ref()
            .expect("follow_ws needs a token client");
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("ws connect");
        let mut out = Vec::new();
        while out.len() < max {
            let msg = tokio::time::timeout(Duration::from_secs(60), ws.next())
                .await
                .expect("ws event in time");
            let Some(Ok(msg)) = msg else { break };
            if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
                let ev: Value = serde_json::from_str(&t).expect("event json");
                let fin = ev["final"] == true;
                out.push(ev);
                if fin {
                    break;
                }
            }
        }
        out
    }
}

/// The text of a PDF, extracted by poppler's pdftotext.
pub fn pdf_text(pdf: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("doc.pdf");
    std::fs::write(&path, pdf).expect("write pdf");
    let out = Command::new("pdftotext")
        .arg("-layout")
        .arg(&path)
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils) must be installed");
    assert!(
        out.status.success(),
        "pdftotext failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A template that keeps a worker busy for about `seconds` (at a few million loop steps a
/// second), then renders normally.
pub fn busy_template(seconds: u32) -> Value {
    let outer = 1500 * seconds;
    json!({"main.typ": format!("#let x = 0\n#for i in range({outer}) {{ for j in range(2000) {{ x += 1 }} }}\nDone: #x")})
}

/// The bundled example invoice's sample data.
pub fn invoice_data() -> Value {
    serde_json::from_str(include_str!("../../src/app/examples/invoice/data.json"))
        .expect("invoice data")
}
