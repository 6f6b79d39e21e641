//! A throwaway MariaDB server: `mariadb-install-db` into a temporary directory and `mariadbd` on
//! a free port, as the `mysql` user when the tests run as root (the server refuses root), and
//! killed and deleted when dropped. Root connects over TCP without a password; tests create the
//! users they need with [`MariaDb::sql`].

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct MariaDb {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The account the server runs as when we are root.
const SERVER_USER: &str = "mysql";

fn as_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn program(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin"]
        .iter()
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found: install MariaDB (scripts/test does: apt-get install mariadb-server)")
        })
}

impl MariaDb {
    /// Initialises a data directory and starts the server; blocks until it accepts connections.
    pub fn start() -> MariaDb {
        let dir = tempfile::Builder::new()
            .prefix("quire-mariadb-")
            .tempdir()
            .expect("tempdir");
        let user_arg = format!("--user={SERVER_USER}");
        if as_root() {
            // The server's user must reach its data directory.
            let status = Command::new("chown")
                .arg(SERVER_USER)
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown {SERVER_USER} failed");
        }
        let data = dir.path().join("data");
        let mut install = Command::new(program("mariadb-install-db"));
        install
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if as_root() {
            install.arg(&user_arg);
        }
        let out = install.output().expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = super::free_port();
        let log = dir.path().join("server.log");
        let mut server = Command::new(program("mariadbd"));
        server
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .args(["--bind-address=127.0.0.1", "--skip-name-resolve"])
            .args(["--innodb-flush-log-at-trx-commit=0", "--skip-log-bin"]);
        if as_root() {
            server.arg(&user_arg);
        }
        let out = File::create(&log).expect("log");
        let child = server
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().expect("log")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start mariadbd");
        let mut db = MariaDb {
            port,
            dir,
            child: Some(child),
        };
        db.wait_ready();
        db
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self.try_sql("SELECT 1").is_ok()
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("mariadbd exited with {status}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("mariadbd did not start:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn try_sql(&self, statement: &str) -> Result<String, String> {
        let out = Command::new(program("mariadb"))
            .args([
                "-h",
                "127.0.0.1",
                "-P",
                &self.port.to_string(),
                "-u",
                "root",
                "-N",
                "-e",
            ])
            .arg(statement)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs SQL as root (to create databases, users and tables); panics with the server's words
    /// when it fails.
    pub fn sql(&self, statement: &str) -> String {
        self.try_sql(statement)
            .unwrap_or_else(|e| panic!("{statement}: {e}"))
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- mariadb log -----\n{}", self.log());
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
