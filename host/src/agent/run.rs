//! One task's loop: ask the model, run the tools it calls, feed back the
//! results, until it answers without tool calls, runs out of steps, fails or
//! is stopped. How it ended is a [`TaskEnd`]; publishing that is the
//! caller's business.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::conversation::{Compacted, Conversation};
use super::messages::Message;
use super::messages::ToolCall;
use super::model::{Model, ModelError, Turn, TurnRequest};
use super::tools::{CallContext, Called, ToolRunner, clip};
use crate::config::{AgentConfig, ToolConfig};
use crate::events::{CompactMethod, CompactReason, EventKind, Fence, TaskOutcome, Usage};
use crate::metrics::Metrics;
use crate::principal::Principal;
use crate::session::Session;
use crate::store::{Store, UsageRecord};

/// Why a running task was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A client cancelled it, or its session is being deleted.
    Cancelled,
    /// The server is shutting down.
    Interrupted,
    /// Another server took the session over: this one's writes for the
    /// task are refused, and it records nothing more of it.
    Lost,
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

    fn over_budget(usage: Usage, steps: u32, why: String) -> Self {
        Self::new(TaskOutcome::BudgetExceeded, usage, steps, Some(why))
    }

    /// A task stopped for `reason` after `steps` turns.
    pub(super) fn stopped(reason: StopReason, usage: Usage, steps: u32) -> Self {
        let (outcome, message) = match reason {
            StopReason::Interrupted => (
                TaskOutcome::Interrupted,
                "The server is shutting down; the task was stopped.",
            ),
            StopReason::Cancelled => (TaskOutcome::Cancelled, "The task was cancelled."),
            StopReason::Lost => (
                TaskOutcome::Interrupted,
                "Another server took the session over; the task was stopped here.",
            ),
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
    /// The session's owner, whose limits apply and whose usage it is.
    pub principal: &'a Principal,
    /// The model's name, as the usage ledger records it.
    pub model_name: &'a str,
    /// The lease the task runs under: its messages are refused once
    /// another server took the session over.
    pub fence: &'a Fence,
}

/// Why a model call could not be made or did not succeed.
enum Asked {
    Failed(String),
    /// The model said the request does not fit its window.
    TooLong(String),
    OverBudget(String),
}

/// How a task's tokens are checked and counted: the session's budget, the
/// owner's tokens per day, the task's total, the ledger.
struct Spending<'a> {
    run: &'a TaskRun<'a>,
    usage: Usage,
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
            Ok(c) => c.under(self.fence.clone()),
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
        let mut spending = Spending { run: self, usage };
        for step in 1..=settings.max_steps {
            let asked = tokio::select! {
                _ = token.cancelled() => return self.stopped(spending.usage, step - 1),
                asked = spending.ask(&mut conversation) => asked,
            };
            let turn = match asked {
                Ok(turn) => turn,
                Err(Asked::Failed(e) | Asked::TooLong(e)) => {
                    return TaskEnd::failed(spending.usage, step, e);
                }
                Err(Asked::OverBudget(why)) => {
                    return TaskEnd::over_budget(spending.usage, step - 1, why);
                }
            };
            usage = spending.usage;
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

impl Spending<'_> {
    /// One model turn on the conversation, compacting it first when it has
    /// grown past `agent.compact_at_percent`, and when the model says it is
    /// too long: summarised, and the call tried again; then the oldest turns
    /// dropped, and tried once more; then the task fails. Never more.
    async fn ask(&mut self, conversation: &mut Conversation) -> Result<Turn, Asked> {
        let settings = self.run.settings;
        if conversation.chars() > settings.compact_threshold() {
            self.compact(conversation, CompactReason::Threshold).await?;
        }
        let tools = self.run.tools.enabled_tools(self.run.session).await;
        for attempt in 1.. {
            let messages: Vec<Message> = conversation.messages().cloned().collect();
            let request = TurnRequest {
                system_prompt: &settings.system_prompt,
                messages: &messages,
                tools: &tools,
            };
            match self.call(request, true).await {
                Err(Asked::TooLong(why)) if attempt < 3 => {
                    let compacted = if attempt == 1 {
                        self.compact(conversation, CompactReason::ContextLength)
                            .await?
                    } else {
                        self.drop_oldest(conversation, CompactReason::ContextLength)
                            .await?
                    };
                    if !compacted {
                        return Err(Asked::Failed(format!(
                            "{TOO_LONG} ({why}), and it cannot be made shorter: only the current turn is left"
                        )));
                    }
                }
                Err(Asked::TooLong(why)) => {
                    return Err(Asked::Failed(format!(
                        "{TOO_LONG} ({why}), even after compacting it and dropping its older turns"
                    )));
                }
                other => return other,
            }
        }
        unreachable!("the loop returns")
    }

    /// One model call, checked against the budgets first and counted after;
    /// `stream`: its text goes to the session's events.
    async fn call(&mut self, request: TurnRequest<'_>, stream: bool) -> Result<Turn, Asked> {
        let chars = request.system_prompt.len()
            + request
                .messages
                .iter()
                .map(|m| super::messages::encode(m).len())
                .sum::<usize>();
        if let Some(why) = self.over_budget(chars).await {
            return Err(Asked::OverBudget(why));
        }
        let run = self.run;
        let events = stream.then_some(&*run.session.events);
        let turn = match run.model.turn(request, events).await {
            Ok(turn) => turn,
            Err(ModelError::ContextTooLong(m)) => return Err(Asked::TooLong(m)),
            Err(ModelError::Events(e)) => return Err(Asked::Failed(e)),
            Err(e) => return Err(Asked::Failed(e.to_string())),
        };
        self.count(&turn.usage).await;
        Ok(turn)
    }

    /// Why the next call, of about `chars / 4` prompt tokens, may not be
    /// made: it would take the session past its budget, or its owner past
    /// the tokens of a day.
    async fn over_budget(&self, chars: usize) -> Option<String> {
        let run = self.run;
        let estimate = (chars / 4) as u64;
        if let Some(budget) = run.session.budget_tokens {
            let used = run.session.tokens_used();
            if used + estimate > budget {
                return Some(format!(
                    "The session's token budget is spent: {used} of its {budget} tokens are used, \
                     and the next model request would need about {estimate} more. Create a session \
                     with a larger budget_tokens to go on."
                ));
            }
        }
        if let Some(limit) = run.principal.limits.tokens_per_day {
            match run
                .store
                .principal_tokens_since(&run.principal.name, super::start_of_today())
                .await
            {
                Ok(used) if used + estimate > limit => {
                    return Some(format!(
                        "Quota tokens_per_day reached: {} may use {limit} model tokens a day (UTC) and \
                         has used {used}; the next model request would need about {estimate} more.",
                        run.principal.name
                    ));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "could not read the usage ledger; the call goes ahead")
                }
            }
        }
        None
    }

    /// Counts a call's tokens: the task's, the session's, the ledger's and
    /// the metrics'.
    async fn count(&mut self, used: &Usage) {
        let run = self.run;
        self.usage.prompt_tokens += used.prompt_tokens;
        self.usage.completion_tokens += used.completion_tokens;
        self.usage.total_tokens += used.total_tokens;
        run.session
            .add_tokens(used.prompt_tokens + used.completion_tokens);
        run.metrics.tokens(
            &run.principal.name,
            used.prompt_tokens,
            used.completion_tokens,
        );
        let record = UsageRecord {
            principal: run.principal.name.clone(),
            session_id: run.session.id.clone(),
            task_id: run.task_id.to_string(),
            model: run.model_name.to_string(),
            prompt_tokens: used.prompt_tokens,
            completion_tokens: used.completion_tokens,
            at: chrono::Utc::now(),
        };
        if let Err(e) = run.store.insert_usage(&record).await {
            tracing::error!(session = %run.session.id, error = %e, "could not record a model call in the usage ledger");
        }
    }

    /// Replaces the older turns with the model's summary of them; when
    /// there is nothing to summarise, the summary cannot be made or what is
    /// left still does not fit, drops the oldest instead. Whether the
    /// conversation got shorter.
    async fn compact(
        &mut self,
        conversation: &mut Conversation,
        reason: CompactReason,
    ) -> Result<bool, Asked> {
        let settings = self.run.settings;
        let Some(cut) = conversation.cut(settings.compact_threshold() / 2) else {
            return self.drop_oldest(conversation, reason).await;
        };
        let summary = match self.summarise(conversation, cut).await {
            Ok(summary) => summary,
            Err(Asked::OverBudget(why)) => return Err(Asked::OverBudget(why)),
            Err(Asked::Failed(why) | Asked::TooLong(why)) => {
                tracing::warn!(session = %self.run.session.id, %why, "the conversation could not be summarised; dropping its oldest turns");
                return self.drop_oldest(conversation, reason).await;
            }
        };
        let done = conversation
            .compact(cut, Some(summary))
            .await
            .map_err(|e| Asked::Failed(format!("could not record a compaction: {e}")))?;
        self.say(reason, CompactMethod::Summary, done).await?;
        if conversation.chars() > settings.context_chars {
            self.drop_oldest(conversation, reason).await?;
        }
        Ok(true)
    }

    /// The model's summary of the messages before `cut`, as the note that
    /// replaces them (keeping the words of the task being worked on).
    async fn summarise(
        &mut self,
        conversation: &Conversation,
        cut: usize,
    ) -> Result<Message, Asked> {
        let settings = self.run.settings;
        let transcript = transcript(conversation.head(cut), settings.context_chars);
        let asked = [Message::User {
            content: transcript,
        }];
        let request = TurnRequest {
            system_prompt: SUMMARY_PROMPT,
            messages: &asked,
            tools: &[],
        };
        let turn = self.call(request, false).await?;
        let summary = clip(turn.text.trim(), settings.context_chars / 4);
        if summary.is_empty() {
            return Err(Asked::Failed("the model's summary was empty".into()));
        }
        Ok(note(
            &format!(
                "Summary of the conversation so far (its older messages were compacted):\n{summary}"
            ),
            conversation.task_before(cut),
        ))
    }

    /// Drops the oldest turns until the conversation fits `context_chars`
    /// (the summary first; at worst only the last group is kept). Whether
    /// anything was dropped.
    async fn drop_oldest(
        &mut self,
        conversation: &mut Conversation,
        reason: CompactReason,
    ) -> Result<bool, Asked> {
        let context = self.run.settings.context_chars;
        let had_summary = conversation
            .messages()
            .next()
            .is_some_and(|m| matches!(m, Message::Summary { .. }));
        let cut = match conversation.cut(context) {
            Some(cut) => cut,
            None if had_summary => 0,
            None => return Ok(false),
        };
        let task = conversation.task_before(cut).map(str::to_string);
        let kept = task.as_deref().map(|t| {
            note(
                "Older messages of this conversation were dropped to fit the model's context window.",
                Some(t),
            )
        });
        let done = conversation
            .compact(cut, kept)
            .await
            .map_err(|e| Asked::Failed(format!("could not record a compaction: {e}")))?;
        self.say(reason, CompactMethod::Dropped, done).await?;
        Ok(done.chars_after < done.chars_before)
    }

    async fn say(
        &self,
        reason: CompactReason,
        method: CompactMethod,
        done: Compacted,
    ) -> Result<(), Asked> {
        let event = EventKind::ContextCompacted {
            reason,
            method,
            messages_before: done.messages_before,
            messages_after: done.messages_after,
            chars_before: done.chars_before,
            chars_after: done.chars_after,
            task_id: Some(self.run.task_id.to_string()),
        };
        self.run
            .session
            .events
            .publish(event)
            .await
            .map(drop)
            .map_err(|e| Asked::Failed(format!("could not record an event: {e}")))
    }
}

/// How a failure of a request too long for the model begins.
const TOO_LONG: &str = "The conversation is too long for the model";

/// What the model is told when it summarises a conversation.
const SUMMARY_PROMPT: &str = "You compact the conversation of an autonomous coding agent so that it can \
go on working with less context. You are given the older part of the conversation as a transcript. Write a \
concise summary the agent can continue from: what the user asked for, what has been done (files created or \
changed, commands run and what they showed, decisions made and why), what failed, and what remains to do. \
Keep exact file paths, names, commands and error messages that matter. Write only the summary.";

/// A note standing for compacted messages: `text`, then the words of the
/// task being worked on, if the compacted messages held it.
fn note(text: &str, task: Option<&str>) -> Message {
    let content = match task {
        Some(task) => format!("{text}\n\nThe task being worked on now:\n{task}"),
        None => text.to_string(),
    };
    Message::Summary { content }
}

/// Messages as a transcript a model can summarise, at most `max_chars`
/// (the newest kept when it must be cut).
fn transcript<'a>(messages: impl Iterator<Item = &'a Message>, max_chars: usize) -> String {
    let mut out = String::new();
    for m in messages {
        match m {
            Message::User { content } => out.push_str(&format!("User: {content}\n\n")),
            Message::Summary { content } => out.push_str(&format!("{content}\n\n")),
            Message::Assistant {
                content,
                tool_calls,
            } => {
                if !content.is_empty() {
                    out.push_str(&format!("Assistant: {content}\n"));
                }
                for c in tool_calls {
                    out.push_str(&format!(
                        "Assistant called {}({})\n",
                        c.name,
                        clip(&c.arguments, 2_000)
                    ));
                }
                out.push('\n');
            }
            Message::Tool { content, .. } => {
                out.push_str(&format!("Tool result: {}\n\n", clip(content, 4_000)));
            }
        }
    }
    if out.len() > max_chars {
        let mut start = out.len() - max_chars;
        while !out.is_char_boundary(start) {
            start += 1;
        }
        out.drain(..start);
    }
    out
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
