//! Turning a `.wasm` file into a loaded plugin: compile (or load the cached
//! compilation), check it is a component of our world and version, prepare
//! its instance, and ask it for its tool specs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Store};

use super::host::{PluginPre, PluginState};

/// The contract version this host speaks.
pub const WIT_PACKAGE: &str = "crogia:plugin";
pub const WIT_VERSION: &str = "0.1.0";
/// How long a plugin may take to list its tools.
const SPEC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Memory a plugin may use while listing its tools.
const SPEC_MEMORY: usize = 64 << 20;

/// One tool as its plugin describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: serde_json::Value,
}

/// A plugin ready to be instantiated.
pub struct LoadedPlugin {
    /// Plugin name: the file name without `.wasm`.
    pub name: String,
    pub file: PathBuf,
    pub sha256: String,
    pub pre: PluginPre<PluginState>,
    pub tools: Vec<ToolSpec>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// Why a file was not loaded. The message names what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LoadError(pub String);

fn err(msg: impl Into<String>) -> LoadError {
    LoadError(msg.into())
}

/// Compiles components, with an on-disk cache of compilations keyed by the
/// file's SHA-256 and the engine's compatibility hash (so a new wasmtime or
/// different engine settings never reuse a stale artefact).
pub struct Compiler {
    engine: Engine,
    cache_dir: Option<PathBuf>,
    engine_key: String,
}

impl Compiler {
    pub fn new(engine: Engine, cache_dir: Option<PathBuf>) -> Self {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = format!("{:016x}", h.finish());
        if let Some(dir) = &cache_dir
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot create the plugin compile cache; compiling every time");
        }
        Self {
            engine,
            cache_dir,
            engine_key,
        }
    }

    /// The compiled component for `bytes`, from the cache when possible.
    pub fn compile(&self, bytes: &[u8], sha256: &str) -> Result<(Component, bool), LoadError> {
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{sha256}-{}.cwasm", self.engine_key)));
        if let Some(path) = &cached
            && path.exists()
        {
            // SAFETY: the file is in the server's own data directory, written
            // by `Component::serialize` of this same engine configuration (the
            // compatibility hash is in its name), and wasmtime checks its
            // header. Nothing untrusted writes there.
            match unsafe { Component::deserialize_file(&self.engine, path) } {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unusable cached compilation")
                }
            }
        }
        check_wasm_header(bytes)?;
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| err(format!("not a valid component: {e:#}")))?;
        if let Some(path) = cached {
            match component.serialize() {
                Ok(data) => {
                    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                    if std::fs::write(&tmp, data)
                        .and_then(|_| std::fs::rename(&tmp, &path))
                        .is_err()
                    {
                        let _ = std::fs::remove_file(&tmp);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not serialize a compiled component"),
            }
        }
        Ok((component, false))
    }
}

/// Clear messages for files that are not components at all.
fn check_wasm_header(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(err("not a WebAssembly file"));
    }
    // Version field: 1 is a core module, 0x0001000d (layer 1) a component.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(err(
            "a core WebAssembly module, not a component: build plugins for the wasm32-wasip2 target with crogia-plugin-sdk",
        ));
    }
    Ok(())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the component speaks our contract, naming what it speaks instead.
fn check_world(engine: &Engine, component: &Component) -> Result<(), LoadError> {
    let ty = component.component_type();
    let expected = format!("{WIT_PACKAGE}/tool@{WIT_VERSION}");
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    if exports.contains(&expected) {
        return Ok(());
    }
    if let Some(other) = exports
        .iter()
        .find(|e| e.starts_with(&format!("{WIT_PACKAGE}/tool@")))
    {
        let version = other.rsplit('@').next().unwrap_or("?");
        return Err(err(format!(
            "incompatible plugin: built against {WIT_PACKAGE}@{version}, but this server speaks {WIT_PACKAGE}@{WIT_VERSION}; rebuild it with a matching crogia-plugin-sdk"
        )));
    }
    Err(err(format!(
        "wrong world: the component exports [{}] but a Crogia plugin exports {expected} (build it with crogia-plugin-sdk)",
        exports.join(", ")
    )))
}

/// Valid tool names: what OpenAI-compatible APIs accept as function names.
fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Loads one file: compile, check, pre-instantiate, and list its tools.
pub async fn load(
    compiler: &Arc<Compiler>,
    linker: &wasmtime::component::Linker<PluginState>,
    file: &Path,
) -> Result<(Arc<LoadedPlugin>, bool), LoadError> {
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| err("file name is not UTF-8"))?
        .to_string();
    let bytes = std::fs::read(file).map_err(|e| err(format!("cannot read: {e}")))?;
    let sha256 = sha256_hex(&bytes);
    // Compiling is CPU-bound: keep it off the async workers.
    let (component, from_cache) = {
        let compiler = compiler.clone();
        let sha = sha256.clone();
        tokio::task::spawn_blocking(move || compiler.compile(&bytes, &sha))
            .await
            .map_err(|e| err(format!("compilation task failed: {e}")))??
    };
    check_world(&compiler.engine, &component)?;
    let instance_pre = linker.instantiate_pre(&component).map_err(|e| {
        err(format!(
            "imports something this server does not provide: {e:#}"
        ))
    })?;
    let pre = PluginPre::new(instance_pre).map_err(|e| err(format!("wrong world: {e:#}")))?;
    let tools = list_tools(&compiler.engine, &pre, &name).await?;
    Ok((
        Arc::new(LoadedPlugin {
            name,
            file: file.to_path_buf(),
            sha256,
            pre,
            tools,
        }),
        from_cache,
    ))
}

async fn list_tools(
    engine: &Engine,
    pre: &PluginPre<PluginState>,
    plugin: &str,
) -> Result<Vec<ToolSpec>, LoadError> {
    let mut store = Store::new(engine, PluginState::new(plugin, None, SPEC_MEMORY));
    store.limiter(|s| &mut s.limiter);
    super::engine::arm_deadline(&mut store, SPEC_TIMEOUT);
    let call = async {
        let instance = pre.instantiate_async(&mut store).await?;
        instance.crogia_plugin_tool().call_tools(&mut store).await
    };
    let specs = match tokio::time::timeout(SPEC_TIMEOUT, call).await {
        Ok(Ok(specs)) => specs,
        Ok(Err(e)) => return Err(err(format!("failed while listing its tools: {e:#}"))),
        Err(_) => return Err(err("did not list its tools within 5 s")),
    };
    if specs.is_empty() {
        return Err(err("exports no tools"));
    }
    let mut tools = Vec::with_capacity(specs.len());
    for s in specs {
        if !valid_tool_name(&s.name) {
            return Err(err(format!(
                "invalid tool name {:?}: use a-z, 0-9, _ and -, at most 64 characters",
                s.name
            )));
        }
        let parameters: serde_json::Value =
            serde_json::from_str(&s.parameters_schema).map_err(|e| {
                err(format!(
                    "tool {}: its parameter schema is not JSON: {e}",
                    s.name
                ))
            })?;
        if !parameters.is_object() {
            return Err(err(format!(
                "tool {}: its parameter schema is not a JSON object",
                s.name
            )));
        }
        if tools.iter().any(|t: &ToolSpec| t.name == s.name) {
            return Err(err(format!("declares tool {} twice", s.name)));
        }
        tools.push(ToolSpec {
            name: s.name,
            description: s.description,
            parameters,
        });
    }
    Ok(tools)
}
