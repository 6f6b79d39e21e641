//! The whole configuration file of the `quire` binary: the sections every mode owns, composed
//! here at the edge. Only the binary reads all of them; each mode is handed its own section, so
//! no mode (and not the config mechanism) depends on another mode.

use std::path::Path;

use crate::agent::AgentConfig;
use crate::app::config::AppConfig;
use crate::config::{self, ConfigError, EachSection, Layout, Loaded, Problems};
use crate::lb::LbConfig;
use crate::nats::NatsServerConfig;
use crate::telemetry::LogConfig;

/// Every section of quire.toml, each read from its own key.
#[derive(Debug, Clone, Default)]
pub(crate) struct Config {
    /// The top-level keys: `quire app`, `quire migrate` and `quire render`; `data_dir` and
    /// `instance_name` also serve the other modes.
    pub app: AppConfig,
    /// `[log]`, for every mode.
    pub log: LogConfig,
    /// `[nats_server]`, for `quire nats`.
    pub nats_server: NatsServerConfig,
    /// `[lb]`, for `quire lb`.
    pub lb: LbConfig,
    /// `[agent]`, for `quire agent`.
    pub agent: AgentConfig,
}

impl Layout for Config {
    fn sections(&mut self, each: &mut impl EachSection) {
        each.section(&mut self.app);
        each.section(&mut self.log);
        each.section(&mut self.nats_server);
        each.section(&mut self.lb);
        each.section(&mut self.agent);
    }

    fn validate_across(&self, problems: &mut Problems<'_>) {
        let (pool_idle, keep_alive) =
            (self.lb.timeouts.pool_idle, self.app.http.keep_alive_timeout);
        if pool_idle >= keep_alive {
            problems.add(
                "lb.timeouts.pool_idle",
                format!(
                    "{pool_idle} must be shorter than http.keep_alive_timeout ({keep_alive}), or the app may close a connection just as the lb reuses it"
                ),
            );
        }
    }
}

/// Loads the whole file. `config_file` is the `--config` flag; `env` the process environment.
pub(crate) fn load(
    config_file: Option<&Path>,
    env: &[(String, String)],
) -> Result<Loaded<Config>, ConfigError> {
    config::load(config_file, env)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::report;
    use crate::config::test_env as env;

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let p = dir.path().join("quire.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn errors_name_key_origin_and_what_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(&dir, "[http]\nlisten = \"nowhere\"\n");
        let err = load(Some(&f), &[]).err().unwrap().to_string();
        assert!(err.contains("http.listen"), "{err}");
        assert!(err.contains(&format!("{}:2", f.display())), "{err}");

        let err = load(None, &env(&[("QUIRE_LOG__FORMAT", "xml")]))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("log.format (from env QUIRE_LOG__FORMAT)"),
            "{err}"
        );
        assert!(err.contains("`text` or `json`"), "{err}");

        let err = load(None, &env(&[("Encryption__Key", "short")]))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(
                "encryption.key (from env Encryption__Key (alias)): must be exactly 32 characters"
            ),
            "{err}"
        );
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let err = load(Some(Path::new("/nonexistent/quire.toml")), &[])
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("/nonexistent/quire.toml (given by --config) does not exist")
        );
        let err = load(None, &env(&[("QUIRE_CONFIG", "/nonexistent/q.toml")]))
            .err()
            .unwrap();
        assert!(err.to_string().contains("given by QUIRE_CONFIG"));
    }

    #[test]
    fn unknown_keys_are_reported_with_origin() {
        let l = load(None, &env(&[("QUIRE_HTPP__LISTEN", "x")])).unwrap();
        assert_eq!(
            l.warnings,
            vec!["unknown setting htpp.listen (from env QUIRE_HTPP__LISTEN) is ignored"]
        );
    }

    #[test]
    fn lb_pool_idle_must_be_shorter_than_the_app_keep_alive() {
        let err = load(None, &env(&[("QUIRE_LB__TIMEOUTS__POOL_IDLE", "80s")]))
            .err()
            .unwrap()
            .to_string();
        let expected = "lb.timeouts.pool_idle (from env QUIRE_LB__TIMEOUTS__POOL_IDLE): 80s must be shorter than http.keep_alive_timeout (75s)";
        assert!(err.contains(expected), "missing {expected:?} in {err}");
    }

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
        let license_key =
            crate::license::signing::test_key(&crate::license::signing::test_claims());
        let signature = license_key.rsplit('.').next().unwrap();
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
            ("QUIRE_LICENSE__KEY", license_key.as_str()),
            (
                "QUIRE_NATS__URL",
                "nats://Sekr1tNatsToken@nats1:4222, Sekr1tNatsUser:Sekr1tNatsPass@nats2:4222",
            ),
            ("QUIRE_NATS_SERVER__AUTH__TOKEN", "Sekr1tServerToken"),
            ("QUIRE_AGENT__TOKEN", "Sekr1tAgentToken"),
        ]);
        let out = report(&load(None, &with_token).unwrap());
        assert!(!out.contains("Sekr1t"), "{out}");
        assert!(!out.contains(signature), "{out}");
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
            "agent.token = \"***\"",
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
