//! Checkpoints, as the server asks the sandbox agent for them: the
//! workspace recorded in the container's own checkpoint store (a volume
//! outside the workspace), two states compared, a state put back.

use bytes::Bytes;
use crogia_sandbox_agent::checkpoint::{Diff, Restored, Taken};
use crogia_sandbox_agent::protocol::{
    self, CheckpointDiff, CheckpointRestore, CheckpointTake, ErrorBody,
};
use http_body_util::{BodyExt, Limited};
use hyper::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::agent::AgentError;
use super::{Sandbox, SandboxError};

/// Most bytes of a checkpoint answer read (a diff's patch is at most 4 MiB).
const MAX_ANSWER_BYTES: usize = 16 << 20;

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
        self.checkpoint_call(container, protocol::CHECKPOINT_TAKE, &body)
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
        self.checkpoint_call(container, protocol::CHECKPOINT_DIFF, &body)
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
        self.checkpoint_call(container, protocol::CHECKPOINT_RESTORE, &body)
            .await
    }

    /// A checkpoint request; the agent's refusals become the sandbox
    /// errors the API maps (an unknown checkpoint: not found; a malformed
    /// id or too many files: invalid input).
    async fn checkpoint_call<B: Serialize, T: DeserializeOwned>(
        &self,
        container: &str,
        path: &str,
        body: &B,
    ) -> Result<T, AgentError> {
        let json = serde_json::to_vec(body).expect("requests serialise");
        let answer = self
            .agent_open(container, path, "application/json", Bytes::from(json))
            .await?;
        let status = answer.status();
        let bytes = Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| SandboxError::Engine(format!("reading the sandbox agent's answer: {e}")))?
            .to_bytes();
        if status == StatusCode::OK {
            return serde_json::from_slice(&bytes).map_err(|e| {
                SandboxError::Engine(format!("the sandbox agent's answer is malformed: {e}")).into()
            });
        }
        let error = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        Err(match status {
            StatusCode::NOT_FOUND => SandboxError::NotFound(error),
            StatusCode::UNPROCESSABLE_ENTITY | StatusCode::PAYLOAD_TOO_LARGE => {
                SandboxError::InvalidInput(error)
            }
            _ => SandboxError::Engine(format!("the sandbox agent answered {status}: {error}")),
        }
        .into())
    }
}
