//! Deliveries: every mail, one per recipient (`/api/v1/deliveries`), and sending one again.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::extract::{ApiPath, ApiQuery};
use super::problem::{ApiResult, Problem};
use super::views::ts;
use crate::app::auth::Principal;
use crate::app::model::{Mail, MailState, UserRole};
use crate::app::state::AppState;

/// A mail to one recipient, with its delivery state and the server's last reply.
#[derive(Serialize)]
pub struct MailView {
    id: String,
    occurrence: Option<String>,
    recipient: String,
    subject: String,
    state: MailState,
    attempts: i64,
    next_attempt_at: Option<String>,
    last_reply: Option<String>,
    sent_at: Option<String>,
    message_id: String,
}

impl From<&Mail> for MailView {
    fn from(m: &Mail) -> Self {
        MailView {
            id: m.id.clone(),
            occurrence: m.occurrence_id.clone(),
            recipient: m.recipient.clone(),
            subject: m.subject.clone(),
            state: m.state,
            attempts: m.attempts,
            next_attempt_at: (m.state == MailState::Queued).then(|| ts(m.next_attempt_at)),
            last_reply: m.last_reply.clone(),
            sent_at: m.sent_at.map(ts),
            message_id: m.message_id.clone(),
        }
    }
}

/// `?state=&limit=` of the deliveries list.
#[derive(Deserialize)]
pub struct DeliveryQuery {
    state: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/v1/deliveries`: mails, newest first (editors).
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> ApiResult<Json<Vec<MailView>>> {
    p.require(UserRole::Editor)?;
    let filter = q
        .state
        .as_deref()
        .map(|s| {
            MailState::parse(s).ok_or_else(|| {
                Problem::invalid("state", format!("one of {}", MailState::NAMES.join(", ")))
            })
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let mails = state.schedules.deliveries(filter, limit).await?;
    Ok(Json(mails.iter().map(MailView::from).collect()))
}

/// `POST /api/v1/deliveries/{id}/resend`: queues a sent or failed mail again.
pub async fn resend(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<MailView>> {
    p.require(UserRole::Editor)?;
    Ok(Json(MailView::from(&state.schedules.resend(&id).await?)))
}
