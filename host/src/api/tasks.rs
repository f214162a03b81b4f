//! `POST /api/sessions/{session_id}/tasks` — give the agent a task.
//!
//! The task runs asynchronously; its progress streams over the session's
//! WebSocket. The answer says it started.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::post_with;
use axum::Json;
use axum::extract::State;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiPath};
use super::{ApiError, SessionPath};
use crate::server::AppState;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct TaskRequest {
    /// What the agent should do.
    pub task: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskResponse {
    pub message: String,
    pub task: String,
}

pub fn routes() -> ApiRouter<Arc<AppState>> {
    ApiRouter::new().api_route(
        "/api/sessions/{session_id}/tasks",
        post_with(submit, |op| {
            op.summary("Run a task in a session").tag("tasks")
        }),
    )
}

async fn submit(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
    ApiJson(req): ApiJson<TaskRequest>,
) -> Result<Json<TaskResponse>, ApiError> {
    let session = state.sessions.get(&path.session_id)?;
    if req.task.trim().is_empty() {
        return Err(ApiError::unprocessable(
            "Invalid field `task`: must not be empty",
        ));
    }
    state.submit_task(&session, req.task.clone()).await?;
    Ok(Json(TaskResponse {
        message: format!("Task started in session {}", session.id),
        task: req.task,
    }))
}
