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

mod host;
mod loader;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::Semaphore;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

pub use host::stop_message;
pub use loader::{LoadError, LoadedPlugin, ToolSpec, WIT_PACKAGE, WIT_VERSION};

use crate::capabilities::Capabilities;
use crate::config::{Config, PluginsConfig, ToolConfig};
use host::{Plugin, PluginState};
use loader::Compiler;

/// How often the engine's epoch advances; the granularity of time limits.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// How long file events are collected before the folder is rescanned.
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(250);

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
            Self::Failed(_) => "failed",
            Self::Timeout { .. } => "timeout",
            Self::OutOfMemory { .. } => "out_of_memory",
            Self::Trap { .. } => "trap",
        }
    }
}

/// A tool as operators and the API see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct ToolInfo {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: serde_json::Value,
    /// File name of the plugin providing it.
    pub plugin: String,
    pub enabled: bool,
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

#[derive(Default)]
struct Registry {
    /// Loaded plugins, in priority order (earlier ones own contested names).
    plugins: Vec<Arc<LoadedPlugin>>,
    tools: BTreeMap<String, (Arc<LoadedPlugin>, ToolSpec)>,
}

/// Advances the engine's epoch on a thread of its own, so deadlines fire even
/// when every async worker is busy.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("crogia-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
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

/// Arms a store's time limit: the epoch callback yields to tokio every tick
/// (so a spinning plugin never holds a worker thread) and traps once the
/// deadline has passed.
pub(crate) fn arm_deadline(store: &mut Store<PluginState>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            Err(Trap::Interrupt.into())
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
}

/// Bytes of each pooled linear memory kept resident between instances.
const KEEP_RESIDENT_MEMORY: usize = 2 << 20;
/// Bytes of each pooled table kept resident between instances.
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

fn build_engine(plugins: &PluginsConfig, max_memory: usize) -> anyhow::Result<Engine> {
    let base = || {
        let mut c = wasmtime::Config::new();
        c.wasm_component_model(true);
        c.epoch_interruption(true);
        c
    };
    if plugins.pooling {
        let n = plugins.max_concurrent;
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(n)
            .total_core_instances(n * 8)
            .max_core_instances_per_component(16)
            .total_memories(n * 2)
            .max_memories_per_component(4)
            .total_tables(n * 8)
            .total_stacks(n)
            .max_memory_size(max_memory)
            // A finished instance's slot is reset by zeroing the pages it
            // dirtied (found with PAGEMAP_SCAN on Linux 6.7+) instead of
            // unmapping them: no madvise, no TLB shootdown across cores and
            // no page faults when the slot is used again.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
            .table_keep_resident(KEEP_RESIDENT_TABLE);
        let mut c = base();
        c.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        match Engine::new(&c) {
            Ok(engine) => return Ok(engine),
            Err(e) => {
                tracing::warn!(error = %e, "pooling allocator unavailable; allocating instances on demand")
            }
        }
    }
    Engine::new(&base()).map_err(|e| anyhow::anyhow!("creating the wasm engine: {e}"))
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
        Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
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

    /// Scans the plugins folder and makes what it holds the current set:
    /// unchanged files are kept as they are, changed ones reloaded, new ones
    /// loaded, vanished ones dropped. A file that fails to load is skipped
    /// with a log line naming it and the reason; if it replaced a working
    /// plugin, that plugin is dropped too (the folder is the truth).
    pub async fn reload(&self) -> LoadReport {
        let _guard = self.reload_lock.lock().await;
        let previous = self.registry.read().unwrap().clone();
        let mut report = LoadReport::default();
        let files = match wasm_files(&self.dir) {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read the plugins folder; no tools loaded");
                *self.registry.write().unwrap() = Arc::new(Registry::default());
                *self.last_report.write().unwrap() = report.clone();
                return report;
            }
        };
        let mut loaded: Vec<Arc<LoadedPlugin>> = Vec::new();
        for file in &files {
            let unchanged = previous.plugins.iter().find(|p| {
                &p.file == file
                    && std::fs::read(file)
                        .map(|b| loader::sha256_hex(&b) == p.sha256)
                        .unwrap_or(false)
            });
            if let Some(p) = unchanged {
                loaded.push(p.clone());
                continue;
            }
            let started = Instant::now();
            match loader::load(&self.compiler, &self.linker, file).await {
                Ok((plugin, cached)) => {
                    tracing::info!(
                        plugin = %plugin.name,
                        tools = ?plugin.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
                        cached,
                        ms = started.elapsed().as_millis() as u64,
                        "plugin loaded"
                    );
                    report.from_cache += usize::from(cached);
                    loaded.push(plugin);
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), reason = %e, "plugin skipped");
                    report.skipped.push(SkippedPlugin {
                        file: file_name(file),
                        reason: e.0,
                    });
                }
            }
        }
        // Plugins that were already loaded keep the names they own; new ones
        // come after, in file-name order.
        let rank = |p: &Arc<LoadedPlugin>| {
            previous
                .plugins
                .iter()
                .position(|q| q.file == p.file)
                .unwrap_or(usize::MAX)
        };
        loaded.sort_by_key(|p| rank(p));
        let mut registry = Registry::default();
        for plugin in loaded {
            if let Some(taken) = plugin
                .tools
                .iter()
                .find_map(|t| registry.tools.get(&t.name).map(|(owner, _)| (t, owner)))
            {
                let reason = format!(
                    "tool name {:?} is already taken by plugin {}",
                    taken.0.name,
                    file_name(&taken.1.file)
                );
                tracing::warn!(file = %plugin.file.display(), %reason, "plugin skipped");
                report.skipped.push(SkippedPlugin {
                    file: file_name(&plugin.file),
                    reason,
                });
                continue;
            }
            for t in &plugin.tools {
                registry
                    .tools
                    .insert(t.name.clone(), (plugin.clone(), t.clone()));
            }
            report.loaded.push(file_name(&plugin.file));
            registry.plugins.push(plugin);
        }
        for gone in previous
            .plugins
            .iter()
            .filter(|p| !registry.plugins.iter().any(|q| q.file == p.file))
        {
            tracing::info!(plugin = %gone.name, "plugin unloaded");
        }
        *self.registry.write().unwrap() = Arc::new(registry);
        *self.last_report.write().unwrap() = report.clone();
        report
    }

    /// What the last scan of the plugins folder found.
    pub fn last_report(&self) -> LoadReport {
        self.last_report.read().unwrap().clone()
    }

    /// Watches the plugins folder and rescans it whenever a `.wasm` file in it
    /// is created, changed, renamed or removed.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<()> {
        use notify::Watcher;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event
                    && event
                        .paths
                        .iter()
                        .any(|p| p.extension().is_some_and(|e| e == "wasm"))
                    && !matches!(event.kind, notify::EventKind::Access(_))
                {
                    let _ = tx.send(());
                }
            })
            .context("creating the plugins folder watcher")?;
        watcher
            .watch(&self.dir, notify::RecursiveMode::NonRecursive)
            .with_context(|| format!("watching {}", self.dir.display()))?;
        *self.watcher.lock().unwrap() = Some(watcher);
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                // Let a copy finish and coalesce the burst of events it makes.
                tokio::time::sleep(RELOAD_DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
                let Some(runtime) = weak.upgrade() else {
                    return;
                };
                let report = runtime.reload().await;
                tracing::info!(
                    loaded = report.loaded.len(),
                    skipped = report.skipped.len(),
                    "plugins folder changed; reloaded"
                );
            }
        });
        Ok(())
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
            .map(|(plugin, spec)| ToolInfo {
                name: spec.name.clone(),
                description: spec.description.clone(),
                parameters: spec.parameters.clone(),
                plugin: file_name(&plugin.file),
                enabled: self.config_of(&spec.name).enabled,
            })
            .collect()
    }

    /// Whether a loaded plugin provides `tool` (enabled or not).
    pub fn has_tool(&self, tool: &str) -> bool {
        self.registry.read().unwrap().tools.contains_key(tool)
    }

    /// The tools the model may be offered.
    pub fn enabled_tools(&self) -> Vec<ToolInfo> {
        self.tools().into_iter().filter(|t| t.enabled).collect()
    }

    /// Runs `tool` with JSON arguments on behalf of the session `caps`
    /// belongs to.
    #[tracing::instrument(skip(self, caps, args_json), fields(plugin))]
    pub async fn invoke(
        &self,
        caps: Capabilities,
        tool: &str,
        args_json: &str,
    ) -> Result<String, ToolError> {
        let plugin = {
            let registry = self.registry.read().unwrap();
            registry.tools.get(tool).map(|(p, _)| p.clone())
        }
        .ok_or_else(|| ToolError::UnknownTool(tool.to_string()))?;
        tracing::Span::current().record("plugin", plugin.name.as_str());
        let tc = self.config_of(tool);
        if !tc.enabled {
            return Err(ToolError::Disabled(tool.to_string()));
        }
        let timeout_ms = tc.timeout_ms.unwrap_or(self.defaults.timeout_ms);
        let memory_mb = tc.memory_mb.unwrap_or(self.defaults.memory_mb);
        let config_json = serde_json::to_string(&tc.config).unwrap_or_else(|_| "{}".into());
        let timeout = Duration::from_millis(timeout_ms);

        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let mut store = Store::new(
            &self.engine,
            PluginState::new(&plugin.name, Some(caps), (memory_mb as usize) << 20),
        );
        store.limiter(|s| &mut s.limiter);
        arm_deadline(&mut store, timeout);
        let call = async {
            let instance = plugin.pre.instantiate_async(&mut store).await?;
            instance
                .crogia_plugin_tool()
                .call_invoke(&mut store, tool, args_json, &config_json)
                .await
        };
        let outcome = tokio::time::timeout(timeout, call).await;
        let stderr = log_guest_output(&plugin.name, store.data());
        let result = match outcome {
            Err(_) => Err(ToolError::Timeout {
                tool: tool.into(),
                ms: timeout_ms,
            }),
            Ok(Ok(Ok(text))) => Ok(text),
            Ok(Ok(Err(e))) => Err(match e {
                host::exports::crogia::plugin::tool::ToolError::InvalidArguments(m) => {
                    ToolError::InvalidArguments(m)
                }
                host::exports::crogia::plugin::tool::ToolError::UnknownTool(m) => {
                    ToolError::UnknownTool(m)
                }
                host::exports::crogia::plugin::tool::ToolError::Failed(m) => ToolError::Failed(m),
            }),
            Ok(Err(e)) if store.data().limiter.hit_limit => {
                tracing::debug!(error = %format!("{e:#}"), "trap after the memory limit was hit");
                Err(ToolError::OutOfMemory {
                    tool: tool.into(),
                    mb: memory_mb,
                })
            }
            Ok(Err(e)) if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => {
                Err(ToolError::Timeout {
                    tool: tool.into(),
                    ms: timeout_ms,
                })
            }
            Ok(Err(e)) => {
                tracing::debug!(error = ?e, "plugin trapped");
                let message =
                    panic_message(&stderr).unwrap_or_else(|| match e.downcast_ref::<Trap>() {
                        Some(trap) => trap.to_string(),
                        None => e.to_string(),
                    });
                Err(ToolError::Trap {
                    tool: tool.into(),
                    message,
                })
            }
        };
        if let Err(e) = &result {
            tracing::debug!(code = e.code(), error = %e, "tool failed");
        }
        result
    }
}

/// Sends what the guest wrote to stdout and stderr to the log, under the
/// plugin's name. Returns stderr.
fn log_guest_output(plugin: &str, state: &PluginState) -> String {
    let stdout = String::from_utf8_lossy(&state.stdout.contents()).into_owned();
    let stderr = String::from_utf8_lossy(&state.stderr.contents()).into_owned();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        tracing::info!(plugin, stream = "stdout", "{line}");
    }
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        tracing::warn!(plugin, stream = "stderr", "{line}");
    }
    stderr
}

/// A Rust panic prints `thread '...' panicked at FILE:LINE:COL:` and then its
/// message to stderr before trapping; this is the short form of both.
fn panic_message(stderr: &str) -> Option<String> {
    let mut lines = stderr.lines();
    let head = lines.find(|l| l.contains("panicked at"))?;
    let location = head
        .split("panicked at")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .trim_end_matches(':');
    let message = lines.next().unwrap_or_default().trim();
    Some(format!("panicked at {location}: {message}"))
}

fn wasm_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
