//! WebSocket (and any other `Upgrade`) passthrough: once the upstream answered 101, the client's
//! and the upstream's connections are spliced byte for byte. A tunnel closes when either side
//! closes, after `tunnel_idle` without traffic either way, when the lb stops, and (optionally)
//! when health probes find its upstream unreachable, so clients reconnect to a live instance
//! instead of waiting on a dead one. A merely draining instance keeps its tunnels.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::task::TaskTracker;

use crate::lb::core::Core;
use crate::lb::upstream::{Clock, InFlight};
use crate::lifecycle::Shutdown;

pub struct Tunnels {
    pub idle: Duration,
    pub close_on_unreachable: bool,
    pub tracker: TaskTracker,
    pub shutdown: Shutdown,
    pub core: Arc<Core>,
}

impl Tunnels {
    /// Splices the two upgraded connections in a task of their own; `upstream` stays counted as
    /// busy until the tunnel ends.
    pub fn open(
        &self,
        client: OnUpgrade,
        upstream_side: OnUpgrade,
        upstream: InFlight,
        request_id: String,
    ) {
        let (idle, close_on_unreachable) = (self.idle, self.close_on_unreachable);
        let (shutdown, core) = (self.shutdown.clone(), self.core.clone());
        self.tracker.spawn(async move {
            let (client, upstream_io) = match tokio::try_join!(client, upstream_side) {
                Ok(both) => both,
                Err(e) => {
                    tracing::debug!(request_id, error = %e, "upgrade did not complete");
                    return;
                }
            };
            core.metrics.tunnels.inc();
            let up = upstream.upstream().clone();
            let unreachable = up.unreachable();
            let clock = core.upstreams.clock;
            let last = Arc::new(AtomicU64::new(clock.now()));
            let mut a = Watched {
                inner: TokioIo::new(client),
                last: last.clone(),
                clock,
            };
            let mut b = Watched {
                inner: TokioIo::new(upstream_io),
                last: last.clone(),
                clock,
            };
            let why = tokio::select! {
                r = tokio::io::copy_bidirectional(&mut a, &mut b) => match r {
                    Ok(_) => "closed",
                    Err(_) => "connection error",
                },
                _ = idle_for(idle, &last, clock) => "idle timeout",
                _ = unreachable, if close_on_unreachable => "upstream unreachable",
                _ = shutdown.stopped() => "lb stopping",
            };
            core.metrics.tunnels.dec();
            tracing::debug!(request_id, upstream = %up.name, reason = why, "tunnel ended");
            drop(upstream);
        });
    }
}

/// Resolves once nothing moved for `idle`.
async fn idle_for(idle: Duration, last: &AtomicU64, clock: Clock) {
    let idle_ms = crate::lb::passive::millis(idle);
    loop {
        let quiet = clock.now().saturating_sub(last.load(Ordering::Relaxed));
        if quiet >= idle_ms {
            return;
        }
        tokio::time::sleep(Duration::from_millis(idle_ms - quiet)).await;
    }
}

/// A stream that notes when data last arrived.
struct Watched<T> {
    inner: T,
    last: Arc<AtomicU64>,
    clock: Clock,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.last.store(this.clock.now(), Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
