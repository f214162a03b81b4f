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
/// How a stored `workdir` names a fork's layered volume:
/// `layered:<layer>/<volume>`.
const LAYERED_PREFIX: &str = "layered:";

/// A session's workspace, as the engine mounts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workspace {
    /// A directory on this host (absolute, canonical), bind-mounted.
    Host(PathBuf),
    /// A named volume on the session's engine.
    Volume(String),
    /// A fork's workspace: `volume`, an overlay on the session's engine
    /// whose lower directory is the fork's `layer` (the checkpoint's files,
    /// written once and shared by every fork of it, never changed) and
    /// whose upper and work directories are volumes of its own
    /// ([`Self::upper`], [`Self::work`]): what the session changes is
    /// written there, copy on write.
    Layered { volume: String, layer: String },
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

    /// Session `id`'s workspace over a fork's `layer`.
    pub fn layered_for(session_id: &str, layer: &str) -> Self {
        Self::Layered {
            volume: format!("crogia-ws-{session_id}"),
            layer: layer.to_string(),
        }
    }

    /// The workspace a stored `workdir` names (see [`std::fmt::Display`]);
    /// a host directory is made again if it went missing.
    pub fn from_record(workdir: &str) -> io::Result<Self> {
        if let Some(name) = workdir.strip_prefix(VOLUME_PREFIX) {
            return Ok(Self::Volume(name.to_string()));
        }
        if workdir.starts_with(LAYERED_PREFIX) {
            let (layer, volume) = Self::layered_record(workdir)
                .ok_or_else(|| io::Error::other(format!("{workdir:?} names no layered volume")))?;
            return Ok(Self::Layered {
                volume: volume.to_string(),
                layer: layer.to_string(),
            });
        }
        Self::create(workdir)
    }

    /// The layer and volume a stored `workdir` names, if it is layered
    /// (read only: nothing is made).
    fn layered_record(workdir: &str) -> Option<(&str, &str)> {
        workdir.strip_prefix(LAYERED_PREFIX)?.split_once('/')
    }

    /// Whether a stored `workdir` stands on fork layer `layer`.
    pub fn record_on_layer(workdir: &str, layer: &str) -> bool {
        Self::layered_record(workdir).is_some_and(|(l, _)| l == layer)
    }

    /// The fork layer under this workspace, if it is layered.
    pub fn layer(&self) -> Option<&str> {
        match self {
            Self::Layered { layer, .. } => Some(layer),
            _ => None,
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
/// path, `volume:<name>`, or `layered:<layer>/<volume>`.
impl std::fmt::Display for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Host(root) => write!(f, "{}", root.display()),
            Self::Volume(name) => write!(f, "{VOLUME_PREFIX}{name}"),
            Self::Layered { volume, layer } => write!(f, "{LAYERED_PREFIX}{layer}/{volume}"),
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
        let layered = Workspace::layered_for("0badcafe", "crogia-layer-1234");
        assert_eq!(
            layered.to_string(),
            "layered:crogia-layer-1234/crogia-ws-0badcafe"
        );
        assert_eq!(
            Workspace::from_record(&layered.to_string()).unwrap(),
            layered
        );
        assert_eq!(layered.layer(), Some("crogia-layer-1234"));
        assert!(Workspace::from_record("layered:no-slash").is_err());
        assert!(Workspace::record_on_layer(
            &layered.to_string(),
            "crogia-layer-1234"
        ));
        assert!(!Workspace::record_on_layer(
            &layered.to_string(),
            "crogia-layer-12"
        ));
        assert!(!Workspace::record_on_layer(
            &host.to_string(),
            "crogia-layer-1234"
        ));
    }
}
