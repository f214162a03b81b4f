//! Files in a session's workspace.
//!
//! - `GET /api/sessions/{session_id}/files?path=.` — list a directory.
//! - `GET /api/sessions/{session_id}/files/content?path=app.py` — read a file:
//!   UTF-8 text as is, anything else base64 with `"encoding": "base64"`.
//! - `POST /api/sessions/{session_id}/files/content` — write a file (parents
//!   are created); `"encoding": "base64"` for binary content (additive).
//! - `DELETE /api/sessions/{session_id}/files/content?path=...` — delete a
//!   file or directory (additive).
//!
//! Paths are relative to the workspace (`/workspace/...` also works); one
//! that leads outside is refused with 403, a malformed one with 400.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::{ApiError, MessageResponse, SessionPath};
use crate::server::AppState;
use crate::workspace::EntryKind;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListQuery {
    /// Directory to list, relative to the workspace (default ".").
    pub path: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FileItem {
    pub name: String,
    /// `file`, `directory`, `symlink` or `other`.
    #[serde(rename = "type")]
    pub kind: EntryKind,
    /// Size in bytes; null for directories.
    pub size: Option<u64>,
    pub modified: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListResponse {
    pub path: String,
    pub items: Vec<FileItem>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct PathQuery {
    /// File path, relative to the workspace.
    pub path: String,
}

/// How `content` is encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Plain text.
    #[default]
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    /// Base64 of the bytes (binary files).
    Base64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ContentResponse {
    pub path: String,
    pub content: String,
    /// `utf-8` for text, `base64` for anything else (additive).
    pub encoding: Encoding,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct WriteRequest {
    /// File path, relative to the workspace; parent directories are created.
    pub path: String,
    pub content: String,
    /// How `content` is encoded (default `utf-8`; additive).
    #[serde(default)]
    pub encoding: Encoding,
}

pub fn routes() -> ApiRouter<Arc<AppState>> {
    ApiRouter::new()
        .api_route(
            "/api/sessions/{session_id}/files",
            get_with(list, |op| op.summary("List a directory").tag("files")),
        )
        .api_route(
            "/api/sessions/{session_id}/files/content",
            get_with(read, |op| op.summary("Read a file").tag("files"))
                .post_with(write, |op| op.summary("Write a file").tag("files"))
                .delete_with(remove, |op| {
                    op.summary("Delete a file or directory").tag("files")
                }),
        )
}

async fn list(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<ListResponse>, ApiError> {
    let session = state.sessions.get(&path.session_id)?;
    let dir = query.path.unwrap_or_else(|| ".".into());
    let items = session
        .caps
        .list_dir(&dir)
        .await?
        .into_iter()
        .map(|e| FileItem {
            name: e.name,
            kind: e.kind,
            size: e.size,
            modified: e.modified.map(crate::time::system_timestamp),
        })
        .collect();
    Ok(Json(ListResponse { path: dir, items }))
}

async fn read(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
    ApiQuery(query): ApiQuery<PathQuery>,
) -> Result<Json<ContentResponse>, ApiError> {
    let session = state.sessions.get(&path.session_id)?;
    let bytes = session.caps.read_file(&query.path).await?;
    let (content, encoding) = match String::from_utf8(bytes) {
        Ok(text) => (text, Encoding::Utf8),
        Err(e) => (
            base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
            Encoding::Base64,
        ),
    };
    Ok(Json(ContentResponse {
        path: query.path,
        content,
        encoding,
    }))
}

async fn write(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
    ApiJson(req): ApiJson<WriteRequest>,
) -> Result<Json<MessageResponse>, ApiError> {
    let session = state.sessions.get(&path.session_id)?;
    let data = match req.encoding {
        Encoding::Utf8 => req.content.into_bytes(),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(req.content.as_bytes())
            .map_err(|e| {
                ApiError::unprocessable(format!("Invalid field `content`: not base64: {e}"))
            })?,
    };
    session.caps.write_file(&req.path, data).await?;
    Ok(Json(MessageResponse::new(format!(
        "File {} written successfully",
        req.path
    ))))
}

async fn remove(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
    ApiQuery(query): ApiQuery<PathQuery>,
) -> Result<Json<MessageResponse>, ApiError> {
    let session = state.sessions.get(&path.session_id)?;
    session.caps.remove(&query.path).await?;
    Ok(Json(MessageResponse::new(format!(
        "File {} deleted successfully",
        query.path
    ))))
}
