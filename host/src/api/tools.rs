//! `GET /api/tools` — every loaded tool with its schema and whether it is
//! enabled; `GET /api/plugins` — the plugins folder: what loaded and what was
//! skipped, and why. Both additive to the contract.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::plugins::{SkippedPlugin, ToolInfo};
use crate::server::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/tools", get(list_tools))
        .route("/api/plugins", get(plugins_status))
}

async fn list_tools(State(state): State<Arc<AppState>>) -> Json<Vec<ToolInfo>> {
    Json(state.plugins.tools())
}

#[derive(Debug, Serialize)]
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
