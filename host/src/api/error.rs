//! The one error type of the REST API: a status code and the contract's
//! `{"detail": "..."}` body.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::sandbox::SandboxError;
use crate::workspace::WorkspaceError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
        }
    }
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
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
            Json(serde_json::json!({ "detail": self.detail })),
        )
            .into_response()
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
            WorkspaceError::InvalidPath { .. }
            | WorkspaceError::IsADirectory(_)
            | WorkspaceError::NotADirectory(_) => StatusCode::BAD_REQUEST,
            WorkspaceError::OutsideWorkspace(_) => StatusCode::FORBIDDEN,
            WorkspaceError::NotFound(_) => StatusCode::NOT_FOUND,
            WorkspaceError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            WorkspaceError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}
