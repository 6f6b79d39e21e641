//! `quire config check`: the effective configuration, one `key = value  # origin` line per
//! setting, with secrets redacted.

use figment::value::Value;

use super::credential::MASK;
use super::redact::{hide_url_credentials, redact_server, redact_url};
use super::source::{SECRET_KEYS, describe};
use super::{Config, Loaded};

/// Secrets that are URLs: shown with every credential in them hidden, so the operator still sees
/// where they point. Every other secret is hidden whole.
const URL_SECRETS: &[&str] = &["database.url", "database.migrate_url", "mail.smtp_url"];
/// The secret that is a list of NATS servers, each a URL or `[user@]host:port`.
const SERVER_LIST_SECRET: &str = "nats.url";

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
        _ if SECRET_KEYS.contains(&key.as_str()) => redact(&key, value),
        _ => serde_json::to_string(&scrub(value)).unwrap_or_default(),
    };
    let segs: Vec<&str> = path.iter().map(String::as_str).collect();
    let origin = match loaded.figment.find_metadata(&key) {
        Some(md) => describe(Some(md), &segs),
        None => "default".to_owned(),
    };
    lines.push(format!("{key} = {shown}  # {origin}"));
}

/// A secret as shown: URLs keep their shape with every credential hidden, a server list shows
/// each server that way; other secrets are hidden whole.
fn redact(key: &str, value: &Value) -> String {
    match value {
        Value::String(_, s) if key == SERVER_LIST_SECRET => quoted(&redact_server(s)),
        Value::String(_, s) if URL_SECRETS.contains(&key) => quoted(&redact_url(s)),
        Value::Array(_, items) => format!(
            "[{}]",
            items
                .iter()
                .map(|item| redact(key, item))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => quoted(MASK),
    }
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// A setting that is not a secret may still carry one, such as a route URL with a user and
/// password: its credentials are hidden too, wherever it sits in lists and tables.
fn scrub(value: &Value) -> Value {
    match value {
        Value::String(tag, s) => match hide_url_credentials(s) {
            Some(hidden) => Value::String(*tag, hidden),
            None => value.clone(),
        },
        Value::Array(tag, items) => Value::Array(*tag, items.iter().map(scrub).collect()),
        Value::Dict(tag, dict) => Value::Dict(
            *tag,
            dict.iter().map(|(k, v)| (k.clone(), scrub(v))).collect(),
        ),
        _ => value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load;
    use crate::config::test_env as env;

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
                "database.url = \"postgres://***:***@db:5432/quire\"  # env QUIRE_DATABASE__URL"
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

    /// Every secret setting the README lists, with a marker in each credential position it can
    /// have; the token and the user/password forms of NATS auth exclude each other, hence two.
    #[test]
    fn no_credential_of_any_secret_setting_is_shown() {
        let with_token = env(&[
            (
                "QUIRE_DATABASE__URL",
                "postgres://Sekr1tDbUser:Sekr1tDbPass@db:5432/q?sslmode=require&password=Sekr1tDbQuery&sslpassword=Sekr1tDbSsl",
            ),
            (
                "QUIRE_DATABASE__MIGRATE_URL",
                "Host=db;Username=Sekr1tMigUser;Password='Sekr1tMig;Pass'",
            ),
            ("QUIRE_ROOT_USER__EMAIL", "root@example.com"),
            ("QUIRE_ROOT_USER__PASSWORD", "Sekr1tRootPassword"),
            ("QUIRE_ENCRYPTION__KEY", "Sekr1tEncKey-0123456789abcdefghi"),
            ("QUIRE_ENCRYPTION__VECTOR", "Sekr1tVector-123"),
            (
                "QUIRE_MAIL__SMTP_URL",
                "smtp://Sekr1tSmtpUser:Sekr1tSmtpPass@mail.example.com:587?tls=starttls",
            ),
            ("QUIRE_LICENSE__KEY", "Sekr1tLicense"),
            (
                "QUIRE_NATS__URL",
                "nats://Sekr1tNatsToken@nats1:4222, Sekr1tNatsUser:Sekr1tNatsPass@nats2:4222",
            ),
            ("QUIRE_NATS_SERVER__AUTH__TOKEN", "Sekr1tServerToken"),
        ]);
        let out = report(&load(None, &with_token).unwrap());
        assert!(!out.contains("Sekr1t"), "{out}");
        for line in [
            "database.url = \"postgres://***:***@db:5432/q?sslmode=require&password=***&sslpassword=***\"",
            "database.migrate_url = \"postgres://***:***@db\"",
            "root_user.password = \"***\"",
            "encryption.key = \"***\"",
            "encryption.vector = \"***\"",
            "mail.smtp_url = \"smtp://***:***@mail.example.com:587?tls=starttls\"",
            "license.key = \"***\"",
            "nats.url = [\"nats://***@nats1:4222\", \"***@nats2:4222\"]",
            "nats_server.auth.token = \"***\"",
        ] {
            assert!(out.contains(line), "{line}\n{out}");
        }

        let with_user = env(&[
            (
                "QUIRE_DATABASE__URL",
                "Host=db;Port=5432;Database=q;Username=Sekr1tConnUser;Password=Sekr1tConnPass",
            ),
            (
                "QUIRE_DATABASE__MIGRATE_URL",
                "postgres://db/q?user=Sekr1tQueryUser&password=Sekr1tQueryPass",
            ),
            (
                "QUIRE_MAIL__SMTP_URL",
                "smtp://Sekr1tSmtpApiKey@mail.example.com",
            ),
            (
                "QUIRE_NATS__URL",
                "nats://Sekr1tNatsUser:Sekr1tNatsPass@nats1:4222",
            ),
            ("QUIRE_NATS_SERVER__AUTH__USER", "app"),
            ("QUIRE_NATS_SERVER__AUTH__PASSWORD", "Sekr1tServerPass"),
        ]);
        let out = report(&load(None, &with_user).unwrap());
        assert!(!out.contains("Sekr1t"), "{out}");
        for line in [
            "database.url = \"postgres://***:***@db:5432/q\"",
            "database.migrate_url = \"postgres://db/q?user=***&password=***\"",
            "mail.smtp_url = \"smtp://***@mail.example.com\"",
            "nats.url = [\"nats://***:***@nats1:4222\"]",
            "nats_server.auth.password = \"***\"",
        ] {
            assert!(out.contains(line), "{line}\n{out}");
        }
    }

    /// A route URL is not a secret setting, but a user and password in it still are secrets.
    #[test]
    fn credentials_in_other_settings_are_hidden_too() {
        let out = report(
            &load(
                None,
                &env(&[(
                    "QUIRE_NATS_SERVER__ROUTES",
                    "nats-route://Sekr1tRouteUser:Sekr1tRoutePass@10.0.0.2:6222",
                )]),
            )
            .unwrap(),
        );
        assert!(!out.contains("Sekr1t"), "{out}");
        assert!(out.contains("nats-route://***:***@10.0.0.2:6222"), "{out}");
    }

    #[test]
    fn a_broken_connection_string_error_shows_no_piece_of_the_password() {
        let err = load(
            None,
            &env(&[(
                "ConnectionStrings__Database",
                "Host=db;Username=u;Password=ab;Sekr1tRest",
            )]),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(!err.contains("Sekr1t"), "{err}");
        assert!(err.contains("the part after Password"), "{err}");
    }
}
