//! Running commands in a container: `sh -c` in `/workspace`, stdout and
//! stderr kept apart, the exit code, a timeout that kills the command's whole
//! process tree, and output capped with a visible marker.
//!
//! A caller's command runs through the container's sandbox agent (see
//! `agent.rs`): the agent enforces the timeout, caps the output and kills
//! the command when the caller goes away. The server's own helper scripts
//! (background processes) run through it the same way.

use std::time::{Duration, Instant};

pub use crogia_sandbox_agent::protocol::ExecChunk;
use crogia_sandbox_agent::protocol::{self, ExecResponse};

use super::{AgentError, Sandbox, SandboxError};
use crate::workspace::CONTAINER_ROOT;

/// Bound on the internal helper scripts (status, start, kill).
const INTERNAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest command accepted, in characters. A command reaches `sh -c` as
/// one argument (and one environment variable), each of which Linux caps at
/// 128 KiB (`MAX_ARG_STRLEN`); past it the exec fails with E2BIG, which
/// looks like a command that printed nothing. 32,000 characters are at most
/// 128,000 bytes of UTF-8.
pub const MAX_COMMAND_CHARS: usize = 32_000;

/// Refuses a command that cannot be run: empty, with a NUL byte, or longer
/// than [`MAX_COMMAND_CHARS`].
pub fn check_command(command: &str) -> Result<(), SandboxError> {
    if command.contains('\0') {
        return Err(SandboxError::InvalidInput(
            "command contains a NUL byte".into(),
        ));
    }
    if command.trim().is_empty() {
        return Err(SandboxError::InvalidInput("command is empty".into()));
    }
    let chars = command.chars().count();
    if chars > MAX_COMMAND_CHARS {
        return Err(SandboxError::InvalidInput(format!(
            "command is {chars} characters long; at most {MAX_COMMAND_CHARS} are accepted \
             (write long scripts to a file and run that)"
        )));
    }
    Ok(())
}

/// A command to run with `sh -c` in the session's workspace.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub command: String,
    /// Defaults to `sandbox.exec_timeout_secs`; capped at
    /// `sandbox.max_exec_timeout_secs`.
    pub timeout: Option<Duration>,
}

impl ExecRequest {
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            timeout: None,
        }
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExecOutput {
    /// The command's exit code; `None` when it was killed before the engine
    /// recorded one.
    pub exit_code: Option<i64>,
    pub stdout: String,
    pub stderr: String,
    /// The command ran past its timeout and was killed with its children.
    pub timed_out: bool,
    /// Some output was dropped (see [`TRUNCATION_MARKER`]).
    pub truncated: bool,
    #[serde(skip)]
    pub duration: Duration,
}

impl Sandbox {
    /// Runs a command with `sh -c` in `/workspace`. On timeout the command and
    /// everything it started are killed (they are gone when this returns) and
    /// `timed_out` is set. If this future is dropped first, the command is
    /// killed the same way.
    #[tracing::instrument(skip(self, request), fields(command = %request.command))]
    pub async fn exec(
        &self,
        container: &str,
        request: ExecRequest,
    ) -> Result<ExecOutput, SandboxError> {
        check_command(&request.command)?;
        let started = Instant::now();
        let _timing = self.timing("exec");
        let ask = self.agent_exec_request(request);
        let done: ExecResponse = self.agent_call(container, protocol::EXEC, &ask).await?;
        let out = ExecOutput {
            exit_code: done.exit_code,
            stdout: done.stdout,
            stderr: done.stderr,
            timed_out: done.timed_out,
            truncated: done.truncated,
            duration: started.elapsed(),
        };
        tracing::debug!(exit_code = ?out.exit_code, timed_out = out.timed_out, ms = out.duration.as_millis() as u64, "exec done");
        Ok(out)
    }

    /// Runs a command like [`Sandbox::exec`], its output coming as it is
    /// written: `stdout` and `stderr` chunks, then one `exit`. A stream that
    /// ends without `exit` was cut off (the link or the agent went away).
    /// Dropping the stream kills the command.
    pub async fn exec_stream(
        &self,
        container: &str,
        request: ExecRequest,
    ) -> Result<impl futures_util::Stream<Item = ExecChunk> + Send + 'static, AgentError> {
        check_command(&request.command)?;
        let ask = self.agent_exec_request(request);
        let answer = self
            .agent_stream(container, protocol::EXEC_STREAM, &ask)
            .await?;
        Ok(super::agent::ndjson::<ExecChunk>(answer, container))
    }

    /// What the agent is asked to run for a caller's command.
    fn agent_exec_request(&self, request: ExecRequest) -> protocol::ExecRequest {
        let timeout = request
            .timeout
            .unwrap_or(self.config.exec_timeout())
            .min(self.config.max_exec_timeout());
        protocol::ExecRequest {
            command: request.command,
            cwd: CONTAINER_ROOT.into(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            output_limit: self.config.output_limit_bytes,
            env: Vec::new(),
        }
    }

    /// Runs one of our own helper scripts (background processes) through
    /// the agent, like a command; a non-zero exit is an error.
    pub(super) async fn run_internal(
        &self,
        container: &str,
        script: &str,
        env: Vec<(String, String)>,
    ) -> Result<String, SandboxError> {
        // Stopping a process waits out its grace period inside the script.
        let timeout = INTERNAL_TIMEOUT + self.config.stop_grace();
        let started = Instant::now();
        let _timing = self.timing("exec_helper");
        let ask = protocol::ExecRequest {
            command: script.to_string(),
            cwd: CONTAINER_ROOT.into(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            output_limit: self.config.output_limit_bytes,
            env,
        };
        let done: ExecResponse = self.agent_call(container, protocol::EXEC, &ask).await?;
        if done.timed_out || done.exit_code != Some(0) {
            return Err(SandboxError::Engine(format!(
                "sandbox helper failed (exit {:?}{}, {} ms): {}",
                done.exit_code,
                if done.timed_out { ", timed out" } else { "" },
                started.elapsed().as_millis(),
                done.stderr.trim()
            )));
        }
        Ok(done.stdout)
    }
}
