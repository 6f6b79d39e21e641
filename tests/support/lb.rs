//! Harness for `quire lb` tests: real HTTP upstream servers, killable upstream processes, and
//! the load balancer itself as a process.
//!
//! A killable upstream is a `quire lb` process with one upstream (an in-test server) in front:
//! killing it with SIGKILL is an upstream process dying, sockets and all, while the in-test server
//! behind it keeps counting what actually arrived.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::app::quire_command;
use super::{Proc, free_port, wait_for};

type Body = BoxBody<Bytes, std::io::Error>;

/// What an upstream server saw and how it should behave next.
#[derive(Default)]
pub struct Behaviour {
    /// `/readyz` answers 503 (a draining instance) when false.
    pub draining: AtomicBool,
    /// Every request but `/readyz` gets 502.
    pub failing: AtomicBool,
    /// Every request but `/readyz` gets 503 with `Quire-Not-Processed: 1`, untouched.
    pub refusing: AtomicBool,
    /// Requests other than probes that were handled (not refused).
    pub handled: AtomicUsize,
    /// POSTs that were executed.
    pub posts: AtomicUsize,
    pub refused: AtomicUsize,
    /// Connections that carried requests other than probes.
    connections: Mutex<HashSet<usize>>,
}

impl Behaviour {
    pub fn handled(&self) -> usize {
        self.handled.load(Ordering::SeqCst)
    }
    pub fn posts(&self) -> usize {
        self.posts.load(Ordering::SeqCst)
    }
    pub fn connections(&self) -> usize {
        self.connections.lock().unwrap().len()
    }
}

/// An HTTP upstream server inside the test process. Its answers name it, so a test sees which
/// upstream served a request:
/// - `/readyz`: 200, or 503 while draining
/// - `/echo`: JSON with the method, path, headers and body length it received
/// - `/slow?ms=N`: answers after N ms
/// - `/post?ms=N`: counts a POST at once, answers after N ms
/// - `/big?mb=N`: N MiB, streamed in 64 KiB chunks
/// - `/stall`: a head and a few bytes, then nothing
/// - `/ws`: a WebSocket echoing `NAME:message`
/// - anything else: the name
pub struct TestUpstream {
    pub name: String,
    pub addr: SocketAddr,
    pub behaviour: Arc<Behaviour>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestUpstream {
    pub async fn start(name: &str) -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let behaviour = Arc::new(Behaviour::default());
        let (b, n) = (behaviour.clone(), name.to_owned());
        let task = tokio::spawn(async move {
            let mut next_id = 0usize;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                next_id += 1;
                let (b, n, id) = (b.clone(), n.clone(), next_id);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, n.clone(), b.clone(), id)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        TestUpstream {
            name: name.to_owned(),
            addr,
            behaviour,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn handle(
    req: Request<Incoming>,
    name: String,
    b: Arc<Behaviour>,
    conn: usize,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/readyz" {
        let draining = b.draining.load(Ordering::SeqCst);
        let status = if draining {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        return Ok(text(status, &name));
    }
    if b.refusing.load(Ordering::SeqCst) {
        b.refused.fetch_add(1, Ordering::SeqCst);
        let mut r = text(StatusCode::SERVICE_UNAVAILABLE, "draining");
        r.headers_mut()
            .insert("quire-not-processed", "1".parse().unwrap());
        return Ok(r);
    }
    if b.failing.load(Ordering::SeqCst) {
        return Ok(text(StatusCode::BAD_GATEWAY, &name));
    }
    b.handled.fetch_add(1, Ordering::SeqCst);
    b.connections.lock().unwrap().insert(conn);
    let ms = query_number(&req, "ms");
    Ok(match path.as_str() {
        "/echo" => echo(req, &name).await,
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(StatusCode::OK, &name)
        }
        "/post" => {
            if req.method() == hyper::Method::POST {
                b.posts.fetch_add(1, Ordering::SeqCst);
            }
            let _ = req.into_body().collect().await;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(StatusCode::OK, &name)
        }
        "/big" => big(query_number(&req, "mb"), &name),
        "/stall" => stall(&name),
        "/ws" => websocket(req, name),
        _ => text(StatusCode::OK, &name),
    })
}

fn query_number(req: &Request<Incoming>, key: &str) -> u64 {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        .unwrap_or(0)
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(full(body.to_owned()));
    *r.status_mut() = status;
    r.headers_mut().insert("x-upstream", body.parse().unwrap());
    r
}

async fn echo(req: Request<Incoming>, name: &str) -> Response<Body> {
    let method = req.method().to_string();
    let target = req.uri().to_string();
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").into()))
        .collect();
    let mut len = 0u64;
    let mut sum = 0u64;
    let mut body = req.into_body();
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            len += data.len() as u64;
            sum = data
                .iter()
                .fold(sum, |s, b| s.wrapping_mul(31).wrapping_add(u64::from(*b)));
        }
    }
    let json = serde_json::json!({
        "upstream": name, "method": method, "target": target, "headers": headers, "body_len": len, "body_sum": sum,
    });
    let mut r = Response::new(full(json.to_string()));
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r.headers_mut().insert("x-upstream", name.parse().unwrap());
    r
}

/// The checksum `echo` reports, for a body the test sent.
pub fn checksum(data: &[u8]) -> u64 {
    data.iter()
        .fold(0u64, |s, b| s.wrapping_mul(31).wrapping_add(u64::from(*b)))
}

fn big(mb: u64, name: &str) -> Response<Body> {
    const CHUNK: usize = 64 * 1024;
    let chunks = mb * 16;
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let stream =
        futures_util::stream::iter((0..chunks).map(move |_| Ok(Frame::data(chunk.clone()))));
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        "content-length",
        (chunks * CHUNK as u64).to_string().parse().unwrap(),
    );
    r.headers_mut().insert("x-upstream", name.parse().unwrap());
    r
}

fn stall(name: &str) -> Response<Body> {
    let first =
        futures_util::stream::once(async { Ok(Frame::data(Bytes::from_static(b"partial"))) });
    let stream = first.chain(futures_util::stream::pending());
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut()
        .insert("content-length", "1000".parse().unwrap());
    r.headers_mut().insert("x-upstream", name.parse().unwrap());
    r
}

fn websocket(mut req: Request<Incoming>, name: String) -> Response<Body> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return text(StatusCode::BAD_REQUEST, "not a websocket request");
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Text(t) = msg
                && ws.send(Message::text(format!("{name}:{t}"))).await.is_err()
            {
                return;
            }
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    r.headers_mut()
        .insert("connection", "upgrade".parse().unwrap());
    r.headers_mut()
        .insert("upgrade", "websocket".parse().unwrap());
    r.headers_mut()
        .insert("sec-websocket-accept", accept.parse().unwrap());
    r
}

/// An upstream that is a separate process: `quire lb` on a fixed port in front of a
/// `TestUpstream`. SIGKILL it and the port refuses; restart it and the same upstream is back.
pub struct ProcUpstream {
    pub server: TestUpstream,
    pub port: u16,
    pub proc: Option<Proc>,
    log_dir: std::path::PathBuf,
}

impl ProcUpstream {
    pub async fn start(name: &str, log_dir: &Path) -> ProcUpstream {
        let server = TestUpstream::start(name).await;
        let mut up = ProcUpstream {
            server,
            port: free_port(),
            proc: None,
            log_dir: log_dir.to_owned(),
        };
        up.restart().await;
        up
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn behaviour(&self) -> &Behaviour {
        &self.server.behaviour
    }

    /// SIGKILL: the process dies with its sockets; nothing is flushed or closed politely.
    pub fn kill9(&mut self) {
        if let Some(p) = &mut self.proc {
            p.kill9();
        }
    }

    pub async fn restart(&mut self) {
        let mut cmd = quire_command(&["lb"]);
        cmd.env("QUIRE_LB__LISTEN", format!("127.0.0.1:{}", self.port))
            .env(
                "QUIRE_LB__ADMIN_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
            .env("QUIRE_LB__UPSTREAMS", self.server.url())
            .env("QUIRE_LB__ACCESS_LOG", "false")
            .env("QUIRE_LB__RETRY__TRIES", "1");
        let name = format!("upstream-{}", self.server.name);
        self.proc = Some(Proc::spawn(&name, cmd, &self.log_dir));
        let addr = format!("127.0.0.1:{}", self.port);
        wait_for(
            &format!("{name} to listen"),
            Duration::from_secs(10),
            || {
                let addr = addr.clone();
                async move { tokio::net::TcpStream::connect(&addr).await.ok().map(drop) }
            },
        )
        .await;
    }
}

/// A `quire lb` process under test, configured through a TOML file.
pub struct Lb {
    pub proc: Proc,
    pub port: u16,
    pub admin: u16,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

/// Settings tests start from: fast probes, no slow start, so tests need not wait.
const DEFAULTS: &[(&str, &str)] = &[
    ("health.interval", "\"100ms\""),
    ("health.timeout", "\"100ms\""),
    ("health.rise", "2"),
    ("health.fall", "2"),
    ("slow_start", "\"0s\""),
    ("drain_timeout", "\"5s\""),
];

impl Lb {
    /// Starts `quire lb` with `upstreams` in the short form (`"URL [backup] [weight=N]"`) and
    /// `settings` as `[lb]` keys with TOML values, overriding `DEFAULTS`; waits until it serves.
    pub async fn start(upstreams: &[String], settings: &[(&str, &str)]) -> Lb {
        let dir = tempfile::tempdir().unwrap();
        let (port, admin) = (free_port(), free_port());
        let config = Self::config(port, admin, upstreams, settings);
        let path = dir.path().join("quire.toml");
        std::fs::write(&path, config).unwrap();
        let mut cmd = quire_command(&["lb"]);
        cmd.arg("--config")
            .arg(&path)
            .env("QUIRE_LOG__LEVEL", "info,quire::lb=debug");
        let proc = Proc::spawn("lb", cmd, dir.path());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let lb = Lb {
            proc,
            port,
            admin,
            dir,
            http,
        };
        wait_for("lb to serve", Duration::from_secs(10), || async {
            let ready = lb.http.get(lb.admin_url("/livez")).send().await.ok()?;
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()?;
            ready.status().is_success().then_some(())
        })
        .await;
        lb
    }

    fn config(port: u16, admin: u16, upstreams: &[String], settings: &[(&str, &str)]) -> String {
        let mut lines = vec![
            "[lb]".to_owned(),
            format!("listen = \"127.0.0.1:{port}\""),
            format!("admin_listen = \"127.0.0.1:{admin}\""),
        ];
        for (key, value) in DEFAULTS
            .iter()
            .filter(|(k, _)| !settings.iter().any(|(s, _)| s == k))
            .chain(settings)
        {
            lines.push(format!("{key} = {value}"));
        }
        let list: Vec<String> = upstreams.iter().map(|u| format!("\"{u}\"")).collect();
        lines.push(format!("upstreams = [{}]", list.join(", ")));
        lines.join("\n") + "\n"
    }

    /// The lb's log so far, without terminal colour codes.
    pub fn log(&self) -> String {
        let log = self.proc.log();
        let mut out = String::with_capacity(log.len());
        let mut chars = log.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                chars.by_ref().find(|c| c.is_ascii_alphabetic());
            } else {
                out.push(c);
            }
        }
        out
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub async fn status(&self) -> serde_json::Value {
        self.http
            .get(self.admin_url("/lb/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until upstream `index` has `health` ("up", "down").
    pub async fn wait_health(&self, index: usize, health: &str) {
        wait_for(
            &format!("upstream {index} to be {health}"),
            Duration::from_secs(10),
            || async move {
                let status = self.status().await;
                (status["upstreams"][index]["health"] == health).then_some(())
            },
        )
        .await;
    }

    /// GET `path`; the status and the name of the upstream that answered.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        let upstream = r
            .headers()
            .get("x-upstream")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, upstream)
    }
}

/// Sends raw bytes as one HTTP/1.1 request and reads until the server closes; the status line
/// and headers (lower-cased names) and the body.
pub async fn raw_request(addr: SocketAddr, request: &str) -> (u16, Vec<(String, String)>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}
