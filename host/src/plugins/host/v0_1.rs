//! Contract 0.1 (`crogia:plugin@0.1.0`): the first contract, kept so that
//! plugins built for it keep loading and working. It has no capability
//! declaration: its tools may use every capability the operator leaves
//! them, and a refused call fails with `permission-denied` (0.1 has no
//! `denied`).

use std::time::{Duration, UNIX_EPOCH};

use wasmtime::Store;

use super::{Capability, Code, Failure, GuestFailure, PluginState, RawSpec};
use crate::sandbox::ProcessState;
use crate::workspace::{EntryKind, SearchOptions};

wasmtime::component::bindgen!({
    path: "../plugin-sdk/wit/v0.1.0",
    world: "plugin",
    imports: { default: async },
    exports: { default: async },
});

use crogia::plugin::types::{ErrorCode, HostError};
use crogia::plugin::{exec, files, log, processes, search, types};
use exports::crogia::plugin::tool::ToolError;

pub(super) async fn tools(
    pre: &PluginPre<PluginState>,
    store: &mut Store<PluginState>,
) -> anyhow::Result<Vec<RawSpec>> {
    let instance = pre.instantiate_async(&mut *store).await?;
    let specs = instance.crogia_plugin_tool().call_tools(store).await?;
    Ok(specs
        .into_iter()
        .map(|s| RawSpec {
            name: s.name,
            description: s.description,
            parameters_schema: s.parameters_schema,
            capabilities: None,
            subject: None,
        })
        .collect())
}

pub(super) async fn invoke(
    pre: &PluginPre<PluginState>,
    store: &mut Store<PluginState>,
    tool: &str,
    args_json: &str,
    config_json: &str,
) -> anyhow::Result<Result<String, GuestFailure>> {
    let instance = pre.instantiate_async(&mut *store).await?;
    let result = instance
        .crogia_plugin_tool()
        .call_invoke(store, tool, args_json, config_json)
        .await?;
    Ok(result.map_err(|e| match e {
        ToolError::InvalidArguments(m) => GuestFailure::InvalidArguments(m),
        ToolError::UnknownTool(m) => GuestFailure::UnknownTool(m),
        ToolError::Failed(m) => GuestFailure::Failed(m),
    }))
}

impl From<Failure> for HostError {
    fn from(f: Failure) -> Self {
        let code = match f.code {
            Code::InvalidInput => ErrorCode::InvalidInput,
            Code::NotFound => ErrorCode::NotFound,
            Code::PermissionDenied | Code::Denied => ErrorCode::PermissionDenied,
            Code::TooLarge => ErrorCode::TooLarge,
            Code::Unavailable => ErrorCode::Unavailable,
            Code::Internal => ErrorCode::Internal,
        };
        HostError {
            code,
            message: f.message,
        }
    }
}

fn fail(e: impl Into<Failure>) -> HostError {
    e.into().into()
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
        let caps = self.session(Capability::Exec).map_err(fail)?;
        let out = caps.exec(&command, timeout).await.map_err(fail)?;
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
        let caps = self.session(Capability::FilesRead).map_err(fail)?;
        caps.read_file(&path).await.map_err(fail)
    }

    async fn write(&mut self, path: String, data: Vec<u8>) -> Result<(), HostError> {
        let caps = self.session(Capability::FilesWrite).map_err(fail)?;
        caps.write_file(&path, data).await.map_err(fail)
    }

    async fn list(&mut self, path: String) -> Result<Vec<files::Entry>, HostError> {
        let caps = self.session(Capability::FilesRead).map_err(fail)?;
        let entries = caps.list_dir(&path).await.map_err(fail)?;
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
        let caps = self.session(Capability::FilesRead).map_err(fail)?;
        let m = caps.stat(&path).await.map_err(fail)?;
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
        // 0 meant "no limit of the plugin's own" in 0.1.
        max_results: (o.max_results > 0).then_some(o.max_results as usize),
    }
}

impl search::Host for PluginState {
    async fn glob(
        &mut self,
        pattern: String,
        options: search::SearchOptions,
    ) -> Result<Vec<String>, HostError> {
        let caps = self.session(Capability::FilesRead).map_err(fail)?;
        caps.glob(&pattern, search_options(options))
            .await
            .map_err(fail)
    }

    async fn grep(
        &mut self,
        pattern: String,
        options: search::SearchOptions,
    ) -> Result<Vec<search::GrepMatch>, HostError> {
        let caps = self.session(Capability::FilesRead).map_err(fail)?;
        let found = caps
            .grep(&pattern, search_options(options))
            .await
            .map_err(fail)?;
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
        let caps = self.session(Capability::Processes).map_err(fail)?;
        let p = caps.start_process(&command).await.map_err(fail)?;
        Ok(process_info(&p, ProcessState::Running))
    }

    async fn list(&mut self) -> Result<Vec<processes::ProcessInfo>, HostError> {
        let caps = self.session(Capability::Processes).map_err(fail)?;
        let list = caps.list_processes().await.map_err(fail)?;
        Ok(list
            .iter()
            .map(|s| process_info(&s.process, s.state))
            .collect())
    }

    async fn stop(&mut self, pid: u32) -> Result<String, HostError> {
        let caps = self.session(Capability::Processes).map_err(fail)?;
        let outcome = caps.stop_process(pid).await.map_err(fail)?;
        Ok(outcome.describe(pid))
    }

    async fn logs(&mut self, pid: u32, lines: u32) -> Result<String, HostError> {
        let caps = self.session(Capability::Processes).map_err(fail)?;
        caps.process_logs(pid, lines as usize).await.map_err(fail)
    }
}

impl log::Host for PluginState {
    async fn log(&mut self, level: log::Level, message: String) {
        let level = match level {
            log::Level::Trace => tracing::Level::TRACE,
            log::Level::Debug => tracing::Level::DEBUG,
            log::Level::Info => tracing::Level::INFO,
            log::Level::Warn => tracing::Level::WARN,
            log::Level::Error => tracing::Level::ERROR,
        };
        self.guest_log(level, &message);
    }
}
