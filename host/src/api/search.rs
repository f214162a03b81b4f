//! Searching a session's workspace (ripgrep's crates; `.gitignore` honoured).
//!
//! - `POST /api/sessions/{session_id}/search/files` — files whose names match
//!   a glob.
//! - `POST /api/sessions/{session_id}/search/grep` — lines matching a regular
//!   expression.
//!
//! `file_types` is a comma-separated list of globs (`"*.py,*.js"`), or a list.
//! Searching a directory the workspace does not have is a 409: the session
//! exists (a 404 would say it does not), but holds nothing at that path.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::post_with;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiPath};
use super::types::{Bounded, GrepPattern, WorkspacePath};
use super::{ApiError, SessionPath};
use crate::capabilities::CapabilityError;
use crate::state::AppState;
use crate::workspace::WorkspaceError;
use crate::workspace::{GrepMatch, SearchError, SearchOptions};

/// `"*.py,*.js"` or `["*.py", "*.js"]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum FileTypes {
    Joined(String),
    List(Vec<String>),
}

/// Most results one request may ask for; the server's own cap
/// (`workspace.search_max_results`) applies too.
const MAX_RESULTS: u64 = 100_000;

/// Where to search, shared by both kinds of search.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchScope {
    /// Directory to search, relative to the workspace (default ".").
    #[serde(default = "WorkspacePath::root")]
    pub path: WorkspacePath,
    /// Only files whose names match one of these globs.
    pub file_types: Option<FileTypes>,
    /// Most results (additive; the server caps it too).
    pub max_results: Option<Bounded<1, MAX_RESULTS>>,
}

impl SearchScope {
    fn options(&self) -> SearchOptions {
        let file_types = match &self.file_types {
            None => Vec::new(),
            Some(FileTypes::Joined(s)) => SearchOptions::parse_file_types(Some(s)),
            Some(FileTypes::List(l)) => l
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        };
        SearchOptions {
            path: self.path.as_str().to_string(),
            file_types,
            max_results: self.max_results.map(|n| n.get() as usize),
        }
    }
}

/// Files whose names (or paths) match a glob.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct FilesRequest {
    /// A glob matched against file names (`*.py`), or against paths when it
    /// holds a `/` (`src/**/*.rs`). A glob that does not parse (`[abc`) is
    /// matched literally, as shells do.
    pub pattern: String,
    #[serde(flatten)]
    pub scope: SearchScope,
}

/// Lines that match a regular expression.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct GrepRequest {
    /// A regular expression matched against each line (`Flask`).
    pub pattern: GrepPattern,
    #[serde(flatten)]
    pub scope: SearchScope,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FilesResponse {
    pub pattern: String,
    pub path: String,
    pub matches: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct GrepResponse {
    pub pattern: String,
    pub path: String,
    pub matches: Vec<GrepMatch>,
}

pub fn routes() -> ApiRouter<Arc<AppState>> {
    ApiRouter::new()
        .api_route(
            "/api/sessions/{session_id}/search/files",
            post_with(files, |op| op.summary("Find files by name").tag("search")),
        )
        .api_route(
            "/api/sessions/{session_id}/search/grep",
            post_with(grep, |op| op.summary("Search file contents").tag("search")),
        )
}

/// The search's error as the API reports it: a missing directory is a
/// conflict with what the workspace holds, not a missing session.
fn search_error(e: CapabilityError) -> ApiError {
    match e {
        CapabilityError::Workspace(WorkspaceError::NotFound(path))
        | CapabilityError::Search(SearchError::Workspace(WorkspaceError::NotFound(path))) => {
            ApiError::new(
                StatusCode::CONFLICT,
                format!("Cannot search {path}: the workspace has no such directory"),
            )
        }
        other => other.into(),
    }
}

async fn files(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
    ApiJson(req): ApiJson<FilesRequest>,
) -> Result<Json<FilesResponse>, ApiError> {
    let session = state.sessions.get(&path.session_id)?;
    let matches = session
        .caps
        .glob(&req.pattern, req.scope.options())
        .await
        .map_err(search_error)?;
    Ok(Json(FilesResponse {
        pattern: req.pattern,
        path: req.scope.path.into_inner(),
        matches,
    }))
}

async fn grep(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
    ApiJson(req): ApiJson<GrepRequest>,
) -> Result<Json<GrepResponse>, ApiError> {
    let session = state.sessions.get(&path.session_id)?;
    let matches = session
        .caps
        .grep(req.pattern.as_str(), req.scope.options())
        .await
        .map_err(search_error)?;
    Ok(Json(GrepResponse {
        pattern: req.pattern.into_inner(),
        path: req.scope.path.into_inner(),
        matches,
    }))
}
