//! The plugin runtime: tools are WebAssembly components loaded from the
//! plugins folder and run with wasmtime.
//!
//! One [`Engine`] (epoch interruption on, pooling allocator when the machine
//! allows it) and one `Linker` serve every plugin. Each loaded plugin keeps a
//! pre-instantiated `PluginPre`; each invocation gets a fresh `Store` with a
//! memory limit and an epoch deadline, inside a tokio timeout that also
//! covers time spent in host calls. A trap, a timeout, memory exhaustion or a
//! panic becomes a [`ToolError`]; the next call starts from a clean instance.
//!
//! The folder is rescanned when its `.wasm` files change ([`PluginRuntime::watch`]),
//! so tools can be added, replaced and removed without a restart.
//!
//! - this module: the runtime, its API types, and what tools there are;
//! - `engine.rs`: the shared engine, the epoch thread and deadlines;
//! - `registry.rs`: scanning the folder, hot reload, tool-name ownership;
//! - `invoke.rs`: one tool call and how its failures are reported;
//! - `loader.rs`: compiling (with an on-disk cache) and checking a component;
//! - `host.rs`: the WIT bindings and the host functions over [`Capabilities`](crate::capabilities::Capabilities).

mod engine;
mod host;
mod invoke;
mod loader;
mod registry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio::sync::Semaphore;
use wasmtime::Engine;
use wasmtime::component::Linker;

pub use loader::{LoadError, LoadedPlugin, SUPPORTED, ToolSpec, WIT_PACKAGE, WIT_VERSION};

use crate::config::{Config, PluginsConfig, ToolConfig};
use engine::{EpochTicker, build_engine};
pub use host::Capability;
use host::{Grant, PluginState};
use loader::Compiler;
use registry::{Registry, file_name};

/// Why a tool invocation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    #[error("unknown tool {0:?}")]
    UnknownTool(String),
    #[error("tool {0:?} is disabled by the server's configuration")]
    Disabled(String),
    #[error("{0}")]
    InvalidArguments(String),
    /// The tool ran and reported a failure.
    #[error("{0}")]
    Failed(String),
    #[error("tool {tool:?} timed out after {ms} ms")]
    Timeout { tool: String, ms: u64 },
    #[error("tool {tool:?} ran out of memory (limit {mb} MiB)")]
    OutOfMemory { tool: String, mb: u64 },
    /// A host call failed and the tool passed the failure on (contract
    /// 0.2): the model sees its kind.
    #[error("{message}")]
    Host { kind: &'static str, message: String },
    /// The plugin crashed (a trap; a Rust panic shows up as one).
    #[error("tool {tool:?} crashed: {message}")]
    Trap { tool: String, message: String },
}

impl ToolError {
    /// A stable machine-readable name for the kind of failure.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownTool(_) => "unknown_tool",
            Self::Disabled(_) => "disabled",
            Self::InvalidArguments(_) => "invalid_arguments",
            Self::Failed(_) | Self::Host { .. } => "failed",
            Self::Timeout { .. } => "timeout",
            Self::OutOfMemory { .. } => "out_of_memory",
            Self::Trap { .. } => "trap",
        }
    }

    /// The failure as the model is told it: with the kind of host failure
    /// when a host call caused it.
    pub fn for_model(&self) -> String {
        match self {
            Self::Host { kind, message } => format!("Error ({kind}): {message}"),
            other => format!("Error: {other}"),
        }
    }
}

/// A tool as operators and the API see it.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct ToolInfo {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: serde_json::Value,
    /// File name of the plugin providing it.
    pub plugin: String,
    pub enabled: bool,
    /// The plugin contract version it was built for, e.g. "0.2.0".
    pub contract: String,
    /// The host capabilities it declares (files-read, files-write, exec,
    /// processes); null for a contract-0.1 tool, which cannot declare any.
    pub declared_capabilities: Option<Vec<String>>,
    /// The capabilities it may use: its declaration (all of them for 0.1),
    /// narrowed by `[tools.<name>] capabilities`.
    pub capabilities: Vec<String>,
    /// The argument a person approves when the tool needs approval; null:
    /// the whole arguments object.
    pub subject: Option<String>,
    /// The MCP server (`[mcp.servers.<name>]`) providing it; null for a
    /// plugin's tool.
    #[serde(default)]
    pub server: Option<String>,
}

impl ToolInfo {
    /// Whether it can only read: a plugin's tool with no capability beyond
    /// `files-read` (an MCP server's tool may do anything).
    pub fn read_only(&self) -> bool {
        self.server.is_none()
            && self
                .capabilities
                .iter()
                .all(|c| Capability::from_name(c).is_some_and(Capability::read_only))
    }
}

/// A file in the plugins folder that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct SkippedPlugin {
    pub file: String,
    pub reason: String,
}

/// What one scan of the plugins folder found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub loaded: Vec<String>,
    pub skipped: Vec<SkippedPlugin>,
    /// Plugins whose compilation came from the on-disk cache.
    pub from_cache: usize,
}

/// Loads, watches and runs tool plugins.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<PluginState>,
    compiler: Arc<Compiler>,
    dir: PathBuf,
    defaults: PluginsConfig,
    tool_config: BTreeMap<String, ToolConfig>,
    registry: RwLock<Arc<Registry>>,
    last_report: RwLock<LoadReport>,
    permits: Semaphore,
    reload_lock: tokio::sync::Mutex<()>,
    watcher: std::sync::Mutex<Option<notify::RecommendedWatcher>>,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl PluginRuntime {
    /// Builds the engine and linker. Nothing is loaded until [`Self::reload`].
    pub fn new(config: &Config) -> anyhow::Result<Arc<Self>> {
        let defaults = config.plugins.clone();
        let max_mb = config
            .tools
            .values()
            .filter_map(|t| t.memory_mb)
            .chain([defaults.memory_mb])
            .max()
            .unwrap_or(defaults.memory_mb);
        let engine = build_engine(&defaults, (max_mb as usize) << 20)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
        host::add_to_linker(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking host functions: {e}"))?;
        let cache_dir = Some(config.server.data_dir.join("plugin-cache"));
        let compiler = Arc::new(Compiler::new(engine.clone(), cache_dir));
        let permits = Semaphore::new(defaults.max_concurrent as usize);
        Ok(Arc::new(Self {
            _ticker: EpochTicker::start(engine.clone()),
            engine,
            linker,
            compiler,
            dir: defaults.dir.clone(),
            defaults,
            tool_config: config.tools.clone(),
            registry: RwLock::new(Arc::new(Registry::default())),
            last_report: RwLock::new(LoadReport::default()),
            permits,
            reload_lock: tokio::sync::Mutex::new(()),
            watcher: std::sync::Mutex::new(None),
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn config_of(&self, tool: &str) -> ToolConfig {
        self.tool_config.get(tool).cloned().unwrap_or_default()
    }

    /// Every loaded tool, enabled or not, sorted by name.
    pub fn tools(&self) -> Vec<ToolInfo> {
        let registry = self.registry.read().unwrap().clone();
        registry
            .tools
            .values()
            .map(|(plugin, spec)| self.info(plugin, spec))
            .collect()
    }

    /// One loaded tool, enabled or not.
    pub fn tool(&self, name: &str) -> Option<ToolInfo> {
        let registry = self.registry.read().unwrap();
        let (plugin, spec) = registry.tools.get(name)?;
        Some(self.info(plugin, spec))
    }

    fn info(&self, plugin: &LoadedPlugin, spec: &ToolSpec) -> ToolInfo {
        let names = |list: &mut dyn Iterator<Item = &Capability>| {
            list.map(|c| c.name().to_string()).collect::<Vec<_>>()
        };
        ToolInfo {
            name: spec.name.clone(),
            description: spec.description.clone(),
            parameters: spec.parameters.clone(),
            plugin: file_name(&plugin.file),
            enabled: self.config_of(&spec.name).enabled,
            contract: plugin.bindings.version().to_string(),
            declared_capabilities: spec.capabilities.as_ref().map(|c| names(&mut c.iter())),
            capabilities: names(&mut self.grant(spec).allowed.iter()),
            subject: spec.subject.clone(),
            server: None,
        }
    }

    /// What `spec`'s tool may ask of the host: what it declares (everything
    /// for contract 0.1) narrowed by the operator's `capabilities`.
    fn grant(&self, spec: &ToolSpec) -> Grant {
        let declared = spec.capabilities.clone();
        let mut allowed: std::collections::BTreeSet<Capability> = match &declared {
            Some(list) => list.iter().copied().collect(),
            None => Capability::ALL.into_iter().collect(),
        };
        if let Some(limit) = self.config_of(&spec.name).capability_limit() {
            allowed.retain(|c| limit.contains(c));
        }
        Grant {
            tool: spec.name.clone(),
            declared,
            allowed,
        }
    }

    /// Whether a loaded plugin provides `tool` (enabled or not).
    pub fn has_tool(&self, tool: &str) -> bool {
        self.registry.read().unwrap().tools.contains_key(tool)
    }

    /// The tools the model may be offered.
    pub fn enabled_tools(&self) -> Vec<ToolInfo> {
        self.tools().into_iter().filter(|t| t.enabled).collect()
    }
}
