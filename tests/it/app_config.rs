//! Configuration as an operator meets it: `quire config check`, precedence, aliases, and the
//! errors that stop the process.

use crate::support::app::quire_command;

fn check(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = quire_command(args);
    cmd.current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run quire");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn file_env_and_aliases_stack_with_origins() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("quire.toml");
    std::fs::write(
        &file,
        "data_dir = \"/srv/quire\"\n[http]\nlisten = \"0.0.0.0:9000\"\n[root_user]\nemail = \"file@x.io\"\npassword = \"from-the-file\"\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (code, out, err) = check(
        dir.path(),
        &["config", "check", "--config", f],
        &[
            ("RootUser__Email", "alias@x.io"),
            ("QUIRE_HTTP__LISTEN", "127.0.0.1:7000"),
            (
                "ConnectionStrings__Database",
                "Host=db;Port=5432;Database=q;Username=u;Password=s3cret;SSL Mode=Require",
            ),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("data_dir = \"/srv/quire\"  # {f}:1")),
        "{out}"
    );
    assert!(
        out.contains("http.listen = \"127.0.0.1:7000\"  # env QUIRE_HTTP__LISTEN"),
        "{out}"
    );
    assert!(
        out.contains("root_user.email = \"alias@x.io\"  # env RootUser__Email (alias)"),
        "{out}"
    );
    assert!(
        out.contains(&format!("root_user.password = \"***\"  # {f}:6")),
        "{out}"
    );
    assert!(
        out.contains("database.url = \"postgres://***:***@db:5432/q?sslmode=require\"  # env ConnectionStrings__Database (alias)"),
        "{out}"
    );
    assert!(
        !out.contains("s3cret") && !out.contains("from-the-file"),
        "secrets leaked: {out}"
    );
}

#[test]
fn bad_values_stop_with_key_origin_and_remedy() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("quire.toml");
    std::fs::write(&file, "[render]\ntimeout = \"soon\"\n").unwrap();
    let (code, _, err) = check(
        dir.path(),
        &["config", "check", "--config", file.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains(&format!("render.timeout (from {}:2)", file.display())),
        "{err}"
    );
    assert!(err.contains("expected a duration like \"30s\""), "{err}");

    let (code, _, err) = check(dir.path(), &["app"], &[("QUIRE_HTTP__LISTEN", "localhost")]);
    assert_eq!(code, 78);
    assert!(
        err.contains("http.listen (from env QUIRE_HTTP__LISTEN)"),
        "{err}"
    );

    let (code, _, err) = check(dir.path(), &["app"], &[("QUIRE_HA__ENABLED", "true")]);
    assert_eq!(code, 78);
    assert!(
        err.contains("HA mode needs a shared PostgreSQL database"),
        "{err}"
    );
}

#[test]
fn a_missing_config_file_is_an_error_not_a_silent_default() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = check(
        dir.path(),
        &["config", "check", "--config", "/nonexistent/quire.toml"],
        &[],
    );
    assert_eq!(code, 78);
    assert!(
        err.contains("/nonexistent/quire.toml (given by --config) does not exist"),
        "{err}"
    );
}

#[test]
fn secrets_can_come_from_files_and_typos_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("pw");
    std::fs::write(&secret, "file-secret-pw\n").unwrap();
    let (code, out, _) = check(
        dir.path(),
        &["config", "check"],
        &[
            ("QUIRE_ROOT_USER__EMAIL", "a@b.c"),
            ("QUIRE_ROOT_USER__PASSWORD_FILE", secret.to_str().unwrap()),
            ("QUIRE_RENDR__TIMEOUT", "5s"),
        ],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!(
            "root_user.password = \"***\"  # file {} (env QUIRE_ROOT_USER__PASSWORD_FILE)",
            secret.display()
        )),
        "{out}"
    );
    assert!(
        out.contains(
            "# warning: unknown setting rendr.timeout (from env QUIRE_RENDR__TIMEOUT) is ignored"
        ),
        "{out}"
    );
}

/// Every secret setting the README lists, set through its variable or its `_FILE` file (and an
/// alias), each with `Sekr1t` in every credential position it can have: none may be printed.
/// NATS auth takes a token or a user and password, not both, hence two runs.
#[test]
fn config_check_prints_no_credential_of_any_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{text}\n")).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let db_url = file(
        "f1",
        "postgres://Sekr1tDbUser:Sekr1tDbPass@db:5432/q?sslmode=require&password=Sekr1tDbQuery&sslpassword=Sekr1tDbSsl",
    );
    let enc_key = file("f2", "Sekr1tEncKey-0123456789abcdefghi");
    let server_token = file("f3", "Sekr1tServerToken");
    let license_key = crate::support::license::key("L-config", 1, 1);
    let run_with_token = [
        ("QUIRE_DATABASE__URL_FILE", db_url.as_str()),
        (
            "QUIRE_DATABASE__MIGRATE_URL",
            "Host=db;Username=Sekr1tMigUser;Password='Sekr1tMig;Pass'",
        ),
        ("RootUser__Email", "root@example.com"),
        ("RootUser__Password", "Sekr1tRootPassword"),
        ("QUIRE_ENCRYPTION__KEY_FILE", enc_key.as_str()),
        ("Encryption__Vector", "Sekr1tVector-123"),
        (
            "QUIRE_MAIL__SMTP_URL",
            "smtp://Sekr1tSmtpUser:Sekr1tSmtpPass@mail.example.com:587?tls=starttls",
        ),
        ("LicenseConfiguration__Key", license_key.as_str()),
        (
            "Nats__Url",
            "nats://Sekr1tNatsToken@nats1:4222,Sekr1tNatsUser:Sekr1tNatsPass@nats2:4222",
        ),
        ("QUIRE_NATS_SERVER__AUTH__TOKEN_FILE", server_token.as_str()),
    ];
    let (code, out, err) = check(dir.path(), &["config", "check"], &run_with_token);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("Sekr1t") && !err.contains("Sekr1t"),
        "{out}\n{err}"
    );
    let signature = license_key.rsplit('.').next().unwrap();
    assert!(
        !out.contains(signature) && !err.contains(signature),
        "the licence key leaked: {out}\n{err}"
    );
    for line in [
        "database.url = \"postgres://***:***@db:5432/q?sslmode=require&password=***&sslpassword=***\"  # file ",
        "database.migrate_url = \"postgres://***:***@db\"  # env QUIRE_DATABASE__MIGRATE_URL",
        "root_user.password = \"***\"  # env RootUser__Password (alias)",
        "encryption.key = \"***\"  # file ",
        "encryption.vector = \"***\"  # env Encryption__Vector (alias)",
        "mail.smtp_url = \"smtp://***:***@mail.example.com:587?tls=starttls\"  # env QUIRE_MAIL__SMTP_URL",
        "license.key = \"***\"  # env LicenseConfiguration__Key (alias)",
        "nats.url = [\"nats://***@nats1:4222\", \"***@nats2:4222\"]  # env Nats__Url (alias)",
        "nats_server.auth.token = \"***\"  # file ",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }

    let smtp_url = file("f4", "smtp://Sekr1tSmtpApiKey@mail.example.com");
    let server_password = file("f5", "Sekr1tServerPass");
    let run_with_user = [
        (
            "ConnectionStrings__Database",
            "Host=db;Port=5432;Database=q;Username=Sekr1tConnUser;Password=Sekr1tConnPass",
        ),
        (
            "QUIRE_DATABASE__MIGRATE_URL",
            "postgres://db/q?user=Sekr1tQueryUser&password=Sekr1tQueryPass",
        ),
        ("QUIRE_MAIL__SMTP_URL_FILE", smtp_url.as_str()),
        (
            "QUIRE_NATS__URL",
            "nats://Sekr1tNatsUser:Sekr1tNatsPass@nats1:4222",
        ),
        ("QUIRE_NATS_SERVER__AUTH__USER", "app"),
        (
            "QUIRE_NATS_SERVER__AUTH__PASSWORD_FILE",
            server_password.as_str(),
        ),
    ];
    let (code, out, err) = check(dir.path(), &["config", "check"], &run_with_user);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("Sekr1t") && !err.contains("Sekr1t"),
        "{out}\n{err}"
    );
    for line in [
        "database.url = \"postgres://***:***@db:5432/q\"  # env ConnectionStrings__Database (alias)",
        "database.migrate_url = \"postgres://db/q?user=***&password=***\"",
        "mail.smtp_url = \"smtp://***@mail.example.com\"  # file ",
        "nats.url = [\"nats://***:***@nats1:4222\"]",
        "nats_server.auth.password = \"***\"  # file ",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }
}

#[test]
fn version_prints_versions() {
    let out = quire_command(&["version"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.starts_with(&format!("quire {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains("typst 0.15"), "{text}");
}

/// The packaged config documents settings as comments (`# key = value`, `# [section]`); with
/// them all switched on (except empty placeholders for secrets) every key must be known and every
/// example value valid, so the documentation cannot drift from the code.
#[test]
fn every_example_setting_in_the_packaged_config_is_known_and_valid() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/quire.toml"))
            .unwrap();
    let mut switched_on = 0;
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.contains("= \"\""))
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if is_setting_or_section(rest) => {
                switched_on += 1;
                rest.to_owned()
            }
            _ => l.to_owned(),
        })
        .collect();
    assert!(switched_on > 80, "only {switched_on} examples found");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("all.toml");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let (code, out, err) = check(
        dir.path(),
        &["config", "check", "--config", file.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("# warning"), "{out}");
}

fn is_setting_or_section(line: &str) -> bool {
    let key = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    match line.split_once(" = ") {
        Some((k, _)) => key(k),
        None => line
            .split_whitespace()
            .next()
            // `[section]`, or `[[array.of.tables]]`.
            .and_then(|w| w.strip_prefix('[')?.strip_suffix(']'))
            .map(|w| {
                w.strip_prefix('[')
                    .and_then(|w| w.strip_suffix(']'))
                    .unwrap_or(w)
            })
            .is_some_and(|s| s.split('.').all(key)),
    }
}

#[test]
fn the_packaged_default_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/quire.toml");
    let (code, out, err) = check(dir.path(), &["config", "check", "--config", file], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("data_dir = \"/var/lib/quire\""), "{out}");
    assert!(!out.contains("# warning"), "{out}");
}
