//! Where a session's workspace lives: a directory on this host bind-mounted
//! at `/workspace` in the session's container (an engine on this machine),
//! or a named volume on the engine (an engine that shares no filesystem
//! with the server).
//!
//! The server makes and removes the host directory with its session, and
//! never opens a file in it: whatever is inside was made by untrusted code
//! (FIFOs, symlinks swapped mid-walk, links to devices), so every read,
//! write, listing and search is done by the sandbox agent inside the
//! container (`crogia_sandbox_agent::fs` and `::search`), and reaches the
//! server only as its answers. The types those answers carry are
//! re-exported here.

use std::io;
use std::path::PathBuf;

pub use crogia_sandbox_agent::fs::{
    CONTAINER_ROOT, EntryInfo, EntryKind, Metadata, WorkspaceError,
};
pub use crogia_sandbox_agent::search::{
    GrepMatch, SearchError, SearchLimits, SearchOptions, check_regex,
};
pub use crogia_sandbox_agent::watch::{ChangeKind, FileChange};

use crate::config::WorkspaceConfig;

/// How a stored `workdir` names a volume rather than a host directory.
const VOLUME_PREFIX: &str = "volume:";

/// A session's workspace, as the engine mounts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workspace {
    /// A directory on this host (absolute, canonical), bind-mounted.
    Host(PathBuf),
    /// A named volume on the session's engine.
    Volume(String),
}

impl Workspace {
    /// A host directory, made (with its parents) if needed.
    pub fn create(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(Self::Host(std::fs::canonicalize(root)?))
    }

    /// The volume that holds session `id`'s workspace on a remote engine.
    pub fn volume_for(session_id: &str) -> Self {
        Self::Volume(format!("crogia-ws-{session_id}"))
    }

    /// The workspace a stored `workdir` names (see [`std::fmt::Display`]);
    /// a host directory is made again if it went missing.
    pub fn from_record(workdir: &str) -> io::Result<Self> {
        match workdir.strip_prefix(VOLUME_PREFIX) {
            Some(name) => Ok(Self::Volume(name.to_string())),
            None => Self::create(workdir),
        }
    }

    /// Removes the host directory (a volume is the engine's to remove:
    /// [`crate::sandbox::Sandbox::remove_workspace`]).
    pub(crate) fn remove_host_dir(&self) {
        if let Self::Host(root) = self
            && let Err(e) = std::fs::remove_dir_all(root)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %root.display(), error = %e, "could not remove a workspace directory");
        }
    }
}

/// What `workdir` says in the API and the store: the host directory's
/// path, or `volume:<name>`.
impl std::fmt::Display for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Host(root) => write!(f, "{}", root.display()),
            Self::Volume(name) => write!(f, "{VOLUME_PREFIX}{name}"),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_workdir_names_the_same_workspace_again() {
        let dir = tempfile::tempdir().unwrap();
        let host = Workspace::create(dir.path().join("session_1")).unwrap();
        assert_eq!(Workspace::from_record(&host.to_string()).unwrap(), host);
        let volume = Workspace::volume_for("0badcafe");
        assert_eq!(volume.to_string(), "volume:crogia-ws-0badcafe");
        assert_eq!(Workspace::from_record(&volume.to_string()).unwrap(), volume);
        // A volume's record never makes a directory on this host.
        assert!(!std::path::Path::new("volume:crogia-ws-0badcafe").exists());
    }
}
