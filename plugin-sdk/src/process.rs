//! Background processes in the session's container (capability
//! `processes`).

use std::fmt;
use std::time::SystemTime;

use crate::bindings::crogia::plugin::processes as host;
use crate::{ExitCode, HostError, system_time};

/// Whether a process still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcessStatus {
    Running,
    /// With its exit code when it is known.
    Exited {
        exit_code: Option<ExitCode>,
    },
}

impl fmt::Display for ProcessStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Running => f.write_str("running"),
            Self::Exited {
                exit_code: Some(code),
            } => write!(f, "exited ({code})"),
            Self::Exited { exit_code: None } => f.write_str("exited"),
        }
    }
}

/// A background process started in the session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessInfo {
    pub pid: u32,
    pub cmd: String,
    pub status: ProcessStatus,
    /// Its log file, relative to the workspace.
    pub log: String,
    pub started: SystemTime,
}

impl From<host::ProcessInfo> for ProcessInfo {
    fn from(p: host::ProcessInfo) -> Self {
        Self {
            pid: p.pid,
            cmd: p.cmd,
            status: match p.status {
                host::ProcessStatus::Running => ProcessStatus::Running,
                host::ProcessStatus::Exited(exit_code) => ProcessStatus::Exited { exit_code },
            },
            log: p.log,
            started: system_time(p.started),
        }
    }
}

/// What stopping a process did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopOutcome {
    /// It had already exited.
    NotRunning,
    /// It (and its children) exited after SIGTERM.
    Terminated,
    /// It outlived the grace period and was killed with SIGKILL.
    Killed,
}

/// Starts `command` detached; its output goes to `.agent_logs/<id>.log`.
pub fn start(command: &str) -> Result<ProcessInfo, HostError> {
    Ok(host::start(command)?.into())
}

/// Every process started in this session, with its status.
pub fn list() -> Result<Vec<ProcessInfo>, HostError> {
    Ok(host::list()?.into_iter().map(Into::into).collect())
}

/// SIGTERM, then SIGKILL after the server's grace period.
pub fn stop(pid: u32) -> Result<StopOutcome, HostError> {
    Ok(match host::stop(pid)? {
        host::StopOutcome::NotRunning => StopOutcome::NotRunning,
        host::StopOutcome::Terminated => StopOutcome::Terminated,
        host::StopOutcome::Killed => StopOutcome::Killed,
    })
}

/// The last `lines` lines of the process's log.
pub fn logs(pid: u32, lines: u32) -> Result<String, HostError> {
    Ok(host::logs(pid, lines)?)
}
