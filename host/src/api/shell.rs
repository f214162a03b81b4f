//! `POST /api/sessions/{session_id}/shell` — run a command in the session's
//! container and wait for it.
//!
//! `output` is stdout followed by stderr, as the contract has it; `stdout`,
//! `stderr`, `exit_code`, `timed_out` and `truncated` are additive. `tty` is
//! accepted for compatibility: commands never get a terminal. A command that
//! fails still answers 200, with its exit code.

use std::sync::Arc;
use std::time::Duration;

use aide::axum::ApiRouter;
use aide::axum::routing::post_with;
use axum::Json;
use axum::extract::State;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiPath};
use super::types::{CommandText, PositiveSeconds};
use super::{ApiError, SessionPath};
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
    ApiRouter::new().api_route(
        "/api/sessions/{session_id}/shell",
        post_with(shell, |op| op.summary("Run a shell command").tag("shell")),
    )
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
