//! Sessions: list, create, get, delete.
//!
//! - `GET /api/sessions` — the sessions the caller may see, oldest first
//!   (a user: its own; an admin: all, or one owner's with `?owner=`).
//! - `POST /api/sessions` — `{"task": "..."}` (optional): creates the workspace
//!   and the container; a non-empty task is recorded as `last_task` and handed
//!   to the agent. 503 when the Docker engine is unavailable.
//!   `"network": {"allow": [...], "deny": [...]}` (optional) narrows what its
//!   programs may reach (403 when the operator's policy does not permit it).
//!   `"approval": "default" | "all" | "none"` (optional) says which tool
//!   calls wait for a person (`none`: 403 unless the operator permits it).
//!   `"budget_tokens": N` (optional) caps the model tokens its tasks use
//!   (403 past `agent.max_session_budget_tokens`). 429 when the caller has
//!   `max_sessions` already.
//! - `GET /api/sessions/{session_id}` — one session; 404 `Session not found`.
//! - `DELETE /api/sessions/{session_id}` — removes the container, the
//!   workspace and everything stored; a second delete is a 404.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::extract::State;
use axum::{Extension, Json};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::network::NetworkSettings;
use super::types::{Bounded, FirstTaskText};
use super::{ApiError, MessageResponse, SessionPath};
use crate::principal::Principal;
use crate::service::{CreateRequest, Created};
use crate::session::{ApprovalMode, Session, SessionManager, SessionStatus};
use crate::state::AppState;

/// A session as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SessionInfo {
    /// 8 lowercase hex characters.
    pub session_id: String,
    pub container_id: String,
    /// Where the workspace (mounted at /workspace in the container) lives:
    /// an absolute path on the server's host, or `volume:<name>` for a named
    /// volume on an engine that is not local.
    pub workdir: String,
    pub created: String,
    /// The most recent task given to the session.
    pub last_task: Option<String>,
    pub status: SessionStatus,
    /// The engine's word for the container: running, exited, removed, unknown...
    pub container_status: String,
    /// Why the session is in error (additive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Sequence number of its latest event: connect with `?since=` this to
    /// get only what comes next (additive). In a create response it is taken
    /// before the session's first task starts.
    pub last_event_seq: u64,
    /// How its tool calls are approved: default, all or none (additive).
    pub approval: ApprovalMode,
    /// The principal that made it (additive; empty for sessions made
    /// before principals, which only admins see).
    #[serde(default)]
    pub owner: String,
    /// Most model tokens its tasks may use, when limited (additive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<u64>,
    /// Model tokens its tasks used so far (additive).
    #[serde(default)]
    pub tokens_used: u64,
    /// The Docker engine its container is on (additive; `default` unless
    /// `[[sandbox.engines]]` names several).
    #[serde(default)]
    pub engine: String,
    /// The server running its tasks, when several share one database
    /// (additive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

impl SessionInfo {
    /// A session just made: its events so far are as of its making.
    pub(super) fn created(sessions: &SessionManager, created: &Created) -> Self {
        let mut info = Self::new(sessions, &created.session);
        info.last_event_seq = created.last_event_seq;
        info
    }

    fn new(sessions: &SessionManager, s: &Session) -> Self {
        let report = sessions.status(s);
        Self {
            session_id: s.id.clone(),
            container_id: s.container_id.clone(),
            workdir: s.caps.workspace().to_string(),
            created: crate::time::timestamp(s.created),
            last_task: s.last_task(),
            status: report.status,
            container_status: report.container_status,
            error: report.error,
            last_event_seq: s.events.last_seq(),
            approval: s.approvals.mode(),
            owner: s.owner.clone(),
            budget_tokens: s.budget_tokens,
            tokens_used: s.tokens_used(),
            engine: s.engine.clone(),
            server: s.server(),
        }
    }
}

/// The largest `budget_tokens` the API takes (the operator may permit
/// less).
pub const MAX_BUDGET_TOKENS: u64 = 1_000_000_000_000;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListQuery {
    /// Only the sessions of this principal (admins; a user sees only its
    /// own anyway).
    pub owner: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateSessionRequest {
    /// A first task for the agent. Optional; blank means none.
    #[serde(default)]
    pub task: Option<FirstTaskText>,
    /// The session's own network settings (additive): `allow` narrows the
    /// operator's allow list, `deny` adds to the operator's. 422 when a
    /// pattern is malformed, 403 when one reaches past the operator's policy.
    #[serde(default)]
    pub network: Option<NetworkSettings>,
    /// How its tool calls are approved (additive): `default` (as the
    /// operator configured each tool), `all` (every tool that can change
    /// something asks) or `none` (nothing asks; 403 unless the operator
    /// permits it).
    #[serde(default)]
    pub approval: ApprovalMode,
    /// Most model tokens its tasks may use (additive; default
    /// `agent.session_budget_tokens`, at most
    /// `agent.max_session_budget_tokens` or a 403). A task whose next model
    /// call would go past it ends with status `budget_exceeded`.
    #[serde(default)]
    pub budget_tokens: Option<Bounded<1, MAX_BUDGET_TOKENS>>,
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

async fn list(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Json<Vec<SessionInfo>> {
    let sessions = &state.sessions;
    Json(
        sessions
            .list()
            .iter()
            .filter(|s| principal.may_see(&s.owner))
            .filter(|s| query.owner.as_ref().is_none_or(|o| *o == s.owner))
            .map(|s| SessionInfo::new(sessions, s))
            .collect(),
    )
}

async fn create(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiJson(req): ApiJson<CreateSessionRequest>,
) -> Result<Json<SessionInfo>, ApiError> {
    let request = CreateRequest {
        task: req.task.map(FirstTaskText::into_inner),
        network: req.network.map(Into::into),
        approval: req.approval,
        budget_tokens: req.budget_tokens.map(Bounded::get),
    };
    let created = state.service.create(&principal, request).await?;
    Ok(Json(SessionInfo::created(&state.sessions, &created)))
}

async fn get(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
) -> Result<Json<SessionInfo>, ApiError> {
    let session = state.sessions.get(&path.session_id)?;
    Ok(Json(SessionInfo::new(&state.sessions, &session)))
}

async fn delete(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
) -> Result<Json<MessageResponse>, ApiError> {
    state.service.delete(&path.session_id).await?;
    Ok(Json(MessageResponse::new(format!(
        "Session {} deleted successfully",
        path.session_id
    ))))
}
