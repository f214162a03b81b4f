//! Checkpoints, as the server asks the sandbox agent for them: the
//! workspace recorded in the container's own checkpoint store (a volume
//! outside the workspace), two states compared, a state put back.

use crogia_sandbox_agent::checkpoint::{Diff, Imported, Restored, Taken};
use crogia_sandbox_agent::protocol::{
    self, CheckpointDiff, CheckpointImportQuery, CheckpointRestore, CheckpointTake,
};
use http_body_util::BodyExt as _;

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

    /// Opens checkpoint `id`'s export, with its history, from the agent of
    /// `from`, and starts reading it ahead (see [`CheckpointExport`]), so
    /// that the parent's side of a fork runs while the new session's
    /// container is still being made.
    pub async fn export_checkpoint(
        &self,
        from: &str,
        id: &str,
    ) -> Result<CheckpointExport, AgentError> {
        // A parent whose agent predates `compressed` sends the objects'
        // bytes instead; the new session's agent, always this server's,
        // takes either.
        let asked = protocol::CheckpointExport {
            checkpoint: id.to_string(),
            compressed: true,
        };
        let export = self
            .agent_stream(from, protocol::CHECKPOINT_EXPORT, &asked)
            .await?;
        let permit = READING_AHEAD.clone().try_acquire_owned().ok();
        let depth = if permit.is_some() { AHEAD_FRAMES } else { 1 };
        let (frames, ahead) = tokio::sync::mpsc::channel(depth);
        let mut body = export.into_body();
        tokio::spawn(async move {
            let _permit = permit;
            loop {
                // Whoever dropped the export (a fork that failed) ends the
                // reading, even from an agent that sends nothing more.
                let frame = tokio::select! {
                    () = frames.closed() => break,
                    frame = body.frame() => frame,
                };
                let data = match frame {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => data,
                        Err(_) => continue,
                    },
                    // Cut off: the importing agent finds the stream unwhole.
                    Some(Err(_)) | None => break,
                };
                if frames.send(data).await.is_err() {
                    break;
                }
            }
        });
        Ok(CheckpointExport {
            id: id.to_string(),
            frames: ahead,
        })
    }

    /// Adds an export of another sandbox's checkpoint to the store of `to`
    /// (a container of this engine), streamed from agent to agent through
    /// the server; `to`'s agent checks every object and that the
    /// checkpoint is whole. With `restore`, `to`'s workspace is then as the
    /// checkpoint recorded it, written as the objects come (a fork's): `to`
    /// may use every CPU meanwhile, as no program of its session runs yet,
    /// and is held to its limit again after.
    pub async fn import_checkpoint(
        &self,
        to: &str,
        export: CheckpointExport,
        restore: bool,
    ) -> Result<Imported, AgentError> {
        // Only faster: a fork is made without it too.
        if restore && let Err(e) = self.set_cpus(to, None).await {
            tracing::warn!(container = to, error = %e, "could not lift the CPU limit for a fork's copy");
        }
        let query = serde_urlencoded::to_string(CheckpointImportQuery {
            checkpoint: export.id,
            restore,
        })
        .expect("queries serialise");
        let path = format!("{}?{query}", protocol::CHECKPOINT_IMPORT);
        let copied = self.agent_upload(to, &path, export.frames).await;
        if restore {
            self.set_cpus(to, Some(self.config.cpus)).await?;
        }
        let bytes = copied?;
        serde_json::from_slice(&bytes).map_err(|e| {
            SandboxError::Engine(format!("the sandbox agent's answer is malformed: {e}")).into()
        })
    }
}

/// Most frames of an export read ahead of its import: 32 MiB at the
/// agent link's largest frame (a fork's export of a 118 MB workspace is
/// about 55 MB), held while the new session's container starts.
const AHEAD_FRAMES: usize = 128;
/// Exports read that far ahead at once; any more are read as their import
/// takes them, so forks at once hold at most 128 MiB of the server's memory.
static READING_AHEAD: std::sync::LazyLock<std::sync::Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| std::sync::Arc::new(tokio::sync::Semaphore::new(4)));

/// A checkpoint's export, open on its sandbox's agent and read ahead into
/// a bounded queue until [`Sandbox::import_checkpoint`] takes it. Dropping
/// it ends the export.
pub struct CheckpointExport {
    id: String,
    frames: tokio::sync::mpsc::Receiver<bytes::Bytes>,
}
