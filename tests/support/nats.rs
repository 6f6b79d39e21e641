//! NATS for integration tests, on free ports in throwaway directories:
//! - `NatsServer::start()`: a plain nats-server, for tests that only need a bus;
//! - `NatsCluster::start(3)`: three `quire nats` nodes sharing one config file (routes to all
//!   three), each told its own name and ports through `QUIRE_NATS_SERVER__*` variables;
//! - `connect(&urls)`: a client built the way `quire app` should build one.
//!
//! nats-server must be installed (Debian: `apt-get install nats-server`); tests fail, never
//! skip, without it.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Proc, free_port, quire_bin, wait_for};

/// How long a node gets to start, form routes or stop.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(20);

/// The nats-server executable, found like `quire nats` finds it.
pub fn nats_server_bin() -> PathBuf {
    quire::nats::binary::resolve_here(None).unwrap_or_else(|e| {
        panic!("NATS tests need nats-server (apt-get install nats-server): {e}")
    })
}

/// The fields of `/proc/PID/stat` after the command name (state, ppid, pgrp, …); the name is in
/// parentheses and may hold spaces, so it is skipped.
fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// True once `pid` has exited: no such process, or a zombie waiting for its reaper.
pub fn process_gone(pid: u32) -> bool {
    proc_stat(pid).is_none_or(|f| f.first().is_some_and(|state| state == "Z" || state == "X"))
}

/// The process group of `pid`, while it runs.
pub fn process_group(pid: u32) -> Option<u32> {
    proc_stat(pid)?.get(2)?.parse().ok()
}

async fn get_json(url: &str) -> Option<serde_json::Value> {
    let resp = reqwest::get(url).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

async fn is_healthy(monitor_url: &str) -> bool {
    reqwest::get(format!("{monitor_url}/healthz"))
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// A plain nats-server (no quire), killed when dropped.
pub struct NatsServer {
    pub port: u16,
    pub monitor_port: u16,
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a single nats-server and waits until it is healthy.
    pub async fn start() -> NatsServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let (port, monitor_port) = (free_port(), free_port());
        let proc = Self::spawn(port, monitor_port, dir.path());
        let server = NatsServer {
            port,
            monitor_port,
            proc,
            _dir: dir,
        };
        server.wait_healthy().await;
        server
    }

    fn spawn(port: u16, monitor_port: u16, dir: &Path) -> Proc {
        let mut cmd = Command::new(nats_server_bin());
        cmd.args([
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            &monitor_port.to_string(),
        ]);
        Proc::spawn("nats-server", cmd, dir)
    }

    async fn wait_healthy(&self) {
        let monitor = self.monitor_url();
        wait_for("nats-server /healthz", NODE_TIMEOUT, || async {
            is_healthy(&monitor).await.then_some(())
        })
        .await;
    }

    /// Starts the server again on the same ports after `kill9`.
    pub async fn restart(&mut self) {
        self.proc.kill9();
        self.proc = Self::spawn(self.port, self.monitor_port, self._dir.path());
        self.wait_healthy().await;
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    pub fn kill9(&mut self) {
        self.proc.kill9();
    }
}

/// The ports of one `quire nats` node.
#[derive(Debug, Clone, Copy)]
pub struct NodePorts {
    pub client: u16,
    pub monitor: u16,
    pub cluster: u16,
}

impl NodePorts {
    pub fn free() -> NodePorts {
        NodePorts {
            client: free_port(),
            monitor: free_port(),
            cluster: free_port(),
        }
    }
}

/// Settings that keep test nodes fast: a short lame-duck grace and stop bound.
const TEST_SETTINGS: &str = r#"
[nats_server]
host = "127.0.0.1"
cluster_name = "quire-test"
lame_duck_grace_period = "1s"
stop_timeout = "3s"
"#;

/// A throwaway directory with a quire.toml; nodes started from it share the file.
pub struct NatsConfig {
    dir: tempfile::TempDir,
    file: PathBuf,
}

impl NatsConfig {
    /// The test settings plus `extra`, lines for the `[nats_server]` section.
    pub fn new(extra: &str) -> Arc<NatsConfig> {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("quire.toml");
        let config = NatsConfig { dir, file };
        config.write(extra);
        Arc::new(config)
    }

    /// Replaces the `[nats_server]` additions (then SIGHUP applies them).
    pub fn write(&self, extra: &str) {
        std::fs::write(&self.file, format!("{TEST_SETTINGS}{extra}\n")).expect("write quire.toml");
    }

    pub fn path(&self) -> &Path {
        &self.file
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Route URLs for nodes with `ports`, the list every node of a cluster carries.
pub fn routes_setting(ports: &[NodePorts]) -> String {
    let routes: Vec<String> = ports
        .iter()
        .map(|p| format!("\"nats-route://127.0.0.1:{}\"", p.cluster))
        .collect();
    format!("routes = [{}]", routes.join(", "))
}

/// One `quire nats` process, killed when dropped.
pub struct QuireNats {
    pub name: String,
    pub ports: NodePorts,
    config: Arc<NatsConfig>,
    env: Vec<(String, String)>,
    proc: Proc,
}

impl QuireNats {
    /// Starts `quire nats` with the shared `config` and this node's name and ports.
    pub fn spawn(name: &str, ports: NodePorts, config: &Arc<NatsConfig>) -> QuireNats {
        Self::spawn_with_env(name, ports, config, &[])
    }

    /// `spawn` with extra environment variables (`NOTIFY_SOCKET`, more settings).
    pub fn spawn_with_env(
        name: &str,
        ports: NodePorts,
        config: &Arc<NatsConfig>,
        env: &[(&str, &str)],
    ) -> QuireNats {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let proc = Self::spawn_proc(name, ports, config, &env);
        QuireNats {
            name: name.to_owned(),
            ports,
            config: config.clone(),
            env,
            proc,
        }
    }

    /// `spawn`, then waits until the node answers `/healthz`.
    pub async fn start(name: &str, ports: NodePorts, config: &Arc<NatsConfig>) -> QuireNats {
        let node = Self::spawn(name, ports, config);
        node.wait_healthy().await;
        node
    }

    fn spawn_proc(
        name: &str,
        ports: NodePorts,
        config: &NatsConfig,
        env: &[(String, String)],
    ) -> Proc {
        let mut cmd = Command::new(quire_bin());
        cmd.arg("--config").arg(config.path()).arg("nats");
        cmd.env("NO_COLOR", "1")
            .env("QUIRE_DATA_DIR", config.dir().join(name))
            .env("QUIRE_NATS_SERVER__SERVER_NAME", name)
            .env("QUIRE_NATS_SERVER__PORT", ports.client.to_string())
            .env("QUIRE_NATS_SERVER__MONITOR_PORT", ports.monitor.to_string())
            .env("QUIRE_NATS_SERVER__CLUSTER_PORT", ports.cluster.to_string())
            .envs(env.iter().map(|(k, v)| (k, v)));
        Proc::spawn(name, cmd, config.dir())
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.ports.client)
    }

    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.monitor)
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    pub async fn is_healthy(&self) -> bool {
        is_healthy(&self.monitor_url()).await
    }

    pub async fn wait_healthy(&self) {
        wait_for(&format!("{} /healthz", self.name), NODE_TIMEOUT, || async {
            self.is_healthy().await.then_some(())
        })
        .await;
    }

    /// `/varz` of the supervised nats-server.
    pub async fn varz(&self) -> Option<serde_json::Value> {
        get_json(&format!("{}/varz", self.monitor_url())).await
    }

    /// Routes to other nodes, from `/routez`.
    pub async fn routes(&self) -> Option<u64> {
        get_json(&format!("{}/routez", self.monitor_url()))
            .await?
            .get("num_routes")?
            .as_u64()
    }

    /// Waits until this node has routes to exactly `n` other nodes.
    pub async fn wait_routes(&self, n: u64) {
        wait_for(
            &format!("{} to have {n} routes", self.name),
            NODE_TIMEOUT,
            || async { (self.routes().await == Some(n)).then_some(()) },
        )
        .await;
    }

    /// The pid of the nats-server this node started last, from its log.
    pub fn child_pid(&self) -> Option<u32> {
        let log = self.log();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("nats-server started"))?;
        let digits: String = line
            .split("pid=")
            .nth(1)?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    }

    pub async fn wait_child_pid(&self) -> u32 {
        wait_for(
            &format!("{} to start nats-server", self.name),
            NODE_TIMEOUT,
            || async { self.child_pid() },
        )
        .await
    }

    /// Sends `signal` to the supervised nats-server (by its pid) and returns that pid.
    pub async fn signal_child(&self, signal: rustix::process::Signal) -> u32 {
        let pid = self.wait_child_pid().await;
        let target = rustix::process::Pid::from_raw(pid as i32).expect("pid");
        rustix::process::kill_process(target, signal).expect("signal nats-server");
        pid
    }

    /// Kills the supervised nats-server with SIGKILL and returns its pid.
    pub async fn kill_child9(&self) -> u32 {
        self.signal_child(rustix::process::Signal::KILL).await
    }

    /// Waits until the supervisor has started a nats-server other than `old` and returns its pid.
    pub async fn wait_restarted(&self, old: u32) -> u32 {
        wait_for(
            &format!("{} to restart nats-server", self.name),
            NODE_TIMEOUT,
            || async { self.child_pid().filter(|pid| *pid != old) },
        )
        .await
    }

    /// SIGHUP: re-read the config and reload nats-server.
    pub fn sighup(&self) {
        self.proc.signal(rustix::process::Signal::HUP.as_raw());
    }

    /// Graceful stop (SIGTERM, lame-duck mode); the exit status, or a panic after `NODE_TIMEOUT`.
    /// Waits without blocking the runtime, so clients in the test keep running meanwhile.
    pub async fn stop(&mut self) -> ExitStatus {
        self.proc.signal(rustix::process::Signal::TERM.as_raw());
        let deadline = Instant::now() + NODE_TIMEOUT;
        loop {
            if let Some(status) = self.proc.wait_exit(Duration::ZERO) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop within {NODE_TIMEOUT:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for quire to exit by itself; `None` if it still runs after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.wait_exit(timeout)
    }

    /// kill -9 of quire itself.
    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    /// Starts the node again after `stop` or `kill9`, with the same name, ports and config.
    pub fn respawn(&mut self) {
        self.proc = Self::spawn_proc(&self.name, self.ports, &self.config, &self.env);
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }
}

/// `quire nats` nodes forming one cluster.
pub struct NatsCluster {
    pub nodes: Vec<QuireNats>,
    pub config: Arc<NatsConfig>,
}

impl NatsCluster {
    /// Starts `n` nodes (`n1`, `n2`, …) from one config whose routes list all of them, and waits
    /// until every node is healthy and routed to all the others.
    pub async fn start(n: usize) -> NatsCluster {
        let ports: Vec<NodePorts> = (0..n).map(|_| NodePorts::free()).collect();
        let config = NatsConfig::new(&routes_setting(&ports));
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, p)| QuireNats::spawn(&format!("n{}", i + 1), *p, &config))
            .collect();
        let cluster = NatsCluster { nodes, config };
        for node in &cluster.nodes {
            node.wait_healthy().await;
        }
        cluster.wait_routed(&(0..n).collect::<Vec<_>>()).await;
        cluster
    }

    /// Client URLs of every node, as `nats.url` lists them.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(QuireNats::url).collect()
    }

    /// The node whose nats-server has this name.
    pub fn node(&self, server_name: &str) -> &QuireNats {
        self.nodes
            .iter()
            .find(|n| n.name == server_name)
            .unwrap_or_else(|| panic!("no node {server_name}"))
    }

    pub fn index_of(&self, server_name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == server_name)
            .unwrap_or_else(|| panic!("no node {server_name}"))
    }

    /// Waits until each node in `alive` (indexes) is routed to all the others in `alive`.
    pub async fn wait_routed(&self, alive: &[usize]) {
        let others = alive.len() as u64 - 1;
        for i in alive {
            self.nodes[*i].wait_routes(others).await;
        }
    }
}

/// A client as `quire app` should build one: every node's URL, reconnecting for ever, and a
/// lame-duck notice turned into an immediate move to another node (async-nats only reports it).
pub async fn connect(urls: &[String]) -> async_nats::Client {
    let (ldm_tx, mut ldm_rx) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .max_reconnects(None)
        .event_callback(move |event| {
            let ldm_tx = ldm_tx.clone();
            async move {
                if matches!(event, async_nats::Event::LameDuckMode) {
                    let _ = ldm_tx.send(());
                }
            }
        })
        .connect(urls)
        .await
        .expect("connect to NATS");
    let mover = client.clone();
    tokio::spawn(async move {
        while ldm_rx.recv().await.is_some() {
            let _ = mover.force_reconnect().await;
        }
    });
    client
}
