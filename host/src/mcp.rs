//! External MCP servers as the agent's tools (`[mcp.servers.<name>]`),
//! spoken to with the official Rust SDK (`rmcp`): a remote server over
//! streamable HTTP, or a stdio server, a program started inside the
//! session's container by its agent (so it runs sandboxed and its own
//! connections go through the session's egress policy). One connection (or
//! program) per session and server, made the first time the session needs
//! its tools and made again when it has died.
//!
//! Its tools are offered as `<server>__<tool>` and obey
//! `[tools.<server>__<tool>]` (enabled, approval, auto_approve, timeout_ms).
//! The connection is made from the server under the session's network
//! policy, as its own programs' are: the URL's host must be allowed, and a
//! name is resolved by us and each address checked (a loopback or private
//! address only where a pattern names it), with no proxy and no redirects.
//! Header values, and a stdio server's environment, come from environment
//! variables named in config.
//!
//! A server that cannot be reached, refuses, or answers badly never breaks
//! the session: its tools are left out, the session gets an `error` event
//! saying why, `GET /api/plugins` reports it, and the session tries again
//! after `mcp.retry_secs`. A tool whose name the model could not use, or
//! that a plugin's tool already has, is left out and reported too.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, ContentBlock, Tool};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::capabilities::CapabilityError;
use crate::config::{Config, McpServerConfig};
use crate::events::{EventKind, NetworkDecision};
use crate::network::{Attempt, Denial, Host, Policy};
use crate::plugins::{ToolError, ToolInfo};
use crate::sandbox::{ProgramEnd, SandboxError};
use crate::session::Session;

/// Between a server's name and its tool's, in the names the model sees.
pub const SEPARATOR: &str = "__";
/// Longest tool name a model accepts (OpenAI's rule: `[A-Za-z0-9_-]{1,64}`).
const MAX_NAME: usize = 64;

/// Where an MCP server stands, as `GET /api/plugins` reports it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum McpState {
    /// No session has needed it yet.
    #[default]
    Unused,
    /// Its last connection listed its tools.
    Ready,
    /// Its last connection failed (`error` says why).
    Failed,
}

/// A tool a server offered that the model is not offered, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SkippedTool {
    /// The server's name for it.
    pub tool: String,
    pub reason: String,
}

/// One configured server, as `GET /api/plugins` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct McpServerStatus {
    pub name: String,
    /// A remote server's endpoint (empty for a stdio server).
    pub url: String,
    /// A stdio server's program and arguments (empty for a remote server).
    pub command: Vec<String>,
    pub state: McpState,
    /// Its latest failure, in whichever session.
    pub error: Option<String>,
    /// Its tools at its latest listing, by the names the model sees.
    pub tools: Vec<String>,
    pub skipped: Vec<SkippedTool>,
}

/// What the latest listing (in any session) found of one server.
#[derive(Default)]
struct Catalog {
    tools: Vec<ToolInfo>,
    skipped: Vec<SkippedTool>,
    error: Option<String>,
    state: McpState,
}

/// One session's connection to one server.
#[derive(Default)]
enum Link {
    /// None yet, or the last one broke: made at the next listing.
    #[default]
    None,
    Ready {
        client: RunningService<RoleClient, ()>,
        /// The model's name of each tool → the server's.
        names: BTreeMap<String, String>,
        tools: Vec<ToolInfo>,
        /// How a stdio server's program ended, once it has.
        ended: Option<Arc<OnceLock<ProgramEnd>>>,
    },
    /// It failed then; tried again after `mcp.retry_secs`.
    Failed(Instant),
}

/// One session's connections, one slot per configured server (each
/// locked on its own, so servers connect side by side and a slow one holds
/// up no other), dropped (and closed) once the session is deleted.
struct SessionLinks {
    deleted: CancellationToken,
    links: BTreeMap<String, tokio::sync::Mutex<Link>>,
}

/// The configured MCP servers and every session's connections to them.
pub struct McpClients {
    config: Arc<Config>,
    catalog: Mutex<BTreeMap<String, Catalog>>,
    sessions: Mutex<HashMap<String, Arc<SessionLinks>>>,
}

impl McpClients {
    pub fn new(config: Arc<Config>) -> Self {
        Self {
            config,
            catalog: Mutex::default(),
            sessions: Mutex::default(),
        }
    }

    /// Each configured server, with its tools and its latest failure.
    pub fn statuses(&self) -> Vec<McpServerStatus> {
        let catalog = self.catalog.lock().unwrap();
        self.config
            .mcp
            .servers
            .iter()
            .map(|(name, server)| {
                let c = catalog.get(name);
                McpServerStatus {
                    name: name.clone(),
                    url: server.url.clone(),
                    command: server.command.clone(),
                    state: c.map_or(McpState::Unused, |c| c.state),
                    error: c.and_then(|c| c.error.clone()),
                    tools: c.map_or_else(Vec::new, |c| {
                        c.tools.iter().map(|t| t.name.clone()).collect()
                    }),
                    skipped: c.map_or_else(Vec::new, |c| c.skipped.clone()),
                }
            })
            .collect()
    }

    /// Every server's tools at its latest listing.
    pub fn known_tools(&self) -> Vec<ToolInfo> {
        let catalog = self.catalog.lock().unwrap();
        catalog.values().flat_map(|c| c.tools.clone()).collect()
    }

    /// The tool of this name at its server's latest listing.
    pub fn known_tool(&self, name: &str) -> Option<ToolInfo> {
        let (server, _) = name.split_once(SEPARATOR)?;
        let catalog = self.catalog.lock().unwrap();
        catalog
            .get(server)?
            .tools
            .iter()
            .find(|t| t.name == name)
            .cloned()
    }

    /// Whether `name` is one of ours (`<server>__…` of a configured server).
    pub fn owns(&self, name: &str) -> bool {
        name.split_once(SEPARATOR)
            .is_some_and(|(server, _)| self.config.mcp.servers.contains_key(server))
    }

    /// Drops a deleted session's connections (which closes them, and ends
    /// its stdio servers' programs).
    pub fn forget(&self, session_id: &str) {
        let gone = self.sessions.lock().unwrap().remove(session_id);
        drop(gone);
    }

    /// The session's connections, made on first use; those of deleted
    /// sessions are dropped (which closes them).
    fn session(&self, session: &Session) -> Arc<SessionLinks> {
        let mut sessions = self.sessions.lock().unwrap();
        sessions.retain(|_, s| !s.deleted.is_cancelled());
        sessions
            .entry(session.id.clone())
            .or_insert_with(|| {
                Arc::new(SessionLinks {
                    deleted: session.deleted.clone(),
                    links: self
                        .config
                        .mcp
                        .servers
                        .keys()
                        .map(|name| (name.clone(), tokio::sync::Mutex::default()))
                        .collect(),
                })
            })
            .clone()
    }

    /// The servers' tools for `session`, connecting to each it has no live
    /// connection to (a failure is its `error` event, once per attempt).
    /// `taken`: names a plugin's tool has already.
    pub async fn tools(
        &self,
        session: &Session,
        taken: &(dyn Fn(&str) -> bool + Sync),
    ) -> Vec<ToolInfo> {
        if self.config.mcp.servers.is_empty() {
            return Vec::new();
        }
        let links = self.session(session);
        let listings = self.config.mcp.servers.iter().map(|(name, server)| {
            let slot = &links.links[name];
            self.server_tools(session, name, server, slot, taken)
        });
        futures_util::future::join_all(listings)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// One server's tools for `session`, connecting when its link is not
    /// live (and its last failure not too recent).
    async fn server_tools(
        &self,
        session: &Session,
        name: &str,
        server: &McpServerConfig,
        slot: &tokio::sync::Mutex<Link>,
        taken: &(dyn Fn(&str) -> bool + Sync),
    ) -> Vec<ToolInfo> {
        let retry = Duration::from_secs(self.config.mcp.retry_secs);
        let mut link = slot.lock().await;
        match &*link {
            Link::Ready { client, .. } if !client.is_closed() => {}
            Link::Failed(at) if at.elapsed() < retry => return Vec::new(),
            previous => {
                if let Link::Ready {
                    ended: Some(ended), ..
                } = previous
                {
                    let how = ended
                        .get()
                        .map_or_else(|| "its connection closed".to_string(), ToString::to_string);
                    tracing::info!(session = %session.id, server = %name, "MCP server's program ended ({how}); starting it again");
                }
                *link = match self.connect(session, name, server, taken).await {
                    Ok(made) => made,
                    Err(why) => {
                        let message = format!(
                            "MCP server {name}: {why}; its tools are left out (tried again in {} s)",
                            retry.as_secs()
                        );
                        tracing::warn!(session = %session.id, server = %name, error = %why, "MCP server unavailable");
                        self.failed(name, &message);
                        let _ = session
                            .events
                            .publish(EventKind::Error {
                                message,
                                task_id: None,
                            })
                            .await;
                        Link::Failed(Instant::now())
                    }
                };
            }
        }
        match &*link {
            Link::Ready { tools, .. } => tools.iter().filter(|t| t.enabled).cloned().collect(),
            _ => Vec::new(),
        }
    }

    fn failed(&self, server: &str, message: &str) {
        let mut catalog = self.catalog.lock().unwrap();
        let c = catalog.entry(server.to_string()).or_default();
        c.state = McpState::Failed;
        c.error = Some(message.to_string());
    }

    /// Connects `session` to `server` and lists its tools.
    async fn connect(
        &self,
        session: &Session,
        name: &str,
        server: &McpServerConfig,
        taken: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Link, String> {
        let timeout = Duration::from_secs(self.config.mcp.connect_timeout_secs);
        let within = |what: &str| format!("{what} took longer than {} s", timeout.as_secs());
        let (client, ended) = if server.command.is_empty() {
            (
                self.connect_remote(session, name, server, timeout).await?,
                None,
            )
        } else {
            let (client, ended) = self.start(session, server, timeout).await?;
            (client, Some(ended))
        };
        let listed = match tokio::time::timeout(timeout, client.list_all_tools()).await {
            Ok(Ok(listed)) => listed,
            Ok(Err(e)) => {
                return Err(format!(
                    "listing its tools: {e}{}",
                    end_note(ended.as_ref())
                ));
            }
            Err(_) => return Err(within("listing its tools")),
        };
        let (tools, names, skipped) = self.offered(name, listed, taken);
        {
            let mut catalog = self.catalog.lock().unwrap();
            let c = catalog.entry(name.to_string()).or_default();
            c.state = McpState::Ready;
            c.error = None;
            c.tools = tools.clone();
            c.skipped = skipped.clone();
        }
        for s in &skipped {
            let _ = session
                .events
                .publish(EventKind::Error {
                    message: format!(
                        "MCP server {name}: tool {:?} left out: {}",
                        s.tool, s.reason
                    ),
                    task_id: None,
                })
                .await;
        }
        Ok(Link::Ready {
            client,
            names,
            tools,
            ended,
        })
    }

    /// Starts a stdio server's program in the session's container and
    /// initialises it.
    async fn start(
        &self,
        session: &Session,
        server: &McpServerConfig,
        timeout: Duration,
    ) -> Result<(RunningService<RoleClient, ()>, Arc<OnceLock<ProgramEnd>>), String> {
        let mut env = Vec::with_capacity(server.env.len());
        for (variable, source) in &server.env {
            let value = std::env::var(source).map_err(|_| {
                format!(
                    "the environment variable {source} (the value of its {variable}) is not set"
                )
            })?;
            env.push((variable.clone(), value));
        }
        let cwd = server
            .cwd
            .as_deref()
            .unwrap_or(crogia_sandbox_agent::fs::CONTAINER_ROOT);
        let program = session
            .caps
            .open_stdio(&server.command, &env, cwd)
            .await
            .map_err(|e| match e {
                // The agent's own words name the program and why.
                CapabilityError::Sandbox(SandboxError::InvalidInput(why)) => why,
                other => format!("starting {}: {other}", server.describe()),
            })?;
        let ended = program.ended.clone();
        let client =
            match tokio::time::timeout(timeout, ().serve((program.stdout, program.stdin))).await {
                Ok(Ok(client)) => client,
                Ok(Err(e)) => {
                    return Err(format!(
                        "starting {}: {e}{}",
                        server.describe(),
                        end_note(Some(&ended))
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "{} did not answer MCP's initialize within {} s",
                        server.describe(),
                        timeout.as_secs()
                    ));
                }
            };
        Ok((client, ended))
    }

    /// Connects to a remote server. The attempt is the session's
    /// `network_request` event, as its programs' are.
    async fn connect_remote(
        &self,
        session: &Session,
        name: &str,
        server: &McpServerConfig,
        timeout: Duration,
    ) -> Result<RunningService<RoleClient, ()>, String> {
        let url = &server.url;
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
            return Err(format!("{url} names no host and port"));
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let started = Instant::now();
        let log = |decision, reason: String| {
            session.network.record(Attempt {
                host: host.clone(),
                port,
                decision,
                reason,
                bytes_up: 0,
                bytes_down: 0,
                started,
                ended: Instant::now(),
            });
        };
        let refused_by_resolver = Arc::new(Mutex::new(None));
        let (http, allowed_by) = allowed_client(
            &Host::parse(&host),
            port,
            session.network.policy(),
            timeout,
            refused_by_resolver.clone(),
        )
        .map_err(|Denial(why)| {
            log(NetworkDecision::Denied, why.clone());
            format!("the session's network policy refuses {url}: {why}")
        })?;
        let mut headers = HashMap::new();
        for (header, var) in &server.headers {
            let value = std::env::var(var).map_err(|_| {
                format!(
                    "the environment variable {var} (the value of its {header} header) is not set"
                )
            })?;
            let value = reqwest::header::HeaderValue::from_str(&value)
                .map_err(|_| format!("the value of {var} is not a valid {header} header"))?;
            let header = reqwest::header::HeaderName::from_bytes(header.as_bytes())
                .map_err(|e| e.to_string())?;
            headers.insert(header, value);
        }
        let transport = StreamableHttpClientTransport::with_client(
            http,
            StreamableHttpClientTransportConfig::with_uri(server.url.clone())
                .custom_headers(headers),
        );
        // Its bytes go through no agent, so they are not counted.
        let note = format!("{allowed_by}; the MCP server {name}, reached by Crogia itself");
        match tokio::time::timeout(timeout, ().serve(transport)).await {
            Ok(Ok(client)) => {
                log(NetworkDecision::Allowed, note);
                Ok(client)
            }
            Ok(Err(e)) => {
                match refused_by_resolver.lock().unwrap().take() {
                    Some(why) => log(NetworkDecision::Denied, why),
                    None => log(NetworkDecision::Allowed, format!("{note}; {e}")),
                }
                Err(format!("connecting to {url}: {e}"))
            }
            Err(_) => {
                let why = format!("connecting took longer than {} s", timeout.as_secs());
                log(NetworkDecision::Allowed, format!("{note}; {why}"));
                Err(why)
            }
        }
    }

    /// The tools the model may be offered of what `server` listed.
    fn offered(
        &self,
        server: &str,
        listed: Vec<Tool>,
        taken: &(dyn Fn(&str) -> bool + Sync),
    ) -> (Vec<ToolInfo>, BTreeMap<String, String>, Vec<SkippedTool>) {
        let mut tools = Vec::new();
        let mut names = BTreeMap::new();
        let mut skipped = Vec::new();
        for tool in listed {
            let original = tool.name.to_string();
            let name = format!("{server}{SEPARATOR}{original}");
            let reason = if original.is_empty()
                || !original
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                Some(
                    "a model can only call tools named with letters, digits, '_' and '-'"
                        .to_string(),
                )
            } else if name.len() > MAX_NAME {
                Some(format!(
                    "{name} is longer than the {MAX_NAME} characters a model accepts"
                ))
            } else if taken(&name) {
                Some(format!("a plugin's tool is already named {name}"))
            } else if names.contains_key(&name) {
                Some("the server lists two tools of this name".to_string())
            } else {
                None
            };
            if let Some(reason) = reason {
                skipped.push(SkippedTool {
                    tool: original,
                    reason,
                });
                continue;
            }
            let settings = self.config.tools.get(&name);
            tools.push(ToolInfo {
                name: name.clone(),
                description: tool.description.as_deref().unwrap_or_default().to_string(),
                parameters: serde_json::Value::Object((*tool.input_schema).clone()),
                plugin: format!("mcp:{server}"),
                enabled: settings.is_none_or(|s| s.enabled),
                contract: String::new(),
                declared_capabilities: None,
                capabilities: Vec::new(),
                subject: None,
                server: Some(server.to_string()),
            });
            names.insert(name, original);
        }
        (tools, names, skipped)
    }

    /// Calls the tool `name` (`<server>__<tool>`) in `session` with JSON
    /// `arguments`, within `timeout`. A connection found dead is made again
    /// at the session's next listing.
    pub async fn call(
        &self,
        session: &Session,
        name: &str,
        arguments: &str,
        timeout: Duration,
    ) -> Result<String, ToolError> {
        let Some((server, _)) = name.split_once(SEPARATOR) else {
            return Err(ToolError::UnknownTool(name.into()));
        };
        let links = self.session(session);
        let Some(slot) = links.links.get(server) else {
            return Err(ToolError::UnknownTool(name.into()));
        };
        let (peer, original, ended) = {
            match &*slot.lock().await {
                Link::Ready {
                    client,
                    names,
                    ended,
                    ..
                } if !client.is_closed() => {
                    let original = names
                        .get(name)
                        .ok_or_else(|| ToolError::UnknownTool(name.into()))?;
                    (client.peer().clone(), original.clone(), ended.clone())
                }
                _ => {
                    return Err(ToolError::Failed(format!(
                        "the MCP server {server} is not connected in this session (it is tried \
                         again when the model is next offered tools)"
                    )));
                }
            }
        };
        let arguments = match serde_json::from_str(arguments) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => {
                return Err(ToolError::InvalidArguments(
                    "the arguments must be a JSON object".into(),
                ));
            }
        };
        let mut request = CallToolRequestParams::new(original);
        request.arguments = Some(arguments);
        let result = tokio::time::timeout(timeout, peer.call_tool(request))
            .await
            .map_err(|_| ToolError::Timeout {
                tool: name.into(),
                ms: timeout.as_millis() as u64,
            })?;
        let result = match result {
            Ok(result) => result,
            Err(rmcp::ServiceError::McpError(e)) => {
                return Err(ToolError::Failed(format!(
                    "the MCP server {server} refused the call: {}",
                    e.message
                )));
            }
            Err(e) => {
                let e = ToolError::Failed(format!(
                    "the MCP server {server}: {e}{}",
                    end_note(ended.as_ref())
                ));
                // The connection broke (not the tool): the session's next
                // listing connects again.
                *slot.lock().await = Link::None;
                return Err(e);
            }
        };
        let text = render(&result.content, result.structured_content.as_ref());
        if result.is_error == Some(true) {
            Err(ToolError::Failed(text))
        } else {
            Ok(text)
        }
    }
}

/// How a stdio server's program ended, when it has, to add to an error.
fn end_note(ended: Option<&Arc<OnceLock<ProgramEnd>>>) -> String {
    ended
        .and_then(|e| e.get())
        .map(|end| format!(" ({end})"))
        .unwrap_or_default()
}

/// A tool result's content as text for the model.
fn render(content: &[ContentBlock], structured: Option<&serde_json::Value>) -> String {
    let mut parts: Vec<String> = content
        .iter()
        .map(|block| match block {
            ContentBlock::Text(t) => t.text.clone(),
            ContentBlock::Image(i) => format!("[image, {}]", i.mime_type),
            ContentBlock::Audio(a) => format!("[audio, {}]", a.mime_type),
            other => serde_json::to_string(other).unwrap_or_default(),
        })
        .collect();
    if parts.is_empty()
        && let Some(value) = structured
    {
        parts.push(value.to_string());
    }
    parts.join("\n")
}

/// An HTTP client that reaches `host`:`port` only as the session's
/// `policy` allows (and which pattern allows it): the host is checked
/// before anything is sent, a name is resolved here and each address
/// checked (a refusal is also left in `refused`), and nothing is followed
/// elsewhere (no proxy, no redirects).
fn allowed_client(
    host: &Host,
    port: u16,
    policy: Arc<Policy>,
    timeout: Duration,
    refused: Arc<Mutex<Option<String>>>,
) -> Result<(reqwest::Client, String), Denial> {
    let allowed_by = policy.check_host(host, port)?;
    if let Host::Address(addr) = host {
        policy.check_address(*addr, port)?;
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        .dns_resolver(Arc::new(PolicyResolver {
            policy,
            port,
            refused,
        }))
        .build()
        .map_err(|e| Denial(format!("cannot make an HTTP client: {e}")))?;
    Ok((client, allowed_by))
}

/// Resolves names for [`allowed_client`], keeping only addresses the
/// policy allows on `port`.
struct PolicyResolver {
    policy: Arc<Policy>,
    port: u16,
    /// Why it refused a name, last.
    refused: Arc<Mutex<Option<String>>>,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (policy, port, last) = (self.policy.clone(), self.port, self.refused.clone());
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), port)).await?;
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .filter(|a| match policy.check_address(a.ip(), port) {
                    Ok(()) => true,
                    Err(Denial(why)) => {
                        refused.get_or_insert(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let Some(why) = refused else {
                    return Err(format!("{} resolves to nothing", name.as_str()).into());
                };
                *last.lock().unwrap() = Some(why.clone());
                return Err(format!("the session's network policy refuses it: {why}").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
