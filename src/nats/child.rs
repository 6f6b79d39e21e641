//! The nats-server child process, held so that it never outlives quire: it runs in its own
//! process group (a Ctrl-C on quire's terminal does not reach it: quire decides how it stops),
//! gets SIGKILL from the kernel when quire dies (even by `kill -9`), is killed when its handle
//! drops, and is signalled only through a pidfd for its own pid, never found by name.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::mpsc;

use rustix::process::{Pid, PidfdFlags, Signal};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio::sync::oneshot;

/// Spawns children from one thread that lives as long as the supervisor. The kernel sends the
/// parent-death signal when the *thread* that forked the child ends, not the process: a tokio
/// worker or blocking-pool thread, which come and go, would kill nats-server at a random time.
pub struct Spawner {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Request {
    command: Command,
    reply: oneshot::Sender<io::Result<Child>>,
}

impl Spawner {
    /// Starts the thread; call it inside the runtime, which the children are registered with.
    pub fn start() -> io::Result<Spawner> {
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let (tx, rx) = mpsc::channel::<Request>();
        let thread = std::thread::Builder::new()
            .name("nats-spawner".into())
            .spawn(move || {
                let _runtime = runtime.enter();
                for Request { mut command, reply } in rx {
                    let _ = reply.send(spawn_tied(&mut command));
                }
            })?;
        Ok(Spawner {
            requests: Some(tx),
            thread: Some(thread),
        })
    }

    /// Starts `command` as a child that dies with quire.
    pub async fn spawn(&self, command: Command) -> io::Result<NatsChild> {
        let (reply, answer) = oneshot::channel();
        let gone = || io::Error::other("the spawner thread is gone");
        self.requests
            .as_ref()
            .ok_or_else(gone)?
            .send(Request { command, reply })
            .map_err(|_| gone())?;
        let child = answer.await.map_err(|_| gone())??;
        NatsChild::new(child)
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        // Closing the channel ends the thread; any child still alive then gets its SIGKILL.
        self.requests.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn spawn_tied(command: &mut Command) -> io::Result<Child> {
    let parent = rustix::process::getpid();
    command.process_group(0).kill_on_drop(true);
    // SAFETY: the hook runs in the forked child before exec, where only async-signal-safe calls
    // are allowed. It makes two raw syscalls (prctl, getppid) and builds an io::Error from an
    // errno, which does not allocate. Nothing else happens here.
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            // quire may have died between fork and prctl; then no death signal would ever come.
            if rustix::process::getppid() != Some(parent) {
                return Err(rustix::io::Errno::SRCH.into());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// A running nats-server. Dropping it kills the process (tokio reaps it).
pub struct NatsChild {
    child: Child,
    pid: u32,
    /// Signals go through a pidfd: once the child is reaped its pid may belong to another
    /// process, but the pidfd still means this one (and signalling it fails harmlessly).
    pidfd: OwnedFd,
}

impl NatsChild {
    fn new(child: Child) -> io::Result<NatsChild> {
        // The child cannot have been reaped yet (nobody waited for it), so its pid is still its.
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("child exited at once"))?;
        let raw = Pid::from_raw(pid as i32).ok_or_else(|| io::Error::other("child has no pid"))?;
        let pidfd = rustix::process::pidfd_open(raw, PidfdFlags::empty())?;
        Ok(NatsChild { child, pid, pidfd })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The child's output pipes, for relaying its log.
    pub fn take_output(&mut self) -> (Option<ChildStdout>, Option<ChildStderr>) {
        (self.child.stdout.take(), self.child.stderr.take())
    }

    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        Ok(rustix::process::pidfd_send_signal(&self.pidfd, signal)?)
    }

    /// Resolves when the child exits, with its status. Cancel-safe.
    pub async fn exited(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }
}

/// Why a child ended, for people: `exited with code 1`, `killed by signal 9 (SIGKILL)`.
pub fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(n)) => match signal_name(n) {
            Some(name) => format!("killed by signal {n} ({name})"),
            None => format!("killed by signal {n}"),
        },
        (None, None) => format!("ended ({status})"),
    }
}

/// Names of the signals that usually end a server.
fn signal_name(n: i32) -> Option<&'static str> {
    Some(match Signal::from_named_raw(n)? {
        Signal::HUP => "SIGHUP",
        Signal::INT => "SIGINT",
        Signal::QUIT => "SIGQUIT",
        Signal::ILL => "SIGILL",
        Signal::ABORT => "SIGABRT",
        Signal::BUS => "SIGBUS",
        Signal::FPE => "SIGFPE",
        Signal::KILL => "SIGKILL",
        Signal::SEGV => "SIGSEGV",
        Signal::PIPE => "SIGPIPE",
        Signal::TERM => "SIGTERM",
        Signal::USR1 => "SIGUSR1",
        Signal::USR2 => "SIGUSR2",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn child_is_signalled_by_pidfd_and_reports_why_it_ended() {
        let spawner = Spawner::start().unwrap();
        let mut child = spawner.spawn(command("sleep", &["30"])).await.unwrap();
        child.signal(Signal::TERM).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(5), child.exited())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(describe_exit(status), "killed by signal 15 (SIGTERM)");
        assert!(
            child.signal(Signal::KILL).is_err(),
            "an exited child is never signalled"
        );

        let mut child = spawner
            .spawn(command("sh", &["-c", "exit 3"]))
            .await
            .unwrap();
        assert_eq!(
            describe_exit(child.exited().await.unwrap()),
            "exited with code 3"
        );
    }

    #[tokio::test]
    async fn dropping_the_handle_kills_the_child() {
        let spawner = Spawner::start().unwrap();
        let child = spawner.spawn(command("sleep", &["30"])).await.unwrap();
        let pid = child.pid();
        drop(child);
        let running = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| !stat.contains(") Z "))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while running() {
            assert!(
                std::time::Instant::now() < deadline,
                "sleep {pid} outlived its handle"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn command(program: &str, args: &[&str]) -> Command {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}
