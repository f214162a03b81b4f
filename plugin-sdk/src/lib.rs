//! Write tools for the Crogia agent server in Rust.
//!
//! A tool is a function over an argument struct. The struct derives
//! `Deserialize` and `JsonSchema` (its field docs become the argument
//! descriptions the model sees); the function's doc comment becomes the tool's
//! description; `#[tool]` marks it; [`export_tools!`] exports one or several
//! tools from the crate. Built for `wasm32-wasip2`, the crate is a component
//! the server loads from its plugins folder.
//!
//! ```no_run
//! use crogia_plugin_sdk::prelude::*;
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct CountLinesArgs {
//!     /// File to count, relative to the workspace.
//!     path: String,
//! }
//!
//! /// Count the lines of a text file in the workspace.
//! #[tool]
//! fn count_lines(args: CountLinesArgs) -> ToolResult {
//!     let text = fs::read_to_string(&args.path)?;
//!     Ok(format!("{} lines", text.lines().count()))
//! }
//!
//! export_tools!(count_lines);
//! ```
//!
//! Tools reach the session only through the host modules here — [`exec`],
//! [`fs`], [`search`], [`process`] and [`log`] — which act on the session that
//! invoked the tool. A plugin has no other access: no files, network or
//! environment of its own.

extern crate self as crogia_plugin_sdk;

use std::fmt;

pub use crogia_plugin_sdk_macros::tool;
pub use schemars::{self, JsonSchema};
pub use serde::{self, Deserialize, Serialize};
pub use serde_json;

/// The version of the WIT contract (`crogia:plugin`) this SDK builds against.
/// It is part of every interface name in the built component, which is how
/// the server recognises plugins it can load.
pub const WIT_VERSION: &str = "0.1.0";

/// Everything a tool usually needs.
pub mod prelude {
    pub use crate::{
        Context, Deserialize, JsonSchema, Serialize, ToolError, ToolResult, bail, exec,
        export_tools, fs, log, process, search, tool,
    };
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Generated bindings for the WIT world. Use the wrappers instead.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "::crogia_plugin_sdk::bindings",
        runtime_path: "::crogia_plugin_sdk::__wit_bindgen::rt",
    });
}

use bindings::crogia::plugin::types::{ErrorCode, HostError as RawHostError};
use bindings::exports::crogia::plugin::tool as wit_tool;

/// What every tool returns: text for the model, or an error.
pub type ToolResult = Result<String, ToolError>;

/// A tool's failure. The message is shown to the model, so say what went
/// wrong and, where it helps, what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError {
    message: String,
}

impl ToolError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ToolError {}

impl From<String> for ToolError {
    fn from(message: String) -> Self {
        Self { message }
    }
}

impl From<&str> for ToolError {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

impl From<HostError> for ToolError {
    fn from(e: HostError) -> Self {
        Self::new(e.message)
    }
}

impl From<serde_json::Error> for ToolError {
    fn from(e: serde_json::Error) -> Self {
        Self::new(e.to_string())
    }
}

impl From<std::string::FromUtf8Error> for ToolError {
    fn from(_: std::string::FromUtf8Error) -> Self {
        Self::new("the file is not valid UTF-8 text")
    }
}

/// Returns early from a tool with a formatted [`ToolError`].
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => { return ::core::result::Result::Err($crate::ToolError::new(format!($($arg)*))) };
}

/// Why a host function failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostErrorKind {
    InvalidInput,
    NotFound,
    PermissionDenied,
    TooLarge,
    Unavailable,
    Internal,
}

/// A failed call to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError {
    pub kind: HostErrorKind,
    pub message: String,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HostError {}

impl From<RawHostError> for HostError {
    fn from(e: RawHostError) -> Self {
        let kind = match e.code {
            ErrorCode::InvalidInput => HostErrorKind::InvalidInput,
            ErrorCode::NotFound => HostErrorKind::NotFound,
            ErrorCode::PermissionDenied => HostErrorKind::PermissionDenied,
            ErrorCode::TooLarge => HostErrorKind::TooLarge,
            ErrorCode::Unavailable => HostErrorKind::Unavailable,
            ErrorCode::Internal => HostErrorKind::Internal,
        };
        Self {
            kind,
            message: e.message,
        }
    }
}

/// What a tool gets besides its arguments.
#[derive(Debug, Clone, Default)]
pub struct Context {
    config: serde_json::Value,
}

impl Context {
    /// The operator's `[tools.<name>] config` table, as JSON (`{}` when none).
    pub fn config_json(&self) -> &serde_json::Value {
        &self.config
    }

    /// The operator's config deserialised into `T` (use `#[serde(default)]`
    /// fields so an empty config works).
    pub fn config<T: serde::de::DeserializeOwned>(&self) -> Result<T, ToolError> {
        serde_json::from_value(self.config.clone())
            .map_err(|e| ToolError::new(format!("invalid tool configuration: {e}")))
    }
}

/// A tool, as `#[tool]` describes it. Implemented by the macro; not by hand.
pub trait Tool {
    type Args: serde::de::DeserializeOwned + JsonSchema;
    const NAME: &'static str;
    const DESCRIPTION: &'static str;
    fn call(args: Self::Args, ctx: &Context) -> ToolResult;
}

#[doc(hidden)]
pub mod __private {
    use super::*;

    pub use wit_tool::{Guest, ToolError as WitToolError, ToolSpec};

    /// The spec of one tool: name, description and argument schema.
    pub fn spec<T: Tool>() -> ToolSpec {
        let mut schema = serde_json::to_value(schemars::schema_for!(T::Args)).unwrap_or_default();
        if let Some(obj) = schema.as_object_mut() {
            // Noise for a model: the draft URL and the Rust type's name.
            obj.remove("$schema");
            obj.remove("title");
        }
        ToolSpec {
            name: T::NAME.to_string(),
            description: T::DESCRIPTION.trim().to_string(),
            parameters_schema: schema.to_string(),
        }
    }

    /// Parses the arguments and config, and runs the tool.
    pub fn invoke<T: Tool>(args_json: &str, config_json: &str) -> Result<String, WitToolError> {
        let args_json = if args_json.trim().is_empty() {
            "{}"
        } else {
            args_json
        };
        let args: T::Args = serde_json::from_str(args_json).map_err(|e| {
            WitToolError::InvalidArguments(format!("invalid arguments for {}: {e}", T::NAME))
        })?;
        let config = match config_json.trim() {
            "" => serde_json::Value::Object(Default::default()),
            text => serde_json::from_str(text)
                .map_err(|e| WitToolError::Failed(format!("invalid tool configuration: {e}")))?,
        };
        T::call(args, &Context { config }).map_err(|e| WitToolError::Failed(e.message))
    }
}

/// Exports the listed `#[tool]` functions as this crate's plugin.
///
/// ```text
/// export_tools!(read_file, write_file);
/// ```
#[macro_export]
macro_rules! export_tools {
    ($($tool:ident),+ $(,)?) => {
        #[doc(hidden)]
        struct __CrogiaPlugin;

        impl $crate::__private::Guest for __CrogiaPlugin {
            fn tools() -> ::std::vec::Vec<$crate::__private::ToolSpec> {
                ::std::vec![$($crate::__private::spec::<$tool>()),+]
            }

            fn invoke(
                name: ::std::string::String,
                args_json: ::std::string::String,
                config_json: ::std::string::String,
            ) -> ::core::result::Result<::std::string::String, $crate::__private::WitToolError> {
                $(
                    if name == <$tool as $crate::Tool>::NAME {
                        return $crate::__private::invoke::<$tool>(&args_json, &config_json);
                    }
                )+
                ::core::result::Result::Err($crate::__private::WitToolError::UnknownTool(name))
            }
        }

        $crate::bindings::__export_plugin!(__CrogiaPlugin);
    };
}

/// Commands in the session's container.
pub mod exec {
    use super::*;
    use bindings::crogia::plugin::exec as host;

    pub use host::ExecOutput;

    /// Runs `command` with `sh -c` in `/workspace`. `timeout` defaults to the
    /// server's exec timeout; the command and its children are killed when it
    /// runs over (`timed_out` is then set).
    pub fn run(
        command: &str,
        timeout: Option<std::time::Duration>,
    ) -> Result<ExecOutput, HostError> {
        let ms = timeout.map(|t| u32::try_from(t.as_millis()).unwrap_or(u32::MAX));
        host::run(command, ms).map_err(Into::into)
    }
}

/// Files in the session's workspace. Paths are relative to the workspace
/// (`/workspace/...` is accepted too); nothing outside it can be reached.
pub mod fs {
    use super::*;
    use bindings::crogia::plugin::files as host;

    pub use host::{Entry, EntryKind, Metadata};

    pub fn read(path: &str) -> Result<Vec<u8>, HostError> {
        host::read(path).map_err(Into::into)
    }

    /// Reads a file that must be UTF-8 text.
    pub fn read_to_string(path: &str) -> Result<String, ToolError> {
        let bytes = read(path)?;
        String::from_utf8(bytes).map_err(|_| ToolError::new(format!("{path} is not UTF-8 text")))
    }

    /// Creates or replaces a file, creating missing parent directories.
    pub fn write(path: &str, data: impl AsRef<[u8]>) -> Result<(), HostError> {
        host::write(path, data.as_ref()).map_err(Into::into)
    }

    /// The entries of a directory, sorted by name.
    pub fn list(path: &str) -> Result<Vec<Entry>, HostError> {
        host::list(path).map_err(Into::into)
    }

    pub fn stat(path: &str) -> Result<Metadata, HostError> {
        host::stat(path).map_err(Into::into)
    }
}

/// Searching the workspace on the host side (ripgrep's engine; `.gitignore`
/// is honoured).
pub mod search {
    use super::*;
    use bindings::crogia::plugin::search as host;

    pub use host::{GrepMatch, SearchOptions};

    /// Files under `options.path` whose workspace-relative path matches the
    /// glob `pattern`.
    pub fn glob(pattern: &str, options: &SearchOptions) -> Result<Vec<String>, HostError> {
        host::glob(pattern, options).map_err(Into::into)
    }

    /// Lines matching the regular expression `pattern`.
    pub fn grep(pattern: &str, options: &SearchOptions) -> Result<Vec<GrepMatch>, HostError> {
        host::grep(pattern, options).map_err(Into::into)
    }
}

/// Background processes in the session's container.
pub mod process {
    use super::*;
    use bindings::crogia::plugin::processes as host;

    pub use host::ProcessInfo;

    /// Starts `command` detached; its output goes to `.agent_logs/<id>.log`.
    pub fn start(command: &str) -> Result<ProcessInfo, HostError> {
        host::start(command).map_err(Into::into)
    }

    pub fn list() -> Result<Vec<ProcessInfo>, HostError> {
        host::list().map_err(Into::into)
    }

    /// SIGTERM, then SIGKILL after the server's grace period.
    pub fn stop(pid: u32) -> Result<String, HostError> {
        host::stop(pid).map_err(Into::into)
    }

    /// The last `lines` lines of the process's log.
    pub fn logs(pid: u32, lines: u32) -> Result<String, HostError> {
        host::logs(pid, lines).map_err(Into::into)
    }
}

/// Messages for the server's log, under the plugin's name.
pub mod log {
    use super::bindings::crogia::plugin::log::{Level, log};

    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}
