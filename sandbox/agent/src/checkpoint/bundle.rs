//! Bundles: the objects an import brought, kept as they came, in one file.
//!
//! A fork's import brings every object of a history (10,000 and more for
//! a real workspace). Writing each as a loose file is a file creation
//! apiece, which cost a fork more than writing the workspace itself. An
//! import instead appends each checked object's loose form (its zlib
//! stream, header included) to one bundle file and, once the import is
//! whole, writes the bundle's index beside it: the store reads an object
//! from a bundle when it has no loose file for it, exactly as from its
//! loose file. Afterwards, at idle priority and off any caller's path, the
//! bundle is settled: each object written as the loose file git expects,
//! then the bundle removed ([`super::Store::settle_bundles`]), so the store
//! at rest is again a plain git object store.
//!
//! The store is the sandbox's to write, so a bundle and its index are read
//! as untrusted input: opened without following a link or blocking on a
//! FIFO, only as regular files, the index bounded in size and entries,
//! each object's extent bounded. A forged bundle can only mislead this
//! sandbox's own store, which its own programs can rewrite anyway.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read as _, Write as _};
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use gix_hash::ObjectId;
use serde::{Deserialize, Serialize};

use super::{MAX_OBJECT_BYTES, MAX_TRANSFER_OBJECTS};

/// Where bundles are kept in the store's directory (not under `objects/`,
/// which git reads).
pub(super) const DIR: &str = "crogia-bundles";
/// A bundle's objects.
const DATA: &str = "bundle";
/// Its index, written once the bundle is whole: a bundle without one is
/// not read.
const INDEX: &str = "idx";
/// A bundle being written.
const PART: &str = "part";
/// The index format's version.
const VERSION: u32 = 1;
/// Largest index read.
const MAX_INDEX_BYTES: u64 = 64 << 20;

/// A bundle's index as stored (postcard).
#[derive(Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    entries: Vec<IndexEntry>,
}

#[derive(Serialize, Deserialize)]
struct IndexEntry {
    id: [u8; 20],
    offset: u64,
    len: u32,
}

/// A whole bundle, open for reading.
pub(super) struct Bundle {
    /// Its path without the extension.
    stem: PathBuf,
    file: File,
    index: HashMap<ObjectId, (u64, u32)>,
}

impl Bundle {
    /// Every whole bundle of the store at `store`; one that cannot be read
    /// is passed over (its objects are missing, which the store reports
    /// where it needs them).
    pub(super) fn open_all(store: &Path) -> Vec<Bundle> {
        let Ok(entries) = std::fs::read_dir(store.join(DIR)) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let path = e.path();
                (path.extension()? == INDEX).then(|| path.with_extension(""))
            })
            .filter_map(|stem| match Self::open(&stem) {
                Ok(bundle) => Some(bundle),
                Err(e) => {
                    eprintln!("crogia-agent: bundle {}: {e}", stem.display());
                    None
                }
            })
            .collect()
    }

    fn open(stem: &Path) -> std::io::Result<Self> {
        let mut raw = Vec::new();
        open_regular(&stem.with_extension(INDEX))?
            .take(MAX_INDEX_BYTES)
            .read_to_end(&mut raw)?;
        let stored: IndexFile = postcard::from_bytes(&raw).map_err(std::io::Error::other)?;
        if stored.version != VERSION || stored.entries.len() > MAX_TRANSFER_OBJECTS {
            return Err(std::io::Error::other(
                "an index of another version, or too large",
            ));
        }
        let index = stored
            .entries
            .into_iter()
            .filter(|e| u64::from(e.len) <= MAX_OBJECT_BYTES)
            .map(|e| (ObjectId::Sha1(e.id), (e.offset, e.len)))
            .collect();
        Ok(Self {
            stem: stem.to_path_buf(),
            file: open_regular(&stem.with_extension(DATA))?,
            index,
        })
    }

    pub(super) fn contains(&self, id: &ObjectId) -> bool {
        self.index.contains_key(id)
    }

    /// The length of object `id`'s loose form, if this bundle has it.
    pub(super) fn len_of(&self, id: &ObjectId) -> Option<u64> {
        self.index.get(id).map(|&(_, len)| u64::from(len))
    }

    /// The loose form of object `id`, if this bundle has it.
    pub(super) fn read(&self, id: &ObjectId) -> Option<std::io::Result<Vec<u8>>> {
        let &(offset, len) = self.index.get(id)?;
        let mut data = vec![0; len as usize];
        Some(self.file.read_exact_at(&mut data, offset).map(|()| data))
    }

    /// Its objects' ids.
    pub(super) fn ids(&self) -> impl Iterator<Item = &ObjectId> {
        self.index.keys()
    }

    /// Removes it: its index first, so it is never read half gone.
    pub(super) fn remove(&self) -> std::io::Result<()> {
        std::fs::remove_file(self.stem.with_extension(INDEX))?;
        std::fs::remove_file(self.stem.with_extension(DATA))
    }
}

/// Opens a file of the store that its sandbox may have replaced: never
/// through a link, never waiting on a FIFO, only a regular file.
pub(super) fn open_regular(path: &Path) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// A bundle being written by an import; removed unless finished.
pub(super) struct BundleWriter {
    stem: PathBuf,
    out: BufWriter<File>,
    offset: u64,
    entries: Vec<IndexEntry>,
    finished: bool,
}

impl BundleWriter {
    pub(super) fn create(store: &Path) -> std::io::Result<Self> {
        let dir = store.join(DIR);
        std::fs::create_dir_all(&dir)?;
        let stem = dir.join(format!("{:016x}", rand::random::<u64>()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(stem.with_extension(PART))?;
        Ok(Self {
            stem,
            out: BufWriter::with_capacity(1 << 20, file),
            offset: 0,
            entries: Vec::new(),
            finished: false,
        })
    }

    /// Appends object `id`'s loose form (checked by the caller).
    pub(super) fn add(&mut self, id: &ObjectId, loose: &[u8]) -> std::io::Result<()> {
        let len = u32::try_from(loose.len()).map_err(std::io::Error::other)?;
        self.out.write_all(loose)?;
        self.entries.push(IndexEntry {
            id: id.as_bytes().try_into().expect("a SHA-1 id is 20 bytes"),
            offset: self.offset,
            len,
        });
        self.offset += u64::from(len);
        Ok(())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Makes the bundle whole: its objects in place, then its index.
    pub(super) fn finish(mut self) -> std::io::Result<()> {
        self.out.flush()?;
        std::fs::rename(
            self.stem.with_extension(PART),
            self.stem.with_extension(DATA),
        )?;
        self.finished = true;
        let index = IndexFile {
            version: VERSION,
            entries: std::mem::take(&mut self.entries),
        };
        let bytes = postcard::to_stdvec(&index).map_err(std::io::Error::other)?;
        let tmp = self.stem.with_extension("idx.tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, self.stem.with_extension(INDEX))
    }
}

impl Drop for BundleWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(self.stem.with_extension(PART));
        }
    }
}

/// Removes bundles left half written (an import that died before its
/// index was in place, or a removal cut short): call only while no import
/// runs.
pub(super) fn remove_parts(store: &Path) {
    let Ok(entries) = std::fs::read_dir(store.join(DIR)) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Some(ext) = path.extension() else {
            continue;
        };
        let orphan = ext == DATA && !path.with_extension(INDEX).exists();
        if orphan || ext == PART || ext == "tmp" {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// An index naming `objects` at `offset` onwards: for tests of a forged
/// bundle.
#[cfg(test)]
pub(super) fn forged_index(objects: &[(gix_object::Kind, ObjectId)], offset: u64) -> Vec<u8> {
    let entries = objects
        .iter()
        .map(|(_, id)| IndexEntry {
            id: id.as_bytes().try_into().unwrap(),
            offset,
            len: 64,
        })
        .collect();
    postcard::to_stdvec(&IndexFile {
        version: VERSION,
        entries,
    })
    .unwrap()
}
