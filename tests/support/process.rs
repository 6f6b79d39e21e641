//! A spawned process that never outlives its test: killed (SIGKILL) when dropped, its stdout and
//! stderr captured in a log file that is printed when the test fails.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
    /// Leads its own process group, which dies with it.
    group: bool,
}

impl Proc {
    /// Starts `cmd` with output going to `<log_dir>/<name>.log`.
    pub fn spawn(name: &str, cmd: Command, log_dir: &Path) -> Proc {
        Self::start(name, cmd, log_dir, false)
    }

    /// Like [`Proc::spawn`], but as the leader of a new process group (whose id is its pid), and
    /// dropping it kills the whole group: a server with its render workers, or a browser with
    /// its helpers, also when they outlive the leader. The group also lets a benchmark read the
    /// CPU time of all of them together.
    pub fn spawn_group(name: &str, mut cmd: Command, log_dir: &Path) -> Proc {
        cmd.process_group(0);
        Self::start(name, cmd, log_dir, true)
    }

    fn start(name: &str, mut cmd: Command, log_dir: &Path, group: bool) -> Proc {
        let log = log_dir.join(format!("{name}.log"));
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let err = out.try_clone().expect("log file");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_owned(),
            child,
            log,
            group,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by pid (this process's own child, never a name lookup).
    pub fn signal(&self, sig: i32) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).expect("pid");
        let sig = rustix::process::Signal::from_named_raw(sig).expect("signal");
        let _ = rustix::process::kill_process(pid, sig);
    }

    /// SIGTERM: the graceful stop a service manager asks for.
    pub fn terminate(&self) {
        self.signal(rustix::process::Signal::TERM.as_raw());
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit; `None` if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status, if the process has exited (checked through /proc, so it needs no `&mut`).
    pub fn exit_status(&self) -> Option<()> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        let state = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().chars().next())?;
        matches!(state, Some('Z') | Some('X')).then_some(())
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything the process wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log, to explain a failure.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.group
            && let Some(pid) = rustix::process::Pid::from_raw(self.pid() as i32)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() || super::verbose() {
            eprintln!(
                "----- last lines of {} ({}) -----",
                self.name,
                self.log.display()
            );
            for line in self.log_tail(80).lines() {
                eprintln!("{line}");
            }
        }
    }
}
