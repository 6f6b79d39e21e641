//! The settings of each kind of data source: which are secret, what is valid, and how they are
//! shown. Settings travel as a JSON object; the secret ones are split off to be sealed, and are
//! never shown again: a view says `"set"` instead (a URL shows with its credentials masked, an
//! object of secrets — an HTTP source's headers — shows each entry as `"set"`). Sending `"set"`
//! back, for a whole secret or for one entry of an object, keeps the stored value, so a form can
//! round-trip a view.

use std::collections::BTreeMap;

use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::DataSourceKind;
use super::Invalid;
use crate::config::{ByteSize, Span};

/// What a view shows in place of a stored secret, and what a client sends to keep it.
pub const SET: &str = "set";

/// How a database server source negotiates TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    Disable,
    #[default]
    Prefer,
    Require,
}

/// A database server (PostgreSQL, MySQL/MariaDB): a `url`, or
/// `host`/`port`/`database`/`user`/`password`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub url: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub database: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    #[serde(default)]
    pub tls: TlsMode,
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    #[serde(default = "default_timeout")]
    pub statement_timeout: Span,
}

fn default_pool_size() -> u32 {
    4
}

fn default_timeout() -> Span {
    Span::secs(30)
}

/// The longest a statement or a request may be given.
const MAX_TIMEOUT: Span = Span::secs(3600);

/// A SQLite file on the server, opened read-only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteSettings {
    pub path: String,
}

/// A JSON API: GET requests to paths under `base_url`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// `http(s)://host[:port][/path]`, without credentials (they belong in `headers`, which are
    /// sealed; the URL is shown).
    pub base_url: String,
    /// Sent with every request. All secret: they are where an API's credentials go.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How long one request may take, body included.
    #[serde(default = "default_timeout")]
    pub timeout: Span,
    /// The hosts requests and redirects may go to; empty: the base URL's host alone.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// A JSON pointer (RFC 6901) to the array of rows; `""`: the whole document is the array.
    #[serde(default)]
    pub rows: String,
    /// Lets requests reach link-local and cloud metadata addresses, which are refused otherwise
    /// so that a data source cannot be turned into a way to read instance credentials.
    #[serde(default)]
    pub allow_private_addresses: bool,
    /// The largest response read; a larger one fails the query.
    #[serde(default = "default_max_response")]
    pub max_response: ByteSize,
}

fn default_max_response() -> ByteSize {
    ByteSize::mib(16)
}

/// A CSV file uploaded to Quire; the file itself is stored apart from the settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSettings {
    /// One ASCII character between fields.
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// Whether the first row names the columns (otherwise they are `column_1` … `column_n`).
    #[serde(default = "default_header")]
    pub header: bool,
    /// The name of the uploaded file, shown to people; Quire does not read it.
    #[serde(default)]
    pub file_name: Option<String>,
}

fn default_delimiter() -> char {
    ','
}

fn default_header() -> bool {
    true
}

/// A data source that `quire agent`s serve: the query goes to an agent that has a source of
/// this name on its host, with the settings (and credentials) that only the agent knows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    /// The name of the source in the agents' `[[agent.datasources]]`.
    pub source: String,
}

/// A kind's settings, checked.
#[derive(Debug, Clone)]
pub enum Settings {
    Postgres(ServerSettings),
    Mysql(ServerSettings),
    Sqlite(SqliteSettings),
    Http(HttpSettings),
    Csv(CsvSettings),
    Agent(AgentSettings),
}

/// The secret settings of a kind.
pub fn secret_keys(kind: DataSourceKind) -> &'static [&'static str] {
    match kind {
        DataSourceKind::Postgres | DataSourceKind::Mysql => &["url", "password"],
        DataSourceKind::Http => &["headers"],
        DataSourceKind::Sqlite | DataSourceKind::Csv | DataSourceKind::Agent => &[],
    }
}

/// Settings as a JSON object.
pub type Object = Map<String, Value>;

/// Splits `settings` into what may be shown and what must be sealed, taking a secret given as
/// [`SET`] from `stored` (the secrets saved before); in an object of secrets, each entry given as
/// [`SET`] is taken from the stored object.
pub fn split(
    kind: DataSourceKind,
    mut settings: Object,
    stored: &Object,
) -> Result<(Object, Object), Invalid> {
    let mut secrets = Map::new();
    for key in secret_keys(kind) {
        let Some(value) = settings.remove(*key) else {
            continue;
        };
        let value = match value {
            Value::String(s) if s == SET => kept(stored.get(*key), key)?,
            Value::Object(entries) => {
                let stored = stored.get(*key).and_then(Value::as_object);
                let mut out = Map::new();
                for (name, value) in entries {
                    let value = match value {
                        Value::String(s) if s == SET => {
                            kept(stored.and_then(|o| o.get(&name)), &format!("{key}.{name}"))?
                        }
                        other => other,
                    };
                    out.insert(name, value);
                }
                Value::Object(out)
            }
            Value::Null => continue,
            other => other,
        };
        secrets.insert((*key).to_owned(), value);
    }
    Ok((settings, secrets))
}

/// The stored value that a [`SET`] sent for `field` keeps.
fn kept(stored: Option<&Value>, field: &str) -> Result<Value, Invalid> {
    stored.cloned().ok_or_else(|| {
        invalid(
            field,
            format!("\"{SET}\" keeps a stored {field}, but none is stored"),
        )
    })
}

/// Checks a kind's settings (shown and secret together), naming the field at fault.
pub fn check(
    kind: DataSourceKind,
    shown: &Map<String, Value>,
    secrets: &Map<String, Value>,
) -> Result<Settings, Invalid> {
    let mut all = shown.clone();
    all.extend(secrets.clone());
    let all = Value::Object(all);
    match kind {
        DataSourceKind::Postgres => {
            let s: ServerSettings = typed(all)?;
            check_server(&s, &["postgres", "postgresql"])?;
            Ok(Settings::Postgres(s))
        }
        DataSourceKind::Mysql => {
            let s: ServerSettings = typed(all)?;
            check_server(&s, &["mysql", "mariadb"])?;
            Ok(Settings::Mysql(s))
        }
        DataSourceKind::Sqlite => {
            let s: SqliteSettings = typed(all)?;
            if !s.path.starts_with('/') {
                return Err(invalid("path", "an absolute path to a SQLite file"));
            }
            Ok(Settings::Sqlite(s))
        }
        DataSourceKind::Http => {
            let s: HttpSettings = typed(all)?;
            check_http(&s)?;
            Ok(Settings::Http(s))
        }
        DataSourceKind::Csv => {
            let s: CsvSettings = typed(all)?;
            if !s.delimiter.is_ascii() || matches!(s.delimiter, '"' | '\n' | '\r') {
                return Err(invalid(
                    "delimiter",
                    "one ASCII character other than a quote or a line break",
                ));
            }
            Ok(Settings::Csv(s))
        }
        DataSourceKind::Agent => {
            let s: AgentSettings = typed(all)?;
            if s.source.trim().is_empty() {
                return Err(invalid("source", "the name the agents serve it by"));
            }
            Ok(Settings::Agent(s))
        }
    }
}

fn check_server(s: &ServerSettings, schemes: &[&str]) -> Result<(), Invalid> {
    match (&s.url, &s.host) {
        (Some(url), _) => {
            let parsed = url::Url::parse(url).map_err(|e| invalid("url", e.to_string()))?;
            if !schemes.contains(&parsed.scheme()) {
                return Err(invalid("url", format!("a {}:// URL", schemes[0])));
            }
        }
        (None, Some(host)) if !host.trim().is_empty() => {}
        _ => {
            return Err(invalid(
                "url",
                "give url, or host (with database, user, password)",
            ));
        }
    }
    if !(1..=32).contains(&s.pool_size) {
        return Err(invalid("pool_size", "1 to 32 connections"));
    }
    check_timeout("statement_timeout", s.statement_timeout)
}

fn check_timeout(field: &str, timeout: Span) -> Result<(), Invalid> {
    if timeout > MAX_TIMEOUT || timeout == Span::secs(0) {
        return Err(invalid(field, "more than 0s, at most 1h"));
    }
    Ok(())
}

/// The largest `max_response` an HTTP source may set: the whole response is held in memory.
const MAX_RESPONSE: ByteSize = ByteSize::mib(1024);

fn check_http(s: &HttpSettings) -> Result<(), Invalid> {
    let url = url::Url::parse(&s.base_url).map_err(|e| invalid("base_url", e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid("base_url", "an http:// or https:// URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "base_url",
            "no credentials in the URL (it is shown to editors): send them in headers, e.g. \
             Authorization, which are kept secret",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            "base_url",
            "no query or fragment: each query's text adds its own query",
        ));
    }
    for (name, value) in &s.headers {
        let field = format!("headers.{name}");
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(&field, "not a valid header name"))?;
        if name == reqwest::header::HOST {
            return Err(invalid(&field, "the host comes from base_url"));
        }
        HeaderValue::from_str(value).map_err(|_| invalid(&field, "not a valid header value"))?;
    }
    check_timeout("timeout", s.timeout)?;
    for (i, host) in s.allowed_hosts.iter().enumerate() {
        url::Host::parse(host)
            .map_err(|e| invalid(&format!("allowed_hosts[{i}]"), format!("not a host: {e}")))?;
    }
    if !s.rows.is_empty() && !s.rows.starts_with('/') {
        return Err(invalid(
            "rows",
            "a JSON pointer such as \"/data/items\", or \"\" for the whole document",
        ));
    }
    if s.max_response.bytes() == 0 || s.max_response > MAX_RESPONSE {
        return Err(invalid(
            "max_response",
            format!("more than 0, at most {MAX_RESPONSE}"),
        ));
    }
    Ok(())
}

fn typed<T: DeserializeOwned>(value: Value) -> Result<T, Invalid> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        Invalid {
            field: settings_field(&field),
            message: e.inner().to_string(),
        }
    })
}

/// The settings as a view shows them: secrets as [`SET`], a URL with its credentials masked.
pub fn view(shown: &Map<String, Value>, secrets: &Map<String, Value>) -> Map<String, Value> {
    let mut out = shown.clone();
    for (key, value) in secrets {
        let masked = match (key.as_str(), value) {
            ("url", Value::String(url)) => Value::String(crate::config::redact_url(url)),
            (_, Value::Object(entries)) => entries
                .keys()
                .map(|name| (name.clone(), Value::String(SET.to_owned())))
                .collect(),
            _ => Value::String(SET.to_owned()),
        };
        out.insert(key.clone(), masked);
    }
    out
}

fn settings_field(field: &str) -> String {
    if field.is_empty() {
        "settings".to_owned()
    } else {
        format!("settings.{field}")
    }
}

fn invalid(field: &str, message: impl Into<String>) -> Invalid {
    Invalid {
        field: settings_field(field),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn secrets_are_split_off_and_set_keeps_the_stored_one() {
        let given = map(json!({"host": "db", "password": "s3cret", "url": null}));
        let (shown, secrets) = split(DataSourceKind::Postgres, given, &Map::new()).unwrap();
        assert_eq!(shown, map(json!({"host": "db"})));
        assert_eq!(secrets, map(json!({"password": "s3cret"})));
        let again = map(json!({"host": "db2", "password": SET}));
        let (_, kept) = split(DataSourceKind::Postgres, again, &secrets).unwrap();
        assert_eq!(kept["password"], "s3cret");
        let none_stored = split(
            DataSourceKind::Postgres,
            map(json!({"password": SET})),
            &Map::new(),
        );
        assert!(
            matches!(none_stored, Err(Invalid { ref field, .. }) if field == "settings.password")
        );
    }

    #[test]
    fn views_never_show_a_secret() {
        let secrets = map(json!({"password": "s3cret", "url": "postgres://u:pw@db/x"}));
        let v = Value::Object(view(&map(json!({"host": "db"})), &secrets)).to_string();
        assert!(!v.contains("s3cret") && !v.contains("pw"), "{v}");
        assert!(v.contains("\"password\":\"set\""), "{v}");
        assert!(v.contains("db/x"), "{v}");
    }

    #[test]
    fn settings_are_checked_naming_the_field() {
        let bad = |kind, v: Value| match check(kind, &map(v), &Map::new()) {
            Err(Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            bad(DataSourceKind::Sqlite, json!({"path": "rel.db"})),
            "settings.path"
        );
        assert_eq!(
            bad(DataSourceKind::Sqlite, json!({"path": "/x", "extra": 1})),
            "settings.extra"
        );
        assert_eq!(
            bad(DataSourceKind::Postgres, json!({"database": "x"})),
            "settings.url"
        );
        assert_eq!(
            bad(DataSourceKind::Postgres, json!({"url": "mysql://h/d"})),
            "settings.url"
        );
        assert_eq!(
            bad(
                DataSourceKind::Postgres,
                json!({"host": "h", "pool_size": 0})
            ),
            "settings.pool_size"
        );
        assert_eq!(
            bad(DataSourceKind::Postgres, json!({"host": "h", "port": "x"})),
            "settings.port"
        );
        let ok = check(
            DataSourceKind::Postgres,
            &map(json!({"host": "h"})),
            &Map::new(),
        );
        assert!(matches!(ok, Ok(Settings::Postgres(ref p)) if p.pool_size == 4));
    }

    #[test]
    fn each_http_header_is_a_secret_kept_by_set() {
        let given = map(json!({
            "base_url": "https://api.example.com",
            "headers": {"Authorization": "Bearer t0ken", "X-Tenant": "acme"},
        }));
        let (shown, secrets) = split(DataSourceKind::Http, given, &Map::new()).unwrap();
        assert_eq!(shown, map(json!({"base_url": "https://api.example.com"})));
        let v = view(&shown, &secrets);
        assert_eq!(v["headers"], json!({"Authorization": SET, "X-Tenant": SET}));
        assert!(!Value::Object(v.clone()).to_string().contains("t0ken"));
        // The view sent back keeps the stored values; a changed one replaces its own; a header
        // left out is dropped.
        let mut again = v;
        again["headers"] = json!({"Authorization": SET, "X-Region": "eu"});
        let (_, kept) = split(DataSourceKind::Http, again, &secrets).unwrap();
        assert_eq!(
            kept["headers"],
            json!({"Authorization": "Bearer t0ken", "X-Region": "eu"})
        );
        let unknown = map(json!({"base_url": "http://h", "headers": {"X-New": SET}}));
        let e = split(DataSourceKind::Http, unknown, &secrets).unwrap_err();
        assert!(
            matches!(e, Invalid { ref field, .. } if field == "settings.headers.X-New"),
            "{e}"
        );
        let ok = check(DataSourceKind::Http, &shown, &kept);
        assert!(
            matches!(ok, Ok(Settings::Http(ref h)) if h.timeout == Span::secs(30) && h.rows.is_empty()),
            "{ok:?}"
        );
    }

    #[test]
    fn http_and_csv_settings_are_checked_naming_the_field() {
        let bad = |kind, v: Value| match check(kind, &map(v), &Map::new()) {
            Err(Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let http = DataSourceKind::Http;
        for url in [
            "ftp://h/",
            "https://u:p@h/",
            "https://h/?key=1",
            "not a url",
        ] {
            assert_eq!(
                bad(http, json!({"base_url": url})),
                "settings.base_url",
                "{url}"
            );
        }
        let base = |extra: Value| {
            let mut v = json!({"base_url": "https://h"});
            v.as_object_mut().unwrap().extend(map(extra));
            v
        };
        assert_eq!(
            bad(http, base(json!({"headers": {"Bad Name": "x"}}))),
            "settings.headers.Bad Name"
        );
        assert_eq!(
            bad(http, base(json!({"headers": {"X-A": "a\nb"}}))),
            "settings.headers.X-A"
        );
        assert_eq!(
            bad(http, base(json!({"timeout": "2h"}))),
            "settings.timeout"
        );
        assert_eq!(bad(http, base(json!({"rows": "data"}))), "settings.rows");
        assert_eq!(
            bad(
                http,
                base(json!({"allowed_hosts": ["ok.example", "bad host"]}))
            ),
            "settings.allowed_hosts[1]"
        );
        assert_eq!(
            bad(http, base(json!({"max_response": "0B"}))),
            "settings.max_response"
        );
        assert_eq!(bad(http, base(json!({"proxy": "x"}))), "settings.proxy");
        let csv = DataSourceKind::Csv;
        assert_eq!(bad(csv, json!({"delimiter": "ab"})), "settings.delimiter");
        assert_eq!(bad(csv, json!({"delimiter": "\""})), "settings.delimiter");
        assert_eq!(bad(csv, json!({"delimiter": "é"})), "settings.delimiter");
        let ok = check(csv, &map(json!({"delimiter": ";"})), &Map::new());
        assert!(matches!(ok, Ok(Settings::Csv(ref c)) if c.delimiter == ';' && c.header));
    }
}
