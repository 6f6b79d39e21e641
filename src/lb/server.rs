//! The client-facing side: worker threads, each with its own listener socket on the shared
//! address (`SO_REUSEPORT`, the kernel spreads connections), a single-threaded runtime, and its
//! own upstream connections, so a request is handled start to end on one core without waking
//! another thread (what nginx's worker processes do). Each worker accepts connections (TLS first
//! when configured), serves HTTP/1.1 with the proxy as the service, and on drain stops accepting
//! and lets every connection finish its current request before closing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::task::TaskTracker;

use crate::lb::config::LbConfig;
use crate::lb::core::Core;
use crate::lb::proxy::{Peer, Proxy};
use crate::lb::tls::Tls;
use crate::lb::websocket::Tunnels;
use crate::lifecycle::Shutdown;

/// What every worker thread shares.
pub struct Shared {
    pub config: Arc<LbConfig>,
    pub core: Arc<Core>,
    pub tls: Option<Arc<Tls>>,
    pub tracker: TaskTracker,
    pub shutdown: Shutdown,
    /// Worker threads still running; the watchdog is fed only while all are.
    pub alive: AtomicUsize,
}

/// Listener sockets for `workers` threads on one address. With port 0 the first socket's port is
/// used for the rest.
pub fn bind(addr: SocketAddr, workers: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let first = reuse_port_listener(addr)?;
    let addr = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..workers {
        all.push(reuse_port_listener(addr)?);
    }
    Ok(all)
}

fn reuse_port_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    // Bound to whichever runtime runs this; the worker registers it again with its own.
    socket.listen(1024)?.into_std()
}

/// Starts worker thread `index` serving `listener` until the stop phase.
pub fn spawn_worker(
    index: usize,
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
) -> std::io::Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    shared.alive.fetch_add(1, Ordering::SeqCst);
    std::thread::Builder::new()
        .name(format!("lb-worker-{index}"))
        .spawn(move || {
            runtime.block_on(work(listener, &shared));
            shared.alive.fetch_sub(1, Ordering::SeqCst);
        })
}

async fn work(listener: std::net::TcpListener, shared: &Arc<Shared>) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "worker cannot use its listener");
            return;
        }
    };
    let lb = &*shared.config;
    let tunnels = Tunnels {
        idle: lb.timeouts.tunnel_idle.get(),
        close_on_unreachable: lb.websocket.close_on_unreachable,
        tracker: shared.tracker.clone(),
        shutdown: shared.shutdown.clone(),
        core: shared.core.clone(),
    };
    let proxy = Arc::new(Proxy::new(lb, shared.core.clone(), tunnels));
    tokio::spawn({
        let (proxy, shutdown) = (proxy.clone(), shared.shutdown.clone());
        async move { proxy.reap_idle(shutdown).await }
    });
    let server = Arc::new(Server::new(
        lb,
        proxy,
        shared.tls.clone(),
        shared.tracker.clone(),
        shared.shutdown.clone(),
        shared.core.clone(),
    ));
    server.accept_loop(listener).await;
    // Open connections and tunnels run on this thread's runtime until they finish or stop.
    shared.shutdown.stopped().await;
}

pub struct Server {
    http: http1::Builder,
    proxy: Arc<Proxy>,
    tls: Option<Arc<Tls>>,
    handshake_timeout: Duration,
    pub tracker: TaskTracker,
    shutdown: Shutdown,
    core: Arc<Core>,
}

impl Server {
    pub fn new(
        config: &LbConfig,
        proxy: Arc<Proxy>,
        tls: Option<Arc<Tls>>,
        tracker: TaskTracker,
        shutdown: Shutdown,
        core: Arc<Core>,
    ) -> Server {
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .keep_alive(true)
            // hyper runs this timer whenever a connection waits for a request head, so it bounds
            // idle keep-alive connections and slow senders alike.
            .header_read_timeout(config.timeouts.client_idle.get())
            .max_header_size(config.max_header_size.as_usize());
        // hyper keeps up to 100 header slots on the stack; any other number costs a heap
        // allocation per request, so only set it when asked.
        if config.max_headers != 100 {
            http.max_headers(config.max_headers);
        }
        Server {
            http,
            proxy,
            tls,
            handshake_timeout: config.timeouts.tls_handshake.get(),
            tracker,
            shutdown,
            core,
        }
    }

    /// Accepts until the drain phase begins.
    pub async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = self.shutdown.draining() => return,
            };
            match accepted {
                Ok((stream, addr)) => {
                    let me = self.clone();
                    self.tracker
                        .spawn(async move { me.connection(stream, addr).await });
                }
                // Out of file descriptors and the like: pause instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn connection(&self, stream: TcpStream, addr: SocketAddr) {
        let _ = stream.set_nodelay(true);
        self.core.metrics.connections.inc();
        match &self.tls {
            None => {
                self.serve(TokioIo::new(stream), Peer { addr, tls: false })
                    .await
            }
            Some(tls) => match tokio::time::timeout(self.handshake_timeout, tls.accept(stream))
                .await
            {
                Ok(Ok(stream)) => {
                    self.serve(TokioIo::new(stream), Peer { addr, tls: true })
                        .await
                }
                Ok(Err(e)) => tracing::debug!(client = %addr, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(client = %addr, "TLS handshake timed out"),
            },
        }
        self.core.metrics.connections.dec();
    }

    async fn serve<I>(&self, io: I, peer: Peer)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let proxy = self.proxy.clone();
        let service = service_fn(move |req| {
            let proxy = proxy.clone();
            async move { Ok::<_, Infallible>(proxy.handle(req, peer).await) }
        });
        let mut conn = pin!(self.http.serve_connection(io, service).with_upgrades());
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = self.shutdown.draining() => {
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    r = conn.as_mut() => r,
                    _ = self.shutdown.stopped() => Ok(()),
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(client = %peer.addr, error = %e, "client connection ended with an error");
        }
    }
}
