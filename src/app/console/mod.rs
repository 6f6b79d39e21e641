//! The web console.

use axum::Router;

use super::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
