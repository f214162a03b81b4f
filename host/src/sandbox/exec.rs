//! Running commands in a container: `sh -c` in `/workspace`, stdout and
//! stderr kept apart, the exit code, a timeout that kills the command's whole
//! process tree, and output capped with a visible marker.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use futures_util::StreamExt;

use super::{Sandbox, SandboxError, scripts};
use crate::workspace::CONTAINER_ROOT;

/// How long the output of a killed command may take to drain before the
/// stream is dropped.
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(2);
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

/// Start of the line that replaces dropped output.
pub const TRUNCATION_MARKER: &str = "[... crogia: output truncated,";

impl Sandbox {
    /// Runs a command with `sh -c` in `/workspace`. On timeout the command and
    /// everything it started are killed (they are gone when this returns) and
    /// `timed_out` is set.
    #[tracing::instrument(skip(self, request), fields(command = %request.command))]
    pub async fn exec(
        &self,
        container: &str,
        request: ExecRequest,
    ) -> Result<ExecOutput, SandboxError> {
        check_command(&request.command)?;
        let timeout = request
            .timeout
            .unwrap_or(self.config.exec_timeout())
            .min(self.config.max_exec_timeout());
        let env = vec![format!("CROGIA_CMD={}", request.command)];
        let out = self
            .run(container, scripts::EXEC_WRAPPER, env, timeout, true)
            .await?;
        tracing::debug!(exit_code = ?out.exit_code, timed_out = out.timed_out, ms = out.duration.as_millis() as u64, "exec done");
        Ok(out)
    }

    /// Runs one of our own helper scripts; a non-zero exit is an error.
    pub(super) async fn run_internal(
        &self,
        container: &str,
        script: &str,
        env: Vec<String>,
    ) -> Result<String, SandboxError> {
        // Stopping a process waits out its grace period inside the script.
        let timeout = INTERNAL_TIMEOUT + self.config.stop_grace();
        let out = self.run(container, script, env, timeout, false).await?;
        if out.timed_out || out.exit_code != Some(0) {
            return Err(SandboxError::Engine(format!(
                "sandbox helper failed (exit {:?}{}): {}",
                out.exit_code,
                if out.timed_out { ", timed out" } else { "" },
                out.stderr.trim()
            )));
        }
        Ok(out.stdout)
    }

    async fn run(
        &self,
        container: &str,
        script: &str,
        env: Vec<String>,
        timeout: Duration,
        wrapped: bool,
    ) -> Result<ExecOutput, SandboxError> {
        let started = Instant::now();
        let _timing = self.timing(if wrapped { "exec" } else { "exec_helper" });
        let docker = self.engine.client().await?;
        let options = CreateExecOptions {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(vec!["sh".to_string(), "-c".to_string(), script.to_string()]),
            env: Some(env),
            working_dir: Some(CONTAINER_ROOT.to_string()),
            ..Default::default()
        };
        let exec = docker.create_exec(container, options).await.map_err(|e| {
            match self.engine.classify(e) {
                SandboxError::Conflict(m) => SandboxError::NotRunning(m),
                other => other,
            }
        })?;
        let StartExecResults::Attached { mut output, .. } = docker
            .start_exec(&exec.id, None)
            .await
            .map_err(|e| self.engine.classify(e))?
        else {
            return Err(SandboxError::Engine("exec started detached".into()));
        };

        let limit = self.config.output_limit_bytes;
        let mut stdout = CappedBuffer::new(limit);
        let mut stderr = CappedBuffer::new(limit);
        // The wrapper's first stderr line is its pid.
        let mut pid_line: Option<Vec<u8>> = wrapped.then(Vec::new);
        let mut pid: Option<u32> = None;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut timed_out = false;

        loop {
            let next = if timed_out {
                tokio::time::timeout(DRAIN_AFTER_KILL, output.next()).await
            } else {
                tokio::time::timeout_at(deadline, output.next()).await
            };
            match next {
                Ok(Some(Ok(LogOutput::StdOut { message }))) => stdout.push(&message),
                Ok(Some(Ok(LogOutput::StdErr { message }))) => match pid_line.as_mut() {
                    Some(line) => {
                        line.extend_from_slice(&message);
                        if let Some(nl) = line.iter().position(|&b| b == b'\n') {
                            pid = std::str::from_utf8(&line[..nl])
                                .ok()
                                .and_then(|s| s.trim().parse().ok());
                            stderr.push(&line[nl + 1..]);
                            pid_line = None;
                        }
                    }
                    None => stderr.push(&message),
                },
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => return Err(self.engine.classify(e)),
                Ok(None) => break,
                Err(_) if timed_out => {
                    tracing::warn!(
                        container,
                        "output still open after kill; dropping the stream"
                    );
                    break;
                }
                Err(_) => {
                    timed_out = true;
                    match pid {
                        Some(pid) => {
                            let env = vec![format!("CROGIA_PID={pid}")];
                            let script = scripts::kill_tree();
                            let kill = Box::pin(self.run_internal(container, &script, env));
                            if let Err(e) = kill.await {
                                // No process can even be started to do the
                                // killing (a fork bomb holds every pid):
                                // restart the container, the only way out.
                                tracing::warn!(container, pid, error = %e, "killing a timed-out command failed; restarting the container");
                                if let Err(e) = self.restart(container).await {
                                    tracing::error!(container, error = %e, "restarting the container failed");
                                }
                            }
                        }
                        None => {
                            tracing::warn!(container, "timed-out command never reported its pid")
                        }
                    }
                }
            }
        }
        drop(output);

        let exit_code = match docker.inspect_exec(&exec.id).await {
            Ok(info) if info.running != Some(true) => info.exit_code,
            Ok(_) => None,
            Err(e) => return Err(self.engine.classify(e)),
        };
        let (stdout, out_cut) = stdout.finish();
        let (stderr, err_cut) = stderr.finish();
        Ok(ExecOutput {
            exit_code,
            stdout,
            stderr,
            timed_out,
            truncated: out_cut || err_cut,
            duration: started.elapsed(),
        })
    }
}

/// Keeps the first and last halves of at most `limit` bytes of a stream and
/// counts what it drops in between: the start of a command's output says what
/// it was doing, the end says how it finished.
#[derive(Debug)]
pub(crate) struct CappedBuffer {
    head_cap: usize,
    tail_cap: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    dropped: u64,
}

impl CappedBuffer {
    pub(crate) fn new(limit: usize) -> Self {
        let head_cap = limit / 2;
        Self {
            head_cap,
            tail_cap: limit - head_cap,
            head: Vec::new(),
            tail: VecDeque::new(),
            dropped: 0,
        }
    }

    pub(crate) fn push(&mut self, mut data: &[u8]) {
        if self.head.len() < self.head_cap {
            let take = (self.head_cap - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        if data.len() >= self.tail_cap {
            self.dropped += (self.tail.len() + data.len() - self.tail_cap) as u64;
            self.tail.clear();
            self.tail.extend(&data[data.len() - self.tail_cap..]);
            return;
        }
        self.tail.extend(data);
        if self.tail.len() > self.tail_cap {
            let excess = self.tail.len() - self.tail_cap;
            self.tail.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    /// The kept text (invalid UTF-8 replaced) and whether anything was dropped.
    pub(crate) fn finish(self) -> (String, bool) {
        let (a, b) = self.tail.as_slices();
        let mut tail = Vec::with_capacity(self.tail.len());
        tail.extend_from_slice(a);
        tail.extend_from_slice(b);
        if self.dropped == 0 {
            let mut all = self.head;
            all.extend_from_slice(&tail);
            return (String::from_utf8_lossy(&all).into_owned(), false);
        }
        let text = format!(
            "{}\n{TRUNCATION_MARKER} {} bytes omitted ...]\n{}",
            String::from_utf8_lossy(&self.head),
            self.dropped,
            String::from_utf8_lossy(&tail)
        );
        (text, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_kept_whole() {
        let mut b = CappedBuffer::new(10);
        b.push(b"abc");
        b.push(b"def");
        assert_eq!(b.finish(), ("abcdef".to_string(), false));
    }

    #[test]
    fn large_output_keeps_head_and_tail_with_a_marker() {
        let mut b = CappedBuffer::new(10);
        for chunk in [&b"0123"[..], b"456789", b"abcdefgh", b"XYZ"] {
            b.push(chunk);
        }
        let (text, cut) = b.finish();
        assert!(cut);
        assert!(text.starts_with("01234\n"), "{text}");
        assert!(text.ends_with("...]\nghXYZ"), "{text}");
        assert!(
            text.contains(&format!("{TRUNCATION_MARKER} 11 bytes omitted")),
            "{text}"
        );
    }

    #[test]
    fn one_huge_chunk_is_capped() {
        let mut b = CappedBuffer::new(100);
        b.push(&vec![b'x'; 1_000_000]);
        let (text, cut) = b.finish();
        assert!(cut);
        assert!(text.len() < 200);
        assert!(text.contains("999900 bytes omitted"), "{text}");
    }
}
