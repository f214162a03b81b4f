//! Write tools for the Crogia agent server in Rust.
//!
//! A tool is a function over an argument struct. The struct derives
//! `Deserialize` and `JsonSchema` (its field docs become the argument
//! descriptions the model sees); the function's doc comment becomes the tool's
//! description; `#[tool]` marks it and declares the host capabilities it uses;
//! [`export_tools!`] exports one or several tools from the crate. Built for
//! `wasm32-wasip2`, the crate is a component the server loads from its
//! plugins folder.
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
//! #[tool(capabilities = ["files-read"], subject = "path")]
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
//! invoked the tool, and only with the capabilities the tool declared. A
//! plugin has no other access: no files, network or environment of its own.
//!
//! Every type here belongs to the SDK, not to the generated bindings: structs
//! that may grow are `#[non_exhaustive]` and built with constructors and
//! builders, so a field added to the contract never breaks a plugin's source.

extern crate self as crogia_plugin_sdk;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use crogia_plugin_contract::Capability;
pub use crogia_plugin_sdk_macros::tool;
pub use schemars::{self, JsonSchema};
pub use serde::{self, Deserialize, Serialize};
pub use serde_json;

pub mod exec;
pub mod fs;
pub mod log;
pub mod process;
pub mod search;

/// The version of the WIT contract (`crogia:plugin`) this SDK builds against,
/// read from its WIT file. It is part of every interface name in the built
/// component, which is how the server recognises plugins it can load.
pub const WIT_VERSION: &str = crogia_plugin_contract::CURRENT;

/// The exit status of a command or process.
pub type ExitCode = i32;

/// Everything a tool usually needs.
pub mod prelude {
    pub use crate::{
        Capability, Context, Deserialize, JsonSchema, Serialize, ToolError, ToolResult, bail, exec,
        export_tools, fs, log, process, search, tool,
    };
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Generated bindings for the WIT world. Use the wrappers instead.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit/v0.2.0",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "::crogia_plugin_sdk::bindings",
        runtime_path: "::crogia_plugin_sdk::__wit_bindgen::rt",
    });
}

use bindings::crogia::plugin::types as wit;
use bindings::exports::crogia::plugin::tool as wit_tool;

/// What every tool returns: text for the model, or an error.
pub type ToolResult = Result<String, ToolError>;

/// A tool's failure. The message is shown to the model, so say what went
/// wrong and, where it helps, what to do instead. A failure that comes from a
/// host call (through `?`) keeps that call's [`HostErrorKind`], which the
/// model is shown too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError {
    message: String,
    kind: Option<HostErrorKind>,
}

impl ToolError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            kind: None,
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The kind of host failure behind this one, if a host call failed.
    pub fn kind(&self) -> Option<HostErrorKind> {
        self.kind
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
        Self::new(message)
    }
}

impl From<&str> for ToolError {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

impl From<HostError> for ToolError {
    fn from(e: HostError) -> Self {
        Self {
            message: e.message,
            kind: Some(e.kind),
        }
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
#[non_exhaustive]
pub enum HostErrorKind {
    /// The arguments were malformed (bad path, empty command, bad regex).
    InvalidInput,
    /// The file, directory or process does not exist.
    NotFound,
    /// The path leads outside the workspace or to something refused.
    PermissionDenied,
    /// The tool did not declare the capability the call needs, or the
    /// operator took it away.
    Denied,
    /// The data was over a limit.
    TooLarge,
    /// The sandbox is not available.
    Unavailable,
    Internal,
}

impl HostErrorKind {
    fn from_wit(code: wit::ErrorCode) -> Self {
        match code {
            wit::ErrorCode::InvalidInput => Self::InvalidInput,
            wit::ErrorCode::NotFound => Self::NotFound,
            wit::ErrorCode::PermissionDenied => Self::PermissionDenied,
            wit::ErrorCode::Denied => Self::Denied,
            wit::ErrorCode::TooLarge => Self::TooLarge,
            wit::ErrorCode::Unavailable => Self::Unavailable,
            wit::ErrorCode::Internal => Self::Internal,
        }
    }

    fn to_wit(self) -> wit::ErrorCode {
        match self {
            Self::InvalidInput => wit::ErrorCode::InvalidInput,
            Self::NotFound => wit::ErrorCode::NotFound,
            Self::PermissionDenied => wit::ErrorCode::PermissionDenied,
            Self::Denied => wit::ErrorCode::Denied,
            Self::TooLarge => wit::ErrorCode::TooLarge,
            Self::Unavailable => wit::ErrorCode::Unavailable,
            Self::Internal => wit::ErrorCode::Internal,
        }
    }
}

/// A failed call to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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

impl From<wit::HostError> for HostError {
    fn from(e: wit::HostError) -> Self {
        Self {
            kind: HostErrorKind::from_wit(e.code),
            message: e.message,
        }
    }
}

/// The contract's time type as the SDK's one: [`SystemTime`].
fn system_time(t: wit::Timestamp) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(t.nanoseconds));
    match u64::try_from(t.seconds) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s) + nanos,
        Err(_) => UNIX_EPOCH - Duration::from_secs(t.seconds.unsigned_abs()) + nanos,
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
    /// The host capabilities the tool uses.
    const CAPABILITIES: &'static [Capability];
    /// The argument a person approves, when the tool needs approval.
    const SUBJECT: Option<&'static str>;
    fn call(args: Self::Args, ctx: &Context) -> ToolResult;
}

#[doc(hidden)]
pub mod __private {
    use super::*;

    pub use wit_tool::{Guest, ToolError as WitToolError, ToolSpec};

    fn capability(c: Capability) -> wit::Capability {
        match c {
            Capability::FilesRead => wit::Capability::FilesRead,
            Capability::FilesWrite => wit::Capability::FilesWrite,
            Capability::Exec => wit::Capability::Exec,
            Capability::Processes => wit::Capability::Processes,
        }
    }

    /// The spec of one tool: name, description, argument schema,
    /// capabilities and subject.
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
            capabilities: T::CAPABILITIES.iter().copied().map(capability).collect(),
            subject: T::SUBJECT.map(str::to_string),
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
        T::call(args, &Context { config }).map_err(|e| match e.kind {
            Some(kind) => WitToolError::Host(wit::HostError {
                code: kind.to_wit(),
                message: e.message,
            }),
            None => WitToolError::Failed(e.message),
        })
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
