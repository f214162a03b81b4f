//! The one error type of the REST API: a status code and the contract's
//! `{"detail": "..."}` body.

use aide::OperationOutput;
use aide::generate::GenContext;
use aide::openapi::{Operation, Response as ApiResponse, StatusCode as ApiStatus};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::agent::AgentError;
use crate::capabilities::CapabilityError;
use crate::principal::QuotaExceeded;
use crate::sandbox::SandboxError;
use crate::service::ServiceError;
use crate::session::SessionError;
use crate::workspace::SearchError;
use crate::workspace::WorkspaceError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: String,
    /// The limit a 429 is about, when it is a principal's.
    pub quota: Option<QuotaBody>,
}

/// The body of every error response.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// What went wrong, for humans.
    pub detail: String,
    /// On a 429 for a principal's limit (additive): which one, its value
    /// and what is used now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaBody>,
}

/// A principal's limit that a request reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct QuotaBody {
    /// `max_sessions`, `max_running_tasks` or `tokens_per_day`.
    pub name: String,
    pub principal: String,
    pub limit: u64,
    pub used: u64,
}

impl From<QuotaExceeded> for ApiError {
    fn from(e: QuotaExceeded) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            detail: e.to_string(),
            quota: Some(QuotaBody {
                name: e.quota.as_str().into(),
                principal: e.principal,
                limit: e.limit,
                used: e.used,
            }),
        }
    }
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            quota: None,
        }
    }
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, detail = %self.detail, "request failed");
        }
        (
            self.status,
            Json(ErrorBody {
                detail: self.detail,
                quota: self.quota,
            }),
        )
            .into_response()
    }
}

impl OperationOutput for ApiError {
    type Inner = ErrorBody;

    fn operation_response(ctx: &mut GenContext, operation: &mut Operation) -> Option<ApiResponse> {
        let mut response = Json::<ErrorBody>::operation_response(ctx, operation)?;
        response.description = "An error: `{\"detail\": \"...\"}`".into();
        Some(response)
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<ApiStatus>, ApiResponse)> {
        Self::operation_response(ctx, operation)
            .map(|r| vec![(None, r)])
            .unwrap_or_default()
    }
}

impl From<SandboxError> for ApiError {
    fn from(e: SandboxError) -> Self {
        let status = match &e {
            SandboxError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            SandboxError::NotFound(_) => StatusCode::NOT_FOUND,
            SandboxError::InvalidInput(_) => StatusCode::BAD_REQUEST,
            SandboxError::Conflict(_) | SandboxError::NotRunning(_) => StatusCode::CONFLICT,
            SandboxError::Engine(_) => StatusCode::BAD_GATEWAY,
        };
        Self::new(status, e.to_string())
    }
}

impl From<WorkspaceError> for ApiError {
    fn from(e: WorkspaceError) -> Self {
        let status = match &e {
            WorkspaceError::InvalidPath { .. } => StatusCode::BAD_REQUEST,
            // Well-formed, but the workspace holds something else there.
            WorkspaceError::IsADirectory(_)
            | WorkspaceError::NotADirectory(_)
            | WorkspaceError::SpecialFile(_) => StatusCode::CONFLICT,
            WorkspaceError::OutsideWorkspace(_) | WorkspaceError::Refused { .. } => {
                StatusCode::FORBIDDEN
            }
            WorkspaceError::NotFound(_) => StatusCode::NOT_FOUND,
            WorkspaceError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            WorkspaceError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

impl From<CapabilityError> for ApiError {
    fn from(e: CapabilityError) -> Self {
        match e {
            CapabilityError::Sandbox(e) => e.into(),
            CapabilityError::Workspace(e) | CapabilityError::Search(SearchError::Workspace(e)) => {
                e.into()
            }
            CapabilityError::Search(e) => Self::bad_request(e.to_string()),
            CapabilityError::ProcessNotFound(pid) => {
                Self::not_found(format!("Process {pid} not found in this session"))
            }
            e @ CapabilityError::Unusable { .. } => Self::new(StatusCode::CONFLICT, e.to_string()),
            CapabilityError::Internal(m) => Self::internal(m),
        }
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::NotFound => Self::not_found("Session not found"),
            SessionError::Sandbox(e) => e.into(),
            SessionError::Store(e) => Self::internal(e.to_string()),
            SessionError::Workspace(m) => Self::internal(format!("workspace: {m}")),
            SessionError::InvalidNetwork(m) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, m),
            SessionError::NetworkNotPermitted(m) | SessionError::ApprovalNotPermitted(m) => {
                Self::new(StatusCode::FORBIDDEN, m)
            }
            e @ SessionError::EnginesFull => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Session(e) => e.into(),
            ServiceError::Agent(e) => e.into(),
            e @ ServiceError::NothingRunning(_) => Self::new(StatusCode::CONFLICT, e.to_string()),
            ServiceError::Quota(e) => e.into(),
            ServiceError::BudgetNotPermitted(m) => Self::new(StatusCode::FORBIDDEN, m),
        }
    }
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        match e {
            e @ AgentError::QueueFull { .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, e.to_string())
            }
            e @ AgentError::ShuttingDown => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            e @ AgentError::UnknownTool(_) => Self::not_found(e.to_string()),
            e @ AgentError::ToolDisabled(_) => Self::new(StatusCode::FORBIDDEN, e.to_string()),
            AgentError::Store(e) => Self::internal(e.to_string()),
            AgentError::Events(e) => Self::internal(e),
            AgentError::Capability(e) => e.into(),
            e @ (AgentError::TaskRunning(_) | AgentError::CheckpointsOff) => {
                Self::new(StatusCode::CONFLICT, e.to_string())
            }
            // The session exists (the path found it) but its state has no
            // such checkpoint: a 404 would say the session is gone.
            e @ (AgentError::UnknownCheckpoint(_) | AgentError::NoEarlierCheckpoint) => {
                Self::new(StatusCode::CONFLICT, e.to_string())
            }
            AgentError::Quota(e) => e.into(),
        }
    }
}
