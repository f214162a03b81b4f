//! `/mcp/{session_id}` — a session's enabled tools over the Model Context
//! Protocol (streamable HTTP transport, every protocol revision the `rmcp`
//! SDK speaks: the stateless 2026-07-28 and the earlier ones with their
//! `Mcp-Session-Id` sessions).
//!
//! `tools/list` gives the tools with their JSON schemas (and `readOnlyHint`
//! for the ones that can only read); `tools/call` runs one in the session
//! through the same path as the model's calls: the same limits and
//! capabilities, the same `tool_call` / `tool_complete` events (with
//! `source: "mcp"`), and a person's approval where the session's settings
//! ask for one, since an MCP client is most often another model.
//!
//! The route sits behind the API's bearer token and its browser guard like
//! every other; the SDK's own `Host` and `Origin` checks are off because
//! the guard does that work (and knows `server.allowed_hosts`). An unknown
//! session is a 404 before any MCP is spoken. A tool that fails answers a
//! result with `isError` (the caller reads why); an unknown or disabled tool
//! is a protocol error (`-32602`), as the MCP specification asks.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};

use super::extract::ApiPath;
use super::{ApiError, SessionPath};
use crate::agent::{AgentError, ToolSource};
use crate::service::{ServiceError, SessionService};
use crate::state::AppState;

/// MCP sessions (protocol revisions before 2026-07-28) open at once; each
/// closes after five idle minutes. One more `initialize` is a 503.
pub const MAX_MCP_SESSIONS: usize = 256;

/// The Crogia session a request is for, put in its extensions by the route.
#[derive(Debug, Clone)]
struct Target(String);

/// The MCP server: one handler value per MCP session (or per request, for
/// stateless revisions), each reading its Crogia session from the request.
#[derive(Clone)]
struct SessionTools {
    service: SessionService,
}

type Http = StreamableHttpService<SessionTools, LocalSessionManager>;

/// The transport and its MCP sessions.
struct Mcp {
    http: Http,
    sessions: Arc<LocalSessionManager>,
}

pub fn routes(state: &AppState) -> Router<Arc<AppState>> {
    let sessions = Arc::new(LocalSessionManager::default());
    let service = state.service.clone();
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .disable_allowed_origins()
        .with_max_request_body_bytes(state.config.server.max_body_bytes)
        .with_cancellation_token(state.shutdown.child_token());
    let http = StreamableHttpService::new(
        move || {
            Ok(SessionTools {
                service: service.clone(),
            })
        },
        sessions.clone(),
        config,
    );
    let mcp = Arc::new(Mcp { http, sessions });
    Router::new().route(
        "/mcp/{session_id}",
        any(
            move |state: State<Arc<AppState>>, path: ApiPath<SessionPath>, request: Request| {
                serve(mcp.clone(), state, path, request)
            },
        ),
    )
}

async fn serve(
    mcp: Arc<Mcp>,
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
    mut request: Request,
) -> Response {
    if let Err(e) = state.sessions.get(&path.session_id) {
        return ApiError::from(e).into_response();
    }
    let new_session = !request.headers().contains_key("mcp-session-id");
    if new_session && mcp.sessions.sessions.read().await.len() >= MAX_MCP_SESSIONS {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{MAX_MCP_SESSIONS} MCP sessions are open; close one (DELETE with its \
                 Mcp-Session-Id) or wait for an idle one to expire"
            ),
        )
        .into_response();
    }
    request.extensions_mut().insert(Target(path.session_id));
    mcp.http.handle(request).await.map(axum::body::Body::new)
}

impl SessionTools {
    /// The Crogia session of the request `cx` answers.
    fn target(cx: &RequestContext<RoleServer>) -> Result<&str, ErrorData> {
        cx.extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Target>())
            .map(|t| t.0.as_str())
            .ok_or_else(|| ErrorData::internal_error("request without a session", None))
    }
}

impl ServerHandler for SessionTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("crogia", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "The tools of one Crogia agent session: they act on its sandbox (a Docker \
                 container with a /workspace). Calls show in the session's event log, and some \
                 may wait for a person's approval.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        cx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let session = Self::target(&cx)?;
        let tools = self
            .service
            .tools(session)
            .await
            .map_err(|_| gone(session))?
            .into_iter()
            .map(|t| {
                let read_only = t.read_only();
                let schema = match t.parameters {
                    serde_json::Value::Object(o) => o,
                    _ => serde_json::Map::from_iter([("type".into(), "object".into())]),
                };
                Tool::new(t.name, t.description, schema)
                    .annotate(ToolAnnotations::new().read_only(read_only))
            })
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let session = Self::target(&cx)?;
        let arguments = serde_json::Value::Object(request.arguments.unwrap_or_default());
        let outcome = self
            .service
            .call_tool(
                session,
                &request.name,
                &arguments.to_string(),
                ToolSource::Mcp,
            )
            .await
            .map_err(|e| match e {
                ServiceError::Session(_) => gone(session),
                ServiceError::Agent(
                    e @ (AgentError::UnknownTool(_) | AgentError::ToolDisabled(_)),
                ) => ErrorData::invalid_params(e.to_string(), None),
                e => ErrorData::internal_error(e.to_string(), None),
            })?;
        let content = vec![ContentBlock::text(outcome.result)];
        Ok(if outcome.is_error {
            CallToolResult::error(content)
        } else {
            CallToolResult::success(content)
        }
        .into())
    }
}

fn gone(session: &str) -> ErrorData {
    ErrorData::invalid_params(format!("session {session} no longer exists"), None)
}
