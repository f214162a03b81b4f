//! `POST /api/sessions/{session_id}/shell` — run a command in the session's
//! container and wait for it. `POST .../shell/stream` (additive) — the same,
//! its output streamed as it comes, as JSON lines.
//!
//! `output` is stdout followed by stderr, as the contract has it; `stdout`,
//! `stderr`, `exit_code`, `timed_out` and `truncated` are additive. `tty` is
//! accepted for compatibility: commands never get a terminal. A command that
//! fails still answers 200, with its exit code.

use std::sync::Arc;
use std::time::Duration;

use aide::OperationOutput;
use aide::axum::ApiRouter;
use aide::axum::routing::post_with;
use aide::generate::GenContext;
use aide::openapi::{Operation, Response as ApiResponse, StatusCode as ApiStatus};
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiPath};
use super::types::{CommandText, PositiveSeconds};
use super::{ApiError, SessionPath};
pub use crate::sandbox::ExecChunk;
use crate::state::AppState;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ShellRequest {
    /// The command, run with `sh -c` in /workspace.
    pub cmd: CommandText,
    /// Accepted for compatibility; commands never get a terminal.
    #[serde(default)]
    pub tty: bool,
    /// Seconds before the command and its children are killed (additive;
    /// default `sandbox.exec_timeout_secs`, capped at `sandbox.max_exec_timeout_secs`).
    pub timeout: Option<PositiveSeconds>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ShellResponse {
    pub command: String,
    /// stdout, then stderr.
    pub output: String,
    pub timestamp: String,
    pub exit_code: Option<i64>,
    pub stdout: String,
    pub stderr: String,
    /// The command ran past its timeout and was killed.
    pub timed_out: bool,
    /// Output was cut to the server's limit (a marker line shows where).
    pub truncated: bool,
}

pub fn routes() -> ApiRouter<Arc<AppState>> {
    ApiRouter::new()
        .api_route(
            "/api/sessions/{session_id}/shell",
            post_with(shell, |op| op.summary("Run a shell command").tag("shell")),
        )
        .api_route(
            "/api/sessions/{session_id}/shell/stream",
            post_with(shell_stream, |op| {
                op.summary("Run a shell command, streaming its output")
                    .description(
                        "The same command as `shell`, answered as it runs: one JSON object \
                         per line, `{\"type\": \"stdout\"|\"stderr\", \"data\": ...}` as \
                         output comes (at most `sandbox.output_limit_bytes` of each), then \
                         `{\"type\": \"exit\", \"exit_code\", \"timed_out\", \"truncated\"}`. \
                         An answer that ends without `exit` was cut off. Closing the \
                         connection kills the command.",
                    )
                    .tag("shell")
            }),
        )
}

/// An answer of JSON lines, one [`ExecChunk`] each.
pub struct ChunkLines(axum::body::Body);

impl IntoResponse for ChunkLines {
    fn into_response(self) -> Response {
        (
            [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
            self.0,
        )
            .into_response()
    }
}

impl OperationOutput for ChunkLines {
    type Inner = ExecChunk;

    fn operation_response(ctx: &mut GenContext, operation: &mut Operation) -> Option<ApiResponse> {
        let mut response = Json::<ExecChunk>::operation_response(ctx, operation)?;
        if let Some(media) = response.content.shift_remove("application/json") {
            response
                .content
                .insert("application/x-ndjson".into(), media);
        }
        response.description =
            "JSON lines: `stdout` and `stderr` pieces as they come, then `exit`".into();
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

async fn shell_stream(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
    ApiJson(req): ApiJson<ShellRequest>,
) -> Result<ChunkLines, ApiError> {
    let session = state.sessions.get(&path.session_id)?;
    let timeout = req
        .timeout
        .map(|t| Duration::from_secs_f64(t.get().min(1e6)));
    let chunks = session.caps.exec_stream(req.cmd.as_str(), timeout).await?;
    let lines = chunks.map(|chunk| {
        let mut line = serde_json::to_vec(&chunk).expect("chunks serialise");
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(line))
    });
    Ok(ChunkLines(axum::body::Body::from_stream(lines)))
}

async fn shell(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
    ApiJson(req): ApiJson<ShellRequest>,
) -> Result<Json<ShellResponse>, ApiError> {
    let session = state.sessions.get(&path.session_id)?;
    if req.tty {
        tracing::debug!("tty requested; commands never get a terminal");
    }
    let timeout = req
        .timeout
        .map(|t| Duration::from_secs_f64(t.get().min(1e6)));
    let command = req.cmd.into_inner();
    let out = session.caps.exec(&command, timeout).await?;
    let mut output = out.stdout.clone();
    output.push_str(&out.stderr);
    Ok(Json(ShellResponse {
        command,
        output,
        timestamp: crate::time::timestamp(chrono::Utc::now()),
        exit_code: out.exit_code,
        stdout: out.stdout,
        stderr: out.stderr,
        timed_out: out.timed_out,
        truncated: out.truncated,
    }))
}
