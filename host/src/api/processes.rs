//! Background processes of a session.
//!
//! - `GET /api/sessions/{session_id}/processes` — every process started in the
//!   session, with `status` `running` or `exited` (and `exit_code` when known).
//! - `POST /api/sessions/{session_id}/processes` — start one (additive).
//! - `POST /api/sessions/{session_id}/processes/{pid}/stop` — SIGTERM, then
//!   SIGKILL after the grace period.
//! - `GET /api/sessions/{session_id}/processes/{pid}/logs?lines=50` — the last
//!   lines of its output.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, post_with};
use axum::Json;
use axum::extract::State;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::types::{Bounded, CommandText};
use super::{ApiError, MessageResponse, SessionPath};
use crate::sandbox::{BackgroundProcess, ProcessState};
use crate::state::AppState;

/// Most log lines one request may ask for.
const MAX_LOG_LINES: u64 = 10_000;

/// Whether a background process still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Exited,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ProcessInfo {
    pub pid: u32,
    pub cmd: String,
    /// `running` or `exited`.
    pub status: RunStatus,
    /// Log file, relative to the workspace.
    pub log: String,
    pub started: String,
    /// Our id for the process; also names its log file (additive).
    pub id: String,
    /// Exit code once exited, when known (additive).
    pub exit_code: Option<i32>,
}

impl ProcessInfo {
    fn new(p: &BackgroundProcess, state: ProcessState) -> Self {
        let (status, exit_code) = match state {
            ProcessState::Running => (RunStatus::Running, None),
            ProcessState::Exited { exit_code } => (RunStatus::Exited, exit_code),
        };
        Self {
            pid: p.pid,
            cmd: p.cmd.clone(),
            status,
            log: p.log.clone(),
            started: crate::time::timestamp(p.started),
            id: p.id.clone(),
            exit_code,
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StartProcessRequest {
    /// Command, run with `sh -c` in /workspace.
    pub cmd: CommandText,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ProcessPath {
    pub session_id: String,
    /// The process's pid in the container.
    pub pid: Bounded<0, { u32::MAX as u64 }>,
}

impl ProcessPath {
    fn pid(&self) -> u32 {
        // In range: the type's bounds are u32's.
        self.pid.get() as u32
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct LogsQuery {
    /// How many of the last lines to return (default 50, at most 10,000).
    pub lines: Option<Bounded<0, MAX_LOG_LINES>>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct LogsResponse {
    pub logs: String,
    pub pid: u32,
}

pub fn routes() -> ApiRouter<Arc<AppState>> {
    ApiRouter::new()
        .api_route(
            "/api/sessions/{session_id}/processes",
            get_with(list, |op| {
                op.summary("List background processes").tag("processes")
            })
            .post_with(start, |op| {
                op.summary("Start a background process").tag("processes")
            }),
        )
        .api_route(
            "/api/sessions/{session_id}/processes/{pid}/stop",
            post_with(stop, |op| {
                op.summary("Stop a background process").tag("processes")
            }),
        )
        .api_route(
            "/api/sessions/{session_id}/processes/{pid}/logs",
            get_with(logs, |op| {
                op.summary("Read a process's log").tag("processes")
            }),
        )
}

async fn list(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
) -> Result<Json<Vec<ProcessInfo>>, ApiError> {
    let session = state.sessions.get(&path.session_id)?;
    let list = session.caps.list_processes().await?;
    Ok(Json(
        list.iter()
            .map(|s| ProcessInfo::new(&s.process, s.state))
            .collect(),
    ))
}

async fn start(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
    ApiJson(req): ApiJson<StartProcessRequest>,
) -> Result<Json<ProcessInfo>, ApiError> {
    let session = state.sessions.get(&path.session_id)?;
    let p = session.caps.start_process(req.cmd.as_str()).await?;
    Ok(Json(ProcessInfo::new(&p, ProcessState::Running)))
}

async fn stop(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<ProcessPath>,
) -> Result<Json<MessageResponse>, ApiError> {
    let session = state.sessions.get(&path.session_id)?;
    let outcome = session.caps.stop_process(path.pid()).await?;
    Ok(Json(MessageResponse::new(outcome.describe(path.pid()))))
}

async fn logs(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<ProcessPath>,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> Result<Json<LogsResponse>, ApiError> {
    let session = state.sessions.get(&path.session_id)?;
    let lines = query.lines.map_or(50, |n| n.get() as usize);
    let logs = session.caps.process_logs(path.pid(), lines).await?;
    Ok(Json(LogsResponse {
        logs,
        pid: path.pid(),
    }))
}
