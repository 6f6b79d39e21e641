//! The integration-test harness: starts real processes (quire instances, PostgreSQL, nats-server)
//! in throwaway directories on free ports, and a client that speaks the API like a user would.

#![allow(dead_code)] // each test module uses a different part of the harness

pub mod agent;
pub mod app;
pub mod browser;
pub mod dr;
pub mod ha;
pub mod lb;
pub mod license;
pub mod mariadb;
pub mod nats;
pub mod packages;
pub mod postgres;
pub mod process;
pub mod sandbox;
pub mod smtp;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use process::Proc;

/// The `quire` binary under test.
pub fn quire_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_quire"))
}

/// A port nothing listens on right now.
///
/// The port is released before it is used, so the kernel may offer it again: a port handed out
/// once in this test binary is never handed out twice (two nodes of one cluster once got the same
/// port for two listeners).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Log output of spawned processes goes to stderr of the test only when `QUIRE_TEST_LOG` is set;
/// otherwise it is kept in files and printed for failing tests.
pub fn verbose() -> bool {
    std::env::var_os("QUIRE_TEST_LOG").is_some()
}
