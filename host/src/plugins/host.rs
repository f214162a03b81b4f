//! The host side of the WIT contract: bindings generated from
//! `plugin-sdk/wit` (the same files the SDK uses) and the host functions,
//! each a thin adapter over the calling session's [`Capabilities`].

use std::time::{Duration, UNIX_EPOCH};

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::capabilities::{Capabilities, CapabilityError};
use crate::sandbox::{ProcessState, SandboxError};
use crate::workspace::{EntryKind, WorkspaceError};
use crate::workspace::{SearchError, SearchOptions};

wasmtime::component::bindgen!({
    path: "../plugin-sdk/wit",
    world: "plugin",
    imports: { default: async },
    exports: { default: async },
});

use crogia::plugin::types::{ErrorCode, HostError};
use crogia::plugin::{exec, files, log, processes, search, types};

/// Most bytes of guest stdout or stderr kept per invocation.
const GUEST_OUTPUT_CAP: usize = 1024 * 1024;

/// The data of one plugin `Store`: one invocation of one tool.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: MemoryLimiter,
    /// The calling session; `None` while the host asks a plugin for its tool
    /// specs, when no session is involved.
    caps: Option<Capabilities>,
    plugin: String,
    pub(super) stdout: MemoryOutputPipe,
    pub(super) stderr: MemoryOutputPipe,
}

impl PluginState {
    /// A state with no ambient access: no preopened directories, no
    /// environment, no arguments, no sockets, no name lookup.
    pub fn new(plugin: &str, caps: Option<Capabilities>, memory_bytes: usize) -> Self {
        let stdout = MemoryOutputPipe::new(GUEST_OUTPUT_CAP);
        let stderr = MemoryOutputPipe::new(GUEST_OUTPUT_CAP);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_bytes),
            caps,
            plugin: plugin.to_string(),
            stdout,
            stderr,
        }
    }

    fn caps(&self) -> Result<&Capabilities, HostError> {
        self.caps.as_ref().ok_or_else(|| HostError {
            code: ErrorCode::Unavailable,
            message: "host functions are not available while a plugin lists its tools".into(),
        })
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// [`StoreLimits`] that also remembers whether it refused memory, so a trap
/// that follows can be reported as `out_of_memory`.
pub(super) struct MemoryLimiter {
    inner: StoreLimits,
    memory_bytes: usize,
    pub(super) hit_limit: bool,
}

impl MemoryLimiter {
    fn new(memory_bytes: usize) -> Self {
        let inner = wasmtime::StoreLimitsBuilder::new()
            .memory_size(memory_bytes)
            .instances(64)
            .tables(64)
            .build();
        Self {
            inner,
            memory_bytes,
            hit_limit: false,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = self.inner.memory_growing(current, desired, maximum)?;
        if !ok || desired > self.memory_bytes {
            self.hit_limit = true;
            return Ok(false);
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }
    fn tables(&self) -> usize {
        self.inner.tables()
    }
    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

fn host_error(e: CapabilityError) -> HostError {
    let code = match &e {
        CapabilityError::Sandbox(s) => match s {
            SandboxError::Unavailable(_) | SandboxError::NotRunning(_) => ErrorCode::Unavailable,
            SandboxError::NotFound(_) => ErrorCode::NotFound,
            SandboxError::InvalidInput(_) => ErrorCode::InvalidInput,
            SandboxError::Conflict(_) | SandboxError::Engine(_) => ErrorCode::Internal,
        },
        CapabilityError::Workspace(w) | CapabilityError::Search(SearchError::Workspace(w)) => {
            match w {
                WorkspaceError::InvalidPath { .. }
                | WorkspaceError::IsADirectory(_)
                | WorkspaceError::NotADirectory(_)
                | WorkspaceError::SpecialFile(_) => ErrorCode::InvalidInput,
                WorkspaceError::OutsideWorkspace(_) | WorkspaceError::Refused { .. } => {
                    ErrorCode::PermissionDenied
                }
                WorkspaceError::NotFound(_) => ErrorCode::NotFound,
                WorkspaceError::TooLarge { .. } => ErrorCode::TooLarge,
                WorkspaceError::Io { .. } => ErrorCode::Internal,
            }
        }
        CapabilityError::Search(_) => ErrorCode::InvalidInput,
        CapabilityError::ProcessNotFound(_) => ErrorCode::NotFound,
        CapabilityError::Unusable { .. } => ErrorCode::Unavailable,
        CapabilityError::Internal(_) => ErrorCode::Internal,
    };
    HostError {
        code,
        message: e.to_string(),
    }
}

fn millis(t: Option<std::time::SystemTime>) -> Option<i64> {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
}

fn entry_kind(k: EntryKind) -> files::EntryKind {
    match k {
        EntryKind::File => files::EntryKind::File,
        EntryKind::Directory => files::EntryKind::Directory,
        EntryKind::Symlink => files::EntryKind::Symlink,
        EntryKind::Other => files::EntryKind::Other,
    }
}

impl types::Host for PluginState {}

impl exec::Host for PluginState {
    async fn run(
        &mut self,
        command: String,
        timeout_ms: Option<u32>,
    ) -> Result<exec::ExecOutput, HostError> {
        let timeout = timeout_ms.map(|ms| Duration::from_millis(ms.into()));
        let out = self
            .caps()?
            .exec(&command, timeout)
            .await
            .map_err(host_error)?;
        Ok(exec::ExecOutput {
            exit_code: out.exit_code,
            stdout: out.stdout,
            stderr: out.stderr,
            timed_out: out.timed_out,
            truncated: out.truncated,
        })
    }
}

impl files::Host for PluginState {
    async fn read(&mut self, path: String) -> Result<Vec<u8>, HostError> {
        self.caps()?.read_file(&path).await.map_err(host_error)
    }

    async fn write(&mut self, path: String, data: Vec<u8>) -> Result<(), HostError> {
        self.caps()?
            .write_file(&path, data)
            .await
            .map_err(host_error)
    }

    async fn list(&mut self, path: String) -> Result<Vec<files::Entry>, HostError> {
        let entries = self.caps()?.list_dir(&path).await.map_err(host_error)?;
        Ok(entries
            .into_iter()
            .map(|e| files::Entry {
                name: e.name,
                kind: entry_kind(e.kind),
                size: e.size,
                modified_ms: millis(e.modified),
            })
            .collect())
    }

    async fn stat(&mut self, path: String) -> Result<files::Metadata, HostError> {
        let m = self.caps()?.stat(&path).await.map_err(host_error)?;
        Ok(files::Metadata {
            kind: entry_kind(m.kind),
            size: m.size,
            modified_ms: millis(m.modified),
        })
    }
}

fn search_options(o: search::SearchOptions) -> SearchOptions {
    SearchOptions {
        path: o.path,
        file_types: o.file_types,
        max_results: (o.max_results > 0).then_some(o.max_results as usize),
    }
}

impl search::Host for PluginState {
    async fn glob(
        &mut self,
        pattern: String,
        options: search::SearchOptions,
    ) -> Result<Vec<String>, HostError> {
        self.caps()?
            .glob(&pattern, search_options(options))
            .await
            .map_err(host_error)
    }

    async fn grep(
        &mut self,
        pattern: String,
        options: search::SearchOptions,
    ) -> Result<Vec<search::GrepMatch>, HostError> {
        let found = self
            .caps()?
            .grep(&pattern, search_options(options))
            .await
            .map_err(host_error)?;
        Ok(found
            .into_iter()
            .map(|m| search::GrepMatch {
                file: m.file,
                line: m.line.try_into().unwrap_or(u32::MAX),
                content: m.content,
            })
            .collect())
    }
}

fn process_info(
    p: &crate::sandbox::BackgroundProcess,
    state: ProcessState,
) -> processes::ProcessInfo {
    let (status, exit_code) = match state {
        ProcessState::Running => ("running", None),
        ProcessState::Exited { exit_code } => ("exited", exit_code),
    };
    processes::ProcessInfo {
        pid: p.pid,
        cmd: p.cmd.clone(),
        status: status.into(),
        exit_code,
        log: p.log.clone(),
        started: crate::time::timestamp(p.started),
    }
}

impl processes::Host for PluginState {
    async fn start(&mut self, command: String) -> Result<processes::ProcessInfo, HostError> {
        let p = self
            .caps()?
            .start_process(&command)
            .await
            .map_err(host_error)?;
        Ok(process_info(&p, ProcessState::Running))
    }

    async fn list(&mut self) -> Result<Vec<processes::ProcessInfo>, HostError> {
        let list = self.caps()?.list_processes().await.map_err(host_error)?;
        Ok(list
            .iter()
            .map(|s| process_info(&s.process, s.state))
            .collect())
    }

    async fn stop(&mut self, pid: u32) -> Result<String, HostError> {
        let outcome = self.caps()?.stop_process(pid).await.map_err(host_error)?;
        Ok(outcome.describe(pid))
    }

    async fn logs(&mut self, pid: u32, lines: u32) -> Result<String, HostError> {
        self.caps()?
            .process_logs(pid, lines as usize)
            .await
            .map_err(host_error)
    }
}

impl log::Host for PluginState {
    async fn log(&mut self, level: log::Level, message: String) {
        let plugin = self.plugin.as_str();
        match level {
            log::Level::Trace => tracing::trace!(plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}
