//! One task's loop: ask the model, run the tools it calls, feed back the
//! results, until it answers without tool calls, runs out of steps, fails or
//! is stopped. How it ended is a [`TaskEnd`]; publishing that is the
//! caller's business.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::conversation::Conversation;
use super::messages::Message;
use super::messages::ToolCall;
use super::model::{Model, ModelError, TurnRequest};
use super::tools::{CallContext, Called, ToolRunner, clip};
use crate::config::{AgentConfig, ToolConfig};
use crate::events::{TaskOutcome, Usage};
use crate::metrics::Metrics;
use crate::session::Session;
use crate::store::Store;

/// Why a running task was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A client cancelled it, or its session is being deleted.
    Cancelled,
    /// The server is shutting down.
    Interrupted,
}

/// How a running task is told to stop, and why.
#[derive(Debug, Clone)]
pub(super) struct StopSignal {
    token: CancellationToken,
    reason: Arc<Mutex<Option<StopReason>>>,
}

impl StopSignal {
    pub(super) fn new(token: CancellationToken) -> Self {
        Self {
            token,
            reason: Arc::default(),
        }
    }

    pub(super) fn stop(&self, reason: StopReason) {
        *self.reason.lock().unwrap() = Some(reason);
        self.token.cancel();
    }

    pub(super) fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Why it was stopped (a stop with no reason given counts as a cancel).
    pub(super) fn reason(&self) -> Option<StopReason> {
        let reason = *self.reason.lock().unwrap();
        reason.or(self.token.is_cancelled().then_some(StopReason::Cancelled))
    }
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEnd {
    pub outcome: TaskOutcome,
    pub usage: Usage,
    /// Model turns taken.
    pub steps: u32,
    /// What went wrong, published as an `error` event before `task_completed`.
    pub error: Option<String>,
    /// It has not ended: the server stopped while a tool call waited for
    /// approval, and the task resumes at the next start.
    pub suspended: bool,
}

impl TaskEnd {
    pub fn new(outcome: TaskOutcome, usage: Usage, steps: u32, error: Option<String>) -> Self {
        Self {
            outcome,
            usage,
            steps,
            error,
            suspended: false,
        }
    }

    fn suspended(usage: Usage, steps: u32) -> Self {
        Self {
            suspended: true,
            ..Self::new(TaskOutcome::Interrupted, usage, steps, None)
        }
    }

    fn failed(usage: Usage, steps: u32, error: impl Into<String>) -> Self {
        Self::new(TaskOutcome::Failed, usage, steps, Some(error.into()))
    }

    /// A task stopped for `reason` after `steps` turns.
    pub(super) fn stopped(reason: StopReason, usage: Usage, steps: u32) -> Self {
        let (outcome, message) = match reason {
            StopReason::Interrupted => (
                TaskOutcome::Interrupted,
                "The server is shutting down; the task was stopped.",
            ),
            StopReason::Cancelled => (TaskOutcome::Cancelled, "The task was cancelled."),
        };
        Self::new(outcome, usage, steps, Some(message.into()))
    }
}

/// What one task's loop works with.
pub(super) struct TaskRun<'a> {
    pub settings: &'a AgentConfig,
    pub tool_config: &'a BTreeMap<String, ToolConfig>,
    pub task_id: &'a str,
    pub store: &'a Store,
    pub model: &'a dyn Model,
    pub tools: &'a dyn ToolRunner,
    pub metrics: &'a Metrics,
    pub session: &'a Arc<Session>,
    pub stop: &'a StopSignal,
}

impl TaskRun<'_> {
    /// Works on `task` until it ends. `resumed`: the task was running when
    /// the server stopped with a tool call waiting for approval; it goes on
    /// from there instead of starting over.
    pub(super) async fn run(&self, task: &str, resumed: bool) -> TaskEnd {
        let settings = self.settings;
        let session = self.session;
        let token = self.stop.token();
        let mut usage = Usage::default();
        let mut conversation = match Conversation::load(self.store.clone(), &session.id).await {
            Ok(c) => c,
            Err(e) => {
                return TaskEnd::failed(usage, 0, format!("could not load the conversation: {e}"));
            }
        };
        let calls = self.calls();
        if resumed {
            // The calls of the last answer that have no result yet.
            let unanswered = unanswered_calls(&conversation);
            for call in &unanswered {
                match self.answer(&calls, &mut conversation, call, true).await {
                    Ok(true) => {}
                    Ok(false) => return TaskEnd::suspended(usage, 0),
                    Err(e) => return TaskEnd::failed(usage, 0, e),
                }
            }
            if token.is_cancelled() {
                return self.stopped(usage, 0);
            }
        } else {
            // Calls a dead server never answered (it was killed while they
            // ran): each gets a result saying so, or the model would be
            // sent a conversation it refuses.
            for call in unanswered_calls(&conversation) {
                let result = Message::Tool {
                    tool_call_id: call.id,
                    content: NO_RESULT.into(),
                };
                if let Err(e) = conversation.push(result).await {
                    return TaskEnd::failed(
                        usage,
                        0,
                        format!("could not record a tool result: {e}"),
                    );
                }
            }
            let user = Message::User {
                content: task.to_string(),
            };
            if let Err(e) = conversation.push(user).await {
                return TaskEnd::failed(usage, 0, format!("could not record the task: {e}"));
            }
        }
        for step in 1..=settings.max_steps {
            if let Err(e) = conversation.trim(settings.context_chars).await {
                tracing::warn!(session = %session.id, error = %e, "could not trim the conversation");
            }
            let messages: Vec<Message> = conversation.messages().cloned().collect();
            let tools = self.tools.enabled_tools(session).await;
            let request = TurnRequest {
                system_prompt: &settings.system_prompt,
                messages: &messages,
                tools: &tools,
            };
            let turn = tokio::select! {
                _ = token.cancelled() => return self.stopped(usage, step - 1),
                turn = self.model.turn(request, &session.events) => turn,
            };
            let turn = match turn {
                Ok(turn) => turn,
                Err(ModelError::Events(e)) => return TaskEnd::failed(usage, step, e),
                Err(e) => return TaskEnd::failed(usage, step, e.to_string()),
            };
            self.metrics
                .tokens(turn.usage.prompt_tokens, turn.usage.completion_tokens);
            usage.prompt_tokens += turn.usage.prompt_tokens;
            usage.completion_tokens += turn.usage.completion_tokens;
            usage.total_tokens += turn.usage.total_tokens;
            let assistant = Message::Assistant {
                content: turn.text.clone(),
                tool_calls: turn.tool_calls.clone(),
            };
            if let Err(e) = conversation.push(assistant).await {
                return TaskEnd::failed(
                    usage,
                    step,
                    format!("could not record the model's answer: {e}"),
                );
            }
            if turn.tool_calls.is_empty() {
                return TaskEnd::new(TaskOutcome::Completed, usage, step, None);
            }
            for call in &turn.tool_calls {
                match self.answer(&calls, &mut conversation, call, false).await {
                    Ok(true) => {}
                    Ok(false) => return TaskEnd::suspended(usage, step),
                    Err(e) => return TaskEnd::failed(usage, step, e),
                }
            }
            if token.is_cancelled() {
                return self.stopped(usage, step);
            }
        }
        let message = format!(
            "Stopped after {} model turns (agent.max_steps) without the model finishing the task.",
            settings.max_steps
        );
        TaskEnd::new(
            TaskOutcome::MaxSteps,
            usage,
            settings.max_steps,
            Some(message),
        )
    }

    fn calls(&self) -> CallContext<'_> {
        CallContext {
            tools: self.tools,
            metrics: self.metrics,
            tool_config: self.tool_config,
            session: self.session,
            task_id: self.task_id,
            stop: self.stop,
            event_chars: self.settings.event_result_chars,
            source: None,
        }
    }

    /// Runs one call (unless the task was stopped) and records its result.
    /// Every call gets a result, even when stopped, so the stored
    /// conversation stays valid for the next task. `Ok(false)`: suspended
    /// for the next start, no result recorded.
    async fn answer(
        &self,
        calls: &CallContext<'_>,
        conversation: &mut Conversation,
        call: &ToolCall,
        resumed: bool,
    ) -> Result<bool, String> {
        let content = if self.stop.token().is_cancelled() {
            "Not run: the task was stopped.".to_string()
        } else {
            match calls.call_tool(call, resumed).await? {
                Called::Done(outcome) => outcome.result,
                Called::Suspended => return Ok(false),
            }
        };
        let result = Message::Tool {
            tool_call_id: call.id.clone(),
            content: clip(&content, self.settings.tool_result_chars),
        };
        conversation
            .push(result)
            .await
            .map_err(|e| format!("could not record a tool result: {e}"))?;
        Ok(true)
    }

    fn stopped(&self, usage: Usage, steps: u32) -> TaskEnd {
        let reason = self.stop.reason().unwrap_or(StopReason::Cancelled);
        TaskEnd::stopped(reason, usage, steps)
    }
}

/// The result of a call the server stopped without answering.
pub(super) const NO_RESULT: &str = "No result: the server stopped while this call ran or before it started; check its effects before you repeat it.";

/// The tool calls of the conversation's last model answer that have no
/// result after it.
fn unanswered_calls(conversation: &Conversation) -> Vec<ToolCall> {
    let messages: Vec<&Message> = conversation.messages().collect();
    let Some(last) = messages
        .iter()
        .rposition(|m| matches!(m, Message::Assistant { .. }))
    else {
        return Vec::new();
    };
    let Message::Assistant { tool_calls, .. } = messages[last] else {
        return Vec::new();
    };
    let answered: Vec<&str> = messages[last + 1..]
        .iter()
        .filter_map(|m| match m {
            Message::Tool { tool_call_id, .. } => Some(tool_call_id.as_str()),
            _ => None,
        })
        .collect();
    tool_calls
        .iter()
        .filter(|c| !answered.contains(&c.id.as_str()))
        .cloned()
        .collect()
}
