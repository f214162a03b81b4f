//! `GET /api/health`: whether the server and the Docker engine answer.
//!
//! Reads the engine's availability flag kept by its monitor instead of
//! calling the engine, so health stays cheap under load and answers even
//! while the engine hangs.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::Json;
use axum::extract::State;
use schemars::JsonSchema;
use serde::Serialize;

use crate::state::AppState;
use crate::time::timestamp;

#[derive(Debug, Serialize, JsonSchema)]
pub struct HealthResponse {
    /// `"healthy"` whenever the server answers; see `docker_available`.
    pub status: &'static str,
    pub timestamp: String,
    pub active_sessions: usize,
    pub docker_available: bool,
}

pub fn routes() -> ApiRouter<Arc<AppState>> {
    ApiRouter::new().api_route(
        "/api/health",
        get_with(health, |op| op.summary("Server health").tag("health")),
    )
}

async fn health(State(state): State<Arc<AppState>>) -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "healthy",
        timestamp: timestamp(chrono::Utc::now()),
        active_sessions: state.sessions.active_count(),
        docker_available: state.sandbox.engine().is_available(),
    })
}
