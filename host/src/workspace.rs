//! A session's workspace as the server sees it: a directory on this host,
//! bind-mounted at `/workspace` in the session's container.
//!
//! The server makes the directory and removes it with its session, and
//! never opens a file in it: whatever is inside was made by untrusted code
//! (FIFOs, symlinks swapped mid-walk, links to devices), so every read,
//! write, listing and search is done by the sandbox agent inside the
//! container (`crogia_sandbox_agent::fs` and `::search`), and reaches the
//! server only as its answers. The types those answers carry are
//! re-exported here.

use std::io;
use std::path::{Path, PathBuf};

pub use crogia_sandbox_agent::fs::{
    CONTAINER_ROOT, EntryInfo, EntryKind, Metadata, WorkspaceError,
};
pub use crogia_sandbox_agent::search::{
    GrepMatch, SearchError, SearchLimits, SearchOptions, check_regex,
};
pub use crogia_sandbox_agent::watch::{ChangeKind, FileChange};

use crate::config::WorkspaceConfig;

/// A session's workspace directory on this host.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// Makes the directory (and its parents) if needed.
    pub fn create(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(Self {
            root: std::fs::canonicalize(root)?,
        })
    }

    /// Its absolute path on this host (what is bind-mounted).
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl From<&WorkspaceConfig> for SearchLimits {
    fn from(c: &WorkspaceConfig) -> Self {
        Self {
            max_results: c.search_max_results,
            max_line_chars: c.search_max_line_chars,
            max_file_bytes: c.search_max_file_bytes,
        }
    }
}
