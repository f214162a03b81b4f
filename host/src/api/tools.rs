//! `GET /api/tools` — every loaded tool with its schema and whether it is
//! enabled; `GET /api/plugins` — the plugins folder: what loaded and what was
//! skipped, and why. Both additive to the contract.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::Json;
use axum::extract::State;
use schemars::JsonSchema;
use serde::Serialize;

use crate::plugins::{SkippedPlugin, ToolInfo};
use crate::state::AppState;

pub fn routes() -> ApiRouter<Arc<AppState>> {
    ApiRouter::new()
        .api_route(
            "/api/tools",
            get_with(list_tools, |op| {
                op.summary("List the agent's tools").tag("tools")
            }),
        )
        .api_route(
            "/api/plugins",
            get_with(plugins_status, |op| {
                op.summary("Plugins folder status").tag("tools")
            }),
        )
}

async fn list_tools(State(state): State<Arc<AppState>>) -> Json<Vec<ToolInfo>> {
    Json(state.plugins.tools())
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PluginsStatus {
    /// The folder scanned for `*.wasm` files.
    pub dir: String,
    /// Files loaded, in priority order.
    pub loaded: Vec<String>,
    pub skipped: Vec<SkippedPlugin>,
}

async fn plugins_status(State(state): State<Arc<AppState>>) -> Json<PluginsStatus> {
    let report = state.plugins.last_report();
    Json(PluginsStatus {
        dir: state.plugins.dir().display().to_string(),
        loaded: report.loaded,
        skipped: report.skipped,
    })
}
