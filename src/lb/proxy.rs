//! The request path: rewrite the head, choose an upstream, send, retry where `retry` says it is
//! safe, and stream the answer back. Retries all happen before the response head goes to the
//! client, so nothing is retried once a byte went out.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Incoming};
use hyper::http::request::Parts;
use hyper::http::uri::PathAndQuery;
use hyper::http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header,
};
use hyper::upgrade::OnUpgrade;
use ipnet::IpNet;

use crate::lb::access::Record;
use crate::lb::balance::{Balancer, Tried};
use crate::lb::body::{Replay, RequestBody};
use crate::lb::config::LbConfig;
use crate::lb::core::Core;
use crate::lb::forwarded;
use crate::lb::headers::{self, Direction, NOT_PROCESSED};
use crate::lb::pool::{ConnectError, Pool, Sender};
use crate::lb::response::ResponseBody;
use crate::lb::retry::{self, Failure};
use crate::lb::upstream::{InFlight, Upstream};
use crate::lb::websocket::Tunnels;

/// Who sent a request: fixed for a client connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    pub tls: bool,
}

/// Request-path settings, converted once from the config.
struct Settings {
    tries: u32,
    budget: Duration,
    first_byte: Duration,
    read: Duration,
    replay_limit: usize,
    trusted: Vec<IpNet>,
    request_id: HeaderName,
}

pub struct Proxy {
    core: Arc<Core>,
    /// This worker's connections to the upstreams.
    pool: Arc<Pool>,
    balancer: Balancer,
    settings: Settings,
    tunnels: Tunnels,
}

/// How a request's attempts ended.
enum Outcome {
    /// Pass this upstream response on.
    Upstream(Answer),
    /// Answer locally; `processed` when some upstream may have acted on the request.
    Local { status: StatusCode, processed: bool },
    /// The client's body broke off: its fault, nobody else's.
    ClientGone,
}

/// An upstream's response head, the upstream counted as busy with it, and the connection it
/// came on (reusable once the body is read).
struct Answer {
    response: Response<Incoming>,
    upstream: InFlight,
    connection: Sender,
}

impl Proxy {
    pub fn new(config: &LbConfig, core: Arc<Core>, tunnels: Tunnels) -> Proxy {
        let t = &config.timeouts;
        let pool = Pool::new(config.upstreams.len(), t.pool_idle.get(), t.connect.get());
        let settings = Settings {
            tries: config.retry.tries,
            budget: config.retry.budget.get(),
            first_byte: t.first_byte.get(),
            read: t.read.get(),
            replay_limit: config.retry.replay_buffer.as_usize(),
            trusted: config.trusted_proxies.clone(),
            request_id: config.request_id_header.0.clone(),
        };
        Proxy {
            pool: Arc::new(pool),
            balancer: Balancer::new(config.policy),
            core,
            settings,
            tunnels,
        }
    }

    /// Closes idle upstream connections as they expire, until stop.
    pub async fn reap_idle(&self, shutdown: crate::lifecycle::Shutdown) {
        self.pool.reap(shutdown).await
    }

    pub async fn handle(&self, mut req: Request<Incoming>, peer: Peer) -> Response<ResponseBody> {
        // Read before the rewrite: `Connection: upgrade` is itself hop-by-hop.
        let upgrade =
            headers::upgrade_protocol(req.headers()).map(|p| (p, hyper::upgrade::on(&mut req)));
        let (mut parts, body) = req.into_parts();
        let (request_id, client) = rewrite_head(
            &mut parts.headers,
            peer,
            &self.settings.request_id,
            &self.settings.trusted,
        );
        let mut record = Record::new(
            self.core.clone(),
            parts.method.clone(),
            parts.uri.path_and_query().cloned(),
            client,
            request_id,
        );
        if let Some(refusal) = Refusal::of(&parts) {
            return self.refuse(refusal, record);
        }
        if let Some((protocol, _)) = &upgrade {
            headers::set_upgrade(&mut parts.headers, protocol.clone());
        }
        let replay = (!body.is_end_stream())
            .then(|| Replay::new(body, self.settings.replay_limit, self.settings.read));
        match self.forward(&parts, replay.as_ref(), &mut record).await {
            Outcome::Upstream(answer) => {
                record.serve_from(answer.upstream);
                self.respond(
                    answer.response,
                    answer.connection,
                    upgrade.map(|(_, on)| on),
                    record,
                )
            }
            Outcome::Local { status, processed } => self.local(status, processed, record),
            // Part of the body may have reached the upstream: not safe to call it unprocessed.
            Outcome::ClientGone => self.local(StatusCode::BAD_REQUEST, true, record),
        }
    }

    async fn forward(&self, parts: &Parts, body: Option<&Replay>, record: &mut Record) -> Outcome {
        let deadline = Instant::now() + self.settings.budget;
        let mut tried = Tried::default();
        let mut processed = false;
        let mut last = Outcome::Local {
            status: StatusCode::SERVICE_UNAVAILABLE,
            processed: false,
        };
        while let Some(pick) = self.balancer.pick(&self.core.upstreams, tried) {
            if pick.panic {
                self.core.metrics.panic_picks.inc();
            }
            let upstream = pick.upstream.begin();
            let up = upstream.upstream().clone();
            tried.add(up.index);
            record.attempts += 1;
            let (failure, response) = match self.attempt(parts, &up, body).await {
                Ok((response, connection)) => {
                    let failure = failure_of(&response);
                    let answer = Answer {
                        response,
                        upstream,
                        connection,
                    };
                    match failure {
                        None => {
                            self.core.upstreams.success(&up);
                            return Outcome::Upstream(answer);
                        }
                        Some(failure) => (failure, Some(answer)),
                    }
                }
                Err(_) if body.is_some_and(Replay::client_failed) => return Outcome::ClientGone,
                Err(failure) => (failure, None),
            };

            self.count_failure(&up, failure);
            processed |= failure.maybe_processed();
            let replayable = body.is_none_or(Replay::is_replayable);
            let again = record.attempts < self.settings.tries
                && Instant::now() < deadline
                && retry::may_retry(failure, &parts.method, replayable);
            last = match response {
                Some(answer) => Outcome::Upstream(answer),
                None => Outcome::Local {
                    status: status_for(failure),
                    processed,
                },
            };
            if !again {
                return last;
            }
            self.core.metrics.retry(failure.reason());
            tracing::debug!(
                request_id = record.request_id().to_str().unwrap_or("-"),
                upstream = %up.name,
                failure = ?failure,
                "retrying on another upstream"
            );
        }
        last
    }

    /// One try on one upstream: the response head and its connection, or how it failed.
    async fn attempt(
        &self,
        parts: &Parts,
        up: &Upstream,
        body: Option<&Replay>,
    ) -> Result<(Response<Incoming>, Sender), Failure> {
        let outgoing = match body {
            Some(replay) => RequestBody::Attempt(replay.attempt(self.settings.read)),
            None => RequestBody::Empty,
        };
        let request = upstream_request(parts, up, outgoing);
        tokio::select! {
            sent = self.send(up, request) => sent,
            _ = self.first_byte_deadline(body) => Err(Failure::Timeout),
        }
    }

    async fn send(
        &self,
        up: &Upstream,
        request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Sender), Failure> {
        let connect_failed = |e: ConnectError| {
            tracing::debug!(upstream = %up.name, error = %e, "cannot connect to upstream");
            Failure::Connect
        };
        let sent_failed = |e: hyper::Error| {
            tracing::debug!(upstream = %up.name, error = %error_chain(&e), "upstream request failed");
            Failure::Error
        };
        let (mut sender, reused) = self.pool.checkout(up).await.map_err(connect_failed)?;
        match sender.try_send_request(request).await {
            Ok(response) => Ok((response, sender)),
            Err(mut e) => match e.take_message() {
                // The idle connection closed just before this request went out: nothing was
                // sent, so a fresh connection may carry it.
                Some(request) if reused => {
                    let mut sender = self.pool.connect(up).await.map_err(connect_failed)?;
                    let response = sender.send_request(request).await.map_err(sent_failed)?;
                    Ok((response, sender))
                }
                Some(_) => Err(Failure::Connect),
                None => Err(sent_failed(e.into_error())),
            },
        }
    }

    /// Resolves when the upstream took too long: the body upload stalled for the read timeout,
    /// or no response head came within the first-byte timeout after the body was sent.
    async fn first_byte_deadline(&self, body: Option<&Replay>) {
        if let Some(replay) = body {
            loop {
                let seen = replay.progress();
                tokio::select! {
                    _ = replay.sent() => break,
                    _ = tokio::time::sleep(self.settings.read) => if replay.progress() == seen { return },
                }
            }
        }
        tokio::time::sleep(self.settings.first_byte).await
    }

    fn count_failure(&self, up: &Upstream, failure: Failure) {
        if !failure.counts_against_upstream() {
            if up.mark_draining(self.core.upstreams.clock.now()) {
                tracing::info!(upstream = %up.name, "upstream is draining: no new requests go to it");
            }
            return;
        }
        if let Some(ms) = self.core.upstreams.failure(up) {
            tracing::warn!(upstream = %up.name, failure = ?failure, ejected_for_ms = ms, "upstream ejected after repeated failures");
        }
    }

    fn respond(
        &self,
        mut response: Response<Incoming>,
        connection: Sender,
        client_upgrade: Option<OnUpgrade>,
        mut record: Record,
    ) -> Response<ResponseBody> {
        record.status = response.status().as_u16();
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The connection becomes the tunnel; it never goes back to the pool.
            return self.switch_protocols(response, client_upgrade, record);
        }
        record.reuse_after(self.pool.clone(), connection);
        let headers = response.headers_mut();
        headers::strip_hop_by_hop(headers, Direction::Response);
        add_request_id(headers, &self.settings.request_id, record.request_id());
        let (head, body) = response.into_parts();
        Response::from_parts(
            head,
            ResponseBody::upstream(body, self.settings.read, record),
        )
    }

    fn switch_protocols(
        &self,
        mut response: Response<Incoming>,
        client_upgrade: Option<OnUpgrade>,
        mut record: Record,
    ) -> Response<ResponseBody> {
        let (Some(client_side), Some(protocol)) = (
            client_upgrade,
            response.headers().get(header::UPGRADE).cloned(),
        ) else {
            // A 101 nobody asked for cannot be passed on: the client would not know the protocol.
            return self.local(StatusCode::BAD_GATEWAY, true, record);
        };
        let upstream_side = hyper::upgrade::on(&mut response);
        let headers = response.headers_mut();
        headers::strip_hop_by_hop(headers, Direction::Response);
        headers::set_upgrade(headers, protocol);
        add_request_id(headers, &self.settings.request_id, record.request_id());
        if let Some(upstream) = record.take_in_flight() {
            let request_id = record.request_id().to_str().unwrap_or("-").to_owned();
            self.tunnels
                .open(client_side, upstream_side, upstream, request_id);
        }
        let (head, _) = response.into_parts();
        Response::from_parts(head, ResponseBody::local(Bytes::new(), Some(record)))
    }

    /// The lb's answer when the attempts found no upstream response to pass on.
    fn local(&self, status: StatusCode, processed: bool, record: Record) -> Response<ResponseBody> {
        let text = match status {
            StatusCode::BAD_GATEWAY => "upstream failed\n",
            StatusCode::GATEWAY_TIMEOUT => "upstream timed out\n",
            StatusCode::SERVICE_UNAVAILABLE => "no upstream available\n",
            _ => "request body incomplete\n",
        };
        self.answer(status, text, processed, record)
    }

    /// The lb's answer to a request it refused before any upstream saw it.
    fn refuse(&self, refusal: Refusal, record: Record) -> Response<ResponseBody> {
        let (status, text) = refusal.answer();
        let mut response = self.answer(status, text, false, record);
        if refusal.closes() {
            // hyper closes the connection after a response saying so, and reads nothing more.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    /// An answer from the lb itself. `Quire-Not-Processed` tells a client (or an outer lb) that no
    /// upstream acted on the request, so sending it again is safe.
    fn answer(
        &self,
        status: StatusCode,
        text: &'static str,
        processed: bool,
        mut record: Record,
    ) -> Response<ResponseBody> {
        record.status = status.as_u16();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if !processed {
            headers.insert(NOT_PROCESSED.clone(), HeaderValue::from_static("1"));
        }
        add_request_id(&mut headers, &self.settings.request_id, record.request_id());
        let mut response = Response::new(ResponseBody::local(
            Bytes::from_static(text.as_bytes()),
            Some(record),
        ));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }
}

/// A request the lb answers itself, before choosing an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The lb forwards requests; it does not open tunnels on demand.
    Connect,
    /// More than one `Host` line (RFC 9112 §3.2: 400). hyper passes them all on, and the lb,
    /// the upstream and the app could each believe a different one.
    SeveralHosts,
}

impl Refusal {
    fn of(parts: &Parts) -> Option<Refusal> {
        if parts.method == Method::CONNECT {
            Some(Refusal::Connect)
        } else if parts.headers.get_all(header::HOST).iter().nth(1).is_some() {
            Some(Refusal::SeveralHosts)
        } else {
            None
        }
    }

    fn answer(self) -> (StatusCode, &'static str) {
        match self {
            Refusal::Connect => (StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported\n"),
            Refusal::SeveralHosts => (StatusCode::BAD_REQUEST, "more than one Host header\n"),
        }
    }

    /// A malformed request says its sender frames messages differently from the lb: nothing
    /// else on that connection is trusted.
    fn closes(self) -> bool {
        self == Refusal::SeveralHosts
    }
}

/// Rewrites a client's request head for the upstream; the request id and the original client.
/// Hop-by-hop headers go first, so that a client's `Connection` list cannot remove what the lb
/// adds next (the request id and `X-Forwarded-*`).
fn rewrite_head(
    headers: &mut HeaderMap,
    peer: Peer,
    request_id: &HeaderName,
    trusted: &[IpNet],
) -> (HeaderValue, IpAddr) {
    headers::strip_hop_by_hop(headers, Direction::Request);
    let id = headers::request_id(headers, request_id);
    let client = forwarded::apply(headers, peer.addr.ip(), peer.tls, trusted);
    (id, client)
}

/// Whether a response head means the attempt failed.
fn failure_of(response: &Response<Incoming>) -> Option<Failure> {
    let status = response.status().as_u16();
    if status == 503 && response.headers().contains_key(&NOT_PROCESSED) {
        return Some(Failure::NotProcessed);
    }
    retry::is_retryable_status(status).then_some(Failure::Status(status))
}

fn status_for(failure: Failure) -> StatusCode {
    match failure {
        Failure::Timeout => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    }
}

fn add_request_id(headers: &mut HeaderMap, name: &HeaderName, id: &HeaderValue) {
    if !headers.contains_key(name) {
        headers.insert(name.clone(), id.clone());
    }
}

/// The request as it goes to `up`: same method, target and headers.
fn upstream_request(parts: &Parts, up: &Upstream, body: RequestBody) -> Request<RequestBody> {
    let target = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = target.into();
    *request.headers_mut() = parts.headers.clone();
    // An HTTP/1.0 client may send no Host; HTTP/1.1 upstreams require one.
    if !request.headers().contains_key(header::HOST)
        && let Ok(host) = HeaderValue::from_str(up.url.authority.as_str())
    {
        request.headers_mut().insert(header::HOST, host);
    }
    request
}

/// An error and its causes on one line: hyper's top-level messages alone ("client error
/// (Connect)") do not say what happened.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::headers::test_headers as headers;

    fn value<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
        h.get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn a_connection_list_cannot_remove_what_the_lb_adds() {
        let mut h = headers(&[
            ("host", "reports.example.com"),
            (
                "connection",
                "close, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, X-Request-Id, Host",
            ),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-request-id", "client-id"),
        ]);
        let peer = Peer {
            addr: "203.0.113.7:40000".parse().unwrap(),
            tls: false,
        };
        let name = HeaderName::from_static("x-request-id");
        let (id, client) = rewrite_head(&mut h, peer, &name, &[]);
        assert_eq!(client, "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!(value(&h, "host"), Some("reports.example.com"));
        assert_eq!(value(&h, "x-forwarded-for"), Some("203.0.113.7"));
        assert_eq!(value(&h, "x-forwarded-proto"), Some("http"));
        assert_eq!(value(&h, "x-forwarded-host"), Some("reports.example.com"));
        assert_eq!(h.get(&name), Some(&id));
        assert_ne!(id, "client-id", "the client made its id hop-by-hop");
        assert!(h.get("connection").is_none());
    }

    fn head(method: Method, hosts: &[&str]) -> Parts {
        let mut request = Request::builder().method(method).uri("/");
        for host in hosts {
            request = request.header(header::HOST, *host);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn connect_and_several_hosts_are_refused() {
        assert_eq!(Refusal::of(&head(Method::GET, &["a.example"])), None);
        assert_eq!(
            Refusal::of(&head(Method::GET, &[])),
            None,
            "an HTTP/1.0 client may send no Host"
        );
        assert_eq!(
            Refusal::of(&head(Method::GET, &["a.example", "b.example"])),
            Some(Refusal::SeveralHosts)
        );
        assert_eq!(
            Refusal::of(&head(Method::POST, &["a.example", "a.example"])),
            Some(Refusal::SeveralHosts),
            "even when they agree"
        );
        assert_eq!(
            Refusal::of(&head(Method::CONNECT, &["a.example"])),
            Some(Refusal::Connect)
        );
        assert!(Refusal::SeveralHosts.closes() && !Refusal::Connect.closes());
    }
}
