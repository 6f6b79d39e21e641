//! A copy-on-write view of this machine for installing packages: a private mount namespace in
//! which `/etc`, `/usr` and `/var` are overlays whose writes land in a temporary directory. dpkg,
//! adduser and the installed binary run there for real; the host's files never change.
//!
//! Needs root (mount namespaces, dpkg); a test that uses it fails with a clear message otherwise.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

const OVERLAID: [&str; 3] = ["etc", "usr", "var"];

pub struct Sandbox {
    /// Keeps the namespace alive; commands join it with nsenter.
    holder: Child,
    /// The overlays' upper directories: everything written inside.
    _writes: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        assert!(
            rustix::process::geteuid().is_root(),
            "packaging tests install the .deb with dpkg in a private mount namespace and need \
             root: run scripts/test as root (CI does)"
        );
        let dir = tempfile::tempdir().expect("sandbox dir");
        let mut script = String::from("set -e\n");
        for d in OVERLAID {
            let (upper, work) = (dir.path().join(d), dir.path().join(format!("{d}.work")));
            script.push_str(&format!(
                "mkdir -p {upper} {work}\n\
                 mount -t overlay overlay -o lowerdir=/{d},upperdir={upper},workdir={work} /{d}\n",
                upper = upper.display(),
                work = work.display(),
            ));
        }
        script.push_str("echo ready\nexec sleep infinity\n");
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(&script)
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux)");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().expect("holder stdout"))
            .read_line(&mut line)
            .expect("holder output");
        assert_eq!(line.trim(), "ready", "the overlay mounts failed");
        Sandbox {
            holder,
            _writes: dir,
        }
    }

    /// `sh -c script` inside the sandbox.
    pub fn command(&self, script: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["--target", &self.holder.id().to_string(), "--mount", "--"])
            .args(["sh", "-c", script])
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    /// Runs `script` inside the sandbox.
    pub fn run(&self, script: &str) -> Output {
        self.command(script).output().expect("nsenter (util-linux)")
    }

    /// Runs `script` and returns its stdout; panics with its output when it fails.
    pub fn ok(&self, script: &str) -> String {
        super::packages::run(&mut self.command(script))
    }

    /// Whether `path` exists inside the sandbox.
    pub fn exists(&self, path: &str) -> bool {
        self.run(&format!("test -e '{path}'")).status.success()
    }

    /// `owner:group mode` of `path` inside the sandbox.
    pub fn stat(&self, path: &str) -> String {
        self.ok(&format!("stat -c '%U:%G %a' '{path}'"))
            .trim()
            .to_owned()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
