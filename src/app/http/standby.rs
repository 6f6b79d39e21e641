//! What an instance serves while it stands by (or is fenced): `/livez`, `/readyz` (503 with its
//! role, the replication lag and the primary, so probes keep traffic on the active region),
//! `/metrics`, one console page ("standby of …, will take over when the database is promoted",
//! with the HA overview read from the replica for a signed-in user), and 503 with
//! `Quire-Not-Processed: 1` for every API call. Nothing here writes: sessions and tokens made on
//! the primary are only looked up.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use maud::{DOCTYPE, html};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::auth::{SESSION_COOKIE, cookie};
use super::problem::Problem;
use super::views::ts;
use crate::app::auth::token;
use crate::app::config::AppConfig;
use crate::app::dr::Role;
use crate::app::dr::service::Status;
use crate::app::metrics::Metrics;
use crate::app::model::now_ms;
use crate::app::store::Store;

#[derive(Clone)]
pub struct StandbyState {
    pub config: Arc<AppConfig>,
    pub instance: String,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub shown: watch::Receiver<Option<Status>>,
}

pub fn router(state: StandbyState) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/health", get(readyz))
        .route("/healthz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(page))
        .route("/cluster", get(page))
        .fallback(refuse)
        .with_state(state)
}

fn role(state: &StandbyState) -> String {
    state
        .shown
        .borrow()
        .as_ref()
        .map_or("standby", |s| s.role.name())
        .to_owned()
}

async fn livez(State(state): State<StandbyState>) -> Response {
    Json(
        json!({"status": "alive", "instance": state.instance, "version": crate::version(),
        "role": role(&state)}),
    )
    .into_response()
}

/// 503 whatever happens: a standby or fenced instance must not get traffic.
async fn readyz(State(state): State<StandbyState>) -> Response {
    let status = state.shown.borrow().clone();
    let mut body = status
        .as_ref()
        .map_or_else(|| json!({"role": "standby"}), Status::json);
    body["status"] = body["role"].clone();
    body["instance"] = json!(state.instance);
    body["version"] = json!(crate::version());
    let binary = state.store.expected_schema_version();
    let database = state.store.schema_version().await.ok();
    body["schema"] = json!({"binary": binary, "database": database,
        "matches": database == Some(binary)});
    if database.is_some_and(|d| d != binary) {
        body["problem"] = json!(format!(
            "the replica's schema is version {}, this binary's {binary}: upgrade this region to \
             the primary's version before a takeover",
            database.unwrap_or_default()
        ));
    }
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn metrics(State(state): State<StandbyState>, headers: HeaderMap) -> Response {
    if !state.config.metrics.public && signed_in(&state, &headers).await.is_none() {
        return Problem::unauthorized("metrics need an API token").into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Every API call: nothing is processed here, so a load balancer may send it elsewhere.
async fn refuse(State(state): State<StandbyState>) -> Problem {
    let role = role(&state);
    let detail = if role == "fenced" {
        "this instance is fenced: the peer region took over; send requests to the active region"
    } else {
        "this instance is a standby: it takes over when its database is promoted; send requests \
         to the active region"
    };
    let mut p = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "standby", detail)
        .with("role", Value::String(role))
        .retry_after(5);
    p.not_processed = true;
    p
}

/// The one console page: the role, the lag, and for a signed-in user the HA overview as the
/// replica has it (read-only: no buttons).
async fn page(State(state): State<StandbyState>, headers: HeaderMap) -> Response {
    let status = state.shown.borrow().clone();
    let lag = status
        .as_ref()
        .and_then(|s| s.replication.lag())
        .unwrap_or(0.0);
    let primary = status
        .as_ref()
        .and_then(|s| s.replication.primary.clone())
        .unwrap_or_else(|| "its primary".into());
    let overview = match signed_in(&state, &headers).await {
        Some(_) => state.store.instances().await.ok(),
        None => None,
    };
    let leases = match overview {
        Some(_) => state.store.leases().await.unwrap_or_default(),
        None => Vec::new(),
    };
    let headline = match status.as_ref().map(|s| &s.role) {
        Some(Role::Fenced(by)) => format!(
            "Fenced: the peer region took over (epoch {}, {}). This instance does not act.",
            by.epoch,
            ts(by.at)
        ),
        _ => format!(
            "Standby of the cluster at {primary}, replica lag {lag:.1} s: this instance will take \
             over when the database is promoted."
        ),
    };
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Quire — standby" } }
            body {
                h1 { "Quire" }
                p #standby { (headline) }
                @if let Some((now, instances)) = &overview {
                    h2 { "Instances (as the replica has them)" }
                    table #instances {
                        tr { th { "Instance" } th { "Address" } th { "Version" } th { "Last heartbeat" } }
                        @for i in instances {
                            tr {
                                td { (i.info.name) } td { (i.info.address) } td { (i.info.version) }
                                td { (format!("{} s ago", (now - i.heartbeat_at) / 1000)) }
                            }
                        }
                    }
                    h2 { "Leader roles" }
                    table #leases {
                        tr { th { "Role" } th { "Holder" } th { "Term" } }
                        @for l in &leases {
                            tr { td { (l.role) } td { (l.holder.as_deref().unwrap_or("—")) } td { (l.term) } }
                        }
                    }
                } @else {
                    p { "Sign in on the active region; with its session or an API token this page also shows the HA overview read from the replica." }
                }
            }
        }
    };
    (StatusCode::OK, Html(body.into_string())).into_response()
}

/// A user of a session or API token made on the primary, looked up without writing.
async fn signed_in(state: &StandbyState, headers: &HeaderMap) -> Option<String> {
    let now = now_ms();
    if let Some(secret) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        let (_, user) = state
            .store
            .token_user(&token::digest(secret.trim()), now)
            .await
            .ok()??;
        return Some(user.email);
    }
    let secret = cookie(headers, SESSION_COOKIE)?;
    let (_, user) = state
        .store
        .session(&token::digest(secret), now)
        .await
        .ok()??;
    Some(user.email)
}
