//! One agent connection, from its hello to its close: the protocol's rules on this side
//! (versions, heartbeats, silence), answers handed to the queries waiting for them, the
//! connection recorded in the store while it lasts.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};

use super::link::{Answer, Identity, Link};
use super::model::{Agent, Connection};
use super::service::Agents;
use crate::agent::protocol::{self, AgentMessage, Hello, PROTOCOL, SILENCE_FACTOR, ServerMessage};

/// How long an agent has to say hello after the upgrade.
const HELLO_WITHIN: Duration = Duration::from_secs(10);

/// Serves an agent whose token was accepted, until the connection ends.
pub async fn serve(agents: Agents, mut socket: WebSocket, agent: Agent, address: String) {
    let hello = match hello(&mut socket).await {
        Ok(h) => h,
        Err(why) => {
            tracing::warn!(agent = %agent.name, %address, "agent refused: {why}");
            refuse(&mut socket, &why).await;
            return;
        }
    };
    let session = uuid::Uuid::new_v4().to_string();
    let connection = Connection {
        session: session.clone(),
        agent_id: hello.agent_id.clone(),
        reported_name: hello.name.clone(),
        version: hello.version.clone(),
        protocol: i64::from(hello.protocol),
        instance_id: Some(agents.instance().to_owned()),
        address: address.clone(),
        connected_at: 0,
        disconnected_at: None,
        last_seen: None,
        datasources: hello.datasources.clone(),
    };
    match agents.connected(&agent.id, &connection).await {
        Ok(true) => {}
        Ok(false) => {
            refuse(&mut socket, "this agent's token was revoked").await;
            return;
        }
        Err(e) => {
            tracing::warn!(agent = %agent.name, error = %e, "could not record an agent's connection");
            close(
                &mut socket,
                1011,
                "the server could not record the connection; try again",
            )
            .await;
            return;
        }
    }
    let (link, outgoing) = Link::new(Identity {
        agent: agent.id.clone(),
        name: agent.name.clone(),
        session: session.clone(),
        agent_id: hello.agent_id.clone(),
        sources: hello.datasources.iter().map(|d| d.name.clone()).collect(),
    });
    let welcome = ServerMessage::Welcome {
        protocol: hello.protocol,
        instance: agents.instance().to_owned(),
        heartbeat_secs: agents.heartbeat().as_secs() as u32,
    };
    if send(&mut socket, &welcome).await.is_err() {
        agents
            .disconnected(&link, Some("the connection closed at the welcome"))
            .await;
        return;
    }
    tracing::info!(
        agent = %agent.name,
        reported_name = %hello.name,
        version = %hello.version,
        %address,
        sources = ?link.who.sources,
        "agent connected"
    );
    agents.hub().add(link.clone());
    if agents.is_draining() {
        link.leave("this instance is stopping");
    }
    let why = run(&agents, &mut socket, &link, outgoing).await;
    agents.hub().remove(&session);
    link.close_all();
    tracing::info!(agent = %agent.name, reason = %why.as_deref().unwrap_or("closed"), "agent disconnected");
    agents.disconnected(&link, why.as_deref()).await;
}

/// Reads the hello; the error is what the agent is told.
async fn hello(socket: &mut WebSocket) -> Result<Hello, String> {
    let first = tokio::time::timeout(HELLO_WITHIN, socket.recv())
        .await
        .map_err(|_| format!("no hello within {}s", HELLO_WITHIN.as_secs()))?;
    let text = match first {
        Some(Ok(Message::Text(t))) => t,
        _ => return Err("the first message must be the agent's hello".into()),
    };
    let hello = match serde_json::from_str::<AgentMessage>(&text) {
        Ok(AgentMessage::Hello(h)) => h,
        Ok(_) => return Err("the first message must be the agent's hello".into()),
        Err(e) => {
            // An agent of another protocol may say hello differently; name the versions if
            // its message says which it speaks.
            let version = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("protocol").and_then(serde_json::Value::as_u64));
            return Err(match version {
                Some(v) => unsupported(v),
                None => format!("the hello could not be read: {e}"),
            });
        }
    };
    if !protocol::supported(hello.protocol) {
        return Err(unsupported(u64::from(hello.protocol)));
    }
    Ok(hello)
}

fn unsupported(agent: u64) -> String {
    let oldest = protocol::oldest_supported();
    let speaks = if oldest == PROTOCOL {
        format!("{PROTOCOL}")
    } else {
        format!("{oldest} to {PROTOCOL}")
    };
    format!(
        "the agent speaks protocol {agent}, this server (Quire {}) speaks {speaks}: upgrade the \
         {} first",
        crate::version(),
        if agent > u64::from(PROTOCOL) {
            "servers"
        } else {
            "agent"
        }
    )
}

/// The connection's loop; returns why it ended when it was not a plain close.
async fn run(
    agents: &Agents,
    socket: &mut WebSocket,
    link: &Arc<Link>,
    mut outgoing: tokio::sync::mpsc::Receiver<ServerMessage>,
) -> Option<String> {
    let interval = agents.heartbeat();
    let mut beat = tokio::time::interval(interval);
    beat.tick().await;
    let mut heard = tokio::time::Instant::now();
    let stopping = agents.shutdown();
    loop {
        tokio::select! {
            msg = socket.recv() => {
                heard = tokio::time::Instant::now();
                match msg {
                    Some(Ok(Message::Text(text))) => {
                        if let Err(e) = receive(link, &text) {
                            close(socket, 1002, "unreadable message").await;
                            return Some(format!("unreadable message: {e}"));
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return frame.map(|f| f.reason.to_string()).filter(|r| !r.is_empty());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Some(format!("connection error: {e}")),
                    None => return Some("the connection dropped".into()),
                }
            }
            Some(msg) = outgoing.recv() => {
                if send(socket, &msg).await.is_err() {
                    return Some("the connection dropped".into());
                }
            }
            _ = beat.tick() => {
                if heard.elapsed() > interval * SILENCE_FACTOR {
                    close(socket, 1001, "no heartbeat").await;
                    return Some(format!("silent for {}s", heard.elapsed().as_secs()));
                }
                link.heartbeat();
            }
            _ = link.closed.cancelled() => {
                close(socket, 1008, "this agent's token was revoked").await;
                return Some("token revoked".into());
            }
            _ = stopping.stopped() => {
                close(socket, 1001, "instance stopping").await;
                return Some("instance stopping".into());
            }
        }
    }
}

/// Hands an agent's message to the query it answers.
fn receive(link: &Link, text: &str) -> Result<(), serde_json::Error> {
    match serde_json::from_str::<AgentMessage>(text)? {
        AgentMessage::Rows { id, columns, rows } => {
            link.deliver(id, Answer::Rows { columns, rows })
        }
        AgentMessage::Done { id, truncated } => link.deliver(id, Answer::Done { truncated }),
        AgentMessage::Failed { id, error } => link.deliver(id, Answer::Failed { error }),
        AgentMessage::Heartbeat { .. } | AgentMessage::Hello(_) => {}
    }
    Ok(())
}

async fn send(socket: &mut WebSocket, msg: &ServerMessage) -> Result<(), axum::Error> {
    let text = serde_json::to_string(msg).unwrap_or_default();
    socket.send(Message::Text(text.into())).await
}

/// Tells the agent why it is not accepted, then closes.
async fn refuse(socket: &mut WebSocket, message: &str) {
    let refused = ServerMessage::Refused {
        message: message.to_owned(),
    };
    let _ = send(socket, &refused).await;
    close(socket, 1008, "refused").await;
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.to_owned().into(),
        })))
        .await;
}
