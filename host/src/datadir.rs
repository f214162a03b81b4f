//! The data directory (`server.data_dir`): the database, the plugin cache
//! and every session's workspace.
//!
//! It is private to the server's user (mode 0700), and made so at start
//! when an older version left it open. That matters beyond the database:
//! workspaces are written by the sandboxes, and a sandbox can make a file
//! that is setuid root (`cp /bin/sh x && chmod 4755 x`); no other user of the
//! host may reach it.
//!
//! One server at a time owns a data directory: [`DataDirLock`] holds an
//! exclusive lock on `crogia.lock` inside it for the server's lifetime, so a
//! second server, or `crogia gc` (which would take the first server's pool
//! and in-flight containers for orphans), is refused while one runs.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Mode of the data directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files the server keeps in it (database, lock).
pub const FILE_MODE: u32 = 0o600;
/// Name of the lock file.
const LOCK_FILE: &str = "crogia.lock";

/// Creates the data directory with mode 0700 (and its missing parents), or
/// makes an existing one private, saying so in the log.
pub fn prepare(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data dir {}", dir.display()))?;
        std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
            .with_context(|| format!("making data dir {} private", dir.display()))?;
        return Ok(());
    }
    make_private(dir, DIR_MODE)
}

/// Gives `path` exactly `mode` when it has any bit beyond it, with a log
/// line; an error when that cannot be done.
pub fn make_private(path: &Path, mode: u32) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let current = meta.permissions().mode() & 0o7777;
    if current & !mode == 0 {
        return Ok(());
    }
    std::fs::set_permissions(path, Permissions::from_mode(mode)).with_context(|| {
        format!(
            "{} is open to other users (mode {current:04o}) and could not be made private \
             ({mode:04o}); fix its owner or mode",
            path.display()
        )
    })?;
    tracing::warn!(
        path = %path.display(),
        was = %format!("{current:04o}"),
        now = %format!("{mode:04o}"),
        "made a data file private: other users of this host could read it"
    );
    Ok(())
}

/// Creates `path` as an empty file with [`FILE_MODE`] when it is missing, or
/// makes an existing one private.
pub fn private_file(path: &Path) -> anyhow::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => make_private(path, FILE_MODE),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// The id of the server that runs on `dir`: random, made once and kept in
/// `<dir>/server-id`, so a restarted server is the same server. Servers
/// sharing one database tell their tasks and sessions apart by it.
pub fn server_id(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("server-id");
    let fresh = format!("{:016x}", rand::random::<u64>());
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&path)
    {
        Ok(mut f) => {
            f.write_all(fresh.as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(fresh)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let id = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let id = id.trim();
            if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!(
                    "{} does not hold a server id (16 hex digits)",
                    path.display()
                );
            }
            Ok(id.to_string())
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// The exclusive claim of one process on a data directory, released when
/// dropped (or when the process dies: the kernel drops the lock with it).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Claims `dir` for `what` (e.g. "another server"), creating it or
    /// making it private first ([`prepare`]); refused, naming the holder's
    /// pid, while another process holds it.
    pub fn acquire(dir: &Path, what: &str) -> anyhow::Result<Self> {
        prepare(dir)?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another process".to_string()
                } else {
                    format!("another process (pid {holder})")
                };
                bail!(
                    "data dir {} is in use by {who}: a Crogia server is running on it. \
                     Stop that server before running {what} on the same data dir",
                    dir.display()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        // Who holds it, for the message above.
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        Ok(Self { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_data_dir_is_private_and_an_open_one_is_closed() {
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("a/b/data");
        let claim = DataDirLock::acquire(&fresh, "the test").unwrap();
        assert_eq!(mode(&fresh), 0o700);
        drop(claim);
        let old = tmp.path().join("old");
        std::fs::create_dir(&old).unwrap();
        std::fs::set_permissions(&old, Permissions::from_mode(0o755)).unwrap();
        prepare(&old).unwrap();
        assert_eq!(mode(&old), 0o700);
        let file = old.join("crogia.db");
        private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        std::fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
    }

    #[test]
    fn a_data_dir_is_held_by_one_claim_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(tmp.path(), "the server").unwrap();
        let err = DataDirLock::acquire(tmp.path(), "`crogia gc`")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())) && err.contains("`crogia gc`"),
            "{err}"
        );
        assert_eq!(mode(first.path()), 0o600);
        drop(first);
        DataDirLock::acquire(tmp.path(), "`crogia gc`").unwrap();
    }
}
