//! Checkpoints, as the server asks the sandbox agent for them: the
//! workspace recorded in the container's own checkpoint store (a volume
//! outside the workspace), two states compared, a state put back.

use crogia_sandbox_agent::checkpoint::{Diff, Imported, Restored, Taken};
use crogia_sandbox_agent::protocol::{
    self, CheckpointDiff, CheckpointExport, CheckpointImportQuery, CheckpointRestore,
    CheckpointTake,
};

use super::agent::AgentError;
use super::{Sandbox, SandboxError};

impl Sandbox {
    /// Records `container`'s workspace as a checkpoint after `parent`.
    pub async fn take_checkpoint(
        &self,
        container: &str,
        parent: Option<&str>,
        message: &str,
        max_file_bytes: u64,
    ) -> Result<Taken, AgentError> {
        let body = CheckpointTake {
            parent: parent.map(str::to_string),
            message: message.to_string(),
            max_file_bytes,
        };
        self.agent_call(container, protocol::CHECKPOINT_TAKE, &body)
            .await
    }

    /// What changed from checkpoint `from` to `to` (the workspace now when
    /// `None`).
    pub async fn checkpoint_diff(
        &self,
        container: &str,
        from: &str,
        to: Option<&str>,
        max_file_bytes: u64,
    ) -> Result<Diff, AgentError> {
        let body = CheckpointDiff {
            from: from.to_string(),
            to: to.map(str::to_string),
            max_file_bytes,
        };
        self.agent_call(container, protocol::CHECKPOINT_DIFF, &body)
            .await
    }

    /// Puts `container`'s workspace back as checkpoint `id` recorded it.
    pub async fn restore_checkpoint(
        &self,
        container: &str,
        id: &str,
    ) -> Result<Restored, AgentError> {
        let body = CheckpointRestore {
            checkpoint: id.to_string(),
        };
        self.agent_call(container, protocol::CHECKPOINT_RESTORE, &body)
            .await
    }

    /// Copies checkpoint `id` with its history from the store of `from`
    /// into the store of `to` (a container of `into`, which may be on
    /// another engine), streamed from agent to agent through the server;
    /// `to`'s agent checks every object and that the checkpoint is whole.
    /// With `restore`, `to`'s workspace is then as the checkpoint recorded
    /// it, written as the objects come (a fork's): `to` may use every CPU
    /// meanwhile, as no program of its session runs yet, and is held to its
    /// limit again after.
    pub async fn copy_checkpoint(
        &self,
        from: &str,
        into: &Sandbox,
        to: &str,
        id: &str,
        restore: bool,
    ) -> Result<Imported, AgentError> {
        // Only faster: a fork is made without it too.
        if restore && let Err(e) = into.set_cpus(to, None).await {
            tracing::warn!(container = to, error = %e, "could not lift the CPU limit for a fork's copy");
        }
        let copied = self.stream_checkpoint(from, into, to, id, restore).await;
        if restore {
            into.set_cpus(to, Some(into.config.cpus)).await?;
        }
        copied
    }

    async fn stream_checkpoint(
        &self,
        from: &str,
        into: &Sandbox,
        to: &str,
        id: &str,
        restore: bool,
    ) -> Result<Imported, AgentError> {
        // A parent whose agent predates `compressed` sends the objects'
        // bytes instead; the new session's agent, always this server's,
        // takes either.
        let asked = CheckpointExport {
            checkpoint: id.to_string(),
            compressed: true,
        };
        let export = self
            .agent_stream(from, protocol::CHECKPOINT_EXPORT, &asked)
            .await?;
        let query = serde_urlencoded::to_string(CheckpointImportQuery {
            checkpoint: id.to_string(),
            restore,
        })
        .expect("queries serialise");
        let path = format!("{}?{query}", protocol::CHECKPOINT_IMPORT);
        let bytes = into.agent_upload(to, &path, export.into_body()).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            SandboxError::Engine(format!("the sandbox agent's answer is malformed: {e}")).into()
        })
    }
}
