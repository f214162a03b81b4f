//! `GET /api/tools` — every loaded tool with its schema and whether it is
//! enabled; `GET /api/plugins` — the plugins folder: what loaded and what was
//! skipped, and why; `POST /api/sessions/{session_id}/tools/{name}` — runs a
//! tool directly in a session, with its JSON arguments as the body. All
//! additive to the contract.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, post_with};
use axum::Json;
use axum::extract::State;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::extract::{ApiJson, ApiPath};
use crate::agent::{McpServerStatus, ToolSource};
use crate::plugins::{SkippedPlugin, ToolInfo};
use crate::state::AppState;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ToolPath {
    pub session_id: String,
    /// The tool's name, as `GET /api/tools` lists it.
    pub name: String,
}

/// What a tool gave, as the model would have read it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ToolCallResult {
    /// The tool's text (for a failure, what went wrong), cut to
    /// `agent.tool_result_chars`.
    pub result: String,
    pub is_error: bool,
    pub duration_ms: u64,
}

pub fn routes() -> ApiRouter<Arc<AppState>> {
    ApiRouter::new()
        .api_route(
            "/api/tools",
            get_with(list_tools, |op| {
                op.summary("List the agent's tools")
                    .description(
                        "The plugins' tools, then the MCP servers' (`server` names the server) \
                         as their latest listing in any session found them.",
                    )
                    .tag("tools")
            }),
        )
        .api_route(
            "/api/sessions/{session_id}/tools/{name}",
            post_with(call_tool, |op| {
                op.summary("Run a tool in a session, with its JSON arguments as the body")
                    .description(
                        "The same limits and capabilities as the model's calls, and the same \
                         `tool_call` / `tool_complete` events with `source: \"api\"`; no \
                         approval is asked. 404: no such tool; 403: it is disabled; 422: the \
                         body is not a JSON object. A tool that fails answers 200 with \
                         `is_error`.",
                    )
                    .tag("tools")
            }),
        )
        .api_route(
            "/api/plugins",
            get_with(plugins_status, |op| {
                op.summary("Plugins folder status").tag("tools")
            }),
        )
}

async fn call_tool(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<ToolPath>,
    ApiJson(arguments): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<Json<ToolCallResult>, ApiError> {
    let arguments = serde_json::Value::Object(arguments).to_string();
    let outcome = state
        .service
        .call_tool(&path.session_id, &path.name, &arguments, ToolSource::Api)
        .await?;
    Ok(Json(ToolCallResult {
        result: outcome.result,
        is_error: outcome.is_error,
        duration_ms: outcome.duration_ms,
    }))
}

async fn list_tools(State(state): State<Arc<AppState>>) -> Json<Vec<ToolInfo>> {
    let mut tools = state.plugins.tools();
    tools.extend(state.agent.mcp_tools());
    Json(tools)
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PluginsStatus {
    /// The folder scanned for `*.wasm` files.
    pub dir: String,
    /// Files loaded, in priority order.
    pub loaded: Vec<String>,
    pub skipped: Vec<SkippedPlugin>,
    /// The configured MCP servers (`[mcp.servers.<name>]`): their tools at
    /// their latest listing, what was left out, and their latest failure.
    pub mcp_servers: Vec<McpServerStatus>,
}

async fn plugins_status(State(state): State<Arc<AppState>>) -> Json<PluginsStatus> {
    let report = state.plugins.last_report();
    Json(PluginsStatus {
        dir: state.plugins.dir().display().to_string(),
        loaded: report.loaded,
        skipped: report.skipped,
        mcp_servers: state.agent.mcp_servers(),
    })
}
