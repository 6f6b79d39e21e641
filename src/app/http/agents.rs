//! Agents (`/api/v1/agents`): admins create them (the answer carries the agent's token, once)
//! and delete them (revoking the token); editors, who write queries against agent-served
//! sources, may list them. `GET /api/v1/agents/connect` is where agents connect: a WebSocket
//! authenticated by the agent's token, not by a user.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{self, ApiPath};
use super::problem::{ApiResult, Problem};
use super::views::ts;
use crate::app::agents::model::{Agent, State as AgentState};
use crate::app::agents::service::LIVE_MS;
use crate::app::agents::session;
use crate::app::auth::Principal;
use crate::app::model::UserRole;
use crate::app::state::AppState;

const BODY_LIMIT: usize = 16 << 10;

#[derive(Deserialize)]
struct CreateRequest {
    name: String,
}

/// An agent as the API shows it.
pub fn view(a: &Agent) -> Value {
    let state = match a.state(LIVE_MS) {
        AgentState::Connected => "connected",
        AgentState::Disconnected => "disconnected",
        AgentState::Never => "never connected",
    };
    let c = a.connection.as_ref();
    json!({
        "id": a.id,
        "name": a.name,
        "created_at": ts(a.created_at),
        "created_by": a.created_by,
        "state": state,
        "since": a.since(LIVE_MS).map(ts),
        "instance": a.instance(LIVE_MS),
        "reported_name": c.map(|c| &c.reported_name),
        "version": c.map(|c| &c.version),
        "protocol": c.map(|c| c.protocol),
        "address": c.map(|c| &c.address),
        "agent_id": c.map(|c| &c.agent_id),
        "last_seen": c.and_then(|c| c.last_seen).map(ts),
        "datasources": c.map(|c| &c.datasources),
        "in_flight": a.in_flight,
        "queries": a.queries,
        "errors": a.errors,
        "p50_ms": a.p50_us.map(|us| us as f64 / 1000.0),
        "p99_ms": a.p99_us.map(|us| us as f64 / 1000.0),
        "last_error": a.last_error,
    })
}

/// `GET /api/v1/agents` (editors and admins): `{agents, warnings}`.
pub async fn list(State(state): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    p.require(UserRole::Editor)?;
    let overview = state.agents.overview().await?;
    Ok(Json(json!({
        "agents": overview.agents.iter().map(view).collect::<Vec<_>>(),
        "warnings": overview.warnings,
    })))
}

/// `POST /api/v1/agents` `{name}` (admins): the agent, with its `token` shown this once.
pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    p.require(UserRole::Admin)?;
    let bytes = extract::body(body, BODY_LIMIT, "agent requests").await?;
    let req: CreateRequest = extract::json(&headers, &bytes)?;
    let created = state.agents.create(&req.name, &p.user.email).await?;
    let mut body = view(&created.agent);
    body["token"] = Value::String(created.token);
    Ok((
        StatusCode::CREATED,
        [(
            header::LOCATION,
            format!("/api/v1/agents/{}", created.agent.id),
        )],
        Json(body),
    )
        .into_response())
}

/// `GET /api/v1/agents/{id or name}` (editors and admins).
pub async fn get(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    p.require(UserRole::Editor)?;
    Ok(Json(view(&state.agents.get(&id).await?)))
}

/// `DELETE /api/v1/agents/{id or name}` (admins): revokes the token; the agent's connection
/// closes within seconds.
pub async fn delete(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    p.require(UserRole::Admin)?;
    state.agents.delete(&id, &p.user.email).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/agents/connect`: an agent's WebSocket, with `Authorization: Bearer <agent
/// token>`. A draining instance answers 503 with `Quire-Not-Processed`, so a load balancer
/// sends the agent to another instance.
pub async fn connect(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    if !state.agents.accepting() {
        return Err(Problem::draining());
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            Problem::unauthorized("send the agent's token as Authorization: Bearer <token>")
        })?;
    let agent = state.agents.authenticate(presented.trim()).await?;
    let ws =
        ws.map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "not-websocket", e.to_string()))?;
    let address =
        extract::client_ip(peer, &headers, &state.config.http.trusted_proxies).to_string();
    let agents = state.agents.clone();
    Ok(ws
        .on_upgrade(move |socket| session::serve(agents, socket, agent, address))
        .into_response())
}
