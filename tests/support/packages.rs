//! The release artefacts, built from the binary under test by the scripts operators use:
//! `cargo deb` as in `scripts/build-deb`, `scripts/build-image`, `scripts/bundle-offline`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use super::quire_bin;

pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// A target directory holding the binary under test, stripped, where a release build would put
/// it (`<dir>/x86_64-unknown-linux-gnu/release/quire`). Made once per test run.
pub fn staged_target() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("packaging");
        let release = dir.join(TARGET).join("release");
        std::fs::create_dir_all(&release).expect("staging dir");
        run(Command::new("strip")
            .arg("-o")
            .arg(release.join("quire"))
            .arg(quire_bin()));
        dir
    })
}

pub fn staged_binary() -> PathBuf {
    staged_target().join(TARGET).join("release").join("quire")
}

/// `quire_<version>_amd64.deb` in `out`, packaged by cargo-deb from the staged binary.
pub fn build_deb(version: &str, out: &Path) -> PathBuf {
    // cargo-deb stages files under the shared target directory: one build at a time.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let deb = out.join(format!("quire_{version}_amd64.deb"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", staged_target())
        .args([
            "deb",
            "--no-build",
            "--no-strip",
            "--fast",
            "--target",
            TARGET,
        ])
        .args(["--deb-version", version, "-o"])
        .arg(&deb));
    deb
}

/// The docker-archive and OCI tarballs `scripts/build-image` writes into `out`.
pub fn build_image(out: &Path) -> (PathBuf, PathBuf) {
    run(Command::new(script("build-image"))
        .arg("--binary")
        .arg(staged_binary())
        .arg("--out")
        .arg(out));
    let version = env!("CARGO_PKG_VERSION");
    (
        out.join(format!("quire-{version}-docker.tar")),
        out.join(format!("quire-{version}-oci.tar")),
    )
}

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// Runs `cmd`; panics with its output unless it succeeds. Returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
