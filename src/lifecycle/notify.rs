//! The systemd notification protocol (`sd_notify`): datagrams such as `READY=1` sent to the unix
//! socket named by `NOTIFY_SOCKET`. Without that variable every call is a no-op, so the same
//! binary runs under systemd, in a container and on a laptop.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// Sends notifications to the service manager, if there is one.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket: Option<Target>,
    watchdog: Option<Duration>,
}

#[derive(Debug, Clone)]
enum Target {
    Path(PathBuf),
    /// Linux abstract-namespace socket (`NOTIFY_SOCKET=@name`).
    Abstract(Vec<u8>),
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from `env`.
    pub fn from_env(env: &[(String, String)]) -> Self {
        let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let socket =
            get("NOTIFY_SOCKET")
                .filter(|s| !s.is_empty())
                .map(|s| match s.strip_prefix('@') {
                    Some(name) => Target::Abstract(name.as_bytes().to_vec()),
                    None => Target::Path(PathBuf::from(s)),
                });
        // WATCHDOG_PID, when set, names the process the watchdog is meant for; a child that
        // inherited the variables must not feed its parent's watchdog.
        let for_us = get("WATCHDOG_PID").is_none_or(|pid| pid.parse() == Ok(std::process::id()));
        let watchdog = get("WATCHDOG_USEC")
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|us| *us > 0 && for_us)
            .map(Duration::from_micros);
        Notifier { socket, watchdog }
    }

    /// How often to send `WATCHDOG=1`: half the interval systemd asked for.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.socket.as_ref().and(self.watchdog).map(|d| d / 2)
    }

    pub fn ready(&self) {
        self.send("READY=1");
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", status.replace('\n', " ")));
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// Sends one datagram; failures are logged, never fatal (the manager may be gone already).
    fn send(&self, msg: &str) {
        let Some(target) = &self.socket else { return };
        if let Err(e) = send_to(target, msg.as_bytes()) {
            tracing::warn!(error = %e, message = msg, "could not notify the service manager");
        }
    }
}

fn send_to(target: &Target, msg: &[u8]) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    match target {
        Target::Path(p) => sock.send_to(msg, p).map(drop),
        Target::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(msg, &addr).map(drop)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_env as env;

    #[test]
    fn sends_datagrams_to_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::from_env(&env(&[("NOTIFY_SOCKET", path.to_str().unwrap())]));
        n.ready();
        n.status("serving");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STATUS=serving");
    }

    #[test]
    fn watchdog_interval_is_half_and_respects_pid() {
        let n = Notifier::from_env(&env(&[
            ("NOTIFY_SOCKET", "/x"),
            ("WATCHDOG_USEC", "2000000"),
        ]));
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(1)));
        let n = Notifier::from_env(&env(&[
            ("NOTIFY_SOCKET", "/x"),
            ("WATCHDOG_USEC", "2000000"),
            ("WATCHDOG_PID", "1"),
        ]));
        assert_eq!(n.watchdog_interval(), None);
        assert_eq!(Notifier::from_env(&[]).watchdog_interval(), None);
    }
}
