//! `POST /api/v1/queries/run`: the editor's query runner. Editors run a query against a data
//! source with sample parameters and see its first rows and how long it took; nothing is saved.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::extract;
use super::problem::ApiResult;
use crate::app::auth::Principal;
use crate::app::model::{ParamSpec, QuerySpec, UserRole};
use crate::app::state::AppState;
use crate::app::templates::params;
use crate::app::templates::queries::Context;
use crate::connector::table::Overflow;

/// Rows the runner shows.
const SAMPLE_ROWS: usize = 50;
const BODY_LIMIT: usize = 1 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    datasource: String,
    text: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    /// The template's declared parameters, so that sample values bind with their types.
    #[serde(default)]
    declared: Vec<ParamSpec>,
}

pub async fn run(
    State(state): State<AppState>,
    p: Principal,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    p.require(UserRole::Editor)?;
    let bytes = extract::body(body, BODY_LIMIT, "query runner requests").await?;
    let req: RunRequest = extract::json(&headers, &bytes)?;
    let inputs = params::resolve(&req.declared, &req.parameters)?.inputs;
    let ran = state
        .queries
        .run_one(
            &QuerySpec {
                name: "(editor)".into(),
                datasource: req.datasource,
                text: req.text,
                params: Map::new(),
            },
            &inputs,
            &Context::asked_now(&p.user.email),
            SAMPLE_ROWS,
            Overflow::Truncate,
            "(editor)",
        )
        .await?;
    Ok(Json(json!({
        "columns": ran.table.columns,
        "rows": ran.table.rows,
        "row_count": ran.table.row_count,
        "truncated": ran.table.truncated,
        "took_ms": ran.took.as_secs_f64() * 1000.0,
    })))
}
