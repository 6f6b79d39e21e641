//! `quire lb`: a reverse proxy and load balancer in front of app instances.
//!
//! Start-up, in order: load TLS (if configured), bind the client listeners (one per worker
//! thread) and the admin listener, probe every upstream once, start the periodic probes and the
//! admin listener, start the workers, report ready. Teardown: on drain the workers stop accepting,
//! each connection finishes its request and each tunnel runs until `drain_timeout`, then stop.

pub mod access;
pub mod admin;
pub mod balance;
pub mod body;
pub mod config;
pub mod core;
pub mod forwarded;
pub mod headers;
pub mod health;
pub mod metrics;
pub mod passive;
pub mod pool;
pub mod probe;
pub mod proxy;
pub mod response;
pub mod retry;
pub mod server;
pub mod tls;
pub mod upstream;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

pub use config::LbConfig;

use crate::lb::core::Core;
use crate::lb::metrics::Metrics;
use crate::lb::probe::Checker;
use crate::lb::tls::{Tls, TlsError};
use crate::lb::upstream::{Clock, Upstreams};
use crate::lifecycle::{self, Lifecycle};

#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot watch SIGHUP: {0}")]
    Signal(#[source] std::io::Error),
    #[error("cannot start a worker thread: {0}")]
    Worker(#[source] std::io::Error),
}

/// Runs the load balancer on its `[lb]` section until the lifecycle's stop phase.
pub async fn run(config: LbConfig, lifecycle: Lifecycle) -> Result<(), LbError> {
    let config = Arc::new(config);
    let lb = &*config;
    let shutdown = lifecycle.shutdown().clone();
    let tls = Tls::from_config(&lb.tls)?.map(Arc::new);
    let bind_error = |key, addr| move |source| LbError::Bind { key, addr, source };
    let listeners =
        server::bind(lb.listen, lb.workers()).map_err(bind_error("lb.listen", lb.listen))?;
    let admin_listener = TcpListener::bind(lb.admin_listen)
        .await
        .map_err(bind_error("lb.admin_listen", lb.admin_listen))?;
    let listen = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .unwrap_or(lb.listen);

    let names: Vec<String> = lb.upstreams.iter().map(|u| u.url.to_string()).collect();
    let metrics = Metrics::new(&names);
    let upstreams = Upstreams::new(lb, &metrics, Clock::new());
    let core = Arc::new(Core {
        upstreams,
        metrics,
        policy: lb.policy,
        access_log: lb.access_log,
    });

    let report = {
        let (core, notifier) = (core.clone(), lifecycle.notifier().clone());
        move || notifier.status(&status_line(&core, listen))
    };
    let checker = Arc::new(Checker::new(
        lb.health.clone(),
        core.clone(),
        Box::new(report),
    ));
    checker.first_round().await;
    checker.spawn(shutdown.clone());
    tokio::spawn(admin::serve(admin_listener, core.clone(), shutdown.clone()));
    watch_sighup(tls.clone())?;

    let tracker = TaskTracker::new();
    let shared = Arc::new(server::Shared {
        config: config.clone(),
        core: core.clone(),
        tls: tls.clone(),
        tracker: tracker.clone(),
        shutdown: shutdown.clone(),
        alive: AtomicUsize::new(0),
    });
    let workers = listeners
        .into_iter()
        .enumerate()
        .map(|(i, listener)| server::spawn_worker(i, listener, shared.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(LbError::Worker)?;

    tracing::info!(
        listen = %listen,
        admin = %lb.admin_listen,
        policy = lb.policy.as_str(),
        upstreams = names.len(),
        workers = workers.len(),
        tls = tls.is_some(),
        "load balancer serving"
    );
    lifecycle.service_ready("lb", &status_line(&core, listen));
    let count = workers.len();
    lifecycle.spawn_watchdog(move || shared.alive.load(Ordering::SeqCst) == count);
    shutdown.draining().await;

    drain(&tracker, &lifecycle, lb.drain_timeout.get()).await;
    let _ =
        tokio::task::spawn_blocking(move || workers.into_iter().for_each(|w| drop(w.join()))).await;
    tracing::info!("load balancer stopped");
    Ok(())
}

/// Waits for open connections and tunnels, then enters the stop phase.
async fn drain(tracker: &TaskTracker, lifecycle: &Lifecycle, bound: Duration) {
    let shutdown = lifecycle.shutdown();
    tracing::info!(
        open = tracker.len(),
        "draining: not accepting; waiting for open requests and tunnels"
    );
    tracker.close();
    if !lifecycle::within(shutdown, bound, tracker.wait()).await {
        tracing::warn!(
            open = tracker.len(),
            "drain time is up: closing what is still open"
        );
    }
    shutdown.stop();
}

fn status_line(core: &Core, listen: SocketAddr) -> String {
    let now = core.upstreams.clock.now();
    let total = core.upstreams.list().len();
    format!(
        "serving on {listen}: {}/{total} upstreams available",
        core.upstreams.available_count(now)
    )
}

/// SIGHUP reloads the TLS certificate. Without TLS there is nothing to reload, but the signal is
/// still caught: its default action would end the process.
fn watch_sighup(tls: Option<Arc<Tls>>) -> Result<(), LbError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).map_err(LbError::Signal)?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match &tls {
                None => tracing::info!("SIGHUP: no TLS configured, nothing to reload"),
                Some(tls) => match tls.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "SIGHUP: TLS reload failed; keeping the old certificate")
                    }
                },
            }
        }
    });
    Ok(())
}
