//! Commands in the session's container (capability `exec`).

use std::time::Duration;

use crate::bindings::crogia::plugin::exec as host;
use crate::{ExitCode, HostError};

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExecOutput {
    /// `None` when the command was killed before it exited on its own.
    pub exit_code: Option<ExitCode>,
    pub stdout: String,
    pub stderr: String,
    /// It ran past its timeout and was killed, with everything it started.
    pub timed_out: bool,
    /// Output was cut to the server's limit; a marker line shows where.
    pub truncated: bool,
}

impl ExecOutput {
    /// Whether it exited on its own with code 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// A command to run with `sh -c` in `/workspace`.
///
/// ```no_run
/// # use crogia_plugin_sdk::exec::Command;
/// # use std::time::Duration;
/// let out = Command::new("make test").timeout(Duration::from_secs(300)).run()?;
/// # Ok::<(), crogia_plugin_sdk::HostError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Command {
    command: String,
    timeout: Option<Duration>,
}

impl Command {
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            timeout: None,
        }
    }

    /// When the command and its children are killed (`timed_out` is then
    /// set). Default: the server's exec timeout; always capped at its
    /// maximum.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Runs it and waits for it to end.
    pub fn run(&self) -> Result<ExecOutput, HostError> {
        let options = host::ExecOptions {
            timeout_ms: self
                .timeout
                .map(|t| u32::try_from(t.as_millis()).unwrap_or(u32::MAX)),
        };
        let out = host::run(&self.command, options)?;
        Ok(ExecOutput {
            exit_code: out.exit_code,
            stdout: out.stdout,
            stderr: out.stderr,
            timed_out: out.timed_out,
            truncated: out.truncated,
        })
    }
}

/// Runs `command` with `sh -c` in `/workspace` with the server's timeout.
pub fn run(command: &str) -> Result<ExecOutput, HostError> {
    Command::new(command).run()
}
