//! The settings of each kind of data source: which are secret, what is valid, and how they are
//! shown. Settings travel as a JSON object; the secret ones are split off to be sealed, and are
//! never shown again: a view says `"set"` instead (a URL shows with its credentials masked).
//! Sending `"set"` back keeps the stored secret, so a form can round-trip a view.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::DataSourceError;
use super::model::DataSourceKind;
use crate::config::Span;

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
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout: Span,
}

fn default_pool_size() -> u32 {
    4
}

fn default_statement_timeout() -> Span {
    Span::secs(30)
}

/// A SQLite file on the server, opened read-only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteSettings {
    pub path: String,
}

/// A kind's settings, checked.
#[derive(Debug, Clone)]
pub enum Settings {
    Postgres(ServerSettings),
    Mysql(ServerSettings),
    Sqlite(SqliteSettings),
}

/// The secret settings of a kind.
pub fn secret_keys(kind: DataSourceKind) -> &'static [&'static str] {
    match kind {
        DataSourceKind::Postgres | DataSourceKind::Mysql => &["url", "password"],
        DataSourceKind::Sqlite => &[],
    }
}

/// Settings as a JSON object.
pub type Object = Map<String, Value>;

/// Splits `settings` into what may be shown and what must be sealed, taking a secret given as
/// [`SET`] from `stored` (the secrets saved before).
pub fn split(
    kind: DataSourceKind,
    mut settings: Object,
    stored: &Object,
) -> Result<(Object, Object), DataSourceError> {
    let mut secrets = Map::new();
    for key in secret_keys(kind) {
        let Some(value) = settings.remove(*key) else {
            continue;
        };
        let value = match value {
            Value::String(s) if s == SET => stored.get(*key).cloned().ok_or_else(|| {
                invalid(
                    key,
                    format!("\"{SET}\" keeps a stored {key}, but none is stored"),
                )
            })?,
            Value::Null => continue,
            other => other,
        };
        secrets.insert((*key).to_owned(), value);
    }
    Ok((settings, secrets))
}

/// Checks a kind's settings (shown and secret together), naming the field at fault.
pub fn check(
    kind: DataSourceKind,
    shown: &Map<String, Value>,
    secrets: &Map<String, Value>,
) -> Result<Settings, DataSourceError> {
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
    }
}

fn check_server(s: &ServerSettings, schemes: &[&str]) -> Result<(), DataSourceError> {
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
    if s.statement_timeout > Span::secs(3600) || s.statement_timeout == Span::secs(0) {
        return Err(invalid("statement_timeout", "more than 0s, at most 1h"));
    }
    Ok(())
}

fn typed<T: DeserializeOwned>(value: Value) -> Result<T, DataSourceError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        DataSourceError::Invalid {
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

fn invalid(field: &str, message: impl Into<String>) -> DataSourceError {
    DataSourceError::Invalid {
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
            matches!(none_stored, Err(DataSourceError::Invalid { ref field, .. }) if field == "settings.password")
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
            Err(DataSourceError::Invalid { field, .. }) => field,
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
}
