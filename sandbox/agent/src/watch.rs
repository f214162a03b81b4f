//! Workspace changes as a stream of small batches: inotify (through
//! `notify`) watches `/workspace` recursively; changes are gathered for
//! [`WINDOW`], coalesced per path (a file made and removed within a window
//! is not reported; one removed and made again is `modified`) and bounded:
//! a batch over [`MAX_CHANGES`] paths is reported by top-level directory,
//! and if that is still too many, as one change of the whole workspace. A
//! build writing 10,000 files therefore costs a handful of events.
//!
//! Our own bookkeeping is not reported: `.git/`, `.agent_logs/` (process
//! logs) and the temporary files atomic writes go through.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use notify::event::{ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// How long changes are gathered before a batch is sent.
pub const WINDOW: Duration = Duration::from_millis(500);
/// Most paths in one batch.
pub const MAX_CHANGES: usize = 32;
/// Raw changes queued between the watcher and the batcher; past it the
/// batch reports the whole workspace as changed.
const QUEUE: usize = 8192;

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Created,
    Modified,
    Deleted,
}

/// One path that changed, relative to the workspace (`.` for all of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChange {
    pub path: String,
    pub kind: ChangeKind,
}

/// One line of the watch stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub changes: Vec<FileChange>,
}

/// Changes gathered in one window, per path: the first and the last kind.
#[derive(Debug, Default)]
pub struct Coalescer {
    pending: BTreeMap<String, (ChangeKind, ChangeKind)>,
    overflowed: bool,
}

impl Coalescer {
    pub fn push(&mut self, path: String, kind: ChangeKind) {
        self.pending
            .entry(path)
            .and_modify(|(_, last)| *last = kind)
            .or_insert((kind, kind));
    }

    /// Too many changes to keep: the batch says "everything".
    pub fn overflow(&mut self) {
        self.overflowed = true;
    }

    /// The window's changes, coalesced and bounded, and a fresh window.
    pub fn flush(&mut self) -> Vec<FileChange> {
        let pending = std::mem::take(&mut self.pending);
        if std::mem::take(&mut self.overflowed) {
            return vec![whole_workspace()];
        }
        let changes: Vec<FileChange> = pending
            .into_iter()
            .filter_map(|(path, (first, last))| {
                let kind = match (first, last) {
                    (ChangeKind::Created, ChangeKind::Deleted) => return None,
                    (ChangeKind::Created, _) => ChangeKind::Created,
                    (ChangeKind::Deleted, ChangeKind::Deleted) => ChangeKind::Deleted,
                    (ChangeKind::Deleted, _) => ChangeKind::Modified,
                    (ChangeKind::Modified, ChangeKind::Deleted) => ChangeKind::Deleted,
                    (ChangeKind::Modified, _) => ChangeKind::Modified,
                };
                Some(FileChange { path, kind })
            })
            .collect();
        if changes.len() <= MAX_CHANGES {
            return changes;
        }
        // By top-level entry: a file there keeps its kind; a directory is
        // reported as modified.
        let mut tops: BTreeMap<String, ChangeKind> = BTreeMap::new();
        for c in changes {
            match c.path.split_once('/') {
                None => {
                    tops.entry(c.path).or_insert(c.kind);
                }
                Some((top, _)) => {
                    tops.insert(top.to_string(), ChangeKind::Modified);
                }
            }
        }
        if tops.len() > MAX_CHANGES {
            return vec![whole_workspace()];
        }
        tops.into_iter()
            .map(|(path, kind)| FileChange { path, kind })
            .collect()
    }
}

fn whole_workspace() -> FileChange {
    FileChange {
        path: ".".into(),
        kind: ChangeKind::Modified,
    }
}

/// A running watch of `root`: raw changes arrive on `changes`; `overflowed`
/// is set when some were dropped. Dropping it stops the watch.
pub struct Watch {
    _watcher: RecommendedWatcher,
    pub changes: mpsc::Receiver<(String, ChangeKind)>,
    pub overflowed: Arc<AtomicBool>,
}

/// Starts watching `root` recursively.
pub fn watch(root: &Path) -> notify::Result<Watch> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let overflowed = Arc::new(AtomicBool::new(false));
    let flag = overflowed.clone();
    let base: PathBuf = root.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            // The kernel's queue overflowed, or a watch failed.
            flag.store(true, Ordering::Relaxed);
            return;
        };
        for (path, kind) in classify(&event) {
            let Some(rel) = relative(&base, path) else {
                continue;
            };
            if tx.try_send((rel, kind)).is_err() {
                flag.store(true, Ordering::Relaxed);
            }
        }
    })?;
    watcher.watch(root, RecursiveMode::Recursive)?;
    Ok(Watch {
        _watcher: watcher,
        changes: rx,
        overflowed,
    })
}

/// Gathers the next batch: waits for a first change, then for [`WINDOW`].
/// `None` when the watch has ended.
pub async fn next_batch(watch: &mut Watch) -> Option<Vec<FileChange>> {
    let mut window = Coalescer::default();
    loop {
        let (path, kind) = watch.changes.recv().await?;
        window.push(path, kind);
        let deadline = tokio::time::Instant::now() + WINDOW;
        while let Ok(Some((path, kind))) =
            tokio::time::timeout_at(deadline, watch.changes.recv()).await
        {
            window.push(path, kind);
        }
        if watch.overflowed.swap(false, Ordering::Relaxed) {
            window.overflow();
        }
        let batch = window.flush();
        if !batch.is_empty() {
            return Some(batch);
        }
    }
}

/// What a raw event means for each of its paths.
fn classify(event: &notify::Event) -> Vec<(&Path, ChangeKind)> {
    let paths = &event.paths;
    let all = |kind| paths.iter().map(|p| (p.as_path(), kind)).collect();
    match event.kind {
        EventKind::Create(_) => all(ChangeKind::Created),
        EventKind::Remove(_) => all(ChangeKind::Deleted),
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => all(ChangeKind::Deleted),
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => all(ChangeKind::Created),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if paths.len() == 2 => vec![
            (paths[0].as_path(), ChangeKind::Deleted),
            (paths[1].as_path(), ChangeKind::Created),
        ],
        EventKind::Modify(ModifyKind::Metadata(_)) => Vec::new(),
        EventKind::Modify(_) => all(ChangeKind::Modified),
        // Reads (open, close without writing) change nothing.
        EventKind::Access(_) | EventKind::Any | EventKind::Other => Vec::new(),
    }
}

/// `path` relative to the workspace, or `None` for what is not reported.
fn relative(base: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(base).ok()?.to_str()?;
    if rel.is_empty() {
        return None;
    }
    let first = rel.split('/').next().unwrap_or(rel);
    let name = rel.rsplit('/').next().unwrap_or(rel);
    if first == ".git" || first == ".agent_logs" || name.starts_with(".crogia-tmp-") {
        return None;
    }
    Some(rel.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ChangeKind::*;

    fn flush(events: &[(&str, ChangeKind)]) -> Vec<(String, ChangeKind)> {
        let mut c = Coalescer::default();
        for (p, k) in events {
            c.push(p.to_string(), *k);
        }
        c.flush().into_iter().map(|c| (c.path, c.kind)).collect()
    }

    #[test]
    fn changes_to_one_path_within_a_window_coalesce() {
        assert_eq!(
            flush(&[
                ("a", Created),
                ("a", Modified),
                ("b", Created),
                ("b", Deleted),
                ("c", Deleted),
                ("c", Created),
                ("d", Modified),
                ("d", Deleted),
            ]),
            vec![
                ("a".into(), Created),
                ("c".into(), Modified),
                ("d".into(), Deleted)
            ]
        );
    }

    #[test]
    fn a_flood_is_reported_by_top_level_directory_then_as_everything() {
        let many: Vec<(String, ChangeKind)> = (0..10_000)
            .map(|i| (format!("build/obj/f{i}.o"), Created))
            .chain([("README.md".to_string(), Modified)])
            .collect();
        let refs: Vec<(&str, ChangeKind)> = many.iter().map(|(p, k)| (p.as_str(), *k)).collect();
        assert_eq!(
            flush(&refs),
            vec![("README.md".into(), Modified), ("build".into(), Modified)]
        );
        let tops: Vec<(String, ChangeKind)> =
            (0..100).map(|i| (format!("d{i}/x"), Created)).collect();
        let refs: Vec<(&str, ChangeKind)> = tops.iter().map(|(p, k)| (p.as_str(), *k)).collect();
        assert_eq!(flush(&refs), vec![(".".into(), Modified)]);
    }

    #[tokio::test]
    async fn a_watch_reports_what_happens_in_the_workspace_and_not_our_bookkeeping() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::write(root.join("old.txt"), "x").unwrap();
        // A directory made in the same instant as a file in it may be
        // reported alone (its watch comes after the file): make it first.
        std::fs::create_dir(root.join("src")).unwrap();
        let mut w = watch(&root).unwrap();
        let ws = crate::fs::Workspace::open(&root).unwrap();
        ws.write("src/new.py", b"print()").unwrap();
        std::fs::remove_file(root.join("old.txt")).unwrap();
        std::fs::create_dir_all(root.join(".agent_logs")).unwrap();
        std::fs::write(root.join(".agent_logs/1.log"), "log").unwrap();
        let mut seen = BTreeMap::new();
        while !(seen.contains_key("src/new.py") && seen.contains_key("old.txt")) {
            let batch = tokio::time::timeout(Duration::from_secs(10), next_batch(&mut w))
                .await
                .expect("no batch came")
                .unwrap();
            for c in batch {
                seen.insert(c.path, c.kind);
            }
        }
        assert_eq!(seen["old.txt"], Deleted);
        assert_eq!(seen["src/new.py"], Created);
        assert!(
            seen.keys()
                .all(|p| !p.starts_with(".agent_logs") && !p.contains(".crogia-tmp-")),
            "{seen:?}"
        );
    }
}
