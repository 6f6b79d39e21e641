//! The offline bundle: carried over as one tarball, verified, and installed by its own script
//! with no network; a bundle altered on the way installs nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::packages::{build_deb, run, script, staged_binary};
use crate::support::sandbox::Sandbox;

/// Builds the bundle into `out` and unpacks its tarball into `out/site`, as the operator at the
/// air-gapped site would. Returns the unpacked bundle directory.
fn bundle_at_the_site(out: &Path) -> PathBuf {
    let deb = build_deb("0.1.0-1", out);
    let printed = run(Command::new(script("bundle-offline"))
        .arg("--deb")
        .arg(&deb)
        .arg("--binary")
        .arg(staged_binary())
        .arg("--out")
        .arg(out.join("bundle")));
    let tarball = printed
        .lines()
        .find_map(|l| l.split(' ').next().filter(|p| p.ends_with(".tar.gz")))
        .unwrap_or_else(|| panic!("no tarball in:\n{printed}"));
    let site = out.join("site");
    std::fs::create_dir(&site).unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(tarball)
        .arg("-C")
        .arg(&site));
    site.join(format!("quire-{}-offline", env!("CARGO_PKG_VERSION")))
}

#[test]
fn the_offline_bundle_verifies_and_installs_quire_and_nats_server() {
    let out = tempfile::tempdir().unwrap();
    let bundle = bundle_at_the_site(out.path());
    let sums = std::fs::read_to_string(bundle.join("SHA256SUMS")).unwrap();
    for listed in [
        "quire_0.1.0-1_amd64.deb",
        "install.sh",
        "INSTALL.md",
        "image/quire-",
    ] {
        assert!(sums.contains(listed), "{listed} in:\n{sums}");
    }
    assert!(sums.contains("  nats-server_"), "{sums}");
    run(Command::new("sha256sum")
        .args(["--strict", "-c", "SHA256SUMS"])
        .current_dir(&bundle));

    let dry = run(Command::new(bundle.join("install.sh")).arg("--dry-run"));
    assert!(dry.contains("would run: dpkg -i nats-server_"), "{dry}");

    let sandbox = Sandbox::new();
    // No network inside: the bundle must be enough.
    let installed = sandbox.ok(&format!(
        "unshare --net {} && dpkg-query -W -f '${{Package}} ${{Status}}\\n' quire nats-server",
        bundle.join("install.sh").display()
    ));
    assert!(
        installed.contains("quire install ok installed"),
        "{installed}"
    );
    assert!(
        installed.contains("nats-server install ok installed"),
        "{installed}"
    );
    assert!(sandbox.ok("quire version").starts_with("quire "));
}

#[test]
fn an_altered_bundle_installs_nothing() {
    let out = tempfile::tempdir().unwrap();
    let bundle = bundle_at_the_site(out.path());
    let deb = bundle.join("quire_0.1.0-1_amd64.deb");
    let mut bytes = std::fs::read(&deb).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&deb, bytes).unwrap();

    let sandbox = Sandbox::new();
    let attempt = sandbox.run(&bundle.join("install.sh").display().to_string());
    let stderr = String::from_utf8_lossy(&attempt.stderr);
    assert!(!attempt.status.success());
    assert!(
        stderr.contains("checksum mismatch: the bundle is damaged or was altered"),
        "{stderr}"
    );
    assert!(
        !sandbox.run("dpkg-query -W quire").status.success(),
        "quire must not be installed"
    );

    // Restored, but with a file slipped in that SHA256SUMS does not list: refused too.
    let mut bytes = std::fs::read(&deb).unwrap();
    bytes[middle] ^= 0xff;
    std::fs::write(&deb, bytes).unwrap();
    std::fs::write(bundle.join("extra.deb"), b"not a package").unwrap();
    let attempt = sandbox.run(&bundle.join("install.sh").display().to_string());
    let stderr = String::from_utf8_lossy(&attempt.stderr);
    assert!(!attempt.status.success());
    assert!(
        stderr.contains("extra.deb is not listed in SHA256SUMS"),
        "{stderr}"
    );
    assert!(!sandbox.run("dpkg-query -W quire").status.success());
}
