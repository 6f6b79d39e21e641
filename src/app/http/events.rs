//! Live progress of a render: `GET /api/v1/renders/{id}/events` as a WebSocket, as Server-Sent
//! Events (`Accept: text/event-stream`), or as a JSON list for polling. Events carry increasing
//! sequence numbers; `?after=SEQ` (or SSE's `Last-Event-ID`) resumes after a reconnect, on any
//! instance. The stream ends with the final event, which carries the outcome.
//!
//! Following itself (database first, then bus hints, back to the database on any doubt) is
//! `Jobs::follow`; this file shapes what it yields for each transport.

use std::convert::Infallible;
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

use super::extract::{ApiPath, ApiQuery};
use super::problem::ApiResult;
use super::renders::visible_job;
use super::views::EventView;
use crate::app::auth::Principal;
use crate::app::state::AppState;

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
        let rx = state.jobs.follow(id, after, state.shutdown.clone());
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
    let events = state.jobs.events_after(&id, after).await?;
    Ok(Json(events.iter().map(EventView::from).collect::<Vec<_>>()).into_response())
}

async fn websocket(mut socket: WebSocket, state: AppState, id: String, after: i64) {
    let stopped = state.shutdown.clone();
    let mut rx = state.jobs.follow(id, after, state.shutdown.clone());
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
