//! Turning a `.wasm` file into a loaded plugin: compile (or load the cached
//! compilation), check it is a component of our world and version, prepare
//! its instance, and ask it for its tool specs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crogia_plugin_contract::{TOOL_NAME_RULE, valid_tool_name};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Store};

use super::host::{Bindings, Capability, PluginState};

/// The contract package and the versions of it this host speaks, from the
/// WIT files.
pub use crogia_plugin_contract::{CURRENT as WIT_VERSION, PACKAGE as WIT_PACKAGE, SUPPORTED};
/// How long a plugin may take to list its tools.
const SPEC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Memory a plugin may use while listing its tools.
const SPEC_MEMORY: usize = 64 << 20;

/// One tool as its plugin describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: serde_json::Value,
    /// The capabilities it declares; `None` for a contract-0.1 plugin, which
    /// cannot declare any (and may use them all).
    pub capabilities: Option<Vec<Capability>>,
    /// The argument a person approves (a string property of `parameters`).
    pub subject: Option<String>,
}

/// A plugin ready to be instantiated.
pub struct LoadedPlugin {
    /// Plugin name: the file name without `.wasm`.
    pub name: String,
    pub file: PathBuf,
    pub sha256: String,
    pub(crate) bindings: Bindings,
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

/// The contract version the component speaks, when this server speaks it
/// too; otherwise what it speaks instead, named.
fn contract_version(engine: &Engine, component: &Component) -> Result<&'static str, LoadError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let prefix = format!("{WIT_PACKAGE}/tool@");
    let Some(export) = exports.iter().find(|e| e.starts_with(&prefix)) else {
        return Err(err(format!(
            "wrong world: the component exports [{}] but a Crogia plugin exports {prefix}{WIT_VERSION} (build it with crogia-plugin-sdk)",
            exports.join(", ")
        )));
    };
    let version = &export[prefix.len()..];
    SUPPORTED.into_iter().find(|v| *v == version).ok_or_else(|| {
        err(format!(
            "incompatible plugin: built against {WIT_PACKAGE}@{version}, but this server speaks {WIT_PACKAGE}@{} to {}; rebuild it with a crogia-plugin-sdk of that range, or upgrade the server",
            SUPPORTED[0],
            SUPPORTED[SUPPORTED.len() - 1]
        ))
    })
}

/// Whether `subject` names a string property of the schema `parameters`.
fn subject_is_a_string_property(parameters: &serde_json::Value, subject: &str) -> bool {
    let ty = &parameters["properties"][subject]["type"];
    ty == "string"
        || ty
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "string"))
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
    let version = contract_version(&compiler.engine, &component)?;
    let bindings = Bindings::new(version, linker, &component).map_err(err)?;
    let tools = list_tools(&compiler.engine, &bindings, &name).await?;
    Ok((
        Arc::new(LoadedPlugin {
            name,
            file: file.to_path_buf(),
            sha256,
            bindings,
            tools,
        }),
        from_cache,
    ))
}

async fn list_tools(
    engine: &Engine,
    bindings: &Bindings,
    plugin: &str,
) -> Result<Vec<ToolSpec>, LoadError> {
    let mut store = Store::new(engine, PluginState::new(plugin, None, SPEC_MEMORY));
    store.limiter(|s| &mut s.limiter);
    super::engine::arm_deadline(&mut store, SPEC_TIMEOUT);
    let specs = match tokio::time::timeout(SPEC_TIMEOUT, bindings.tools(&mut store)).await {
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
                "invalid tool name {:?}: {TOOL_NAME_RULE}",
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
        if let Some(subject) = &s.subject
            && !subject_is_a_string_property(&parameters, subject)
        {
            return Err(err(format!(
                "tool {}: its subject {subject:?} is not a string property of its parameter schema",
                s.name
            )));
        }
        let mut capabilities = s.capabilities;
        if let Some(list) = &mut capabilities {
            list.sort();
            list.dedup();
        }
        tools.push(ToolSpec {
            name: s.name,
            description: s.description,
            parameters,
            capabilities,
            subject: s.subject,
        });
    }
    Ok(tools)
}
