//! `crogia mcp ID`: the session's MCP server (`/mcp/{session_id}`) offered
//! on stdin and stdout, for MCP clients that only launch stdio servers.
//!
//! Two MCP peers back to back, both from the `rmcp` SDK: a client of the
//! server's streamable HTTP endpoint, and a stdio server whose `tools/list`
//! and `tools/call` are answered by that client. Each side negotiates its
//! own protocol revision. Only MCP goes to stdout; what goes wrong is said
//! on stderr, and the exit code is 1 when the server cannot be reached.

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ErrorData, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::{RequestContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, RoleServer, ServerHandler, ServiceError, ServiceExt};

use super::ApiClient;

/// The stdio side: each request answered by the HTTP side.
struct Bridge {
    upstream: RunningService<RoleClient, ()>,
    instructions: Option<String>,
}

/// Serves the session's tools on stdin/stdout until stdin closes.
pub async fn mcp(api: &ApiClient, session: &str) -> anyhow::Result<i32> {
    // A clear error for a wrong id or token, before any MCP is spoken.
    api.call(
        reqwest::Method::GET,
        &format!("/api/sessions/{session}"),
        None,
    )
    .await?;
    let mut config =
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp/{session}", api.base));
    if let Some(token) = &api.token {
        config = config.auth_header(token.clone());
    }
    let transport = StreamableHttpClientTransport::with_client(api.http.clone(), config);
    let upstream = ()
        .serve(transport)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to {}/mcp/{session}: {e}", api.base))?;
    let instructions = upstream
        .peer_info()
        .and_then(|info| info.instructions.clone());
    let bridge = Bridge {
        upstream,
        instructions,
    };
    let server = bridge
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("starting the stdio side: {e}"))?;
    server.waiting().await?;
    Ok(0)
}

/// The server's answer as the stdio client's: its protocol errors as they
/// were, a lost connection as an internal error that says so.
fn relayed(e: ServiceError) -> ErrorData {
    match e {
        ServiceError::McpError(e) => e,
        other => ErrorData::internal_error(format!("the Crogia server: {other}"), None),
    }
}

impl ServerHandler for Bridge {
    fn get_info(&self) -> ServerConfig {
        let info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("crogia", env!("CARGO_PKG_VERSION")));
        match &self.instructions {
            Some(text) => info.with_instructions(text.clone()),
            None => info,
        }
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let answer = self.upstream.list_tools(request).await.map_err(relayed)?;
        // Re-made, so the result suits the revision the stdio side speaks
        // (the HTTP side may have negotiated an older one).
        let cursor = answer.next_cursor;
        let mut tools = ListToolsResult::with_all_items(answer.tools);
        tools.next_cursor = cursor;
        Ok(tools)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        match self.upstream.call_tool(request).await.map_err(relayed)? {
            result if result.is_error == Some(true) => Ok(CallToolResult::error(result.content)),
            result => Ok(CallToolResult::success(result.content)),
        }
        .map(Into::into)
    }
}
