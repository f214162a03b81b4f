//! Background processes: commands started detached in a container, with
//! their output in `/workspace/.agent_logs/<id>.log`.
//!
//! A process is known by the [`BackgroundProcess`] record [`Sandbox::start_process`]
//! returns; keeping records is the caller's business. The record holds the
//! process's start time (from `/proc`) beside its pid, so a pid the kernel
//! reuses later is never mistaken for it, and never signalled.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Sandbox, SandboxError, scripts};

/// Folder (relative to the workspace) holding background processes' logs.
pub const LOG_DIR: &str = ".agent_logs";

/// A background process started by [`Sandbox::start_process`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackgroundProcess {
    /// Our id for it; also names its log file.
    pub id: String,
    /// Its pid inside the container.
    pub pid: u32,
    /// When it started, in clock ticks after the container's kernel booted
    /// (field 22 of `/proc/<pid>/stat`).
    pub start_ticks: u64,
    pub cmd: String,
    /// Its log file, relative to the workspace.
    pub log: String,
    pub started: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum ProcessState {
    Running,
    /// It ended; its exit code when known (it is not when the container was
    /// restarted under it).
    Exited {
        exit_code: Option<i32>,
    },
}

/// A record and what its process is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessStatus {
    pub process: BackgroundProcess,
    pub state: ProcessState,
}

/// How [`Sandbox::stop_process`] ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// It had already exited.
    NotRunning,
    /// It (and its children) exited after SIGTERM.
    Terminated,
    /// It outlived the grace period and was killed with SIGKILL.
    Killed,
}

impl StopOutcome {
    /// What stopping process `pid` did, in words.
    pub fn describe(self, pid: u32) -> String {
        match self {
            Self::Terminated => format!("Sent SIGTERM to process {pid}"),
            Self::Killed => format!(
                "Sent SIGTERM to process {pid}; it was still running after the grace period and was killed with SIGKILL"
            ),
            Self::NotRunning => format!("Process {pid} was not running"),
        }
    }
}

impl Sandbox {
    /// Starts `cmd` with `sh -c` in `/workspace`, detached, stdin from
    /// `/dev/null`, stdout and stderr to its log file.
    #[tracing::instrument(skip(self))]
    pub async fn start_process(
        &self,
        container: &str,
        cmd: &str,
    ) -> Result<BackgroundProcess, SandboxError> {
        super::exec::check_command(cmd)?;
        let id = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        let env = vec![
            ("CROGIA_CMD".to_string(), cmd.to_string()),
            ("CROGIA_PROC_ID".to_string(), id.clone()),
        ];
        let started = Utc::now();
        let out = self
            .run_internal(container, &scripts::start_process(), env)
            .await?;
        let mut fields = out.split_whitespace().map(str::parse::<u64>);
        let (Some(Ok(pid)), Some(Ok(start_ticks))) = (fields.next(), fields.next()) else {
            return Err(SandboxError::Engine(format!(
                "could not start the process: unexpected output {out:?}"
            )));
        };
        Ok(BackgroundProcess {
            log: format!("{LOG_DIR}/{id}.log"),
            id,
            pid: pid as u32,
            start_ticks,
            cmd: cmd.to_string(),
            started,
        })
    }

    /// The current state of each process, in the order given, with one
    /// request to the agent.
    pub async fn process_states(
        &self,
        container: &str,
        processes: &[BackgroundProcess],
    ) -> Result<Vec<ProcessState>, SandboxError> {
        if processes.is_empty() {
            return Ok(Vec::new());
        }
        let lines: String = processes
            .iter()
            .map(|p| format!("{} {} {}\n", p.id, p.pid, p.start_ticks))
            .collect();
        let out = self
            .run_internal(
                container,
                &scripts::process_status(),
                vec![("CROGIA_PROCS".to_string(), lines)],
            )
            .await?;
        let mut by_id = std::collections::HashMap::new();
        for line in out.lines() {
            let mut f = line.split_whitespace();
            let (Some(id), Some(word)) = (f.next(), f.next()) else {
                continue;
            };
            let state = match word {
                "running" => ProcessState::Running,
                _ => ProcessState::Exited {
                    exit_code: f.next().and_then(|c| c.parse().ok()),
                },
            };
            by_id.insert(id.to_string(), state);
        }
        Ok(processes
            .iter()
            .map(|p| {
                by_id
                    .get(&p.id)
                    .copied()
                    .unwrap_or(ProcessState::Exited { exit_code: None })
            })
            .collect())
    }

    /// Sends SIGTERM to the process and its descendants, then SIGKILL to what
    /// is left after `sandbox.stop_grace_secs`.
    #[tracing::instrument(skip(self, process), fields(pid = process.pid, cmd = %process.cmd))]
    pub async fn stop_process(
        &self,
        container: &str,
        process: &BackgroundProcess,
    ) -> Result<StopOutcome, SandboxError> {
        let env = vec![
            ("CROGIA_PID".to_string(), process.pid.to_string()),
            ("CROGIA_PROC_ID".to_string(), process.id.clone()),
            ("CROGIA_START".to_string(), process.start_ticks.to_string()),
            (
                "CROGIA_GRACE_TENTHS".to_string(),
                (self.config.stop_grace_secs * 10).to_string(),
            ),
        ];
        let out = self
            .run_internal(container, &scripts::stop_process(), env)
            .await?;
        match out.trim() {
            "not-running" => Ok(StopOutcome::NotRunning),
            "terminated" => Ok(StopOutcome::Terminated),
            "killed" => Ok(StopOutcome::Killed),
            other => Err(SandboxError::Engine(format!(
                "unexpected answer stopping the process: {other:?}"
            ))),
        }
    }
}
