//! A session's checkpoints: its workspace recorded when it was made and
//! after each task.
//!
//! - `GET /api/sessions/{session_id}/checkpoints` — oldest first; `POST`
//!   records one now (201; 409 while a task runs).
//! - `GET /api/sessions/{session_id}/diff?from=&to=` — what changed from
//!   checkpoint `from` to checkpoint `to` (`current`, the default: the
//!   workspace as it is now); `from` defaults to the checkpoint before `to`.
//!   JSON `{files, patch}`, or the patch alone as `text/x-diff` when the
//!   request's `Accept` asks for it.
//! - `POST /api/sessions/{session_id}/rewind` — `{"checkpoint_id", "scope":
//!   "files" | "conversation" | "both"}`: back to a checkpoint; 409 while a
//!   task runs.
//! - `POST /api/sessions/{session_id}/fork` — `{"checkpoint_id"}` (optional:
//!   the latest): a new session from a checkpoint; 201 with the create body.

use std::sync::Arc;

use aide::OperationOutput;
use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, post_with};
use aide::generate::GenContext;
use aide::openapi::{
    MediaType, Operation, Response as ApiResponse, SchemaObject, StatusCode as ApiStatus,
};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::sessions::SessionInfo;
use super::{ApiError, SessionPath};
use crate::agent::{CheckpointDiff, CheckpointRecord, RewindScope, Rewound, skipped_files};
use crate::principal::Principal;
use crate::sandbox::SkippedFile;
use crate::state::AppState;

/// One checkpoint of a session.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CheckpointInfo {
    /// Its id: the commit's in the sandbox's checkpoint store (40 hex).
    pub checkpoint_id: String,
    /// The task after which it was taken; null when the session was made.
    pub task_id: Option<String>,
    pub task: Option<String>,
    pub created: String,
    /// 1 for the session's first, then one more each.
    pub seq: u64,
    /// Against the checkpoint before it.
    pub files_changed: u64,
    pub insertions: u64,
    pub deletions: u64,
    /// Files it left out (larger than `workspace.checkpoint_max_file_bytes`,
    /// or not a regular file, symlink or directory).
    pub skipped: Vec<SkippedFile>,
}

impl From<&CheckpointRecord> for CheckpointInfo {
    fn from(c: &CheckpointRecord) -> Self {
        Self {
            checkpoint_id: c.id.clone(),
            task_id: c.task_id.clone(),
            task: c.task.clone(),
            created: crate::time::timestamp(c.created),
            seq: c.seq,
            files_changed: c.files_changed,
            insertions: c.insertions,
            deletions: c.deletions,
            skipped: skipped_files(c),
        }
    }
}

/// The query of a diff.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// A checkpoint id; by default the checkpoint before `to`.
    #[serde(default)]
    pub from: Option<String>,
    /// A checkpoint id, or `current` (the default): the workspace now.
    #[serde(default)]
    pub to: Option<String>,
}

/// Where a fork starts.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkRequest {
    /// A checkpoint of the session; by default its latest.
    #[serde(default)]
    pub checkpoint_id: Option<String>,
}

/// What a rewind puts back.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RewindRequest {
    pub checkpoint_id: String,
    /// `files`, `conversation` or `both`.
    pub scope: RewindScope,
}

pub fn routes() -> ApiRouter<Arc<AppState>> {
    ApiRouter::new()
        .api_route(
            "/api/sessions/{session_id}/rewind",
            post_with(rewind, |op| {
                op.summary("Take a session back to a checkpoint")
                    .description(
                        "`files`: the workspace as the checkpoint recorded it (bytes, modes, \
                         links; what was made since is removed, what it left out is kept); \
                         `conversation`: the model forgets the turns after the checkpoint's \
                         task; `both`. 409 while a task runs or when the session has no such \
                         checkpoint. Events are never removed: a \
                         `rewound` event says what happened.",
                    )
                    .tag("checkpoints")
            }),
        )
        .api_route(
            "/api/sessions/{session_id}/fork",
            post_with(fork, |op| {
                op.summary("Make a new session from a checkpoint of this one")
                    .description(
                        "201 with the same body as session create: a new session with its \
                         own container, the workspace as the checkpoint (by default the \
                         latest) recorded it, and the conversation up to it; its event log \
                         starts with `forked`. The parent may be running a task. 409 when \
                         checkpoints are turned off or the session has no such \
                         checkpoint.",
                    )
                    .tag("checkpoints")
            }),
        )
        .api_route(
            "/api/sessions/{session_id}/checkpoints",
            get_with(list, |op| {
                op.summary("List a session's checkpoints, oldest first")
                    .tag("checkpoints")
            })
            .post_with(take, |op| {
                op.summary("Record the workspace as a checkpoint now")
                    .description(
                        "201 with the checkpoint (no task; its changes counted against the \
                         one before). For changes made through the API or a terminal, before \
                         a fork or a risky edit. 409 while a task runs or waits, or when \
                         checkpoints are turned off.",
                    )
                    .tag("checkpoints")
            }),
        )
        .api_route(
            "/api/sessions/{session_id}/diff",
            get_with(diff, |op| {
                op.summary("What changed between two checkpoints, or since one")
                    .description(
                        "`to`: a checkpoint id or `current` (the default), the workspace as \
                         it is now; `from`: a checkpoint id, by default the one before `to`. \
                         JSON, or the unified diff alone with `Accept: text/x-diff`. 409 when \
                         either names no checkpoint of the session, or `to` has none before it.",
                    )
                    .tag("checkpoints")
            }),
        )
}

async fn rewind(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
    ApiJson(req): ApiJson<RewindRequest>,
) -> Result<Json<Rewound>, ApiError> {
    let done = state
        .service
        .rewind(&path.session_id, &req.checkpoint_id, req.scope)
        .await?;
    Ok(Json(done))
}

async fn take(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
) -> Result<Created<CheckpointInfo>, ApiError> {
    let taken = state.service.checkpoint_now(&path.session_id).await?;
    Ok(Created(CheckpointInfo::from(&taken)))
}

async fn fork(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath(path): ApiPath<SessionPath>,
    ApiJson(req): ApiJson<ForkRequest>,
) -> Result<Created<SessionInfo>, ApiError> {
    let created = state
        .service
        .fork(&principal, &path.session_id, req.checkpoint_id.as_deref())
        .await?;
    Ok(Created(SessionInfo::created(&state.sessions, &created)))
}

/// 201 with what was made.
pub struct Created<T>(T);

impl<T: Serialize> IntoResponse for Created<T> {
    fn into_response(self) -> Response {
        (axum::http::StatusCode::CREATED, Json(self.0)).into_response()
    }
}

impl<T: JsonSchema> OperationOutput for Created<T> {
    type Inner = T;

    fn operation_response(ctx: &mut GenContext, operation: &mut Operation) -> Option<ApiResponse> {
        let mut response = Json::<T>::operation_response(ctx, operation)?;
        response.description = "Made".into();
        Some(response)
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<ApiStatus>, ApiResponse)> {
        Self::operation_response(ctx, operation)
            .map(|r| vec![(Some(ApiStatus::Code(201)), r)])
            .unwrap_or_default()
    }
}

async fn list(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
) -> Result<Json<Vec<CheckpointInfo>>, ApiError> {
    let all = state.service.checkpoints(&path.session_id).await?;
    Ok(Json(all.iter().map(CheckpointInfo::from).collect()))
}

async fn diff(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
    ApiQuery(query): ApiQuery<DiffQuery>,
    headers: HeaderMap,
) -> Result<DiffAnswer, ApiError> {
    let to = query.to.as_deref().filter(|t| *t != "current");
    let diff = state
        .service
        .diff(&path.session_id, query.from.as_deref(), to)
        .await?;
    let wants_patch = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/x-diff"));
    Ok(if wants_patch {
        DiffAnswer::Patch(diff.patch)
    } else {
        DiffAnswer::Json(diff)
    })
}

/// A diff: as JSON, or as the patch alone.
pub enum DiffAnswer {
    Json(CheckpointDiff),
    Patch(String),
}

impl IntoResponse for DiffAnswer {
    fn into_response(self) -> Response {
        match self {
            Self::Json(diff) => Json(diff).into_response(),
            Self::Patch(patch) => (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/x-diff; charset=utf-8",
                )],
                patch,
            )
                .into_response(),
        }
    }
}

impl OperationOutput for DiffAnswer {
    type Inner = CheckpointDiff;

    fn operation_response(ctx: &mut GenContext, operation: &mut Operation) -> Option<ApiResponse> {
        let mut response = Json::<CheckpointDiff>::operation_response(ctx, operation)?;
        let text = MediaType {
            schema: Some(SchemaObject {
                json_schema: schemars::json_schema!({"type": "string"}),
                external_docs: None,
                example: None,
            }),
            ..Default::default()
        };
        response.content.insert("text/x-diff".into(), text);
        response.description =
            "The files that differ and a unified diff; the diff alone as text/x-diff".into();
        Some(response)
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<ApiStatus>, ApiResponse)> {
        Self::operation_response(ctx, operation)
            .map(|r| vec![(Some(ApiStatus::Code(200)), r)])
            .unwrap_or_default()
    }
}
