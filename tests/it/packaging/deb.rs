//! The Debian package through its whole life: install, upgrade over local changes, remove,
//! purge. Data is never deleted; configuration only on purge.

use crate::support::packages::build_deb;
use crate::support::sandbox::Sandbox;

const CONFIG: &str = "/etc/quire/quire.toml";
const UNITS: &str = "/usr/lib/systemd/system";

#[test]
fn the_deb_installs_the_service_user_units_and_a_private_config() {
    let out = tempfile::tempdir().unwrap();
    let deb = build_deb("0.1.0-1", out.path());
    let sandbox = Sandbox::new();
    sandbox.ok(&format!("dpkg -i {}", deb.display()));

    let user = sandbox.ok("getent passwd quire");
    assert!(
        user.trim_end()
            .ends_with(":/var/lib/quire:/usr/sbin/nologin"),
        "a system user without a login shell: {user}"
    );
    assert_eq!(sandbox.stat("/usr/bin/quire"), "root:root 755");
    assert_eq!(
        sandbox.stat(CONFIG),
        "root:quire 640",
        "secrets stay private"
    );
    assert_eq!(sandbox.stat("/var/lib/quire"), "quire:quire 750");
    assert_eq!(sandbox.stat("/var/lib/quire/fonts"), "quire:quire 750");
    assert!(sandbox.exists("/usr/share/quire/fonts/DejaVuSans.ttf"));
    let conffiles = sandbox.ok("dpkg-query -W -f '${Conffiles}' quire");
    assert!(conffiles.contains(CONFIG), "{conffiles}");

    // Only the app is enabled (not started: the operator sets a root password first).
    let wants = "/etc/systemd/system/multi-user.target.wants";
    assert!(sandbox.exists(&format!("{wants}/quire.service")));
    assert!(!sandbox.exists(&format!("{wants}/quire-nats.service")));
    assert!(!sandbox.exists(&format!("{wants}/quire-lb.service")));
    assert!(!sandbox.exists(&format!("{wants}/quire-agent.service")));
    sandbox.ok(&format!(
        "systemd-analyze verify {UNITS}/quire.service {UNITS}/quire-nats.service {UNITS}/quire-lb.service {UNITS}/quire-agent.service"
    ));

    // The service user can read the packaged config, which is valid and puts data in /var/lib.
    let check = sandbox.ok("runuser -u quire -- quire config check");
    assert!(
        check.contains("data_dir = \"/var/lib/quire\"  # /etc/quire/quire.toml:"),
        "{check}"
    );
    sandbox.ok("runuser -u quire -- quire migrate");
    assert_eq!(
        sandbox.stat("/var/lib/quire/quire.db").split(' ').next(),
        Some("quire:quire")
    );
}

#[test]
fn upgrade_remove_and_purge_keep_data_and_local_config() {
    let out = tempfile::tempdir().unwrap();
    let first = build_deb("0.1.0-1", out.path());
    let second = build_deb("0.1.0-2", out.path());
    let sandbox = Sandbox::new();
    sandbox.ok(&format!("dpkg -i {}", first.display()));
    sandbox.ok("runuser -u quire -- quire migrate");
    sandbox.ok(&format!(
        "echo '# edited by the operator' >> {CONFIG} && \
         cp /usr/share/quire/fonts/DejaVuSans.ttf /var/lib/quire/fonts/Custom.ttf"
    ));
    let database = sandbox.ok("sha256sum /var/lib/quire/quire.db");

    sandbox.ok(&format!("dpkg -i {}", second.display()));
    let version = sandbox.ok("dpkg-query -W -f '${Version}' quire");
    assert_eq!(version, "0.1.0-2");
    assert!(
        sandbox
            .ok(&format!("cat {CONFIG}"))
            .contains("# edited by the operator")
    );
    assert_eq!(sandbox.stat(CONFIG), "root:quire 640");
    assert!(sandbox.exists("/var/lib/quire/fonts/Custom.ttf"));
    assert_eq!(sandbox.ok("sha256sum /var/lib/quire/quire.db"), database);

    sandbox.ok("dpkg -r quire");
    assert!(!sandbox.exists("/usr/bin/quire"));
    assert!(
        sandbox
            .ok(&format!("cat {CONFIG}"))
            .contains("# edited by the operator")
    );
    assert_eq!(sandbox.ok("sha256sum /var/lib/quire/quire.db"), database);

    sandbox.ok("dpkg -P quire");
    assert!(
        !sandbox.exists("/etc/quire"),
        "purge removes the configuration"
    );
    assert_eq!(
        sandbox.ok("sha256sum /var/lib/quire/quire.db"),
        database,
        "purge keeps reports, templates and the database"
    );
    assert!(sandbox.exists("/var/lib/quire/fonts/Custom.ttf"));
    sandbox.ok("getent passwd quire");
}
