//! Where settings come from: the TOML file, `QUIRE_*` variables (with `*_FILE` secrets), and
//! other products' variable names accepted as aliases (each section names its own). Each
//! environment variable becomes its own figment provider so every value remembers exactly which
//! variable set it, and a value from the file is traced back to its line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::value::{Dict, Map, Value};
use figment::{Error, Figment, Metadata, Profile, Provider};

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

/// Settings from another product's names for the same settings (`RootUser__Email` for
/// `root_user.email`), in the order of `aliases`: `(variable, key)`, variables compared without
/// case.
pub fn alias_settings(env: &[(String, String)], aliases: &[(&str, &str)]) -> Vec<Setting> {
    let mut out = Vec::new();
    for (alias, key) in aliases {
        if let Some((var, value)) = env.iter().find(|(k, _)| k.eq_ignore_ascii_case(alias)) {
            out.push(Setting {
                origin: format!("env {var} (alias)"),
                key: (*key).to_owned(),
                value: Value::from(value.clone()),
            });
        }
    }
    out
}

/// One list setting from numbered variables (`…__0`, `…__1`) under any of `prefixes` (compared
/// without case), collected in prefix then index order; `None` when no such variable is set.
pub fn numbered_alias(env: &[(String, String)], prefixes: &[&str], key: &str) -> Option<Setting> {
    let mut found: BTreeMap<(usize, u32), (&str, &str)> = BTreeMap::new();
    for (var, value) in env {
        let lower = var.to_ascii_lowercase();
        for (group, prefix) in prefixes.iter().enumerate() {
            if let Some(idx) = lower
                .strip_prefix(&prefix.to_ascii_lowercase())
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
        key: key.to_owned(),
        value: Value::from(values),
    })
}

/// Settings from `QUIRE_*` variables: `QUIRE_HTTP__LISTEN` -> `http.listen`. A key listed in
/// `secrets` can instead be given as `QUIRE_DATABASE__URL_FILE=/run/secrets/db`.
pub fn quire_settings(
    env: &[(String, String)],
    secrets: &[String],
) -> Result<Vec<Setting>, EnvFileError> {
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
            .filter(|k| secrets.iter().any(|s| s == k))
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

/// Whether a `QUIRE_*` variable set `key`: such an explicit setting wins over what a platform
/// dictates.
pub fn set_by_quire_env(figment: &Figment, key: &str) -> bool {
    figment
        .find_metadata(key)
        .is_some_and(|m| m.name.starts_with("env QUIRE_"))
}

/// Where the value at `key` came from. A key inside a list item (`lb.upstreams.0.url`) has no
/// metadata of its own; the nearest enclosing key that has some answers.
pub fn origin(figment: &Figment, key: &str) -> String {
    let path: Vec<&str> = key.split('.').collect();
    let metadata = (1..=path.len())
        .rev()
        .find_map(|n| figment.find_metadata(&path[..n].join(".")));
    describe(metadata, &path)
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

/// An environment for tests, from literal pairs.
#[cfg(test)]
pub fn test_env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::test_env as env;
    use super::*;

    #[test]
    fn quire_vars_map_to_dotted_keys() {
        let s = quire_settings(
            &env(&[
                ("QUIRE_HTTP__LISTEN", "0.0.0.0:9000"),
                ("QUIRE_DATA_DIR", "/srv"),
                ("QUIRE_CONFIG", "/etc/x.toml"),
                ("HOME", "/root"),
            ]),
            &[],
        )
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
        let secrets = ["database.url".to_owned(), "license.key".to_owned()];
        let s = quire_settings(
            &env(&[
                ("QUIRE_DATABASE__URL_FILE", f.to_str().unwrap()),
                ("QUIRE_LB__TLS__CERT_FILE", "/etc/cert.pem"),
            ]),
            &secrets,
        )
        .unwrap();
        assert_eq!(s[0].key, "database.url");
        assert_eq!(s[0].value, Value::from("postgres://u:p@h/db".to_string()));
        assert_eq!(s[1].key, "lb.tls.cert_file");
        let err = quire_settings(
            &env(&[("QUIRE_LICENSE__KEY_FILE", "/nonexistent/x")]),
            &secrets,
        )
        .err()
        .unwrap();
        assert!(
            err.to_string()
                .starts_with("QUIRE_LICENSE__KEY_FILE: cannot read /nonexistent/x")
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
