//! A throwaway PostgreSQL server: `initdb` into a temporary directory and `postgres` on a free
//! port, run as an unprivileged user when the tests run as root (PostgreSQL refuses root), and
//! stopped and deleted when dropped. A streaming replica of one (`Postgres::replica_of`: a base
//! backup with `-R`, on a port of its own) that can be paused, caught up and promoted, for the
//! disaster-recovery tests. Also a PgBouncer in transaction mode in front of it.
//!
//! Self-contained (std, tokio, tempfile, sqlx) so the store's unit tests can include it too.

#![allow(dead_code)] // each including test binary uses a different part

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SUPERUSER: &str = "quire";

/// The account PostgreSQL runs as: ourselves, or `postgres` (else `nobody`) when we are root.
fn run_as() -> Option<(u32, u32)> {
    if rustix::process::geteuid().is_root() {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        ["postgres", "nobody"].iter().find_map(|name| {
            passwd.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                if f.len() > 3 && f[0] == *name {
                    Some((f[2].parse().ok()?, f[3].parse().ok()?))
                } else {
                    None
                }
            })
        })
    } else {
        None
    }
}

/// A PostgreSQL program: on PATH, or in Debian's versioned directory.
pub fn pg_bin(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|c| c.is_file())
        })
        .unwrap_or_default();
    on_path
        .or_else(|| {
            let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql").ok()?.flatten().map(|e| e.path()).collect();
            versions.sort();
            versions.into_iter().rev().map(|v| v.join("bin").join(name)).find(|c| c.is_file())
        })
        .unwrap_or_else(|| panic!("{name} not found: install PostgreSQL (scripts/test does: apt-get install postgresql)"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn chown_to(path: &Path, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        rustix::fs::chown(
            path,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .expect("chown");
    }
}

fn command(program: &Path, owner: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(program);
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    cmd.env_remove("PGDATA").env("LC_ALL", "C");
    cmd
}

pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    owner: Option<(u32, u32)>,
    child: Option<Child>,
    /// Length of the log when the running server was started: readiness is looked for after it,
    /// since the log of an earlier run of the same data directory says "ready" too.
    log_from: usize,
}

impl Postgres {
    /// initdb and start; blocks until the server accepts connections.
    ///
    /// initdb's defaults are what streaming replication needs (PostgreSQL 15: `wal_level =
    /// replica`, `max_wal_senders = 10`, and `host replication all 127.0.0.1/32 trust` in
    /// pg_hba.conf with `--auth=trust`), so any server started here can have replicas.
    pub fn start() -> Postgres {
        let (dir, owner) = server_dir();
        let data = dir.path().join("data");
        let out = command(&pg_bin("initdb"), owner)
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self::launch_new(dir, owner)
    }

    /// A hot standby of `primary`: `pg_basebackup -R -X stream` (which writes `standby.signal`
    /// and the `primary_conninfo` to stream from) into a directory of its own, started on a free
    /// port; blocks until it accepts read-only connections. It has the primary's databases, and
    /// those created later, under the same names.
    pub fn replica_of(primary: &Postgres) -> Postgres {
        let (dir, owner) = server_dir();
        let out = command(&pg_bin("pg_basebackup"), owner)
            .args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
            .args(["-U", SUPERUSER, "-D"])
            .arg(dir.path().join("data"))
            // A fast checkpoint to start from: a spread one takes minutes on an idle server.
            .args(["-R", "-X", "stream", "--checkpoint=fast", "--no-sync"])
            .output()
            .expect("run pg_basebackup");
        assert!(
            out.status.success(),
            "pg_basebackup failed: {}\n----- primary log -----\n{}",
            String::from_utf8_lossy(&out.stderr),
            primary.log()
        );
        Self::launch_new(dir, owner)
    }

    fn launch_new(dir: tempfile::TempDir, owner: Option<(u32, u32)>) -> Postgres {
        let mut pg = Postgres {
            port: free_port(),
            dir,
            owner,
            child: None,
            log_from: 0,
        };
        pg.launch();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn launch(&mut self) {
        self.log_from = self.log().len();
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log");
        chown_to(&self.log_path(), self.owner);
        let child = command(&pg_bin("postgres"), self.owner)
            .arg("-D")
            .arg(self.data())
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
            ])
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .args(["-c", "max_connections=300"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            // "... ready to accept connections", or "... read-only connections" for a standby.
            if self
                .log()
                .get(self.log_from..)
                .is_some_and(|run| run.contains("database system is ready to accept"))
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("postgres exited with {status}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("postgres did not start:\n{}", self.log());
    }

    /// Fast shutdown (clients are disconnected), then waits for the process.
    pub fn stop(&mut self) {
        self.stop_with(rustix::process::Signal::INT);
    }

    /// Immediate shutdown (`pg_ctl stop -m immediate`, which is this signal): no checkpoint, and
    /// WAL not yet sent to a replica stays behind — a crashed primary, as a disaster leaves it.
    pub fn stop_immediate(&mut self) {
        self.stop_with(rustix::process::Signal::QUIT);
    }

    /// Starts the server again on its data directory and port after a stop; blocks until it
    /// accepts connections (after crash recovery, when it was stopped immediately).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "postgres is still running");
        self.launch();
    }

    fn stop_with(&mut self, signal: rustix::process::Signal) {
        if let Some(mut child) = self.child.take() {
            let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
            let _ = rustix::process::kill_process(pid, signal);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops and starts again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// A new, empty database; returns its URL.
    pub async fn fresh_database(&self) -> String {
        use sqlx::Connection;
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to postgres");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create database");
        self.url(&name)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- postgres log ({}) -----\n{}",
                self.log_path().display(),
                self.log()
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Replication: the state of a primary or a replica, read with SQL on the `postgres` database.
impl Postgres {
    async fn connect(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .unwrap_or_else(|e| panic!("connect to postgres on port {}: {e}", self.port))
    }

    /// The value of a one-column, one-row query.
    async fn scalar<T>(&self, sql: &'static str) -> T
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
    {
        let mut conn = self.connect().await;
        sqlx::query_scalar(sql)
            .fetch_one(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// `pg_is_in_recovery()`: true on a replica, false on a primary (and once promoted).
    pub async fn in_recovery(&self) -> bool {
        self.scalar("SELECT pg_is_in_recovery()").await
    }

    /// The timeline a primary writes on: 1 from initdb, one more at each promotion. Read from the
    /// name of the current WAL file, since `pg_control_checkpoint()` keeps the old timeline until
    /// the first checkpoint after a promotion.
    pub async fn timeline(&self) -> u32 {
        let file: String = self
            .scalar("SELECT pg_walfile_name(pg_current_wal_lsn())")
            .await;
        u32::from_str_radix(&file[..8], 16).expect("timeline in a WAL file name")
    }

    /// `pg_ctl promote` (which waits for the promotion), then waits until the server says it
    /// is no longer in recovery.
    pub async fn promote(&self) {
        let out = command(&pg_bin("pg_ctl"), self.owner)
            .arg("promote")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-t", "60"])
            .output()
            .expect("run pg_ctl promote");
        assert!(
            out.status.success(),
            "pg_ctl promote failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        self.wait_until("the promoted server to leave recovery", || async {
            !self.in_recovery().await
        })
        .await;
    }

    /// Stops applying received WAL on a replica (it keeps receiving it): its data falls behind.
    pub async fn pause_replay(&self) {
        let _: String = self.scalar("SELECT pg_wal_replay_pause()::text").await;
    }

    pub async fn resume_replay(&self) {
        let _: String = self.scalar("SELECT pg_wal_replay_resume()::text").await;
    }

    /// Waits until this replica has replayed everything `primary` had written when called.
    /// The target is the insert position: with `synchronous_commit = off` a committed
    /// transaction's WAL may not be written yet, and the WAL writer sends it on shortly.
    pub async fn wait_caught_up(&self, primary: &Postgres) {
        let target: String = primary
            .scalar("SELECT pg_current_wal_insert_lsn()::text")
            .await;
        self.wait_until("the replica to replay the primary's WAL", || async {
            let mut conn = self.connect().await;
            sqlx::query_scalar::<_, Option<bool>>("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn")
                .bind(&target)
                .fetch_one(&mut conn)
                .await
                .expect("replay position")
                .unwrap_or(false)
        })
        .await;
    }

    /// When the last transaction a replica replayed was committed on its primary (epoch
    /// milliseconds); after a promotion, the last one it got before it. `None` before any.
    pub async fn last_replay_at(&self) -> Option<i64> {
        self.scalar::<Option<f64>>(
            "SELECT extract(epoch FROM pg_last_xact_replay_timestamp())::float8 * 1000",
        )
        .await
        .map(|ms| ms as i64)
    }

    async fn wait_until<F, Fut>(&self, what: &str, mut done: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done().await {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A temporary directory for a server's data, owned by the account the server runs as (so must
/// its parent be readable), and that account.
fn server_dir() -> (tempfile::TempDir, Option<(u32, u32)>) {
    let dir = tempfile::Builder::new()
        .prefix("quire-pg-")
        .tempdir()
        .expect("tempdir");
    let owner = run_as();
    chown_to(dir.path(), owner);
    (dir, owner)
}

/// PgBouncer in transaction-pooling mode in front of `pg`, stopped when dropped.
pub struct PgBouncer {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl PgBouncer {
    pub fn start(pg: &Postgres, database: &str) -> PgBouncer {
        let dir = tempfile::Builder::new()
            .prefix("quire-pgbouncer-")
            .tempdir()
            .expect("tempdir");
        let owner = run_as();
        chown_to(dir.path(), owner);
        let port = free_port();
        let ini = dir.path().join("pgbouncer.ini");
        let users = dir.path().join("users.txt");
        std::fs::write(&users, format!("\"{SUPERUSER}\" \"\"\n")).expect("users");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n{database} = host=127.0.0.1 port={} dbname={database}\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {}\npool_mode = transaction\nmax_client_conn = 500\n\
                 default_pool_size = 20\nignore_startup_parameters = extra_float_digits,options\n\
                 logfile = {}\n",
                pg.port,
                users.display(),
                dir.path().join("pgbouncer.log").display()
            ),
        )
        .expect("ini");
        for f in [&ini, &users] {
            chown_to(f, owner);
        }
        let child = command(&pgbouncer_bin(), owner)
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        let bouncer = PgBouncer { port, child, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not start: {}",
                bouncer.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        bouncer
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

fn pgbouncer_bin() -> PathBuf {
    ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("pgbouncer not found: install it (scripts/test does: apt-get install pgbouncer)")
        })
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- pgbouncer log -----\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
