//! Searching the workspace with ripgrep's engine, `.gitignore` honoured
//! (capability `files-read`).

use crate::HostError;
use crate::bindings::crogia::plugin::search as host;

/// Where and how much to search.
///
/// ```no_run
/// # use crogia_plugin_sdk::search::SearchOptions;
/// let options = SearchOptions::new().path("src").file_types(["*.rs"]).max_results(50);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchOptions {
    path: String,
    file_types: Vec<String>,
    max_results: Option<u32>,
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl SearchOptions {
    /// The whole workspace, every file, up to the server's cap.
    pub fn new() -> Self {
        Self {
            path: ".".into(),
            file_types: Vec::new(),
            max_results: None,
        }
    }

    /// The directory to search, relative to the workspace.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Globs a file must match one of, e.g. `["*.py", "*.js"]`.
    pub fn file_types<S: Into<String>>(mut self, globs: impl IntoIterator<Item = S>) -> Self {
        self.file_types = globs.into_iter().map(Into::into).collect();
        self
    }

    /// At most this many results (the server's own cap still applies).
    pub fn max_results(mut self, n: u32) -> Self {
        self.max_results = Some(n);
        self
    }

    fn to_host(&self) -> host::SearchOptions {
        host::SearchOptions {
            path: self.path.clone(),
            file_types: self.file_types.clone(),
            max_results: self.max_results,
        }
    }
}

/// One matching line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GrepMatch {
    /// Path relative to the workspace.
    pub file: String,
    /// 1-based line number.
    pub line: u64,
    pub content: String,
}

/// Files whose workspace-relative path matches the glob `pattern`.
pub fn glob(pattern: &str, options: &SearchOptions) -> Result<Vec<String>, HostError> {
    Ok(host::glob(pattern, &options.to_host())?)
}

/// Lines matching the regular expression `pattern`.
pub fn grep(pattern: &str, options: &SearchOptions) -> Result<Vec<GrepMatch>, HostError> {
    Ok(host::grep(pattern, &options.to_host())?
        .into_iter()
        .map(|m| GrepMatch {
            file: m.file,
            line: m.line,
            content: m.content,
        })
        .collect())
}
