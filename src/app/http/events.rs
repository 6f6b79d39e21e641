//! Live progress of a render: `GET /api/v1/renders/{id}/events` as a WebSocket, as Server-Sent
//! Events (`Accept: text/event-stream`), or as a JSON list for polling. Events carry increasing
//! sequence numbers; `?after=SEQ` (or SSE's `Last-Event-ID`) resumes after a reconnect, on any
//! instance. The stream ends with the final event, which carries the outcome.
//!
//! Followers read the database first and then take hints from the bus; a gap in sequence numbers,
//! a lagging subscription or a quiet interval sends them back to the database, so a lost hint
//! costs latency, never an event.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::ws::{
    CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use super::extract::{ApiPath, ApiQuery};
use super::problem::ApiResult;
use super::renders::visible_job;
use super::views::EventView;
use crate::app::auth::Principal;
use crate::app::model::JobEvent;
use crate::app::state::AppState;

/// Without hints, followers re-read the database this often.
const POLL: Duration = Duration::from_secs(2);
const PING: Duration = Duration::from_secs(20);

/// `?after=SEQ`: events after this sequence number.
#[derive(Deserialize)]
pub struct After {
    after: Option<i64>,
}

/// `GET /api/v1/renders/{id}/events`: progress as a WebSocket, Server-Sent Events or a JSON list.
pub async fn events(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<After>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    visible_job(&state, &p, &id).await?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let after = q.after.or(last_event_id).unwrap_or(0);
    if let Ok(ws) = ws {
        return Ok(ws.on_upgrade(move |socket| websocket(socket, state, id, after)));
    }
    let wants_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    if wants_sse {
        let rx = follow(state, id, after);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            let ev = rx.recv().await?;
            let view = EventView::from(ev.as_ref());
            let sse = Event::default()
                .id(ev.seq.to_string())
                .event(if ev.is_final() { "final" } else { "progress" })
                .json_data(&view)
                .unwrap_or_default();
            Some((Ok::<_, Infallible>(sse), rx))
        });
        return Ok(Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let events = state.store.events_after(&id, after).await?;
    Ok(Json(events.iter().map(EventView::from).collect::<Vec<_>>()).into_response())
}

async fn websocket(mut socket: WebSocket, state: AppState, id: String, after: i64) {
    let stopped = state.shutdown.clone();
    let mut rx = follow(state, id, after);
    let mut ping = tokio::time::interval(PING);
    ping.tick().await;
    loop {
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                let text = serde_json::to_string(&EventView::from(ev.as_ref())).unwrap_or_default();
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
                if ev.is_final() {
                    close(&mut socket, 1000, "done").await;
                    return;
                }
            }
            msg = socket.recv() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            // "Going away": the client reconnects (to another instance) with ?after=SEQ.
            _ = stopped.stopped() => {
                close(&mut socket, 1001, "instance stopping").await;
                return;
            }
        }
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

/// Streams the job's events after `after`, ending with the final one.
fn follow(state: AppState, job_id: String, after: i64) -> mpsc::Receiver<Arc<JobEvent>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        // Subscribe before reading the database, so nothing falls between the two.
        let mut hints = state.bus.subscribe();
        let mut last = after;
        loop {
            match state.store.events_after(&job_id, last).await {
                Ok(events) => {
                    for ev in events {
                        last = ev.seq;
                        let fin = ev.is_final();
                        if tx.send(Arc::new(ev)).await.is_err() || fin {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(job = %job_id, error = %e, "cannot read events; retrying")
                }
            }
            match wait_for_hint(&mut hints, &tx, &job_id, &mut last).await {
                Hint::Done => return,
                Hint::CatchUp => {}
            }
            if state.shutdown.is_stopped() {
                return;
            }
        }
    });
    rx
}

enum Hint {
    Done,
    CatchUp,
}

/// Forwards bus events that continue the sequence; returns when the database should be read
/// (a gap, a lag, a quiet `POLL`), or when the stream is over.
async fn wait_for_hint(
    hints: &mut broadcast::Receiver<Arc<JobEvent>>,
    tx: &mpsc::Sender<Arc<JobEvent>>,
    job_id: &str,
    last: &mut i64,
) -> Hint {
    let quiet = tokio::time::sleep(POLL);
    tokio::pin!(quiet);
    loop {
        tokio::select! {
            got = hints.recv() => match got {
                Ok(ev) if ev.job_id == job_id => {
                    if ev.seq <= *last {
                        continue;
                    }
                    if ev.seq > *last + 1 {
                        return Hint::CatchUp;
                    }
                    *last = ev.seq;
                    let fin = ev.is_final();
                    if tx.send(ev).await.is_err() || fin {
                        return Hint::Done;
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return Hint::CatchUp,
                Err(broadcast::error::RecvError::Closed) => return Hint::Done,
            },
            _ = &mut quiet => return Hint::CatchUp,
            _ = tx.closed() => return Hint::Done,
        }
    }
}
