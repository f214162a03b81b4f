//! The set of loaded plugins and the tools they provide: scanning the
//! plugins folder, hot reload when its `.wasm` files change, and which
//! plugin owns a contested tool name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::loader::{self, LoadedPlugin, ToolSpec};
use super::{LoadReport, PluginRuntime, SkippedPlugin};

/// How long file events are collected before the folder is rescanned.
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(250);

#[derive(Default)]
pub(super) struct Registry {
    /// Loaded plugins, in priority order (earlier ones own contested names).
    pub(super) plugins: Vec<Arc<LoadedPlugin>>,
    pub(super) tools: BTreeMap<String, (Arc<LoadedPlugin>, ToolSpec)>,
}

impl PluginRuntime {
    /// Scans the plugins folder and makes what it holds the current set:
    /// unchanged files are kept as they are, changed ones reloaded, new ones
    /// loaded, vanished ones dropped. A file that fails to load is skipped
    /// with a log line naming it and the reason; if it replaced a working
    /// plugin, that plugin is dropped too (the folder is the truth).
    pub async fn reload(&self) -> LoadReport {
        let _guard = self.reload_lock.lock().await;
        let previous = self.registry.read().unwrap().clone();
        let mut report = LoadReport::default();
        let files = match wasm_files(&self.dir) {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read the plugins folder; no tools loaded");
                *self.registry.write().unwrap() = Arc::new(Registry::default());
                *self.last_report.write().unwrap() = report.clone();
                return report;
            }
        };
        let mut loaded: Vec<Arc<LoadedPlugin>> = Vec::new();
        for file in &files {
            let unchanged = previous.plugins.iter().find(|p| {
                &p.file == file
                    && std::fs::read(file)
                        .map(|b| loader::sha256_hex(&b) == p.sha256)
                        .unwrap_or(false)
            });
            if let Some(p) = unchanged {
                loaded.push(p.clone());
                continue;
            }
            let started = Instant::now();
            match loader::load(&self.compiler, &self.linker, file).await {
                Ok((plugin, cached)) => {
                    tracing::info!(
                        plugin = %plugin.name,
                        tools = ?plugin.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
                        cached,
                        ms = started.elapsed().as_millis() as u64,
                        "plugin loaded"
                    );
                    report.from_cache += usize::from(cached);
                    loaded.push(plugin);
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), reason = %e, "plugin skipped");
                    report.skipped.push(SkippedPlugin {
                        file: file_name(file),
                        reason: e.0,
                    });
                }
            }
        }
        // Plugins that were already loaded keep the names they own; new ones
        // come after, in file-name order.
        let rank = |p: &Arc<LoadedPlugin>| {
            previous
                .plugins
                .iter()
                .position(|q| q.file == p.file)
                .unwrap_or(usize::MAX)
        };
        loaded.sort_by_key(|p| rank(p));
        let mut registry = Registry::default();
        for plugin in loaded {
            if let Some(taken) = plugin
                .tools
                .iter()
                .find_map(|t| registry.tools.get(&t.name).map(|(owner, _)| (t, owner)))
            {
                let reason = format!(
                    "tool name {:?} is already taken by plugin {}",
                    taken.0.name,
                    file_name(&taken.1.file)
                );
                tracing::warn!(file = %plugin.file.display(), %reason, "plugin skipped");
                report.skipped.push(SkippedPlugin {
                    file: file_name(&plugin.file),
                    reason,
                });
                continue;
            }
            for t in &plugin.tools {
                registry
                    .tools
                    .insert(t.name.clone(), (plugin.clone(), t.clone()));
            }
            report.loaded.push(file_name(&plugin.file));
            registry.plugins.push(plugin);
        }
        for gone in previous
            .plugins
            .iter()
            .filter(|p| !registry.plugins.iter().any(|q| q.file == p.file))
        {
            tracing::info!(plugin = %gone.name, "plugin unloaded");
        }
        *self.registry.write().unwrap() = Arc::new(registry);
        *self.last_report.write().unwrap() = report.clone();
        report
    }

    /// What the last scan of the plugins folder found.
    pub fn last_report(&self) -> LoadReport {
        self.last_report.read().unwrap().clone()
    }

    /// Watches the plugins folder and rescans it whenever a `.wasm` file in it
    /// is created, changed, renamed or removed.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<()> {
        use notify::Watcher;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event
                    && event
                        .paths
                        .iter()
                        .any(|p| p.extension().is_some_and(|e| e == "wasm"))
                    && !matches!(event.kind, notify::EventKind::Access(_))
                {
                    let _ = tx.send(());
                }
            })
            .context("creating the plugins folder watcher")?;
        watcher
            .watch(&self.dir, notify::RecursiveMode::NonRecursive)
            .with_context(|| format!("watching {}", self.dir.display()))?;
        *self.watcher.lock().unwrap() = Some(watcher);
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                // Let a copy finish and coalesce the burst of events it makes.
                tokio::time::sleep(RELOAD_DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
                let Some(runtime) = weak.upgrade() else {
                    return;
                };
                let report = runtime.reload().await;
                tracing::info!(
                    loaded = report.loaded.len(),
                    skipped = report.skipped.len(),
                    "plugins folder changed; reloaded"
                );
            }
        });
        Ok(())
    }
}

fn wasm_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

pub(super) fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
