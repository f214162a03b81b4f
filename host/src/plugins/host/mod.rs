//! The host side of the WIT contracts: one binding per contract version
//! (as Zed keeps `since_v0.x`), generated from `plugin-sdk/wit/` (the same
//! files the SDK uses), and the host functions, each a thin adapter over the
//! calling session's [`Capabilities`].
//!
//! - this module: the state of one invocation, the capability check every
//!   host function makes first, failures in version-neutral form, and
//!   [`Bindings`], which hides which version a plugin speaks;
//! - `v0_1.rs`, `v0_2.rs`: each version's bindings and host functions.

mod v0_1;
mod v0_2;

use std::collections::BTreeSet;

use wasmtime::component::{Component, HasSelf, InstancePre, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, Store, StoreLimits};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::capabilities::{Capabilities, CapabilityError};
use crate::sandbox::SandboxError;
use crate::workspace::{SearchError, WorkspaceError};
pub use crogia_plugin_contract::Capability;

/// Adds every contract version's host functions to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<PluginState>) -> anyhow::Result<()> {
    v0_1::Plugin::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    v0_2::Plugin::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}

/// A plugin's tool as its plugin describes it, in any contract version.
pub(crate) struct RawSpec {
    pub name: String,
    pub description: String,
    pub parameters_schema: String,
    /// `None`: contract 0.1, which has no declaration.
    pub capabilities: Option<Vec<Capability>>,
    pub subject: Option<String>,
}

/// How a tool's own code reported failure, in any contract version.
pub(crate) enum GuestFailure {
    InvalidArguments(String),
    UnknownTool(String),
    Failed(String),
    /// A host call failed and the tool passed that on (contract 0.2).
    Host {
        code: Code,
        message: String,
    },
}

/// A plugin ready to be instantiated, in the contract version it speaks.
pub(crate) enum Bindings {
    V0_1(v0_1::PluginPre<PluginState>),
    V0_2(v0_2::PluginPre<PluginState>),
}

impl Bindings {
    /// Prepares `component`, built for contract `version`.
    pub(crate) fn new(
        version: &str,
        linker: &Linker<PluginState>,
        component: &Component,
    ) -> Result<Self, String> {
        let pre: InstancePre<PluginState> = linker
            .instantiate_pre(component)
            .map_err(|e| format!("imports something this server does not provide: {e:#}"))?;
        let wrong = |e: &dyn std::fmt::Display| format!("wrong world: {e:#}");
        match version {
            "0.1.0" => Ok(Self::V0_1(
                v0_1::PluginPre::new(pre).map_err(|e| wrong(&e))?,
            )),
            "0.2.0" => Ok(Self::V0_2(
                v0_2::PluginPre::new(pre).map_err(|e| wrong(&e))?,
            )),
            other => Err(format!("no binding for contract {other}")),
        }
    }

    /// The contract version the plugin speaks.
    pub(crate) fn version(&self) -> &'static str {
        match self {
            Self::V0_1(_) => "0.1.0",
            Self::V0_2(_) => "0.2.0",
        }
    }

    pub(crate) async fn tools(
        &self,
        store: &mut Store<PluginState>,
    ) -> anyhow::Result<Vec<RawSpec>> {
        match self {
            Self::V0_1(pre) => v0_1::tools(pre, store).await,
            Self::V0_2(pre) => v0_2::tools(pre, store).await,
        }
    }

    pub(crate) async fn invoke(
        &self,
        store: &mut Store<PluginState>,
        tool: &str,
        args_json: &str,
        config_json: &str,
    ) -> anyhow::Result<Result<String, GuestFailure>> {
        match self {
            Self::V0_1(pre) => v0_1::invoke(pre, store, tool, args_json, config_json).await,
            Self::V0_2(pre) => v0_2::invoke(pre, store, tool, args_json, config_json).await,
        }
    }
}

/// Why a host function failed, before it is put in a contract version's
/// terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    InvalidInput,
    NotFound,
    PermissionDenied,
    Denied,
    TooLarge,
    Unavailable,
    Internal,
}

impl Code {
    /// The name the model and the events see, as in the WIT file.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::InvalidInput => "invalid-input",
            Self::NotFound => "not-found",
            Self::PermissionDenied => "permission-denied",
            Self::Denied => "denied",
            Self::TooLarge => "too-large",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

/// A failed host call in version-neutral form.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub code: Code,
    pub message: String,
}

impl From<CapabilityError> for Failure {
    fn from(e: CapabilityError) -> Self {
        let code = match &e {
            CapabilityError::Sandbox(s) => match s {
                SandboxError::Unavailable(_) | SandboxError::NotRunning(_) => Code::Unavailable,
                SandboxError::NotFound(_) => Code::NotFound,
                SandboxError::InvalidInput(_) => Code::InvalidInput,
                SandboxError::Conflict(_) | SandboxError::Engine(_) => Code::Internal,
            },
            CapabilityError::Workspace(w) | CapabilityError::Search(SearchError::Workspace(w)) => {
                match w {
                    WorkspaceError::InvalidPath { .. }
                    | WorkspaceError::IsADirectory(_)
                    | WorkspaceError::NotADirectory(_)
                    | WorkspaceError::SpecialFile(_) => Code::InvalidInput,
                    WorkspaceError::OutsideWorkspace(_) | WorkspaceError::Refused { .. } => {
                        Code::PermissionDenied
                    }
                    WorkspaceError::NotFound(_) => Code::NotFound,
                    WorkspaceError::TooLarge { .. } => Code::TooLarge,
                    WorkspaceError::Io { .. } => Code::Internal,
                }
            }
            CapabilityError::Search(_) => Code::InvalidInput,
            CapabilityError::ProcessNotFound(_) => Code::NotFound,
            CapabilityError::Unusable { .. } => Code::Unavailable,
            CapabilityError::Internal(_) => Code::Internal,
        };
        Self {
            code,
            message: e.to_string(),
        }
    }
}

/// The tool being invoked, and what it may ask of the host.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub tool: String,
    /// What the tool declared; `None` for contract 0.1 (no declaration).
    pub declared: Option<Vec<Capability>>,
    /// What it may use: its declaration narrowed by the operator.
    pub allowed: BTreeSet<Capability>,
}

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
    /// What the invoked tool may use; `None` while listing tools.
    grant: Option<Grant>,
    plugin: String,
    pub(super) stdout: MemoryOutputPipe,
    pub(super) stderr: MemoryOutputPipe,
}

impl PluginState {
    /// A state with no ambient access: no preopened directories, no
    /// environment, no arguments, no sockets, no name lookup.
    pub(crate) fn new(
        plugin: &str,
        call: Option<(Capabilities, Grant)>,
        memory_bytes: usize,
    ) -> Self {
        let (caps, grant) = call.unzip();
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
            grant,
            plugin: plugin.to_string(),
            stdout,
            stderr,
        }
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

impl PluginState {
    /// The calling session, when the tool may use `needed`; a `denied`
    /// failure naming the tool, the capability and what it has otherwise.
    pub(crate) fn session(&self, needed: Capability) -> Result<&Capabilities, Failure> {
        let (Some(caps), Some(grant)) = (&self.caps, &self.grant) else {
            return Err(Failure {
                code: Code::Unavailable,
                message: "host functions are not available while a plugin lists its tools".into(),
            });
        };
        if grant.allowed.contains(&needed) {
            return Ok(caps);
        }
        let names = |set: &mut dyn Iterator<Item = Capability>| {
            let list: Vec<&str> = set.map(Capability::name).collect();
            if list.is_empty() {
                "none".to_string()
            } else {
                list.join(", ")
            }
        };
        let why = match &grant.declared {
            Some(declared) if !declared.contains(&needed) => {
                format!("it declares only: {}", names(&mut declared.iter().copied()))
            }
            _ => format!(
                "the server's configuration allows it only: {}",
                names(&mut grant.allowed.iter().copied())
            ),
        };
        Err(Failure {
            code: Code::Denied,
            message: format!(
                "tool {} may not use the {needed} capability ({why})",
                grant.tool
            ),
        })
    }

    /// A message from the guest for the server's log, under its name.
    fn guest_log(&self, level: tracing::Level, message: &str) {
        let plugin = self.plugin.as_str();
        match level {
            tracing::Level::TRACE => tracing::trace!(plugin, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(plugin, "{message}"),
            tracing::Level::INFO => tracing::info!(plugin, "{message}"),
            tracing::Level::WARN => tracing::warn!(plugin, "{message}"),
            _ => tracing::error!(plugin, "{message}"),
        }
    }
}
