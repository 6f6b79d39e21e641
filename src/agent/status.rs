//! The status file: the agent's state as JSON, rewritten atomically on every change and every
//! heartbeat, so that `quire agent status` (another process, maybe another user) can tell
//! monitoring whether this host's agent is connected without talking to it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::protocol::Served;

/// Where the agent is with its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Opening a connection (and, after a failure, waiting to).
    Connecting,
    /// Welcomed by an instance and serving queries.
    Connected,
    /// Not connected: the last connection failed or ended, or the agent stopped.
    Disconnected,
}

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub state: State,
    /// When `state` began.
    pub since: Timestamp,
    pub server_url: String,
    /// The instance holding the connection, while connected.
    pub instance: Option<String>,
    pub agent_id: String,
    pub name: String,
    pub pid: u32,
    pub version: String,
    /// The server's heartbeat interval, once welcomed: the file is rewritten at least this often
    /// while connected.
    pub heartbeat_secs: Option<u32>,
    pub updated_at: Timestamp,
    pub datasources: Vec<Served>,
    pub last_error: Option<String>,
}

/// How many heartbeats a file may miss before `quire agent status` calls it stale.
const STALE_AFTER_HEARTBEATS: u32 = 3;

/// Staleness when no heartbeat interval is known yet (never welcomed).
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);

/// The status file of a running agent: the current state, written on every change.
pub struct StatusFile {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    status: Status,
    /// The last write's error, logged once rather than at every heartbeat.
    write_error: Option<String>,
}

impl StatusFile {
    /// Starts with `status` and writes it.
    pub fn create(path: PathBuf, status: Status) -> Self {
        let file = StatusFile {
            path,
            inner: Mutex::new(Inner {
                status,
                write_error: None,
            }),
        };
        file.update(|_| {});
        file
    }

    /// Changes the state (and `since` when it is a new one), then writes.
    pub fn set(&self, state: State, instance: Option<String>, last_error: Option<String>) {
        self.update(|s| {
            if s.state != state {
                s.state = state;
                s.since = Timestamp::now();
            }
            s.instance = instance;
            if last_error.is_some() {
                s.last_error = last_error;
            }
        });
    }

    /// Records the heartbeat interval the server chose.
    pub fn set_heartbeat(&self, secs: u32) {
        self.update(|s| s.heartbeat_secs = Some(secs));
    }

    /// Rewrites the file as it is, to show the agent is alive.
    pub fn touch(&self) {
        self.update(|_| {});
    }

    fn update(&self, change: impl FnOnce(&mut Status)) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut inner.status);
        inner.status.updated_at = Timestamp::now();
        let written = write(&self.path, &inner.status).map_err(|e| e.to_string());
        match (written, &inner.write_error) {
            (Ok(()), _) => inner.write_error = None,
            (Err(e), Some(last)) if *last == e => {}
            (Err(e), _) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot write the agent's status file; quire agent status will not see this agent");
                inner.write_error = Some(e);
            }
        }
    }
}

/// Writes `status` to a temporary file beside `path` and renames it into place, so a reader
/// never sees half a file. Readable by the service's group (`quire agent status` as an admin).
fn write(path: &Path, status: &Status) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    let tmp = path.with_extension(format!("json.tmp-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(&tmp)?;
    file.write_all(&text)?;
    file.sync_data()?;
    std::fs::rename(&tmp, path)
}

/// Why the status file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot read {}: {source} (is quire agent running, with the same agent.status_file?)", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not an agent status file: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

pub fn read(path: &Path) -> Result<Status, StatusError> {
    let text = std::fs::read(path).map_err(|source| StatusError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| StatusError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// What `quire agent status` prints, and whether the agent is connected.
pub struct Report {
    pub text: String,
    pub connected: bool,
}

/// Describes `status` as read at `now`; `alive` says whether a process has the file's pid.
pub fn report(status: &Status, now: Timestamp, alive: bool) -> Report {
    let mut lines = vec![format!(
        "agent {} ({}), quire {}, pid {}",
        status.name, status.agent_id, status.version, status.pid
    )];
    let since = ago(status.since, now);
    let state = match (status.state, &status.instance) {
        (State::Connected, Some(instance)) => {
            format!(
                "connected to {} (instance {instance}) for {since}",
                status.server_url
            )
        }
        (State::Connected, None) => format!("connected to {} for {since}", status.server_url),
        (State::Connecting, _) => format!("connecting to {} for {since}", status.server_url),
        (State::Disconnected, _) => {
            format!("disconnected from {} for {since}", status.server_url)
        }
    };
    lines.push(state);
    let heartbeat = status
        .heartbeat_secs
        .map_or(DEFAULT_HEARTBEAT, |s| Duration::from_secs(s.into()));
    let age = now.duration_since(status.updated_at);
    let fresh = age.unsigned_abs() <= heartbeat * STALE_AFTER_HEARTBEATS;
    if !alive {
        lines.push(format!(
            "stale: process {} is not running (last update {} ago)",
            status.pid,
            ago(status.updated_at, now)
        ));
    } else if !fresh {
        lines.push(format!(
            "stale: last update {} ago, more than {STALE_AFTER_HEARTBEATS} heartbeats",
            ago(status.updated_at, now)
        ));
    }
    if let Some(e) = &status.last_error {
        lines.push(format!("last error: {e}"));
    }
    lines.push("sources:".into());
    for s in &status.datasources {
        let found = match (&s.server_version, &s.error) {
            (_, Some(e)) => format!("unreachable at start: {e}"),
            (Some(v), None) => v.clone(),
            (None, None) => String::new(),
        };
        lines.push(format!("  {} ({}) {found}", s.name, s.kind));
    }
    Report {
        text: lines.join("\n") + "\n",
        connected: status.state == State::Connected && fresh && alive,
    }
}

/// A span of time, rounded to seconds, as people read it.
fn ago(then: Timestamp, now: Timestamp) -> String {
    let secs = now.duration_since(then).as_secs().max(0);
    match secs {
        0..120 => format!("{secs}s"),
        120..7200 => format!("{}m", secs / 60),
        _ => format!("{}h", secs / 3600),
    }
}

/// Whether a process with `pid` exists (one of another user counts).
pub fn alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: State) -> Status {
        Status {
            state,
            since: Timestamp::now(),
            server_url: "https://r.example.com/".into(),
            instance: Some("web-1-abc".into()),
            agent_id: "a1".into(),
            name: "dc1-a".into(),
            pid: std::process::id(),
            version: "0.1.0".into(),
            heartbeat_secs: Some(10),
            updated_at: Timestamp::now(),
            datasources: vec![Served {
                name: "warehouse".into(),
                kind: "postgres".into(),
                server_version: Some("PostgreSQL 16".into()),
                error: None,
            }],
            last_error: None,
        }
    }

    #[test]
    fn the_file_round_trips_and_is_private_to_the_group() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent-status.json");
        let file = StatusFile::create(path.clone(), status(State::Connecting));
        file.set(State::Connected, Some("web-2".into()), None);
        let read_back = read(&path).unwrap();
        assert_eq!(read_back.state, State::Connected);
        assert_eq!(read_back.instance.as_deref(), Some("web-2"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
        let r = report(&read_back, Timestamp::now(), true);
        assert!(r.connected, "{}", r.text);
        assert!(
            r.text
                .contains("connected to https://r.example.com/ (instance web-2)"),
            "{}",
            r.text
        );
        assert!(
            r.text.contains("warehouse (postgres) PostgreSQL 16"),
            "{}",
            r.text
        );
    }

    #[test]
    fn stale_or_orphaned_or_disconnected_is_not_connected() {
        let s = status(State::Connected);
        let later = s.updated_at + jiff::SignedDuration::from_secs(31);
        let r = report(&s, later, true);
        assert!(
            !r.connected && r.text.contains("stale: last update 31s ago"),
            "{}",
            r.text
        );
        let r = report(&s, s.updated_at, false);
        assert!(
            !r.connected && r.text.contains("is not running"),
            "{}",
            r.text
        );
        let mut d = status(State::Disconnected);
        d.last_error = Some("the server refused this agent's token".into());
        let r = report(&d, d.updated_at, true);
        assert!(
            !r.connected && r.text.contains("last error: the server refused"),
            "{}",
            r.text
        );
    }

    #[test]
    fn this_process_is_alive_and_a_free_pid_is_not() {
        assert!(alive(std::process::id()));
        assert!(!alive(0));
        assert!(!alive(i32::MAX as u32));
    }

    #[test]
    fn a_missing_file_says_where_it_looked() {
        let e = read(Path::new("/nonexistent/agent-status.json")).unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/agent-status.json"),
            "{e}"
        );
    }
}
