//! The process lifecycle: data survives restarts, SIGTERM drains without losing a job, systemd
//! hears READY / STATUS / WATCHDOG / STOPPING on a real notify socket, and `quire healthcheck`
//! tells ready from not.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::app::{AppOptions, Instance, busy_template, invoice_data, quire_command};
use crate::support::{Proc, free_port, wait_for};

#[tokio::test]
async fn data_survives_a_restart() {
    let mut app = Instance::start(AppOptions::default()).await;
    let api = app.client().await.token_client("t").await;
    api.create_template("kept", json!({"main.typ": "Kept"}))
        .await;
    let job = api.render("invoice", invoice_data()).await;
    let id = job["id"].as_str().unwrap().to_owned();
    api.wait_job(&id, Duration::from_secs(60)).await;
    let pdf = api.pdf(&id).await;

    app.restart().await;
    let templates = api.get_json("/api/v1/templates").await;
    let names: Vec<&str> = templates
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["invoice", "kept", "listing", "sales"],
        "examples are not created twice"
    );
    assert_eq!(api.pdf(&id).await, pdf);
    assert_eq!(
        api.get_json(&format!("/api/v1/renders/{id}")).await["state"],
        "succeeded"
    );
}

#[tokio::test]
async fn sigterm_lets_a_running_render_finish_and_turns_readiness_off() {
    let mut app =
        Instance::start(AppOptions::default().env("QUIRE_RENDER__DRAIN_TIMEOUT", "60s")).await;
    let api = app.client().await.token_client("t").await;
    api.create_template("busy", busy_template(3)).await;
    let job = api.render("busy", json!({})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    wait_for("the job to run", Duration::from_secs(30), || async {
        (api.get_json(&format!("/api/v1/renders/{id}")).await["stage"] == "compiling").then_some(())
    })
    .await;
    app.proc.terminate();
    let ready = wait_for("readiness to turn off", Duration::from_secs(10), || async {
        let r = reqwest::get(format!("{}/readyz", app.url)).await.ok()?;
        (r.status() == 503).then_some(r)
    })
    .await;
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "draining");
    let status = app
        .proc
        .wait_exit(Duration::from_secs(90))
        .expect("exits after the render");
    assert!(status.success(), "{status:?}");
    app.start_again().await;
    let j = api.get_json(&format!("/api/v1/renders/{id}")).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["attempts"], 0);
}

#[tokio::test]
async fn sigterm_hands_an_unfinished_render_back_to_the_queue() {
    let mut app =
        Instance::start(AppOptions::default().env("QUIRE_RENDER__DRAIN_TIMEOUT", "1s")).await;
    let api = app.client().await.token_client("t").await;
    api.create_template("busy", busy_template(8)).await;
    let job = api.render("busy", json!({})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    wait_for("the job to run", Duration::from_secs(30), || async {
        (api.get_json(&format!("/api/v1/renders/{id}")).await["stage"] == "compiling").then_some(())
    })
    .await;
    let asked = Instant::now();
    app.proc.terminate();
    let status = app
        .proc
        .wait_exit(Duration::from_secs(30))
        .expect("exits after the drain bound");
    assert!(status.success(), "{status:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "{:?}",
        asked.elapsed()
    );

    // After the restart the job is still there, queued again with no attempt used, and it runs.
    app.start_again().await;
    let events = api.get_json(&format!("/api/v1/renders/{id}/events")).await;
    let handed_back = events
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["message"] == "instance shutting down");
    assert!(handed_back, "{events}");
    let done = api.wait_job(&id, Duration::from_secs(120)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 0);
}

#[tokio::test]
async fn a_killed_instance_loses_no_job() {
    let mut app = Instance::start(AppOptions::default()).await;
    let api = app.client().await.token_client("t").await;
    api.create_template("busy", busy_template(5)).await;
    let job = api.render("busy", json!({})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    wait_for("the job to run", Duration::from_secs(30), || async {
        (api.get_json(&format!("/api/v1/renders/{id}")).await["state"] == "running").then_some(())
    })
    .await;
    app.restart().await;
    let done = api.wait_job(&id, Duration::from_secs(120)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        done["attempts"], 1,
        "the abandoned run counts as an attempt"
    );
}

/// The data directory, the SQLite database and its `-wal` and `-shm` files are private to the
/// service user and its group even under a umask that would leave them open to everyone.
#[tokio::test]
async fn data_files_are_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let app = Instance::start_in(
        AppOptions::default().umask(0o000),
        data_dir.clone(),
        Some(dir),
    )
    .await;
    // Signing in writes a session, so the write-ahead log is in use.
    app.client().await;
    assert_eq!(mode(&data_dir), 0o750, "{:o}", mode(&data_dir));
    for name in ["quire.db", "quire.db-wal", "quire.db-shm"] {
        let file = data_dir.join(name);
        assert_eq!(mode(&file), 0o640, "{name}: {:o}", mode(&file));
    }
}

/// The permission bits of `path`.
fn mode(path: &Path) -> u32 {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    meta.permissions().mode() & 0o7777
}

/// Reads datagrams until one starts with `prefix`.
fn expect_datagram(sock: &UnixDatagram, prefix: &str, seen: &mut Vec<String>) {
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(msg.clone());
            if msg.starts_with(prefix) {
                return;
            }
        }
    }
    panic!("no {prefix} datagram; got {seen:?}");
}

#[tokio::test]
async fn systemd_hears_ready_status_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = free_port();
    let mut cmd = quire_command(&["app"]);
    cmd.env("QUIRE_DATA_DIR", dir.path())
        .env("QUIRE_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000");
    let mut proc = Proc::spawn("notify", cmd, dir.path());
    let mut seen = Vec::new();
    expect_datagram(&sock, "READY=1", &mut seen);
    assert!(
        seen.iter()
            .any(|m| m.starts_with("STATUS=serving on 127.0.0.1:")),
        "{seen:?}"
    );
    let watchdog_from = seen.len();
    for _ in 0..3 {
        expect_datagram(&sock, "WATCHDOG=1", &mut seen);
    }
    assert!(
        seen[watchdog_from..].iter().all(|m| m == "WATCHDOG=1"),
        "{seen:?}"
    );
    proc.terminate();
    expect_datagram(&sock, "STOPPING=1", &mut seen);
    assert!(
        proc.wait_exit(Duration::from_secs(30))
            .expect("exits")
            .success()
    );
}

#[tokio::test]
async fn healthcheck_probes_readiness() {
    let mut app = Instance::start(AppOptions::default()).await;
    let probe = |url: String| {
        quire_command(&["healthcheck", "--url", &url, "--timeout", "2s"])
            .status()
            .unwrap()
    };
    assert!(probe(app.url.clone()).success());
    // Without --url it probes the configured listen address.
    let by_config = quire_command(&["healthcheck"])
        .env("QUIRE_HTTP__LISTEN", format!("0.0.0.0:{}", app.port))
        .status()
        .unwrap();
    assert!(by_config.success());
    app.proc.kill9();
    let out = quire_command(&["healthcheck", "--url", &app.url, "--timeout", "2s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unhealthy"));
}

#[tokio::test]
async fn json_logs_carry_the_instance_id_on_every_line() {
    let app = Instance::start(AppOptions::default().env("QUIRE_LOG__FORMAT", "json")).await;
    let api = app.client().await;
    // A worker's own output is relayed through the log too.
    api.create_template(
        "loud",
        json!({"main.typ": "#let s = \"x\" * 50000000\n#let a = range(40).map(i => s + str(i))"}),
    )
    .await;
    let r = api
        .post("/api/v1/render", &json!({"template": "loud"}))
        .await;
    assert_eq!(r.status(), 422);
    let log = app.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 3);
    let instance = lines[0]["instance"].as_str().unwrap().to_owned();
    assert!(
        lines.iter().all(|l| l["instance"] == instance.as_str()),
        "{log}"
    );
    assert!(lines.iter().any(|l| l["message"] == "listening"), "{log}");
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("memory allocation"))),
        "{log}"
    );
}
