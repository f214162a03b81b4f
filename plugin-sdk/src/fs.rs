//! Files in the session's workspace (capabilities `files-read` and
//! `files-write`). Paths are relative to the workspace (`/workspace/...` is
//! accepted too); nothing outside it can be reached.

use std::time::SystemTime;

use crate::bindings::crogia::plugin::files as host;
use crate::{HostError, ToolError, system_time};

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
    Other,
}

impl From<host::EntryKind> for EntryKind {
    fn from(k: host::EntryKind) -> Self {
        match k {
            host::EntryKind::File => Self::File,
            host::EntryKind::Directory => Self::Directory,
            host::EntryKind::Symlink => Self::Symlink,
            host::EntryKind::Other => Self::Other,
        }
    }
}

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entry {
    pub name: String,
    pub kind: EntryKind,
    /// `None` for directories.
    pub size: Option<u64>,
    pub modified: Option<SystemTime>,
}

/// What `stat` says of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metadata {
    pub kind: EntryKind,
    pub size: u64,
    pub modified: Option<SystemTime>,
}

/// The whole file (`files-read`).
pub fn read(path: &str) -> Result<Vec<u8>, HostError> {
    Ok(host::read(path)?)
}

/// Reads a file that must be UTF-8 text (`files-read`).
pub fn read_to_string(path: &str) -> Result<String, ToolError> {
    let bytes = read(path)?;
    String::from_utf8(bytes).map_err(|_| ToolError::new(format!("{path} is not UTF-8 text")))
}

/// Creates or replaces a file, creating missing parent directories
/// (`files-write`).
pub fn write(path: &str, data: impl AsRef<[u8]>) -> Result<(), HostError> {
    Ok(host::write(path, data.as_ref())?)
}

/// The entries of a directory, sorted by name (`files-read`).
pub fn list(path: &str) -> Result<Vec<Entry>, HostError> {
    Ok(host::list(path)?
        .into_iter()
        .map(|e| Entry {
            name: e.name,
            kind: e.kind.into(),
            size: e.size,
            modified: e.modified.map(system_time),
        })
        .collect())
}

/// `files-read`.
pub fn stat(path: &str) -> Result<Metadata, HostError> {
    let m = host::stat(path)?;
    Ok(Metadata {
        kind: m.kind.into(),
        size: m.size,
        modified: m.modified.map(system_time),
    })
}
