//! `quire app`: the report service. Start-up reads as a list of steps; shutdown drains (readiness
//! off, no new claims, running renders finish within `render.drain_timeout` or go back to the
//! queue) and then stops (HTTP closes, database closes).

pub mod agents;
pub mod auth;
pub mod bus;
pub mod cluster;
pub mod config;
pub mod console;
pub mod datasource;
pub mod dr;
pub mod examples;
pub mod fonts;
pub mod http;
pub mod jobs;
pub mod license;
pub mod mail;
pub mod metrics;
pub mod model;
pub mod render;
pub mod schedule;
pub mod secrets;
pub mod state;
pub mod store;
pub mod templates;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::config::AppConfig;
use crate::lifecycle::{Lifecycle, within};

/// Render workers are started from the running executable's inode, so an upgrade that replaces
/// the file on disk never mixes versions inside one instance.
const SELF_EXE: &str = "/proc/self/exe";
/// Claim lease of a running job; renewed every third of it.
const CLAIM_LEASE: Duration = Duration::from_secs(15);
/// Template versions kept in memory.
const FILE_CACHE_BYTES: usize = 64 << 20;
/// How often the janitor role's holder sweeps.
const JANITOR_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Root(#[from] auth::RootError),
    #[error("cannot start render workers: {0}")]
    Workers(render::RenderError),
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// An active instance whose database turned into a replica, or that was fenced: it exits
    /// with [`dr::EXIT_ROLE_CHANGED`] and its supervisor starts it in its new role.
    #[error("the role of this instance changed: {0}")]
    RoleChanged(String),
    /// Checked when the configuration is read; kept here so a key is never silently ignored.
    #[error("license.key: {0}")]
    License(#[from] crate::license::KeyError),
}

/// `quire migrate`: applies migrations (through `database.migrate_url` when set, a direct
/// connection rather than a pooler) and exits.
pub async fn migrate(config: &AppConfig) -> Result<(), AppError> {
    let mut direct = config.clone();
    if let Some(url) = &config.database.migrate_url {
        direct.database.url = Some(url.clone());
        direct.database.pgbouncer = false;
    }
    let store = store::open(&direct, "quire migrate").await?;
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
    config: Arc<AppConfig>,
    instance: String,
    lifecycle: Lifecycle,
) -> Result<(), AppError> {
    let started = Instant::now();
    let started_ms = model::now_ms();
    let shutdown = lifecycle.shutdown().clone();
    tracing::info!(
        version = crate::version(),
        ha = config.ha.enabled,
        "starting quire app"
    );

    prepare_data_dir(&config.data_dir);
    let store = store::open(&config, &format!("quire {instance}")).await?;
    let metrics = Arc::new(metrics::Metrics::new(&instance));
    let dr = dr::service::Dr::new(&config.dr, store.clone(), &instance, metrics.clone());
    dr.watch_peer(shutdown.clone());
    let listener = bind(config.http.listen)?;
    lifecycle.spawn_watchdog(|| true);
    let took_over = match stand_by(
        &config, &dr, &store, &metrics, &instance, &lifecycle, &listener,
    )
    .await?
    {
        StandBy::Active => None,
        StandBy::TookOver(since, status) => Some((since, status)),
        StandBy::Stopped => return Ok(()),
    };
    if !migrate_when_reachable(&config, store.as_ref(), &shutdown).await? {
        return Ok(());
    }
    let schema_version = store.schema_version().await?;
    announce_root(auth::ensure_root(store.as_ref(), &config).await?);
    if examples::seed(store.as_ref(), &config.data_dir).await? {
        tracing::info!("created the examples: invoice, listing, sales (with its data source)");
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

    let bus = bus::Bus::new(&instance);
    if let Some(servers) = config.nats.servers() {
        bus.connect_nats(servers, &config.nats.subject_prefix)
            .await?;
    }
    // Every background task but the ordered few below (runner, leader loop, heartbeat, HTTP)
    // is spawned here, and joined at shutdown.
    let tasks = tokio_util::task::TaskTracker::new();
    let fonts = fonts::FontLibrary::new(
        config.fonts_dir(),
        config.fonts.max_upload_size.as_usize(),
        pool.clone(),
        store.clone(),
        bus.clone(),
    );
    fonts.spawn_watch(config.fonts.rescan_interval.get(), &tasks, shutdown.clone());

    let cache = Arc::new(templates::FileCache::new(FILE_CACHE_BYTES));
    let sealer = secrets::Sealer::new(config.encryption.key.as_ref());
    let agents = agents::service::Agents::new(
        store.clone(),
        bus.clone(),
        metrics.clone(),
        &instance,
        shutdown.clone(),
    );
    agents.spawn(&tasks);
    let datasources = datasource::service::DataSources::new(
        store.clone(),
        sealer.clone(),
        bus.clone(),
        agents.clone(),
    );
    datasources.spawn_watch(&tasks, shutdown.clone());
    let queries = templates::queries::QueryRunner::new(datasources.clone(), &config.queries);
    let jobs = jobs::Jobs::new(
        store.clone(),
        pool.clone(),
        bus.clone(),
        cache.clone(),
        queries.clone(),
        metrics.clone(),
        instance.clone(),
        jobs::JobSettings {
            claim_lease: CLAIM_LEASE,
            retention: config.render.retention.get(),
            max_attempts: config.render.max_attempts,
            poll: Duration::from_secs(1),
            stale_after: config.ha.stale_after.get(),
        },
    );
    if !config.ha.enabled && store.backend() == "sqlite" {
        // On its own SQLite file an instance is alone: whatever was running belonged to its
        // previous run. (On PostgreSQL another instance may be running jobs even without HA
        // mode — a rolling update — so there the janitor takes back only lapsed claims.)
        let requeued = jobs.recover_abandoned().await?;
        if requeued > 0 {
            tracing::warn!(
                jobs = requeued,
                "put back jobs the previous run left unfinished"
            );
        }
    }

    let schedules = schedule::service::Schedules::new(
        store.clone(),
        jobs.clone(),
        queries.clone(),
        bus.clone(),
        config.mail.clone(),
        sealer.clone(),
        config.render.max_data_size.bytes(),
    );
    let availability = cluster::Availability::default();
    let roles = cluster::Roles::default();
    let ha = &config.ha;
    let licensing = license::Licensing::new(
        store.clone(),
        pool.clone(),
        metrics.clone(),
        config.license.verified()?,
        license::service::Identity {
            id: instance.clone(),
            name: cluster::registry::instance_name(&config, &instance),
            started_at: started_ms,
        },
        license::service::Settings {
            every: ha.heartbeat_every.get(),
            alive: ha.stale_after.get(),
            release_after: config.license.release_after.get(),
        },
    );
    let state = state::AppState::new(state::Shared {
        config: config.clone(),
        instance: instance.clone(),
        started,
        store: store.clone(),
        pool: pool.clone(),
        bus: bus.clone(),
        jobs: jobs.clone(),
        datasources: datasources.clone(),
        agents: agents.clone(),
        dr: dr.clone(),
        queries: queries.clone(),
        schedules: schedules.clone(),
        templates: templates::service::Templates::new(
            store.clone(),
            cache.clone(),
            datasources,
            Arc::new(schedules),
        ),
        cache,
        fonts,
        metrics: metrics.clone(),
        accounts: auth::accounts::Accounts::new(
            store.clone(),
            auth::ratelimit::LoginLimiter::new(
                config.auth.login_max_failures,
                config.auth.login_window.get(),
            ),
            config.auth.session_ttl.get(),
        ),
        shutdown: shutdown.clone(),
        schema_version,
        availability: availability.clone(),
        roles: roles.clone(),
        sealer: sealer.clone(),
        licensing: licensing.clone(),
    });

    // The seat is settled before the first request, the leader loop and the job runner, so
    // `/readyz` tells the truth from its first answer and an instance in the free tier never
    // takes a role or a second render at start.
    licensing.activate().await;
    licensing.log_standing();

    let listen = config.http.listen;
    let listener =
        tokio::net::TcpListener::from_std(listener).map_err(|source| AppError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(listen);
    let server = tokio::spawn(http::serve(
        listener,
        http::router(state, console::routes()),
        shutdown.clone(),
        config.http.keep_alive_timeout.get(),
        config.http.shutdown_timeout.get(),
    ));

    let salt = store
        .init_flag(cluster::registry::SALT_FLAG, &auth::token::secret())
        .await?;
    let info = cluster::registry::describe(
        &config,
        &instance,
        advertised(addr),
        started_ms,
        schema_version,
        &salt,
        licensing.label(),
    );
    store.register_instance(&info).await?;
    let seat = licensing.spawn(shutdown.clone());
    if let Some((since, status)) = &took_over
        && let Err(e) = dr.took_over(*since, status).await
    {
        tracing::warn!(error = %e, "could not record the takeover");
    }
    // SQLite is never a replica and has no peer.
    let role_watch = (store.backend() == "postgres").then(|| dr.watch_active(shutdown.clone()));
    let heartbeat = cluster::registry::spawn_heartbeat(
        store.clone(),
        info,
        availability.clone(),
        bus.clone(),
        ha.heartbeat_every.get(),
        shutdown.clone(),
    );
    let settings = cluster::LeaseSettings {
        lease: ha.lease.get(),
        renew_every: ha.renew_every.get(),
        safety_margin: ha.safety_margin.get(),
        stale_after: ha.stale_after.get(),
    };
    let leader = cluster::leases::spawn(
        store.clone(),
        instance.clone(),
        roles.clone(),
        bus.clone(),
        availability.clone(),
        licensing,
        settings,
        shutdown.clone(),
    );
    let scheduler = schedule::scheduler::Scheduler {
        store: store.clone(),
        bus: bus.clone(),
        metrics: metrics.clone(),
        mail: config.mail.clone(),
        sealer: sealer.clone(),
        queries: queries.clone(),
        burst: config.burst.clone(),
    };
    let mailer = mail::mailer::Mailer {
        store: store.clone(),
        roles: roles.clone(),
        bus: bus.clone(),
        metrics: metrics.clone(),
        config: config.mail.clone(),
        sealer,
        warned_unconfigured: false,
    };
    let janitor = cluster::janitor::Janitor {
        jobs: jobs.clone(),
        store: store.clone(),
        every: JANITOR_EVERY,
        forget_after: ha.forget_after.get(),
    };
    let driver = cluster::worker::RoleDriver {
        roles: roles.clone(),
        instance: instance.clone(),
        tasks: tasks.clone(),
        shutdown: shutdown.clone(),
    };
    driver.spawn(scheduler);
    driver.spawn(mailer);
    driver.spawn(janitor);
    let runner = jobs.spawn_runner(availability.clone(), shutdown.clone());
    let url = crate::healthcheck::local_url(addr);
    tracing::info!(addr = %addr, url = %url, workers = pool.size(), ms = started.elapsed().as_millis() as u64, "listening");
    lifecycle.service_ready("app", &format!("serving on {addr}"));

    shutdown.draining().await;
    availability.shut();
    // Agents reconnect to another instance at once; their queries in flight finish here.
    agents.drain();
    // Every wait below is bounded, and cut short by a second signal: a database that stopped
    // answering must not hold the process.
    let step = Duration::from_secs(10);
    within(&shutdown, step, async {
        let _ = runner.await;
    })
    .await;
    // Roles go first so another instance takes over while this one finishes its renders.
    within(&shutdown, step, async {
        let _ = leader.await;
    })
    .await;
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
    // Queries on the agents connected here (synchronous renders, other instances' queries)
    // finish before the stop closes their connections.
    within(
        &shutdown,
        config.render.drain_timeout.get(),
        agents.finish(config.render.drain_timeout.get()),
    )
    .await;
    // The role workers end their round (a mail being handed to the server finishes and is
    // recorded rather than being cut off), the font watch stops.
    tasks.close();
    within(&shutdown, config.mail.timeout.get() + step, tasks.wait()).await;
    shutdown.stop();
    let _ = tokio::time::timeout(config.http.shutdown_timeout.get() + step, server).await;
    let _ = tokio::time::timeout(step, heartbeat).await;
    let _ = tokio::time::timeout(step, seat).await;
    if let Some(watch) = role_watch {
        watch.abort();
    }
    let _ = tokio::time::timeout(step, store.close()).await;
    tracing::info!("stopped");
    match dr.changed() {
        Some(why) => Err(AppError::RoleChanged(why)),
        None => Ok(()),
    }
}

/// Binds the HTTP address once: a standby serves on it, and the active instance it turns into
/// takes it over without a moment in which the port is closed.
fn bind(listen: std::net::SocketAddr) -> Result<std::net::TcpListener, AppError> {
    let bound = std::net::TcpListener::bind(listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| AppError::Bind {
            addr: listen,
            source,
        })?;
    Ok(bound)
}

/// How the wait as a standby ended.
enum StandBy {
    /// The database was writable at start: no wait.
    Active,
    /// A standby since the first time (ms) until its database was promoted.
    TookOver(i64, Box<dr::service::Status>),
    /// The process is stopping.
    Stopped,
}

/// While the database is a replica (or this region is fenced), serves the standby's answers on
/// the HTTP address and waits; returns once this instance may act.
async fn stand_by(
    config: &Arc<AppConfig>,
    dr: &dr::service::Dr,
    store: &Arc<dyn store::Store>,
    metrics: &Arc<metrics::Metrics>,
    instance: &str,
    lifecycle: &Lifecycle,
    listener: &std::net::TcpListener,
) -> Result<StandBy, AppError> {
    let first = match dr.status().await {
        Ok(s) if s.role == dr::Role::Active => return Ok(StandBy::Active),
        Ok(s) => s,
        // The database may not answer yet: the usual start waits for it.
        Err(_) => return Ok(StandBy::Active),
    };
    let since = model::now_ms();
    let (shown, rx) = tokio::sync::watch::channel(Some(first));
    let served = listener
        .try_clone()
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(|source| AppError::Bind {
            addr: config.http.listen,
            source,
        })?;
    let stop = crate::lifecycle::Shutdown::new();
    let state = http::standby::StandbyState {
        config: config.clone(),
        instance: instance.to_owned(),
        store: store.clone(),
        metrics: metrics.clone(),
        shown: rx,
    };
    tokio::spawn(http::serve(
        served,
        http::standby::router(state),
        stop.clone(),
        config.http.keep_alive_timeout.get(),
        config.http.shutdown_timeout.get(),
    ));
    // Started, as far as the service manager is concerned: a standby may wait for days.
    lifecycle.service_ready("app", "standby: waiting for the database to be promoted");
    let outcome =
        dr::standby::wait_active(dr, &shown, lifecycle.shutdown(), lifecycle.notifier()).await;
    stop.begin_drain();
    stop.stop();
    Ok(match outcome {
        Some(status) => StandBy::TookOver(since, Box::new(status)),
        None => StandBy::Stopped,
    })
}

/// Applies migrations, waiting for the database while it is unreachable (containers often start
/// before their database). False when shutdown came first.
async fn migrate_when_reachable(
    config: &AppConfig,
    store: &dyn store::Store,
    shutdown: &crate::lifecycle::Shutdown,
) -> Result<bool, AppError> {
    let mut wait = Duration::from_millis(250);
    loop {
        let result = match &config.database.migrate_url {
            Some(_) => migrate(config).await,
            None => store.migrate().await.map_err(AppError::from),
        };
        match result {
            Ok(()) => return Ok(true),
            Err(AppError::Store(store::StoreError::Unavailable(e))) => {
                tracing::warn!(error = %e, retry_in = ?wait, "database unreachable; waiting for it");
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.draining() => return Ok(false),
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// Mode of the directories Quire creates for its data (the database, generated secrets, fonts):
/// the service user and its group only.
const DATA_DIR_MODE: u32 = 0o750;

/// Creates `dir` and any missing parents with `DATA_DIR_MODE`; an existing directory is left as
/// it is. `mkdir` applies the umask, so a stricter one narrows the mode and a looser one (even
/// 000) cannot widen it.
pub(crate) fn create_data_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DATA_DIR_MODE)
        .create(dir)
}

/// Creates the data directory before anything writes into it, so it is private on PostgreSQL
/// too, where no database file creates it. Not fatal: with a fonts directory elsewhere nothing
/// may need it, and whatever does reports its own error.
fn prepare_data_dir(dir: &std::path::Path) {
    if let Err(e) = create_data_dir(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot create the data directory");
    }
}

/// The address other instances and the HA page show: the listen address, with a wildcard
/// replaced by the host name.
fn advertised(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!(
            "{}:{}",
            rustix::system::uname().nodename().to_string_lossy(),
            addr.port()
        )
    } else {
        addr.to_string()
    }
}

fn announce_root(root: auth::RootUser) {
    match root {
        auth::RootUser::Configured(email) => {
            tracing::info!(email = %email, "root user matches the configuration")
        }
        // The password goes to a file only the service user can read, never to the log.
        auth::RootUser::Generated { email, saved_to } => tracing::warn!(
            email = %email,
            password_file = %saved_to.display(),
            "no root user was configured: created one; its password is in the file (set root_user.email and root_user.password to choose your own)"
        ),
        auth::RootUser::Unchanged => {}
    }
}
