//! The agent: works on a session's tasks with a model and the session's
//! tools, one task at a time per session, publishing every step to the
//! session's event log.
//!
//! A task posted while another runs waits in the session's queue (bounded by
//! `agent.max_queued_tasks`). Each task opens with `task_started` and ends
//! with exactly one `task_completed` whose `status` says how it ended
//! (`completed`, `failed`, `cancelled`, `interrupted`, `max_steps`); a
//! failure is described by an `error` event before it.
//!
//! - this module: the queues, the workers that drain them, and how a task's
//!   end is published and recorded;
//! - `run.rs`: one task's model/tool loop;
//! - `model.rs`: the [`Model`] seam and the OpenAI-compatible client;
//! - `tools.rs`: the [`ToolRunner`] seam and one tool call with its events;
//! - `messages.rs`, `conversation.rs`: the conversation, in the project's
//!   own versioned types, persisted message by message.

mod checkpoints;
mod conversation;
mod messages;
mod model;
mod run;
#[cfg(test)]
mod tests;
mod tools;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub use crate::events::ToolSource;
pub use crate::plugins::ToolInfo;
pub use messages::{Message, ToolCall};
pub use model::{Model, ModelClient, ModelError, NOT_CONFIGURED, Turn, TurnRequest};
pub use run::{StopReason, TaskEnd};
pub use tools::{ToolOutcome, ToolRunner, Toolbox};

pub use crate::capabilities::{CheckpointDiff, CheckpointExport, FileDiff, FileStatus};
use crate::config::Config;
pub use crate::events::RewindScope;
use crate::events::{EventKind, Fence, TaskOutcome, Usage};
use crate::mcp::McpClients;
pub use crate::mcp::McpServerStatus;
use crate::metrics::Metrics;
use crate::plugins::PluginRuntime;
use crate::principal::{Principal, Principals, Quota, QuotaExceeded};
use crate::session::{Session, SessionManager};
pub use crate::store::CheckpointRecord;
use crate::store::{Lease, Store, TaskStatus};
pub use crate::store::{UsageGroup, UsageSum};
pub use checkpoints::{Rewound, skipped_files};
use run::{StopSignal, TaskRun};

/// How long a worker may take to record the end of a task it was told to
/// stop, before it is aborted.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("Session {session} already has {max} tasks waiting; wait for one to finish")]
    QueueFull { session: String, max: usize },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("no tool named {0:?} is loaded")]
    UnknownTool(String),
    #[error("tool {0:?} is disabled by the server's configuration")]
    ToolDisabled(String),
    #[error("{0}")]
    Events(String),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Capability(#[from] crate::capabilities::CapabilityError),
    #[error("Session {0} is running a task; cancel it or wait for it to end")]
    TaskRunning(String),
    #[error("no checkpoint {0} in this session")]
    UnknownCheckpoint(String),
    #[error("there is no earlier checkpoint to compare with")]
    NoEarlierCheckpoint,
    #[error("checkpoints are turned off on this server (workspace.checkpoints)")]
    CheckpointsOff,
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
}

/// Where a submitted task stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub task_id: String,
    /// Tasks ahead of it: 0 means it starts now.
    pub position: usize,
}

struct QueuedTask {
    id: String,
    text: String,
    /// It was running when the server stopped with a tool call waiting for
    /// approval: it goes on from there.
    resumed: bool,
}

struct Running {
    id: String,
    stop: StopSignal,
}

#[derive(Default)]
struct SessionTasks {
    /// The session's owner, once a task was submitted (for the limit of
    /// tasks running at once).
    owner: Option<String>,
    queue: VecDeque<QueuedTask>,
    /// Places taken by submissions still being stored: counted against
    /// `agent.max_queued_tasks` with the queue, so concurrent submits never
    /// exceed it.
    reserved: usize,
    /// The ids of those submissions: stored already perhaps, but joining
    /// the queue through [`Agent::submit`], not [`Agent::pick_up`].
    incoming: std::collections::HashSet<String>,
    running: Option<Running>,
    /// The task draining the queue; `None` once it has decided to stop
    /// (under the lock, so a submit never misses a worker that is exiting).
    worker: Option<tokio::task::JoinHandle<()>>,
    /// Set by [`Agent::hold`]: no task starts until [`Agent::release`].
    held: bool,
}

/// Runs tasks for every session.
pub struct Agent {
    config: Arc<Config>,
    store: Store,
    tools: Arc<dyn ToolRunner>,
    /// The MCP servers' side of the tools, for their statuses.
    mcp: Arc<McpClients>,
    metrics: Arc<Metrics>,
    model: Result<Arc<dyn Model>, String>,
    /// Who owns sessions, and their limits.
    principals: Arc<Principals>,
    tasks: Mutex<HashMap<String, SessionTasks>>,
    shutting_down: CancellationToken,
    /// Told of each checkpoint taken (it may write the checkpoint's fork
    /// layer ahead), once [`Agent::tell_checkpoints_to`] named it.
    checkpoints_to: std::sync::OnceLock<std::sync::Weak<SessionManager>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("model", &self.model.as_ref().map(|_| "configured"))
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent using the configured model endpoint and the plugins' tools.
    pub fn new(
        config: Arc<Config>,
        store: Store,
        plugins: Arc<PluginRuntime>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let model = ModelClient::from_config(&config.model, &config.agent)
            .map(|m| Arc::new(m) as Arc<dyn Model>);
        if let Err(why) = &model {
            tracing::warn!("{why}");
        }
        let mcp = Arc::new(McpClients::new(config.clone()));
        let tools = Arc::new(Toolbox::new(plugins, mcp.clone(), config.clone()));
        Arc::new(Self::build(config, store, model, tools, mcp, metrics))
    }

    /// An agent with the given model (or why there is none) and tools.
    pub fn with_parts(
        config: Arc<Config>,
        store: Store,
        model: Result<Arc<dyn Model>, String>,
        tools: Arc<dyn ToolRunner>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let mcp = Arc::new(McpClients::new(config.clone()));
        Arc::new(Self::build(config, store, model, tools, mcp, metrics))
    }

    fn build(
        config: Arc<Config>,
        store: Store,
        model: Result<Arc<dyn Model>, String>,
        tools: Arc<dyn ToolRunner>,
        mcp: Arc<McpClients>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            mcp,
            principals: Arc::new(Principals::new(&config.auth)),
            config,
            store,
            tools,
            metrics,
            model,
            tasks: Mutex::new(HashMap::new()),
            checkpoints_to: std::sync::OnceLock::new(),
            shutting_down: CancellationToken::new(),
        }
    }

    /// Who owns sessions, and their limits.
    pub fn principals(&self) -> &Arc<Principals> {
        &self.principals
    }

    /// The usage ledger between `from` (included) and `to` (excluded), of
    /// one principal or everyone's, summed by `group` and model.
    pub async fn usage(
        &self,
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
        principal: Option<&str>,
        group: UsageGroup,
    ) -> Result<Vec<UsageSum>, AgentError> {
        Ok(self.store.usage(from, to, principal, group).await?)
    }

    /// Queues a task for a session; it starts at once when nothing else runs
    /// there. Refused when its owner has used its tokens of the day, or
    /// would run more tasks at once than it may (a task queued behind
    /// another in the same session never runs beside it, so it is let in).
    pub async fn submit(
        self: &Arc<Self>,
        session: &Arc<Session>,
        text: String,
    ) -> Result<Submitted, AgentError> {
        if self.shutting_down.is_cancelled() {
            return Err(AgentError::ShuttingDown);
        }
        let owner = self.principals.named(&session.owner);
        if let Some(limit) = owner.limits.tokens_per_day {
            let used = self
                .store
                .principal_tokens_since(&owner.name, start_of_today())
                .await?;
            Quota::TokensPerDay.check(&owner.name, limit, used)?;
        }
        let max = self.config.agent.max_queued_tasks;
        let task_id = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        if !session.held_by(self.store.server()) {
            return self.submit_elsewhere(session, &owner, task_id, &text).await;
        }
        // The owner's sessions busy on other servers count too (this one
        // knows its own, reservations included).
        let elsewhere = match owner.limits.max_running_tasks {
            Some(_) => {
                self.store
                    .owner_busy_sessions(&owner.name, &session.id, true)
                    .await?
            }
            None => 0,
        };
        // Check and take a place in one step; the task is stored before it
        // joins the queue, and gives the place back if that fails.
        {
            let mut tasks = self.tasks.lock().unwrap();
            let busy =
                |t: &SessionTasks| t.running.is_some() || !t.queue.is_empty() || t.reserved > 0;
            let state = tasks.entry(session.id.clone()).or_default();
            if state.queue.len() + state.reserved >= max {
                return Err(AgentError::QueueFull {
                    session: session.id.clone(),
                    max,
                });
            }
            if let Some(limit) = owner.limits.max_running_tasks
                && !busy(state)
            {
                let used = elsewhere
                    + tasks
                        .values()
                        .filter(|t| t.owner.as_deref() == Some(session.owner.as_str()) && busy(t))
                        .count() as u64;
                Quota::RunningTasks.check(&owner.name, limit, used)?;
            }
            let state = tasks.get_mut(&session.id).expect("made above");
            state.owner = Some(session.owner.clone());
            state.reserved += 1;
            state.incoming.insert(task_id.clone());
        }
        let stored = self.store.insert_task(&session.id, &task_id, &text).await;
        let mut tasks = self.tasks.lock().unwrap();
        let state = tasks.entry(session.id.clone()).or_default();
        state.reserved = state.reserved.saturating_sub(1);
        state.incoming.remove(&task_id);
        stored?;
        let position = state.queue.len() + usize::from(state.running.is_some());
        state.queue.push_back(QueuedTask {
            id: task_id.clone(),
            text,
            resumed: false,
        });
        self.ensure_worker(state, session);
        Ok(Submitted { task_id, position })
    }

    /// Queues a task for a session another server holds: stored for it,
    /// and handed over (it runs there, after those queued before it).
    async fn submit_elsewhere(
        &self,
        session: &Arc<Session>,
        owner: &Principal,
        task_id: String,
        text: &str,
    ) -> Result<Submitted, AgentError> {
        let ahead = self.store.session_unfinished_tasks(&session.id).await?;
        // Behind another in its session, it never runs beside it.
        if let Some(limit) = owner.limits.max_running_tasks
            && ahead.is_empty()
        {
            let used = self
                .store
                .owner_busy_sessions(&owner.name, &session.id, false)
                .await?;
            Quota::RunningTasks.check(&owner.name, limit, used)?;
        }
        let max = self.config.agent.max_queued_tasks;
        let queued = ahead
            .iter()
            .filter(|t| t.status == TaskStatus::Queued)
            .count();
        if queued >= max {
            return Err(AgentError::QueueFull {
                session: session.id.clone(),
                max,
            });
        }
        self.store.insert_task(&session.id, &task_id, text).await?;
        self.store
            .hand_over(&crate::store::Work::Queued(session.id.clone()))
            .await?;
        tracing::info!(session = %session.id, task = %task_id, server = ?session.server(), "task queued for the server holding the session");
        Ok(Submitted {
            task_id,
            position: ahead.len(),
        })
    }

    /// Queues the tasks stored for `session` that this server has not
    /// queued yet (handed over by other servers), oldest first, when it
    /// holds the session.
    pub async fn pick_up(self: &Arc<Self>, session: &Arc<Session>) -> Result<usize, AgentError> {
        if !session.held_by(self.store.server()) || self.shutting_down.is_cancelled() {
            return Ok(0);
        }
        let stored = self.store.session_unfinished_tasks(&session.id).await?;
        let mut tasks = self.tasks.lock().unwrap();
        let state = tasks.entry(session.id.clone()).or_default();
        let mut picked = 0;
        for t in stored {
            let known = state.incoming.contains(&t.task_id)
                || state.running.as_ref().is_some_and(|r| r.id == t.task_id)
                || state.queue.iter().any(|q| q.id == t.task_id);
            if t.status == TaskStatus::Queued && !known {
                state.queue.push_back(QueuedTask {
                    id: t.task_id,
                    text: t.task,
                    resumed: false,
                });
                picked += 1;
            }
        }
        if picked > 0 {
            state.owner = Some(session.owner.clone());
            tracing::info!(session = %session.id, tasks = picked, "queued tasks handed over by another server");
            self.ensure_worker(state, session);
        }
        Ok(picked)
    }

    /// Runs here the tasks of a session this server took over from one
    /// that went silent: the task that was running there ended with it
    /// (`interrupted`, unless it waits for a person's approval: it goes
    /// on), and the queued ones run here.
    pub async fn take_over(
        self: &Arc<Self>,
        session: &Arc<Session>,
        why: &str,
    ) -> Result<(), AgentError> {
        for t in self.store.session_unfinished_tasks(&session.id).await? {
            if t.status != TaskStatus::Running {
                continue;
            }
            if self.resume_if_waiting(session, &t).await? {
                continue;
            }
            let end = TaskEnd::new(
                TaskOutcome::Interrupted,
                Usage::default(),
                0,
                Some(why.into()),
            );
            self.finish(session, &t.task_id, &t.task, &end, None).await;
        }
        self.pick_up(session).await?;
        Ok(())
    }

    /// Puts a running task that waits for a person's approval back at the
    /// head of its session's queue, to go on from there; false when it
    /// does not wait.
    async fn resume_if_waiting(
        self: &Arc<Self>,
        session: &Arc<Session>,
        t: &crate::store::UnfinishedTask,
    ) -> Result<bool, AgentError> {
        let waits = session
            .approvals
            .pending()
            .await?
            .iter()
            .any(|a| a.task_id.as_deref() == Some(t.task_id.as_str()));
        if !waits {
            return Ok(false);
        }
        tracing::info!(session = %session.id, task = %t.task_id, "resuming a task that waits for approval");
        let mut tasks = self.tasks.lock().unwrap();
        let state = tasks.entry(session.id.clone()).or_default();
        state.owner = Some(session.owner.clone());
        state.queue.push_front(QueuedTask {
            id: t.task_id.clone(),
            text: t.task.clone(),
            resumed: true,
        });
        self.ensure_worker(state, session);
        Ok(true)
    }

    /// Starts a worker for a session's queue unless one runs or it is held.
    fn ensure_worker(self: &Arc<Self>, state: &mut SessionTasks, session: &Arc<Session>) {
        if state.worker.is_none() && !state.held && !state.queue.is_empty() {
            let agent = self.clone();
            let session = session.clone();
            state.worker = Some(tokio::spawn(async move { agent.work(session).await }));
        }
    }

    /// The tools a client of `session` may call (and its model is
    /// offered).
    pub async fn enabled_tools(&self, session: &Session) -> Vec<ToolInfo> {
        self.tools.enabled_tools(session).await
    }

    /// The configured MCP servers: their tools at their latest listing,
    /// and their latest failures.
    pub fn mcp_servers(&self) -> Vec<McpServerStatus> {
        self.mcp.statuses()
    }

    /// The MCP servers' tools at their latest listing.
    pub fn mcp_tools(&self) -> Vec<ToolInfo> {
        self.mcp.known_tools()
    }

    /// Runs tool `name` with JSON `arguments` for a client, outside any
    /// task: the same limits and capabilities as the model's calls, the
    /// same `tool_call` / `tool_complete` events, marked with `source`, and
    /// a person's approval where the source asks for it
    /// ([`ToolSource::asks_approval`]). The result is cut to
    /// `agent.tool_result_chars`, as the model gets it. A call waiting for
    /// approval ends (not run) when the session is deleted or the server
    /// stops.
    pub async fn call_tool(
        &self,
        session: &Arc<Session>,
        name: &str,
        arguments: &str,
        source: ToolSource,
    ) -> Result<ToolOutcome, AgentError> {
        match self.tools.tool(name) {
            None => return Err(AgentError::UnknownTool(name.into())),
            Some(t) if !t.enabled => return Err(AgentError::ToolDisabled(name.into())),
            Some(_) => {}
        }
        let stop = StopSignal::new(session.deleted.child_token());
        // Stopped with the server too; the watch ends with the call.
        let ended = stop.token().clone().drop_guard();
        let watch = {
            let (token, stopping) = (stop.token().clone(), self.shutting_down.clone());
            tokio::spawn(async move {
                if stopping
                    .run_until_cancelled(token.cancelled())
                    .await
                    .is_none()
                {
                    token.cancel();
                }
            })
        };
        let calls = tools::CallContext {
            tools: self.tools.as_ref(),
            metrics: &self.metrics,
            tool_config: &self.config.tools,
            session,
            task_id: "",
            stop: &stop,
            event_chars: self.config.agent.event_result_chars,
            source: Some(source),
        };
        let call = ToolCall {
            id: format!(
                "{}_{:012x}",
                source.as_str(),
                rand::random::<u64>() & 0xffff_ffff_ffff
            ),
            name: name.into(),
            arguments: arguments.into(),
        };
        let called = calls.call_tool(&call, false).await;
        drop(ended);
        let _ = watch.await;
        match called {
            Ok(tools::Called::Done(mut outcome)) => {
                outcome.result = tools::clip(&outcome.result, self.config.agent.tool_result_chars);
                Ok(outcome)
            }
            Ok(tools::Called::Suspended) => Err(AgentError::ShuttingDown),
            Err(e) => Err(AgentError::Events(e)),
        }
    }

    /// Stops the session's running task, here or (handed over) on the
    /// server holding the session. Returns false when none runs.
    pub async fn cancel_anywhere(&self, session: &Session) -> Result<bool, AgentError> {
        if session.held_by(self.store.server()) {
            return Ok(self.cancel(&session.id));
        }
        let running = self
            .store
            .session_unfinished_tasks(&session.id)
            .await?
            .iter()
            .any(|t| t.status == TaskStatus::Running);
        if running {
            self.store
                .hand_over(&crate::store::Work::Cancel(session.id.clone()))
                .await?;
        }
        Ok(running)
    }

    /// Stops the session's running task on this server. Returns false when
    /// none runs.
    pub fn cancel(&self, session_id: &str) -> bool {
        let tasks = self.tasks.lock().unwrap();
        match tasks.get(session_id).and_then(|t| t.running.as_ref()) {
            Some(running) => {
                tracing::info!(session = session_id, task = %running.id, "cancelling the running task");
                running.stop.stop(StopReason::Cancelled);
                true
            }
            None => false,
        }
    }

    /// Holds a session's tasks: the running one is cancelled and its end
    /// recorded (waited for), queued ones wait, and nothing starts until
    /// [`Self::release`] or [`Self::forget`].
    pub async fn hold(&self, session_id: &str) {
        let worker = {
            let mut tasks = self.tasks.lock().unwrap();
            let state = tasks.entry(session_id.to_string()).or_default();
            state.held = true;
            if let Some(running) = &state.running {
                running.stop.stop(StopReason::Cancelled);
            }
            state.worker.take()
        };
        if let Some(mut worker) = worker
            && tokio::time::timeout(STOP_GRACE, &mut worker).await.is_err()
        {
            tracing::warn!(
                session = session_id,
                "a stopped task did not finish in time; aborted"
            );
            worker.abort();
        }
    }

    /// Holds an idle session (nothing running or queued) so that no task
    /// starts until [`Agent::release`]; refused when it is not idle.
    pub(crate) fn hold_idle(&self, session_id: &str) -> Result<(), AgentError> {
        let mut tasks = self.tasks.lock().unwrap();
        let state = tasks.entry(session_id.to_string()).or_default();
        if state.held || state.running.is_some() || !state.queue.is_empty() || state.reserved > 0 {
            return Err(AgentError::TaskRunning(session_id.to_string()));
        }
        state.held = true;
        Ok(())
    }

    /// [`Self::hold_idle`], also refused when the session is held by
    /// another server that has a task of it queued or running.
    pub(crate) async fn hold_idle_anywhere(
        self: &Arc<Self>,
        session: &Arc<Session>,
    ) -> Result<(), AgentError> {
        self.hold_idle(&session.id)?;
        if session.held_by(self.store.server()) {
            return Ok(());
        }
        let busy = self.store.session_unfinished_tasks(&session.id).await;
        if !matches!(&busy, Ok(tasks) if tasks.is_empty()) {
            self.release(session);
            busy?;
            return Err(AgentError::TaskRunning(session.id.clone()));
        }
        Ok(())
    }

    /// Lets a held session's queued tasks run again.
    pub fn release(self: &Arc<Self>, session: &Arc<Session>) {
        let mut tasks = self.tasks.lock().unwrap();
        if let Some(state) = tasks.get_mut(&session.id) {
            state.held = false;
            self.ensure_worker(state, session);
        }
    }

    /// Forgets a deleted session: its queue is dropped and whatever still
    /// runs is stopped.
    pub fn forget(&self, session_id: &str) {
        self.mcp.forget(session_id);
        let state = self.tasks.lock().unwrap().remove(session_id);
        if let Some(state) = state {
            if let Some(running) = state.running {
                running.stop.stop(StopReason::Cancelled);
            }
            if let Some(worker) = state.worker {
                worker.abort();
            }
        }
    }

    /// Whether a session has tasks here, running or queued.
    pub fn has_tasks(&self, session_id: &str) -> bool {
        self.tasks
            .lock()
            .unwrap()
            .get(session_id)
            .is_some_and(|t| t.running.is_some() || !t.queue.is_empty() || t.worker.is_some())
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
                    running.stop.stop(StopReason::Interrupted);
                }
            }
            tasks.values_mut().filter_map(|s| s.worker.take()).collect()
        };
        for worker in workers {
            let _ = tokio::time::timeout(STOP_GRACE, worker).await;
        }
    }

    /// After a restart: tasks the store says were queued or running were
    /// interrupted by the stop; say so in their sessions' event logs.
    pub async fn recover(self: &Arc<Self>, sessions: &SessionManager) -> Result<(), AgentError> {
        for t in self.store.unfinished_tasks().await? {
            if let Ok(session) = sessions.get(&t.session_id) {
                // A task that waits for a person's approval goes on.
                if t.status == TaskStatus::Running && self.resume_if_waiting(&session, &t).await? {
                    continue;
                }
                let message = match t.status {
                    TaskStatus::Running => {
                        "The server stopped while this task was running; it did not finish."
                    }
                    _ => "The server stopped before this queued task could start.",
                };
                let end = TaskEnd::new(
                    TaskOutcome::Interrupted,
                    Usage::default(),
                    0,
                    Some(message.into()),
                );
                self.finish(&session, &t.task_id, &t.task, &end, None).await;
            } else {
                self.store
                    .set_task_status(&t.session_id, &t.task_id, TaskStatus::Interrupted, None)
                    .await?;
            }
        }
        Ok(())
    }

    /// Drains a session's queue, one task at a time.
    async fn work(self: Arc<Self>, session: Arc<Session>) {
        loop {
            let (task, stop) = {
                let mut tasks = self.tasks.lock().unwrap();
                let Some(state) = tasks.get_mut(&session.id) else {
                    return;
                };
                let next = if state.held {
                    None
                } else {
                    state.queue.pop_front()
                };
                let Some(task) = next else {
                    state.worker = None;
                    return;
                };
                let stop = StopSignal::new(self.shutting_down.child_token());
                state.running = Some(Running {
                    id: task.id.clone(),
                    stop: stop.clone(),
                });
                (task, stop)
            };
            if self.shutting_down.is_cancelled() {
                stop.stop(StopReason::Interrupted);
            }
            let started = Instant::now();
            let Some(lease) = self.start(&session, &task).await else {
                if let Some(state) = self.tasks.lock().unwrap().get_mut(&session.id) {
                    state.running = None;
                }
                continue;
            };
            // What the task writes is refused once another server took the
            // session over; then it stops here and records nothing more.
            let lost = CancellationToken::new();
            let fence = Fence::new(lease, lost.clone());
            let _fenced = session.events.fence(fence.clone());
            let end = {
                let run = self.run(&session, &task, &stop, &fence);
                tokio::pin!(run);
                tokio::select! {
                    end = &mut run => end,
                    () = lost.cancelled() => {
                        stop.stop(StopReason::Lost);
                        run.await
                    }
                }
            };
            // Also when the run ended on the refusal itself.
            if lost.is_cancelled() {
                tracing::warn!(session = %session.id, task = %task.id, "another server took the session over; the task stopped here");
                self.metrics.task_finished("lost");
                if let Some(state) = self.tasks.lock().unwrap().get_mut(&session.id) {
                    state.running = None;
                }
                continue;
            }
            let Some(end) = end else {
                continue;
            };
            if end.suspended {
                tracing::info!(session = %session.id, task = %task.id, "task waits for approval; it resumes at the next start");
                if let Some(state) = self.tasks.lock().unwrap().get_mut(&session.id) {
                    state.running = None;
                }
                continue;
            }
            // Not running any more before anyone hears it ended, so a cancel
            // sent on `task_completed` finds nothing to cancel.
            if let Some(state) = self.tasks.lock().unwrap().get_mut(&session.id) {
                state.running = None;
            }
            self.finish(&session, &task.id, &task.text, &end, Some(lease))
                .await;
            tracing::info!(
                session = %session.id, task = %task.id, outcome = ?end.outcome, steps = end.steps,
                tokens = end.usage.total_tokens, ms = started.elapsed().as_millis() as u64, "task finished"
            );
        }
    }

    /// Records that this server starts a task, and returns the lease it
    /// runs it under; `None` when it cannot: another server holds the
    /// session (and runs its tasks), or the database did not answer (the
    /// task stays queued there; a later heartbeat queues it again).
    async fn start(&self, session: &Session, task: &QueuedTask) -> Option<Lease> {
        match self.store.start_task(&session.id, &task.id).await {
            Ok(Some(lease)) => Some(lease),
            Ok(None) => {
                tracing::warn!(session = %session.id, task = %task.id, "another server holds the session; the task is left to it");
                None
            }
            Err(e) => {
                tracing::error!(session = %session.id, task = %task.id, error = %e, "could not record a task as running; it stays queued");
                None
            }
        }
    }

    /// Runs one task up to its end under `fence`; the caller publishes how
    /// it ended. `None` when it could not even be started.
    async fn run(
        &self,
        session: &Arc<Session>,
        task: &QueuedTask,
        stop: &StopSignal,
        fence: &Fence,
    ) -> Option<TaskEnd> {
        if stop.reason() == Some(StopReason::Interrupted) {
            let msg = "The server is shutting down; this queued task was not started.";
            return Some(TaskEnd::new(
                TaskOutcome::Interrupted,
                Usage::default(),
                0,
                Some(msg.into()),
            ));
        }
        if task.resumed {
            tracing::info!(session = %session.id, task = %task.id, "task resumed, waiting for approval");
        } else {
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
        }
        Some(match &self.model {
            Err(why) => TaskEnd::new(TaskOutcome::Failed, Usage::default(), 0, Some(why.clone())),
            Ok(model) => {
                let principal = self.principals.named(&session.owner);
                let run = TaskRun {
                    principal: &principal,
                    model_name: &self.config.model.model,
                    settings: &self.config.agent,
                    tool_config: &self.config.tools,
                    task_id: &task.id,
                    store: &self.store,
                    model: model.as_ref(),
                    tools: self.tools.as_ref(),
                    metrics: &self.metrics,
                    session,
                    stop,
                    fence,
                };
                run.run(&task.text, task.resumed).await
            }
        })
    }

    /// Publishes a task's `error` (if any) and its `task_completed`, and
    /// records its final status (under the `lease` it ran under, when it
    /// ran here).
    async fn finish(
        &self,
        session: &Session,
        task_id: &str,
        task: &str,
        end: &TaskEnd,
        lease: Option<Lease>,
    ) {
        // What the task left, recorded before anyone hears it ended (not
        // when the server is stopping: it would hold the shutdown up).
        if end.outcome != TaskOutcome::Interrupted {
            self.checkpoint_or_say(session, Some((task_id, task))).await;
        }
        if let Some(message) = &end.error {
            let event = EventKind::Error {
                message: message.clone(),
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
            status: end.outcome,
            usage: end.usage,
            steps: end.steps,
        };
        if let Err(e) = session.events.publish(done).await {
            tracing::error!(session = %session.id, error = %e, "could not record task_completed");
        }
        let status = task_status(end.outcome);
        self.metrics.task_finished(status.as_str());
        if let Err(e) = self
            .store
            .set_task_status(&session.id, task_id, status, lease)
            .await
        {
            tracing::error!(session = %session.id, error = %e, "could not record a task's status");
        }
    }
}

/// Midnight, UTC, today: where a day's tokens are counted from.
pub(super) fn start_of_today() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
}

/// The stored status of a task that ended so.
fn task_status(outcome: TaskOutcome) -> TaskStatus {
    match outcome {
        TaskOutcome::Completed => TaskStatus::Completed,
        TaskOutcome::Failed => TaskStatus::Failed,
        TaskOutcome::Cancelled => TaskStatus::Cancelled,
        TaskOutcome::Interrupted => TaskStatus::Interrupted,
        TaskOutcome::MaxSteps => TaskStatus::MaxSteps,
        TaskOutcome::BudgetExceeded => TaskStatus::BudgetExceeded,
    }
}
