//! The `[lb]` section: plain data deserialized by figment, with every value parsed into a type
//! that cannot be invalid (addresses, durations, header names, upstream URLs), and the rules that
//! span fields checked once in `validate`. (That idle pooled connections close before the app's
//! keep-alive timeout spans two sections: it is checked where they are composed, `cli/config.rs`.)

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use hyper::http;
use hyper::http::uri::Authority;
use hyper::http::{HeaderName, Uri};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::config::{ByteSize, Problems, Section, Span, one_or_many};

/// Upstreams are tracked in a 64-bit set per request (which ones a request already tried).
pub const MAX_UPSTREAMS: usize = 64;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LbConfig {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// `/lb/status`, `/metrics`, `/livez`, `/readyz`; keep it off the public network.
    pub admin_listen: SocketAddr,
    /// Threads serving clients, each with its own listener socket (`SO_REUSEPORT`), event loop
    /// and upstream connections, like nginx's worker processes; default one per core.
    pub workers: Option<usize>,
    pub policy: Policy,
    /// The app instances, as `[[lb.upstreams]]` tables or `"URL [backup] [weight=N]"` strings.
    #[serde(deserialize_with = "one_or_many")]
    pub upstreams: Vec<UpstreamConfig>,
    /// Networks whose `X-Forwarded-*` headers are believed (an outer proxy or CDN).
    #[serde(deserialize_with = "one_or_many")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Header carrying the request id: kept when a client sends a sane one, else generated.
    pub request_id_header: HeaderNameValue,
    /// One log line per request (target `quire::lb::access`).
    pub access_log: bool,
    /// Largest request head (request line plus headers) accepted; larger gets 431.
    pub max_header_size: ByteSize,
    /// Most request headers accepted; more gets 431.
    pub max_headers: usize,
    /// An upstream coming back (health recovered, ejection over) gets a share of traffic growing
    /// from 10 % to 100 % over this time.
    pub slow_start: Span,
    /// How long open requests and WebSockets get to finish after SIGTERM.
    pub drain_timeout: Span,
    pub timeouts: TimeoutsConfig,
    pub health: HealthConfig,
    pub passive: PassiveConfig,
    pub retry: RetryConfig,
    pub websocket: WebSocketConfig,
    pub tls: TlsConfig,
}

impl LbConfig {
    pub fn workers(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

impl Default for LbConfig {
    fn default() -> Self {
        LbConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            workers: None,
            policy: Policy::Failover,
            upstreams: Vec::new(),
            trusted_proxies: Vec::new(),
            request_id_header: HeaderNameValue(HeaderName::from_static("x-request-id")),
            access_log: true,
            max_header_size: ByteSize(64 * 1024),
            max_headers: 100,
            slow_start: Span::secs(10),
            drain_timeout: Span::secs(30),
            timeouts: TimeoutsConfig::default(),
            health: HealthConfig::default(),
            passive: PassiveConfig::default(),
            retry: RetryConfig::default(),
            websocket: WebSocketConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

/// How requests are spread over the upstreams of one role. Backups take requests only when no
/// primary is available, whatever the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Everything to the first available upstream in the listed order (active/passive).
    Failover,
    /// Weighted round robin.
    #[serde(alias = "round-robin")]
    RoundRobin,
    /// The upstream with the fewest open requests per unit of weight.
    #[serde(alias = "least-connections")]
    LeastConnections,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Failover => "failover",
            Policy::RoundRobin => "round_robin",
            Policy::LeastConnections => "least_connections",
        }
    }
}

/// An upstream's tier: backups take requests only when no primary is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamRole {
    Primary,
    Backup,
}

impl UpstreamRole {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamRole::Primary => "primary",
            UpstreamRole::Backup => "backup",
        }
    }
}

/// One `[[lb.upstreams]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamConfig {
    pub url: UpstreamUrl,
    pub role: UpstreamRole,
    /// Share of requests relative to the other upstreams of the same role (1–1000).
    pub weight: u32,
}

/// The table form, so a missing `role` or `weight` takes its default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamTable {
    url: UpstreamUrl,
    #[serde(default = "primary")]
    role: UpstreamRole,
    #[serde(default = "one")]
    weight: u32,
}

fn primary() -> UpstreamRole {
    UpstreamRole::Primary
}

fn one() -> u32 {
    1
}

impl FromStr for UpstreamConfig {
    type Err = String;

    /// `"http://10.0.0.12:8080 backup weight=2"`: the short form environment variables use.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut words = s.split_whitespace();
        let url = words
            .next()
            .ok_or("empty upstream: expected \"http://HOST:PORT [backup] [weight=N]\"")?
            .parse()?;
        let mut upstream = UpstreamConfig {
            url,
            role: UpstreamRole::Primary,
            weight: 1,
        };
        for word in words {
            match word {
                "primary" => upstream.role = UpstreamRole::Primary,
                "backup" => upstream.role = UpstreamRole::Backup,
                _ => {
                    upstream.weight = word
                        .strip_prefix("weight=")
                        .and_then(|w| w.parse().ok())
                        .ok_or_else(|| {
                            format!("unknown word \"{word}\": expected primary, backup or weight=N")
                        })?;
                }
            }
        }
        Ok(upstream)
    }
}

impl<'de> Deserialize<'de> for UpstreamConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UpstreamConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table with url, role and weight, or a string \"http://HOST:PORT [backup] [weight=N]\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<UpstreamConfig, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<UpstreamConfig, A::Error> {
                let t = UpstreamTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(UpstreamConfig {
                    url: t.url,
                    role: t.role,
                    weight: t.weight,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// An upstream base URL: `http://host:port`, nothing after the authority.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub authority: Authority,
}

impl fmt::Debug for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.authority)
    }
}

impl FromStr for UpstreamUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let expected = "expected http://HOST:PORT (an app instance's address)";
        let uri: Uri = s
            .trim()
            .parse()
            .map_err(|_| format!("\"{s}\" is not a URL: {expected}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "\"{s}\": https upstreams are not supported, {expected}"
                ));
            }
            _ => return Err(format!("\"{s}\": {expected}")),
        }
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(format!("\"{s}\" has a path: {expected}"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("\"{s}\": {expected}"))?;
        if authority.as_str().contains('@') {
            return Err(format!("\"{s}\" has credentials: {expected}"));
        }
        Ok(UpstreamUrl { authority })
    }
}

impl Serialize for UpstreamUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// A header name checked while the config is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderNameValue(pub HeaderName);

impl Serialize for HeaderNameValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for HeaderNameValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HeaderName::from_bytes(s.trim().as_bytes())
            .map(HeaderNameValue)
            .map_err(|_| {
                de::Error::custom(format!(
                    "\"{s}\" is not a header name: use letters, digits and '-'"
                ))
            })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TimeoutsConfig {
    /// Opening a TCP connection to an upstream; a failure here is retried for any request.
    pub connect: Span,
    /// From the end of the request body to the upstream's response head.
    pub first_byte: Span,
    /// Longest pause while a body streams, in either direction (nginx `proxy_read_timeout`).
    pub read: Span,
    /// How long a client connection may sit between requests (or take to send a request head).
    pub client_idle: Span,
    /// How long a pooled upstream connection stays open unused; keep it well below the app's
    /// `http.keep_alive_timeout` so the app never closes a connection the lb is about to reuse.
    pub pool_idle: Span,
    /// A WebSocket or other upgraded connection with no traffic either way for this long closes.
    pub tunnel_idle: Span,
    /// TLS handshake with a client.
    pub tls_handshake: Span,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            connect: Span::secs(3),
            first_byte: Span::secs(90),
            read: Span::secs(300),
            client_idle: Span::secs(60),
            pool_idle: Span::secs(30),
            tunnel_idle: Span::secs(300),
            tls_handshake: Span::secs(10),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthConfig {
    /// Probed with GET; 2xx is healthy, anything else (a draining app's 503 too) is not.
    pub path: String,
    pub interval: Span,
    pub timeout: Span,
    /// Consecutive good probes before a down upstream takes traffic again.
    pub rise: u32,
    /// Consecutive bad probes before an upstream stops taking new requests.
    pub fall: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            path: "/readyz".into(),
            interval: Span::secs(2),
            timeout: Span::secs(1),
            rise: 2,
            fall: 2,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PassiveConfig {
    /// Consecutive failed requests (connect error, reset, timeout, 502/503/504) that eject an
    /// upstream; 0 turns passive ejection off.
    pub failures: u32,
    /// The failures must fall within this window.
    pub window: Span,
    /// The first ejection lasts this long; each further one in a row adds as much again.
    pub ejection_time: Span,
    pub max_ejection_time: Span,
}

impl Default for PassiveConfig {
    fn default() -> Self {
        PassiveConfig {
            failures: 3,
            window: Span::secs(10),
            ejection_time: Span::secs(10),
            max_ejection_time: Span::secs(300),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryConfig {
    /// Attempts per request at most, the first one included; 1 turns retries off.
    pub tries: u32,
    /// No new attempt starts once a request is this old.
    pub budget: Span,
    /// Request bodies up to this size are kept so an idempotent request can be replayed.
    pub replay_buffer: ByteSize,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            tries: 3,
            budget: Span::secs(10),
            replay_buffer: ByteSize(64 * 1024),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WebSocketConfig {
    /// Close tunnels to an upstream whose health probe stops getting an answer (not one that is
    /// merely draining), so clients reconnect to a live instance instead of waiting on a dead one.
    pub close_on_unreachable: bool,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            close_on_unreachable: true,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    /// PEM certificate chain; with `key_file`, the listener speaks HTTPS. Reloaded on SIGHUP.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }
}

impl Section for LbConfig {
    const KEY: &'static str = "lb";

    /// Rules for `[lb]` that need more than a type can say. These hold for every mode, since a
    /// typo in `[lb]` is worth reporting whoever reads the file; `check_runnable` adds what only
    /// `quire lb` needs.
    fn validate(&self, problems: &mut Problems<'_>) {
        let lb = self;
        let mut bad = |key: String, message: String| problems.add(&key, message);

        if lb.upstreams.len() > MAX_UPSTREAMS {
            bad(
                "upstreams".into(),
                format!("{} upstreams: at most {MAX_UPSTREAMS}", lb.upstreams.len()),
            );
        }
        for (i, u) in lb.upstreams.iter().enumerate() {
            if !(1..=1000).contains(&u.weight) {
                bad(
                    format!("upstreams.{i}.weight"),
                    format!("{} is out of range: use 1 to 1000", u.weight),
                );
            }
            if lb.upstreams[..i].iter().any(|earlier| earlier.url == u.url) {
                bad(
                    format!("upstreams.{i}.url"),
                    format!("{} is listed twice", u.url),
                );
            }
        }
        if let Some(0) | Some(257..) = lb.workers {
            bad("workers".into(), "must be between 1 and 256".into());
        }
        if lb.listen == lb.admin_listen {
            bad(
                "admin_listen".into(),
                format!("{} is also lb.listen: use another port", lb.admin_listen),
            );
        }
        if !lb.health.path.starts_with('/')
            || lb.health.path.parse::<http::uri::PathAndQuery>().is_err()
        {
            bad(
                "health.path".into(),
                format!("\"{}\" is not a path: use e.g. /readyz", lb.health.path),
            );
        }
        for (key, value) in [
            ("health.rise", lb.health.rise),
            ("health.fall", lb.health.fall),
            ("retry.tries", lb.retry.tries),
        ] {
            if value == 0 {
                bad(key.into(), "must be at least 1".into());
            }
        }
        for (key, span) in positive_spans(lb) {
            if span.get().is_zero() {
                bad(key.into(), "must be longer than 0s".into());
            }
        }
        if lb.health.timeout > lb.health.interval {
            bad(
                "health.timeout".into(),
                format!(
                    "{} is longer than lb.health.interval ({}): probes would overlap",
                    lb.health.timeout, lb.health.interval
                ),
            );
        }
        if lb.passive.max_ejection_time < lb.passive.ejection_time {
            bad(
                "passive.max_ejection_time".into(),
                format!(
                    "{} is shorter than lb.passive.ejection_time ({})",
                    lb.passive.max_ejection_time, lb.passive.ejection_time
                ),
            );
        }
        if !(1024..=1024 * 1024).contains(&lb.max_header_size.bytes()) {
            bad(
                "max_header_size".into(),
                format!("{} is out of range: use 1KiB to 1MiB", lb.max_header_size),
            );
        }
        if !(8..=1000).contains(&lb.max_headers) {
            bad(
                "max_headers".into(),
                format!("{} is out of range: use 8 to 1000", lb.max_headers),
            );
        }
        match (&lb.tls.cert_file, &lb.tls.key_file) {
            (Some(_), None) => bad(
                "tls.key_file".into(),
                "must be set when lb.tls.cert_file is".into(),
            ),
            (None, Some(_)) => bad(
                "tls.cert_file".into(),
                "must be set when lb.tls.key_file is".into(),
            ),
            _ => {}
        }
    }
}

impl LbConfig {
    /// What `quire lb` needs beyond a valid file: something to balance over.
    pub(crate) fn check_runnable(&self, problems: &mut Problems<'_>) {
        if self.upstreams.is_empty() {
            problems.add(
                "upstreams",
                "no upstreams: add [[lb.upstreams]] tables with url = \"http://HOST:PORT\", or set \
                 QUIRE_LB__UPSTREAMS=\"http://10.0.0.11:8080, http://10.0.0.12:8080 backup\"",
            );
        }
    }
}

fn positive_spans(lb: &LbConfig) -> [(&'static str, Span); 11] {
    let t = &lb.timeouts;
    [
        ("timeouts.connect", t.connect),
        ("timeouts.first_byte", t.first_byte),
        ("timeouts.read", t.read),
        ("timeouts.client_idle", t.client_idle),
        ("timeouts.pool_idle", t.pool_idle),
        ("timeouts.tunnel_idle", t.tunnel_idle),
        ("timeouts.tls_handshake", t.tls_handshake),
        ("health.interval", lb.health.interval),
        ("health.timeout", lb.health.timeout),
        ("retry.budget", lb.retry.budget),
        ("passive.ejection_time", lb.passive.ejection_time),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::test_env as env;
    use crate::config::{ConfigError, EachSection, Layout, Loaded};

    /// The file with only its `[lb]` section read.
    #[derive(Default, Clone)]
    struct File {
        lb: LbConfig,
    }

    impl Layout for File {
        fn sections(&mut self, each: &mut impl EachSection) {
            each.section(&mut self.lb);
        }
    }

    fn load(file: Option<&Path>, env: &[(String, String)]) -> Result<Loaded<File>, ConfigError> {
        crate::config::load(file, env)
    }

    fn load_file(text: &str) -> (tempfile::TempDir, Result<Loaded<File>, ConfigError>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quire.toml");
        std::fs::write(&path, text).unwrap();
        let loaded = load(Some(&path), &[]);
        (dir, loaded)
    }

    #[test]
    fn tables_from_the_file() {
        let (_dir, loaded) = load_file(
            "[lb]\npolicy = \"round_robin\"\n[[lb.upstreams]]\nurl = \"http://10.0.0.11:8080\"\n\
             [[lb.upstreams]]\nurl = \"http://10.0.0.12:8080\"\nrole = \"backup\"\nweight = 3\n",
        );
        let lb = loaded.unwrap().config.lb;
        assert_eq!(lb.policy, Policy::RoundRobin);
        assert_eq!(lb.upstreams.len(), 2);
        assert_eq!(lb.upstreams[0].role, UpstreamRole::Primary);
        assert_eq!(lb.upstreams[0].weight, 1);
        assert_eq!(lb.upstreams[1].role, UpstreamRole::Backup);
        assert_eq!(lb.upstreams[1].weight, 3);
        assert_eq!(lb.upstreams[1].url.authority.as_str(), "10.0.0.12:8080");
    }

    #[test]
    fn short_form_from_the_environment() {
        let l = load(
            None,
            &env(&[
                (
                    "QUIRE_LB__UPSTREAMS",
                    "http://a:8080 weight=2, http://b:8080 backup",
                ),
                ("QUIRE_LB__TIMEOUTS__CONNECT", "500ms"),
                ("QUIRE_LB__HEALTH__RISE", "4"),
            ]),
        )
        .unwrap();
        let lb = &l.config.lb;
        assert_eq!(lb.upstreams[0], "http://a:8080 weight=2".parse().unwrap());
        assert_eq!(lb.upstreams[1].role, UpstreamRole::Backup);
        assert_eq!(lb.timeouts.connect, Span::millis(500));
        assert_eq!(lb.health.rise, 4);
    }

    #[test]
    fn bad_values_name_key_origin_and_what_is_valid() {
        let (dir, loaded) = load_file("[[lb.upstreams]]\nurl = \"ftp://x:21\"\n");
        let err = loaded.err().unwrap().to_string();
        let file = dir.path().join("quire.toml");
        assert!(err.contains("lb.upstreams.0.url"), "{err}");
        assert!(err.contains(&format!("{}:2", file.display())), "{err}");
        assert!(err.contains("expected http://HOST:PORT"), "{err}");

        let err = load(None, &env(&[("QUIRE_LB__POLICY", "random")]))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("lb.policy (from env QUIRE_LB__POLICY)"),
            "{err}"
        );
        assert!(err.contains("failover"), "{err}");

        let (_dir, loaded) =
            load_file("[[lb.upstreams]]\nurl = \"http://a:1\"\nrole = \"standby\"\n");
        let err = loaded.err().unwrap().to_string();
        assert!(
            err.contains("lb.upstreams.0.role") && err.contains("backup"),
            "{err}"
        );
    }

    #[test]
    fn cross_field_rules() {
        let err = load(
            None,
            &env(&[
                ("QUIRE_LB__UPSTREAMS", "http://a:1 weight=0, http://a:1"),
                ("QUIRE_LB__HEALTH__TIMEOUT", "5s"),
                ("QUIRE_LB__RETRY__TRIES", "0"),
                ("QUIRE_LB__TLS__CERT_FILE", "/etc/quire/cert.pem"),
            ]),
        )
        .err()
        .unwrap()
        .to_string();
        for expected in [
            "lb.upstreams.0.weight (from env QUIRE_LB__UPSTREAMS): 0 is out of range",
            "lb.upstreams.1.url (from env QUIRE_LB__UPSTREAMS): http://a:1 is listed twice",
            "lb.health.timeout (from env QUIRE_LB__HEALTH__TIMEOUT): 5s is longer than lb.health.interval",
            "lb.retry.tries (from env QUIRE_LB__RETRY__TRIES): must be at least 1",
            "lb.tls.key_file (from default): must be set when lb.tls.cert_file is",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in {err}");
        }
    }

    #[test]
    fn running_needs_upstreams() {
        let l = load(None, &[]).unwrap();
        let err = l
            .require(&l.config.lb, LbConfig::check_runnable)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("lb.upstreams (from default): no upstreams"),
            "{err}"
        );
    }

    #[test]
    fn upstream_urls_are_bare_http_authorities() {
        assert!("http://10.0.0.1:8080".parse::<UpstreamUrl>().is_ok());
        assert!("http://app/".parse::<UpstreamUrl>().is_ok());
        assert!(
            "https://app"
                .parse::<UpstreamUrl>()
                .unwrap_err()
                .contains("https upstreams are not supported")
        );
        assert!(
            "http://app/base"
                .parse::<UpstreamUrl>()
                .unwrap_err()
                .contains("has a path")
        );
        assert!("10.0.0.1:8080".parse::<UpstreamUrl>().is_err());
    }
}
