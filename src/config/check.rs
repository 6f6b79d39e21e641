//! `quire config check`: the effective configuration, one `key = value  # origin` line per
//! setting, with secrets redacted.

use figment::value::Value;

use super::source::{SECRET_KEYS, describe};
use super::{Config, Loaded};

/// Renders the effective configuration for people to read.
pub fn report(loaded: &Loaded) -> String {
    let mut lines = Vec::new();
    match &loaded.file {
        Some(f) => lines.push(format!("# config file: {}", f.display())),
        None => lines.push("# config file: none (defaults and environment only)".to_owned()),
    }
    let effective = effective(&loaded.config);
    if let Ok(value) = Value::serialize(&effective) {
        walk(&value, &mut Vec::new(), loaded, &mut lines);
    }
    for w in &loaded.warnings {
        lines.push(format!("# warning: {w}"));
    }
    lines.join("\n")
}

/// The config with derived defaults filled in, so the report shows what will be used.
fn effective(config: &Config) -> Config {
    let mut c = config.clone();
    c.database.url = Some(config.database_url());
    c.fonts.dir = Some(config.fonts_dir());
    c.render.workers = Some(config.render.workers());
    c.database.max_connections = Some(config.database.max_connections());
    c.database.connect_timeout = Some(config.database.connect_timeout());
    c
}

fn walk(value: &Value, path: &mut Vec<String>, loaded: &Loaded, lines: &mut Vec<String>) {
    if let Value::Dict(_, dict) = value {
        for (k, v) in dict {
            path.push(k.clone());
            walk(v, path, loaded, lines);
            path.pop();
        }
        return;
    }
    let key = path.join(".");
    let shown = match value {
        Value::Empty(..) => "(not set)".to_owned(),
        _ if SECRET_KEYS.contains(&key.as_str()) => redact(value),
        _ => serde_json::to_string(value).unwrap_or_default(),
    };
    let segs: Vec<&str> = path.iter().map(String::as_str).collect();
    let origin = match loaded.figment.find_metadata(&key) {
        Some(md) => describe(Some(md), &segs),
        None => "default".to_owned(),
    };
    lines.push(format!("{key} = {shown}  # {origin}"));
}

/// URLs keep their shape with the password hidden; other secrets are hidden whole.
fn redact(value: &Value) -> String {
    match value {
        Value::String(_, s) if s.contains("://") => format!("{:?}", redact_url(s)),
        Value::Array(_, items) => format!(
            "[{}]",
            items.iter().map(redact).collect::<Vec<_>>().join(", ")
        ),
        _ => "\"***\"".to_owned(),
    }
}

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`.
pub fn redact_url(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "***".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load;

    #[test]
    fn report_redacts_secrets_and_names_origins() {
        let env: Vec<(String, String)> = [
            (
                "QUIRE_DATABASE__URL",
                "postgres://quire:topsecret@db:5432/quire",
            ),
            ("RootUser__Email", "root@example.com"),
            ("RootUser__Password", "correct horse battery"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let out = report(&load(None, &env).unwrap());
        assert!(!out.contains("topsecret"), "{out}");
        assert!(!out.contains("correct horse"), "{out}");
        assert!(
            out.contains(
                "database.url = \"postgres://quire:***@db:5432/quire\"  # env QUIRE_DATABASE__URL"
            ),
            "{out}"
        );
        assert!(
            out.contains("root_user.password = \"***\"  # env RootUser__Password (alias)"),
            "{out}"
        );
        assert!(
            out.contains("http.listen = \"127.0.0.1:8080\"  # default"),
            "{out}"
        );
    }
}
