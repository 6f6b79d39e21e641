//! `quire agent` processes for tests: configured through a TOML file with their sources, started
//! against a server URL (an instance or `quire lb`), watched through the API and `quire agent
//! status`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::app::{TestClient, quire_command};
use super::{Proc, wait_for};

pub struct Agent {
    pub proc: Proc,
    pub name: String,
    pub config: PathBuf,
    dir: tempfile::TempDir,
}

/// A `[[agent.datasources]]` entry of kind `postgres` reading `url`.
pub fn postgres_source(name: &str, url: &str) -> String {
    format!("[[agent.datasources]]\nname = \"{name}\"\nkind = \"postgres\"\nurl = \"{url}\"\n")
}

impl Agent {
    /// Starts an agent named `name` with `token`, connecting to `server_url`, serving `sources`
    /// (TOML `[[agent.datasources]]` entries).
    pub fn start(name: &str, server_url: &str, token: &str, sources: &str) -> Agent {
        let dir = tempfile::tempdir().expect("agent dir");
        let config = dir.path().join("quire.toml");
        let text = format!(
            "data_dir = \"{}\"\n\n[agent]\nserver_url = \"{server_url}\"\ntoken = \"{token}\"\nname = \"{name}\"\n\n{sources}",
            dir.path().display()
        );
        std::fs::write(&config, text).expect("agent config");
        let proc = Self::spawn(name, &config, dir.path());
        Agent {
            proc,
            name: name.to_owned(),
            config,
            dir,
        }
    }

    fn spawn(name: &str, config: &std::path::Path, dir: &std::path::Path) -> Proc {
        let mut cmd = quire_command(&["agent", "--config"]);
        cmd.arg(config).env("QUIRE_LOG__LEVEL", "info");
        Proc::spawn(&format!("quire-agent-{name}"), cmd, dir)
    }

    /// Starts the agent again with the same configuration after it stopped.
    pub fn start_again(&mut self) {
        self.proc = Self::spawn(&self.name, &self.config, self.dir.path());
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// `quire agent status`: its exit code and output.
    pub fn status(&self) -> (i32, String) {
        let out = quire_command(&["agent", "status", "--config"])
            .arg(&self.config)
            .output()
            .expect("quire agent status");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }
}

/// Creates agent `name` through the API; returns its id and token.
pub async fn create(client: &TestClient, name: &str) -> (String, String) {
    let (status, body) = client
        .send_json(
            reqwest::Method::POST,
            "/api/v1/agents",
            &json!({"name": name}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().expect("token").to_owned();
    (body["id"].as_str().expect("id").to_owned(), token)
}

/// Agent `name` as `GET /api/v1/agents` shows it.
pub async fn find(client: &TestClient, name: &str) -> Option<Value> {
    let list = client.get_json("/api/v1/agents").await;
    list["agents"]
        .as_array()?
        .iter()
        .find(|a| a["name"] == name)
        .cloned()
}

/// Waits until agent `name` is connected (to `instance`, when given); returns its view.
pub async fn wait_connected(
    client: &TestClient,
    name: &str,
    instance: Option<&str>,
    timeout: Duration,
) -> Value {
    wait_for(&format!("agent {name} to connect"), timeout, || async {
        let a = find(client, name).await?;
        let here = instance.is_none_or(|i| a["instance"] == i);
        (a["state"] == "connected" && here).then_some(a)
    })
    .await
}
