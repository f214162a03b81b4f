//! Sessions: list, create, get, delete.
//!
//! - `GET /api/sessions` — every session, oldest first.
//! - `POST /api/sessions` — `{"task": "..."}` (optional): creates the workspace
//!   and the container; a non-empty task is recorded as `last_task` and handed
//!   to the agent. 503 when the Docker engine is unavailable.
//! - `GET /api/sessions/{session_id}` — one session; 404 `Session not found`.
//! - `DELETE /api/sessions/{session_id}` — removes the container, the
//!   workspace and everything stored; a second delete is a 404.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::Json;
use axum::extract::State;
use schemars::JsonSchema;
use serde::Deserialize;

use super::extract::{ApiJson, ApiPath};
use super::types::FirstTaskText;
use super::{ApiError, MessageResponse, SessionPath};
use crate::server::AppState;
use crate::session::SessionInfo;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateSessionRequest {
    /// A first task for the agent. Optional; blank means none.
    #[serde(default)]
    pub task: Option<FirstTaskText>,
}

pub fn routes() -> ApiRouter<Arc<AppState>> {
    ApiRouter::new()
        .api_route(
            "/api/sessions",
            get_with(list, |op| op.summary("List sessions").tag("sessions"))
                .post_with(create, |op| op.summary("Create a session").tag("sessions")),
        )
        .api_route(
            "/api/sessions/{session_id}",
            get_with(get, |op| op.summary("Get a session").tag("sessions")).delete_with(
                delete,
                |op| {
                    op.summary("Delete a session and its container")
                        .tag("sessions")
                },
            ),
        )
}

async fn list(State(state): State<Arc<AppState>>) -> Json<Vec<SessionInfo>> {
    let sessions = &state.sessions;
    Json(sessions.list().iter().map(|s| sessions.info(s)).collect())
}

async fn create(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<CreateSessionRequest>,
) -> Result<Json<SessionInfo>, ApiError> {
    let task = req
        .task
        .map(FirstTaskText::into_inner)
        .filter(|t| !t.trim().is_empty());
    let session = state.sessions.create(task.clone()).await?;
    // Taken before the task starts, so `?since=last_event_seq` follows the
    // whole task from its `task_started`.
    let info = state.sessions.info(&session);
    if let Some(task) = task {
        super::tasks::start(&state, &session, task).await?;
    }
    Ok(Json(info))
}

async fn get(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
) -> Result<Json<SessionInfo>, ApiError> {
    let session = state.sessions.get(&path.session_id)?;
    Ok(Json(state.sessions.info(&session)))
}

async fn delete(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
) -> Result<Json<MessageResponse>, ApiError> {
    let session = state.sessions.get(&path.session_id)?;
    state.agent.forget(&session.id);
    state.sessions.delete(&session.id).await?;
    Ok(Json(MessageResponse::new(format!(
        "Session {} deleted successfully",
        path.session_id
    ))))
}
