//! `quire nats`: one node of a NATS cluster, run as a supervised `nats-server` child whose config
//! is generated from the `[nats_server]` section of quire.toml. Three machines with the same
//! config (routes listing all three) make a cluster.
//!
//! This module knows nothing about `app/`: it only needs its section, `data_dir` and the lifecycle.

mod backoff;
pub mod binary;
mod child;
pub mod conf_file;
pub mod config;
mod health;
mod logs;
pub mod monitor;
pub mod status;
mod supervisor;

use std::path::{Path, PathBuf};

pub use config::NatsServerConfig;
pub use monitor::Monitor;
pub use status::{Status, status};

use crate::config::ConfigError;
use crate::lifecycle::Lifecycle;
use supervisor::{Node, Supervisor};

/// Re-reads the configuration (file and environment) when SIGHUP asks for a reload: the
/// `[nats_server]` section and `data_dir` (under which the state directory defaults to `nats/`).
pub type Reload = Box<dyn Fn() -> Result<(NatsServerConfig, PathBuf), ConfigError> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error(transparent)]
    Binary(#[from] binary::BinaryError),
    #[error("cannot prepare the state directory {} (nats_server.state_dir): {source}", path.display())]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    ConfFile(#[from] conf_file::ConfFileError),
    #[error("cannot start {}: {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

impl NatsError {
    /// Errors that another start would hit again until the operator changes something (config
    /// or installed packages), so the service manager should not restart in a loop.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            NatsError::Binary(_) | NatsError::ConfFile(conf_file::ConfFileError::Rejected { .. })
        )
    }
}

/// Runs the node until drain: writes nats-server's config, starts and supervises it, reports
/// ready once `/healthz` answers, and stops it in lame-duck mode. `reload` is called on SIGHUP.
pub async fn run(
    config: &NatsServerConfig,
    data_dir: &Path,
    lifecycle: Lifecycle,
    reload: Reload,
) -> Result<(), NatsError> {
    let binary = binary::resolve_here(config.binary.as_deref())?;
    let node = Node::from_config(config, data_dir)?;
    let state_dir = node.state_dir().to_path_buf();
    std::fs::create_dir_all(&state_dir).map_err(|source| NatsError::StateDir {
        path: state_dir,
        source,
    })?;
    conf_file::install(&binary, &node.conf_path(), node.conf()).await?;
    tracing::info!(binary = %binary.display(), conf = %node.conf_path().display(), "starting nats-server");
    let supervisor = Supervisor::new(lifecycle.clone(), binary, node, reload)?;
    lifecycle.spawn_watchdog(supervisor.watchdog_check());
    supervisor.run().await
}
