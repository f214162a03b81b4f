//! Tool dispatch: the seam between the agent and whatever runs tools
//! ([`ToolRunner`], implemented by the plugin runtime), and one call with
//! its `tool_call` / `tool_complete` events, its metrics, and the person's
//! approval when the call needs one (`[tools.<name>] approval`, the
//! session's `approval` mode, `auto_approve` patterns and the session's
//! rules decide).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::messages::ToolCall;
use super::run::{StopReason, StopSignal};
use crate::config::{Config, ToolApproval, ToolConfig, subject_glob};
use crate::events::{EventKind, ToolSource};
use crate::mcp::McpClients;
use crate::metrics::{Metrics, UNKNOWN_TOOL};
use crate::plugins::{PluginRuntime, ToolError, ToolInfo};
use crate::session::{ApprovalMode, BY_CANCEL, BY_TIMEOUT, Decision, Resolution, Session, Waited};

/// What the agent needs from the tools: which exist, and running one for a
/// session.
pub trait ToolRunner: Send + Sync {
    /// The tools the model may be offered in `session` (an MCP server's are
    /// listed when the session first needs them).
    fn enabled_tools<'a>(&'a self, session: &'a Session) -> BoxFuture<'a, Vec<ToolInfo>>;
    /// Whether a tool of this name is known (enabled or not).
    fn has_tool(&self, name: &str) -> bool;
    /// The tool of this name, enabled or not.
    fn tool(&self, name: &str) -> Option<ToolInfo>;
    /// Runs `tool` with JSON arguments for `session`.
    fn invoke<'a>(
        &'a self,
        session: &'a Session,
        tool: &'a str,
        arguments: &'a str,
    ) -> BoxFuture<'a, Result<String, ToolError>>;
}

/// The tools the agent uses: the plugins', then the MCP servers' (a name a
/// plugin's tool has is never an MCP server's).
pub struct Toolbox {
    plugins: Arc<PluginRuntime>,
    mcp: Arc<McpClients>,
    config: Arc<Config>,
}

impl Toolbox {
    pub fn new(plugins: Arc<PluginRuntime>, mcp: Arc<McpClients>, config: Arc<Config>) -> Self {
        Self {
            plugins,
            mcp,
            config,
        }
    }
}

impl ToolRunner for Toolbox {
    fn enabled_tools<'a>(&'a self, session: &'a Session) -> BoxFuture<'a, Vec<ToolInfo>> {
        Box::pin(async move {
            let mut tools = self.plugins.enabled_tools();
            let taken = |name: &str| self.plugins.has_tool(name);
            tools.extend(self.mcp.tools(session, &taken).await);
            tools
        })
    }

    fn has_tool(&self, name: &str) -> bool {
        self.plugins.has_tool(name) || self.mcp.known_tool(name).is_some()
    }

    fn tool(&self, name: &str) -> Option<ToolInfo> {
        self.plugins
            .tool(name)
            .or_else(|| self.mcp.known_tool(name))
    }

    fn invoke<'a>(
        &'a self,
        session: &'a Session,
        tool: &'a str,
        arguments: &'a str,
    ) -> BoxFuture<'a, Result<String, ToolError>> {
        Box::pin(async move {
            if self.plugins.has_tool(tool) || !self.mcp.owns(tool) {
                return self
                    .plugins
                    .invoke(session.caps.clone(), tool, arguments)
                    .await;
            }
            let settings = self.config.tools.get(tool);
            if settings.is_some_and(|s| !s.enabled) {
                return Err(ToolError::Disabled(tool.into()));
            }
            let ms = settings
                .and_then(|s| s.timeout_ms)
                .unwrap_or(self.config.plugins.timeout_ms);
            self.mcp
                .call(session, tool, arguments, Duration::from_millis(ms))
                .await
        })
    }
}

/// What one tool call works with.
pub(super) struct CallContext<'a> {
    pub tools: &'a dyn ToolRunner,
    pub metrics: &'a Metrics,
    pub tool_config: &'a BTreeMap<String, ToolConfig>,
    pub session: &'a Session,
    pub task_id: &'a str,
    pub stop: &'a StopSignal,
    pub event_chars: usize,
    /// Who calls: `None` for the model, or a client calling directly (whose
    /// calls may need approval too: [`ToolSource::asks_approval`]).
    pub source: Option<ToolSource>,
}

/// What a tool call gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutcome {
    /// The text for the model (a failure or a refusal is text too).
    pub result: String,
    pub is_error: bool,
    pub duration_ms: u64,
}

/// How a tool call ended for the task.
#[derive(Debug)]
pub(super) enum Called {
    /// What the model reads (a failure or a refusal is text too, so the
    /// model can react).
    Done(ToolOutcome),
    /// The server is stopping while the call waits for approval: no result
    /// yet; the task resumes, waiting on the same request, at the next start.
    Suspended,
}

/// Whether a call may run: at once, after a person said so, or not at all.
enum Gate {
    Run,
    Refused(String),
    Suspended,
}

/// What is approved in a call: the argument the tool declares, or all of
/// its arguments.
fn subject_of(tool: Option<&ToolInfo>, arguments: &str) -> String {
    let declared = tool.and_then(|t| t.subject.as_deref());
    if let Some(name) = declared
        && let Ok(serde_json::Value::Object(args)) = serde_json::from_str(arguments)
        && let Some(serde_json::Value::String(value)) = args.get(name)
    {
        return value.clone();
    }
    arguments.to_string()
}

impl CallContext<'_> {
    /// The subject of `call` when it must wait for a person; `None` when it
    /// runs at once.
    async fn needs_approval(&self, call: &ToolCall) -> Option<String> {
        let approvals = &self.session.approvals;
        let tool = self.tools.tool(&call.name).filter(|t| t.enabled)?;
        // Tools that can only read never ask.
        if approvals.mode() == ApprovalMode::None || tool.read_only() {
            return None;
        }
        let settings = self.tool_config.get(&call.name);
        let asks = approvals.mode() == ApprovalMode::All
            || settings.is_some_and(|s| s.approval == ToolApproval::Always);
        if !asks {
            return None;
        }
        let subject = subject_of(Some(&tool), &call.arguments);
        let auto = settings.into_iter().flat_map(|s| &s.auto_approve);
        for pattern in auto {
            if subject_glob(pattern).is_ok_and(|m| m.is_match(&subject)) {
                return None;
            }
        }
        if approvals.rule_allows(&call.name, &subject).await {
            return None;
        }
        Some(subject)
    }

    /// Asks for approval when the call needs it (or, after a restart, waits
    /// on the request made before), and waits for the answer, the timeout
    /// or the task's end.
    async fn gate(&self, call: &ToolCall, waiting: Option<Waiting>) -> Result<Gate, String> {
        let approvals = &self.session.approvals;
        let (request, answer) = match waiting {
            Some(w) => w,
            None => match self.needs_approval(call).await {
                None => return Ok(Gate::Run),
                Some(subject) => approvals
                    .request(
                        Some((self.task_id, &call.id)),
                        &call.name,
                        &call.arguments,
                        &subject,
                        approvals.timeout(),
                    )
                    .await
                    .map_err(|e| e.to_string())?,
            },
        };
        let id = request.approval_id.as_str();
        let waited = approvals
            .answer(&request, answer, self.stop.token())
            .await
            .map_err(|e| e.to_string())?;
        let r = match waited {
            Waited::Answered(r) => r,
            // The server stops: the request stays for the next start.
            Waited::Stopped(_) if self.stop.reason() == Some(StopReason::Interrupted) => {
                approvals.abandon(id).await;
                return Ok(Gate::Suspended);
            }
            Waited::Stopped(answer) => approvals
                .settle(
                    id,
                    Decision::Cancelled,
                    "the task was stopped".into(),
                    BY_CANCEL,
                    answer,
                )
                .await
                .map_err(|e| e.to_string())?,
        };
        if r.decision.allows() {
            return Ok(Gate::Run);
        }
        let why = r.message.filter(|m| !m.trim().is_empty());
        Ok(Gate::Refused(match (r.decision, r.by.as_str(), why) {
            (Decision::Cancelled, _, _) => "Not run: the task was stopped.".into(),
            (_, BY_TIMEOUT, Some(m)) => format!("Not run: {m}."),
            (_, by, Some(m)) => format!("Not run: denied by the {by}: {m}"),
            (_, by, None) => format!("Not run: denied by the {by}."),
        }))
    }

    /// Runs one tool call with `tool_call` / `tool_complete` events around
    /// it, after a person's approval when it needs one. `Err` only when
    /// events cannot be recorded. `resumed`: the task was resumed after a
    /// restart, and this call may have a request waiting already.
    pub(super) async fn call_tool(&self, call: &ToolCall, resumed: bool) -> Result<Called, String> {
        let events = &self.session.events;
        let waiting = if resumed {
            self.session
                .approvals
                .wait(&call.id)
                .await
                .map_err(|e| e.to_string())?
        } else {
            None
        };
        // A call resumed with its request was announced before the restart.
        let source = self.source;
        if waiting.is_none() {
            let arguments = serde_json::from_str::<serde_json::Value>(&call.arguments)
                .unwrap_or_else(|_| serde_json::Value::String(call.arguments.clone()));
            events
                .publish(EventKind::ToolCall {
                    tool_name: call.name.clone(),
                    arguments,
                    tool_call_id: call.id.clone(),
                    source,
                })
                .await
                .map_err(|e| e.to_string())?;
        }
        let started = Instant::now();
        // A REST client calling directly is the person who would approve.
        let gate = match source {
            Some(s) if !s.asks_approval() => Gate::Run,
            _ => self.gate(call, waiting).await?,
        };
        let outcome = match gate {
            Gate::Suspended => return Ok(Called::Suspended),
            Gate::Refused(text) => Err(("refused", text)),
            Gate::Run => {
                let token = self.stop.token();
                tokio::select! {
                    _ = token.cancelled() => Err(("cancelled", "Error: the task was stopped while this tool ran".to_string())),
                    r = self.tools.invoke(self.session, &call.name, &call.arguments) => r.map_err(|e| (e.code(), e.for_model())),
                }
            }
        };
        let outcome_word = match &outcome {
            Ok(_) => "ok",
            Err((code, _)) => code,
        };
        // Tool names come from the model: one it made up is counted as
        // `unknown`, so metric labels stay bounded by the loaded tools.
        let label = if self.tools.has_tool(&call.name) {
            call.name.as_str()
        } else {
            UNKNOWN_TOOL
        };
        self.metrics
            .tool_called(label, outcome_word, started.elapsed());
        let (result, is_error) = match outcome {
            Ok(text) => (text, false),
            Err((_, e)) => (e, true),
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        events
            .publish(EventKind::ToolComplete {
                tool_call_id: call.id.clone(),
                tool_name: call.name.clone(),
                result: clip(&result, self.event_chars),
                is_error,
                duration_ms,
                source,
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(Called::Done(ToolOutcome {
            result,
            is_error,
            duration_ms,
        }))
    }
}

/// A request made before a restart, and the receiver of its answer.
type Waiting = (
    crate::session::ApprovalRequest,
    tokio::sync::oneshot::Receiver<Resolution>,
);

/// At most `max` characters of `text`, with a note of what was cut.
pub(super) fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((i, _)) => format!(
            "{}\n[... {} more characters cut]",
            &text[..i],
            text[i..].chars().count()
        ),
    }
}
