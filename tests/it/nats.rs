//! `quire nats` with the real nats-server: a node starts and answers, three nodes form a cluster
//! that keeps a client's messages flowing through a node stop and a nats-server crash, SIGHUP
//! reloads, bad config is refused, and nats-server never outlives quire.

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::support::nats::{
    NatsCluster, NatsConfig, NatsServer, NodePorts, QuireNats, connect, process_gone, process_group,
};
use crate::support::{quire_bin, wait_for};

const SUBJECT: &str = "quire.test.seq";

fn status(node: &QuireNats, config: &NatsConfig) -> Output {
    Command::new(quire_bin())
        .arg("--config")
        .arg(config.path())
        .args(["nats", "status"])
        .env(
            "QUIRE_NATS_SERVER__MONITOR_PORT",
            node.ports.monitor.to_string(),
        )
        .output()
        .expect("run quire nats status")
}

async fn wait_gone(pid: u32) {
    wait_for(
        &format!("nats-server {pid} to be gone"),
        Duration::from_secs(5),
        || async { process_gone(pid).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn one_node_answers_clients_and_status_then_stops_with_its_child() {
    let config = NatsConfig::new("");
    let mut node = QuireNats::start("solo", NodePorts::free(), &config).await;
    let child = node.wait_child_pid().await;

    let client = connect(&[node.url()]).await;
    let mut sub = client.subscribe(SUBJECT).await.unwrap();
    client.publish(SUBJECT, "hello".into()).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("message in time")
        .unwrap();
    assert_eq!(&msg.payload[..], b"hello");

    let out = status(&node, &config);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.starts_with("nats-server solo 2.9.10 at http://127.0.0.1:"),
        "{text}"
    );
    assert!(
        text.contains(": healthy\n") && text.contains(", 1 connected"),
        "{text}"
    );
    assert!(text.contains("    client     cid "), "{text}");

    assert_eq!(
        process_group(child),
        Some(child),
        "nats-server runs in its own process group"
    );

    let exit = node.stop().await;
    assert!(exit.success(), "{exit:?}");
    assert!(process_gone(child), "a graceful stop waits for nats-server");
    assert!(
        node.log()
            .contains("lame-duck mode: clients move to the other nodes"),
        "{}",
        node.log()
    );

    let out = status(&node, &config);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("does not answer"));
}

#[tokio::test]
async fn nats_server_dies_with_quire_on_kill_9() {
    let config = NatsConfig::new("");
    let mut node = QuireNats::start("doomed", NodePorts::free(), &config).await;
    let child = node.wait_child_pid().await;
    node.kill9();
    wait_gone(child).await;
}

#[tokio::test]
async fn sighup_applies_a_changed_setting_and_keeps_the_old_one_when_invalid() {
    let config = NatsConfig::new("");
    let node = QuireNats::start("reloader", NodePorts::free(), &config).await;
    let max_payload = || async { node.varz().await?.get("max_payload")?.as_u64() };
    assert_eq!(max_payload().await, Some(1024 * 1024));

    config.write("max_payload = \"2MiB\"");
    node.sighup();
    wait_for(
        "max_payload to become 2MiB",
        Duration::from_secs(10),
        || async { (max_payload().await == Some(2 * 1024 * 1024)).then_some(()) },
    )
    .await;
    wait_for(
        "the reload to be confirmed",
        Duration::from_secs(10),
        || async {
            node.log()
                .contains("nats-server applied the new configuration")
                .then_some(())
        },
    )
    .await;

    config.write("max_payload = \"1GiB\"");
    node.sighup();
    wait_for(
        "the bad reload to be refused",
        Duration::from_secs(10),
        || async {
            node.log()
                .contains("configuration not reloaded, nats-server keeps its current one")
                .then_some(())
        },
    )
    .await;
    assert!(
        node.log().contains("nats_server.max_payload"),
        "{}",
        node.log()
    );
    assert_eq!(max_payload().await, Some(2 * 1024 * 1024));
    assert!(node.is_healthy().await);
}

/// Starts `quire nats` with `extra` settings, expecting it to refuse to start.
fn refused(extra: &str) -> (Option<i32>, String) {
    let config = NatsConfig::new(extra);
    let mut node = QuireNats::spawn("refused", NodePorts::free(), &config);
    let status = node.wait_exit(Duration::from_secs(10));
    (status.and_then(|s| s.code()), node.log())
}

#[tokio::test]
async fn bad_config_is_refused_naming_the_key_its_origin_and_what_is_valid() {
    let (code, log) = refused("routes = [\"nats-route://127.0.0.1:6222\", \"10.0.0.12:6222\"]");
    assert_eq!(code, Some(78), "{log}");
    assert!(log.contains("nats_server.routes.1 (from "), "{log}");
    assert!(log.contains("quire.toml:"), "the file and line: {log}");
    assert!(log.contains("use nats-route://HOST:PORT"), "{log}");

    let (code, log) = refused("binary = \"/nonexistent/nats-server\"");
    assert_eq!(code, Some(78), "{log}");
    assert!(
        log.contains("nats_server.binary \"/nonexistent/nats-server\" is not an executable file"),
        "{log}"
    );

    let (code, log) = refused(
        "tls.cert_file = \"/nonexistent/nats.pem\"\ntls.key_file = \"/nonexistent/nats.key\"",
    );
    assert_eq!(code, Some(78), "{log}");
    assert!(
        log.contains("nats-server rejects the config generated from [nats_server]"),
        "{log}"
    );
    assert!(log.contains("/nonexistent/nats.pem"), "{log}");
}

/// Publishes a growing sequence number until dropped; the count is what was sent so far.
struct Publisher {
    sent: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    fn start(client: async_nats::Client) -> Publisher {
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let task = tokio::spawn(async move {
            loop {
                let seq = counter.fetch_add(1, Ordering::SeqCst) + 1;
                // While no node is reachable the client buffers; a publish error is as good as
                // a lost message here: the test waits for later ones.
                let _ = client.publish(SUBJECT, seq.to_string().into()).await;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
        Publisher { sent, task }
    }

    /// Waits until `sub` receives a message published after this call.
    async fn wait_flowing(&self, sub: &mut async_nats::Subscriber, after: &str) {
        let from = self.sent.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = tokio::time::timeout(left, sub.next()).await;
            let Ok(Some(msg)) = msg else {
                panic!("no messages flowing within 20s after {after}")
            };
            let seq: u64 = std::str::from_utf8(&msg.payload).unwrap().parse().unwrap();
            if seq > from {
                return;
            }
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_keeps_messages_flowing_through_a_node_stop_and_a_nats_server_crash() {
    let mut cluster = NatsCluster::start(3).await;
    let out = status(&cluster.nodes[0], &cluster.config);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("quire-test, 2 route(s), 3 configured route URL(s)")
    );

    let subscriber = connect(&cluster.urls()).await;
    let mut sub = subscriber.subscribe(SUBJECT).await.unwrap();
    subscriber.flush().await.unwrap();
    let publisher = Publisher::start(connect(&cluster.urls()).await);
    publisher.wait_flowing(&mut sub, "start").await;

    // Stop the node the subscriber is on: lame-duck mode moves it to another node.
    let stopped = cluster.index_of(&subscriber.server_info().server_name);
    let exit = cluster.nodes[stopped].stop().await;
    assert!(exit.success(), "{exit:?}");
    publisher
        .wait_flowing(&mut sub, "a graceful node stop")
        .await;
    let alive: Vec<usize> = (0..3).filter(|i| *i != stopped).collect();
    cluster.wait_routed(&alive).await;

    // kill -9 the nats-server under the subscriber's new node: its supervisor restarts it.
    let crashed = cluster.index_of(&subscriber.server_info().server_name);
    assert_ne!(crashed, stopped, "the subscriber moved to a live node");
    let node = &cluster.nodes[crashed];
    let old = node.kill_child9().await;
    let new = node.wait_restarted(old).await;
    assert!(process_gone(old));
    publisher
        .wait_flowing(&mut sub, "a nats-server crash")
        .await;
    cluster.wait_routed(&alive).await;
    assert!(
        node.log()
            .contains("nats-server killed by signal 9 (SIGKILL); restarting in 250ms"),
        "{}",
        node.log()
    );
    assert_eq!(node.child_pid(), Some(new));

    // The stopped node comes back into the cluster.
    cluster.nodes[stopped].respawn();
    cluster.nodes[stopped].wait_healthy().await;
    cluster.wait_routed(&[0, 1, 2]).await;
    publisher.wait_flowing(&mut sub, "the node's return").await;
}

#[tokio::test]
async fn status_asks_any_nats_server_by_url() {
    let mut server = NatsServer::start().await;
    let url = server.monitor_url();
    let ask = || {
        Command::new(quire_bin())
            .args(["nats", "status", "--timeout", "2s", "--url", &url])
            .output()
            .expect("run quire nats status")
    };
    let out = ask();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(": healthy\n") && text.contains("0 connected"),
        "{text}"
    );

    server.kill9();
    let out = ask();
    assert_eq!(out.status.code(), Some(1));
}

/// The datagrams `quire nats` sends to the service manager.
struct NotifySocket {
    socket: tokio::net::UnixDatagram,
    path: std::path::PathBuf,
}

impl NotifySocket {
    fn bind(dir: &std::path::Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        NotifySocket {
            socket: tokio::net::UnixDatagram::bind(&path).unwrap(),
            path,
        }
    }

    /// The messages received within `window`.
    async fn during(&self, window: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + window;
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, self.socket.recv(&mut buf)).await {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    async fn wait_for(&self, message: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !seen.iter().any(|m| m == message) {
            assert!(
                Instant::now() < deadline,
                "no {message} within 10s; got {seen:?}"
            );
            seen.extend(self.during(Duration::from_millis(100)).await);
        }
        seen
    }
}

fn watchdog_pings(messages: &[String]) -> usize {
    messages.iter().filter(|m| *m == "WATCHDOG=1").count()
}

#[tokio::test]
async fn ready_after_healthz_and_watchdog_fed_only_while_healthy() {
    let config = NatsConfig::new("");
    let notify = NotifySocket::bind(config.dir());
    let socket = notify.path.to_str().unwrap().to_owned();
    let env = [
        ("NOTIFY_SOCKET", socket.as_str()),
        ("WATCHDOG_USEC", "600000"),
    ];
    let node = QuireNats::spawn_with_env("watched", NodePorts::free(), &config, &env);

    let before_ready = notify.wait_for("READY=1").await;
    assert_eq!(before_ready.last().map(String::as_str), Some("READY=1"));
    assert!(
        before_ready
            .iter()
            .any(|m| m == "STATUS=nats-server healthy"),
        "{before_ready:?}"
    );
    assert!(node.is_healthy().await);
    assert!(watchdog_pings(&notify.during(Duration::from_secs(1)).await) >= 2);

    // A stopped (hung) nats-server no longer answers /healthz: the watchdog goes hungry, so
    // systemd would restart the whole unit.
    node.signal_child(rustix::process::Signal::STOP).await;
    notify.wait_for("STATUS=nats-server unhealthy").await;
    assert_eq!(
        watchdog_pings(&notify.during(Duration::from_secs(1)).await),
        0
    );

    node.signal_child(rustix::process::Signal::CONT).await;
    notify.wait_for("STATUS=nats-server healthy").await;
    assert!(watchdog_pings(&notify.during(Duration::from_secs(1)).await) >= 1);
}
