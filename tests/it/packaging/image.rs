//! The container image: its configuration as a runtime reads it, its OCI layout's digests, and
//! its single layer run as a root filesystem (chroot, the image's user) the way a container
//! would: version, an offline render, `quire app` answering its own health check, nats-server.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::packages::{build_image, run};
use crate::support::process::Proc;
use crate::support::{free_port, wait_for};

const USER: &str = "10001:10001";

/// The entries of a tar file, by name.
fn entries(tar: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(tar)
        .arg("-C")
        .arg(dir.path()));
    let mut out = std::collections::BTreeMap::new();
    for entry in walk(dir.path()) {
        let name = entry
            .strip_prefix(dir.path())
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        out.insert(name, std::fs::read(&entry).unwrap());
    }
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn json(data: &[u8]) -> Value {
    serde_json::from_slice(data).expect("json")
}

/// `program args…` run in `root` as the image's user, with the image's environment plus `env`
/// (the image has no shell), and /proc mounted as every container runtime does (render workers
/// are started from /proc/self/exe).
fn in_image(root: &Path, program: &str, args: &[&str], env: &[(&str, String)]) -> Command {
    std::fs::create_dir_all(root.join("proc")).unwrap();
    // The image's PATH is for inside; unshare itself is found on the host.
    let mut cmd = Command::new("/usr/bin/unshare");
    cmd.args(["--mount", "--", "/bin/sh", "-c"])
        .arg(r#"user=$1; shift; mount -t proc proc "$0/proc" && exec /usr/sbin/chroot --userspec="$user" "$0" "$@""#)
        .arg(root)
        .arg(USER)
        .arg(format!("/usr/bin/{program}"))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

#[test]
fn the_image_is_described_for_runtimes_and_its_oci_layout_is_consistent() {
    let out = tempfile::tempdir().unwrap();
    let (docker, oci) = build_image(out.path());

    let archive = entries(&docker);
    let manifest = &json(&archive["manifest.json"])[0];
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(manifest["RepoTags"][0], format!("quire:{version}"));
    let config = json(&archive[manifest["Config"].as_str().unwrap()]);
    let c = &config["config"];
    assert_eq!(c["User"], USER, "not root");
    assert_eq!(c["Entrypoint"][0], "/usr/bin/quire");
    assert_eq!(c["Cmd"][0], "app");
    assert!(c["ExposedPorts"]["8080/tcp"].is_object(), "{c}");
    assert!(c["Volumes"]["/var/lib/quire"].is_object(), "{c}");
    assert_eq!(
        c["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "/usr/bin/quire", "healthcheck"])
    );
    assert_eq!(c["Labels"]["org.opencontainers.image.version"], version);
    let layer = &archive["layer.tar"];
    assert_eq!(config["rootfs"]["diff_ids"][0], digest(layer));

    // OCI layout: every blob is named by its digest, and the chain index -> manifest -> config
    // and layer holds; the compressed layer unpacks to the same layer.
    let layout = entries(&oci);
    for (name, data) in &layout {
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            assert_eq!(digest(data), format!("sha256:{hex}"), "{name}");
        }
    }
    let blob = |d: &Value| &layout[&format!("blobs/sha256/{}", &d.as_str().unwrap()[7..])];
    let index = json(&layout["index.json"]);
    let m = json(blob(&index["manifests"][0]["digest"]));
    assert_eq!(json(blob(&m["config"]["digest"])), config);
    let gz = out.path().join("layer.tar.gz");
    std::fs::write(&gz, blob(&m["layers"][0]["digest"])).unwrap();
    let unpacked = Command::new("gzip").arg("-dc").arg(&gz).output().unwrap();
    assert!(unpacked.status.success());
    assert_eq!(digest(&unpacked.stdout), digest(layer));
}

#[tokio::test]
async fn the_image_layer_runs_quire_and_nats_server_as_its_user() {
    let out = tempfile::tempdir().unwrap();
    let (docker, _) = build_image(out.path());
    let root = out.path().join("rootfs");
    std::fs::create_dir(&root).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&docker)
        .arg("-C")
        .arg(out.path())
        .arg("layer.tar"));
    run(Command::new("tar")
        .args(["--same-owner", "-xpf"])
        .arg(out.path().join("layer.tar"))
        .arg("-C")
        .arg(&root));

    let version = run(&mut in_image(&root, "quire", &["version"], &[]));
    assert!(version.starts_with(&format!("quire {}", env!("CARGO_PKG_VERSION"))));
    let nats = run(&mut in_image(&root, "nats-server", &["--version"], &[]));
    assert!(nats.contains("nats-server"), "{nats}");

    // Offline, with the fonts the image carries.
    std::fs::write(root.join("tmp/t.typ"), "= Quarterly\nHello from the image.").unwrap();
    let render = ["render", "/tmp/t.typ", "-o", "/tmp/t.pdf"];
    run(&mut in_image(&root, "quire", &render, &[]));
    let pdf = std::fs::read(root.join("tmp/t.pdf")).unwrap();
    assert!(pdf.starts_with(b"%PDF"));

    // App Service sets PORT and mounts persistent storage at /home: the image's config
    // follows both.
    let port = free_port();
    std::fs::create_dir_all(root.join("home/quire")).unwrap();
    run(Command::new("chown").arg(USER).arg(root.join("home/quire")));
    let env = [
        ("PORT", port.to_string()),
        ("WEBSITES_ENABLE_APP_SERVICE_STORAGE", "true".to_owned()),
    ];
    let check = run(&mut in_image(&root, "quire", &["config", "check"], &env));
    assert!(
        check.contains(&format!("http.listen = \"0.0.0.0:{port}\"")),
        "{check}"
    );
    assert!(check.contains("data_dir = \"/home/quire\""), "{check}");

    let app = in_image(&root, "quire", &["app"], &env);
    let app = Proc::spawn("image-app", app, out.path());
    wait_for(
        "the image's health check to pass",
        Duration::from_secs(30),
        || {
            let ok = in_image(&root, "quire", &["healthcheck"], &env)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            async move { ok.then_some(()) }
        },
    )
    .await;
    assert!(root.join("home/quire/quire.db").exists(), "{}", app.log());
    app.terminate();
}
