//! Tasks for the agent.
//!
//! - `POST /api/sessions/{session_id}/tasks` — give the agent a task. It runs
//!   asynchronously, its progress streaming over the session's WebSocket. A
//!   task posted while another runs waits its turn: the answer then says so,
//!   with its position (additive fields `queued`, `position`, `task_id`).
//! - `POST /api/sessions/{session_id}/tasks/cancel` — stop the running task
//!   (additive). Its events end with an `error` saying it was cancelled and
//!   `task_completed` with `status: "cancelled"`.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::post_with;
use axum::Json;
use axum::extract::State;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiPath};
use super::types::TaskText;
use super::{ApiError, MessageResponse, SessionPath};
use crate::state::AppState;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct TaskRequest {
    /// What the agent should do.
    pub task: TaskText,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct TaskResponse {
    pub message: String,
    pub task: String,
    /// Our id for the task; events about it carry it (additive).
    pub task_id: String,
    /// Whether it waits behind another task (additive).
    pub queued: bool,
    /// Tasks ahead of it; 0 when it started at once (additive).
    pub position: usize,
}

pub fn routes() -> ApiRouter<Arc<AppState>> {
    ApiRouter::new()
        .api_route(
            "/api/sessions/{session_id}/tasks",
            post_with(submit, |op| {
                op.summary("Run a task in a session").tag("tasks")
            }),
        )
        .api_route(
            "/api/sessions/{session_id}/tasks/cancel",
            post_with(cancel, |op| {
                op.summary("Cancel the running task").tag("tasks")
            }),
        )
}

async fn submit(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
    ApiJson(req): ApiJson<TaskRequest>,
) -> Result<Json<TaskResponse>, ApiError> {
    let task = req.task.into_inner();
    let submitted = state.service.submit(&path.session_id, task.clone()).await?;
    let id = &path.session_id;
    let message = if submitted.position == 0 {
        format!("Task started in session {id}")
    } else {
        format!(
            "Task queued in session {id} (position {})",
            submitted.position
        )
    };
    Ok(Json(TaskResponse {
        message,
        task,
        task_id: submitted.task_id,
        queued: submitted.position > 0,
        position: submitted.position,
    }))
}

async fn cancel(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
) -> Result<Json<MessageResponse>, ApiError> {
    state.service.cancel(&path.session_id).await?;
    Ok(Json(MessageResponse::new(format!(
        "Task cancelled in session {}",
        path.session_id
    ))))
}
