//! The `[agent]` section: where the report service is, the token that admits this agent, its
//! own limits, and the sources on this host (`[[agent.datasources]]`), each with its kind's
//! settings written flat beside its name and kind, exactly as the server's data sources take
//! them. A source's settings are checked (and its `*_file` secrets read) while the file is
//! loaded; `validate` reports what was wrong, by key and origin.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use url::Url;

use crate::config::{ByteSize, Problems, Secret, SecretKey, Section, Shown, Span, redact_url};
use crate::connector::settings::{self, Settings};
use crate::connector::{DataSourceKind, Invalid, MAX_NAME, valid_name};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentConfig {
    /// The report service's URL (usually the load balancer's): `https://reports.example.com`.
    pub server_url: Option<ServerUrl>,
    /// The agent token an admin created (`POST /api/v1/agents`).
    pub token: Option<Secret>,
    /// How the console names this agent; default: the host name.
    pub name: Option<String>,
    /// PEM certificates trusted besides the system's, for a server with a private CA.
    pub ca_file: Option<PathBuf>,
    /// Rows one query may return on this agent, whatever the server asks.
    pub max_rows: usize,
    /// Bytes of rows one query may return on this agent.
    pub max_bytes: ByteSize,
    /// The longest a query may run on this agent.
    pub timeout: Span,
    /// Where `quire agent status` reads this agent's state; default: `data_dir/agent-status.json`.
    pub status_file: Option<PathBuf>,
    /// The sources this agent serves.
    pub datasources: Vec<AgentSource>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            server_url: None,
            token: None,
            name: None,
            ca_file: None,
            max_rows: 100_000,
            max_bytes: ByteSize::mib(64),
            timeout: Span::secs(120),
            status_file: None,
            datasources: Vec::new(),
        }
    }
}

impl AgentConfig {
    /// The configured name, else the host name.
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(crate::instance::hostname)
    }

    /// The status file, defaulting to `data_dir/agent-status.json`.
    pub fn status_file(&self, data_dir: &Path) -> PathBuf {
        self.status_file
            .clone()
            .unwrap_or_else(|| data_dir.join("agent-status.json"))
    }

    /// The sources, checked. A loaded configuration has no unchecked one: `validate` reports
    /// every source that failed.
    pub fn sources(&self) -> impl Iterator<Item = &Source> {
        self.datasources
            .iter()
            .filter_map(|s| s.checked.as_ref().ok())
    }

    /// What only `quire agent` needs: somewhere to connect, a token, something to serve.
    pub fn check_runnable(&self, problems: &mut Problems<'_>) {
        if self.server_url.is_none() {
            problems.add(
                "server_url",
                "quire agent needs the report service's URL, e.g. \"https://reports.example.com\"",
            );
        }
        if self.token.is_none() {
            problems.add(
                "token",
                "quire agent needs an agent token (POST /api/v1/agents): set agent.token or QUIRE_AGENT__TOKEN_FILE",
            );
        }
        if self.datasources.is_empty() {
            problems.add(
                "datasources",
                "quire agent needs at least one [[agent.datasources]] to serve",
            );
        }
    }
}

impl Section for AgentConfig {
    const KEY: &'static str = "agent";

    const SECRETS: &'static [SecretKey] = &[SecretKey {
        key: "token",
        shown: Shown::Hidden,
    }];

    fn validate(&self, problems: &mut Problems<'_>) {
        if self.token.as_ref().is_some_and(|t| t.expose().is_empty()) {
            problems.add("token", "must not be empty");
        }
        if self.name.as_deref().is_some_and(|n| !valid_name(n)) {
            problems.add("name", name_rule());
        }
        if self.max_rows == 0 {
            problems.add("max_rows", "must be at least 1");
        }
        if self.max_bytes.bytes() == 0 {
            problems.add("max_bytes", "must be more than 0B");
        }
        if self.timeout.get().is_zero() {
            problems.add("timeout", "must be longer than 0s");
        }
        for (i, source) in self.datasources.iter().enumerate() {
            let at = |field: &str| {
                let display = format!("datasources[{i}]{}", dotted(field));
                let origin = format!("datasources.{i}{}", dotted(field));
                (display, origin)
            };
            match &source.checked {
                Err(Invalid { field, message }) => {
                    let (key, origin) = at(field);
                    problems.add_with_origin_of(&key, &origin, message.clone());
                }
                Ok(s) => {
                    let same = |e: &AgentSource| e.checked.as_ref().is_ok_and(|e| e.name == s.name);
                    if let Some(first) = self.datasources[..i].iter().position(same) {
                        let (key, origin) = at("name");
                        let message = format!(
                            "\"{}\" is also datasources[{first}]: each source needs its own name",
                            s.name
                        );
                        problems.add_with_origin_of(&key, &origin, message);
                    }
                }
            }
        }
    }

    /// Each source's secrets masked (a URL keeps its shape), since a list is shown as one value.
    fn effective(&self) -> Self {
        let mut shown = self.clone();
        for source in &mut shown.datasources {
            source.given = source.masked();
        }
        shown
    }
}

/// `.field`, or nothing for the entry as a whole.
fn dotted(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!(".{field}")
    }
}

/// The report service's base URL: http or https, a host, no credentials (the token is how an
/// agent is admitted), no query or fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl(Url);

impl ServerUrl {
    /// The agents' endpoint, as a WebSocket URL of the same security (`wss://` for `https://`).
    pub fn connect_url(&self) -> Url {
        let mut url = self.0.clone();
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        // http(s) -> ws(s) is a change between special schemes, which `Url` allows.
        let _ = url.set_scheme(scheme);
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}/api/v1/agents/connect"));
        url
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl FromStr for ServerUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let hint = "an http:// or https:// URL such as \"https://reports.example.com\"";
        let url =
            Url::parse(s.trim()).map_err(|e| format!("\"{s}\" is not a URL ({e}): {hint}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(format!("\"{}\" is not {hint}", redact_url(s)));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "\"{}\": no credentials in the URL; the agent authenticates with agent.token",
                redact_url(s)
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("\"{s}\": no query or fragment: {hint}"));
        }
        Ok(ServerUrl(url))
    }
}

impl Serialize for ServerUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for ServerUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// A source as checked: what the agent opens.
#[derive(Clone)]
pub struct Source {
    pub name: String,
    pub kind: DataSourceKind,
    pub settings: Settings,
    /// A CSV source's file on this host.
    pub path: Option<PathBuf>,
}

/// One `[[agent.datasources]]` entry: as written (what `config check` shows) and as checked
/// (its settings typed, its `*_file` secrets read), or why it is not valid.
#[derive(Clone)]
pub struct AgentSource {
    given: Map<String, Value>,
    checked: Result<Source, Invalid>,
}

/// Never shows a setting: they hold the source's credentials.
impl fmt::Debug for AgentSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentSource")
            .field("name", &self.given.get("name"))
            .field("kind", &self.given.get("kind"))
            .finish_non_exhaustive()
    }
}

impl AgentSource {
    fn new(given: Map<String, Value>) -> Self {
        let checked = check_source(given.clone());
        AgentSource { given, checked }
    }

    /// The entry with each secret of its kind masked, as `config check` shows it.
    fn masked(&self) -> Map<String, Value> {
        let mut given = self.given.clone();
        let Ok(source) = &self.checked else {
            return given;
        };
        for key in settings::secret_keys(source.kind) {
            let Some(value) = given.get_mut(*key) else {
                continue;
            };
            *value = match value {
                Value::String(url) if *key == "url" => Value::String(redact_url(url)),
                Value::Object(entries) => entries
                    .keys()
                    .map(|name| (name.clone(), Value::String(MASK.into())))
                    .collect(),
                _ => Value::String(MASK.into()),
            };
        }
        given
    }
}

/// What `config check` shows for a secret.
const MASK: &str = "***";

impl Serialize for AgentSource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.given.serialize(s)
    }
}

impl<'de> Deserialize<'de> for AgentSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(AgentSource::new(Map::deserialize(d)?))
    }
}

/// Checks one entry: its name, its kind, a CSV source's path, its `*_file` secrets, then the
/// kind's settings as the server checks a data source's. Fields are named below the entry.
fn check_source(mut given: Map<String, Value>) -> Result<Source, Invalid> {
    let name = match given.remove("name") {
        Some(Value::String(name)) if valid_name(&name) => name,
        _ => return Err(at("name", name_rule())),
    };
    let kind = match given.remove("kind") {
        Some(Value::String(kind)) => DataSourceKind::parse(&kind),
        _ => None,
    }
    .filter(|kind| *kind != DataSourceKind::Agent)
    .ok_or_else(|| at("kind", "one of postgres, mysql, sqlite, http, csv"))?;
    let path = match (kind, given.remove("path")) {
        (DataSourceKind::Csv, Some(Value::String(p))) if p.starts_with('/') => Some(p.into()),
        (DataSourceKind::Csv, _) => {
            return Err(at("path", "the absolute path of the CSV file on this host"));
        }
        (_, Some(path)) => {
            // Not a CSV source: the path belongs to the kind's settings (SQLite's file).
            given.insert("path".into(), path);
            None
        }
        (_, None) => None,
    };
    read_secret_files(kind, &mut given)?;
    let (shown, secrets) = settings::split(kind, given, &Map::new()).map_err(below_settings)?;
    let settings = settings::check(kind, &shown, &secrets).map_err(below_settings)?;
    Ok(Source {
        name,
        kind,
        settings,
        path,
    })
}

/// Replaces each `<secret>_file` key with the file's content, trimmed: a string secret is the
/// whole file; an object of secrets (an HTTP source's headers) is one `Name: value` per line.
fn read_secret_files(kind: DataSourceKind, given: &mut Map<String, Value>) -> Result<(), Invalid> {
    for key in settings::secret_keys(kind) {
        let file_key = format!("{key}_file");
        let Some(path) = given.remove(&file_key) else {
            continue;
        };
        let Value::String(path) = path else {
            return Err(at(&file_key, "the path of a file"));
        };
        if given.contains_key(*key) {
            return Err(at(&file_key, format!("give {key} or {file_key}, not both")));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| at(&file_key, format!("cannot read {path}: {e}")))?;
        let value = if *key == "headers" {
            headers(&text).map_err(|m| at(&file_key, format!("{path}: {m}")))?
        } else {
            Value::String(text.trim().to_owned())
        };
        given.insert((*key).to_owned(), value);
    }
    Ok(())
}

/// `Name: value` lines as an object; blank lines and `#` comments are skipped.
fn headers(text: &str) -> Result<Value, String> {
    let mut out = Map::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("line {}: expected \"Name: value\"", n + 1))?;
        out.insert(name.trim().into(), Value::String(value.trim().into()));
    }
    Ok(Value::Object(out))
}

/// A connector's field (`settings.port`) as a key of the entry (`port`).
fn below_settings(e: Invalid) -> Invalid {
    let field = e.field.strip_prefix("settings").unwrap_or(&e.field);
    at(field.trim_start_matches('.'), e.message)
}

fn at(field: &str, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn name_rule() -> String {
    format!("1 to {MAX_NAME} letters, digits, '-', '_' or '.'")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::config::{ConfigError, load, test_env};

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let p = dir.path().join("quire.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn problems(text: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let f = write(&dir, text);
        match load::<AgentConfig>(Some(&f), &[]) {
            Err(ConfigError::Invalid(found)) => found
                .iter()
                .map(|p| p.to_string().replace(&f.display().to_string(), "FILE"))
                .collect(),
            other => panic!("{:?}", other.map(|l| l.config)),
        }
    }

    #[test]
    fn a_full_section_loads_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let f = write(
            &dir,
            &format!(
                r#"[agent]
server_url = "https://reports.example.com/quire/"
token = "tok"

[[agent.datasources]]
name = "warehouse"
kind = "postgres"
host = "db.internal"
port = 5432
user = "reports"
password_file = "{}"

[[agent.datasources]]
name = "prices.csv"
kind = "csv"
path = "/srv/prices.csv"
delimiter = ";"
"#,
                pw.display()
            ),
        );
        let c = load::<AgentConfig>(Some(&f), &[]).unwrap().config;
        assert_eq!(c.max_rows, 100_000);
        assert_eq!(c.timeout, Span::secs(120));
        assert_eq!(
            c.server_url.as_ref().unwrap().connect_url().as_str(),
            "wss://reports.example.com/quire/api/v1/agents/connect"
        );
        assert_eq!(
            c.status_file(Path::new("/var/lib/quire")),
            PathBuf::from("/var/lib/quire/agent-status.json")
        );
        let sources: Vec<&Source> = c.sources().collect();
        assert_eq!(sources.len(), 2);
        match &sources[0].settings {
            Settings::Postgres(s) => {
                assert_eq!(s.password.as_deref(), Some("s3cret"), "read and trimmed");
                assert_eq!(s.port, Some(5432));
            }
            _ => panic!("not postgres"),
        }
        assert_eq!(sources[1].path, Some(PathBuf::from("/srv/prices.csv")));
        assert!(matches!(&sources[1].settings, Settings::Csv(s) if s.delimiter == ';'));
        let origin = |_: &str| "test".to_owned();
        let mut p = Problems::new("agent", &origin);
        c.check_runnable(&mut p);
        assert!(p.into_vec().is_empty());
    }

    #[test]
    fn a_bad_setting_is_named_by_its_entry_and_line() {
        let p = problems(
            "[agent]\n\n[[agent.datasources]]\nname = \"a\"\nkind = \"sqlite\"\npath = \"/a.db\"\n\n\
             [[agent.datasources]]\nname = \"b\"\nkind = \"postgres\"\nhost = \"h\"\nport = \"x\"\n",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("agent.datasources[1].port (from FILE:12): "),
            "{p:?}"
        );
    }

    #[test]
    fn names_kinds_paths_and_duplicates_are_checked() {
        let p = problems(
            r#"[[agent.datasources]]
name = "bad name"
kind = "sqlite"
path = "/a.db"

[[agent.datasources]]
name = "x"
kind = "agent"
source = "y"

[[agent.datasources]]
name = "c"
kind = "csv"
path = "relative.csv"

[[agent.datasources]]
name = "s"
kind = "sqlite"
path = "relative.db"

[[agent.datasources]]
name = "s"
kind = "sqlite"
path = "/s.db"
"#,
        );
        let keys: Vec<&str> = p.iter().map(|p| p.split(' ').next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "agent.datasources[0].name",
                "agent.datasources[1].kind",
                "agent.datasources[2].path",
                "agent.datasources[3].path",
            ],
            "{p:?}"
        );
        let p = problems(
            "[[agent.datasources]]\nname = \"s\"\nkind = \"sqlite\"\npath = \"/a.db\"\n\
             [[agent.datasources]]\nname = \"s\"\nkind = \"sqlite\"\npath = \"/b.db\"\n",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(
                "agent.datasources[1].name (from FILE:6): \"s\" is also datasources[0]"
            ),
            "{p:?}"
        );
    }

    #[test]
    fn secret_files_are_read_and_exclusive_with_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = std::fs::File::create(dir.path().join("headers")).unwrap();
        writeln!(
            h,
            "# the API's key\nAuthorization: Bearer t0ken\n\nX-Tenant: acme"
        )
        .unwrap();
        let text = format!(
            "[[agent.datasources]]\nname = \"api\"\nkind = \"http\"\nbase_url = \"https://api.example.com\"\nheaders_file = \"{}\"\n",
            dir.path().join("headers").display()
        );
        let f = write(&dir, &text);
        let c = load::<AgentConfig>(Some(&f), &[]).unwrap().config;
        let source = c.sources().next().unwrap();
        match &source.settings {
            Settings::Http(s) => {
                assert_eq!(s.headers["Authorization"], "Bearer t0ken");
                assert_eq!(s.headers["X-Tenant"], "acme");
            }
            _ => panic!("not http"),
        }
        let p = problems(
            "[[agent.datasources]]\nname = \"w\"\nkind = \"mysql\"\nhost = \"h\"\npassword = \"p\"\npassword_file = \"/p\"\n",
        );
        assert!(
            p[0].starts_with("agent.datasources[0].password_file (from FILE:6): give password or password_file, not both"),
            "{p:?}"
        );
        let p = problems(
            "[[agent.datasources]]\nname = \"w\"\nkind = \"mysql\"\nhost = \"h\"\npassword_file = \"/nonexistent/pw\"\n",
        );
        assert!(p[0].contains("cannot read /nonexistent/pw"), "{p:?}");
    }

    #[test]
    fn server_urls_are_http_without_credentials() {
        for bad in [
            "ftp://h",
            "https://u:p@h",
            "https://h/?x=1",
            "reports.example.com",
        ] {
            let e = bad.parse::<ServerUrl>().unwrap_err();
            assert!(!e.contains(":p@"), "{e}");
        }
        let u: ServerUrl = "http://10.0.0.5:8080".parse().unwrap();
        assert_eq!(
            u.connect_url().as_str(),
            "ws://10.0.0.5:8080/api/v1/agents/connect"
        );
        let p = problems("[agent]\nserver_url = \"https://u:pw@h\"\n");
        assert!(p[0].starts_with("agent.server_url (from FILE:2)"), "{p:?}");
        assert!(!p[0].contains("pw@"), "{p:?}");
    }

    #[test]
    fn the_token_comes_from_a_file_and_config_check_hides_every_secret() {
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("token");
        std::fs::write(&tok, "Sekr1tToken\n").unwrap();
        let f = write(
            &dir,
            "[agent]\nserver_url = \"https://r.example.com\"\n\n[[agent.datasources]]\nname = \"w\"\n\
             kind = \"postgres\"\nurl = \"postgres://u:Sekr1tUrl@db/x\"\npassword = \"Sekr1tPw\"\n",
        );
        let env = test_env(&[("QUIRE_AGENT__TOKEN_FILE", tok.to_str().unwrap())]);
        let loaded = load::<AgentConfig>(Some(&f), &env).unwrap();
        assert_eq!(
            loaded.config.token.as_ref().map(Secret::expose),
            Some("Sekr1tToken")
        );
        let out = crate::config::report(&loaded);
        assert!(!out.contains("Sekr1t"), "{out}");
        assert!(out.contains("agent.token = \"***\""), "{out}");
        assert!(out.contains("postgres://***:***@db/x"), "{out}");
        assert!(!format!("{:?}", loaded.config).contains("Sekr1t"));
    }

    #[test]
    fn quire_agent_needs_a_server_a_token_and_a_source() {
        let origin = |_: &str| "default".to_owned();
        let mut p = Problems::new("agent", &origin);
        AgentConfig::default().check_runnable(&mut p);
        let keys: Vec<String> = p.into_vec().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            ["agent.server_url", "agent.token", "agent.datasources"]
        );
    }
}
