//! Where settings come from: the TOML file, `QUIRE_*` variables (with `*_FILE` secrets), and the
//! reference products' variable names accepted as aliases. Each environment variable becomes its
//! own figment provider so every value remembers exactly which variable set it, and a value from
//! the file is traced back to its line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

/// Keys whose values are secrets: they may be read from a file (`QUIRE_…_FILE`) and are redacted
/// by `config check`.
pub const SECRET_KEYS: &[&str] = &[
    "database.url",
    "database.migrate_url",
    "root_user.password",
    "encryption.key",
    "encryption.vector",
    "mail.smtp_url",
    "license.key",
    "nats.url",
    "nats_server.auth.token",
    "nats_server.auth.password",
];

/// The prefix of Quire's own environment variables.
pub const ENV_PREFIX: &str = "QUIRE_";

/// Variables read for their own meaning, not as settings.
const NOT_SETTINGS: &[&str] = &["QUIRE_CONFIG", "QUIRE_LOG"];

/// One setting from one environment variable (or the file it names).
pub struct Setting {
    /// Human-readable origin, e.g. `env QUIRE_HTTP__LISTEN`.
    pub origin: String,
    /// Dotted key path, e.g. `http.listen`.
    pub key: String,
    pub value: Value,
}

impl Provider for Setting {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.origin.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut parts: Vec<&str> = self.key.split('.').collect();
        let last = parts.pop().unwrap_or_default();
        let mut dict = Dict::new();
        dict.insert(last.to_owned(), self.value.clone());
        for part in parts.into_iter().rev() {
            let mut outer = Dict::new();
            outer.insert(part.to_owned(), Value::from(dict));
            dict = outer;
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Problems found while reading the environment (an unreadable `*_FILE`).
#[derive(Debug, thiserror::Error)]
#[error("{var}: cannot read {path}: {source}")]
pub struct EnvFileError {
    pub var: String,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Settings from the reference products' variable names, in a fixed order.
pub fn alias_settings(env: &[(String, String)]) -> Vec<Setting> {
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
    let mut out = Vec::new();
    for (alias, key) in ALIASES {
        if let Some((var, value)) = env.iter().find(|(k, _)| k.eq_ignore_ascii_case(alias)) {
            out.push(Setting {
                origin: format!("env {var} (alias)"),
                key: (*key).to_owned(),
                value: Value::from(value.clone()),
            });
        }
    }
    if let Some(proxies) = known_networks(env) {
        out.push(proxies);
    }
    out
}

/// `ForwardedHeaders__KnownNetworks__N` and `…__KnownProxies__N`, collected in index order into
/// one `http.trusted_proxies` list.
fn known_networks(env: &[(String, String)]) -> Option<Setting> {
    let mut found: BTreeMap<(u8, u32), (&str, &str)> = BTreeMap::new();
    for (var, value) in env {
        let lower = var.to_ascii_lowercase();
        for (group, prefix) in [
            (0u8, "forwardedheaders__knownnetworks__"),
            (1, "forwardedheaders__knownproxies__"),
        ] {
            if let Some(idx) = lower
                .strip_prefix(prefix)
                .and_then(|i| i.parse::<u32>().ok())
            {
                found.insert((group, idx), (var, value));
            }
        }
    }
    if found.is_empty() {
        return None;
    }
    let vars: Vec<&str> = found.values().map(|(v, _)| *v).collect();
    let values: Vec<Value> = found
        .values()
        .map(|(_, v)| Value::from(v.to_string()))
        .collect();
    Some(Setting {
        origin: format!("env {} (alias)", vars.join(", ")),
        key: "http.trusted_proxies".to_owned(),
        value: Value::from(values),
    })
}

/// Settings from `QUIRE_*` variables: `QUIRE_HTTP__LISTEN` -> `http.listen`. A secret key can
/// instead be given as `QUIRE_DATABASE__URL_FILE=/run/secrets/db`.
pub fn quire_settings(env: &[(String, String)]) -> Result<Vec<Setting>, EnvFileError> {
    let mut out = Vec::new();
    for (var, value) in env {
        let upper = var.to_ascii_uppercase();
        let Some(rest) = upper.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if NOT_SETTINGS.contains(&upper.as_str()) || rest.is_empty() {
            continue;
        }
        let key = rest.to_ascii_lowercase().replace("__", ".");
        if let Some(secret_key) = key
            .strip_suffix("_file")
            .filter(|k| SECRET_KEYS.contains(k))
        {
            let path = PathBuf::from(value);
            let text = std::fs::read_to_string(&path).map_err(|source| EnvFileError {
                var: var.clone(),
                path: path.clone(),
                source,
            })?;
            out.push(Setting {
                origin: format!("file {} (env {var})", path.display()),
                key: secret_key.to_owned(),
                value: Value::from(text.trim_end_matches(['\r', '\n']).to_owned()),
            });
        } else {
            out.push(Setting {
                origin: format!("env {var}"),
                key,
                value: Value::from(value.clone()),
            });
        }
    }
    Ok(out)
}

/// Where a value came from, for messages: `/etc/quire/quire.toml:12`, `env QUIRE_HTTP__LISTEN`,
/// or `default`.
pub fn describe(metadata: Option<&Metadata>, key_path: &[&str]) -> String {
    let Some(md) = metadata else {
        return "default".to_owned();
    };
    match &md.source {
        Some(figment::Source::File(path)) => match line_of(path, key_path) {
            Some(line) => format!("{}:{line}", path.display()),
            None => path.display().to_string(),
        },
        _ => md.name.to_string(),
    }
}

/// The 1-based line in a TOML file where `key_path` is set, found by re-parsing the file with
/// spans; the closest enclosing key's line when the exact one has none.
pub fn line_of(path: &Path, key_path: &[&str]) -> Option<usize> {
    let text = std::fs::read_to_string(path).ok()?;
    let doc = toml_edit::Document::parse(text.as_str()).ok()?;
    let mut item = doc.as_item();
    let mut best = None;
    for seg in key_path {
        let next = match seg.parse::<usize>() {
            Ok(i) => item.get(i),
            Err(_) => item.get(*seg),
        };
        let Some(next) = next else { break };
        if let Some(span) = next.span() {
            best = Some(span.start);
        } else if let Some(table) = next.as_table() {
            best = table.span().map(|s| s.start).or(best);
        }
        item = next;
    }
    best.map(|offset| text[..offset].matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_env as env;

    #[test]
    fn quire_vars_map_to_dotted_keys() {
        let s = quire_settings(&env(&[
            ("QUIRE_HTTP__LISTEN", "0.0.0.0:9000"),
            ("QUIRE_DATA_DIR", "/srv"),
            ("QUIRE_CONFIG", "/etc/x.toml"),
            ("HOME", "/root"),
        ]))
        .unwrap();
        let keys: Vec<_> = s
            .iter()
            .map(|s| (s.key.as_str(), s.origin.as_str()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("http.listen", "env QUIRE_HTTP__LISTEN"),
                ("data_dir", "env QUIRE_DATA_DIR")
            ]
        );
    }

    #[test]
    fn file_variants_apply_only_to_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("db");
        std::fs::write(&f, "postgres://u:p@h/db\n").unwrap();
        let s = quire_settings(&env(&[
            ("QUIRE_DATABASE__URL_FILE", f.to_str().unwrap()),
            ("QUIRE_LB__TLS__CERT_FILE", "/etc/cert.pem"),
        ]))
        .unwrap();
        assert_eq!(s[0].key, "database.url");
        assert_eq!(s[0].value, Value::from("postgres://u:p@h/db".to_string()));
        assert_eq!(s[1].key, "lb.tls.cert_file");
        let err = quire_settings(&env(&[("QUIRE_LICENSE__KEY_FILE", "/nonexistent/x")]))
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("QUIRE_LICENSE__KEY_FILE: cannot read /nonexistent/x")
        );
    }

    #[test]
    fn aliases_are_case_insensitive_and_collect_networks() {
        let s = alias_settings(&env(&[
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

    #[test]
    fn finds_the_line_of_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("q.toml");
        std::fs::write(&f, "data_dir = \"x\"\n\n[http]\n# c\nlisten = \"bad\"\n").unwrap();
        assert_eq!(line_of(&f, &["http", "listen"]), Some(5));
        assert_eq!(line_of(&f, &["data_dir"]), Some(1));
    }
}
