//! One record per request, finished when the response is done (or abandoned): the access log
//! line in Quire's log format (target `quire::lb::access`), the response metrics, and the release
//! of the upstream's in-flight count.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use hyper::http::uri::PathAndQuery;
use hyper::http::{HeaderValue, Method};

use crate::lb::core::Core;
use crate::lb::pool::{Pool, Sender};
use crate::lb::upstream::{InFlight, Upstream};

pub struct Record {
    core: Arc<Core>,
    start: Instant,
    method: Method,
    target: Option<PathAndQuery>,
    client: IpAddr,
    request_id: HeaderValue,
    pub status: u16,
    pub attempts: u32,
    pub bytes: u64,
    upstream: Option<Arc<Upstream>>,
    in_flight: Option<InFlight>,
    /// The upstream connection and its pool: reusable once the response body was read to the end.
    connection: Option<(Arc<Pool>, Sender)>,
    error: Option<String>,
}

impl Record {
    pub fn new(
        core: Arc<Core>,
        method: Method,
        target: Option<PathAndQuery>,
        client: IpAddr,
        request_id: HeaderValue,
    ) -> Record {
        Record {
            core,
            start: Instant::now(),
            method,
            target,
            client,
            request_id,
            status: 0,
            attempts: 0,
            bytes: 0,
            upstream: None,
            in_flight: None,
            connection: None,
            error: None,
        }
    }

    pub fn request_id(&self) -> &HeaderValue {
        &self.request_id
    }

    /// The upstream serving the response; it counts as busy until the record ends.
    pub fn serve_from(&mut self, upstream: InFlight) {
        self.upstream = Some(upstream.upstream().clone());
        self.in_flight = Some(upstream);
    }

    pub fn reuse_after(&mut self, pool: Arc<Pool>, connection: Sender) {
        self.connection = Some((pool, connection));
    }

    /// The response body was read to the end: its connection is free for the next request.
    pub fn body_done(&mut self) {
        let (Some((pool, mut connection)), Some(up)) = (self.connection.take(), &self.upstream)
        else {
            return;
        };
        let index = up.index;
        if connection.is_ready() {
            pool.put_back(index, connection);
            return;
        }
        // Still finishing (typically a request body the upstream answered before reading it
        // all): back in the pool once it is done, so no request ever waits on a busy one.
        tokio::spawn(async move {
            if connection.ready().await.is_ok() {
                pool.put_back(index, connection);
            }
        });
    }

    /// Hands the busy count over to a tunnel that outlives the request.
    pub fn take_in_flight(&mut self) -> Option<InFlight> {
        self.in_flight.take()
    }

    /// The upstream's body failed mid-stream (it died, or paused past the read timeout).
    pub fn body_failed(&mut self, error: String) {
        if let Some(u) = &self.upstream {
            self.core.upstreams.failure(u);
        }
        self.error = Some(error);
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        self.core.metrics.response(self.status);
        self.core.metrics.duration.observe(elapsed.as_secs_f64());
        if !self.core.access_log {
            return;
        }
        let target = self.target.as_ref().map_or("/", PathAndQuery::as_str);
        let upstream = self.upstream.as_ref().map_or("-", |u| u.name.as_str());
        let request_id = self.request_id.to_str().unwrap_or("-");
        tracing::info!(
            target: "quire::lb::access",
            request_id = %request_id,
            client = %self.client,
            method = %self.method,
            target = %target,
            status = self.status,
            upstream = %upstream,
            attempts = self.attempts,
            bytes = self.bytes,
            ms = format_args!("{:.3}", elapsed.as_secs_f64() * 1000.0),
            error = self.error.as_deref(),
            "request"
        );
    }
}
