//! Searching a session's workspace (ripgrep's crates; `.gitignore` honoured).
//!
//! - `POST /api/sessions/{session_id}/search/files` — files whose names match
//!   a glob.
//! - `POST /api/sessions/{session_id}/search/grep` — lines matching a regular
//!   expression.
//!
//! `file_types` is a comma-separated list of globs (`"*.py,*.js"`), or a list.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::post_with;
use axum::Json;
use axum::extract::State;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiPath};
use super::{ApiError, SessionPath};
use crate::search::{GrepMatch, SearchOptions};
use crate::server::AppState;

/// `"*.py,*.js"` or `["*.py", "*.js"]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum FileTypes {
    Joined(String),
    List(Vec<String>),
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchRequest {
    /// A glob for files (`*.py`), a regular expression for grep (`Flask`).
    pub pattern: String,
    /// Directory to search, relative to the workspace (default ".").
    #[serde(default = "dot")]
    pub path: String,
    /// Only files whose names match one of these globs.
    pub file_types: Option<FileTypes>,
    /// Most results (additive; the server caps it too).
    pub max_results: Option<usize>,
}

fn dot() -> String {
    ".".into()
}

impl SearchRequest {
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
            path: self.path.clone(),
            file_types,
            max_results: self.max_results,
        }
    }
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

async fn files(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
    ApiJson(req): ApiJson<SearchRequest>,
) -> Result<Json<FilesResponse>, ApiError> {
    let session = state.sessions.get(&path.session_id)?;
    let matches = session.caps.glob(&req.pattern, req.options()).await?;
    Ok(Json(FilesResponse {
        pattern: req.pattern,
        path: req.path,
        matches,
    }))
}

async fn grep(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
    ApiJson(req): ApiJson<SearchRequest>,
) -> Result<Json<GrepResponse>, ApiError> {
    let session = state.sessions.get(&path.session_id)?;
    let matches = session.caps.grep(&req.pattern, req.options()).await?;
    Ok(Json(GrepResponse {
        pattern: req.pattern,
        path: req.path,
        matches,
    }))
}
