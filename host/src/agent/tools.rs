//! Tool dispatch: the seam between the agent and whatever runs tools
//! ([`ToolRunner`], implemented by the plugin runtime), and one call with
//! its `tool_call` / `tool_complete` events and metrics.

use std::time::Instant;

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::messages::ToolCall;
use crate::capabilities::Capabilities;
use crate::events::{EventKind, EventLog};
use crate::metrics::{Metrics, UNKNOWN_TOOL};
use crate::plugins::{PluginRuntime, ToolError, ToolInfo};

/// What the agent needs from the tools: which exist, and running one for a
/// session.
pub trait ToolRunner: Send + Sync {
    /// The tools the model may be offered.
    fn enabled_tools(&self) -> Vec<ToolInfo>;
    /// Whether a tool of this name is loaded (enabled or not).
    fn has_tool(&self, name: &str) -> bool;
    /// Runs `tool` with JSON arguments on behalf of the session `caps`
    /// belongs to.
    fn invoke<'a>(
        &'a self,
        caps: Capabilities,
        tool: &'a str,
        arguments: &'a str,
    ) -> BoxFuture<'a, Result<String, ToolError>>;
}

impl ToolRunner for PluginRuntime {
    fn enabled_tools(&self) -> Vec<ToolInfo> {
        PluginRuntime::enabled_tools(self)
    }

    fn has_tool(&self, name: &str) -> bool {
        PluginRuntime::has_tool(self, name)
    }

    fn invoke<'a>(
        &'a self,
        caps: Capabilities,
        tool: &'a str,
        arguments: &'a str,
    ) -> BoxFuture<'a, Result<String, ToolError>> {
        Box::pin(PluginRuntime::invoke(self, caps, tool, arguments))
    }
}

/// Runs one tool call with `tool_call` / `tool_complete` events around it.
/// Returns the text for the model (a failure is text too, so the model can
/// react); `Err` only when events cannot be recorded.
pub(super) async fn call_tool(
    tools: &dyn ToolRunner,
    metrics: &Metrics,
    caps: &Capabilities,
    events: &EventLog,
    call: &ToolCall,
    token: &CancellationToken,
    event_chars: usize,
) -> Result<String, String> {
    let arguments = serde_json::from_str::<serde_json::Value>(&call.arguments)
        .unwrap_or_else(|_| serde_json::Value::String(call.arguments.clone()));
    events
        .publish(EventKind::ToolCall {
            tool_name: call.name.clone(),
            arguments,
            tool_call_id: call.id.clone(),
        })
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let outcome = tokio::select! {
        _ = token.cancelled() => Err(("cancelled", "Error: the task was stopped while this tool ran".to_string())),
        r = tools.invoke(caps.clone(), &call.name, &call.arguments) => r.map_err(|e| (e.code(), e.for_model())),
    };
    let outcome_word = match &outcome {
        Ok(_) => "ok",
        Err((code, _)) => code,
    };
    // Tool names come from the model: one it made up is counted as
    // `unknown`, so metric labels stay bounded by the loaded tools.
    let label = if tools.has_tool(&call.name) {
        call.name.as_str()
    } else {
        UNKNOWN_TOOL
    };
    metrics.tool_called(label, outcome_word, started.elapsed());
    let (content, is_error) = match outcome {
        Ok(text) => (text, false),
        Err((_, e)) => (e, true),
    };
    events
        .publish(EventKind::ToolComplete {
            tool_call_id: call.id.clone(),
            tool_name: call.name.clone(),
            result: clip(&content, event_chars),
            is_error,
            duration_ms: started.elapsed().as_millis() as u64,
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(content)
}

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
