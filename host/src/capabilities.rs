//! What one session can do: run commands, read and write files, search, and
//! manage background processes — the single implementation behind both the
//! REST handlers and the plugins' host functions.
//!
//! Everything is scoped to one session's container and workspace, and all
//! of it is done inside the container by its agent: the server opens no
//! file of a workspace. Errors are
//! [`CapabilityError`], which the REST layer maps to status codes and the
//! plugin layer to WIT error codes.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crogia_sandbox_agent::protocol::SearchRequest;

use crate::config::WorkspaceConfig;
use crate::sandbox::{
    AgentError, BackgroundProcess, ExecChunk, ExecOutput, ExecRequest, ProcessState, ProcessStatus,
    Sandbox, SandboxError, StdioProgram, StopOutcome, Terminal,
};
pub use crate::sandbox::{
    CheckpointDiff, CheckpointExport, FileDiff, FileStatus, Imported, Restored, SkippedFile, Taken,
};
use crate::workspace::{
    EntryInfo, GrepMatch, Metadata, SearchError, SearchOptions, Workspace, WorkspaceError,
};

#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error("no process with pid {0} in this session")]
    ProcessNotFound(u32),
    /// The session's container is gone: nothing can run in it any more.
    #[error("Session {id} is unusable: {reason}. Delete it and create a new one.")]
    Unusable { id: String, reason: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<AgentError> for CapabilityError {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::Sandbox(e) => Self::Sandbox(e),
            AgentError::Refused(SearchError::Workspace(e)) => Self::Workspace(e),
            AgentError::Refused(e) => Self::Search(e),
        }
    }
}

/// Saves a newly started process before anyone is told about it.
pub type ProcessPersister = Arc<
    dyn Fn(BackgroundProcess) -> futures_util::future::BoxFuture<'static, Result<(), String>>
        + Send
        + Sync,
>;

/// The background processes started in one session.
pub struct ProcessTable {
    processes: Mutex<Vec<BackgroundProcess>>,
    persist: Option<ProcessPersister>,
}

impl std::fmt::Debug for ProcessTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessTable").finish_non_exhaustive()
    }
}

impl ProcessTable {
    pub fn new(initial: Vec<BackgroundProcess>, persist: Option<ProcessPersister>) -> Self {
        Self {
            processes: Mutex::new(initial),
            persist,
        }
    }

    pub async fn snapshot(&self) -> Vec<BackgroundProcess> {
        self.processes.lock().await.clone()
    }

    async fn push(&self, p: BackgroundProcess) -> Result<(), CapabilityError> {
        let mut list = self.processes.lock().await;
        if let Some(persist) = &self.persist {
            persist(p.clone())
                .await
                .map_err(CapabilityError::Internal)?;
        }
        list.push(p);
        Ok(())
    }

    async fn find(&self, pid: u32) -> Option<BackgroundProcess> {
        // The newest record wins if the kernel reused a pid.
        self.processes
            .lock()
            .await
            .iter()
            .rev()
            .find(|p| p.pid == pid)
            .cloned()
    }
}

/// Whether a session can still run commands, and why not when it cannot.
/// Shared by the session (which reports it) and its capabilities (which
/// refuse work that needs the container).
#[derive(Debug, Default)]
pub struct Health {
    broken: std::sync::Mutex<Option<String>>,
}

impl Health {
    pub fn new(broken: Option<String>) -> Self {
        Self {
            broken: std::sync::Mutex::new(broken),
        }
    }

    /// Why the session is broken, when it is.
    pub fn broken(&self) -> Option<String> {
        self.broken.lock().unwrap().clone()
    }

    /// Records that the session is broken. False when it already was.
    pub fn mark_broken(&self, reason: &str) -> bool {
        let mut broken = self.broken.lock().unwrap();
        if broken.is_some() {
            return false;
        }
        *broken = Some(reason.to_string());
        true
    }
}

/// The capabilities of one session.
#[derive(Debug, Clone)]
pub struct Capabilities {
    session_id: Arc<str>,
    sandbox: Sandbox,
    container_id: Arc<str>,
    workspace: Arc<Workspace>,
    processes: Arc<ProcessTable>,
    limits: Arc<WorkspaceConfig>,
    health: Arc<Health>,
}

impl Capabilities {
    pub fn new(
        session_id: &str,
        sandbox: Sandbox,
        container_id: &str,
        workspace: Arc<Workspace>,
        processes: ProcessTable,
        limits: Arc<WorkspaceConfig>,
        health: Arc<Health>,
    ) -> Self {
        Self {
            session_id: session_id.into(),
            sandbox,
            container_id: container_id.into(),
            workspace,
            processes: Arc::new(processes),
            limits,
            health,
        }
    }

    /// Whether the session can still run commands.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Where the workspace lives (a host directory or an engine's volume).
    pub fn workspace(&self) -> &Workspace {
        &self.workspace
    }

    /// Fails when the session's container is gone. Every capability that
    /// needs the container checks this first, for REST handlers and plugins
    /// alike.
    pub fn check_usable(&self) -> Result<(), CapabilityError> {
        match self.health.broken() {
            Some(reason) => Err(CapabilityError::Unusable {
                id: self.session_id.to_string(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Runs a command in the container (starting the container first if it
    /// was stopped).
    pub async fn exec(
        &self,
        command: &str,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, CapabilityError> {
        self.check_usable()?;
        let mut request = ExecRequest::new(command);
        request.timeout = timeout;
        match self.sandbox.exec(&self.container_id, request.clone()).await {
            Err(SandboxError::NotRunning(_)) => {
                self.sandbox.ensure_running(&self.container_id).await?;
                Ok(self.sandbox.exec(&self.container_id, request).await?)
            }
            other => Ok(other?),
        }
    }

    /// Runs a command, its output streamed as it comes (see
    /// [`Sandbox::exec_stream`]).
    pub async fn exec_stream(
        &self,
        command: &str,
        timeout: Option<Duration>,
    ) -> Result<impl futures_util::Stream<Item = ExecChunk> + Send + 'static, CapabilityError> {
        let mut request = ExecRequest::new(command);
        request.timeout = timeout;
        self.in_container(|| {
            self.sandbox
                .exec_stream(&self.container_id, request.clone())
        })
        .await
    }

    /// A whole file, refused over `workspace.max_read_bytes`.
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>, CapabilityError> {
        let limit = self.limits.max_read_bytes;
        self.in_container(|| self.sandbox.read_file(&self.container_id, path, limit))
            .await
    }

    pub async fn write_file(&self, path: &str, data: Vec<u8>) -> Result<(), CapabilityError> {
        // Shared, not copied, if the write is sent a second time.
        let data = bytes::Bytes::from(data);
        self.in_container(|| {
            self.sandbox
                .write_file(&self.container_id, path, data.clone())
        })
        .await
    }

    pub async fn list_dir(&self, path: &str) -> Result<Vec<EntryInfo>, CapabilityError> {
        self.in_container(|| self.sandbox.list_dir(&self.container_id, path))
            .await
    }

    pub async fn stat(&self, path: &str) -> Result<Metadata, CapabilityError> {
        self.in_container(|| self.sandbox.stat(&self.container_id, path))
            .await
    }

    pub async fn remove(&self, path: &str) -> Result<(), CapabilityError> {
        self.in_container(|| self.sandbox.remove_path(&self.container_id, path))
            .await
    }

    /// Files under `options.path` matching the glob `pattern`.
    pub async fn glob(
        &self,
        pattern: &str,
        options: SearchOptions,
    ) -> Result<Vec<String>, CapabilityError> {
        let ask = self.search_request(pattern, options);
        self.in_container(|| self.sandbox.glob(&self.container_id, &ask))
            .await
    }

    /// Lines matching the regular expression `pattern`.
    pub async fn grep(
        &self,
        pattern: &str,
        options: SearchOptions,
    ) -> Result<Vec<GrepMatch>, CapabilityError> {
        let ask = self.search_request(pattern, options);
        self.in_container(|| self.sandbox.grep(&self.container_id, &ask))
            .await
    }

    fn search_request(&self, pattern: &str, options: SearchOptions) -> SearchRequest {
        SearchRequest {
            pattern: pattern.to_string(),
            options,
            limits: self.limits.as_ref().into(),
        }
    }

    /// Runs `op` in the container through its agent, starting the
    /// container first if it was stopped (say, by an engine restart).
    async fn in_container<T, F>(&self, op: impl Fn() -> F) -> Result<T, CapabilityError>
    where
        F: Future<Output = Result<T, AgentError>>,
    {
        self.check_usable()?;
        match op().await {
            Err(AgentError::Sandbox(SandboxError::NotRunning(_))) => {
                self.sandbox.ensure_running(&self.container_id).await?;
                Ok(op().await?)
            }
            other => Ok(other?),
        }
    }

    /// Opens an interactive terminal (a login shell in the workspace) of
    /// `cols` x `rows`.
    pub async fn open_terminal(&self, cols: u16, rows: u16) -> Result<Terminal, CapabilityError> {
        self.in_container(|| self.sandbox.open_terminal(&self.container_id, cols, rows))
            .await
    }

    /// Records the workspace as a checkpoint after `parent`, leaving out
    /// files over `max_file_bytes`.
    pub async fn take_checkpoint(
        &self,
        parent: Option<&str>,
        message: &str,
        max_file_bytes: u64,
    ) -> Result<Taken, CapabilityError> {
        self.in_container(|| {
            self.sandbox
                .take_checkpoint(&self.container_id, parent, message, max_file_bytes)
        })
        .await
    }

    /// What changed from checkpoint `from` to `to` (the workspace now when
    /// `None`).
    pub async fn checkpoint_diff(
        &self,
        from: &str,
        to: Option<&str>,
        max_file_bytes: u64,
    ) -> Result<CheckpointDiff, CapabilityError> {
        self.in_container(|| {
            self.sandbox
                .checkpoint_diff(&self.container_id, from, to, max_file_bytes)
        })
        .await
    }

    /// Puts the workspace back as checkpoint `id` recorded it.
    pub async fn restore_checkpoint(&self, id: &str) -> Result<Restored, CapabilityError> {
        self.in_container(|| self.sandbox.restore_checkpoint(&self.container_id, id))
            .await
    }

    /// Opens checkpoint `id`'s export, with its history, read ahead while
    /// a fork's sandbox is made (see [`Sandbox::export_checkpoint`]).
    pub async fn export_checkpoint(&self, id: &str) -> Result<CheckpointExport, CapabilityError> {
        self.in_container(|| self.sandbox.export_checkpoint(&self.container_id, id))
            .await
    }

    /// Takes another session's checkpoint export into this session's
    /// checkpoint store (a fork's sandbox); the workspace is then as the
    /// checkpoint recorded it.
    pub async fn import_fork(&self, export: CheckpointExport) -> Result<Imported, CapabilityError> {
        self.check_usable()?;
        Ok(self
            .sandbox
            .import_checkpoint(&self.container_id, export, true)
            .await?)
    }

    /// Starts `argv` (no shell) in the container's `cwd` with `env` added,
    /// its standard streams piped to the caller (an MCP stdio server).
    pub async fn open_stdio(
        &self,
        argv: &[String],
        env: &[(String, String)],
        cwd: &str,
    ) -> Result<StdioProgram, CapabilityError> {
        self.in_container(|| self.sandbox.open_stdio(&self.container_id, argv, env, cwd))
            .await
    }

    /// Gives an open terminal a new size.
    pub async fn resize_terminal(
        &self,
        id: u64,
        cols: u16,
        rows: u16,
    ) -> Result<(), CapabilityError> {
        self.check_usable()?;
        Ok(self
            .sandbox
            .resize_terminal(&self.container_id, id, cols, rows)
            .await?)
    }

    pub async fn start_process(&self, command: &str) -> Result<BackgroundProcess, CapabilityError> {
        self.check_usable()?;
        let p = match self
            .sandbox
            .start_process(&self.container_id, command)
            .await
        {
            Err(SandboxError::NotRunning(_)) => {
                self.sandbox.ensure_running(&self.container_id).await?;
                self.sandbox
                    .start_process(&self.container_id, command)
                    .await?
            }
            other => other?,
        };
        self.processes.push(p.clone()).await?;
        Ok(p)
    }

    /// Every process started in this session, with its current state. In a
    /// session whose container is gone, whatever was started is gone too.
    pub async fn list_processes(&self) -> Result<Vec<ProcessStatus>, CapabilityError> {
        let records = self.processes.snapshot().await;
        let states = if self.check_usable().is_err() {
            vec![ProcessState::Exited { exit_code: None }; records.len()]
        } else {
            match self
                .sandbox
                .process_states(&self.container_id, &records)
                .await
            {
                Ok(states) => states,
                // A stopped container runs nothing.
                Err(SandboxError::NotRunning(_)) => {
                    vec![ProcessState::Exited { exit_code: None }; records.len()]
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(records
            .into_iter()
            .zip(states)
            .map(|(process, state)| ProcessStatus { process, state })
            .collect())
    }

    pub async fn stop_process(&self, pid: u32) -> Result<StopOutcome, CapabilityError> {
        self.check_usable()?;
        let p = self
            .processes
            .find(pid)
            .await
            .ok_or(CapabilityError::ProcessNotFound(pid))?;
        match self.sandbox.stop_process(&self.container_id, &p).await {
            Err(SandboxError::NotRunning(_)) => Ok(StopOutcome::NotRunning),
            other => Ok(other?),
        }
    }

    /// The last `lines` lines of a process's log.
    pub async fn process_logs(&self, pid: u32, lines: usize) -> Result<String, CapabilityError> {
        let p = self
            .processes
            .find(pid)
            .await
            .ok_or(CapabilityError::ProcessNotFound(pid))?;
        match self
            .in_container(|| self.sandbox.tail(&self.container_id, &p.log, lines))
            .await
        {
            // Started but has not written anything yet.
            Err(CapabilityError::Workspace(WorkspaceError::NotFound(_))) => Ok(String::new()),
            other => other,
        }
    }
}
