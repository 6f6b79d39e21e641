//! The agent end to end against an in-test server on 127.0.0.1 that speaks the protocol: the
//! real connector on a SQLite file, the real status file, the real supervisor.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

use super::protocol::{AgentMessage, ServerMessage};
use super::sources::tests::{query, sqlite_agent};
use super::status::{self, State};
use super::*;
use crate::config::Secret;
use crate::lifecycle::Notifier;

type Peer = WebSocketStream<TcpStream>;

const PATIENCE: Duration = Duration::from_secs(10);

/// Accepts agents whose token is `token`; each accepted connection comes out of the channel.
#[allow(clippy::result_large_err)] // the refusal's type is tungstenite's callback signature
async fn server(token: &'static str) -> (SocketAddr, mpsc::UnboundedReceiver<Peer>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let check = move |req: &Request, resp: Response| {
                    assert_eq!(req.uri().path(), "/api/v1/agents/connect");
                    let agent = req.headers()["user-agent"].to_str().unwrap();
                    assert!(agent.starts_with("quire-agent/"), "{agent}");
                    if req.headers()["authorization"] == format!("Bearer {token}").as_str() {
                        Ok(resp)
                    } else {
                        let mut refused = ErrorResponse::new(None);
                        *refused.status_mut() = StatusCode::UNAUTHORIZED;
                        Err(refused)
                    }
                };
                if let Ok(peer) = tokio_tungstenite::accept_hdr_async(tcp, check).await {
                    let _ = tx.send(peer);
                }
            });
        }
    });
    (addr, rx)
}

struct Agent {
    task: JoinHandle<Result<(), SetupError>>,
    lifecycle: Lifecycle,
    status_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// An agent serving `numbers` (`rows` of them) to the server at `addr`.
    async fn start(addr: SocketAddr, token: &str, rows: usize) -> Agent {
        Agent::start_at(&format!("http://{addr}"), None, token, rows).await
    }

    /// An agent serving `numbers` to the server at `url`, trusting `ca` besides the system.
    async fn start_at(url: &str, ca: Option<&str>, token: &str, rows: usize) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let mut config = sqlite_agent(&dir, rows).await;
        config.server_url = Some(url.parse().unwrap());
        if let Some(pem) = ca {
            let ca_file = dir.path().join("ca.pem");
            std::fs::write(&ca_file, pem).unwrap();
            config.ca_file = Some(ca_file);
        }
        config.token = Some(Secret::new(token));
        config.name = Some("dc1-a".into());
        let status_file = dir.path().join("status.json");
        config.status_file = Some(status_file.clone());
        let lifecycle = Lifecycle::new(Notifier::default());
        let task = tokio::spawn({
            let lifecycle = lifecycle.clone();
            let data_dir = dir.path().to_owned();
            async move { run(&config, &data_dir, lifecycle).await }
        });
        Agent {
            task,
            lifecycle,
            status_file,
            _dir: dir,
        }
    }

    /// Waits until the status file satisfies `holds`.
    async fn status_until(&self, holds: impl Fn(&Status) -> bool) -> Status {
        tokio::time::timeout(PATIENCE, async {
            loop {
                if let Ok(s) = status::read(&self.status_file)
                    && holds(&s)
                {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("status file never got there")
    }

    async fn stop(self) {
        self.lifecycle.shutdown().begin_drain();
        let done = tokio::time::timeout(PATIENCE, self.task).await;
        assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
        let s = status::read(&self.status_file).unwrap();
        assert_eq!(s.state, State::Disconnected);
    }
}

async fn accept(peers: &mut mpsc::UnboundedReceiver<Peer>) -> Peer {
    tokio::time::timeout(PATIENCE, peers.recv())
        .await
        .expect("no connection")
        .unwrap()
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    peer: &mut WebSocketStream<S>,
    message: ServerMessage,
) {
    let text = serde_json::to_string(&message).unwrap();
    peer.send(Message::text(text)).await.unwrap();
}

/// The next message other than a heartbeat; `None` at a close frame.
async fn recv<S: AsyncRead + AsyncWrite + Unpin>(
    peer: &mut WebSocketStream<S>,
) -> Option<AgentMessage> {
    loop {
        let frame = tokio::time::timeout(PATIENCE, peer.next())
            .await
            .expect("nothing from the agent");
        match frame? {
            Ok(Message::Text(t)) => match serde_json::from_str(&t).unwrap() {
                AgentMessage::Heartbeat { .. } => continue,
                other => return Some(other),
            },
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// The next heartbeat's `in_flight`.
async fn heartbeat(peer: &mut Peer) -> u32 {
    loop {
        let frame = tokio::time::timeout(PATIENCE, peer.next()).await.unwrap();
        if let Some(Ok(Message::Text(t))) = frame
            && let Ok(AgentMessage::Heartbeat { in_flight }) = serde_json::from_str(&t)
        {
            return in_flight;
        }
    }
}

/// Takes the hello and welcomes the agent.
async fn welcome<S: AsyncRead + AsyncWrite + Unpin>(
    peer: &mut WebSocketStream<S>,
    instance: &str,
) -> Hello {
    let Some(AgentMessage::Hello(hello)) = recv(peer).await else {
        panic!("no hello")
    };
    send(
        peer,
        ServerMessage::Welcome {
            protocol: PROTOCOL,
            instance: instance.into(),
            heartbeat_secs: 1,
        },
    )
    .await;
    hello
}

/// Every message of query `id` up to its `Done` or `Failed`.
async fn answer(peer: &mut Peer, id: u64) -> Vec<AgentMessage> {
    let mut out = Vec::new();
    while let Some(m) = recv(peer).await {
        let last = matches!(m, AgentMessage::Done { id: i, .. } | AgentMessage::Failed { id: i, .. } if i == id);
        out.push(m);
        if last {
            return out;
        }
    }
    panic!("closed before query {id} was answered: {out:?}")
}

/// A query that keeps SQLite busy for `n` steps.
fn slow(n: u64) -> String {
    format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) SELECT count(*) AS c FROM n"
    )
}

#[tokio::test]
async fn hello_welcome_query_rows_done_then_drain_closes() {
    let (addr, mut peers) = server("good").await;
    let agent = Agent::start(addr, "good", 1500).await;
    let mut peer = accept(&mut peers).await;
    let hello = welcome(&mut peer, "web-1").await;
    assert_eq!((hello.protocol, hello.name.as_str()), (PROTOCOL, "dc1-a"));
    assert_eq!(hello.datasources[0].name, "numbers");
    assert!(hello.datasources[0].server_version.is_some(), "{hello:?}");
    let connected = agent.status_until(|s| s.state == State::Connected).await;
    assert_eq!(connected.instance.as_deref(), Some("web-1"));
    assert_eq!(connected.agent_id, hello.agent_id);

    send(
        &mut peer,
        ServerMessage::Query(query(1, "numbers", "SELECT i FROM numbers")),
    )
    .await;
    let messages = answer(&mut peer, 1).await;
    assert_eq!(messages.len(), 3, "two chunks of rows, then done");
    assert_eq!(
        messages[2],
        AgentMessage::Done {
            id: 1,
            truncated: false
        }
    );

    agent.stop().await;
    assert_eq!(
        recv(&mut peer).await,
        None,
        "the agent closed the connection"
    );
}

#[tokio::test]
async fn a_refused_token_and_a_refused_hello_are_said_and_retried() {
    let (addr, mut peers) = server("good").await;
    let agent = Agent::start(addr, "revoked", 1).await;
    let s = agent
        .status_until(|s| {
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("refused this agent's token"))
        })
        .await;
    assert_eq!(s.state, State::Disconnected);
    assert!(s.last_error.unwrap().contains("POST /api/v1/agents"));
    agent.stop().await;

    let agent = Agent::start(addr, "good", 1).await;
    let mut peer = accept(&mut peers).await;
    let _ = recv(&mut peer).await;
    let message = "protocol 1 is not supported: this server speaks 3 and 2".to_owned();
    send(&mut peer, ServerMessage::Refused { message }).await;
    let _ = peer.close(None).await;
    agent
        .status_until(|s| {
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("speaks 3 and 2"))
        })
        .await;
    let _again = accept(&mut peers).await;
    agent.stop().await;
}

#[tokio::test]
async fn a_reconnect_opens_a_new_connection_while_the_old_one_answers() {
    let (addr, mut peers) = server("good").await;
    let agent = Agent::start(addr, "good", 1).await;
    let mut old = accept(&mut peers).await;
    welcome(&mut old, "web-1").await;
    send(
        &mut old,
        ServerMessage::Query(query(4, "numbers", &slow(2_000_000))),
    )
    .await;
    let reason = "instance web-1 is draining".to_owned();
    send(&mut old, ServerMessage::Reconnect { reason }).await;

    let mut new = accept(&mut peers).await;
    welcome(&mut new, "web-2").await;
    agent
        .status_until(|s| s.instance.as_deref() == Some("web-2"))
        .await;
    let messages = answer(&mut old, 4).await;
    assert!(
        matches!(messages.last(), Some(AgentMessage::Done { id: 4, .. })),
        "{messages:?}"
    );
    assert_eq!(
        recv(&mut old).await,
        None,
        "the old connection closes once answered"
    );

    send(
        &mut new,
        ServerMessage::Query(query(5, "numbers", "SELECT i FROM numbers")),
    )
    .await;
    assert_eq!(answer(&mut new, 5).await.len(), 2);
    agent.stop().await;
}

#[tokio::test]
async fn a_cancel_ends_the_query_and_unknown_sources_fail() {
    let (addr, mut peers) = server("good").await;
    let agent = Agent::start(addr, "good", 1).await;
    let mut peer = accept(&mut peers).await;
    welcome(&mut peer, "web-1").await;
    send(
        &mut peer,
        ServerMessage::Query(query(6, "numbers", &slow(100_000_000))),
    )
    .await;
    assert_eq!(heartbeat(&mut peer).await, 1);
    send(&mut peer, ServerMessage::Cancel { id: 6 }).await;
    // The heartbeat on its way as the cancel arrived may still count the query.
    let mut in_flight = heartbeat(&mut peer).await;
    if in_flight == 1 {
        in_flight = heartbeat(&mut peer).await;
    }
    assert_eq!(in_flight, 0);

    send(
        &mut peer,
        ServerMessage::Query(query(7, "elsewhere", "SELECT 1")),
    )
    .await;
    let messages = answer(&mut peer, 7).await;
    assert!(
        matches!(&messages[..], [AgentMessage::Failed { id: 7, .. }]),
        "nothing of the cancelled query, and a failure for the unknown source: {messages:?}"
    );
    agent.stop().await;
}

#[tokio::test]
async fn https_servers_are_reached_over_tls_trusting_the_ca_file() {
    use tokio_rustls::TlsAcceptor;
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::crypto::ring;
    use tokio_rustls::rustls::pki_types::PrivateKeyDer;

    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let tls = ServerConfig::builder_with_provider(std::sync::Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(std::sync::Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = format!("https://localhost:{port}");
    let agent = Agent::start_at(&url, Some(&cert.cert.pem()), "good", 1).await;

    let (tcp, _) = listener.accept().await.unwrap();
    let stream = acceptor.accept(tcp).await.unwrap();
    let mut peer = tokio_tungstenite::accept_async(stream).await.unwrap();
    welcome(&mut peer, "web-tls").await;
    let s = agent.status_until(|s| s.state == State::Connected).await;
    assert_eq!(s.instance.as_deref(), Some("web-tls"));
    agent.stop().await;
}
