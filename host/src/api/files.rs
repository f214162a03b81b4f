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
use super::types::WorkspacePath;
use super::{ApiError, MessageResponse, SessionPath};
use crate::state::AppState;
use crate::workspace::EntryKind;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListQuery {
    /// Directory to list, relative to the workspace (default ".").
    pub path: Option<WorkspacePath>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct FileItem {
    pub name: String,
    /// `file`, `directory`, `symlink` or `other`.
    #[serde(rename = "type")]
    pub kind: EntryKind,
    /// Size in bytes; null for directories.
    pub size: Option<u64>,
    pub modified: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ListResponse {
    pub path: String,
    pub items: Vec<FileItem>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct PathQuery {
    /// File path, relative to the workspace.
    pub path: WorkspacePath,
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

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ContentResponse {
    pub path: String,
    pub content: String,
    /// `utf-8` for text, `base64` for anything else (additive).
    pub encoding: Encoding,
}

#[derive(Debug, Deserialize)]
pub struct WriteRequest {
    /// File path, relative to the workspace; parent directories are created.
    pub path: WorkspacePath,
    pub content: String,
    /// How `content` is encoded (default `utf-8`; additive).
    #[serde(default)]
    pub encoding: Encoding,
}

/// Padded base64 as the standard alphabet writes it, with nothing after
/// the last byte's bits: what [`BASE64`] decodes.
const BASE64_PATTERN: &str =
    "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$";
const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Written by hand to say what the server checks: with `"encoding":
/// "base64"`, `content` must be base64.
impl JsonSchema for WriteRequest {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "WriteRequest".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let path = generator.subschema_for::<WorkspacePath>();
        schemars::json_schema!({
            "description": "A file to write: text as is, or binary content as base64 with \
                            `\"encoding\": \"base64\"`.",
            "anyOf": [
                {
                    "type": "object",
                    "required": ["path", "content"],
                    "properties": {
                        "path": path,
                        "content": { "type": "string", "description": "The file's text." },
                        "encoding": { "type": "string", "enum": ["utf-8", "utf8"] },
                    },
                },
                {
                    "type": "object",
                    "required": ["path", "content", "encoding"],
                    "properties": {
                        "path": path,
                        "content": {
                            "type": "string",
                            "pattern": BASE64_PATTERN,
                            "description": "The file's bytes, base64 (standard alphabet, padded).",
                        },
                        "encoding": { "type": "string", "const": "base64" },
                    },
                },
            ],
        })
    }
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
    let dir = query.path.unwrap_or_else(WorkspacePath::root).into_inner();
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
    let bytes = session.caps.read_file(query.path.as_str()).await?;
    let (content, encoding) = match String::from_utf8(bytes) {
        Ok(text) => (text, Encoding::Utf8),
        Err(e) => (BASE64.encode(e.into_bytes()), Encoding::Base64),
    };
    Ok(Json(ContentResponse {
        path: query.path.into_inner(),
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
        Encoding::Base64 => BASE64.decode(req.content.as_bytes()).map_err(|e| {
            ApiError::unprocessable(format!("Invalid field `content`: not base64: {e}"))
        })?,
    };
    session.caps.write_file(req.path.as_str(), data).await?;
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
    session.caps.remove(query.path.as_str()).await?;
    Ok(Json(MessageResponse::new(format!(
        "File {} deleted successfully",
        query.path
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base64_pattern_accepts_exactly_what_decodes() {
        let pattern = regex::Regex::new(BASE64_PATTERN).unwrap();
        let mut samples: Vec<String> = (0..40u8)
            .map(|n| BASE64.encode((0..n).map(|i| i.wrapping_mul(37)).collect::<Vec<_>>()))
            .collect();
        for bad in [
            "QQ", "QR==", "QUI", "QUJ=", "A===", "====", "QUJD\n", " QUJD", "QU=D", "Q*==", "é",
        ] {
            samples.push(bad.into());
        }
        for s in &samples {
            assert_eq!(
                pattern.is_match(s),
                BASE64.decode(s.as_bytes()).is_ok(),
                "{s:?}"
            );
        }
    }
}
