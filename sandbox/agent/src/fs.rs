//! The workspace, from inside the container: every file operation the
//! server asks for, confined to `/workspace`.
//!
//! Every access goes through a [`cap_std::fs::Dir`] opened on the workspace
//! root, so the kernel-level walk (`openat2` with `RESOLVE_BENEATH` where the
//! kernel has it) refuses any path that would leave it: `..` that climbs out,
//! absolute symlinks, and symlinks that point elsewhere. Paths are checked for
//! form first (NUL bytes, absolute paths) so the caller gets a clear message
//! instead of an `EACCES`. Paths as the container sees them
//! (`/workspace/app.py`) are accepted and mean the same file as `app.py`.
//!
//! Whatever is in the workspace was made by untrusted code, so a file is
//! opened non-blocking and checked before it is used: a FIFO, a socket or a
//! device is refused, never read, and nothing here can wait on one.
//!
//! The methods are blocking; async callers run them on the blocking pool.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, File, OpenOptions, OpenOptionsExt};
use serde::{Deserialize, Serialize};

/// Where the workspace is mounted inside the container.
pub const CONTAINER_ROOT: &str = "/workspace";
/// Longest file or directory name, in bytes (Linux's `NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;
/// Longest path, in bytes (Linux's `PATH_MAX`, less its NUL).
pub const MAX_PATH_BYTES: usize = 4095;

/// Why a file operation failed; it travels from the agent to the server as
/// JSON, so both sides know the same cases.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum WorkspaceError {
    /// The path is malformed (empty component, NUL byte, absolute outside
    /// `/workspace`).
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    /// The path resolves outside the workspace (`..`, or a symlink).
    #[error("path {0:?} is outside the session workspace")]
    OutsideWorkspace(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} is a directory")]
    IsADirectory(String),
    #[error("{0} is not a directory")]
    NotADirectory(String),
    #[error("{path} is {size} bytes, over the {limit}-byte limit")]
    TooLarge { path: String, size: u64, limit: u64 },
    /// A FIFO, socket or device: never opened, so nothing waits on it.
    #[error("{0} is not a regular file (a FIFO, socket or device), so it is not opened")]
    SpecialFile(String),
    /// Well-formed, but never done (removing the workspace itself).
    #[error("{path:?}: {reason}")]
    Refused { path: String, reason: String },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
}

impl WorkspaceError {
    pub(crate) fn from_io(path: &str, e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::NotFound => Self::NotFound(path.to_string()),
            io::ErrorKind::PermissionDenied => Self::OutsideWorkspace(path.to_string()),
            io::ErrorKind::IsADirectory => Self::IsADirectory(path.to_string()),
            io::ErrorKind::NotADirectory => Self::NotADirectory(path.to_string()),
            // What an O_NOFOLLOW walk reports on a symlink it refuses.
            _ if e.raw_os_error() == Some(libc::ELOOP) => Self::OutsideWorkspace(path.to_string()),
            _ if e.raw_os_error() == Some(libc::ENAMETOOLONG) => Self::InvalidPath {
                path: path.to_string(),
                reason: "it is longer than the file system allows".into(),
            },
            // A FIFO opened non-blocking for writing with nobody reading.
            _ if e.raw_os_error() == Some(libc::ENXIO) => Self::SpecialFile(path.to_string()),
            _ => Self::Io {
                path: path.to_string(),
                message: e.to_string(),
            },
        }
    }
}

/// What a directory entry is (a symlink is reported, not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
    Other,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryInfo {
    pub name: String,
    pub kind: EntryKind,
    /// Size in bytes; `None` for directories.
    pub size: Option<u64>,
    pub modified: Option<SystemTime>,
}

/// What [`Workspace::stat`] reports about one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub kind: EntryKind,
    pub size: u64,
    pub modified: Option<SystemTime>,
}

/// A workspace directory with every access confined to it. Files it makes
/// belong to whoever runs the agent: the container's user.
#[derive(Debug)]
pub struct Workspace {
    root: PathBuf,
    dir: Dir,
}

impl Workspace {
    /// Creates the directory (and its parents) if needed and opens it.
    pub fn create(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Self::open(root)
    }

    /// Opens an existing workspace directory.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = std::fs::canonicalize(root.into())?;
        let dir = Dir::open_ambient_dir(&root, ambient_authority())?;
        Ok(Self { root, dir })
    }

    /// The workspace's absolute path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory handle every access goes through.
    pub(crate) fn dir(&self) -> &Dir {
        &self.dir
    }

    /// Checks a caller's path for form and returns it relative to the
    /// workspace root (`"."` for the root itself). Confinement against `..` and
    /// symlinks is enforced by the `openat` walk when the path is used.
    pub fn relative(path: &str) -> Result<PathBuf, WorkspaceError> {
        let invalid = |reason: &str| WorkspaceError::InvalidPath {
            path: path.to_string(),
            reason: reason.to_string(),
        };
        if path.contains('\0') {
            return Err(invalid("contains a NUL byte"));
        }
        if path.len() > MAX_PATH_BYTES {
            return Err(invalid(
                "it is longer than 4095 bytes (the file system's limit)",
            ));
        }
        if path.split('/').any(|name| name.len() > MAX_NAME_BYTES) {
            return Err(invalid(
                "a name in it is longer than 255 bytes (the file system's limit)",
            ));
        }
        let trimmed = path.trim();
        let rel = if let Some(rest) = trimmed.strip_prefix(CONTAINER_ROOT) {
            if !(rest.is_empty() || rest.starts_with('/')) {
                // `/workspacefoo`: an absolute path elsewhere.
                return Err(WorkspaceError::OutsideWorkspace(path.to_string()));
            }
            rest.trim_start_matches('/')
        } else if trimmed.starts_with('/') {
            return Err(WorkspaceError::OutsideWorkspace(path.to_string()));
        } else {
            trimmed
        };
        let mut out = PathBuf::new();
        // `..` is kept (the openat walk decides, through symlinks), but one
        // that climbs above the root on its face is refused right here.
        let mut depth = 0usize;
        for c in Path::new(rel).components() {
            match c {
                Component::Normal(p) => {
                    out.push(p);
                    depth += 1;
                }
                Component::CurDir => {}
                Component::ParentDir => {
                    depth = depth
                        .checked_sub(1)
                        .ok_or_else(|| WorkspaceError::OutsideWorkspace(path.to_string()))?;
                    out.push("..");
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(invalid("absolute paths are not allowed"));
                }
            }
        }
        if out.as_os_str().is_empty() {
            out.push(".");
        }
        Ok(out)
    }

    /// Lists a directory, sorted by name. Symlinks are reported as such (and
    /// not followed).
    pub fn list(&self, path: &str) -> Result<Vec<EntryInfo>, WorkspaceError> {
        let rel = Self::relative(path)?;
        let err = |e| WorkspaceError::from_io(path, e);
        let meta = self.dir.metadata(&rel).map_err(err)?;
        if !meta.is_dir() {
            return Err(WorkspaceError::NotADirectory(path.to_string()));
        }
        let mut items = Vec::new();
        for entry in self.dir.read_dir(&rel).map_err(err)? {
            let entry = entry.map_err(err)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // An entry can vanish between readdir and stat (the container is
            // running); skip it rather than failing the listing.
            let Ok(meta) = entry.metadata() else { continue };
            let kind = kind_of(&meta);
            items.push(EntryInfo {
                name,
                kind,
                size: (kind != EntryKind::Directory).then_some(meta.len()),
                modified: meta.modified().ok().map(|t| t.into_std()),
            });
        }
        items.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(items)
    }

    /// Reads a whole file, refusing files over `limit` bytes.
    pub fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>, WorkspaceError> {
        let err = |e| WorkspaceError::from_io(path, e);
        let mut file = self.open_file(path)?;
        let meta = file.metadata().map_err(err)?;
        if meta.len() > limit {
            return Err(WorkspaceError::TooLarge {
                path: path.to_string(),
                size: meta.len(),
                limit,
            });
        }
        let mut buf = Vec::with_capacity(meta.len() as usize);
        // `take` guards against a file that grows while we read it.
        (&mut file)
            .take(limit + 1)
            .read_to_end(&mut buf)
            .map_err(err)?;
        if buf.len() as u64 > limit {
            return Err(WorkspaceError::TooLarge {
                path: path.to_string(),
                size: buf.len() as u64,
                limit,
            });
        }
        Ok(buf)
    }

    /// Opens a regular file for reading. A FIFO, socket or device is
    /// refused: the open does not wait for a writer, and nothing is read.
    pub fn open_file(&self, path: &str) -> Result<File, WorkspaceError> {
        let rel = Self::relative(path)?;
        let mut opts = OpenOptions::new();
        opts.read(true);
        open_regular(&self.dir, &rel, &opts, path)
    }

    /// Writes a file, creating missing parent directories. The content is
    /// written to a temporary file beside the target and renamed over it, so
    /// readers (and the container) never see a half-written file.
    pub fn write(&self, path: &str, data: &[u8]) -> Result<(), WorkspaceError> {
        let rel = Self::relative(path)?;
        let err = |e| WorkspaceError::from_io(path, e);
        let (parent, name) = match (rel.parent(), rel.file_name()) {
            (Some(parent), Some(name)) => (parent, name),
            _ => return Err(WorkspaceError::IsADirectory(path.to_string())),
        };
        let parent_dir = if parent.as_os_str().is_empty() {
            self.dir.try_clone().map_err(err)?
        } else {
            match self.dir.open_dir(parent) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.dir.create_dir_all(parent).map_err(err)?;
                    self.dir.open_dir(parent).map_err(err)?
                }
                Err(e) => return Err(err(e)),
            }
        };
        if let Ok(meta) = parent_dir.symlink_metadata(name) {
            if meta.is_dir() {
                return Err(WorkspaceError::IsADirectory(path.to_string()));
            }
            if meta.file_type().is_symlink() {
                // Write through a link that stays inside the workspace (the
                // confined open refuses one that leads out), if it leads to
                // a regular file.
                let mut opts = OpenOptions::new();
                opts.write(true).create(true);
                let mut file = open_regular(&parent_dir, Path::new(name), &opts, path)?;
                file.set_len(0).map_err(err)?;
                file.write_all(data).map_err(err)?;
                return file.sync_data().map_err(err);
            }
        }
        // Not derived from the target's name: a name of the longest length
        // the file system takes must still have room for its temporary file.
        let tmp_name = format!(".crogia-tmp-{:016x}", rand::random::<u64>());
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        let result = (|| {
            let mut tmp = parent_dir.open_with(&tmp_name, &opts)?;
            tmp.write_all(data)?;
            // Keep the mode of a file we replace.
            if let Ok(existing) = parent_dir.metadata(name) {
                tmp.set_permissions(existing.permissions())?;
            }
            tmp.sync_data()?;
            parent_dir.rename(&tmp_name, &parent_dir, name)
        })();
        if result.is_err() {
            let _ = parent_dir.remove_file(&tmp_name);
        }
        result.map_err(err)
    }

    /// Describes one path (following symlinks inside the workspace).
    pub fn stat(&self, path: &str) -> Result<Metadata, WorkspaceError> {
        let rel = Self::relative(path)?;
        let meta = self
            .dir
            .metadata(&rel)
            .map_err(|e| WorkspaceError::from_io(path, e))?;
        Ok(Metadata {
            kind: kind_of(&meta),
            size: meta.len(),
            modified: meta.modified().ok().map(|t| t.into_std()),
        })
    }

    /// Removes a file, or a directory with everything in it.
    pub fn remove(&self, path: &str) -> Result<(), WorkspaceError> {
        let rel = Self::relative(path)?;
        if rel == Path::new(".") {
            return Err(WorkspaceError::Refused {
                path: path.to_string(),
                reason: "the workspace itself cannot be removed".into(),
            });
        }
        let err = |e| WorkspaceError::from_io(path, e);
        let meta = self.dir.symlink_metadata(&rel).map_err(err)?;
        if meta.is_dir() {
            self.dir.remove_dir_all(&rel)
        } else {
            self.dir.remove_file(&rel)
        }
        .map_err(err)
    }

    /// The last `lines` lines of a file, read from its end so a large log
    /// costs no more than the lines asked for.
    pub fn tail_lines(&self, path: &str, lines: usize) -> Result<String, WorkspaceError> {
        const CHUNK: u64 = 16 * 1024;
        /// Bound on what one call returns, whatever `lines` is.
        const MAX_BYTES: u64 = 4 * 1024 * 1024;
        let err = |e| WorkspaceError::from_io(path, e);
        let mut file = self.open_file(path)?;
        let len = file.metadata().map_err(err)?.len();
        if lines == 0 || len == 0 {
            return Ok(String::new());
        }
        let mut start = len;
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let step = CHUNK.min(start);
            start -= step;
            let mut chunk = vec![0; step as usize];
            file.seek(SeekFrom::Start(start)).map_err(err)?;
            file.read_exact(&mut chunk).map_err(err)?;
            chunk.extend_from_slice(&buf);
            buf = chunk;
            // A trailing newline ends the last line; it does not start a new one.
            let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
            let newlines = body.iter().filter(|&&b| b == b'\n').count();
            if newlines >= lines || start == 0 || len - start >= MAX_BYTES {
                let body_len = body.len();
                let mut seen = 0;
                let mut cut = 0;
                for (i, &b) in buf[..body_len].iter().enumerate().rev() {
                    if b == b'\n' {
                        seen += 1;
                        if seen == lines {
                            cut = i + 1;
                            break;
                        }
                    }
                }
                return Ok(String::from_utf8_lossy(&buf[cut..]).into_owned());
            }
        }
    }
}

/// Opens `rel` under `dir` without ever blocking, and keeps it only if it
/// is a regular file. `O_NONBLOCK` makes opening a FIFO return at once (or
/// fail with `ENXIO` when written with no reader); the file type is then
/// checked on the open descriptor, so a swap between a check and the open
/// cannot slip a FIFO through. The flag is cleared again for the caller.
pub(crate) fn open_regular(
    dir: &Dir,
    rel: &Path,
    opts: &OpenOptions,
    path: &str,
) -> Result<File, WorkspaceError> {
    let err = |e| WorkspaceError::from_io(path, e);
    let mut opts = opts.clone();
    opts.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    let file = dir.open_with(rel, &opts).map_err(err)?;
    let meta = file.metadata().map_err(err)?;
    if meta.is_dir() {
        return Err(WorkspaceError::IsADirectory(path.to_string()));
    }
    if !meta.is_file() {
        return Err(WorkspaceError::SpecialFile(path.to_string()));
    }
    rustix::fs::fcntl_setfl(&file, rustix::fs::OFlags::empty()).map_err(|e| err(e.into()))?;
    Ok(file)
}

fn kind_of(meta: &cap_std::fs::Metadata) -> EntryKind {
    let ft = meta.file_type();
    if ft.is_dir() {
        EntryKind::Directory
    } else if ft.is_file() {
        EntryKind::File
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else {
        EntryKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn ws() -> (tempfile::TempDir, Workspace) {
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspace::create(tmp.path().join("session_x")).unwrap();
        (tmp, ws)
    }

    #[test]
    fn write_creates_parents_and_read_returns_the_bytes() {
        let (_t, ws) = ws();
        ws.write("src/deep/app.py", b"print('hi')\n").unwrap();
        assert_eq!(ws.read("src/deep/app.py", 1024).unwrap(), b"print('hi')\n");
        assert_eq!(
            ws.read("/workspace/src/deep/app.py", 1024).unwrap(),
            b"print('hi')\n"
        );
        let st = ws.stat("src/deep").unwrap();
        assert_eq!(st.kind, EntryKind::Directory);
    }

    #[test]
    fn overwrite_keeps_no_temporary_files() {
        let (_t, ws) = ws();
        ws.write("a.txt", b"one").unwrap();
        ws.write("a.txt", b"two").unwrap();
        let names: Vec<_> = ws.list(".").unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, vec!["a.txt"]);
        assert_eq!(ws.read("a.txt", 10).unwrap(), b"two");
    }

    #[test]
    fn list_reports_kind_size_and_modified() {
        let (_t, ws) = ws();
        ws.write("b.txt", b"12345").unwrap();
        ws.write("dir/x", b"").unwrap();
        let items = ws.list(".").unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].name, "b.txt");
        assert_eq!(items[0].kind, EntryKind::File);
        assert_eq!(items[0].size, Some(5));
        assert!(items[0].modified.is_some());
        assert_eq!(items[1].kind, EntryKind::Directory);
        assert_eq!(items[1].size, None);
    }

    #[test]
    fn parent_dir_escape_is_refused() {
        let (t, ws) = ws();
        std::fs::write(t.path().join("secret"), b"s").unwrap();
        for p in ["../secret", "a/../../secret", "/workspace/../secret"] {
            let e = ws.read(p, 100).unwrap_err();
            assert!(
                matches!(e, WorkspaceError::OutsideWorkspace(_)),
                "{p}: {e:?}"
            );
        }
        assert!(matches!(
            ws.write("../evil", b"x").unwrap_err(),
            WorkspaceError::OutsideWorkspace(_)
        ));
        assert!(!t.path().join("evil").exists());
    }

    #[test]
    fn dotdot_that_stays_inside_is_allowed() {
        let (_t, ws) = ws();
        ws.write("a/b.txt", b"ok").unwrap();
        assert_eq!(ws.read("a/../a/b.txt", 10).unwrap(), b"ok");
    }

    #[test]
    fn absolute_paths_and_nul_bytes_are_refused_clearly() {
        let (_t, ws) = ws();
        for p in ["/etc/passwd", "/workspacefoo/x"] {
            let e = ws.read(p, 100).unwrap_err();
            assert!(
                matches!(e, WorkspaceError::OutsideWorkspace(_)),
                "{p}: {e:?}"
            );
        }
        let e = ws.write("a\0b", b"x").unwrap_err();
        assert!(e.to_string().contains("NUL"), "{e}");
    }

    #[test]
    fn the_longest_names_work_and_longer_ones_are_refused_naming_the_limit() {
        let (_t, ws) = ws();
        // 255 bytes: the file system's limit, which the temporary file made
        // while writing must not push it over.
        let longest = "n".repeat(MAX_NAME_BYTES);
        ws.write(&format!("d/{longest}"), b"ok").unwrap();
        assert_eq!(ws.read(&format!("d/{longest}"), 10).unwrap(), b"ok");
        let e = ws.write(&"n".repeat(MAX_NAME_BYTES + 1), b"x").unwrap_err();
        assert!(
            matches!(e, WorkspaceError::InvalidPath { .. }) && e.to_string().contains("255 bytes"),
            "{e}"
        );
        // 128 characters, but 256 bytes.
        let e = ws.read(&"é".repeat(128), 10).unwrap_err();
        assert!(e.to_string().contains("255 bytes"), "{e}");
        let e = ws.read(&"a/".repeat(2048), 10).unwrap_err();
        assert!(e.to_string().contains("4095 bytes"), "{e}");
    }

    #[test]
    fn symlinks_pointing_outside_are_refused() {
        let (t, ws) = ws();
        std::fs::write(t.path().join("secret"), b"s").unwrap();
        symlink("/etc", ws.root().join("etc_link")).unwrap();
        symlink("../secret", ws.root().join("rel_link")).unwrap();
        symlink(t.path(), ws.root().join("dir_link")).unwrap();
        for p in ["etc_link/passwd", "rel_link", "dir_link/secret"] {
            assert!(
                matches!(
                    ws.read(p, 100).unwrap_err(),
                    WorkspaceError::OutsideWorkspace(_)
                ),
                "{p}"
            );
        }
        let e = ws.write("dir_link/new", b"x").unwrap_err();
        assert!(matches!(e, WorkspaceError::OutsideWorkspace(_)), "{e:?}");
        assert!(matches!(
            ws.write("rel_link", b"x").unwrap_err(),
            WorkspaceError::OutsideWorkspace(_)
        ));
        assert_eq!(std::fs::read(t.path().join("secret")).unwrap(), b"s");
        assert!(matches!(
            ws.list("dir_link").unwrap_err(),
            WorkspaceError::OutsideWorkspace(_)
        ));
    }

    #[test]
    fn symlinks_inside_the_workspace_work() {
        let (_t, ws) = ws();
        ws.write("real.txt", b"data").unwrap();
        symlink("real.txt", ws.root().join("alias")).unwrap();
        assert_eq!(ws.read("alias", 10).unwrap(), b"data");
        ws.write("alias", b"new").unwrap();
        assert_eq!(ws.read("real.txt", 10).unwrap(), b"new");
    }

    #[test]
    fn reads_over_the_limit_are_refused() {
        let (_t, ws) = ws();
        ws.write("big", &[b'x'; 100]).unwrap();
        assert!(matches!(
            ws.read("big", 99).unwrap_err(),
            WorkspaceError::TooLarge { size: 100, .. }
        ));
    }

    #[test]
    fn missing_files_and_directories_are_reported_as_such() {
        let (_t, ws) = ws();
        ws.write("f", b"").unwrap();
        assert!(matches!(
            ws.read("nope", 10).unwrap_err(),
            WorkspaceError::NotFound(_)
        ));
        assert!(matches!(
            ws.list("f").unwrap_err(),
            WorkspaceError::NotADirectory(_)
        ));
        ws.write("d/x", b"").unwrap();
        assert!(matches!(
            ws.read("d", 10).unwrap_err(),
            WorkspaceError::IsADirectory(_)
        ));
        assert!(matches!(
            ws.write("d", b"").unwrap_err(),
            WorkspaceError::IsADirectory(_)
        ));
    }

    #[test]
    fn remove_deletes_files_and_trees_but_not_the_root() {
        let (_t, ws) = ws();
        ws.write("d/e/f", b"").unwrap();
        ws.remove("d").unwrap();
        assert!(matches!(
            ws.stat("d").unwrap_err(),
            WorkspaceError::NotFound(_)
        ));
        assert!(ws.remove(".").is_err());
    }

    mod generated {
        use super::*;
        use proptest::prelude::*;

        /// Path pieces an attacker (or a confused model) might combine.
        fn piece() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("..".to_string()),
                Just(".".to_string()),
                Just("".to_string()),
                Just("/".to_string()),
                Just("/workspace".to_string()),
                Just("inside".to_string()),
                Just("out_abs".to_string()),
                Just("out_rel".to_string()),
                Just("in_link".to_string()),
                Just("secret.txt".to_string()),
                Just("f.txt".to_string()),
                Just("\0".to_string()),
                "[a-z]{1,3}",
            ]
        }

        fn path() -> impl Strategy<Value = String> {
            prop::collection::vec(piece(), 1..7).prop_map(|p| p.join("/"))
        }

        /// Every entry under `dir` except the workspace `w`, recursively:
        /// files with their contents, directories and symlinks (not
        /// followed) with what they are, so that a file or directory made
        /// anywhere outside shows up.
        fn outside_snapshot(dir: &Path) -> Vec<(PathBuf, String)> {
            fn walk(dir: &Path, top: bool, out: &mut Vec<(PathBuf, String)>) {
                for e in std::fs::read_dir(dir).unwrap().flatten() {
                    if top && e.file_name() == "w" {
                        continue;
                    }
                    let path = e.path();
                    let kind = e.file_type().unwrap();
                    if kind.is_symlink() {
                        let target = std::fs::read_link(&path).unwrap();
                        out.push((path, format!("link -> {}", target.display())));
                    } else if kind.is_dir() {
                        out.push((path.clone(), "dir".into()));
                        walk(&path, false, out);
                    } else {
                        let bytes = std::fs::read(&path).unwrap();
                        out.push((path, format!("file {:?}", bytes)));
                    }
                }
            }
            let mut all = Vec::new();
            walk(dir, true, &mut all);
            all.sort();
            all
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(400))]

            /// Whatever the path, reads never return data from outside the
            /// workspace and writes never change anything outside it.
            #[test]
            fn no_path_reaches_outside_the_workspace(p in path(), data in "[a-z]{0,8}") {
                let tmp = tempfile::tempdir().unwrap();
                std::fs::write(tmp.path().join("secret.txt"), b"SECRET").unwrap();
                std::fs::create_dir(tmp.path().join("inside")).unwrap();
                std::fs::write(tmp.path().join("inside/f.txt"), b"OUTSIDE").unwrap();
                let ws = Workspace::create(tmp.path().join("w")).unwrap();
                ws.write("inside/f.txt", b"inside").unwrap();
                symlink(tmp.path(), ws.root().join("out_abs")).unwrap();
                symlink("..", ws.root().join("out_rel")).unwrap();
                symlink("inside", ws.root().join("in_link")).unwrap();
                let before = outside_snapshot(tmp.path());

                if let Ok(bytes) = ws.read(&p, 1 << 20) {
                    prop_assert_ne!(&bytes, b"SECRET");
                    prop_assert_ne!(&bytes, b"OUTSIDE");
                }
                if let Ok(items) = ws.list(&p) {
                    prop_assert!(!items.iter().any(|i| i.name == "secret.txt"), "listed outside via {p:?}");
                }
                if let Ok(text) = ws.tail_lines(&p, 5) {
                    prop_assert_ne!(text, "SECRET");
                }
                let _ = ws.write(&p, data.as_bytes());
                let _ = ws.remove(&p);
                prop_assert_eq!(outside_snapshot(tmp.path()), before);
                prop_assert!(tmp.path().join("secret.txt").exists());
            }
        }
    }

    #[test]
    fn tail_returns_the_last_lines() {
        let (_t, ws) = ws();
        let text: String = (1..=10_000).map(|i| format!("line {i}\n")).collect();
        ws.write("log", text.as_bytes()).unwrap();
        assert_eq!(
            ws.tail_lines("log", 3).unwrap(),
            "line 9998\nline 9999\nline 10000\n"
        );
        assert_eq!(ws.tail_lines("log", 20_000).unwrap(), text);
        ws.write("short", b"a\nb").unwrap();
        assert_eq!(ws.tail_lines("short", 1).unwrap(), "b");
        assert_eq!(ws.tail_lines("short", 5).unwrap(), "a\nb");
        assert_eq!(ws.tail_lines("short", 0).unwrap(), "");
    }

    #[test]
    fn fifos_are_refused_without_blocking_and_stat_reports_them() {
        let (_t, ws) = ws();
        let fifo = ws.root().join("pipe");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        symlink("pipe", ws.root().join("to_pipe")).unwrap();
        let root = ws.root().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let ws = Workspace::open(root).unwrap();
            let _ = tx.send((
                ws.read("pipe", 100),
                ws.tail_lines("pipe", 3),
                ws.open_file("to_pipe").map(|_| ()),
                ws.write("to_pipe", b"x"),
                ws.stat("pipe"),
            ));
        });
        let (read, tail, open, write, stat) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a FIFO blocked the workspace");
        for (what, e) in [
            ("read", read.map(|_| ()).unwrap_err()),
            ("tail", tail.map(|_| ()).unwrap_err()),
            ("open", open.unwrap_err()),
            ("write", write.unwrap_err()),
        ] {
            assert!(
                matches!(&e, WorkspaceError::SpecialFile(p) if p.ends_with("pipe")),
                "{what}: {e:?}"
            );
        }
        assert_eq!(stat.unwrap().kind, EntryKind::Other);
    }

    #[test]
    fn errors_travel_as_json_and_come_back_the_same() {
        let errors = [
            WorkspaceError::NotFound("a".into()),
            WorkspaceError::TooLarge {
                path: "b".into(),
                size: 9,
                limit: 1,
            },
            WorkspaceError::SpecialFile("c".into()),
        ];
        for e in errors {
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(
                serde_json::from_str::<WorkspaceError>(&json).unwrap(),
                e,
                "{json}"
            );
        }
    }
}
