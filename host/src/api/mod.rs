//! The REST and WebSocket API. One module per resource, each owning its
//! request and response types and its `routes()`; merged in [`router`],
//! which also serves the OpenAPI document generated from the same types
//! (`/openapi.json`), Swagger UI (`/docs`) and ReDoc (`/redoc`), from assets
//! embedded in the binary.

mod approvals;
mod auth;
mod checkpoints;
mod console;
mod error;
mod extract;
mod files;
mod guard;
mod health;
mod mcp;
mod metrics;
mod network;
mod processes;
mod pty;
mod search;
mod sessions;
mod shell;
mod tasks;
mod tools;
mod types;
mod usage;
mod ws;

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::openapi::{Info, OpenApi, Tag};
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Json, Router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use checkpoints::CheckpointInfo;
pub use error::{ApiError, ErrorBody};
// The response types, shared with the command-line client (which reads
// them back), so a renamed field breaks the build instead of the client.
pub use files::{ContentResponse, Encoding, FileItem, ListResponse};
pub use mcp::MAX_MCP_SESSIONS;
pub use network::NetworkInfo;
pub use processes::{LogsResponse, ProcessInfo};
pub use sessions::SessionInfo;
pub use shell::{ExecChunk, ShellResponse};
pub use tasks::TaskResponse;
pub use tools::ToolCallResult;
pub use usage::UsageReport;

use crate::state::AppState;

/// `{"message": "..."}`
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct MessageResponse {
    pub message: String,
}

impl MessageResponse {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// The `{session_id}` path parameter.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SessionPath {
    /// 8 lowercase hex characters.
    pub session_id: String,
}

fn api_routes() -> ApiRouter<Arc<AppState>> {
    ApiRouter::new()
        .merge(health::routes())
        .merge(sessions::routes())
        .merge(tasks::routes())
        .merge(processes::routes())
        .merge(files::routes())
        .merge(search::routes())
        .merge(shell::routes())
        .merge(network::routes())
        .merge(approvals::routes())
        .merge(tools::routes())
        .merge(checkpoints::routes())
        .merge(usage::routes())
}

/// The OpenAPI document of every route, generated from the handlers' types.
pub fn openapi() -> OpenApi {
    let mut api = base_document();
    let _ = api_routes().finish_api(&mut api);
    api
}

fn base_document() -> OpenApi {
    let tag = |name: &str, description: &str| Tag {
        name: name.into(),
        description: Some(description.into()),
        ..Tag::default()
    };
    OpenApi {
        info: Info {
            title: "Crogia".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: Some(
                "Agent sessions in Docker sandboxes. Errors are `{\"detail\": \"...\"}`. \
                 Live events: `ws://HOST/ws/{session_id}`; a terminal: \
                 `ws://HOST/ws/{session_id}/pty?cols=80&rows=24`."
                    .into(),
            ),
            ..Info::default()
        },
        tags: vec![
            tag("health", "Server and Docker engine status"),
            tag(
                "sessions",
                "Agent sessions: a container and a workspace each",
            ),
            tag("tasks", "Work for the agent"),
            tag("processes", "Background processes in a session"),
            tag("files", "Files in a session's workspace"),
            tag("search", "Searching a session's workspace"),
            tag("shell", "Commands in a session's container"),
            tag(
                "network",
                "What a session's programs may reach through the sandbox's proxy",
            ),
            tag("approvals", "Tool calls waiting for a person's approval"),
            tag("tools", "The agent's tool plugins"),
            tag(
                "checkpoints",
                "A session's workspace recorded when it was made and after each task",
            ),
            tag("usage", "Model tokens used, from the usage ledger"),
        ],
        ..OpenApi::default()
    }
}

/// Every route of the API, with its state.
pub fn router(state: Arc<AppState>) -> Router {
    let mut api = base_document();
    let max_body = state.config.server.max_body_bytes;
    let routes = api_routes().finish_api(&mut api);
    let api = Arc::new(api);
    let auth = Arc::new(auth::Auth::new(
        state.agent.principals().clone(),
        state.config.auth.public_health,
    ));
    let cors = cors_layer(&state.config.auth.cors_origins);
    let guard = Arc::new(guard::BrowserGuard::new(&state.config));
    let router = routes
        .merge(ws::routes(&state.config.server))
        .merge(mcp::routes(&state))
        .merge(metrics::routes())
        .merge(console::routes())
        .route("/openapi.json", get(serve_openapi))
        .route(
            "/docs",
            aide::swagger::Swagger::new("/openapi.json")
                .with_title("Crogia API")
                .axum_route()
                .into(),
        )
        .route(
            "/redoc",
            aide::redoc::Redoc::new("/openapi.json")
                .with_title("Crogia API")
                .axum_route()
                .into(),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(api))
        .layer(DefaultBodyLimit::max(max_body))
        // Runs after the token's check (layers run from the last added).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::session_access,
        ))
        .layer(axum::middleware::from_fn_with_state(
            auth,
            auth::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(guard, guard::check))
        .with_state(state);
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// CORS for the configured origins; `None` (no CORS headers at all) when
/// none are configured.
fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods(Any)
            .allow_headers(Any),
    )
}

async fn serve_openapi(Extension(api): Extension<Arc<OpenApi>>) -> impl IntoResponse {
    Json(api)
}

async fn not_found() -> ApiError {
    ApiError::not_found("Not Found")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}
