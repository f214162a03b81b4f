//! The sessions service: what clients ask of sessions and tasks, each as
//! one sequence that owns its failure paths. REST handlers translate HTTP to
//! these calls and back; they never orchestrate the layers below.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::agent::{
    Agent, AgentError, CheckpointDiff, CheckpointRecord, RewindScope, Rewound, Submitted, ToolInfo,
    ToolOutcome, ToolSource,
};
use crate::config::Config;
use crate::principal::{Principal, Quota, QuotaExceeded};
use crate::session::{
    ApprovalMode, NewSession, Session, SessionError, SessionManager, SessionNetwork,
};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("No task is running in session {0}")]
    NothingRunning(String),
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
    /// A budget larger than the operator permits.
    #[error("{0}")]
    BudgetNotPermitted(String),
}

/// What a client asks of a new session.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// A first task (blank means none).
    pub task: Option<String>,
    pub network: Option<SessionNetwork>,
    pub approval: ApprovalMode,
    /// Most model tokens its tasks may use (the operator's default when
    /// not given).
    pub budget_tokens: Option<u64>,
}

/// A session just created, and its first task if it was given one.
#[derive(Debug)]
pub struct Created {
    pub session: Arc<Session>,
    /// The session's latest event number before its first task started.
    pub last_event_seq: u64,
    pub first_task: Option<Submitted>,
}

/// Creates and deletes sessions, submits and cancels their tasks.
#[derive(Debug, Clone)]
pub struct SessionService {
    sessions: Arc<SessionManager>,
    agent: Arc<Agent>,
    config: Arc<Config>,
    /// Sessions being made, by owner: counted with those made against
    /// `max_sessions`, so concurrent creations never exceed it.
    creating: Arc<Mutex<HashMap<String, u64>>>,
}

/// A place taken against a principal's `max_sessions` while its session is
/// made; given back when dropped (the session then counts itself).
struct Making {
    creating: Arc<Mutex<HashMap<String, u64>>>,
    owner: String,
}

impl Drop for Making {
    fn drop(&mut self) {
        let mut creating = self.creating.lock().unwrap();
        if let Some(n) = creating.get_mut(&self.owner) {
            *n -= 1;
            if *n == 0 {
                creating.remove(&self.owner);
            }
        }
    }
}

impl SessionService {
    pub fn new(sessions: Arc<SessionManager>, agent: Arc<Agent>, config: Arc<Config>) -> Self {
        agent.tell_checkpoints_to(&sessions);
        Self {
            sessions,
            agent,
            config,
            creating: Arc::default(),
        }
    }

    /// A place for one more session of `principal`, or the quota it would
    /// break.
    fn make_room(&self, principal: &Principal) -> Result<Making, QuotaExceeded> {
        let mut creating = self.creating.lock().unwrap();
        let making = creating.get(&principal.name).copied().unwrap_or(0);
        if let Some(limit) = principal.limits.max_sessions {
            let used = self.sessions.count_owned(&principal.name) as u64 + making;
            Quota::Sessions.check(&principal.name, limit, used)?;
        }
        *creating.entry(principal.name.clone()).or_default() += 1;
        Ok(Making {
            creating: self.creating.clone(),
            owner: principal.name.clone(),
        })
    }

    /// The budget a new session gets: the one asked for, or the operator's
    /// default; refused past `agent.max_session_budget_tokens`.
    fn budget(&self, asked: Option<u64>) -> Result<Option<u64>, ServiceError> {
        let agent = &self.config.agent;
        let budget =
            asked.or((agent.session_budget_tokens > 0).then_some(agent.session_budget_tokens));
        match budget {
            Some(b)
                if agent.max_session_budget_tokens > 0 && b > agent.max_session_budget_tokens =>
            {
                Err(ServiceError::BudgetNotPermitted(format!(
                    "budget_tokens {b} is more than this server permits (agent.max_session_budget_tokens = {})",
                    agent.max_session_budget_tokens
                )))
            }
            other => Ok(other),
        }
    }

    /// Creates a session for `principal` and hands it its first task. If
    /// the task cannot be queued, the session is deleted again: the client
    /// is told of a failure, so nothing of it may remain.
    pub async fn create(
        &self,
        principal: &Principal,
        request: CreateRequest,
    ) -> Result<Created, ServiceError> {
        let CreateRequest {
            task,
            network,
            approval,
            budget_tokens,
        } = request;
        let task = task.filter(|t| !t.trim().is_empty());
        let budget_tokens = self.budget(budget_tokens)?;
        let _room = self.make_room(principal)?;
        let session = self
            .sessions
            .create(NewSession {
                task: task.clone(),
                network,
                approval,
                owner: principal.name.clone(),
                budget_tokens,
                follow_later: false,
                layer: None,
                layer_built: None,
            })
            .await?;
        // The empty workspace, the first state a rewind can go back to.
        self.agent.checkpoint_or_say(&session, None).await;
        // Taken before the task starts, so `?since=` this follows the whole
        // task from its `task_started`.
        let last_event_seq = session.events.last_seq();
        let first_task = match task {
            None => None,
            Some(task) => match self.agent.submit(&session, task).await {
                Ok(submitted) => Some(submitted),
                Err(e) => {
                    if let Err(undo) = self.delete(&session.id).await {
                        tracing::error!(session = %session.id, error = %undo, "could not remove a session whose first task failed to queue");
                    }
                    return Err(e.into());
                }
            },
        };
        Ok(Created {
            session,
            last_event_seq,
            first_task,
        })
    }

    /// Runs a tool for a client, outside any task (see [`Agent::call_tool`]).
    pub async fn call_tool(
        &self,
        session_id: &str,
        name: &str,
        arguments: &str,
        source: ToolSource,
    ) -> Result<ToolOutcome, ServiceError> {
        let session = self.sessions.get(session_id)?;
        Ok(self
            .agent
            .call_tool(&session, name, arguments, source)
            .await?)
    }

    /// The tools a session's clients may call: the enabled ones.
    pub async fn tools(&self, session_id: &str) -> Result<Vec<ToolInfo>, ServiceError> {
        let session = self.sessions.get(session_id)?;
        Ok(self.agent.enabled_tools(&session).await)
    }

    /// A session's checkpoints, oldest first.
    pub async fn checkpoints(
        &self,
        session_id: &str,
    ) -> Result<Vec<CheckpointRecord>, ServiceError> {
        let session = self.sessions.get(session_id)?;
        Ok(self.agent.checkpoints(&session).await?)
    }

    /// Records a session's workspace as a checkpoint now (see
    /// [`Agent::checkpoint_now`]).
    pub async fn checkpoint_now(&self, session_id: &str) -> Result<CheckpointRecord, ServiceError> {
        let session = self.sessions.get(session_id)?;
        Ok(self.agent.checkpoint_now(&session).await?)
    }

    /// The changes between two of a session's checkpoints (see
    /// [`Agent::diff`]).
    pub async fn diff(
        &self,
        session_id: &str,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<CheckpointDiff, ServiceError> {
        let session = self.sessions.get(session_id)?;
        Ok(self.agent.diff(&session, from, to).await?)
    }

    /// Takes a session back to one of its checkpoints (see
    /// [`Agent::rewind`]).
    pub async fn rewind(
        &self,
        session_id: &str,
        checkpoint_id: &str,
        scope: RewindScope,
    ) -> Result<Rewound, ServiceError> {
        let session = self.sessions.get(session_id)?;
        Ok(self.agent.rewind(&session, checkpoint_id, scope).await?)
    }

    /// Makes a new session for `principal` from one of a session's
    /// checkpoints (its latest by default): its own sandbox with the workspace as the checkpoint
    /// recorded it, the conversation up to it, and an event log that starts
    /// with `forked`. On failure nothing of the new session remains.
    pub async fn fork(
        &self,
        principal: &Principal,
        session_id: &str,
        checkpoint_id: Option<&str>,
    ) -> Result<Created, ServiceError> {
        let parent = self.sessions.get(session_id)?;
        let point = self.agent.fork_point(&parent, checkpoint_id).await?;
        let _room = self.make_room(principal)?;
        if self.config.workspace.fork_layers
            && let Some(engine) = self.sessions.layer_engine(&parent)
        {
            match self.fork_layered(principal, &parent, &point, engine).await {
                Ok(created) => return Ok(created),
                Err(e) => {
                    tracing::warn!(parent = %parent.id, error = %e, "could not fork over a layer; copying instead");
                }
            }
        }
        // The parent's side starts now, read ahead while the new
        // session's container is made.
        let export = self.agent.export_for_fork(&parent, &point).await?;
        let child = self
            .sessions
            .create(self.fork_of(principal, &parent, &point, None))
            .await?;
        self.fork_made(&parent, &child, &point, Some(export)).await
    }

    /// What the new session of a fork of `parent` at `point` is made with.
    fn fork_of(
        &self,
        principal: &Principal,
        parent: &Session,
        point: &CheckpointRecord,
        layer: Option<(usize, String)>,
    ) -> NewSession {
        NewSession {
            task: point.task.clone(),
            network: Some(parent.network.settings()),
            approval: parent.approvals.mode(),
            owner: principal.name.clone(),
            budget_tokens: parent.budget_tokens,
            follow_later: true,
            layer,
            layer_built: None,
        }
    }

    /// A fork whose workspace stands on the layer of `point` (built now,
    /// on `engine`, by the first fork of it). On failure nothing of the
    /// new session remains, nor a layer it built that nothing stands on.
    async fn fork_layered(
        &self,
        principal: &Principal,
        parent: &Session,
        point: &CheckpointRecord,
        engine: usize,
    ) -> Result<Created, ServiceError> {
        let slot = self.sessions.layer_slot(&parent.id, &point.id);
        let held = match slot.clone().read_owned().await {
            built if built.is_some() => built,
            unbuilt => {
                drop(unbuilt);
                let building = slot.write_owned().await;
                // Another fork may have built it meanwhile.
                if building.is_none() {
                    return self
                        .fork_building(principal, parent, point, engine, building)
                        .await;
                }
                building.downgrade()
            }
        };
        let layer = held.as_ref().expect("built above").clone();
        let layered = Some((engine, layer.clone()));
        let made = self
            .sessions
            .create(self.fork_of(principal, parent, point, layered))
            .await;
        // The new session stands on the layer now (or failed to): it may
        // be released.
        drop(held);
        match made {
            Ok(child) => {
                self.sessions.forked_over_layer(&parent.id);
                self.fork_made(parent, &child, point, None).await
            }
            Err(e) => {
                self.sessions.release_layer(engine, &layer).await;
                Err(e.into())
            }
        }
    }

    /// The first fork of `point`: its layer is written (by a builder on
    /// `engine`) while the new session's volumes and container are made,
    /// which starts as soon as the copy is done; `slot`, held throughout,
    /// then names the layer. On failure nothing of the new session
    /// remains, nor of the layer.
    async fn fork_building(
        &self,
        principal: &Principal,
        parent: &Session,
        point: &CheckpointRecord,
        engine: usize,
        mut slot: tokio::sync::OwnedRwLockWriteGuard<Option<String>>,
    ) -> Result<Created, ServiceError> {
        let layer = self.sessions.new_layer(engine).await?;
        let (done, built) = tokio::sync::watch::channel(None);
        let mut new = self.fork_of(principal, parent, point, Some((engine, layer.clone())));
        new.layer_built = Some(built);
        let (copied, made) = tokio::join!(
            self.sessions
                .build_layer(engine, parent, &point.id, &layer, done, false),
            self.sessions.create(new),
        );
        // The copy's failure says more than the new session's (which only
        // heard of it).
        let (error, made) = match (copied, made) {
            (Ok(()), Ok(child)) => {
                *slot = Some(layer);
                drop(slot);
                self.sessions.forked_over_layer(&parent.id);
                return self.fork_made(parent, &child, point, None).await;
            }
            (Err(e), made) => (ServiceError::from(e), made.ok()),
            (Ok(()), Err(e)) => (ServiceError::from(e), None),
        };
        // Released first: removing the layer waits for every slot.
        drop(slot);
        if let Some(child) = made
            && let Err(undo) = self.delete(&child.id).await
        {
            tracing::error!(session = %child.id, error = %undo, "could not remove a fork that failed");
        }
        self.sessions.release_layer(engine, &layer).await;
        Err(error)
    }

    /// Makes `child` the fork of `parent` at `point` (with `export`, its
    /// workspace copied; without, it stands on a layer already), then
    /// follows its sandbox. On failure it is deleted.
    async fn fork_made(
        &self,
        parent: &Session,
        child: &Arc<Session>,
        point: &CheckpointRecord,
        export: Option<crate::agent::CheckpointExport>,
    ) -> Result<Created, ServiceError> {
        if let Err(e) = self.agent.fork_into(parent, child, point, export).await {
            if let Err(undo) = self.delete(&child.id).await {
                tracing::error!(session = %child.id, error = %undo, "could not remove a fork that failed");
            }
            return Err(e.into());
        }
        self.sessions.follow(child);
        tracing::info!(session = %child.id, parent = %parent.id, checkpoint = %point.id, "session forked");
        Ok(Created {
            last_event_seq: child.events.last_seq(),
            session: child.clone(),
            first_task: None,
        })
    }

    /// Queues a task and records it as the session's latest.
    pub async fn submit(&self, session_id: &str, task: String) -> Result<Submitted, ServiceError> {
        let session = self.sessions.get(session_id)?;
        let submitted = self.agent.submit(&session, task.clone()).await?;
        // The task is stored and queued; `last_task` only reports it.
        if let Err(e) = self.sessions.set_last_task(&session, &task).await {
            tracing::warn!(session = %session.id, error = %e, "could not record the session's last task");
        }
        Ok(submitted)
    }

    /// Stops the session's running task.
    pub async fn cancel(&self, session_id: &str) -> Result<(), ServiceError> {
        let session = self.sessions.get(session_id)?;
        if self.agent.cancel_anywhere(&session).await? {
            Ok(())
        } else {
            Err(ServiceError::NothingRunning(session.id.clone()))
        }
    }

    /// Deletes a session. Its running task is stopped first and its end
    /// recorded; if the deletion then fails, the session stays as it was,
    /// with its queued tasks free to run.
    pub async fn delete(&self, session_id: &str) -> Result<(), ServiceError> {
        let session = self.sessions.get(session_id)?;
        self.agent.hold(&session.id).await;
        match self.sessions.delete(&session.id).await {
            Ok(()) => {
                self.agent.forget(&session.id);
                Ok(())
            }
            Err(e) => {
                // Unless a concurrent delete has it now: that one releases
                // or forgets the tasks.
                if self.sessions.get(&session.id).is_ok() {
                    self.agent.release(&session);
                }
                Err(e.into())
            }
        }
    }
}
