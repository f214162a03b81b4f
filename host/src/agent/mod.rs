//! The agent: works on a session's tasks with a model and the session's
//! tools, one task at a time per session, publishing every step to the
//! session's event log.
//!
//! A task posted while another runs waits in the session's queue (bounded by
//! `agent.max_queued_tasks`). Each task opens with `task_started` and ends
//! with exactly one `task_completed` whose `status` says how it ended
//! (`completed`, `failed`, `cancelled`, `interrupted`, `max_steps`); a
//! failure is described by an `error` event before it.

mod conversation;
mod model;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls,
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestAssistantMessageContent,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestSystemMessageContent, ChatCompletionRequestToolMessage,
    ChatCompletionRequestToolMessageContent, ChatCompletionRequestUserMessage,
    ChatCompletionRequestUserMessageContent, ChatCompletionTool, ChatCompletionTools, FunctionCall,
    FunctionObject,
};
use tokio_util::sync::CancellationToken;

pub use model::{ModelClient, NOT_CONFIGURED};

use crate::config::Config;
use crate::events::{EventKind, TaskOutcome, Usage};
use crate::plugins::PluginRuntime;
use crate::session::Session;
use crate::store::Store;
use conversation::Conversation;
use model::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("Session {session} already has {max} tasks waiting; wait for one to finish")]
    QueueFull { session: String, max: usize },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

/// Where a submitted task stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub task_id: String,
    /// Tasks ahead of it: 0 means it starts now.
    pub position: usize,
}

/// Why a running task was asked to stop.
const STOP_CANCELLED: u8 = 1;
const STOP_INTERRUPTED: u8 = 2;

struct QueuedTask {
    id: String,
    text: String,
}

struct Running {
    id: String,
    token: CancellationToken,
    reason: Arc<AtomicU8>,
}

#[derive(Default)]
struct SessionTasks {
    queue: VecDeque<QueuedTask>,
    /// Places taken by submissions still being stored: counted against
    /// `agent.max_queued_tasks` with the queue, so concurrent submits never
    /// exceed it.
    reserved: usize,
    running: Option<Running>,
    /// The task draining the queue; `None` once it has decided to stop
    /// (under the lock, so a submit never misses a worker that is exiting).
    worker: Option<tokio::task::JoinHandle<()>>,
}

/// Runs tasks for every session.
pub struct Agent {
    config: Arc<Config>,
    store: Store,
    plugins: Arc<PluginRuntime>,
    metrics: Arc<crate::metrics::Metrics>,
    model: Result<ModelClient, String>,
    tasks: Mutex<HashMap<String, SessionTasks>>,
    shutting_down: CancellationToken,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("model", &self.model.as_ref().map(|_| "configured"))
            .finish_non_exhaustive()
    }
}

impl Agent {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        plugins: Arc<PluginRuntime>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<Self> {
        let model = ModelClient::from_config(&config.model, &config.agent);
        if let Err(why) = &model {
            tracing::warn!("{why}");
        }
        Arc::new(Self {
            config,
            store,
            plugins,
            metrics,
            model,
            tasks: Mutex::new(HashMap::new()),
            shutting_down: CancellationToken::new(),
        })
    }

    /// Queues a task for a session; it starts at once when nothing else runs
    /// there.
    pub async fn submit(
        self: &Arc<Self>,
        session: &Arc<Session>,
        text: String,
    ) -> Result<Submitted, AgentError> {
        if self.shutting_down.is_cancelled() {
            return Err(AgentError::ShuttingDown);
        }
        let max = self.config.agent.max_queued_tasks;
        let task_id = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        // Check and take a place in one step; the task is stored before it
        // joins the queue, and gives the place back if that fails.
        {
            let mut tasks = self.tasks.lock().unwrap();
            let state = tasks.entry(session.id.clone()).or_default();
            if state.queue.len() + state.reserved >= max {
                return Err(AgentError::QueueFull {
                    session: session.id.clone(),
                    max,
                });
            }
            state.reserved += 1;
        }
        let stored = self.store.insert_task(&session.id, &task_id, &text).await;
        let mut tasks = self.tasks.lock().unwrap();
        let state = tasks.entry(session.id.clone()).or_default();
        state.reserved = state.reserved.saturating_sub(1);
        stored?;
        let position = state.queue.len() + usize::from(state.running.is_some());
        state.queue.push_back(QueuedTask {
            id: task_id.clone(),
            text,
        });
        if state.worker.is_none() {
            let agent = self.clone();
            let session = session.clone();
            state.worker = Some(tokio::spawn(async move { agent.work(session).await }));
        }
        Ok(Submitted { task_id, position })
    }

    /// Stops the session's running task. Returns false when none runs.
    pub fn cancel(&self, session_id: &str) -> bool {
        let tasks = self.tasks.lock().unwrap();
        match tasks.get(session_id).and_then(|t| t.running.as_ref()) {
            Some(running) => {
                tracing::info!(session = session_id, task = %running.id, "cancelling the running task");
                running.reason.store(STOP_CANCELLED, Ordering::SeqCst);
                running.token.cancel();
                true
            }
            None => false,
        }
    }

    /// Forgets a session being deleted: its queue is dropped and its running
    /// task stopped.
    pub fn forget(&self, session_id: &str) {
        let state = self.tasks.lock().unwrap().remove(session_id);
        if let Some(state) = state {
            if let Some(running) = state.running {
                running.reason.store(STOP_CANCELLED, Ordering::SeqCst);
                running.token.cancel();
            }
            if let Some(worker) = state.worker {
                worker.abort();
            }
        }
    }

    /// Whether a session has a task running.
    pub fn is_busy(&self, session_id: &str) -> bool {
        self.tasks
            .lock()
            .unwrap()
            .get(session_id)
            .is_some_and(|t| t.running.is_some())
    }

    /// Stops every running task as `interrupted` (queued ones too), waits for
    /// their final events to be recorded, and refuses new tasks.
    pub async fn shutdown(&self) {
        self.shutting_down.cancel();
        let workers: Vec<tokio::task::JoinHandle<()>> = {
            let mut tasks = self.tasks.lock().unwrap();
            for state in tasks.values_mut() {
                if let Some(running) = &state.running {
                    running.reason.store(STOP_INTERRUPTED, Ordering::SeqCst);
                    running.token.cancel();
                }
            }
            tasks.values_mut().filter_map(|s| s.worker.take()).collect()
        };
        for worker in workers {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), worker).await;
        }
    }

    /// After a restart: tasks the store says were queued or running were
    /// interrupted by the stop; say so in their sessions' event logs.
    pub async fn recover(
        &self,
        sessions: &crate::session::SessionManager,
    ) -> Result<(), AgentError> {
        for (session_id, task_id, task, status) in self.store.unfinished_tasks().await? {
            if let Ok(session) = sessions.get(&session_id) {
                let message = match status.as_str() {
                    "running" => {
                        "The server stopped while this task was running; it did not finish."
                    }
                    _ => "The server stopped before this queued task could start.",
                };
                self.finish(
                    &session,
                    &task_id,
                    &task,
                    TaskOutcome::Interrupted,
                    Usage::default(),
                    0,
                    Some(message),
                )
                .await;
            } else {
                self.store
                    .set_task_status(&session_id, &task_id, "interrupted")
                    .await?;
            }
        }
        Ok(())
    }

    /// Drains a session's queue, one task at a time.
    async fn work(self: Arc<Self>, session: Arc<Session>) {
        loop {
            let (task, token, reason) = {
                let mut tasks = self.tasks.lock().unwrap();
                let Some(state) = tasks.get_mut(&session.id) else {
                    return;
                };
                let Some(task) = state.queue.pop_front() else {
                    state.worker = None;
                    return;
                };
                let token = self.shutting_down.child_token();
                let reason = Arc::new(AtomicU8::new(0));
                state.running = Some(Running {
                    id: task.id.clone(),
                    token: token.clone(),
                    reason: reason.clone(),
                });
                (task, token, reason)
            };
            if self.shutting_down.is_cancelled() {
                reason.store(STOP_INTERRUPTED, Ordering::SeqCst);
            }
            let started = Instant::now();
            let Some((outcome, usage, steps, error)) =
                self.run(&session, &task, &token, &reason).await
            else {
                continue;
            };
            // Not running any more before anyone hears it ended, so a cancel
            // sent on `task_completed` finds nothing to cancel.
            if let Some(state) = self.tasks.lock().unwrap().get_mut(&session.id) {
                state.running = None;
            }
            self.finish(
                &session,
                &task.id,
                &task.text,
                outcome,
                usage,
                steps,
                error.as_deref(),
            )
            .await;
            tracing::info!(
                session = %session.id, task = %task.id, ?outcome, steps, tokens = usage.total_tokens,
                ms = started.elapsed().as_millis() as u64, "task finished"
            );
        }
    }

    /// Runs one task up to its end; the caller publishes how it ended.
    /// `None` when it could not even be started.
    async fn run(
        &self,
        session: &Arc<Session>,
        task: &QueuedTask,
        token: &CancellationToken,
        reason: &AtomicU8,
    ) -> Option<(TaskOutcome, Usage, u32, Option<String>)> {
        if reason.load(Ordering::SeqCst) == STOP_INTERRUPTED {
            let msg = "The server is shutting down; this queued task was not started.";
            return Some((
                TaskOutcome::Interrupted,
                Usage::default(),
                0,
                Some(msg.into()),
            ));
        }
        if let Err(e) = self
            .store
            .set_task_status(&session.id, &task.id, "running")
            .await
        {
            tracing::error!(session = %session.id, error = %e, "could not record a task as running");
        }
        let start = EventKind::TaskStarted {
            session_id: session.id.clone(),
            task: task.text.clone(),
            task_id: task.id.clone(),
        };
        if let Err(e) = session.events.publish(start).await {
            tracing::error!(session = %session.id, error = %e, "could not record task_started; task dropped");
            return None;
        }
        tracing::info!(session = %session.id, task = %task.id, "task started");
        Some(match &self.model {
            Err(why) => (TaskOutcome::Failed, Usage::default(), 0, Some(why.clone())),
            Ok(model) => self.work_on(session, task, model, token, reason).await,
        })
    }

    /// Publishes a task's `error` (if any) and its `task_completed`, and
    /// records its final status.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        session: &Session,
        task_id: &str,
        task: &str,
        status: TaskOutcome,
        usage: Usage,
        steps: u32,
        error: Option<&str>,
    ) {
        if let Some(message) = error {
            let event = EventKind::Error {
                message: message.to_string(),
                task_id: Some(task_id.to_string()),
            };
            if let Err(e) = session.events.publish(event).await {
                tracing::error!(session = %session.id, error = %e, "could not record an error event");
            }
        }
        let done = EventKind::TaskCompleted {
            session_id: session.id.clone(),
            task: task.to_string(),
            task_id: task_id.to_string(),
            status,
            usage,
            steps,
        };
        if let Err(e) = session.events.publish(done).await {
            tracing::error!(session = %session.id, error = %e, "could not record task_completed");
        }
        let word = serde_json::to_value(status)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        self.metrics.task_finished(&word);
        if let Err(e) = self
            .store
            .set_task_status(&session.id, task_id, &word)
            .await
        {
            tracing::error!(session = %session.id, error = %e, "could not record a task's status");
        }
    }

    /// The loop: ask the model, run the tools it calls, feed back the
    /// results, until it answers without tool calls or runs out of steps.
    async fn work_on(
        &self,
        session: &Arc<Session>,
        task: &QueuedTask,
        model: &ModelClient,
        token: &CancellationToken,
        reason: &AtomicU8,
    ) -> (TaskOutcome, Usage, u32, Option<String>) {
        let settings = &self.config.agent;
        let stopped = || match reason.load(Ordering::SeqCst) {
            STOP_INTERRUPTED => (
                TaskOutcome::Interrupted,
                Some("The server is shutting down; the task was stopped."),
            ),
            _ => (TaskOutcome::Cancelled, Some("The task was cancelled.")),
        };
        let mut usage = Usage::default();
        let mut conversation = match Conversation::load(self.store.clone(), &session.id).await {
            Ok(c) => c,
            Err(e) => {
                return (
                    TaskOutcome::Failed,
                    usage,
                    0,
                    Some(format!("could not load the conversation: {e}")),
                );
            }
        };
        let user = ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
            content: ChatCompletionRequestUserMessageContent::Text(task.text.clone()),
            name: None,
        });
        if let Err(e) = conversation.push(user).await {
            return (
                TaskOutcome::Failed,
                usage,
                0,
                Some(format!("could not record the task: {e}")),
            );
        }
        for step in 1..=settings.max_steps {
            if let Err(e) = conversation.trim(settings.context_chars).await {
                tracing::warn!(session = %session.id, error = %e, "could not trim the conversation");
            }
            let mut messages = vec![ChatCompletionRequestMessage::System(
                ChatCompletionRequestSystemMessage {
                    content: ChatCompletionRequestSystemMessageContent::Text(
                        settings.system_prompt.clone(),
                    ),
                    name: None,
                },
            )];
            messages.extend(conversation.messages().cloned());
            let tools: Vec<ChatCompletionTools> = self
                .plugins
                .enabled_tools()
                .into_iter()
                .map(|t| {
                    ChatCompletionTools::Function(ChatCompletionTool {
                        function: FunctionObject {
                            name: t.name,
                            description: Some(t.description),
                            parameters: Some(t.parameters),
                            strict: None,
                        },
                    })
                })
                .collect();
            let turn = tokio::select! {
                _ = token.cancelled() => {
                    let (outcome, msg) = stopped();
                    return (outcome, usage, step - 1, msg.map(String::from));
                }
                turn = model.turn(messages, tools, &session.events) => turn,
            };
            let turn = match turn {
                Ok(turn) => turn,
                Err(ModelError::Events(e)) => return (TaskOutcome::Failed, usage, step, Some(e)),
                Err(e) => return (TaskOutcome::Failed, usage, step, Some(e.to_string())),
            };
            self.metrics
                .tokens(turn.usage.prompt_tokens, turn.usage.completion_tokens);
            usage.prompt_tokens += turn.usage.prompt_tokens;
            usage.completion_tokens += turn.usage.completion_tokens;
            usage.total_tokens += turn.usage.total_tokens;
            let assistant =
                ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage {
                    content: (!turn.text.is_empty()).then(|| {
                        ChatCompletionRequestAssistantMessageContent::Text(turn.text.clone())
                    }),
                    tool_calls: (!turn.tool_calls.is_empty()).then(|| {
                        turn.tool_calls
                            .iter()
                            .map(|c| {
                                ChatCompletionMessageToolCalls::Function(
                                    ChatCompletionMessageToolCall {
                                        id: c.id.clone(),
                                        function: FunctionCall {
                                            name: c.name.clone(),
                                            arguments: c.arguments.clone(),
                                        },
                                    },
                                )
                            })
                            .collect()
                    }),
                    ..Default::default()
                });
            if let Err(e) = conversation.push(assistant).await {
                return (
                    TaskOutcome::Failed,
                    usage,
                    step,
                    Some(format!("could not record the model's answer: {e}")),
                );
            }
            if turn.tool_calls.is_empty() {
                return (TaskOutcome::Completed, usage, step, None);
            }
            for call in &turn.tool_calls {
                // Every call gets a result, even when stopped, so the stored
                // conversation stays valid for the next task.
                let content = if token.is_cancelled() {
                    "Not run: the task was stopped.".to_string()
                } else {
                    match self
                        .call_tool(session, call, token, settings.event_result_chars)
                        .await
                    {
                        Ok(content) => content,
                        Err(e) => return (TaskOutcome::Failed, usage, step, Some(e)),
                    }
                };
                let result = ChatCompletionRequestMessage::Tool(ChatCompletionRequestToolMessage {
                    content: ChatCompletionRequestToolMessageContent::Text(clip(
                        &content,
                        settings.tool_result_chars,
                    )),
                    tool_call_id: call.id.clone(),
                });
                if let Err(e) = conversation.push(result).await {
                    return (
                        TaskOutcome::Failed,
                        usage,
                        step,
                        Some(format!("could not record a tool result: {e}")),
                    );
                }
            }
            if token.is_cancelled() {
                let (outcome, msg) = stopped();
                return (outcome, usage, step, msg.map(String::from));
            }
        }
        let message = format!(
            "Stopped after {} model turns (agent.max_steps) without the model finishing the task.",
            settings.max_steps
        );
        (
            TaskOutcome::MaxSteps,
            usage,
            settings.max_steps,
            Some(message),
        )
    }

    /// Runs one tool call with `tool_call` / `tool_complete` events around
    /// it. Returns the text for the model (a failure is text too, so the
    /// model can react); `Err` only when events cannot be recorded.
    async fn call_tool(
        &self,
        session: &Arc<Session>,
        call: &model::ToolCallRequest,
        token: &CancellationToken,
        event_chars: usize,
    ) -> Result<String, String> {
        let arguments = serde_json::from_str::<serde_json::Value>(&call.arguments)
            .unwrap_or_else(|_| serde_json::Value::String(call.arguments.clone()));
        session
            .events
            .publish(EventKind::ToolCall {
                tool_name: call.name.clone(),
                arguments,
                tool_call_id: call.id.clone(),
            })
            .await
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let outcome = tokio::select! {
            _ = token.cancelled() => Err(("cancelled", "the task was stopped while this tool ran".to_string())),
            r = self.plugins.invoke(session.caps.clone(), &call.name, &call.arguments) => r.map_err(|e| (e.code(), e.to_string())),
        };
        let outcome_word = match &outcome {
            Ok(_) => "ok".to_string(),
            Err((code, _)) => code.to_string(),
        };
        // Tool names come from the model: one it made up is counted as
        // `unknown`, so metric labels stay bounded by the loaded tools.
        let label = if self.plugins.has_tool(&call.name) {
            call.name.as_str()
        } else {
            crate::metrics::UNKNOWN_TOOL
        };
        self.metrics
            .tool_called(label, &outcome_word, started.elapsed());
        let (content, is_error) = match outcome {
            Ok(text) => (text, false),
            Err((_, e)) => (format!("Error: {e}"), true),
        };
        session
            .events
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
}

/// At most `max` characters of `text`, with a note of what was cut.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((i, _)) => format!(
            "{}\n[... {} more characters cut]",
            &text[..i],
            text[i..].chars().count()
        ),
    }
}
