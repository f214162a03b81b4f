//! A session's checkpoints: its workspace recorded by the sandbox agent
//! when the session is made and after each task (before `task_completed`,
//! so a client that sees a task end finds its checkpoint), with the
//! conversation's length at that moment, and the differences between them.

use std::sync::{Arc, Weak};

use chrono::Utc;

use super::{Agent, AgentError};
use crate::capabilities::{CheckpointDiff, CheckpointExport, SkippedFile};
use crate::events::{EventKind, RewindScope};
use crate::session::{Session, SessionManager};
use crate::store::CheckpointRecord;

impl Agent {
    /// Records the session's workspace as a checkpoint, after `task` (its
    /// id and text; `None` when the session is made), and publishes
    /// `checkpoint_created`. `None` when checkpoints are turned off.
    pub async fn checkpoint(
        &self,
        session: &Session,
        task: Option<(&str, &str)>,
    ) -> Result<Option<CheckpointRecord>, AgentError> {
        let limits = &self.config.workspace;
        if !limits.checkpoints {
            return Ok(None);
        }
        let _one = session.checkpointing.lock().await;
        let parent = self.store.session_checkpoint(&session.id).await?;
        let message = match (task, &parent) {
            (Some((id, text)), _) => format!("Task {id}: {text}"),
            (None, None) => "The session was made".to_string(),
            (None, Some(_)) => "Taken on request".to_string(),
        };
        let taken = session
            .caps
            .take_checkpoint(
                parent.as_deref(),
                &message,
                limits.checkpoint_max_file_bytes,
            )
            .await?;
        let seq = self
            .store
            .checkpoints(&session.id)
            .await?
            .last()
            .map_or(1, |c| c.seq + 1);
        let record = CheckpointRecord {
            seq,
            id: taken.checkpoint.clone(),
            task_id: task.map(|(id, _)| id.to_string()),
            task: task.map(|(_, text)| text.to_string()),
            created: Utc::now(),
            files_changed: taken.files_changed as u64,
            insertions: taken.insertions as u64,
            deletions: taken.deletions as u64,
            skipped: serde_json::to_string(&taken.skipped).expect("skipped files serialise"),
            messages: self.store.next_message_seq(&session.id).await?,
        };
        self.store.insert_checkpoint(&session.id, &record).await?;
        let event = EventKind::CheckpointCreated {
            checkpoint_id: record.id.clone(),
            task_id: record.task_id.clone(),
            files_changed: record.files_changed,
            insertions: record.insertions,
            deletions: record.deletions,
            skipped: taken.skipped.into_iter().map(|s| s.path).collect(),
        };
        session
            .events
            .publish(event)
            .await
            .map_err(|e| AgentError::Events(e.to_string()))?;
        if let Some(sessions) = self.checkpoints_to.get().and_then(Weak::upgrade) {
            sessions.checkpoint_taken(session, &record.id, taken.files, taken.bytes);
        }
        Ok(Some(record))
    }

    /// Tells `sessions` of each checkpoint taken from now on (it may write
    /// the checkpoint's fork layer ahead).
    pub fn tell_checkpoints_to(&self, sessions: &Arc<SessionManager>) {
        // Named once, by the service that holds both.
        let _ = self.checkpoints_to.set(Arc::downgrade(sessions));
    }

    /// Records the workspace as a checkpoint now, for a client (after
    /// changes made through the API or a terminal), with no task. Refused
    /// while a task runs or waits, as its changes would then be split.
    pub async fn checkpoint_now(
        self: &Arc<Self>,
        session: &Arc<Session>,
    ) -> Result<CheckpointRecord, AgentError> {
        if !self.config.workspace.checkpoints {
            return Err(AgentError::CheckpointsOff);
        }
        self.hold_idle_anywhere(session).await?;
        let done = self.checkpoint(session, None).await;
        self.release(session);
        done?.ok_or(AgentError::CheckpointsOff)
    }

    /// [`Agent::checkpoint`] where a failure must not stop what called it
    /// (a session being made, a task ending): it becomes an `error` event.
    pub async fn checkpoint_or_say(&self, session: &Session, task: Option<(&str, &str)>) {
        if let Err(e) = self.checkpoint(session, task).await {
            tracing::warn!(session = %session.id, error = %e, "no checkpoint");
            let event = EventKind::Error {
                message: format!("The workspace could not be recorded as a checkpoint: {e}"),
                task_id: task.map(|(id, _)| id.to_string()),
            };
            if let Err(e) = session.events.publish(event).await {
                tracing::error!(session = %session.id, error = %e, "could not record an error event");
            }
        }
    }

    /// Takes the session back to checkpoint `id`: its files (as the
    /// checkpoint recorded them; the next checkpoint follows this one),
    /// its conversation (cut after the checkpoint's task), or both; then
    /// publishes `rewound`. Refused while a task runs.
    pub async fn rewind(
        self: &Arc<Self>,
        session: &Arc<Session>,
        id: &str,
        scope: RewindScope,
    ) -> Result<Rewound, AgentError> {
        // No task may start while the session goes back.
        self.hold_idle_anywhere(session).await?;
        let done = self.rewind_held(session, id, scope).await;
        self.release(session);
        done
    }

    async fn rewind_held(
        &self,
        session: &Session,
        id: &str,
        scope: RewindScope,
    ) -> Result<Rewound, AgentError> {
        let _one = session.checkpointing.lock().await;
        let all = self.store.checkpoints(&session.id).await?;
        let target = all
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| AgentError::UnknownCheckpoint(id.to_string()))?;
        let mut done = Rewound {
            checkpoint_id: target.id.clone(),
            scope,
            files_written: 0,
            files_removed: 0,
            messages_dropped: 0,
        };
        if scope.files() {
            let restored = session.caps.restore_checkpoint(&target.id).await?;
            done.files_written = restored.written as u64;
            done.files_removed = restored.removed as u64;
            self.store
                .set_session_checkpoint(&session.id, &target.id)
                .await?;
        }
        if scope.conversation() {
            done.messages_dropped = self
                .store
                .delete_messages_from(&session.id, target.messages)
                .await?;
        }
        let event = EventKind::Rewound {
            checkpoint_id: done.checkpoint_id.clone(),
            scope,
            files_written: done.files_written,
            files_removed: done.files_removed,
            messages_dropped: done.messages_dropped,
        };
        session
            .events
            .publish(event)
            .await
            .map_err(|e| AgentError::Events(e.to_string()))?;
        Ok(done)
    }

    /// The checkpoint of `session` a fork starts from: `id`, or its latest.
    pub async fn fork_point(
        &self,
        session: &Session,
        id: Option<&str>,
    ) -> Result<CheckpointRecord, AgentError> {
        if !self.config.workspace.checkpoints {
            return Err(AgentError::CheckpointsOff);
        }
        let all = self.store.checkpoints(&session.id).await?;
        match id {
            Some(id) => all.into_iter().find(|c| c.id == id),
            None => all.into_iter().last(),
        }
        .ok_or_else(|| AgentError::UnknownCheckpoint(id.unwrap_or("(none yet)").to_string()))
    }

    /// Opens the export of checkpoint `point` of `parent` for a fork, read
    /// ahead while the new session's sandbox is made. The parent may be
    /// running a task meanwhile: a checkpoint never changes once taken.
    pub async fn export_for_fork(
        &self,
        parent: &Session,
        point: &CheckpointRecord,
    ) -> Result<CheckpointExport, AgentError> {
        Ok(parent.caps.export_checkpoint(&point.id).await?)
    }

    /// Makes the new session `child` what `parent` was at checkpoint
    /// `point`: its log starts with `forked`; with the checkpoint's
    /// `export` ([`Agent::export_for_fork`]), the checkpoint's objects
    /// (with its history) are copied from sandbox to sandbox and the
    /// workspace put back as it recorded it (without, the child stands on
    /// the checkpoint's layer, which holds both already); the checkpoints
    /// and conversation up to it are copied.
    pub async fn fork_into(
        &self,
        parent: &Session,
        child: &Session,
        point: &CheckpointRecord,
        export: Option<CheckpointExport>,
    ) -> Result<(), AgentError> {
        let _one = child.checkpointing.lock().await;
        let event = EventKind::Forked {
            parent_session_id: parent.id.clone(),
            checkpoint_id: point.id.clone(),
        };
        child
            .events
            .publish(event)
            .await
            .map_err(|e| AgentError::Events(e.to_string()))?;
        let started = std::time::Instant::now();
        // Without an export, the workspace stands on the checkpoint's layer,
        // and its store reads the layer's objects: nothing to copy.
        if let Some(export) = export {
            let copied = child.caps.import_fork(export).await?;
            let written = match copied.restored {
                Some(restored) => restored.written,
                // An agent that only stores what it imports: put back after.
                None => child.caps.restore_checkpoint(&point.id).await?.written,
            };
            tracing::debug!(
                session = %child.id, objects = copied.objects, bytes = copied.bytes,
                files = written, ms = started.elapsed().as_millis() as u64,
                "fork's workspace in place"
            );
        }
        self.store
            .fork_history(&parent.id, &child.id, point)
            .await?;
        Ok(())
    }

    /// The session's checkpoints, oldest first.
    pub async fn checkpoints(
        &self,
        session: &Session,
    ) -> Result<Vec<CheckpointRecord>, AgentError> {
        Ok(self.store.checkpoints(&session.id).await?)
    }

    /// The changes from checkpoint `from` to `to` (`None`: the workspace as
    /// it is now). `from` defaults to the checkpoint before `to` (before
    /// the latest, for the workspace now).
    pub async fn diff(
        &self,
        session: &Session,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<CheckpointDiff, AgentError> {
        let all = self.store.checkpoints(&session.id).await?;
        let find = |id: &str| {
            all.iter()
                .position(|c| c.id == id)
                .ok_or_else(|| AgentError::UnknownCheckpoint(id.to_string()))
        };
        let to_index = to.map(find).transpose()?;
        let from = match from {
            Some(id) => all[find(id)?].id.clone(),
            None => {
                let before = match to_index {
                    Some(i) => i.checked_sub(1),
                    None => all.len().checked_sub(1),
                };
                match before {
                    Some(i) => all[i].id.clone(),
                    None => return Err(AgentError::NoEarlierCheckpoint),
                }
            }
        };
        let _one = session.checkpointing.lock().await;
        Ok(session
            .caps
            .checkpoint_diff(&from, to, self.config.workspace.checkpoint_max_file_bytes)
            .await?)
    }
}

/// The files a stored checkpoint left out.
pub fn skipped_files(record: &CheckpointRecord) -> Vec<SkippedFile> {
    serde_json::from_str(&record.skipped).unwrap_or_default()
}

/// What a rewind did.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Rewound {
    pub checkpoint_id: String,
    pub scope: RewindScope,
    /// Files written back (changed or deleted since).
    pub files_written: u64,
    /// Files and directories removed (made since).
    pub files_removed: u64,
    /// Messages of the conversation dropped (the turns after it).
    pub messages_dropped: u64,
}
