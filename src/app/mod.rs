//! `quire app`: the report service. Start-up reads as a list of steps; shutdown drains (readiness
//! off, no new claims, running renders finish within `render.drain_timeout` or go back to the
//! queue) and then stops (HTTP closes, database closes).

pub mod auth;
pub mod bus;
pub mod console;
pub mod examples;
pub mod fonts;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod model;
pub mod render;
pub mod state;
pub mod store;
pub mod templates;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::lifecycle::Lifecycle;

/// Render workers are started from the running executable's inode, so an upgrade that replaces
/// the file on disk never mixes versions inside one instance.
const SELF_EXE: &str = "/proc/self/exe";
/// Claim lease of a running job; renewed every third of it.
const CLAIM_LEASE: Duration = Duration::from_secs(15);
/// Template versions kept in memory.
const FILE_CACHE_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Root(#[from] auth::RootError),
    #[error("cannot start render workers: {0}")]
    Workers(render::RenderError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// `quire migrate`.
pub async fn migrate(config: &Config) -> Result<(), AppError> {
    let store = store::open(config).await?;
    store.migrate().await?;
    tracing::info!(
        version = store.schema_version().await?,
        "database is up to date"
    );
    store.close().await;
    Ok(())
}

/// `quire app`: serves until shutdown.
pub async fn run(
    config: Arc<Config>,
    instance: String,
    lifecycle: Lifecycle,
) -> Result<(), AppError> {
    let started = Instant::now();
    let shutdown = lifecycle.shutdown().clone();
    tracing::info!(version = crate::version(), "starting quire app");

    let store = store::open(&config).await?;
    store.migrate().await?;
    let schema_version = store.schema_version().await?;
    announce_root(auth::ensure_root(store.as_ref(), &config).await?);
    if examples::seed(store.as_ref()).await? {
        tracing::info!("created the example templates: invoice, listing");
    }

    let pool = render::RenderPool::new(render::PoolOptions {
        exe: SELF_EXE.into(),
        workers: config.render.workers(),
        fonts_dir: config.fonts_dir(),
        memory_limit: config.render.memory_limit,
        timeout: config.render.timeout.get(),
        sync_queue_limit: config.render.sync_queue_limit as usize,
    });
    pool.warm().await.map_err(AppError::Workers)?;
    let fonts = fonts::FontLibrary::new(
        config.fonts_dir(),
        config.fonts.max_upload_size.as_usize(),
        pool.clone(),
    );
    fonts.spawn_rescan(config.fonts.rescan_interval.get(), shutdown.clone());

    let bus = bus::Bus::default();
    let metrics = Arc::new(metrics::Metrics::new(&instance));
    let cache = Arc::new(templates::FileCache::new(FILE_CACHE_BYTES));
    let jobs = jobs::Jobs::new(
        store.clone(),
        pool.clone(),
        bus.clone(),
        cache.clone(),
        metrics.clone(),
        instance.clone(),
        jobs::JobSettings {
            claim_lease: CLAIM_LEASE,
            retention: config.render.retention.get(),
            max_attempts: config.render.max_attempts,
            poll: Duration::from_secs(1),
            janitor_every: Duration::from_secs(30),
        },
    );
    let requeued = jobs.recover_abandoned().await?;
    if requeued > 0 {
        tracing::warn!(
            jobs = requeued,
            "put back jobs the previous run left unfinished"
        );
    }

    let state = state::AppState::new(state::Shared {
        config: config.clone(),
        instance: instance.clone(),
        started,
        store: store.clone(),
        pool: pool.clone(),
        bus,
        jobs: jobs.clone(),
        cache,
        fonts,
        metrics,
        limiter: auth::ratelimit::LoginLimiter::new(
            config.auth.login_max_failures,
            config.auth.login_window.get(),
        ),
        shutdown: shutdown.clone(),
        schema_version,
    });

    let listen = config.http.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| AppError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(listen);
    let server = tokio::spawn(http::serve(
        listener,
        http::router(state),
        shutdown.clone(),
        config.http.keep_alive_timeout.get(),
        config.http.shutdown_timeout.get(),
    ));
    let runner = jobs.spawn_runner(shutdown.clone());
    jobs.spawn_janitor(shutdown.clone());
    lifecycle.spawn_watchdog(|| true);
    let url = format!(
        "http://{}",
        crate::healthcheck::local_url(addr).trim_start_matches("http://")
    );
    tracing::info!(addr = %addr, url = %url, workers = pool.size(), ms = started.elapsed().as_millis() as u64, "listening");
    lifecycle.service_ready("app", &format!("serving on {addr}"));

    shutdown.draining().await;
    let _ = runner.await;
    let running = jobs.running();
    if running > 0 {
        tracing::info!(jobs = running, bound = %config.render.drain_timeout, "waiting for running renders");
    }
    let handed_back = jobs
        .drain(&shutdown, config.render.drain_timeout.get())
        .await;
    if handed_back > 0 {
        tracing::warn!(
            jobs = handed_back,
            "renders did not finish in time and went back to the queue"
        );
    }
    shutdown.stop();
    let _ = server.await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

fn announce_root(root: auth::RootUser) {
    match root {
        auth::RootUser::Configured(email) => {
            tracing::info!(email = %email, "root user matches the configuration")
        }
        auth::RootUser::Generated {
            email,
            password,
            saved_to,
        } => tracing::warn!(
            email = %email,
            password = %password,
            saved_to = %saved_to.display(),
            "no root user was configured: created one; sign in with this email and password (set root_user.email and root_user.password to choose your own)"
        ),
        auth::RootUser::Unchanged => {}
    }
}
