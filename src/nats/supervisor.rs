//! The supervision loop: start nats-server, relay its log, report ready once it is healthy,
//! restart it with backoff when it exits, reload it on SIGHUP, and on drain stop it in lame-duck
//! mode so its clients move to the other nodes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use tokio::io::BufReader;
use tokio::sync::watch;

use super::backoff::Backoff;
use super::child::{NatsChild, Spawner, describe_exit};
use super::conf_file;
use super::config::NatsServerConfig;
use super::health::Health;
use super::logs;
use super::monitor::Monitor;
use super::{NatsError, Reload};
use crate::lifecycle::{self, Lifecycle, Shutdown};

/// After SIGTERM, how long nats-server gets before SIGKILL.
const KILL_AFTER: Duration = Duration::from_secs(5);
/// How long to wait for nats-server to confirm a reload on `/varz`.
const RELOAD_CONFIRM: Duration = Duration::from_secs(5);
const MONITOR_TIMEOUT: Duration = Duration::from_secs(2);

/// What one configuration means for the supervisor: the nats-server config text plus the
/// settings quire itself acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// `nats_server.binary` as configured (resolved once, at start).
    binary_setting: Option<PathBuf>,
    /// Absolute: nats-server resolves relative paths against its own working directory.
    state_dir: PathBuf,
    monitor: SocketAddr,
    stop_timeout: Duration,
    conf: String,
}

impl Node {
    /// The node `c` describes, its state directory defaulting to `data_dir/nats`.
    pub fn from_config(c: &NatsServerConfig, data_dir: &Path) -> Result<Node, NatsError> {
        let dir = c.state_dir(data_dir);
        let state_dir = std::path::absolute(&dir)
            .map_err(|source| NatsError::StateDir { path: dir, source })?;
        Ok(Node {
            binary_setting: c.binary.clone(),
            conf: conf_file::render(c, &state_dir),
            state_dir,
            monitor: c.monitor_addr(),
            stop_timeout: c.stop_timeout.get(),
        })
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The nats-server config text.
    pub fn conf(&self) -> &str {
        &self.conf
    }

    pub fn conf_path(&self) -> PathBuf {
        self.state_dir.join(conf_file::FILE_NAME)
    }

    pub fn monitor(&self) -> Monitor {
        Monitor::new(
            &crate::healthcheck::local_url(self.monitor),
            MONITOR_TIMEOUT,
        )
    }

    /// The first setting quire acts on itself that differs, which a reload cannot change.
    fn restart_needed_for(&self, new: &Node) -> Option<&'static str> {
        if self.binary_setting != new.binary_setting {
            Some("binary")
        } else if self.state_dir != new.state_dir {
            Some("state_dir")
        } else if self.monitor != new.monitor {
            Some("monitor_host / monitor_port")
        } else {
            None
        }
    }
}

/// How one run of the child ended.
enum End {
    Exited(String),
    Drain,
}

pub struct Supervisor {
    lifecycle: Lifecycle,
    shutdown: Shutdown,
    binary: PathBuf,
    node: Node,
    reload: Reload,
    spawner: Spawner,
    monitor: Monitor,
    health: Health,
    healthy: watch::Receiver<bool>,
    hangup: tokio::signal::unix::Signal,
    ready_sent: bool,
}

impl Supervisor {
    pub fn new(
        lifecycle: Lifecycle,
        binary: PathBuf,
        node: Node,
        reload: Reload,
    ) -> Result<Supervisor, NatsError> {
        use tokio::signal::unix::{SignalKind, signal};
        let hangup = signal(SignalKind::hangup()).map_err(NatsError::Signals)?;
        let spawner = Spawner::start().map_err(|source| NatsError::Spawn {
            binary: binary.clone(),
            source,
        })?;
        let monitor = node.monitor();
        let health = Health::spawn(monitor.clone(), lifecycle.shutdown().clone());
        let healthy = health.subscribe();
        Ok(Supervisor {
            shutdown: lifecycle.shutdown().clone(),
            lifecycle,
            binary,
            node,
            reload,
            spawner,
            monitor,
            health,
            healthy,
            hangup,
            ready_sent: false,
        })
    }

    /// The systemd watchdog is fed while nats-server is healthy, and while it drains: lame-duck
    /// mode fails `/healthz` on purpose, which is a stop in progress, not a hang.
    pub fn watchdog_check(&self) -> impl Fn() -> bool + Send + 'static {
        let healthy = self.healthy.clone();
        let shutdown = self.shutdown.clone();
        move || shutdown.is_draining() || *healthy.borrow()
    }

    /// Runs until drain; the first start failing is an error, later ones are retried.
    pub async fn run(mut self) -> Result<(), NatsError> {
        let mut backoff = Backoff::default();
        let mut started_once = false;
        loop {
            let delay = match self.start().await {
                Ok(mut child) => {
                    started_once = true;
                    let started = Instant::now();
                    match self.watch(&mut child).await {
                        End::Drain => {
                            self.stop(child).await;
                            return Ok(());
                        }
                        End::Exited(why) => {
                            self.health.mark_down();
                            self.healthy.borrow_and_update();
                            let delay = backoff.after_run(started.elapsed());
                            tracing::warn!(
                                pid = child.pid(),
                                "nats-server {why}; restarting in {delay:?}"
                            );
                            delay
                        }
                    }
                }
                Err(e) if !started_once => return Err(e),
                Err(e) => {
                    let delay = backoff.after_run(Duration::ZERO);
                    tracing::error!("cannot restart nats-server: {e}; retrying in {delay:?}");
                    delay
                }
            };
            self.lifecycle
                .notifier()
                .status(&format!("nats-server down, restarting in {delay:?}"));
            if !self.wait_before_restart(delay).await {
                return Ok(());
            }
        }
    }

    async fn start(&mut self) -> Result<NatsChild, NatsError> {
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .arg("-c")
            .arg(self.node.conf_path())
            .current_dir(&self.node.state_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // quire's environment holds secrets (database URL, keys) and NOTIFY_SOCKET, none of
            // them meant for nats-server; only Go runtime tuning (GOMAXPROCS, GOMEMLIMIT) passes.
            .env_clear()
            .envs(
                std::env::vars_os()
                    .filter(|(k, _)| k.to_str().is_some_and(|k| k.starts_with("GO"))),
            );
        let mut child = self
            .spawner
            .spawn(command)
            .await
            .map_err(|source| NatsError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        let pid = child.pid();
        let (stdout, stderr) = child.take_output();
        if let Some(out) = stdout {
            tokio::spawn(logs::relay(pid, BufReader::new(out)));
        }
        if let Some(err) = stderr {
            tokio::spawn(logs::relay(pid, BufReader::new(err)));
        }
        tracing::info!(pid, "nats-server started");
        Ok(child)
    }

    async fn watch(&mut self, child: &mut NatsChild) -> End {
        let shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                status = child.exited() => {
                    return End::Exited(status.map_or_else(|e| format!("could not be waited for ({e})"), describe_exit));
                }
                _ = shutdown.draining() => return End::Drain,
                _ = self.hangup.recv() => self.reload(Some(child)).await,
                Ok(()) = self.healthy.changed() => self.health_changed(),
            }
        }
    }

    fn health_changed(&mut self) {
        let healthy = *self.healthy.borrow_and_update();
        let notifier = self.lifecycle.notifier();
        if !healthy {
            tracing::warn!(
                "nats-server is unhealthy: {}/healthz does not answer 200",
                self.monitor.base()
            );
            notifier.status("nats-server unhealthy");
        } else if self.ready_sent {
            tracing::info!("nats-server is healthy again");
            notifier.status("nats-server healthy");
        } else {
            self.ready_sent = true;
            tracing::info!(
                monitor = self.monitor.base(),
                "nats-server is healthy: ready"
            );
            self.lifecycle.service_ready("nats", "nats-server healthy");
        }
    }

    /// Sleeps `delay` before a restart; false when drain began meanwhile.
    async fn wait_before_restart(&mut self, delay: Duration) -> bool {
        let shutdown = self.shutdown.clone();
        let deadline = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return true,
                _ = shutdown.draining() => return false,
                _ = self.hangup.recv() => self.reload(None).await,
            }
        }
    }

    /// SIGHUP: re-read the configuration, regenerate nats-server's, and have the running server
    /// reload it. Anything wrong keeps the current configuration in place.
    async fn reload(&mut self, child: Option<&NatsChild>) {
        tracing::info!("SIGHUP: reloading the configuration");
        let node = match (self.reload)()
            .map_err(|e| e.to_string())
            .and_then(|(c, data_dir)| Node::from_config(&c, &data_dir).map_err(|e| e.to_string()))
        {
            Ok(node) => node,
            Err(e) => {
                tracing::error!(
                    "configuration not reloaded, nats-server keeps its current one: {e}"
                );
                return;
            }
        };
        if let Some(key) = self.node.restart_needed_for(&node) {
            tracing::error!(
                "nats_server.{key} changed: restart quire nats to apply it; nothing was reloaded"
            );
            return;
        }
        if node == self.node {
            tracing::info!("configuration unchanged: nothing to reload");
            return;
        }
        if let Err(e) = conf_file::install(&self.binary, &node.conf_path(), &node.conf).await {
            tracing::error!("configuration not reloaded, nats-server keeps its current one: {e}");
            return;
        }
        self.node = node;
        let Some(child) = child else {
            tracing::info!("new configuration written; nats-server uses it when it starts");
            return;
        };
        let loaded_before = self.monitor.varz().await.map(|v| v.config_load_time);
        if let Err(e) = child.signal(Signal::HUP) {
            tracing::error!("cannot signal nats-server to reload: {e}");
            return;
        }
        if let Ok(before) = loaded_before {
            tokio::spawn(confirm_reload(self.monitor.clone(), before));
        }
    }

    /// Lame-duck mode (SIGUSR2): nats-server stops accepting clients and closes the existing ones
    /// gradually, so they reconnect to the other nodes. It closes its client port and fails
    /// `/healthz` at once, which is a stop in progress here, not a crash. SIGTERM when it takes
    /// longer than `stop_timeout` or when quire is told to stop now, SIGKILL when even that does
    /// not end it.
    async fn stop(&self, mut child: NatsChild) {
        let pid = child.pid();
        let bound = self.node.stop_timeout;
        self.lifecycle
            .notifier()
            .status("nats-server in lame-duck mode");
        let mut finished = false;
        if !self.shutdown.is_stopped() {
            tracing::info!(
                pid,
                "lame-duck mode: clients move to the other nodes; stopping within {bound:?}"
            );
            match child.signal(Signal::USR2) {
                Ok(()) => {
                    finished = lifecycle::within(&self.shutdown, bound, async {
                        drop(child.exited().await)
                    })
                    .await
                }
                Err(e) => tracing::warn!(pid, "cannot enter lame-duck mode ({e})"),
            }
        }
        if !finished {
            tracing::warn!(pid, "nats-server still running: sending SIGTERM");
            let _ = child.signal(Signal::TERM);
            if tokio::time::timeout(KILL_AFTER, child.exited())
                .await
                .is_err()
            {
                tracing::warn!(
                    pid,
                    "nats-server ignored SIGTERM for {KILL_AFTER:?}: sending SIGKILL"
                );
                let _ = child.signal(Signal::KILL);
            }
        }
        match child.exited().await {
            Ok(status) => tracing::info!(pid, "nats-server stopped: {}", describe_exit(status)),
            Err(e) => tracing::warn!(pid, "nats-server could not be waited for ({e})"),
        }
    }
}

async fn confirm_reload(monitor: Monitor, before: String) {
    let deadline = Instant::now() + RELOAD_CONFIRM;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if monitor
            .varz()
            .await
            .is_ok_and(|v| v.config_load_time != before)
        {
            tracing::info!("nats-server applied the new configuration");
            return;
        }
    }
    tracing::warn!(
        "nats-server did not apply the new configuration (its log says why); changes to ports, names or TLS need a restart of quire nats"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(edit: impl FnOnce(&mut NatsServerConfig, &mut PathBuf)) -> Node {
        let mut config = NatsServerConfig::default();
        let mut data_dir = PathBuf::from("./data");
        edit(&mut config, &mut data_dir);
        Node::from_config(&config, &data_dir).unwrap()
    }

    #[test]
    fn reload_changes_the_config_text_but_not_what_quire_itself_uses() {
        let current = node(|_, _| {});
        assert!(
            current.state_dir().is_absolute(),
            "nats-server must not resolve it"
        );

        let bigger = node(|c, _| c.max_payload = crate::config::ByteSize::mib(2));
        assert_eq!(current.restart_needed_for(&bigger), None);
        assert_ne!(current.conf(), bigger.conf());

        let moved = node(|c, _| c.monitor_port = 9222);
        assert_eq!(
            current.restart_needed_for(&moved),
            Some("monitor_host / monitor_port")
        );
        let elsewhere = node(|_, data_dir| *data_dir = "/srv/quire".into());
        assert_eq!(current.restart_needed_for(&elsewhere), Some("state_dir"));
    }
}
