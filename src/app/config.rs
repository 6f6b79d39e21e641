//! The app's section of the configuration: every top-level key of quire.toml except the other
//! modes' tables (`[log]`, `[nats_server]`, `[lb]`). Plain data deserialized by figment, each value
//! parsed into a type that cannot be invalid; `validate` checks what spans fields. The app also
//! accepts the reference products' variable names (`ConnectionStrings__Database`, …) and the
//! settings App Service dictates (`WEBSITES_PORT`, persistent storage).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use figment::Figment;
use figment::value::Value;
use serde::{Deserialize, Serialize};

use crate::config::{
    ByteSize, Problems, Secret, SecretKey, Section, Setting, Shown, Span, alias_settings,
    connstring, numbered_alias, one_or_many, redact_url, set_by_quire_env,
};
use crate::license::{KeyError, Keyring, License, parse_and_verify};

/// The app's settings (`quire app`, `quire migrate`, `quire render`): the top-level keys of the
/// file. `data_dir` and `instance_name` serve the other modes too (the nats state directory, every
/// log line's instance id).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AppConfig {
    /// Where the SQLite database, fonts and generated secrets live.
    pub data_dir: PathBuf,
    /// Prefix of this process's instance id; defaults to `WEBSITE_INSTANCE_ID` or the host name.
    pub instance_name: Option<String>,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub ha: HaConfig,
    pub nats: NatsConfig,
    pub root_user: RootUserConfig,
    pub encryption: EncryptionConfig,
    pub mail: MailConfig,
    pub fonts: FontsConfig,
    pub license: LicenseConfig,
    pub render: RenderConfig,
    pub queries: QueriesConfig,
    pub burst: BurstConfig,
    pub auth: AuthConfig,
    pub metrics: MetricsConfig,
    pub dr: DrConfig,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            data_dir: PathBuf::from("./data"),
            instance_name: None,
            http: HttpConfig::default(),
            database: DatabaseConfig::default(),
            ha: HaConfig::default(),
            nats: NatsConfig::default(),
            root_user: RootUserConfig::default(),
            encryption: EncryptionConfig::default(),
            mail: MailConfig::default(),
            fonts: FontsConfig::default(),
            license: LicenseConfig::default(),
            render: RenderConfig::default(),
            queries: QueriesConfig::default(),
            burst: BurstConfig::default(),
            auth: AuthConfig::default(),
            metrics: MetricsConfig::default(),
            dr: DrConfig::default(),
        }
    }
}

impl AppConfig {
    /// The database URL, defaulting to a SQLite file in `data_dir`.
    pub fn database_url(&self) -> DatabaseUrl {
        self.database.url.clone().unwrap_or_else(|| {
            DatabaseUrl::Sqlite(format!(
                "sqlite://{}",
                self.data_dir.join("quire.db").display()
            ))
        })
    }

    /// The directory scanned for operator fonts, defaulting to `data_dir/fonts`.
    pub fn fonts_dir(&self) -> PathBuf {
        self.fonts
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("fonts"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// The URL users reach Quire at, used in links (emails, console).
    pub public_url: Option<String>,
    /// Networks whose `X-Forwarded-*` headers are believed (the load balancer's).
    #[serde(deserialize_with = "one_or_many")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long an idle client connection stays open; keep it above the load balancer's pool
    /// idle timeout so a reused connection is never closed under a request.
    pub keep_alive_timeout: Span,
    /// How long in-flight requests get to finish once the server stops.
    pub shutdown_timeout: Span,
    /// Mark cookies `Secure`; by default set when the request arrived over HTTPS.
    pub secure_cookies: Option<bool>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            trusted_proxies: Vec::new(),
            keep_alive_timeout: Span::secs(75),
            shutdown_timeout: Span::secs(10),
            secure_cookies: None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseConfig {
    /// `sqlite://path`, `postgres://…`, or a `Host=…;Database=…` connection string.
    pub url: Option<DatabaseUrl>,
    /// A direct (not pooled) URL for migrations, which need a session.
    pub migrate_url: Option<DatabaseUrl>,
    /// Connections this instance keeps at most.
    pub max_connections: Option<u32>,
    pub connect_timeout: Option<Span>,
    /// The URL points at a transaction-mode pooler (PgBouncer): no server-side prepared
    /// statement cache.
    pub pgbouncer: bool,
}

impl DatabaseConfig {
    pub fn max_connections(&self) -> u32 {
        self.max_connections.unwrap_or(10)
    }
    pub fn connect_timeout(&self) -> Span {
        self.connect_timeout.unwrap_or(Span::secs(5))
    }
}

/// A database URL, already classified by backend.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(String),
    Postgres(String),
}

impl DatabaseUrl {
    pub fn as_str(&self) -> &str {
        match self {
            DatabaseUrl::Sqlite(s) | DatabaseUrl::Postgres(s) => s,
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(self.as_str()))
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if connstring::looks_like_conn_string(s) {
            return connstring::to_postgres_url(s)
                .map(DatabaseUrl::Postgres)
                .map_err(|e| format!("invalid connection string: {e}"));
        }
        if s.starts_with("sqlite:") {
            Ok(DatabaseUrl::Sqlite(s.to_owned()))
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            url::Url::parse(s).map_err(|e| format!("invalid PostgreSQL URL: {e}"))?;
            Ok(DatabaseUrl::Postgres(s.to_owned()))
        } else {
            Err("expected sqlite://PATH, postgres://USER:PASS@HOST/DB, or a Host=…;Database=… connection string".into())
        }
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HaConfig {
    pub enabled: bool,
    /// How long a leader role is held without renewal (database clock).
    pub lease: Span,
    /// How often held roles are renewed and free ones tried.
    pub renew_every: Span,
    /// A holder stops acting this long before its lease expires, by its own clock.
    pub safety_margin: Span,
    /// How often each instance records a heartbeat.
    pub heartbeat_every: Span,
    /// An instance without a heartbeat for this long is stale: its jobs go back to the queue.
    pub stale_after: Span,
    /// A stale instance is forgotten (removed from the registry) after this long.
    pub forget_after: Span,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            enabled: false,
            lease: Span::secs(15),
            renew_every: Span::secs(5),
            safety_margin: Span::secs(2),
            heartbeat_every: Span::secs(5),
            stale_after: Span::secs(20),
            forget_after: Span::secs(600),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct NatsConfig {
    /// Accepted for compatibility (`Nats__Enabled`); NATS is used when `url` is set, unless this
    /// is false.
    pub enabled: Option<bool>,
    /// One URL or a list (every node of a cluster).
    #[serde(deserialize_with = "one_or_many")]
    pub url: Vec<String>,
    /// Subject prefix, so several deployments can share one NATS.
    pub subject_prefix: String,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            enabled: None,
            url: Vec::new(),
            subject_prefix: "quire".into(),
        }
    }
}

impl NatsConfig {
    /// The NATS servers to use, if any.
    pub fn servers(&self) -> Option<&[String]> {
        (self.enabled != Some(false) && !self.url.is_empty()).then_some(self.url.as_slice())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RootUserConfig {
    pub email: Option<String>,
    pub password: Option<Secret>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EncryptionConfig {
    /// 32 characters; encrypts stored credentials.
    pub key: Option<Secret>,
    /// 16 characters; accepted for compatibility with the reference products' settings.
    pub vector: Option<Secret>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MailConfig {
    /// `smtp://user:pass@host:587` (STARTTLS), `smtps://…:465` (TLS), `?tls=none` for plain.
    /// When unset, the settings saved in the console apply.
    pub smtp_url: Option<Secret>,
    pub from: Option<String>,
    /// First retry delay of a failed send; doubles per attempt up to `retry_max`.
    pub retry_initial: Span,
    pub retry_max: Span,
    /// A mail still failing after this many attempts fails for good.
    pub max_attempts: u32,
    /// One SMTP conversation at most.
    pub timeout: Span,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            smtp_url: None,
            from: None,
            retry_initial: Span::secs(30),
            retry_max: Span::secs(3600),
            max_attempts: 10,
            timeout: Span::secs(60),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct FontsConfig {
    /// Operator fonts; may be a shared mount. Defaults to `data_dir/fonts`.
    pub dir: Option<PathBuf>,
    /// Shared mounts deliver no file events, so the directory is also rescanned on this timer.
    pub rescan_interval: Span,
    pub max_upload_size: ByteSize,
}

impl Default for FontsConfig {
    fn default() -> Self {
        FontsConfig {
            dir: None,
            rescan_interval: Span::secs(60),
            max_upload_size: ByteSize::mib(50),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LicenseConfig {
    /// The licence key (`quire1.…`), the same on every instance; none: Quire runs one instance
    /// with everything.
    pub key: Option<Secret>,
    /// A seat whose instance has been silent this long is released for another instance.
    pub release_after: Span,
}

impl Default for LicenseConfig {
    fn default() -> Self {
        LicenseConfig {
            key: None,
            release_after: Span::secs(15 * 60),
        }
    }
}

impl LicenseConfig {
    /// The key, verified against the keys this binary trusts (none when no key is set).
    pub fn verified(&self) -> Result<Option<License>, KeyError> {
        self.key
            .as_ref()
            .map(|k| parse_and_verify(k.expose().trim(), &Keyring::builtin()))
            .transpose()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RenderConfig {
    /// Render worker processes; defaults to one per core.
    pub workers: Option<usize>,
    /// Wall time one render may take before its worker is killed.
    pub timeout: Span,
    /// Memory one render worker may use.
    pub memory_limit: ByteSize,
    /// Total size of a template version's files.
    pub max_template_size: ByteSize,
    /// Size of one render's JSON data.
    pub max_data_size: ByteSize,
    /// Queued jobs at most; beyond it submissions get 429.
    pub queue_limit: u32,
    /// Synchronous renders waiting for a worker at most; beyond it they get 429.
    pub sync_queue_limit: u32,
    /// How long finished jobs and their PDFs are kept.
    pub retention: Span,
    /// How long running renders get to finish on shutdown before they go back to the queue.
    pub drain_timeout: Span,
    /// A job put back this many times (its worker or instance died under it) fails.
    pub max_attempts: u32,
}

/// What the queries of one render may fetch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct QueriesConfig {
    /// Rows one query may return; a render whose query returns more fails.
    pub max_rows: u32,
    /// Bytes of one query's rows as JSON.
    pub max_bytes: ByteSize,
    /// Wall time of all of a render's queries together.
    pub timeout: Span,
}

impl Default for QueriesConfig {
    fn default() -> Self {
        QueriesConfig {
            max_rows: 100_000,
            max_bytes: ByteSize::mib(64),
            timeout: Span::secs(120),
        }
    }
}

/// Bursting: one report per row of a schedule's burst query.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BurstConfig {
    /// Rows a burst query may return; a burst with more fails before rendering any.
    pub max_rows: u32,
    /// Burst renders queued at once per burst, so that a large burst leaves render workers to
    /// interactive renders.
    pub concurrency: u32,
}

impl Default for BurstConfig {
    fn default() -> Self {
        BurstConfig {
            max_rows: 10_000,
            concurrency: 2,
        }
    }
}

impl Default for RenderConfig {
    fn default() -> Self {
        RenderConfig {
            workers: None,
            timeout: Span::secs(60),
            memory_limit: ByteSize::mib(1024),
            max_template_size: ByteSize::mib(20),
            max_data_size: ByteSize::mib(10),
            queue_limit: 1000,
            sync_queue_limit: 64,
            retention: Span::secs(7 * 86_400),
            drain_timeout: Span::secs(20),
            max_attempts: 3,
        }
    }
}

impl RenderConfig {
    pub fn workers(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    pub session_ttl: Span,
    /// Failed sign-ins per client address and per account within `login_window` before 429.
    pub login_max_failures: u32,
    pub login_window: Span,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            session_ttl: Span::secs(12 * 3600),
            login_max_failures: 10,
            login_window: Span::secs(300),
        }
    }
}

/// Disaster recovery: the role an instance takes from its database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DrConfig {
    /// `auto`: standby while the database is a replica, active once it is writable; or pinned.
    pub mode: DrMode,
    /// How often the role is checked (and the peer, when set).
    pub check_every: Span,
    /// The other region's database: an active instance fences itself when the peer is writable
    /// too and took over after it.
    pub peer_database_url: Option<DatabaseUrl>,
    /// Replication lag past which the HA page and the log warn.
    pub lag_warning: Span,
}

impl Default for DrConfig {
    fn default() -> Self {
        DrConfig {
            mode: DrMode::Auto,
            check_every: Span::secs(5),
            peer_database_url: None,
            lag_warning: Span::secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrMode {
    Auto,
    Active,
    Standby,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsConfig {
    /// Serve `/metrics` without a token (for a scraper on a private network).
    pub public: bool,
}

/// The reference products' variable names for the app's settings, compared without case.
const ALIASES: &[(&str, &str)] = &[
    ("highavailability__enabled", "ha.enabled"),
    ("nats__enabled", "nats.enabled"),
    ("nats__url", "nats.url"),
    ("connectionstrings__database", "database.url"),
    ("encryption__key", "encryption.key"),
    ("encryption__vector", "encryption.vector"),
    ("rootuser__email", "root_user.email"),
    ("rootuser__password", "root_user.password"),
    ("licenseconfiguration__key", "license.key"),
];

/// `ForwardedHeaders__KnownNetworks__N` and `…__KnownProxies__N`, collected in index order into
/// one `http.trusted_proxies` list.
const KNOWN_NETWORKS: &[&str] = &[
    "forwardedheaders__knownnetworks__",
    "forwardedheaders__knownproxies__",
];

impl Section for AppConfig {
    const KEY: &'static str = "";

    const SECRETS: &'static [SecretKey] = &[
        SecretKey {
            key: "database.url",
            shown: Shown::Url,
        },
        SecretKey {
            key: "database.migrate_url",
            shown: Shown::Url,
        },
        SecretKey {
            key: "dr.peer_database_url",
            shown: Shown::Url,
        },
        SecretKey {
            key: "root_user.password",
            shown: Shown::Hidden,
        },
        SecretKey {
            key: "encryption.key",
            shown: Shown::Hidden,
        },
        SecretKey {
            key: "encryption.vector",
            shown: Shown::Hidden,
        },
        SecretKey {
            key: "mail.smtp_url",
            shown: Shown::Url,
        },
        SecretKey {
            key: "license.key",
            shown: Shown::Hidden,
        },
        SecretKey {
            key: "nats.url",
            shown: Shown::Servers,
        },
    ];

    fn validate(&self, problems: &mut Problems<'_>) {
        let c = self;
        let mut bad = |key: &str, message: String| problems.add(key, message);

        if let Some(email) = &c.root_user.email {
            if !email.contains('@') || email.trim() != email {
                bad(
                    "root_user.email",
                    format!("\"{email}\" is not an email address"),
                );
            }
            if c.root_user.password.is_none() {
                bad(
                    "root_user.email",
                    "root_user.password must be set when root_user.email is".into(),
                );
            }
        }
        if let Some(pw) = &c.root_user.password
            && pw.expose().chars().count() < 8
        {
            bad("root_user.password", "must be at least 8 characters".into());
        }
        if let Some(key) = &c.encryption.key
            && key.expose().chars().count() != 32
        {
            bad(
                "encryption.key",
                format!(
                    "must be exactly 32 characters, found {}",
                    key.expose().chars().count()
                ),
            );
        }
        if let Some(v) = &c.encryption.vector
            && v.expose().chars().count() != 16
        {
            bad(
                "encryption.vector",
                format!(
                    "must be exactly 16 characters, found {}",
                    v.expose().chars().count()
                ),
            );
        }
        if let Some(0) | Some(257..) = c.render.workers {
            bad("render.workers", "must be between 1 and 256".into());
        }
        if c.render.memory_limit < ByteSize::mib(64) {
            bad(
                "render.memory_limit",
                format!("{} is too small: at least 64MiB", c.render.memory_limit),
            );
        }
        if c.render.queue_limit == 0 {
            bad("render.queue_limit", "must be at least 1".into());
        }
        if c.render.timeout.get().is_zero() {
            bad("render.timeout", "must be longer than 0s".into());
        }
        if c.queries.max_rows == 0 {
            bad("queries.max_rows", "must be at least 1".into());
        }
        if c.queries.timeout.get().is_zero() {
            bad("queries.timeout", "must be longer than 0s".into());
        }
        if c.burst.max_rows == 0 {
            bad("burst.max_rows", "must be at least 1".into());
        }
        if !(1..=64).contains(&c.burst.concurrency) {
            bad("burst.concurrency", "must be between 1 and 64".into());
        }
        if c.render.max_attempts == 0 {
            bad("render.max_attempts", "must be at least 1".into());
        }
        if let Some(0) = c.database.max_connections {
            bad("database.max_connections", "must be at least 1".into());
        }
        let intervals = [
            ("ha.lease", c.ha.lease),
            ("ha.renew_every", c.ha.renew_every),
            ("ha.heartbeat_every", c.ha.heartbeat_every),
            ("ha.stale_after", c.ha.stale_after),
            ("fonts.rescan_interval", c.fonts.rescan_interval),
            ("http.keep_alive_timeout", c.http.keep_alive_timeout),
            ("mail.retry_initial", c.mail.retry_initial),
            ("mail.timeout", c.mail.timeout),
            ("render.drain_timeout", c.render.drain_timeout),
            ("dr.check_every", c.dr.check_every),
        ];
        for (key, span) in intervals {
            if span.get().is_zero() {
                bad(key, "must be longer than 0s".into());
            }
        }
        let ha = &c.ha;
        if ha.safety_margin >= ha.lease
            || ha.renew_every.get() * 2 > ha.lease.get() - ha.safety_margin.get()
        {
            bad(
                "ha.lease",
                format!(
                    "lease {} must exceed safety_margin {} plus two renew_every intervals ({})",
                    ha.lease, ha.safety_margin, ha.renew_every
                ),
            );
        }
        if let Err(e) = c.license.verified() {
            bad("license.key", e.to_string());
        }
        if c.license.release_after <= ha.stale_after {
            bad(
                "license.release_after",
                format!(
                    "must be longer than ha.stale_after ({}): a seat would be released while its instance is alive",
                    ha.stale_after
                ),
            );
        }
        if ha.stale_after <= ha.heartbeat_every {
            bad(
                "ha.stale_after",
                format!(
                    "must be longer than ha.heartbeat_every ({})",
                    ha.heartbeat_every
                ),
            );
        }
        if c.ha.enabled {
            if !matches!(c.database.url, Some(DatabaseUrl::Postgres(_))) {
                bad(
                    "ha.enabled",
                    "HA mode needs a shared PostgreSQL database: set database.url to a postgres:// URL (SQLite is a local file)".into(),
                );
            }
            if c.nats.url.is_empty() {
                bad(
                    "ha.enabled",
                    "HA mode needs NATS: set nats.url (QUIRE_NATS__URL or Nats__Url)".into(),
                );
            }
        }
    }

    fn aliases(env: &[(String, String)]) -> Vec<Setting> {
        let mut out = alias_settings(env, ALIASES);
        out.extend(numbered_alias(env, KNOWN_NETWORKS, "http.trusted_proxies"));
        out
    }

    fn platform(merged: &Figment, env: &[(String, String)]) -> Vec<Setting> {
        [platform_port(merged, env), platform_storage(merged, env)]
            .into_iter()
            .flatten()
            .collect()
    }

    /// Derived defaults filled in: the database URL and fonts directory under `data_dir`, the
    /// worker count from the cores, the pool's size and timeout.
    fn effective(&self) -> Self {
        let mut c = self.clone();
        c.database.url = Some(self.database_url());
        c.fonts.dir = Some(self.fonts_dir());
        c.render.workers = Some(self.render.workers());
        c.database.max_connections = Some(self.database.max_connections());
        c.database.connect_timeout = Some(self.database.connect_timeout());
        c
    }
}

/// App Service and similar platforms say which port to serve on with `WEBSITES_PORT` / `PORT`.
/// They win over the file but not over an explicit `QUIRE_HTTP__LISTEN`; when the listen address
/// is still the loopback default, the platform's port is served on all interfaces.
fn platform_port(figment: &Figment, env: &[(String, String)]) -> Option<Setting> {
    let (var, port) = ["WEBSITES_PORT", "PORT"]
        .iter()
        .find_map(|name| env.iter().find(|(k, _)| k == name))?;
    if set_by_quire_env(figment, "http.listen") {
        return None;
    }
    let origin = figment
        .find_metadata("http.listen")
        .map(|m| m.name.to_string())
        .unwrap_or_default();
    let current: Option<SocketAddr> = figment.extract_inner_lossy("http.listen").ok();
    let host = match current {
        Some(addr) if origin != "default" && !origin.is_empty() => addr.ip().to_string(),
        _ => "0.0.0.0".to_owned(),
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Some(Setting {
        origin: format!("env {var}"),
        key: "http.listen".into(),
        value: Value::from(format!("{host}:{}", port.trim())),
    })
}

/// Where App Service keeps files that survive restarts and are shared by every instance.
pub(crate) const APP_SERVICE_STORAGE: &str = "/home/quire";

/// With `WEBSITES_ENABLE_APP_SERVICE_STORAGE=true`, App Service mounts persistent storage at
/// `/home`: the data directory (and so the fonts and SQLite file) moves there. Like the port, this
/// wins over the file but not over an explicit `QUIRE_DATA_DIR`.
fn platform_storage(figment: &Figment, env: &[(String, String)]) -> Option<Setting> {
    let (var, enabled) = env
        .iter()
        .find(|(k, _)| k == "WEBSITES_ENABLE_APP_SERVICE_STORAGE")?;
    if !enabled.trim().eq_ignore_ascii_case("true") || set_by_quire_env(figment, "data_dir") {
        return None;
    }
    Some(Setting {
        origin: format!("env {var}"),
        key: "data_dir".into(),
        value: Value::from(APP_SERVICE_STORAGE),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::test_env as env;
    use crate::config::{ConfigError, Loaded};

    /// The app's section loaded alone, as the whole file would give it.
    fn load(
        file: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Loaded<AppConfig>, ConfigError> {
        crate::config::load(file, env)
    }

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let p = dir.path().join("quire.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn defaults_without_file_or_env() {
        let l = load(None, &[]).unwrap();
        assert_eq!(l.config.http.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(l.config.database_url().as_str(), "sqlite://./data/quire.db");
        assert_eq!(l.origin("http.listen"), "default");
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    }

    #[test]
    fn env_beats_alias_beats_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            &dir,
            "[root_user]\nemail = \"file@x.io\"\npassword = \"filepassword\"\n[ha]\nenabled = false\n",
        );
        let l = load(Some(&f), &env(&[("RootUser__Email", "alias@x.io")])).unwrap();
        assert_eq!(l.config.root_user.email.as_deref(), Some("alias@x.io"));
        assert_eq!(l.origin("root_user.email"), "env RootUser__Email (alias)");
        assert_eq!(l.origin("root_user.password"), format!("{}:3", f.display()));

        let l = load(
            Some(&f),
            &env(&[
                ("RootUser__Email", "alias@x.io"),
                ("QUIRE_ROOT_USER__EMAIL", "env@x.io"),
            ]),
        )
        .unwrap();
        assert_eq!(l.config.root_user.email.as_deref(), Some("env@x.io"));
    }

    #[test]
    fn env_strings_stay_strings_and_numbers_parse() {
        let l = load(
            None,
            &env(&[
                ("QUIRE_ROOT_USER__PASSWORD", "01234567"),
                ("QUIRE_ROOT_USER__EMAIL", "a@b.c"),
                ("QUIRE_RENDER__WORKERS", "3"),
                ("QUIRE_RENDER__TIMEOUT", "90s"),
                ("QUIRE_HA__ENABLED", "false"),
            ]),
        )
        .unwrap();
        assert_eq!(l.config.root_user.password.unwrap().expose(), "01234567");
        assert_eq!(l.config.render.workers, Some(3));
        assert_eq!(l.config.render.timeout, Span::secs(90));
    }

    #[test]
    fn connection_string_alias_becomes_postgres_url() {
        let l = load(
            None,
            &env(&[(
                "ConnectionStrings__Database",
                "Host=db;Port=5432;Database=q;Username=u;Password=p",
            )]),
        )
        .unwrap();
        assert_eq!(
            l.config.database_url(),
            DatabaseUrl::Postgres("postgres://u:p@db:5432/q".into())
        );
    }

    #[test]
    fn database_urls_debug_print_without_credentials() {
        let url = DatabaseUrl::Postgres("postgres://u:p@db:5432/q?sslpassword=x".into());
        assert_eq!(
            format!("{url:?}"),
            "postgres://***:***@db:5432/q?sslpassword=***"
        );
    }

    #[test]
    fn platform_port_overrides_file_but_not_quire_env() {
        let l = load(None, &env(&[("WEBSITES_PORT", "8181")])).unwrap();
        assert_eq!(l.config.http.listen, "0.0.0.0:8181".parse().unwrap());
        assert_eq!(l.origin("http.listen"), "env WEBSITES_PORT");

        let dir = tempfile::tempdir().unwrap();
        let f = write(&dir, "[http]\nlisten = \"10.1.2.3:80\"\n");
        let l = load(Some(&f), &env(&[("PORT", "9000")])).unwrap();
        assert_eq!(l.config.http.listen, "10.1.2.3:9000".parse().unwrap());

        let l = load(
            None,
            &env(&[("PORT", "9000"), ("QUIRE_HTTP__LISTEN", "127.0.0.1:7000")]),
        )
        .unwrap();
        assert_eq!(l.config.http.listen, "127.0.0.1:7000".parse().unwrap());
    }

    #[test]
    fn app_service_storage_moves_data_and_fonts_to_home() {
        let on = ("WEBSITES_ENABLE_APP_SERVICE_STORAGE", "true");
        let dir = tempfile::tempdir().unwrap();
        let f = write(&dir, "data_dir = \"/var/lib/quire\"\n");
        let l = load(Some(&f), &env(&[on])).unwrap();
        assert_eq!(l.config.data_dir, Path::new(APP_SERVICE_STORAGE));
        assert_eq!(l.config.fonts_dir(), Path::new("/home/quire/fonts"));
        assert_eq!(
            l.origin("data_dir"),
            "env WEBSITES_ENABLE_APP_SERVICE_STORAGE"
        );

        let off = ("WEBSITES_ENABLE_APP_SERVICE_STORAGE", "false");
        let l = load(Some(&f), &env(&[off])).unwrap();
        assert_eq!(l.config.data_dir, Path::new("/var/lib/quire"));

        let l = load(Some(&f), &env(&[on, ("QUIRE_DATA_DIR", "/srv/quire")])).unwrap();
        assert_eq!(l.config.data_dir, Path::new("/srv/quire"));
    }

    #[test]
    fn zero_intervals_are_refused() {
        let err = load(None, &env(&[("QUIRE_HA__RENEW_EVERY", "0s")]))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("ha.renew_every (from env QUIRE_HA__RENEW_EVERY): must be longer than 0s"),
            "{err}"
        );
    }

    #[test]
    fn ha_needs_postgres_and_nats() {
        let err = load(None, &env(&[("HighAvailability__Enabled", "true")]))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("HA mode needs a shared PostgreSQL database"),
            "{err}"
        );
        assert!(err.contains("HA mode needs NATS"), "{err}");
    }

    #[test]
    fn lists_accept_comma_separated_env_values() {
        let l = load(
            None,
            &env(&[
                ("QUIRE_NATS__URL", "nats://a:4222, nats://b:4222"),
                ("QUIRE_HTTP__TRUSTED_PROXIES", "10.0.0.0/8"),
            ]),
        )
        .unwrap();
        assert_eq!(l.config.nats.url, vec!["nats://a:4222", "nats://b:4222"]);
        assert_eq!(
            l.config.http.trusted_proxies,
            vec!["10.0.0.0/8".parse::<ipnet::IpNet>().unwrap()]
        );
    }

    #[test]
    fn aliases_are_case_insensitive_and_collect_networks() {
        let s = AppConfig::aliases(&env(&[
            ("HighAvailability__Enabled", "true"),
            ("ForwardedHeaders__KnownNetworks__1", "192.168.0.0/16"),
            ("ForwardedHeaders__KnownNetworks__0", "10.0.0.0/8"),
            ("ROOTUSER__EMAIL", "a@b.c"),
        ]));
        let keys: Vec<_> = s.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(
            keys,
            vec!["ha.enabled", "root_user.email", "http.trusted_proxies"]
        );
        assert_eq!(
            s[2].value,
            Value::from(vec![
                Value::from("10.0.0.0/8".to_string()),
                Value::from("192.168.0.0/16".to_string())
            ])
        );
    }
}
