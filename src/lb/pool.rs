//! Keep-alive connections to the upstreams, one idle stack per upstream.
//!
//! A connection goes back to its stack when the response body has been read to the end (so the
//! connection is free again), and is reused most-recent-first so the fewest connections stay
//! warm. Idle ones are closed after `pool_idle`, before the app's own keep-alive timeout can close
//! them under a request. Connecting is a separate step from sending, so "nothing was sent" is
//! known for certain when it fails.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::lb::body::RequestBody;
use crate::lb::upstream::Upstream;
use crate::lifecycle::Shutdown;

/// Idle connections kept per upstream at most; more are closed.
const MAX_IDLE: usize = 1024;

pub type Sender = SendRequest<RequestBody>;

pub struct Pool {
    idle: Vec<Mutex<Vec<Idle>>>,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// Opening a connection failed; nothing was sent.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP handshake failed: {0}")]
    Handshake(#[from] hyper::Error),
}

impl Pool {
    pub fn new(upstreams: usize, idle_timeout: Duration, connect_timeout: Duration) -> Pool {
        Pool {
            idle: (0..upstreams).map(|_| Mutex::default()).collect(),
            idle_timeout,
            connect_timeout,
        }
    }

    fn stack(&self, index: usize) -> Option<MutexGuard<'_, Vec<Idle>>> {
        self.idle
            .get(index)
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A connection ready for a request: the most recently used idle one, else a new one.
    /// Returns whether it was reused.
    pub async fn checkout(&self, up: &Upstream) -> Result<(Sender, bool), ConnectError> {
        while let Some(mut sender) = self.pop_idle(up.index) {
            // Normally ready at once; the connection may still be finishing the previous
            // response, or have been closed by the upstream meanwhile.
            if sender.ready().await.is_ok() {
                return Ok((sender, true));
            }
        }
        Ok((self.connect(up).await?, false))
    }

    fn pop_idle(&self, index: usize) -> Option<Sender> {
        let mut stack = self.stack(index)?;
        while let Some(idle) = stack.pop() {
            if idle.since.elapsed() < self.idle_timeout && !idle.sender.is_closed() {
                return Some(idle.sender);
            }
        }
        None
    }

    pub async fn connect(&self, up: &Upstream) -> Result<Sender, ConnectError> {
        let authority = &up.url.authority;
        let address = (authority.host(), authority.port_u16().unwrap_or(80));
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| ConnectError::Timeout(self.connect_timeout))??;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Puts a connection whose last response was read to the end back for reuse.
    pub fn put_back(&self, index: usize, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        if let Some(mut stack) = self.stack(index)
            && stack.len() < MAX_IDLE
        {
            stack.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Closes idle connections past `idle_timeout`, every half of it, until stop.
    pub async fn reap(&self, shutdown: Shutdown) {
        let mut tick = tokio::time::interval(self.idle_timeout / 2);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.stopped() => return,
            }
            for index in 0..self.idle.len() {
                if let Some(mut stack) = self.stack(index) {
                    stack.retain(|idle| {
                        idle.since.elapsed() < self.idle_timeout && !idle.sender.is_closed()
                    });
                }
            }
        }
    }
}
