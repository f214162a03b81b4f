//! A person's approval of tool calls.
//!
//! - `GET /api/sessions/{session_id}/approvals` — the requests waiting, the
//!   rules "allow for this session" added, and the session's mode.
//! - `POST /api/sessions/{session_id}/approvals/{approval_id}` —
//!   `{"decision": "allow" | "allow_session" | "deny", "message": "...",
//!   "pattern": "..."}` resolves a request: 404 when there is no such
//!   request, 409 when it was resolved already (by a person, the timeout or
//!   a cancel). `allow_session` adds a rule for the tool and `pattern` (a
//!   glob on the subject; default: exactly this subject).

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, post_with};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiPath};
use super::{ApiError, SessionPath};
use crate::session::{ApprovalMode, ApprovalRequest, ApprovalRule, Decision, ResolveError};
use crate::state::AppState;

/// Most characters in a decision's message.
const MAX_MESSAGE_CHARS: usize = 4000;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ApprovalPath {
    pub session_id: String,
    pub approval_id: String,
}

/// What a person decides.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PersonDecision {
    /// Run this call.
    Allow,
    /// Run it, and later calls of the tool whose subject matches `pattern`,
    /// without asking, for the rest of the session.
    AllowSession,
    /// Do not run it; the model sees `message`.
    Deny,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    pub decision: PersonDecision,
    /// Why (for a denial, the model reads it). At most 4000 characters.
    #[serde(default)]
    pub message: Option<String>,
    /// For `allow_session`: a glob on the subject (`*` matches anything,
    /// `?` one character); default: exactly this request's subject.
    #[serde(default)]
    pub pattern: Option<String>,
}

/// A request as resolved.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Resolved {
    pub approval_id: String,
    pub decision: Decision,
    pub by: String,
    pub request: ApprovalRequest,
}

/// A session's approvals.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Approvals {
    /// How its tool calls are approved: default, all or none.
    pub mode: ApprovalMode,
    /// Requests waiting, oldest first.
    pub pending: Vec<ApprovalRequest>,
    /// What "allow for this session" added.
    pub rules: Vec<ApprovalRule>,
    /// Seconds a request waits before it is denied.
    pub timeout_secs: u64,
}

pub fn routes() -> ApiRouter<Arc<AppState>> {
    ApiRouter::new()
        .api_route(
            "/api/sessions/{session_id}/approvals",
            get_with(list, |op| {
                op.summary("Tool calls waiting for approval, and the session's rules")
                    .tag("approvals")
            }),
        )
        .api_route(
            "/api/sessions/{session_id}/approvals/{approval_id}",
            post_with(resolve, |op| {
                op.summary("Allow or deny a tool call waiting for approval")
                    .tag("approvals")
            }),
        )
}

async fn list(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
) -> Result<Json<Approvals>, ApiError> {
    let session = state.sessions.get(&path.session_id)?;
    let approvals = &session.approvals;
    Ok(Json(Approvals {
        mode: approvals.mode(),
        pending: approvals
            .pending()
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?,
        rules: approvals.rules().await,
        timeout_secs: approvals.timeout().as_secs(),
    }))
}

async fn resolve(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<ApprovalPath>,
    ApiJson(req): ApiJson<ResolveRequest>,
) -> Result<Json<Resolved>, ApiError> {
    let session = state.sessions.get(&path.session_id)?;
    if req
        .message
        .as_ref()
        .is_some_and(|m| m.chars().count() > MAX_MESSAGE_CHARS)
    {
        return Err(ApiError::unprocessable(format!(
            "message: at most {MAX_MESSAGE_CHARS} characters"
        )));
    }
    let decision = match req.decision {
        PersonDecision::Allow => Decision::Allow,
        PersonDecision::AllowSession => Decision::AllowSession,
        PersonDecision::Deny => Decision::Deny,
    };
    let by = "user";
    let request = session
        .approvals
        .resolve(&path.approval_id, decision, req.message, by, req.pattern)
        .await
        .map_err(|e| match e {
            ResolveError::NotFound(_) => ApiError::not_found(e.to_string()),
            ResolveError::AlreadyResolved { .. } => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            ResolveError::InvalidPattern(m) => ApiError::unprocessable(m),
            ResolveError::Store(e) => ApiError::internal(e.to_string()),
        })?;
    Ok(Json(Resolved {
        approval_id: path.approval_id,
        decision,
        by: by.into(),
        request,
    }))
}
