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
    /// Whether a Docker engine answers (with several, whether at least
    /// one does: new sessions can be placed).
    pub docker_available: bool,
    /// Each engine sessions are placed on: whether it answers, and how
    /// many sessions it holds (additive).
    pub engines: Vec<crate::session::EngineReport>,
}

pub fn routes() -> ApiRouter<Arc<AppState>> {
    ApiRouter::new().api_route(
        "/api/health",
        get_with(health, |op| op.summary("Server health").tag("health")),
    )
}

async fn health(State(state): State<Arc<AppState>>) -> Json<HealthResponse> {
    let engines = state.sessions.engines();
    Json(HealthResponse {
        status: "healthy",
        timestamp: timestamp(chrono::Utc::now()),
        active_sessions: state.sessions.active_count(),
        docker_available: engines.iter().any(|e| e.available),
        engines,
    })
}
