//! The SMTP settings made in the console (`/api/v1/settings/mail`, admins only).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract;
use super::problem::ApiResult;
use crate::app::auth::Principal;
use crate::app::mail;
use crate::app::model::UserRole;
use crate::app::state::AppState;

#[derive(Deserialize)]
struct MailSettingsRequest {
    smtp_url: String,
    from: String,
}

/// `GET /api/v1/settings/mail`: the SMTP settings in effect, without secrets (admins).
pub async fn get(State(state): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    p.require(UserRole::Admin)?;
    let current = mail::settings(state.store.as_ref(), &state.config.mail, &state.sealer).await;
    Ok(Json(match current {
        Ok(Some(s)) => json!({
            "source": s.source,
            "host": s.smtp.host,
            "port": s.smtp.port,
            "tls": s.smtp.tls,
            "user": s.smtp.user,
            "from": s.from,
            "editable": s.source != "config",
        }),
        Ok(None) => json!({"source": "none", "editable": true}),
        Err(e) => {
            json!({"source": "error", "error": e.to_string(), "editable": state.config.mail.smtp_url.is_none()})
        }
    }))
}

/// `PUT /api/v1/settings/mail`: saves console settings, the URL sealed (admins).
pub async fn save(
    State(state): State<AppState>,
    p: Principal,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    p.require(UserRole::Admin)?;
    let bytes = extract::body(body, 16 << 10, "mail settings").await?;
    let req: MailSettingsRequest = extract::json(&headers, &bytes)?;
    mail::save_settings(
        state.store.as_ref(),
        &state.config.mail,
        &state.sealer,
        &req.smtp_url,
        &req.from,
    )
    .await?;
    tracing::info!(by = %p.user.email, "mail settings saved");
    Ok(StatusCode::NO_CONTENT)
}
