//! The `[nats_server]` section: what `quire nats` needs to generate nats-server's config and to
//! supervise it. Plain data deserialized by figment; `validate` checks what a type cannot say.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{
    ByteSize, Problems, Secret, SecretKey, Section, Shown, Span, hide_url_credentials, one_or_many,
};

/// nats-server refuses a larger `max_payload` (and a larger one would exceed `max_pending`).
pub const MAX_PAYLOAD_LIMIT: ByteSize = ByteSize::mib(64);

/// nats-server refuses a shorter `lame_duck_duration`.
pub const MIN_LAME_DUCK_DURATION: Span = Span::secs(30);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct NatsServerConfig {
    /// The nats-server executable (a path, or a name looked up on PATH). Default: `nats-server`
    /// on PATH, else a copy next to the quire executable.
    pub binary: Option<PathBuf>,
    /// This node's name, unique in the cluster. Default: the host name.
    pub server_name: Option<String>,
    /// Address clients and the other nodes' routes connect to.
    pub host: IpAddr,
    /// Client port.
    pub port: u16,
    /// `host:port` announced to clients instead of the listen address (NAT, several NICs).
    pub advertise: Option<String>,
    /// Address of the monitoring endpoint (`/healthz`, `/varz`, …). Loopback by default because
    /// it shows connection details; open it for an exporter on another host.
    pub monitor_host: IpAddr,
    pub monitor_port: u16,
    /// Every node of one cluster carries the same name.
    pub cluster_name: String,
    /// Port the other nodes' routes connect to (on `host`).
    pub cluster_port: u16,
    /// `host:port` announced to the other nodes instead of the listen address.
    pub cluster_advertise: Option<String>,
    /// Route URLs of the cluster's nodes (`nats-route://10.0.0.12:6222`). The same list on every
    /// node is fine: nats-server ignores the route to itself.
    #[serde(deserialize_with = "one_or_many")]
    pub routes: Vec<String>,
    /// Where the generated nats-server config (and JetStream data by default) lives.
    /// Default: `data_dir/nats`, i.e. `/var/lib/quire/nats` when packaged.
    pub state_dir: Option<PathBuf>,
    /// Largest message a client may publish.
    pub max_payload: ByteSize,
    /// nats-server's own log detail: `info`, `debug` or `trace`.
    pub log_level: NatsLogLevel,
    /// How long lame-duck mode spreads closing client connections (nats-server: at least 30s).
    pub lame_duck_duration: Span,
    /// How long lame-duck mode waits before it starts closing client connections.
    pub lame_duck_grace_period: Span,
    /// How long a graceful stop may take before nats-server gets SIGTERM (then SIGKILL). Keep it
    /// below the unit's `TimeoutStopSec`.
    pub stop_timeout: Span,
    pub jetstream: JetStreamConfig,
    pub auth: NatsAuthConfig,
    pub tls: NatsTlsConfig,
}

impl Default for NatsServerConfig {
    fn default() -> Self {
        NatsServerConfig {
            binary: None,
            server_name: None,
            host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 4222,
            advertise: None,
            monitor_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            monitor_port: 8222,
            cluster_name: "quire".into(),
            cluster_port: 6222,
            cluster_advertise: None,
            routes: Vec::new(),
            state_dir: None,
            max_payload: ByteSize::mib(1),
            log_level: NatsLogLevel::Info,
            lame_duck_duration: MIN_LAME_DUCK_DURATION,
            lame_duck_grace_period: Span::secs(10),
            stop_timeout: Span::secs(35),
            jetstream: JetStreamConfig::default(),
            auth: NatsAuthConfig::default(),
            tls: NatsTlsConfig::default(),
        }
    }
}

impl NatsServerConfig {
    /// The state directory, defaulting to `data_dir/nats`.
    pub fn state_dir(&self, data_dir: &Path) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("nats"))
    }

    pub fn monitor_addr(&self) -> SocketAddr {
        SocketAddr::new(self.monitor_host, self.monitor_port)
    }

    /// The configured name, else the host name.
    pub fn server_name(&self) -> String {
        self.server_name
            .clone()
            .unwrap_or_else(crate::instance::hostname)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NatsLogLevel {
    Info,
    Debug,
    Trace,
}

/// Optional JetStream. Quire needs only core NATS; with JetStream on, `/healthz` also reports
/// JetStream quorum, so a node of a cluster that lost quorum counts as unhealthy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct JetStreamConfig {
    pub enabled: bool,
    /// Default: `state_dir/jetstream`.
    pub store_dir: Option<PathBuf>,
    /// Memory for memory-backed streams; default: nats-server's (75% of RAM).
    pub max_memory: Option<ByteSize>,
    /// Disk for file-backed streams; default: nats-server's (most of the free disk).
    pub max_file: Option<ByteSize>,
}

/// Client authentication: a token, or a user with a password (both may come from
/// `QUIRE_NATS_SERVER__AUTH__TOKEN_FILE` / `…__PASSWORD_FILE`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NatsAuthConfig {
    pub token: Option<Secret>,
    pub user: Option<String>,
    /// Plain text, or a bcrypt hash (`$2a$…`) so the plain password is not stored on the node.
    pub password: Option<Secret>,
}

/// TLS for client connections; on when `cert_file` is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NatsTlsConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// CA that client certificates must chain to (with `verify_clients`).
    pub ca_file: Option<PathBuf>,
    /// Require client certificates.
    pub verify_clients: bool,
}

impl Section for NatsServerConfig {
    const KEY: &'static str = "nats_server";

    const SECRETS: &'static [SecretKey] = &[
        SecretKey {
            key: "auth.token",
            shown: Shown::Hidden,
        },
        SecretKey {
            key: "auth.password",
            shown: Shown::Hidden,
        },
    ];

    fn validate(&self, problems: &mut Problems<'_>) {
        let found = [
            port_problems(self),
            name_problems(self),
            route_problems(self),
            limit_problems(self),
            auth_problems(&self.auth),
            tls_problems(&self.tls),
        ];
        for (key, message) in found.into_iter().flatten() {
            // A list item's origin is the list's: figment records none per item.
            let list = key
                .rsplit_once('.')
                .filter(|(_, last)| last.parse::<usize>().is_ok());
            problems.add_with_origin_of(&key, list.map_or(key.as_str(), |(list, _)| list), message);
        }
    }
}

/// A key below `nats_server` and what is wrong with its value.
type Found = Vec<(String, String)>;

fn port_problems(c: &NatsServerConfig) -> Found {
    let ports = [
        ("port", c.port),
        ("monitor_port", c.monitor_port),
        ("cluster_port", c.cluster_port),
    ];
    let mut out = Found::new();
    for (i, (key, port)) in ports.iter().enumerate() {
        if *port == 0 {
            out.push((key.to_string(), "must be a port between 1 and 65535".into()));
        } else if let Some((first, _)) = ports[..i].iter().find(|(_, p)| p == port) {
            let message =
                format!("port {port} is already nats_server.{first}: each port needs its own");
            out.push((key.to_string(), message));
        }
    }
    out
}

fn name_problems(c: &NatsServerConfig) -> Found {
    let names = [
        ("server_name", c.server_name.as_deref()),
        ("cluster_name", Some(c.cluster_name.as_str())),
    ];
    let addresses = [
        ("advertise", c.advertise.as_deref()),
        ("cluster_advertise", c.cluster_advertise.as_deref()),
    ];
    let names = names
        .into_iter()
        .filter_map(|(key, v)| Some((key, check_name(v?).err()?)));
    let addresses = addresses
        .into_iter()
        .filter_map(|(key, v)| Some((key, check_host_port(v?).err()?)));
    names
        .chain(addresses)
        .map(|(key, e)| (key.to_owned(), e))
        .collect()
}

fn route_problems(c: &NatsServerConfig) -> Found {
    let failed = c
        .routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some((i, check_route(r).err()?)));
    failed.map(|(i, e)| (format!("routes.{i}"), e)).collect()
}

fn limit_problems(c: &NatsServerConfig) -> Found {
    let mut out = Found::new();
    if c.max_payload.bytes() == 0 || c.max_payload > MAX_PAYLOAD_LIMIT {
        let message = format!(
            "{} is out of range: between 1B and {MAX_PAYLOAD_LIMIT}",
            c.max_payload
        );
        out.push(("max_payload".into(), message));
    }
    if c.lame_duck_duration < MIN_LAME_DUCK_DURATION {
        let message = format!(
            "{} is too short: nats-server needs at least {MIN_LAME_DUCK_DURATION}",
            c.lame_duck_duration
        );
        out.push(("lame_duck_duration".into(), message));
    }
    if c.lame_duck_grace_period >= c.lame_duck_duration {
        let message = format!(
            "must be shorter than lame_duck_duration ({})",
            c.lame_duck_duration
        );
        out.push(("lame_duck_grace_period".into(), message));
    }
    if c.stop_timeout.get().is_zero() {
        out.push(("stop_timeout".into(), "must be longer than 0s".into()));
    }
    out
}

/// nats-server names may not contain spaces; quotes and control characters would not survive
/// the generated config either.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
    {
        return Err(format!(
            "\"{}\" is not a valid name: use letters, digits, '-', '_' or '.'",
            name.escape_debug()
        ));
    }
    Ok(())
}

fn check_host_port(value: &str) -> Result<(), String> {
    let valid = value.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && check_name(host).is_ok() && port.parse::<u16>().is_ok_and(|p| p > 0)
    });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "\"{}\" is not HOST:PORT, e.g. \"203.0.113.7:4222\"",
            value.escape_debug()
        ))
    }
}

fn check_route(route: &str) -> Result<(), String> {
    let hint = "use nats-route://HOST:PORT, e.g. \"nats-route://10.0.0.12:6222\"";
    let shown = shown_route(route);
    let url = url::Url::parse(route)
        .map_err(|_| format!("\"{}\" is not a URL: {hint}", shown.escape_debug()))?;
    if !matches!(url.scheme(), "nats-route" | "nats" | "tls") {
        return Err(format!(
            "scheme \"{}\" in \"{shown}\" is not a route scheme: {hint}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) || url.port().is_none() {
        return Err(format!("\"{shown}\" needs a host and a port: {hint}"));
    }
    Ok(())
}

/// A route for messages: a route may carry the cluster's user and password, which stay hidden.
fn shown_route(route: &str) -> String {
    match hide_url_credentials(route) {
        Some(hidden) => hidden,
        // Not a URL: whatever comes before an `@` may be a credential.
        None => match route.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => route.to_owned(),
        },
    }
}

fn auth_problems(auth: &NatsAuthConfig) -> Found {
    let mut out: Vec<(&str, &str)> = Vec::new();
    if auth.token.is_some() && (auth.user.is_some() || auth.password.is_some()) {
        out.push((
            "auth.token",
            "use either auth.token or auth.user with auth.password, not both",
        ));
    }
    match (&auth.user, &auth.password) {
        (Some(_), None) => out.push(("auth.user", "auth.password must be set when auth.user is")),
        (None, Some(_)) if auth.token.is_none() => out.push((
            "auth.password",
            "auth.user must be set when auth.password is",
        )),
        _ => {}
    }
    let empty = |s: &Option<Secret>| s.as_ref().is_some_and(|s| s.expose().is_empty());
    if empty(&auth.token) {
        out.push(("auth.token", "must not be empty"));
    }
    if empty(&auth.password) {
        out.push(("auth.password", "must not be empty"));
    }
    if auth.user.as_deref().is_some_and(|u| check_name(u).is_err()) {
        out.push((
            "auth.user",
            "must be a non-empty name without spaces or quotes",
        ));
    }
    owned(out)
}

fn tls_problems(tls: &NatsTlsConfig) -> Found {
    let mut out: Vec<(&str, &str)> = Vec::new();
    match (&tls.cert_file, &tls.key_file) {
        (Some(_), None) => out.push(("tls.cert_file", "tls.key_file must be set too")),
        (None, Some(_)) => out.push(("tls.key_file", "tls.cert_file must be set too")),
        _ => {}
    }
    if tls.cert_file.is_none() && (tls.ca_file.is_some() || tls.verify_clients) {
        out.push((
            "tls.cert_file",
            "TLS settings need tls.cert_file and tls.key_file",
        ));
    }
    if tls.verify_clients && tls.ca_file.is_none() {
        out.push((
            "tls.verify_clients",
            "needs tls.ca_file, the CA that client certificates chain to",
        ));
    }
    owned(out)
}

fn owned(found: Vec<(&str, &str)>) -> Found {
    found
        .into_iter()
        .map(|(k, m)| (k.to_owned(), m.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(c: &NatsServerConfig) -> Vec<String> {
        let origin = |_: &str| "test".to_owned();
        let mut problems = Problems::new(NatsServerConfig::KEY, &origin);
        c.validate(&mut problems);
        problems
            .into_vec()
            .into_iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(problems(&NatsServerConfig::default()), Vec::<String>::new());
    }

    #[test]
    fn ports_must_be_set_and_distinct() {
        let c = NatsServerConfig {
            port: 0,
            monitor_port: 6222,
            ..Default::default()
        };
        assert_eq!(
            problems(&c),
            vec![
                "nats_server.port: must be a port between 1 and 65535",
                "nats_server.cluster_port: port 6222 is already nats_server.monitor_port: each port needs its own"
            ]
        );
    }

    #[test]
    fn routes_must_be_route_urls_with_host_and_port() {
        let c = NatsServerConfig {
            routes: vec![
                "nats-route://10.0.0.12:6222".into(),
                "10.0.0.13:6222".into(),
                "http://a:1".into(),
                "nats-route://b".into(),
            ],
            ..Default::default()
        };
        let p = problems(&c);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p[0].starts_with("nats_server.routes.1: \"10.0.0.13:6222\""),
            "{p:?}"
        );
        assert!(
            p[1].starts_with("nats_server.routes.2: scheme \"http\""),
            "{p:?}"
        );
        assert!(p[2].contains("needs a host and a port"), "{p:?}");
        assert!(
            p.iter().all(|m| m.contains("nats-route://10.0.0.12:6222")),
            "every message shows what is valid"
        );
    }

    #[test]
    fn route_problems_show_no_credentials() {
        let c = NatsServerConfig {
            routes: vec![
                "http://ruser:s3cret1@a:1".into(),
                "nats-route://ruser:s3cret2@b".into(),
                "s3cret3@10.0.0.4:6222".into(),
            ],
            ..Default::default()
        };
        let p = problems(&c);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p.iter()
                .all(|m| !m.contains("s3cret") && !m.contains("ruser")),
            "{p:?}"
        );
        assert!(p[1].contains("nats-route://***:***@b"), "{p:?}");
    }

    #[test]
    fn auth_is_a_token_or_a_user_with_password() {
        let auth = NatsAuthConfig {
            token: Some(Secret::new("t")),
            user: Some("u".into()),
            password: Some(Secret::new("p")),
        };
        let p = problems(&NatsServerConfig {
            auth,
            ..Default::default()
        });
        assert_eq!(
            p,
            vec![
                "nats_server.auth.token: use either auth.token or auth.user with auth.password, not both"
            ]
        );

        let auth = NatsAuthConfig {
            user: Some("u".into()),
            ..Default::default()
        };
        let p = problems(&NatsServerConfig {
            auth,
            ..Default::default()
        });
        assert_eq!(
            p,
            vec!["nats_server.auth.user: auth.password must be set when auth.user is"]
        );
    }

    #[test]
    fn tls_needs_cert_and_key_and_a_ca_to_verify_clients() {
        let tls = NatsTlsConfig {
            cert_file: Some("c.pem".into()),
            verify_clients: true,
            ..Default::default()
        };
        let p = problems(&NatsServerConfig {
            tls,
            ..Default::default()
        });
        assert_eq!(
            p,
            vec![
                "nats_server.tls.cert_file: tls.key_file must be set too",
                "nats_server.tls.verify_clients: needs tls.ca_file, the CA that client certificates chain to"
            ]
        );
    }

    #[test]
    fn lame_duck_bounds_follow_nats_server() {
        let c = NatsServerConfig {
            lame_duck_duration: Span::secs(10),
            lame_duck_grace_period: Span::secs(10),
            max_payload: ByteSize::mib(65),
            ..Default::default()
        };
        let p = problems(&c);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p[0].starts_with("nats_server.max_payload: 65MiB is out of range"),
            "{p:?}"
        );
        assert!(p[1].contains("at least 30s"), "{p:?}");
        assert!(
            p[2].starts_with("nats_server.lame_duck_grace_period"),
            "{p:?}"
        );
    }

    #[test]
    fn names_and_advertise_addresses_are_checked() {
        let c = NatsServerConfig {
            server_name: Some("node one".into()),
            advertise: Some("nats.example.com".into()),
            cluster_advertise: Some("10.0.0.11:6222".into()),
            ..Default::default()
        };
        let p = problems(&c);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with("nats_server.server_name: \"node one\" is not a valid name"),
            "{p:?}"
        );
        assert!(
            p[1].starts_with("nats_server.advertise: \"nats.example.com\" is not HOST:PORT"),
            "{p:?}"
        );
    }
}
