//! Checkpoints: the workspace's state recorded in a git object store kept
//! outside it, diffs between two states, and the workspace put back as a
//! state was, byte for byte.
//!
//! The store is a bare git repository (loose objects, written with
//! gitoxide), so `git --git-dir=<store> log -p` reads it. A checkpoint is a
//! commit whose tree is the workspace: regular files (git's `100644` or
//! `100755`), symlinks (`120000`, the target as the blob) and directories.
//! What git cannot say travels in a blob the commit names in its
//! `crogia-meta` header ([`Meta`]): each file's exact permission bits where
//! they are not git's `0644`/`0755`, the empty directories, and the files
//! left out (over the size limit, not a regular file or symlink, a name
//! that is not UTF-8). A user's own `.git` is recorded like any other files
//! and never touched as a repository.
//!
//! Taking a checkpoint costs a walk of the workspace (`lstat` of each
//! entry) and the reading of files that changed: a stat cache beside the
//! objects remembers each file's size, times, inode and mode with its blob,
//! as git's index does. An entry recorded less than [`RACY`] before its
//! snapshot is not trusted (its file may change again within the same tick).
//! Directories are walked on several threads (rayon), as git's
//! `core.preloadIndex` stats the index on several; comparing a checkpoint
//! with its parent reads only the trees on the way to a change.
//!
//! Everything under the workspace was made by untrusted code: the walk
//! never follows a symlink, opens files `O_NOFOLLOW | O_NONBLOCK` and keeps
//! them only if `fstat` says they are regular, so a FIFO or a device is
//! listed as left out, never read. The store itself is inside the sandbox
//! too, so what is read back from it is bounded ([`MAX_OBJECT_BYTES`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{Read, Write as _};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cap_std::fs::{Dir, MetadataExt, OpenOptions, OpenOptionsExt};
use gix_hash::ObjectId;
use gix_object::bstr::{BString, ByteSlice};
use gix_object::tree::{Entry, EntryKind, EntryMode};
use gix_object::{Kind, Write as _, WriteTo as _};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::fs::Workspace;

mod bundle;
use bundle::{Bundle, BundleWriter};

/// Deepest directory level recorded.
pub const MAX_DEPTH: usize = 64;
/// Most entries (files, links, directories) one checkpoint records.
pub const MAX_ENTRIES: usize = 200_000;
/// Largest object read back from the store.
pub const MAX_OBJECT_BYTES: u64 = 256 << 20;
/// How long before its snapshot an entry's file must have last changed for
/// the stat cache to trust it.
pub const RACY: Duration = Duration::from_secs(2);
/// Most objects one export or import carries.
pub const MAX_TRANSFER_OBJECTS: usize = 4 * MAX_ENTRIES;
/// Most bytes of a diff's `patch`; the rest is cut, with a line saying so.
pub const MAX_PATCH_BYTES: usize = 4 << 20;
/// Longest a diff of one file may take before it is shown coarser.
const DIFF_TIMEOUT: Duration = Duration::from_millis(500);
/// The bytes git looks at to tell binary from text.
const BINARY_PROBE: usize = 8000;
/// The ref the latest checkpoint is kept under (so `git log` finds them).
const REF: &str = "refs/heads/checkpoints";
/// The stat cache, beside the objects (postcard: a 10,000-file cache reads
/// and writes in a millisecond or two).
const CACHE_FILE: &str = "crogia-cache.bin";
/// In a fork layer's store: where each of its checkpoint's file blobs is
/// among the layer's files (postcard), which hold them already, so the
/// store holds no second copy ([`Store::copy_checkpoint`],
/// [`Store::with_files`]).
const FILES_INDEX: &str = "crogia-layer-files.bin";
/// Largest [`FILES_INDEX`] read.
const MAX_FILES_INDEX_BYTES: u64 = 64 << 20;
/// Where an older agent kept it, as JSON; removed when the new one is written.
const OLD_CACHE_FILE: &str = "crogia-cache.json";
/// The commit header naming a checkpoint's [`Meta`] blob.
const META_HEADER: &str = "crogia-meta";
/// The zlib level objects are written at. Not git's loose default (1):
/// zlib-rs's level 1 is its quick strategy (static Huffman codes), which
/// left the bench's 118 MB of text at 0.79 of its size against 0.47 at
/// level 2 for about the same time; every fork carries these bytes
/// through the server twice. Any level reads back the same.
const LOOSE_LEVEL: i32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("the checkpoint store at {path}: {message}")]
    Store { path: String, message: String },
    #[error("no checkpoint {0} in this sandbox's store")]
    Unknown(String),
    #[error("{0:?} is not a checkpoint id")]
    BadId(String),
    #[error(
        "the workspace holds more than {MAX_ENTRIES} entries; a checkpoint records at most that"
    )]
    TooMany,
    #[error("the workspace: {0}")]
    Workspace(String),
    #[error("the import is refused: {0}")]
    BadImport(String),
}

/// A file a checkpoint left out, and why.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedFile {
    pub path: String,
    /// Its size, for a file over the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    pub reason: String,
}

/// What git's tree cannot say about a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Permission bits (`0o777`; setuid, setgid and sticky are not kept)
    /// of files whose mode is not git's.
    #[serde(default)]
    pub modes: BTreeMap<String, u32>,
    /// Directories with nothing recorded in them.
    #[serde(default)]
    pub empty_dirs: Vec<String>,
    #[serde(default)]
    pub skipped: Vec<SkippedFile>,
}

/// A checkpoint just taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taken {
    /// The commit's id (hex).
    pub checkpoint: String,
    /// Against its parent (everything, for the first).
    pub files_changed: usize,
    pub insertions: usize,
    pub deletions: usize,
    pub skipped: Vec<SkippedFile>,
    /// The files (and symlinks) it recorded, and their bytes: what a copy
    /// of it writes. 0 from an agent that predates them.
    #[serde(default)]
    pub files: u64,
    #[serde(default)]
    pub bytes: u64,
}

/// How a file differs between two states.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    Added,
    Modified,
    Deleted,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDiff {
    pub path: String,
    pub status: FileStatus,
    pub insertions: usize,
    pub deletions: usize,
    pub binary: bool,
}

/// Two states compared.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diff {
    pub files: Vec<FileDiff>,
    /// A unified diff, as `git diff` prints it.
    pub patch: String,
}

/// What putting a state back changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    pub written: usize,
    pub removed: usize,
}

/// What an import added to the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Imported {
    /// Objects received (those the store already held included).
    pub objects: usize,
    /// Their bytes, uncompressed.
    pub bytes: u64,
    /// When the import was also to put the checkpoint in the workspace:
    /// what that changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<Restored>,
}

/// One recorded entry of a state, by workspace-relative path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Recorded {
    mode: EntryMode,
    oid: ObjectId,
}

/// The entries that differ between two states, by path: what each side
/// records (nothing on the side that lacks it).
type Changes = BTreeMap<String, (Option<Recorded>, Option<Recorded>)>;

/// An object read from an import, not yet checked.
struct Incoming {
    /// Its entry's name, for errors.
    name: String,
    /// Its kind when it came as bytes; `None` when it came as a loose file.
    form: Option<Kind>,
    id: ObjectId,
    data: Vec<u8>,
    /// The workspace files it is the content of, to write once it is
    /// checked (see [`Plan`]).
    files: Vec<PlannedFile>,
}

/// A file an import writes into the workspace from a blob it brings.
struct PlannedFile {
    path: String,
    link: bool,
    mode: u32,
    /// Its directory, made and opened once by the reader
    /// ([`ImportDirs`]); `None` until then.
    dir: Option<std::sync::Arc<Dir>>,
}

/// The directories a fork's import has made in its new workspace, each
/// opened once: the reader makes a file's directory (and its parents)
/// before the file's batch is checked, so the threads that write files
/// neither walk nor make directories.
struct ImportDirs {
    open: HashMap<String, std::sync::Arc<Dir>>,
}

impl ImportDirs {
    fn new(root: &Dir) -> std::io::Result<Self> {
        let mut open = HashMap::new();
        open.insert(String::new(), std::sync::Arc::new(root.try_clone()?));
        Ok(Self { open })
    }

    /// Directory `path` (workspace-relative), made with its parents if
    /// need be; `None` once [`MAX_OPEN_DIRS`] are open (the file is then
    /// written as a restore writes it). Under the workspace only: each
    /// `Dir` refuses a name that climbs out of it, and a link is not
    /// followed.
    fn get(&mut self, path: &str) -> std::io::Result<Option<std::sync::Arc<Dir>>> {
        /// Directories held open at once (a descriptor each).
        const MAX_OPEN_DIRS: usize = 1024;
        if let Some(dir) = self.open.get(path) {
            return Ok(Some(dir.clone()));
        }
        if self.open.len() >= MAX_OPEN_DIRS {
            return Ok(None);
        }
        let (parent, name) = split(path);
        let Some(parent) = self.get(parent)? else {
            return Ok(None);
        };
        match parent.create_dir(name) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let dir = std::sync::Arc::new(open_subdir(&parent, OsStr::new(name))?);
        self.open.insert(path.to_string(), dir.clone());
        Ok(Some(dir))
    }
}

/// Where an import that restores as it goes puts each blob: learnt, in
/// the stream's order, from the checkpoint's commit, its meta and its
/// trees, each checked against its id before it is read. A blob that comes
/// before the tree naming it (or before the meta) is left to the restore
/// that ends the import.
struct Plan {
    target: ObjectId,
    meta_id: Option<ObjectId>,
    meta: Option<Meta>,
    /// Trees still to come, with the paths (and depths) they are at.
    trees: HashMap<ObjectId, Vec<(String, usize)>>,
    /// Blobs still to come, with the paths they are the content of.
    blobs: HashMap<ObjectId, Vec<(String, EntryMode)>>,
    entries: usize,
}

impl Plan {
    fn new(target: ObjectId) -> Self {
        Self {
            target,
            meta_id: None,
            meta: None,
            trees: HashMap::new(),
            blobs: HashMap::new(),
            entries: 0,
        }
    }

    /// Learns what `object` says of the checkpoint; the files it is the
    /// content of.
    fn see(&mut self, store: &Store, object: &Incoming) -> Vec<PlannedFile> {
        let id = object.id;
        if let Some(meta) = &self.meta
            && let Some(paths) = self.blobs.remove(&id)
        {
            return paths
                .into_iter()
                .map(|(path, kind)| PlannedFile {
                    link: kind.is_link(),
                    mode: file_mode(meta, &path, kind),
                    path,
                    dir: None,
                })
                .collect();
        }
        let tree_at = self.trees.remove(&id);
        if id != self.target && Some(id) != self.meta_id && tree_at.is_none() {
            return Vec::new();
        }
        // Read only once checked: a forged object teaches nothing (the
        // import refuses it after).
        let decoded = match object.form {
            Some(kind) => Some((kind, object.data.clone())),
            None => inflate_loose(&object.data).ok(),
        };
        let Some((kind, bytes)) =
            decoded.filter(|(kind, bytes)| store.hash(*kind, bytes).is_ok_and(|h| h == id))
        else {
            return Vec::new();
        };
        match kind {
            Kind::Commit if id == self.target => {
                let Ok(commit) = gix_object::CommitRef::from_bytes(&bytes, gix_hash::Kind::Sha1)
                else {
                    return Vec::new();
                };
                self.trees
                    .entry(commit.tree())
                    .or_default()
                    .push((String::new(), 0));
                self.meta_id = meta_id(&commit);
                if self.meta_id.is_none() {
                    self.meta = Some(Meta::default());
                }
            }
            Kind::Blob if Some(id) == self.meta_id => {
                self.meta = serde_json::from_slice(&bytes).ok();
            }
            Kind::Tree => {
                let Ok(parsed) = gix_object::TreeRef::from_bytes(&bytes, gix_hash::Kind::Sha1)
                else {
                    return Vec::new();
                };
                for (prefix, depth) in tree_at.unwrap_or_default() {
                    for e in &parsed.entries {
                        let Ok(name) = e.filename.to_str() else {
                            continue;
                        };
                        let path = join(&prefix, name);
                        if e.mode.is_tree() && depth < MAX_DEPTH {
                            self.trees
                                .entry(e.oid.to_owned())
                                .or_default()
                                .push((path, depth + 1));
                        } else if e.mode.is_blob_or_symlink() && self.entries < MAX_ENTRIES {
                            self.entries += 1;
                            self.blobs
                                .entry(e.oid.to_owned())
                                .or_default()
                                .push((path, e.mode));
                        }
                    }
                }
            }
            _ => {}
        }
        Vec::new()
    }
}

/// What a loose object file holds: its kind and its bytes, refusing one
/// that claims or holds more than [`MAX_OBJECT_BYTES`].
fn inflate_loose(file: &[u8]) -> Result<(Kind, Vec<u8>), String> {
    let mut inflate = gix_zlib::Inflate::default();
    let mut head = [0u8; 64];
    let (_, consumed, written) = inflate
        .prefix(file, &mut head)
        .map_err(|e| format!("not a zlib stream: {e}"))?;
    let (kind, size, header_len) = gix_object::decode::loose_header(&head[..written])
        .map_err(|e| format!("no object header: {e}"))?;
    if size > MAX_OBJECT_BYTES {
        return Err(format!("it claims {size} bytes, over {MAX_OBJECT_BYTES}"));
    }
    let mut data = Vec::with_capacity(size as usize);
    inflate
        .rest(
            &file[consumed..],
            &head[..written],
            header_len,
            &mut data,
            // One more than it says: a stream holding more is refused.
            size as usize + 1,
        )
        .map_err(|e| format!("not a zlib stream: {e}"))?;
    if data.len() as u64 != size {
        return Err(format!(
            "it holds {} bytes, not the {size} its header says",
            data.len()
        ));
    }
    Ok((kind, data))
}

/// What the stat cache knows of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stat {
    size: u64,
    mtime: i64,
    mtime_ns: i64,
    ctime: i64,
    ctime_ns: i64,
    ino: u64,
    mode: u32,
    oid: [u8; 20],
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Cache {
    /// When (seconds since the epoch, as a float) the snapshot that filled
    /// it started.
    taken_at: f64,
    files: HashMap<String, Stat>,
}

/// A checkpoint store (see the module's documentation).
pub struct Store {
    dir: PathBuf,
    odb: gix_odb::loose::Store,
    /// Objects imports brought, not yet settled as loose files.
    bundles: std::sync::RwLock<Vec<Bundle>>,
    /// A store this one reads what it lacks from and never writes (a
    /// fork's base: the checkpoint's objects, shared by the forks of it).
    base: Option<Box<Store>>,
    /// A fork layer's store: the layer's files, holding its checkpoint's
    /// file blobs.
    files: Option<LayerFiles>,
}

/// A fork layer's files, as its store reads blobs from them.
struct LayerFiles {
    dir: Dir,
    /// Each blob's path among them.
    at: HashMap<ObjectId, String>,
}

impl Store {
    /// Opens the store at `dir`, making it (a bare repository) if needed.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, CheckpointError> {
        let dir = dir.into();
        let store_err = |e: std::io::Error| CheckpointError::Store {
            path: dir.display().to_string(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir.join("objects")).map_err(store_err)?;
        std::fs::create_dir_all(dir.join("refs/heads")).map_err(store_err)?;
        if !dir.join("HEAD").exists() {
            std::fs::write(dir.join("HEAD"), format!("ref: {REF}\n")).map_err(store_err)?;
            std::fs::write(
                dir.join("config"),
                "[core]\n\trepositoryformatversion = 0\n\tbare = true\n",
            )
            .map_err(store_err)?;
        }
        Self::open_read_only(dir)
    }

    /// Opens the store at `dir` to read from only: nothing in it is made
    /// or changed (it may be on a read-only mount). It must be a store.
    pub fn open_read_only(dir: impl Into<PathBuf>) -> Result<Self, CheckpointError> {
        let dir = dir.into();
        if !dir.join("objects").is_dir() {
            return Err(CheckpointError::Store {
                path: dir.display().to_string(),
                message: "not a checkpoint store (it has no objects)".into(),
            });
        }
        let odb = gix_odb::loose::Store::at_opts(
            dir.join("objects"),
            gix_hash::Kind::Sha1,
            gix_odb::loose::Options {
                alloc_limit_bytes: Some(MAX_OBJECT_BYTES as usize),
                compression: gix_zlib::Compression::new(LOOSE_LEVEL)
                    .expect("a zlib level is 0 to 9"),
            },
        );
        let bundles = Bundle::open_all(&dir).into();
        Ok(Self {
            dir,
            odb,
            bundles,
            base: None,
            files: None,
        })
    }

    /// The same store, reading the objects it lacks from `base` (never
    /// writing there): what it holds counts as held, so a checkpoint taken
    /// on top writes only what `base` does not have.
    pub fn with_base(mut self, base: Store) -> Self {
        self.base = Some(Box::new(base));
        self
    }

    /// The same store, reading the blobs its [`FILES_INDEX`] lists from
    /// the layer's files at `files` (read-only): a fork layer's store, as
    /// a fork opens it for its base. A store without an index (a layer
    /// built before the index was) is returned as it is.
    pub fn with_files(mut self, files: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let raw = match open_bounded(&self.dir.join(FILES_INDEX), MAX_FILES_INDEX_BYTES) {
            Ok(raw) => raw,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(self),
            Err(e) => return Err(self.err(format!("{FILES_INDEX}: {e}"))),
        };
        let listed: Vec<([u8; 20], String)> =
            postcard::from_bytes(&raw).map_err(|e| self.err(format!("{FILES_INDEX}: {e}")))?;
        if listed.len() > MAX_ENTRIES {
            return Err(self.err(format!("{FILES_INDEX} lists too many files")));
        }
        let dir = Dir::open_ambient_dir(files.as_ref(), cap_std::ambient_authority())
            .map_err(|e| self.err(format!("{}: {e}", files.as_ref().display())))?;
        let at = listed
            .into_iter()
            .map(|(id, path)| (ObjectId::Sha1(id), path))
            .collect();
        self.files = Some(LayerFiles { dir, at });
        Ok(self)
    }

    /// Blob `id`'s loose form, from the layer file `path` holding it
    /// (checked against its id), stored uncompressed.
    fn layer_blob(&self, dir: &Dir, path: &str, id: &ObjectId) -> Result<Vec<u8>, CheckpointError> {
        let data = read_regular(dir, path)
            .map_err(|e| self.err(format!("blob {id} at {path} in the layer: {e}")))?;
        if !is_blob(&data, id) {
            return Err(self.err(format!("{path} in the layer does not hold blob {id}")));
        }
        stored_loose(Kind::Blob, &data).map_err(|e| self.err(e))
    }

    fn err(&self, message: impl ToString) -> CheckpointError {
        CheckpointError::Store {
            path: self.dir.display().to_string(),
            message: message.to_string(),
        }
    }

    /// Writes an object unless the store has it; its id.
    fn put(&self, kind: Kind, data: &[u8]) -> Result<ObjectId, CheckpointError> {
        let id = self.hash(kind, data)?;
        self.put_known(kind, data, id)
    }

    fn hash(&self, kind: Kind, data: &[u8]) -> Result<ObjectId, CheckpointError> {
        gix_object::compute_hash(gix_hash::Kind::Sha1, kind, data).map_err(|e| self.err(e))
    }

    /// Whether the store holds object `id` (loose or in a bundle).
    fn contains(&self, id: &ObjectId) -> bool {
        self.odb.contains(id)
            || self.in_bundle(|b| b.contains(id))
            || self.files.as_ref().is_some_and(|f| f.at.contains_key(id))
            || self.base.as_ref().is_some_and(|b| b.contains(id))
    }

    fn in_bundle(&self, f: impl Fn(&Bundle) -> bool) -> bool {
        self.bundles.read().expect("no reader panics").iter().any(f)
    }

    /// How long object `id`'s loose form is as stored here (0 when it is
    /// not): what reading it will take, not a limit on it.
    fn stored_len(&self, id: &ObjectId) -> u64 {
        if let Ok(m) = std::fs::symlink_metadata(self.odb.object_path(id)) {
            return m.len();
        }
        let bundles = self.bundles.read().expect("no reader panics");
        if let Some(len) = bundles.iter().find_map(|b| b.len_of(id)) {
            return len;
        }
        drop(bundles);
        if let Some(files) = &self.files
            && let Some(path) = files.at.get(id)
        {
            return files.dir.symlink_metadata(path).map_or(0, |m| m.len());
        }
        self.base.as_ref().map_or(0, |b| b.stored_len(id))
    }

    /// Object `id`'s loose form from a bundle, or from the base store, if
    /// one has it.
    fn bundled(&self, id: &ObjectId) -> Option<Result<Vec<u8>, CheckpointError>> {
        let bundles = self.bundles.read().expect("no reader panics");
        if let Some(read) = bundles.iter().find_map(|b| b.read(id)) {
            return Some(read.map_err(|e| self.err(format!("object {id} in a bundle: {e}"))));
        }
        drop(bundles);
        if let Some(files) = &self.files
            && let Some(path) = files.at.get(id)
        {
            return Some(self.layer_blob(&files.dir, path, id));
        }
        let base = self.base.as_ref().filter(|b| b.contains(id))?;
        Some(base.loose_file(id))
    }

    /// Writes an object whose id is known to be `id`, unless the store has it.
    fn put_known(
        &self,
        kind: Kind,
        data: &[u8],
        id: ObjectId,
    ) -> Result<ObjectId, CheckpointError> {
        if !self.contains(&id) {
            self.odb
                .write_buf_with_known_id(kind, data, id)
                .map_err(|e| self.err(e))?;
        }
        Ok(id)
    }

    /// Reads an object of `kind`, refusing one larger than `limit`.
    fn get(&self, id: &ObjectId, kind: Kind, limit: u64) -> Result<Vec<u8>, CheckpointError> {
        match self.odb.try_header(id).map_err(|e| self.err(e))? {
            None => {
                let loose = self
                    .bundled(id)
                    .ok_or_else(|| CheckpointError::Unknown(id.to_string()))??;
                let (found, data) =
                    inflate_loose(&loose).map_err(|e| self.err(format!("object {id}: {e}")))?;
                if found != kind || data.len() as u64 > limit {
                    return Err(self.err(format!(
                        "object {id} is a {found} of {} bytes, not a {kind} of at most {limit}",
                        data.len()
                    )));
                }
                return Ok(data);
            }
            Some((size, found)) if found != kind || size > limit => {
                return Err(self.err(format!(
                    "object {id} is a {found} of {size} bytes, not a {kind} of at most {limit}"
                )));
            }
            Some(_) => {}
        }
        let mut buf = Vec::new();
        let data = self
            .odb
            .try_find(id, &mut buf)
            .map_err(|e| self.err(e))?
            .ok_or_else(|| CheckpointError::Unknown(id.to_string()))?;
        Ok(data.data.to_vec())
    }

    /// Parses a checkpoint id given by a caller.
    pub fn parse_id(id: &str) -> Result<ObjectId, CheckpointError> {
        if id.len() != 40 {
            return Err(CheckpointError::BadId(id.into()));
        }
        ObjectId::from_hex(id.as_bytes()).map_err(|_| CheckpointError::BadId(id.into()))
    }

    /// A checkpoint's tree and meta.
    fn checkpoint(&self, id: &ObjectId) -> Result<(ObjectId, Meta), CheckpointError> {
        let bytes = self.get(id, Kind::Commit, 1 << 20)?;
        let commit = gix_object::CommitRef::from_bytes(&bytes, gix_hash::Kind::Sha1)
            .map_err(|e| self.err(format!("checkpoint {id}: {e}")))?;
        let tree = commit.tree();
        let meta = match meta_id(&commit) {
            Some(meta) => {
                let bytes = self.get(&meta, Kind::Blob, 64 << 20)?;
                serde_json::from_slice(&bytes).map_err(|e| self.err(format!("meta {meta}: {e}")))?
            }
            None => Meta::default(),
        };
        Ok((tree, meta))
    }

    /// Records the workspace as a checkpoint whose parent is `parent`
    /// (none for the first), leaving out files over `max_file_bytes`.
    pub fn take(
        &self,
        ws: &Workspace,
        parent: Option<&str>,
        message: &str,
        max_file_bytes: u64,
    ) -> Result<Taken, CheckpointError> {
        // A parent the store no longer holds (its volume was lost): this
        // checkpoint starts a history of its own rather than none ever again.
        let parent = parent
            .map(Self::parse_id)
            .transpose()?
            .filter(|p| self.contains(p));
        let (tree, meta, (files, file_bytes)) = self.record(ws, max_file_bytes)?;
        let mut meta_bytes = serde_json::to_vec(&meta).expect("meta serialises");
        meta_bytes.push(b'\n');
        let meta_id = self.put(Kind::Blob, &meta_bytes)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        let signature = gix_actor::Signature {
            name: "Crogia".into(),
            email: "crogia@localhost".into(),
            time: gix_object::date::Time {
                seconds: now,
                offset: 0,
            },
        };
        let commit = gix_object::Commit {
            tree,
            parents: parent.into_iter().collect(),
            author: signature.clone(),
            committer: signature,
            encoding: None,
            message: BString::from(format!("{}\n", message.trim_end())),
            extra_headers: vec![(META_HEADER.into(), meta_id.to_string().into())],
        };
        let mut bytes = Vec::new();
        commit.write_to(&mut bytes).map_err(|e| self.err(e))?;
        let id = self.put(Kind::Commit, &bytes)?;
        std::fs::write(self.dir.join(REF), format!("{id}\n")).map_err(|e| self.err(e))?;
        let before = match parent {
            Some(p) => Some(self.checkpoint(&p)?.0),
            None => None,
        };
        let diff = self.compare(&self.changes(before, Some(tree))?, false)?;
        Ok(Taken {
            checkpoint: id.to_string(),
            files_changed: diff.files.len(),
            insertions: diff.files.iter().map(|f| f.insertions).sum(),
            deletions: diff.files.iter().map(|f| f.deletions).sum(),
            skipped: meta.skipped,
            files,
            bytes: file_bytes,
        })
    }

    /// The changes from checkpoint `from` to checkpoint `to`, or to the
    /// workspace as it is now when `to` is `None`.
    pub fn diff(
        &self,
        ws: &Workspace,
        from: &str,
        to: Option<&str>,
        max_file_bytes: u64,
    ) -> Result<Diff, CheckpointError> {
        let from = self.checkpoint(&Self::parse_id(from)?)?.0;
        let to = match to {
            Some(to) => self.checkpoint(&Self::parse_id(to)?)?.0,
            None => self.record(ws, max_file_bytes)?.0,
        };
        self.compare(&self.changes(Some(from), Some(to))?, true)
    }

    /// Puts the workspace back as checkpoint `id` recorded it: its files'
    /// bytes and modes, its symlinks and empty directories; what it did not
    /// hold is removed, except what it left out.
    pub fn restore(&self, ws: &Workspace, id: &str) -> Result<Restored, CheckpointError> {
        self.restore_except(ws, id, &HashSet::new())
    }

    /// [`Store::restore`], taking the files at `written` as put back
    /// already (by the import that brought them).
    fn restore_except(
        &self,
        ws: &Workspace,
        id: &str,
        written: &HashSet<String>,
    ) -> Result<Restored, CheckpointError> {
        let (tree, meta) = self.checkpoint(&Self::parse_id(id)?)?;
        let target = self.flatten(&tree)?;
        let keep: BTreeSet<&str> = meta.skipped.iter().map(|s| s.path.as_str()).collect();
        let mut wanted_dirs: BTreeSet<String> = meta.empty_dirs.iter().cloned().collect();
        for path in target.keys() {
            let mut p = path.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                wanted_dirs.insert(parent.to_string());
                p = parent;
            }
        }
        let mut done = Restored::default();
        // What is there now that should not be.
        let root = ws.dir().try_clone().map_err(|e| self.ws_err(e))?;
        self.prune(&root, "", &target, &wanted_dirs, &keep, &mut done)?;
        for dir in &wanted_dirs {
            match root.symlink_metadata(dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    root.remove_file(dir).map_err(|e| self.ws_err(e))?;
                    root.create_dir_all(dir).map_err(|e| self.ws_err(e))?;
                }
                Err(_) => root.create_dir_all(dir).map_err(|e| self.ws_err(e))?,
            }
        }
        let cache = self.load_cache();
        // Each file on its own: written in parallel.
        let written: Vec<bool> = target
            .par_iter()
            .map(|(path, entry)| {
                if written.contains(path) {
                    return Ok(true);
                }
                self.put_back(&root, path, entry, &meta, &cache)
            })
            .collect::<Result<_, _>>()?;
        done.written = written.into_iter().filter(|w| *w).count();
        Ok(done)
    }

    /// Puts one recorded file or symlink back at `path` unless the stat
    /// cache says it is there already; whether it was written.
    fn put_back(
        &self,
        root: &Dir,
        path: &str,
        entry: &Recorded,
        meta: &Meta,
        cache: &Cache,
    ) -> Result<bool, CheckpointError> {
        let mode = file_mode(meta, path, entry.mode);
        if self.unchanged(root, path, entry, mode, cache) {
            return Ok(false);
        }
        let data = self.get(&entry.oid, Kind::Blob, MAX_OBJECT_BYTES)?;
        write_entry(root, path, entry.mode.is_link(), mode, &data).map_err(|e| self.ws_err(e))?;
        Ok(true)
    }

    /// Object `id` of this store as its loose file holds it, checked: its
    /// kind and bytes, and the loose file's bytes.
    fn checked_loose(&self, id: &ObjectId) -> Result<(Kind, Vec<u8>, Vec<u8>), CheckpointError> {
        let loose = self.loose_file(id)?;
        let forged = |m: String| CheckpointError::BadImport(format!("object {id}: {m}"));
        let (kind, data) = inflate_loose(&loose).map_err(forged)?;
        if self.hash(kind, &data)? != *id {
            return Err(forged("its bytes are another object's".into()));
        }
        Ok((kind, data, loose))
    }

    /// Makes this store (new and empty) hold checkpoint `checkpoint` of
    /// `source` with its history, and the empty workspace `into` as it
    /// recorded it: a fork layer's, built beside the parent. Every object
    /// is checked against its id as an import checks it, and the files are
    /// copied from `live` (the parent's workspace, most often still as the
    /// checkpoint recorded it) where they hold the recorded blob, checked
    /// by hashing what was read: only the files that changed since, and
    /// the history, are read (and inflated) from `source`'s objects. The
    /// checkpoint's file blobs are not stored again: the store's
    /// [`FILES_INDEX`] says which of `into`'s files holds each, and a fork
    /// on the layer reads them there ([`Store::with_files`]). Nothing is
    /// written in `source` or `live`.
    pub fn copy_checkpoint(
        &mut self,
        source: &Store,
        live: Option<&Workspace>,
        checkpoint: &str,
        into: &Workspace,
    ) -> Result<Imported, CheckpointError> {
        let target = Self::parse_id(checkpoint)?;
        let objects = source.closure(checkpoint)?;
        let mut done = Imported::default();
        // Commits, then trees and meta (what the rest is found by), in a
        // bundle read before the files are written.
        let commits: Vec<ObjectId> = objects
            .iter()
            .filter(|(k, _)| *k == Kind::Commit)
            .map(|(_, id)| *id)
            .collect();
        let mut bundle = BundleWriter::create(&self.dir).map_err(|e| self.err(e))?;
        let metas = self.copy_checked(source, &commits, &mut bundle, &mut done)?;
        let outline: Vec<ObjectId> = objects
            .iter()
            .filter(|(k, id)| *k == Kind::Tree || metas.contains(id))
            .map(|(_, id)| *id)
            .collect();
        self.copy_checked(source, &outline, &mut bundle, &mut done)?;
        self.finish_bundle(bundle)?;

        // The checkpoint's files: their directories first, then each blob
        // from the parent's file (what it read hashing to the blob's id)
        // or its checked object, written where the checkpoint has it.
        let (tree, meta) = self.checkpoint(&target)?;
        let files = self.flatten(&tree)?;
        let root = into.dir();
        let mut dirs = ImportDirs::new(root).map_err(|e| self.ws_err(e))?;
        let mut paths: HashMap<ObjectId, Vec<(&str, u32)>> = HashMap::new();
        for (path, entry) in &files {
            let (parent, _) = split(path);
            if dirs.get(parent).map_err(|e| self.ws_err(e))?.is_none() {
                // Past the directories held open: made, and opened per file.
                root.create_dir_all(parent).map_err(|e| self.ws_err(e))?;
            }
            if !entry.mode.is_link() {
                let mode = file_mode(&meta, path, entry.mode);
                paths.entry(entry.oid).or_default().push((path, mode));
            }
        }
        let dirs = dirs.open;
        let live = live.map(Workspace::dir);
        let bytes = paths
            .par_iter()
            .map(|(id, at)| {
                let from_live = live.and_then(|live| {
                    at.iter().find_map(|(path, _)| {
                        read_regular(live, path)
                            .ok()
                            .filter(|data| is_blob(data, id))
                    })
                });
                let data = match from_live {
                    Some(data) => data,
                    None => match source.checked_loose(id)? {
                        (Kind::Blob, data, _) => data,
                        (kind, ..) => {
                            return Err(CheckpointError::BadImport(format!(
                                "object {id} is a {kind}, not a file's blob"
                            )));
                        }
                    },
                };
                for (path, mode) in at {
                    let (parent, name) = split(path);
                    let fresh = dirs
                        .get(parent)
                        .map(|dir| write_new_entry(dir, name, false, *mode, &data));
                    match fresh {
                        Some(Ok(())) => {}
                        Some(Err(e)) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                            return Err(self.ws_err(e));
                        }
                        // Something there already (a tree naming it twice).
                        _ => write_entry(root, path, false, *mode, &data)
                            .map_err(|e| self.ws_err(e))?,
                    }
                }
                Ok(data.len() as u64)
            })
            .try_reduce(|| 0, |a, b| Ok(a + b))?;
        done.objects += paths.len();
        done.bytes += bytes;
        // Where each file blob is now, then the history's other blobs (and
        // the links' targets).
        let at: HashMap<ObjectId, String> = paths
            .iter()
            .map(|(id, at)| (*id, at[0].0.to_string()))
            .collect();
        let index: Vec<([u8; 20], &str)> = at
            .iter()
            .map(|(id, path)| {
                let mut raw = [0; 20];
                raw.copy_from_slice(id.as_bytes());
                (raw, path.as_str())
            })
            .collect();
        let index = postcard::to_stdvec(&index).map_err(|e| self.err(e))?;
        std::fs::write(self.dir.join(FILES_INDEX), index).map_err(|e| self.err(e))?;
        let rest: Vec<ObjectId> = objects
            .iter()
            .filter(|(k, id)| *k == Kind::Blob && !metas.contains(id) && !paths.contains_key(id))
            .map(|(_, id)| *id)
            .collect();
        let written: HashSet<String> = paths
            .values()
            .flatten()
            .map(|(path, _)| path.to_string())
            .collect();
        self.files = Some(LayerFiles {
            dir: root.try_clone().map_err(|e| self.ws_err(e))?,
            at,
        });
        let mut bundle = BundleWriter::create(&self.dir).map_err(|e| self.err(e))?;
        self.copy_checked(source, &rest, &mut bundle, &mut done)?;
        self.finish_bundle(bundle)?;
        self.closure(checkpoint)?;
        std::fs::write(self.dir.join(REF), format!("{target}\n")).map_err(|e| self.err(e))?;
        // Links and empty directories (and the count of all written).
        done.restored = Some(self.restore_except(into, checkpoint, &written)?);
        Ok(done)
    }

    /// Copies objects `ids` of `source` into `bundle`, each checked against
    /// its id (a few hundred, or 16 MiB as stored, read at once on several
    /// threads), counting them in `done`; the meta blobs the commits among
    /// them name.
    fn copy_checked(
        &self,
        source: &Store,
        ids: &[ObjectId],
        bundle: &mut BundleWriter,
        done: &mut Imported,
    ) -> Result<HashSet<ObjectId>, CheckpointError> {
        const BATCH_OBJECTS: usize = 256;
        const BATCH_BYTES: u64 = 16 << 20;
        let sizes: Vec<u64> = ids.par_iter().map(|id| source.stored_len(id)).collect();
        let mut batches = Vec::new();
        let (mut start, mut bytes) = (0, 0);
        for (i, size) in sizes.iter().enumerate() {
            if i > start && (i - start >= BATCH_OBJECTS || bytes + size > BATCH_BYTES) {
                batches.push(&ids[start..i]);
                (start, bytes) = (i, 0);
            }
            bytes += size;
        }
        batches.push(&ids[start..]);
        let mut metas = HashSet::new();
        for batch in batches {
            let checked: Vec<(Kind, Vec<u8>, Vec<u8>)> = batch
                .par_iter()
                .map(|id| source.checked_loose(id))
                .collect::<Result<_, _>>()?;
            for (id, (kind, data, loose)) in batch.iter().zip(checked) {
                if kind == Kind::Commit
                    && let Ok(commit) =
                        gix_object::CommitRef::from_bytes(&data, gix_hash::Kind::Sha1)
                    && let Some(meta) = meta_id(&commit)
                {
                    metas.insert(meta);
                }
                bundle.add(id, &loose).map_err(|e| self.err(e))?;
                done.objects += 1;
                done.bytes += data.len() as u64;
            }
        }
        Ok(metas)
    }

    /// Finishes `bundle` (unless it is empty) and reads from it from now on.
    fn finish_bundle(&self, bundle: BundleWriter) -> Result<(), CheckpointError> {
        if !bundle.is_empty() {
            bundle.finish().map_err(|e| self.err(e))?;
            *self.bundles.write().expect("no reader panics") = Bundle::open_all(&self.dir);
        }
        Ok(())
    }

    /// Every object checkpoint `id` stands on: its commit and each
    /// ancestor, their meta blobs, trees and blobs, each once. Fails when
    /// one is missing, so a store that answers is whole.
    pub fn closure(&self, id: &str) -> Result<Vec<(Kind, ObjectId)>, CheckpointError> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut commits = vec![Self::parse_id(id)?];
        let mut trees = Vec::new();
        let mut blob = |out: &mut Vec<(Kind, ObjectId)>, id: ObjectId| {
            if !seen.insert(id) {
                return Ok(());
            }
            if !self.contains(&id) {
                return Err(CheckpointError::Unknown(id.to_string()));
            }
            out.push((Kind::Blob, id));
            Ok(())
        };
        let mut commits_seen = HashSet::new();
        while let Some(c) = commits.pop() {
            if !commits_seen.insert(c) {
                continue;
            }
            let bytes = self.get(&c, Kind::Commit, 1 << 20)?;
            let commit = gix_object::CommitRef::from_bytes(&bytes, gix_hash::Kind::Sha1)
                .map_err(|e| self.err(format!("checkpoint {c}: {e}")))?;
            out.push((Kind::Commit, c));
            trees.push(commit.tree());
            if let Some(meta) = meta_id(&commit) {
                blob(&mut out, meta)?;
            }
            commits.extend(commit.parents());
        }
        // Each checkpoint's trees, then their blobs, before the next
        // checkpoint's, the asked one's first: in an export, every tree
        // naming one of its files comes before the file's blob (what an
        // import that restores as it goes needs).
        let mut trees_seen = HashSet::new();
        for root in trees {
            let mut stack = vec![root];
            let mut blobs = Vec::new();
            while let Some(t) = stack.pop() {
                if out.len() + blobs.len() > MAX_TRANSFER_OBJECTS {
                    return Err(CheckpointError::TooMany);
                }
                if !trees_seen.insert(t) {
                    continue;
                }
                let bytes = self.get(&t, Kind::Tree, 64 << 20)?;
                let parsed = gix_object::TreeRef::from_bytes(&bytes, gix_hash::Kind::Sha1)
                    .map_err(|e| self.err(format!("tree {t}: {e}")))?;
                out.push((Kind::Tree, t));
                for e in parsed.entries {
                    if e.mode.is_tree() {
                        stack.push(e.oid.to_owned());
                    } else if e.mode.is_blob_or_symlink() {
                        blobs.push(e.oid.to_owned());
                    }
                }
            }
            for id in blobs {
                blob(&mut out, id)?;
            }
        }
        Ok(out)
    }

    /// Writes `objects` to `out` as a tar stream: with `compressed`, one
    /// entry `loose/<id>` each holding the object's loose file as it is
    /// (compressed, header included); else one entry `<kind>/<id>` of its
    /// bytes.
    pub fn export(
        &self,
        objects: &[(Kind, ObjectId)],
        compressed: bool,
        out: impl std::io::Write,
    ) -> Result<(), CheckpointError> {
        let mut tar = tar::Builder::new(out);
        for (kind, id) in objects {
            let (name, data) = if compressed {
                (format!("loose/{id}"), self.loose_file(id)?)
            } else {
                (
                    format!("{kind}/{id}"),
                    self.get(id, *kind, MAX_OBJECT_BYTES)?,
                )
            };
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            tar.append_data(&mut header, name, data.as_slice())
                .map_err(|e| self.err(format!("exporting: {e}")))?;
        }
        tar.finish()
            .map_err(|e| self.err(format!("exporting: {e}")))
    }

    /// The bytes of object `id`'s loose file. The store is the sandbox's
    /// to write: it is opened without following a link or waiting on a
    /// FIFO, and read only if it is a regular file of a bounded size.
    fn loose_file(&self, id: &ObjectId) -> Result<Vec<u8>, CheckpointError> {
        let path = self.odb.object_path(id);
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path);
        let file = match file {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return self
                    .bundled(id)
                    .unwrap_or_else(|| Err(CheckpointError::Unknown(id.to_string())));
            }
            opened => opened.map_err(|e| self.err(format!("object {id}: {e}")))?,
        };
        let meta = file.metadata().map_err(|e| self.err(e))?;
        if !meta.is_file() || meta.len() > MAX_OBJECT_BYTES {
            return Err(self.err(format!(
                "object {id} is not a file of at most {MAX_OBJECT_BYTES} bytes"
            )));
        }
        let mut data = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_OBJECT_BYTES)
            .read_to_end(&mut data)
            .map_err(|e| self.err(e))?;
        Ok(data)
    }

    /// Adds the objects of an [`Store::export`] stream (either form) to
    /// this store, each checked against its id, then makes `checkpoint`
    /// the latest and checks that it is whole. Objects are checked a batch
    /// at a time on several threads; those that came in their loose form
    /// are kept as they came in one bundle (see [`bundle`]), which
    /// [`Store::settle_bundles`] turns into loose files later.
    ///
    /// With `into` (a fork's new workspace), the workspace is then what
    /// `checkpoint` recorded, as [`Store::restore`] leaves it. If it starts
    /// empty, each file is written as its blob comes, from the bytes the
    /// check has in hand (the checkpoint's commit, meta and trees, checked
    /// as they come, say where), so a fork reads and inflates each object
    /// once; what the stream's order leaves unwritten, the restore at the
    /// end writes from the store.
    pub fn import(
        &self,
        input: impl Read,
        checkpoint: &str,
        into: Option<&Workspace>,
    ) -> Result<Imported, CheckpointError> {
        /// Objects, and their bytes, read before a batch is checked.
        const BATCH_OBJECTS: usize = 256;
        const BATCH_BYTES: usize = 16 << 20;
        let target = Self::parse_id(checkpoint)?;
        let bad = |m: String| CheckpointError::BadImport(m);
        let root = into.map(Workspace::dir);
        let empty = match root {
            Some(root) => root.entries().map_err(|e| self.ws_err(e))?.next().is_none(),
            None => false,
        };
        let mut plan = empty.then(|| Plan::new(target));
        let mut dirs = match root {
            Some(root) if empty => Some(ImportDirs::new(root).map_err(|e| self.ws_err(e))?),
            _ => None,
        };
        let written = std::sync::Mutex::new(HashSet::new());
        let written_ref = &written;
        let bundle =
            std::sync::Mutex::new(BundleWriter::create(&self.dir).map_err(|e| self.err(e))?);
        let bundle_ref = &bundle;
        // One thread reads the stream into batches while another checks
        // and writes the batch before (itself on several threads).
        let (batches, received) = std::sync::mpsc::sync_channel::<Vec<Incoming>>(1);
        let mut done = std::thread::scope(|scope| {
            let checker = scope.spawn(move || {
                let mut done = Imported::default();
                for batch in received {
                    let sizes: Vec<u64> = batch
                        .into_par_iter()
                        .map(|object| self.receive(object, root, written_ref, bundle_ref))
                        .collect::<Result<_, _>>()?;
                    done.objects += sizes.len();
                    done.bytes += sizes.iter().sum::<u64>();
                }
                Ok::<_, CheckpointError>(done)
            });
            // Moves the sender in: when reading ends, so do the batches.
            let read = (move || {
                let mut archive = tar::Archive::new(input);
                let (mut batch, mut batch_bytes, mut count) = (Vec::new(), 0, 0);
                for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
                    let mut object = self.incoming(entry.map_err(|e| bad(e.to_string()))?)?;
                    if let Some(plan) = plan.as_mut() {
                        object.files = plan.see(self, &object);
                    }
                    if let Some(dirs) = dirs.as_mut() {
                        for file in &mut object.files {
                            let (parent, _) = split(&file.path);
                            file.dir = dirs.get(parent).map_err(|e| self.ws_err(e))?;
                        }
                    }
                    count += 1;
                    if count > MAX_TRANSFER_OBJECTS {
                        return Err(CheckpointError::TooMany);
                    }
                    batch_bytes += object.data.len();
                    batch.push(object);
                    if batch.len() >= BATCH_OBJECTS || batch_bytes >= BATCH_BYTES {
                        batch_bytes = 0;
                        if batches.send(std::mem::take(&mut batch)).is_err() {
                            break; // the checker failed: its error says why
                        }
                    }
                }
                let _ = batches.send(batch);
                Ok(())
            })();
            let checked = checker.join().expect("the import's checker does not panic");
            read.and(checked)
        })?;
        let bundle = bundle.into_inner().expect("no writer panics");
        if !bundle.is_empty() {
            bundle.finish().map_err(|e| self.err(e))?;
            *self.bundles.write().expect("no reader panics") = Bundle::open_all(&self.dir);
        }
        self.closure(checkpoint).map_err(|e| match e {
            CheckpointError::Unknown(o) => bad(format!("checkpoint {target} lacks object {o}")),
            e => e,
        })?;
        std::fs::write(self.dir.join(REF), format!("{target}\n")).map_err(|e| self.err(e))?;
        if let Some(ws) = into {
            let written = written.into_inner().expect("no writer panics");
            done.restored = Some(self.restore_except(ws, checkpoint, &written)?);
        }
        Ok(done)
    }

    /// One entry of an import stream, read and named, not yet checked.
    fn incoming(&self, mut entry: tar::Entry<'_, impl Read>) -> Result<Incoming, CheckpointError> {
        let bad = |m: String| CheckpointError::BadImport(m);
        let path = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&path).into_owned();
        let (form, id) = name
            .split_once('/')
            .ok_or_else(|| bad(format!("{name:?} is not <kind>/<id>")))?;
        let form = match form {
            "loose" => None,
            kind => Some(
                Kind::from_bytes(kind.as_bytes())
                    .map_err(|_| bad(format!("{name:?} is not <kind>/<id>")))?,
            ),
        };
        let id = Self::parse_id(id).map_err(|_| bad(format!("{name:?} names no object")))?;
        let size = entry.size();
        if entry.header().entry_type() != tar::EntryType::Regular || size > MAX_OBJECT_BYTES {
            return Err(bad(format!(
                "{name:?} is not an object of at most {MAX_OBJECT_BYTES} bytes"
            )));
        }
        let mut data = Vec::with_capacity(size as usize);
        entry
            .read_to_end(&mut data)
            .map_err(|e| bad(format!("{name:?}: {e}")))?;
        Ok(Incoming {
            name,
            form,
            id,
            data,
            files: Vec::new(),
        })
    }

    /// Checks one imported object against its id and stores it (unless the
    /// store has it; in `bundle` when it came in its loose form), then
    /// writes the workspace files it is the content of under `root`,
    /// adding them to `written`; its size, uncompressed.
    fn receive(
        &self,
        object: Incoming,
        root: Option<&Dir>,
        written: &std::sync::Mutex<HashSet<String>>,
        bundle: &std::sync::Mutex<BundleWriter>,
    ) -> Result<u64, CheckpointError> {
        let Incoming {
            name,
            form,
            id,
            data,
            files,
        } = object;
        let bad = |m: String| CheckpointError::BadImport(m);
        let not_it = || bad(format!("{name:?} does not hold that object"));
        let content = match form {
            Some(kind) => {
                if self.hash(kind, &data)? != id {
                    return Err(not_it());
                }
                self.put_known(kind, &data, id)?;
                data
            }
            None => {
                let (kind, inflated) =
                    inflate_loose(&data).map_err(|e| bad(format!("{name:?}: {e}")))?;
                if self.hash(kind, &inflated)? != id {
                    return Err(not_it());
                }
                if !self.contains(&id) {
                    bundle
                        .lock()
                        .expect("no writer panics")
                        .add(&id, &data)
                        .map_err(|e| self.err(e))?;
                }
                inflated
            }
        };
        if let Some(root) = root {
            for file in files {
                let (parent, name) = split(&file.path);
                let fresh = file
                    .dir
                    .as_deref()
                    .map(|dir| write_new_entry(dir, name, file.link, file.mode, &content));
                match fresh {
                    Some(Ok(())) => {}
                    // Something is there already (a forged tree naming it
                    // twice): put in its place, as a restore would.
                    Some(Err(e)) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                        return Err(self.ws_err(e));
                    }
                    _ => {
                        if !parent.is_empty() {
                            root.create_dir_all(parent).map_err(|e| self.ws_err(e))?;
                        }
                        write_entry(root, &file.path, file.link, file.mode, &content)
                            .map_err(|e| self.ws_err(e))?;
                    }
                }
                written.lock().expect("no writer panics").insert(file.path);
            }
        }
        Ok(content.len() as u64)
    }

    /// Writes the objects imports left in bundles as loose files, then
    /// removes the bundles: the store at rest is a plain git object store
    /// again. Meant for a background thread at idle priority (reads find
    /// each object in its bundle or its loose file meanwhile). Returns how
    /// many objects it wrote.
    pub fn settle_bundles(&self) -> Result<usize, CheckpointError> {
        let mut settled = 0;
        for b in self.bundles.read().expect("no reader panics").iter() {
            for id in b.ids() {
                if self.odb.contains(id) {
                    continue;
                }
                let loose = b
                    .read(id)
                    .expect("a bundle reads its own ids")
                    .map_err(|e| self.err(format!("object {id} in a bundle: {e}")))?;
                self.write_loose_file(id, &loose)?;
                settled += 1;
            }
        }
        let bundles = std::mem::take(&mut *self.bundles.write().expect("no reader panics"));
        for b in &bundles {
            b.remove().map_err(|e| self.err(e))?;
        }
        Ok(settled)
    }

    /// Removes what an import that died left half written; call only while
    /// no import runs (when the agent starts).
    pub fn remove_unfinished_imports(&self) {
        bundle::remove_parts(&self.dir);
    }

    /// Writes a checked loose file as object `id`'s, read-only as git
    /// writes them, through a temporary file renamed into place.
    fn write_loose_file(&self, id: &ObjectId, data: &[u8]) -> Result<(), CheckpointError> {
        let path = self.odb.object_path(id);
        let dir = path.parent().expect("a loose object is in a directory");
        match std::fs::create_dir(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(self.err(e));
            }
            _ => {}
        }
        let mut tmp = tempfile::Builder::new()
            .permissions(std::fs::Permissions::from_mode(0o444))
            .tempfile_in(self.dir.join("objects"))
            .map_err(|e| self.err(e))?;
        tmp.write_all(data).map_err(|e| self.err(e))?;
        tmp.persist(&path).map_err(|e| self.err(e.error))?;
        Ok(())
    }

    fn ws_err(&self, e: std::io::Error) -> CheckpointError {
        CheckpointError::Workspace(e.to_string())
    }

    /// Whether the file at `path` is already what `entry` (with `mode`)
    /// records, by the stat cache (a file it does not know is rewritten).
    fn unchanged(
        &self,
        root: &Dir,
        path: &str,
        entry: &Recorded,
        mode: u32,
        cache: &Cache,
    ) -> bool {
        let Some(known) = cache.files.get(path) else {
            return false;
        };
        let Ok(m) = root.symlink_metadata(path) else {
            return false;
        };
        let is_link = m.file_type().is_symlink();
        ObjectId::Sha1(known.oid) == entry.oid
            && is_link == entry.mode.is_link()
            && (is_link || m.mode() & 0o777 == mode)
            && stat_matches(known, &m, cache.taken_at)
    }

    /// Removes under `dir` (at `rel`) what the target state does not hold.
    fn prune(
        &self,
        dir: &Dir,
        rel: &str,
        target: &BTreeMap<String, Recorded>,
        dirs: &BTreeSet<String>,
        keep: &BTreeSet<&str>,
        done: &mut Restored,
    ) -> Result<(), CheckpointError> {
        let entries: Vec<_> = dir
            .entries()
            .map_err(|e| self.ws_err(e))?
            .flatten()
            .collect();
        for entry in entries {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            let path = join(rel, name);
            if keep.contains(path.as_str()) {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                let inside = format!("{path}/");
                if dirs.contains(&path) || keep.iter().any(|k| k.starts_with(&inside)) {
                    // Wanted, or holding something left out: kept, and
                    // what else is in it is looked at.
                    let sub = open_subdir(dir, OsStr::new(name)).map_err(|e| self.ws_err(e))?;
                    self.prune(&sub, &path, target, dirs, keep, done)?;
                } else {
                    dir.remove_dir_all(name).map_err(|e| self.ws_err(e))?;
                    done.removed += 1;
                }
            } else if !target.contains_key(&path) {
                dir.remove_file(name).map_err(|e| self.ws_err(e))?;
                done.removed += 1;
            }
        }
        Ok(())
    }

    /// The stat cache; empty when there is none or it cannot be read (it
    /// only spares reading files, so an empty one just costs time).
    fn load_cache(&self) -> Cache {
        std::fs::read(self.dir.join(CACHE_FILE))
            .ok()
            .and_then(|b| postcard::from_bytes(&b).ok())
            .unwrap_or_default()
    }

    fn save_cache(&self, cache: &Cache) -> Result<(), CheckpointError> {
        let tmp = self.dir.join(format!("{CACHE_FILE}.tmp"));
        let bytes = postcard::to_stdvec(cache).map_err(|e| self.err(e))?;
        std::fs::write(&tmp, bytes).map_err(|e| self.err(e))?;
        std::fs::rename(&tmp, self.dir.join(CACHE_FILE)).map_err(|e| self.err(e))?;
        let _ = std::fs::remove_file(self.dir.join(OLD_CACHE_FILE));
        Ok(())
    }

    /// Writes the workspace's tree (and the objects it needs); its id,
    /// what the tree cannot say, and how many files it recorded and their
    /// bytes.
    fn record(
        &self,
        ws: &Workspace,
        max_file_bytes: u64,
    ) -> Result<(ObjectId, Meta, (u64, u64)), CheckpointError> {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let old = self.load_cache();
        let walk = Walk {
            store: self,
            old: &old,
            max_file_bytes,
            entries: AtomicUsize::new(0),
        };
        let root = ws.dir().try_clone().map_err(|e| self.ws_err(e))?;
        let mut found = Found::default();
        let tree = walk.dir(&root, "", 0, &mut found)?.unwrap_or_else(|| {
            // The empty tree: written so that it can be read back.
            ObjectId::empty_tree(gix_hash::Kind::Sha1)
        });
        if !self.contains(&tree) {
            self.put(Kind::Tree, &[])?;
        }
        let recorded = (
            found.files.len() as u64,
            found.files.iter().map(|(_, stat)| stat.size).sum(),
        );
        let new = Cache {
            taken_at: started,
            files: found.files.into_iter().collect(),
        };
        self.save_cache(&new)?;
        Ok((tree, found.meta, recorded))
    }

    /// Every file and symlink of tree `id`, by path.
    fn flatten(&self, id: &ObjectId) -> Result<BTreeMap<String, Recorded>, CheckpointError> {
        let mut out = BTreeMap::new();
        let mut stack = vec![(String::new(), *id, 0usize)];
        while let Some((prefix, tree, depth)) = stack.pop() {
            if depth > MAX_DEPTH || out.len() > MAX_ENTRIES {
                return Err(CheckpointError::TooMany);
            }
            let bytes = self.get(&tree, Kind::Tree, 64 << 20)?;
            let parsed = gix_object::TreeRef::from_bytes(&bytes, gix_hash::Kind::Sha1)
                .map_err(|e| self.err(format!("tree {tree}: {e}")))?;
            for e in parsed.entries {
                let Ok(name) = e.filename.to_str() else {
                    continue;
                };
                let path = join(&prefix, name);
                if e.mode.is_tree() {
                    stack.push((path, e.oid.to_owned(), depth + 1));
                } else if e.mode.is_blob_or_symlink() {
                    out.insert(
                        path,
                        Recorded {
                            mode: e.mode,
                            oid: e.oid.to_owned(),
                        },
                    );
                }
            }
        }
        Ok(out)
    }

    /// The files and symlinks that differ between trees `before` and
    /// `after` (either may be absent), by path, with what each side
    /// records. Only the trees on the way to a change are read: a subtree
    /// with the same id on both sides is the same.
    fn changes(
        &self,
        before: Option<ObjectId>,
        after: Option<ObjectId>,
    ) -> Result<Changes, CheckpointError> {
        let mut out = Changes::new();
        let mut stack = vec![(String::new(), before, after, 0usize)];
        while let Some((prefix, a, b, depth)) = stack.pop() {
            if a == b {
                continue;
            }
            if depth > MAX_DEPTH || out.len() > MAX_ENTRIES {
                return Err(CheckpointError::TooMany);
            }
            let (a, b) = (self.tree_entries(a)?, self.tree_entries(b)?);
            let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for name in names {
                let (x, y) = (a.get(name).copied(), b.get(name).copied());
                let tree = |r: Option<Recorded>| r.filter(|r| r.mode.is_tree()).map(|r| r.oid);
                let file = |r: Option<Recorded>| r.filter(|r| !r.mode.is_tree());
                let path = join(&prefix, name);
                if tree(x) != tree(y) {
                    stack.push((path.clone(), tree(x), tree(y), depth + 1));
                }
                if file(x) != file(y) {
                    out.insert(path, (file(x), file(y)));
                }
            }
        }
        Ok(out)
    }

    /// The entries of tree `id` (none when absent) that a checkpoint
    /// records: subtrees, files and symlinks with UTF-8 names.
    fn tree_entries(
        &self,
        id: Option<ObjectId>,
    ) -> Result<BTreeMap<String, Recorded>, CheckpointError> {
        let Some(id) = id else {
            return Ok(BTreeMap::new());
        };
        let bytes = self.get(&id, Kind::Tree, 64 << 20)?;
        let parsed = gix_object::TreeRef::from_bytes(&bytes, gix_hash::Kind::Sha1)
            .map_err(|e| self.err(format!("tree {id}: {e}")))?;
        Ok(parsed
            .entries
            .into_iter()
            .filter(|e| e.mode.is_tree() || e.mode.is_blob_or_symlink())
            .filter_map(|e| {
                let name = e.filename.to_str().ok()?;
                let recorded = Recorded {
                    mode: e.mode,
                    oid: e.oid.to_owned(),
                };
                Some((name.to_string(), recorded))
            })
            .collect())
    }

    /// What differs between two states ([`Self::changes`]), counted; the
    /// patch too when `patch` is asked for.
    fn compare(&self, changes: &Changes, patch: bool) -> Result<Diff, CheckpointError> {
        let mut diff = Diff::default();
        for (path, (old, new)) in changes {
            let (old, new) = (old.as_ref(), new.as_ref());
            let status = match (old, new) {
                (Some(o), Some(n)) if o == n => continue,
                (Some(_), Some(_)) => FileStatus::Modified,
                (None, Some(_)) => FileStatus::Added,
                (Some(_), None) => FileStatus::Deleted,
                (None, None) => continue,
            };
            let read = |r: Option<&Recorded>| -> Result<Vec<u8>, CheckpointError> {
                match r {
                    Some(r) => self.get(&r.oid, Kind::Blob, MAX_OBJECT_BYTES),
                    None => Ok(Vec::new()),
                }
            };
            let (a, b) = (read(old)?, read(new)?);
            let binary = is_binary(&a) || is_binary(&b);
            if !patch && (old.is_none() || new.is_none()) {
                // Added or deleted: every line counts, nothing to compare.
                let lines = if binary {
                    0
                } else {
                    count_lines(&a) + count_lines(&b)
                };
                let (insertions, deletions) = if old.is_none() {
                    (lines, 0)
                } else {
                    (0, lines)
                };
                diff.files.push(FileDiff {
                    path: path.clone(),
                    status,
                    insertions,
                    deletions,
                    binary,
                });
                continue;
            }
            let mut file = FileDiff {
                path: path.clone(),
                status,
                insertions: 0,
                deletions: 0,
                binary,
            };
            let mut text = String::new();
            if patch {
                text.push_str(&format!("diff --git a/{path} b/{path}\n"));
                match (old, new) {
                    (None, Some(n)) => text.push_str(&format!("new file mode {}\n", mode_str(n))),
                    (Some(o), None) => {
                        text.push_str(&format!("deleted file mode {}\n", mode_str(o)));
                    }
                    (Some(o), Some(n)) if o.mode != n.mode => {
                        text.push_str(&format!(
                            "old mode {}\nnew mode {}\n",
                            mode_str(o),
                            mode_str(n)
                        ));
                    }
                    _ => {}
                }
            }
            if binary {
                if patch && a != b {
                    let (l, r) = labels(path, old, new);
                    text.push_str(&format!("Binary files {l} and {r} differ\n"));
                }
            } else {
                let (a, b) = (String::from_utf8_lossy(&a), String::from_utf8_lossy(&b));
                let lines = similar::TextDiff::configure()
                    .timeout(DIFF_TIMEOUT)
                    .diff_lines(a.as_ref(), b.as_ref());
                for change in lines.iter_all_changes() {
                    match change.tag() {
                        similar::ChangeTag::Insert => file.insertions += 1,
                        similar::ChangeTag::Delete => file.deletions += 1,
                        similar::ChangeTag::Equal => {}
                    }
                }
                if patch && a != b {
                    let (l, r) = labels(path, old, new);
                    let unified = lines
                        .unified_diff()
                        .context_radius(3)
                        .header(&l, &r)
                        .to_string();
                    text.push_str(&unified);
                }
            }
            if patch {
                if diff.patch.len() + text.len() > MAX_PATCH_BYTES {
                    if !diff.patch.ends_with("[cut]\n") {
                        diff.patch.push_str(&format!(
                            "[the patch is longer than {MAX_PATCH_BYTES} bytes; the rest is cut]\n"
                        ));
                    }
                } else {
                    diff.patch.push_str(&text);
                }
            }
            diff.files.push(file);
        }
        Ok(diff)
    }
}

/// `a/<path>` and `b/<path>`, or `/dev/null` for a side without the file.
fn labels(path: &str, old: Option<&Recorded>, new: Option<&Recorded>) -> (String, String) {
    (
        old.map_or_else(|| "/dev/null".into(), |_| format!("a/{path}")),
        new.map_or_else(|| "/dev/null".into(), |_| format!("b/{path}")),
    )
}

fn mode_str(r: &Recorded) -> &'static str {
    match r.mode.kind() {
        EntryKind::BlobExecutable => "100755",
        EntryKind::Link => "120000",
        _ => "100644",
    }
}

/// Lines in a text, as a line diff counts them (a last one without a
/// newline too).
fn count_lines(text: &[u8]) -> usize {
    let newlines = text.iter().filter(|&&b| b == b'\n').count();
    newlines + usize::from(text.last().is_some_and(|&b| b != b'\n'))
}

/// Whether `data` looks binary to git: a NUL in its first 8000 bytes.
fn is_binary(data: &[u8]) -> bool {
    data[..data.len().min(BINARY_PROBE)].contains(&0)
}

/// The id of the [`Meta`] blob a checkpoint's commit names, if it names one.
fn meta_id(commit: &gix_object::CommitRef<'_>) -> Option<ObjectId> {
    commit
        .extra_headers()
        .find(META_HEADER)
        .and_then(|v| ObjectId::from_hex(v.as_bytes()).ok())
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// The permission bits a recorded file is put back with: the meta's, else
/// git's for its kind.
fn file_mode(meta: &Meta, path: &str, kind: EntryMode) -> u32 {
    meta.modes
        .get(path)
        .copied()
        .unwrap_or(if kind.kind() == EntryKind::BlobExecutable {
            0o755
        } else {
            0o644
        })
}

/// Puts `data` at `path` under `root` as a symlink's target or as a file
/// with `mode`, in place of whatever is there; its directory must exist.
fn write_entry(root: &Dir, path: &str, link: bool, mode: u32, data: &[u8]) -> std::io::Result<()> {
    let (parent, name) = split(path);
    let dir = if parent.is_empty() {
        root.try_clone()?
    } else {
        root.open_dir(parent)?
    };
    if let Ok(m) = dir.symlink_metadata(name) {
        if m.is_dir() {
            dir.remove_dir_all(name)?;
        } else {
            dir.remove_file(name)?;
        }
    }
    write_new_entry(&dir, name, link, mode, data)
}

/// Makes `name` in `dir` as a symlink to `data` or a file of `data` with
/// `mode`; fails with `AlreadyExists` if anything is there.
fn write_new_entry(
    dir: &Dir,
    name: &str,
    link: bool,
    mode: u32,
    data: &[u8],
) -> std::io::Result<()> {
    if link {
        rustix::fs::symlinkat(OsStr::from_bytes(data), dir, name)?;
    } else {
        let mut opts = OpenOptions::new();
        opts.write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
        let mut file = dir.open_with(name, &opts)?;
        file.write_all(data)?;
        file.set_permissions(cap_std::fs::Permissions::from_std(
            std::fs::Permissions::from_mode(mode),
        ))?;
    }
    Ok(())
}

/// Whether `data` is blob `id`'s bytes, by plain SHA-1 (the CPU's SHA
/// instructions where it has them: several times faster than the
/// collision-detecting hash the store names objects with, and the same id
/// for all but a crafted collision). It only checks that a file of the
/// parent's sandbox still holds what that sandbox's checkpoint recorded: a
/// collision would have to be made by that sandbox, both halves, so the
/// fork would get bytes that sandbox wrote either way.
fn is_blob(data: &[u8], id: &ObjectId) -> bool {
    use sha1::Digest as _;
    let mut hasher = sha1::Sha1::new();
    hasher.update(gix_object::encode::loose_header(
        Kind::Blob,
        data.len() as u64,
    ));
    hasher.update(data);
    hasher.finalize().as_slice() == id.as_bytes()
}

/// The bytes of the regular file at `path` under `dir`, of at most
/// [`MAX_OBJECT_BYTES`]: opened without following a final link or waiting
/// on a FIFO.
fn read_regular(dir: &Dir, path: &str) -> std::io::Result<Vec<u8>> {
    let mut opts = OpenOptions::new();
    opts.read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    let file = dir.open_with(path, &opts)?;
    let m = file.metadata()?;
    if !m.is_file() || m.len() > MAX_OBJECT_BYTES {
        return Err(std::io::Error::other(format!(
            "not a regular file of at most {MAX_OBJECT_BYTES} bytes"
        )));
    }
    let mut data = Vec::with_capacity(m.len() as usize);
    file.take(m.len() + 1).read_to_end(&mut data)?;
    Ok(data)
}

/// The bytes of the store's file at `path` (which its sandbox may have
/// replaced: see [`bundle::open_regular`]), refusing more than `limit`.
fn open_bounded(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    bundle::open_regular(path)?
        .take(limit + 1)
        .read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(std::io::Error::other(format!("larger than {limit} bytes")));
    }
    Ok(data)
}

/// Object `data` of `kind` as a loose file holding it uncompressed: its
/// header and bytes in a zlib stream of stored blocks, which any inflater
/// reads, made at the speed of a copy.
fn stored_loose(kind: Kind, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let header = gix_object::encode::loose_header(kind, data.len() as u64);
    let blocks = data.len() / 16_000 + 2;
    let out = Vec::with_capacity(header.len() + data.len() + blocks * 5 + 16);
    let mut z = gix_zlib::stream::deflate::Write::new(out, gix_zlib::Compression::NONE);
    z.write_all(&header)?;
    z.write_all(data)?;
    z.flush()?;
    Ok(z.into_inner())
}

/// Whether a file's metadata is still what the cache recorded, and the
/// record old enough to be trusted.
fn stat_matches(known: &Stat, m: &cap_std::fs::Metadata, taken_at: f64) -> bool {
    let mtime = m.mtime() as f64 + m.mtime_nsec() as f64 / 1e9;
    mtime < taken_at - RACY.as_secs_f64()
        && known.size == m.len()
        && known.mtime == m.mtime()
        && known.mtime_ns == m.mtime_nsec()
        && known.ctime == m.ctime()
        && known.ctime_ns == m.ctime_nsec()
        && known.ino == m.ino()
        && known.mode == m.mode()
}

/// Opens the directory `name` in `dir`, refusing a symlink.
fn open_subdir(dir: &Dir, name: &OsStr) -> std::io::Result<Dir> {
    let mut opts = OpenOptions::new();
    opts.read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_NONBLOCK);
    let file = dir.open_with(name, &opts)?;
    Ok(Dir::from_std_file(file.into_std()))
}

/// One snapshot's walk of the workspace. Shared by the threads that walk
/// its directories; what each finds comes back as a [`Found`].
struct Walk<'a> {
    store: &'a Store,
    old: &'a Cache,
    max_file_bytes: u64,
    /// Entries seen so far, by every thread.
    entries: AtomicUsize,
}

/// What the walk of one directory found besides its tree: the stat cache's
/// entries and what the tree cannot say, in the order of the names (a
/// directory's findings where its name comes), so a workspace always
/// yields the same meta.
#[derive(Default)]
struct Found {
    files: Vec<(String, Stat)>,
    meta: Meta,
}

impl Found {
    fn skip(&mut self, path: String, size: Option<u64>, reason: &str) {
        self.meta.skipped.push(SkippedFile {
            path,
            size,
            reason: reason.into(),
        });
    }

    fn absorb(&mut self, other: Found) {
        self.files.extend(other.files);
        self.meta.modes.extend(other.meta.modes);
        self.meta.empty_dirs.extend(other.meta.empty_dirs);
        self.meta.skipped.extend(other.meta.skipped);
    }

    fn remember(&mut self, path: &str, m: &cap_std::fs::Metadata, oid: ObjectId) {
        let mut id = [0; 20];
        id.copy_from_slice(oid.as_bytes());
        self.files.push((
            path.to_string(),
            Stat {
                size: m.len(),
                mtime: m.mtime(),
                mtime_ns: m.mtime_nsec(),
                ctime: m.ctime(),
                ctime_ns: m.ctime_nsec(),
                ino: m.ino(),
                mode: m.mode(),
                oid: id,
            },
        ));
    }
}

/// An entry of a directory, as its walk first sees it.
enum Listed {
    /// Recorded in its place (a file or symlink), or left out.
    Entry(std::ffi::OsString, cap_std::fs::Metadata),
    /// A subdirectory: its tree and findings, walked on another thread.
    Dir(String, Result<(Option<ObjectId>, Found), CheckpointError>),
    /// A subdirectory left out (too deep, or it cannot be opened).
    LeftOut(Found),
}

impl Walk<'_> {
    /// The tree of `dir` (at `rel`), or `None` when nothing in it is
    /// recorded; what else it finds goes to `found`. Subdirectories are
    /// walked in parallel.
    fn dir(
        &self,
        dir: &Dir,
        rel: &str,
        depth: usize,
        found: &mut Found,
    ) -> Result<Option<ObjectId>, CheckpointError> {
        let mut names: Vec<_> = dir
            .entries()
            .map_err(|e| self.store.ws_err(e))?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        let count = self.entries.fetch_add(names.len(), Ordering::Relaxed) + names.len();
        if count > MAX_ENTRIES {
            return Err(CheckpointError::TooMany);
        }
        let listed: Vec<Listed> = names
            .into_par_iter()
            .filter_map(|name| {
                let m = dir.symlink_metadata(&name).ok()?; // gone since the listing
                if !m.is_dir() {
                    return Some(Listed::Entry(name, m));
                }
                let Some(name_str) = name.to_str() else {
                    return Some(Listed::Entry(name, m));
                };
                let path = join(rel, name_str);
                let mut sub_found = Found::default();
                if depth >= MAX_DEPTH {
                    sub_found.skip(path, None, "it is nested too deep");
                    return Some(Listed::LeftOut(sub_found));
                }
                let Ok(sub) = open_subdir(dir, &name) else {
                    sub_found.skip(path, None, "it cannot be opened");
                    return Some(Listed::LeftOut(sub_found));
                };
                let walked = self
                    .dir(&sub, &path, depth + 1, &mut sub_found)
                    .map(|tree| (tree, sub_found));
                Some(Listed::Dir(name_str.to_string(), walked))
            })
            .collect();
        let mut entries = Vec::with_capacity(listed.len());
        for item in listed {
            let (name, m) = match item {
                Listed::LeftOut(sub_found) => {
                    found.absorb(sub_found);
                    continue;
                }
                Listed::Dir(name, walked) => {
                    let (tree, sub_found) = walked?;
                    found.absorb(sub_found);
                    match tree {
                        Some(tree) => entries.push(Entry {
                            mode: EntryKind::Tree.into(),
                            filename: name.as_str().into(),
                            oid: tree,
                        }),
                        None => found.meta.empty_dirs.push(join(rel, &name)),
                    }
                    continue;
                }
                Listed::Entry(name, m) => (name, m),
            };
            let Some(name_str) = name.to_str() else {
                found.skip(
                    format!("{}", Path::new(rel).join(&name).display()),
                    None,
                    "its name is not UTF-8",
                );
                continue;
            };
            let path = join(rel, name_str);
            let kind = m.file_type();
            let (mode, oid) = if kind.is_symlink() {
                let Ok(target) = dir.read_link_contents(&name) else {
                    continue;
                };
                let oid = self.store.put(Kind::Blob, target.as_os_str().as_bytes())?;
                found.remember(&path, &m, oid);
                (EntryKind::Link.into(), oid)
            } else if kind.is_file() {
                if m.len() > self.max_file_bytes {
                    let size = m.len();
                    found.skip(
                        path,
                        Some(size),
                        &format!("it is larger than {} bytes", self.max_file_bytes),
                    );
                    continue;
                }
                let oid = match self.cached(&path, &m) {
                    Some(oid) => oid,
                    None => match self.read(dir, &name)? {
                        Some(data) => self.store.put(Kind::Blob, &data)?,
                        None => {
                            found.skip(path, None, "it changed into something else while read");
                            continue;
                        }
                    },
                };
                found.remember(&path, &m, oid);
                // setuid, setgid and sticky bits are not kept.
                let perms = m.mode() & 0o777;
                let executable = perms & 0o111 != 0;
                if perms != if executable { 0o755 } else { 0o644 } {
                    found.meta.modes.insert(path, perms);
                }
                let kind = if executable {
                    EntryKind::BlobExecutable
                } else {
                    EntryKind::Blob
                };
                (kind.into(), oid)
            } else {
                found.skip(
                    path,
                    None,
                    "it is not a regular file, a directory or a symlink",
                );
                continue;
            };
            entries.push(Entry {
                mode,
                filename: name_str.into(),
                oid,
            });
        }
        if entries.is_empty() {
            return Ok(None);
        }
        entries.sort();
        let tree = gix_object::Tree { entries };
        let mut bytes = Vec::new();
        tree.write_to(&mut bytes).map_err(|e| self.store.err(e))?;
        Ok(Some(self.store.put(Kind::Tree, &bytes)?))
    }

    /// A file's blob from the last snapshot, when its metadata says it has
    /// not changed since.
    fn cached(&self, path: &str, m: &cap_std::fs::Metadata) -> Option<ObjectId> {
        let known = self.old.files.get(path)?;
        stat_matches(known, m, self.old.taken_at).then_some(ObjectId::Sha1(known.oid))
    }

    /// A regular file's bytes (at most the limit), or `None` when what is
    /// there now is not a regular file.
    fn read(&self, dir: &Dir, name: &OsStr) -> Result<Option<Vec<u8>>, CheckpointError> {
        let mut opts = OpenOptions::new();
        opts.read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
        let Ok(file) = dir.open_with(name, &opts) else {
            return Ok(None);
        };
        match file.metadata() {
            Ok(m) if m.is_file() => {}
            _ => return Ok(None),
        }
        let mut data = Vec::new();
        file.take(self.max_file_bytes + 1)
            .read_to_end(&mut data)
            .map_err(|e| self.store.ws_err(e))?;
        if data.len() as u64 > self.max_file_bytes {
            return Ok(None);
        }
        Ok(Some(data))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::process::Command;

    use super::*;

    const LIMIT: u64 = 1 << 20;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        store: Store,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("workspace");
            std::fs::create_dir(&root).unwrap();
            let store = Store::open(dir.path().join("store")).unwrap();
            Self {
                _dir: dir,
                root,
                store,
            }
        }

        fn ws(&self) -> Workspace {
            Workspace::open(&self.root).unwrap()
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.root.join(rel)
        }

        fn write(&self, rel: &str, data: &[u8]) {
            let p = self.path(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }

        fn chmod(&self, rel: &str, mode: u32) {
            std::fs::set_permissions(self.path(rel), std::fs::Permissions::from_mode(mode))
                .unwrap();
        }

        fn mode(&self, rel: &str) -> u32 {
            std::fs::symlink_metadata(self.path(rel))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        }

        fn take(&self, parent: Option<&str>) -> Taken {
            self.store.take(&self.ws(), parent, "test", LIMIT).unwrap()
        }

        /// Every file, symlink and directory under the workspace with its
        /// content (a link's target) and mode.
        fn state(&self) -> BTreeMap<String, (Vec<u8>, u32)> {
            let mut out = BTreeMap::new();
            let mut stack = vec![self.root.clone()];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(&dir).unwrap() {
                    let p = e.unwrap().path();
                    let rel = p.strip_prefix(&self.root).unwrap().display().to_string();
                    let m = std::fs::symlink_metadata(&p).unwrap();
                    let mode = m.permissions().mode() & 0o777;
                    if m.file_type().is_symlink() {
                        let target = std::fs::read_link(&p).unwrap();
                        out.insert(rel, (target.as_os_str().as_bytes().to_vec(), 0));
                    } else if m.is_dir() {
                        out.insert(format!("{rel}/"), (Vec::new(), mode));
                        stack.push(p);
                    } else {
                        out.insert(rel, (std::fs::read(&p).unwrap(), mode));
                    }
                }
            }
            out
        }
    }

    fn backdate(path: &Path) {
        // Old enough for the stat cache to trust it.
        let old = SystemTime::now() - Duration::from_secs(60);
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(old).unwrap();
    }

    #[test]
    fn a_rewind_puts_back_bytes_modes_links_deletions_and_new_files() {
        let f = Fixture::new();
        f.write("app.py", b"print('one')\n");
        f.write("src/lib/util.py", b"def f():\n    return 1\n");
        f.write("bin/run.sh", b"#!/bin/sh\necho run\n");
        f.chmod("bin/run.sh", 0o755);
        f.write("secret.txt", b"only me\n");
        f.chmod("secret.txt", 0o600);
        f.write("data.bin", &[0, 1, 2, 255, 0, 7]);
        symlink("app.py", f.path("link")).unwrap();
        std::fs::create_dir(f.path("empty")).unwrap();
        let first = f.take(None);
        assert_eq!(first.files_changed, 6, "{first:?}");
        // What a copy writes: five files' bytes and the link's target.
        assert_eq!((first.files, first.bytes), (6, 13 + 22 + 19 + 8 + 6 + 6));
        let before = f.state();

        // A task: edits, creates, deletes, chmods, retargets a link.
        f.write("app.py", b"print('two')\nprint('three')\n");
        f.write("new/file.txt", b"new\n");
        std::fs::remove_file(f.path("src/lib/util.py")).unwrap();
        f.chmod("secret.txt", 0o644);
        f.chmod("app.py", 0o700);
        std::fs::remove_file(f.path("link")).unwrap();
        symlink("/etc/passwd", f.path("link")).unwrap();
        f.write("data.bin", &[9, 0, 9]);
        std::fs::remove_dir(f.path("empty")).unwrap();
        let second = f.take(Some(&first.checkpoint));
        // secret.txt's new mode is no change git can see (its bits are
        // kept for a rewind); the link's target is a line of text.
        assert_eq!(second.files_changed, 5, "{second:?}");
        assert_eq!(
            (second.insertions, second.deletions),
            (2 + 1 + 1, 1 + 2 + 1)
        );

        let diff = f
            .store
            .diff(&f.ws(), &first.checkpoint, Some(&second.checkpoint), LIMIT)
            .unwrap();
        let statuses: Vec<(&str, FileStatus, bool)> = diff
            .files
            .iter()
            .map(|d| (d.path.as_str(), d.status, d.binary))
            .collect();
        assert_eq!(
            statuses,
            [
                ("app.py", FileStatus::Modified, false),
                ("data.bin", FileStatus::Modified, true),
                ("link", FileStatus::Modified, false),
                ("new/file.txt", FileStatus::Added, false),
                ("src/lib/util.py", FileStatus::Deleted, false),
                ("secret.txt", FileStatus::Modified, false),
            ]
            .into_iter()
            .filter(|(p, _, _)| *p != "secret.txt")
            .collect::<Vec<_>>(),
            "a mode that git cannot see is no content change: {diff:?}"
        );
        assert!(
            diff.patch
                .contains("-print('one')\n+print('two')\n+print('three')\n"),
            "{}",
            diff.patch
        );
        assert!(
            diff.patch.contains("old mode 100644\nnew mode 100755\n"),
            "{}",
            diff.patch
        );
        assert!(
            diff.patch
                .contains("Binary files a/data.bin and b/data.bin differ"),
            "{}",
            diff.patch
        );
        assert!(
            diff.patch.contains("--- /dev/null\n+++ b/new/file.txt\n"),
            "{}",
            diff.patch
        );
        assert!(
            diff.patch.contains("deleted file mode 100644"),
            "{}",
            diff.patch
        );

        let restored = f.store.restore(&f.ws(), &first.checkpoint).unwrap();
        assert_eq!(f.state(), before);
        assert_eq!(f.mode("secret.txt"), 0o600);
        assert_eq!(f.mode("bin/run.sh"), 0o755);
        assert!(
            restored.written >= 5 && restored.removed >= 1,
            "{restored:?}"
        );
        // And forward again.
        f.store.restore(&f.ws(), &second.checkpoint).unwrap();
        assert_eq!(std::fs::read(f.path("new/file.txt")).unwrap(), b"new\n");
        assert_eq!(f.mode("app.py"), 0o700);
        assert!(!f.path("src/lib/util.py").exists());
        assert!(!f.path("empty").exists());
    }

    #[test]
    fn an_export_imported_elsewhere_restores_the_same_workspace_with_its_history() {
        let a = Fixture::new();
        a.write("src/main.rs", b"fn main() {}\n");
        a.write("bin/run", b"#!/bin/sh\n");
        a.chmod("bin/run", 0o750);
        symlink("src/main.rs", a.path("link")).unwrap();
        std::fs::create_dir(a.path("empty")).unwrap();
        let first = a.take(None);
        a.write("src/main.rs", b"fn main() { println!(); }\n");
        let second = a.take(Some(&first.checkpoint));
        let objects = a.store.closure(&second.checkpoint).unwrap();
        // Objects as loose files (what agents send now) and as their bytes
        // (what older agents send) are both taken.
        for compressed in [true, false] {
            let mut tar = Vec::new();
            a.store.export(&objects, compressed, &mut tar).unwrap();
            for how in [Into::Store, Into::Empty, Into::Stale] {
                a_copy_has_the_same_workspace_and_history(&a, &tar, &objects, &first, &second, how);
            }
        }
    }

    /// Where an import puts the checkpoint: only in the store (restored
    /// after), or also in a workspace, empty or not.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Into {
        Store,
        Empty,
        Stale,
    }

    fn a_copy_has_the_same_workspace_and_history(
        a: &Fixture,
        tar: &[u8],
        objects: &[(Kind, ObjectId)],
        first: &Taken,
        second: &Taken,
        how: Into,
    ) {
        let b = Fixture::new();
        if how != Into::Empty {
            b.write("stale.txt", b"not in the checkpoint\n");
        }
        if how == Into::Store {
            let imported = b.store.import(tar, &second.checkpoint, None).unwrap();
            assert_eq!(imported.objects, objects.len());
            assert_eq!(imported.restored, None);
            b.store.restore(&b.ws(), &second.checkpoint).unwrap();
        } else {
            let imported = b
                .store
                .import(tar, &second.checkpoint, Some(&b.ws()))
                .unwrap();
            assert_eq!(imported.objects, objects.len());
            let restored = imported.restored.expect("a restore was asked for");
            assert_eq!(restored.written, 3, "{how:?}");
            assert_eq!(restored.removed, usize::from(how == Into::Stale), "{how:?}");
        }
        assert_eq!(b.state(), a.state(), "{how:?}");
        // The history came too: the first state can be compared with and
        // gone back to, and the next checkpoint follows on.
        let diff = b
            .store
            .diff(&b.ws(), &first.checkpoint, None, LIMIT)
            .unwrap();
        assert_eq!(diff.files.len(), 1, "{diff:?}");
        b.store.restore(&b.ws(), &first.checkpoint).unwrap();
        assert_eq!(
            std::fs::read(b.path("src/main.rs")).unwrap(),
            b"fn main() {}\n"
        );
        let third = b.take(Some(&second.checkpoint));
        assert_eq!(third.files_changed, 1);
    }

    /// Files under a store's `objects/` (loose objects).
    fn loose_count(store: &Path) -> usize {
        std::fs::read_dir(store.join("objects"))
            .unwrap()
            .flatten()
            .filter(|d| d.path().is_dir())
            .map(|d| std::fs::read_dir(d.path()).unwrap().count())
            .sum()
    }

    fn bundle_files(store: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(store.join(bundle::DIR))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// A fork's import writes no loose file: its objects stay in one
    /// bundle, from which every operation reads them (a later opening of
    /// the store too, and an export onwards), until settling writes them
    /// as the loose files git reads and removes the bundle. What an import
    /// that died left is removed; a forged index makes reads fail, never
    /// the agent.
    #[test]
    fn an_imported_history_stays_in_one_bundle_until_settled_as_git_objects() {
        let a = Fixture::new();
        for i in 0..40 {
            a.write(
                &format!("d{}/f{i}.txt", i % 4),
                format!("file {i}\n").as_bytes(),
            );
        }
        let first = a.take(None);
        a.write("d0/f0.txt", b"changed\n");
        let second = a.take(Some(&first.checkpoint));
        let objects = a.store.closure(&second.checkpoint).unwrap();
        let mut tar = Vec::new();
        a.store.export(&objects, true, &mut tar).unwrap();

        let b = Fixture::new();
        let b_store = b._dir.path().join("store");
        b.store
            .import(tar.as_slice(), &second.checkpoint, Some(&b.ws()))
            .unwrap();
        assert_eq!(b.state(), a.state());
        assert_eq!(loose_count(&b_store), 0, "an import wrote loose files");
        let files = bundle_files(&b_store);
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(files[0].ends_with(".bundle") && files[1].ends_with(".idx"));

        // Read from the bundle by a store opened afresh: a rewind, a diff,
        // and an export imported into a third sandbox.
        let reopened = Store::open(&b_store).unwrap();
        reopened.restore(&b.ws(), &first.checkpoint).unwrap();
        assert_eq!(std::fs::read(b.path("d0/f0.txt")).unwrap(), b"file 0\n");
        let diff = reopened
            .diff(&b.ws(), &first.checkpoint, Some(&second.checkpoint), LIMIT)
            .unwrap();
        assert_eq!(diff.files.len(), 1, "{diff:?}");
        let mut onwards = Vec::new();
        reopened
            .export(
                &reopened.closure(&second.checkpoint).unwrap(),
                true,
                &mut onwards,
            )
            .unwrap();
        let c = Fixture::new();
        c.store
            .import(onwards.as_slice(), &second.checkpoint, Some(&c.ws()))
            .unwrap();
        assert_eq!(c.state(), a.state());

        // Settled: every object a loose file, the bundle gone, and git
        // reads the history.
        assert_eq!(reopened.settle_bundles().unwrap(), objects.len());
        assert_eq!(loose_count(&b_store), objects.len());
        assert!(bundle_files(&b_store).is_empty());
        let log = Command::new("git")
            .args(["--git-dir", &b_store.display().to_string()])
            .args(["log", "--format=%s", &second.checkpoint])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&log.stdout), "test\ntest\n");
        let fsck = Command::new("git")
            .args(["--git-dir", &b_store.display().to_string()])
            .args(["fsck", "--full", "--no-dangling"])
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "{}",
            String::from_utf8_lossy(&fsck.stderr)
        );
        b.store.restore(&b.ws(), &second.checkpoint).unwrap();
        assert_eq!(b.state(), a.state());

        // Left by an import that died: a part, a bundle without its index.
        let c_store = c._dir.path().join("store");
        let whole = bundle_files(&c_store);
        let dir = c_store.join(bundle::DIR);
        std::fs::write(dir.join("0000000000000001.part"), b"half").unwrap();
        std::fs::write(dir.join("0000000000000002.bundle"), b"no index").unwrap();
        c.store.remove_unfinished_imports();
        assert_eq!(bundle_files(&c_store), whole);

        // A forged index: objects past the bundle's end.
        let idx = whole.iter().find(|n| n.ends_with(".idx")).unwrap();
        let forged = bundle::forged_index(&objects, 1 << 30);
        std::fs::write(dir.join(idx), forged).unwrap();
        let forged = Store::open(&c_store).unwrap();
        assert!(forged.restore(&c.ws(), &first.checkpoint).is_err());
    }

    #[test]
    fn a_layer_copies_the_parents_files_that_still_hold_the_checkpoint_and_writes_the_rest() {
        let a = Fixture::new();
        a.write("old.txt", b"only in the first checkpoint\n");
        let first = a.take(None);
        std::fs::remove_file(a.path("old.txt")).unwrap();
        a.write("same.txt", b"unchanged since the checkpoint\n");
        a.write("changed.txt", b"as the checkpoint has it\n");
        a.write("fifo-now.txt", b"a file then\n");
        a.write("gone.txt", b"removed after\n");
        a.write("bin/run.sh", b"#!/bin/sh\necho run\n");
        a.chmod("bin/run.sh", 0o755);
        a.write("secret.txt", b"mode 600\n");
        a.chmod("secret.txt", 0o600);
        symlink("same.txt", a.path("link")).unwrap();
        let second = a.take(Some(&first.checkpoint));
        let recorded = a.state();

        // The parent goes on after the checkpoint: a file rewritten, one
        // made a FIFO, one removed, one made a link to another holding
        // the same bytes.
        a.write("changed.txt", b"written after the checkpoint\n");
        std::fs::remove_file(a.path("fifo-now.txt")).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            a.path("fifo-now.txt"),
            rustix::fs::Mode::from_raw_mode(0o644),
        )
        .unwrap();
        std::fs::remove_file(a.path("gone.txt")).unwrap();
        a.write("elsewhere/mode.txt", b"mode 600\n");
        std::fs::remove_file(a.path("secret.txt")).unwrap();
        symlink("elsewhere/mode.txt", a.path("secret.txt")).unwrap();
        // And the store's object for same.txt is spoilt: the file still in
        // the workspace is what the layer takes for it, and stores.
        let same = gix_object::compute_hash(
            gix_hash::Kind::Sha1,
            Kind::Blob,
            b"unchanged since the checkpoint\n",
        )
        .unwrap();
        let loose = a.store.odb.object_path(&same);
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
        let garbage = a
            .store
            .loose_file(&a.store.put(Kind::Blob, b"garbage\n").unwrap());
        std::fs::write(&loose, garbage.unwrap()).unwrap();

        let mut b = Fixture::new();
        let copied = b
            .store
            .copy_checkpoint(&a.store, Some(&a.ws()), &second.checkpoint, &b.ws())
            .unwrap();
        assert_eq!(
            b.state(),
            recorded,
            "the layer is the checkpoint, byte for byte"
        );
        assert_eq!(copied.restored.as_ref().unwrap().written, 7);
        assert!(copied.objects >= 12, "{copied:?}");
        // Its file blobs are not stored again: a fork reads them from the
        // layer's files (read-only), checked.
        let b_store = b._dir.path().join("store");
        assert!(!Store::open_read_only(&b_store).unwrap().contains(&same));
        let base = Store::open_read_only(&b_store)
            .unwrap()
            .with_files(&b.root)
            .unwrap();
        assert_eq!(
            base.get(&same, Kind::Blob, LIMIT).unwrap(),
            b"unchanged since the checkpoint\n"
        );
        let fork = Fixture::new();
        let fork_store = Store::open(fork._dir.path().join("fork-store"))
            .unwrap()
            .with_base(base);
        // (A workspace of nothing: every file's old bytes come from there.)
        let diff = fork_store
            .diff(&fork.ws(), &second.checkpoint, None, LIMIT)
            .unwrap();
        assert!(
            diff.patch.contains("-unchanged since the checkpoint"),
            "{}",
            diff.patch
        );
        std::fs::write(b.path("same.txt"), b"changed in the layer\n").unwrap();
        assert!(
            Store::open_read_only(&b_store)
                .unwrap()
                .with_files(&b.root)
                .unwrap()
                .get(&same, Kind::Blob, LIMIT)
                .is_err(),
            "a layer file that no longer holds its blob is not taken for it"
        );
        b.write("same.txt", b"unchanged since the checkpoint\n");
        // Its store holds the history too, every object checked.
        assert_eq!(
            b.store.closure(&second.checkpoint).unwrap().len(),
            copied.objects
        );
        b.store.restore(&b.ws(), &first.checkpoint).unwrap();
        assert_eq!(
            std::fs::read(b.path("old.txt")).unwrap(),
            b"only in the first checkpoint\n"
        );
        // Without the parent's files, every file comes from the objects:
        // the spoilt one is refused, and nothing is kept of it.
        let mut c = Fixture::new();
        let err = c
            .store
            .copy_checkpoint(&a.store, None, &second.checkpoint, &c.ws())
            .unwrap_err();
        assert!(
            matches!(&err, CheckpointError::BadImport(m) if m.contains(&same.to_string())),
            "{err}"
        );
        // Nor when the parent's file changed as well.
        a.write("same.txt", b"changed too\n");
        let mut c = Fixture::new();
        let err = c
            .store
            .copy_checkpoint(&a.store, Some(&a.ws()), &second.checkpoint, &c.ws())
            .unwrap_err();
        assert!(matches!(&err, CheckpointError::BadImport(_)), "{err}");
        // A checkpoint the parent lacks is refused, and writes nothing.
        let mut d = Fixture::new();
        assert!(matches!(
            d.store
                .copy_checkpoint(&a.store, Some(&a.ws()), &"1".repeat(40), &d.ws()),
            Err(CheckpointError::Unknown(_))
        ));
        assert!(d.state().is_empty());
    }

    #[test]
    fn an_import_that_is_tampered_with_or_incomplete_is_refused() {
        let a = Fixture::new();
        a.write("file.txt", b"original bytes\n");
        let taken = a.take(None);
        let objects = a.store.closure(&taken.checkpoint).unwrap();
        let mut tar = Vec::new();
        a.store.export(&objects, false, &mut tar).unwrap();

        // One object's bytes changed: its id no longer matches.
        let at = tar.windows(8).position(|w| w == b"original").unwrap();
        let mut forged = tar.clone();
        forged[at..at + 8].copy_from_slice(b"replaced");
        let b = Fixture::new();
        let err = b
            .store
            .import(forged.as_slice(), &taken.checkpoint, None)
            .unwrap_err();
        assert!(
            matches!(&err, CheckpointError::BadImport(m) if m.contains("does not hold")),
            "{err}"
        );
        // Nor does an import into a workspace write the forged bytes: a
        // file is written only from a blob that was checked.
        let e = Fixture::new();
        let err = e
            .store
            .import(forged.as_slice(), &taken.checkpoint, Some(&e.ws()))
            .unwrap_err();
        assert!(matches!(&err, CheckpointError::BadImport(_)), "{err}");
        assert!(!e.path("file.txt").exists());

        // The blobs left out: the checkpoint is not whole.
        let commits_only: Vec<_> = objects
            .iter()
            .filter(|(k, _)| *k != Kind::Blob)
            .cloned()
            .collect();
        let mut partial = Vec::new();
        a.store.export(&commits_only, true, &mut partial).unwrap();
        let c = Fixture::new();
        let err = c
            .store
            .import(partial.as_slice(), &taken.checkpoint, None)
            .unwrap_err();
        assert!(
            matches!(&err, CheckpointError::BadImport(m) if m.contains("lacks object")),
            "{err}"
        );
        // As loose files: another object's file under this id, a stream
        // that is not zlib, and a header claiming more than is allowed.
        let blob = objects.iter().find(|(k, _)| *k == Kind::Blob).unwrap().1;
        let other = a.store.put(Kind::Blob, b"other bytes\n").unwrap();
        let huge = {
            let mut z = gix_zlib::stream::deflate::Write::new(
                Vec::new(),
                gix_zlib::Compression::BEST_SPEED,
            );
            z.write_all(format!("blob {}\0", MAX_OBJECT_BYTES + 1).as_bytes())
                .unwrap();
            z.flush().unwrap();
            z.into_inner()
        };
        for (bytes, says) in [
            (a.store.loose_file(&other).unwrap(), "does not hold"),
            (b"not zlib at all".to_vec(), "not a zlib stream"),
            (huge, "claims"),
        ] {
            let mut forged = tar::Builder::new(Vec::new());
            let mut header = tar::Header::new_ustar();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            forged
                .append_data(&mut header, format!("loose/{blob}"), bytes.as_slice())
                .unwrap();
            let forged = forged.into_inner().unwrap();
            let d = Fixture::new();
            let err = d
                .store
                .import(forged.as_slice(), &taken.checkpoint, None)
                .unwrap_err();
            assert!(
                matches!(&err, CheckpointError::BadImport(m) if m.contains(says)),
                "{says}: {err}"
            );
            assert!(!d.store.odb.contains(&blob), "{says}: stored anyway");
        }
        // An unknown checkpoint has nothing to export.
        assert!(matches!(
            a.store.closure(&"1".repeat(40)),
            Err(CheckpointError::Unknown(_))
        ));
    }

    #[test]
    fn a_forged_tree_writes_nothing_outside_a_forks_workspace() {
        // Trees naming `..` and `.` (each holding a file), one name twice
        // with different blobs, and a name with a slash in it: all checked
        // objects (their ids match), so the import plans files from them.
        let a = Fixture::new();
        a.write("file.txt", b"legit\n");
        let taken = a.take(None);
        let blob = a.store.put(Kind::Blob, b"escaped\n").unwrap();
        let other = a.store.put(Kind::Blob, b"second\n").unwrap();
        let raw_tree = |entries: &[(&str, &[u8], ObjectId)]| {
            let mut tree = Vec::new();
            for (mode, name, oid) in entries {
                tree.extend_from_slice(mode.as_bytes());
                tree.push(b' ');
                tree.extend_from_slice(name);
                tree.push(0);
                tree.extend_from_slice(oid.as_bytes());
            }
            tree
        };
        let inner = a
            .store
            .put(Kind::Tree, &raw_tree(&[("100644", b"escaped", blob)]))
            .unwrap();
        let top = raw_tree(&[
            ("40000", b"..", inner),
            ("40000", b".", inner),
            ("100644", b"dup", blob),
            ("100644", b"dup", other),
            ("100644", b"x/../../y", blob),
        ]);
        let top = a.store.put(Kind::Tree, &top).unwrap();
        let legit = a
            .store
            .get(
                &Store::parse_id(&taken.checkpoint).unwrap(),
                Kind::Commit,
                MAX_OBJECT_BYTES,
            )
            .unwrap();
        let mut commit = gix_object::CommitRef::from_bytes(&legit, gix_hash::Kind::Sha1)
            .unwrap()
            .into_owned()
            .unwrap();
        commit.tree = top;
        commit.extra_headers.clear();
        let mut bytes = Vec::new();
        commit.write_to(&mut bytes).unwrap();
        let forged = a.store.put(Kind::Commit, &bytes).unwrap().to_string();
        let objects = a.store.closure(&forged).unwrap();
        for compressed in [true, false] {
            let mut tar = Vec::new();
            a.store.export(&objects, compressed, &mut tar).unwrap();
            let b = Fixture::new();
            // Refused or not, whatever it writes stays in the workspace.
            let _ = b.store.import(tar.as_slice(), &forged, Some(&b.ws()));
            let beside: BTreeSet<String> = std::fs::read_dir(b.root.parent().unwrap())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            let expected: BTreeSet<String> = ["store", "workspace"]
                .map(String::from)
                .into_iter()
                .collect();
            assert_eq!(beside, expected, "compressed: {compressed}");
        }
    }

    #[test]
    fn an_export_names_every_file_of_its_checkpoint_before_its_blob_comes() {
        // A history whose older checkpoints share most blobs with the
        // newest: an import that restores as it goes must still learn
        // where each of the newest one's blobs goes before the blob comes,
        // so that none is left to be read back from the store.
        let a = Fixture::new();
        for i in 0..20 {
            a.write(&format!("d{}/f{i}.txt", i % 4), format!("{i}\n").as_bytes());
        }
        a.write("same-a.txt", b"twice\n");
        a.write("same-b.txt", b"twice\n");
        let mut last = a.take(None);
        for round in 0..3 {
            a.write(&format!("d{round}/f{round}.txt"), b"changed\n");
            a.write(&format!("new{round}.txt"), b"new\n");
            last = a.take(Some(&last.checkpoint));
        }
        let objects = a.store.closure(&last.checkpoint).unwrap();
        let mut tar = Vec::new();
        a.store.export(&objects, true, &mut tar).unwrap();
        let mut plan = Plan::new(Store::parse_id(&last.checkpoint).unwrap());
        let mut planned = BTreeSet::new();
        let mut archive = tar::Archive::new(tar.as_slice());
        for entry in archive.entries().unwrap() {
            let object = a.store.incoming(entry.unwrap()).unwrap();
            for file in plan.see(&a.store, &object) {
                assert!(planned.insert(file.path.clone()), "{} twice", file.path);
            }
        }
        let (tree, _) = a
            .store
            .checkpoint(&Store::parse_id(&last.checkpoint).unwrap())
            .unwrap();
        let files: BTreeSet<String> = a.store.flatten(&tree).unwrap().into_keys().collect();
        assert_eq!(planned, files);
    }

    /// A fork whose workspace is a layer over its parent's checkpoint
    /// reads that checkpoint's objects from the store that wrote the layer
    /// (its base, opened read-only) instead of holding them: its history
    /// can be compared with, gone back to, exported and built on, and what
    /// it records on top goes to its own store only, never to the base.
    #[test]
    fn a_store_on_a_base_reads_its_history_there_and_writes_only_its_own() {
        let a = Fixture::new();
        a.write("src/main.rs", b"fn main() {}\n");
        a.write("bin/run", b"#!/bin/sh\n");
        a.chmod("bin/run", 0o750);
        let first = a.take(None);
        a.write("src/main.rs", b"fn main() { println!(); }\n");
        let second = a.take(Some(&first.checkpoint));
        let base_dir = a._dir.path().join("store");
        let base_before = loose_count(&base_dir);

        // The fork: its workspace as the checkpoint has it (as the layer
        // would show it), its own store empty but for what it takes.
        let b = Fixture::new();
        b.write("src/main.rs", b"fn main() { println!(); }\n");
        b.write("bin/run", b"#!/bin/sh\n");
        b.chmod("bin/run", 0o750);
        let own_dir = b._dir.path().join("store");
        let store = Store::open(&own_dir)
            .unwrap()
            .with_base(Store::open_read_only(&base_dir).unwrap());
        assert!(
            Store::open(&own_dir)
                .unwrap()
                .closure(&second.checkpoint)
                .is_err(),
            "without its base the store lacks the history"
        );
        let objects = store.closure(&second.checkpoint).unwrap();
        assert_eq!(objects, a.store.closure(&second.checkpoint).unwrap());
        let diff = store.diff(&b.ws(), &first.checkpoint, None, LIMIT).unwrap();
        assert_eq!(diff.files.len(), 1, "{diff:?}");
        assert!(diff.patch.contains("println"), "{}", diff.patch);
        // An export onwards (a fork of the fork) reads through to the base.
        let mut tar = Vec::new();
        store.export(&objects, true, &mut tar).unwrap();
        let c = Fixture::new();
        c.store
            .import(tar.as_slice(), &second.checkpoint, Some(&c.ws()))
            .unwrap();
        assert_eq!(c.state(), a.state());
        // A checkpoint on top writes its new objects, not the unchanged
        // ones, and only in its own store.
        b.write("new.txt", b"only in the fork\n");
        let third = store
            .take(&b.ws(), Some(&second.checkpoint), "fork", LIMIT)
            .unwrap();
        assert_eq!(third.files_changed, 1);
        // Its commit, root tree and the new blob (its meta is the same as
        // the parent's, which the base has).
        assert_eq!(loose_count(&own_dir), 3);
        assert_eq!(loose_count(&base_dir), base_before);
        store.restore(&b.ws(), &first.checkpoint).unwrap();
        assert_eq!(
            std::fs::read(b.path("src/main.rs")).unwrap(),
            b"fn main() {}\n"
        );
        assert!(!b.path("new.txt").exists());
        // Not a store at all: refused, not made.
        let missing = a._dir.path().join("nothing");
        assert!(Store::open_read_only(&missing).is_err());
        assert!(!missing.exists());
    }

    #[test]
    fn a_parent_the_store_lost_starts_a_new_history() {
        let f = Fixture::new();
        f.write("a.txt", b"a\n");
        let lost = "2".repeat(40);
        let taken = f.take(Some(&lost));
        assert_eq!(taken.files_changed, 1);
        // And the one after it follows on as usual.
        f.write("a.txt", b"b\n");
        assert_eq!(f.take(Some(&taken.checkpoint)).files_changed, 1);
    }

    #[test]
    fn a_rewind_looks_inside_a_directory_kept_for_a_file_left_out() {
        let f = Fixture::new();
        f.write("data/big.bin", &vec![1u8; (LIMIT + 1) as usize]);
        let taken = f.take(None);
        assert_eq!(taken.skipped.len(), 1);
        f.write("data/new.txt", b"made after\n");
        let done = f.store.restore(&f.ws(), &taken.checkpoint).unwrap();
        assert!(f.path("data/big.bin").exists());
        assert!(!f.path("data/new.txt").exists());
        assert_eq!(done.removed, 1);
    }

    #[test]
    fn large_files_and_fifos_are_left_out_listed_and_never_removed_by_a_rewind() {
        let f = Fixture::new();
        f.write("small.txt", b"small\n");
        f.write("big.bin", &vec![7u8; (LIMIT + 1) as usize]);
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            f.path("pipe"),
            rustix::fs::Mode::from_raw_mode(0o644),
        )
        .unwrap();
        let taken = f.take(None);
        let skipped: Vec<(&str, Option<u64>)> = taken
            .skipped
            .iter()
            .map(|s| (s.path.as_str(), s.size))
            .collect();
        assert_eq!(skipped, [("big.bin", Some(LIMIT + 1)), ("pipe", None)]);
        assert_eq!(taken.files_changed, 1);
        f.write("small.txt", b"changed\n");
        f.store.restore(&f.ws(), &taken.checkpoint).unwrap();
        assert_eq!(std::fs::read(f.path("small.txt")).unwrap(), b"small\n");
        assert!(f.path("big.bin").exists() && f.path("pipe").exists());
    }

    #[test]
    fn the_tree_is_the_one_git_writes_and_git_reads_the_store() {
        let f = Fixture::new();
        f.write("a.txt", b"a\n");
        f.write("dir/b.txt", b"b\n");
        f.write("dir-x/c.sh", b"c\n");
        f.chmod("dir-x/c.sh", 0o755);
        f.write("dir.d/e", b"e\n");
        symlink("a.txt", f.path("l")).unwrap();
        let taken = f.take(None);
        // git's own tree of the same files.
        let git = |args: &[&str]| {
            let out = Command::new("git")
                .args(["--git-dir", &format!("{}/../g", f.root.display())])
                .args(["--work-tree", &f.root.display().to_string()])
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        git(&["init", "-q"]);
        git(&["add", "-A", "-f", "."]);
        let expected = git(&["write-tree"]);
        let store = f._dir.path().join("store");
        let ours = Command::new("git")
            .args(["--git-dir", &store.display().to_string()])
            .args(["rev-parse", &format!("{}^{{tree}}", taken.checkpoint)])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&ours.stdout), expected);
        let log = Command::new("git")
            .args([
                "--git-dir",
                &store.display().to_string(),
                "log",
                "--format=%s",
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&log.stdout), "test\n");

        // A user's own repository is files like any other (git itself
        // would never add them).
        f.write(".git/HEAD", b"ref: refs/heads/main\n");
        let with_git = f.take(Some(&taken.checkpoint));
        let listed = Command::new("git")
            .args([
                "--git-dir",
                &store.display().to_string(),
                "ls-tree",
                "-r",
                "--name-only",
            ])
            .arg(&with_git.checkpoint)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&listed.stdout)
                .lines()
                .any(|l| l == ".git/HEAD"),
            "{}",
            String::from_utf8_lossy(&listed.stdout)
        );
    }

    #[test]
    fn unchanged_files_are_not_read_again_and_a_quick_change_is_still_seen() {
        let f = Fixture::new();
        for i in 0..50 {
            f.write(&format!("f{i}.txt"), format!("{i}\n").as_bytes());
            backdate(&f.path(&format!("f{i}.txt")));
        }
        let first = f.take(None);
        let again = f.take(Some(&first.checkpoint));
        assert_eq!(again.files_changed, 0, "{again:?}");
        // The cache is believed, not the file, while the metadata holds:
        // a cache that lies about f1.txt's blob shows in the next one.
        let lie = f
            .store
            .put(Kind::Blob, b"not what the file holds\n")
            .unwrap();
        let mut cache = f.store.load_cache();
        cache
            .files
            .get_mut("f1.txt")
            .unwrap()
            .oid
            .copy_from_slice(lie.as_bytes());
        f.store.save_cache(&cache).unwrap();
        let believed = f.take(Some(&again.checkpoint));
        assert_eq!(believed.files_changed, 1, "{believed:?}");
        let again = f.take(Some(&first.checkpoint));
        assert_eq!(again.files_changed, 1, "still believed: {again:?}");
        // Changed within the same second as the snapshot that saw it last.
        f.write("f2.txt", b"2\n");
        let seen = f.take(Some(&again.checkpoint));
        f.write("f2.txt", b"x\n");
        let again = f.take(Some(&seen.checkpoint));
        assert_eq!(again.files_changed, 1, "{again:?}");
    }

    #[test]
    fn a_bad_or_unknown_id_is_refused() {
        let f = Fixture::new();
        assert!(matches!(
            f.store.restore(&f.ws(), "nope"),
            Err(CheckpointError::BadId(_))
        ));
        let missing = "0123456789012345678901234567890123456789";
        assert!(matches!(
            f.store.restore(&f.ws(), missing),
            Err(CheckpointError::Unknown(_))
        ));
        // The empty workspace is a checkpoint too, and restoring it empties.
        let empty = f.take(None);
        f.write("x", b"x");
        f.store.restore(&f.ws(), &empty.checkpoint).unwrap();
        assert!(f.state().is_empty());
    }
}
