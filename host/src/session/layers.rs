//! Fork layers, as sessions use them ([`crate::sandbox`]'s `layers` makes
//! and removes them): the first fork of a checkpoint builds its layer on
//! the parent's engine, later forks of the same checkpoint stand on it
//! too, and it is removed once no session's workspace stands on it.
//!
//! A layer is kept per (parent session, checkpoint), never shared between
//! two parents, and known only to the server that built it: after a
//! restart, a fork builds a new one, and the old stays as long as the
//! sessions standing on it (their records name it).
//!
//! A layer may also be written *ahead*, right after its checkpoint is
//! taken (`workspace.fork_layers_ahead`: for every session up to a size,
//! or for those this server has forked), in the background and one at a
//! time, so that the checkpoint's first fork copies nothing either. Only
//! a session's latest checkpoint is written ahead; the layer written ahead
//! before it goes unless a fork stands on it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Session, SessionError, SessionManager};
use crate::config::ForkLayersAhead;
use crate::sandbox::{LABEL_INSTANCE, LABEL_SERVER, LayerDone, SandboxError};
use crate::workspace::Workspace;

/// The layer of one (parent session, checkpoint), once built: written
/// while it is built (once) or removed, read while a fork is made on it
/// (forks of it are made at once, and it is not removed under one).
pub type LayerSlot = Arc<tokio::sync::RwLock<Option<String>>>;

/// The layers this server built, by (parent session, checkpoint).
#[derive(Debug, Default)]
pub(super) struct Layers {
    slots: std::sync::Mutex<HashMap<(String, String), LayerSlot>>,
    /// Layers written ahead, by session.
    ahead: std::sync::Mutex<HashMap<String, Ahead>>,
    /// Sessions forked over a layer since this server started.
    forked: std::sync::Mutex<HashSet<String>>,
    /// Held while a layer is written ahead: one at a time, as background
    /// work beside the sessions' own.
    writing: tokio::sync::Mutex<()>,
}

/// A session's layers written ahead.
#[derive(Debug)]
struct Ahead {
    /// The checkpoint to write (its latest).
    wanted: String,
    /// The last layer written ahead, released when the next is written
    /// (kept while forks of its checkpoint stand on it).
    written: Option<String>,
}

impl SessionManager {
    /// The engine a fork of `parent` over a layer goes to: the parent's,
    /// where its layers are, if it has room for one more session.
    pub fn layer_engine(&self, parent: &Session) -> Option<usize> {
        let i = self.engines.iter().position(|e| e.name == parent.engine)?;
        let max = self.engines[i].max_sessions;
        (max == 0 || self.placed()[i] < max).then_some(i)
    }

    /// The slot of checkpoint `checkpoint` of session `parent`'s layer.
    pub fn layer_slot(&self, parent: &str, checkpoint: &str) -> LayerSlot {
        self.layers
            .slots
            .lock()
            .unwrap()
            .entry((parent.to_string(), checkpoint.to_string()))
            .or_default()
            .clone()
    }

    /// Forgets the slots of deleted session `parent` that hold no layer
    /// (a fork that failed to build one); those holding one stay until
    /// the last fork on it goes.
    pub(super) fn forget_unbuilt_slots(&self, parent: &str) {
        self.layers.slots.lock().unwrap().retain(|(p, _), slot| {
            p != parent || slot.try_read().map_or(true, |layer| layer.is_some())
        });
    }

    /// Records that `parent` was forked over a layer (for
    /// `fork_layers_ahead = "forked"`).
    pub fn forked_over_layer(&self, parent: &str) {
        self.layers
            .forked
            .lock()
            .unwrap()
            .insert(parent.to_string());
    }

    /// Called once `checkpoint` of `session` is recorded, holding `files`
    /// files of `bytes` bytes: writes its layer ahead, in the background,
    /// if `workspace.fork_layers_ahead` wants it for this session (and a
    /// layer written ahead for an earlier checkpoint, not yet written, is
    /// then not).
    pub fn checkpoint_taken(
        self: &Arc<Self>,
        session: &Session,
        checkpoint: &str,
        files: u64,
        bytes: u64,
    ) {
        let workspace = &self.config.workspace;
        let forked = || self.layers.forked.lock().unwrap().contains(&session.id);
        // An agent that predates the sizes says 0 files: not written
        // ahead unless forked, as nothing bounds it.
        let small = files > 0
            && (workspace.fork_layers_ahead_max_bytes == 0
                || bytes <= workspace.fork_layers_ahead_max_bytes);
        let wanted = workspace.fork_layers
            && match workspace.fork_layers_ahead {
                ForkLayersAhead::Never => false,
                ForkLayersAhead::Forked => forked(),
                ForkLayersAhead::Always => small || forked(),
            };
        let engine = self.engines.iter().position(|e| e.name == session.engine);
        let (true, Some(engine)) = (wanted, engine) else {
            return;
        };
        self.layers
            .ahead
            .lock()
            .unwrap()
            .entry(session.id.clone())
            .and_modify(|a| a.wanted = checkpoint.to_string())
            .or_insert_with(|| Ahead {
                wanted: checkpoint.to_string(),
                written: None,
            });
        let metrics = self.engines[engine].sandbox.metrics().cloned();
        if let Some(m) = &metrics {
            m.fork_layers_ahead_pending.inc();
        }
        let manager = self.clone();
        let (id, checkpoint) = (session.id.clone(), checkpoint.to_string());
        self.cleanups.spawn(async move {
            manager.write_ahead(engine, &id, &checkpoint).await;
            if let Some(m) = &metrics {
                m.fork_layers_ahead_pending.dec();
            }
        });
    }

    /// Writes `checkpoint`'s layer for session `id` on `engine` (its own),
    /// unless it is no longer the one wanted (a later checkpoint came, the
    /// session went, the server is stopping) or a fork wrote it already;
    /// then releases the layer written ahead before it.
    async fn write_ahead(&self, engine: usize, id: &str, checkpoint: &str) {
        let _one = self.layers.writing.lock().await;
        let wanted = |manager: &Self| {
            manager
                .layers
                .ahead
                .lock()
                .unwrap()
                .get(id)
                .is_some_and(|a| a.wanted == checkpoint)
        };
        if !wanted(self) || self.stopping.is_cancelled() {
            return;
        }
        let Ok(session) = self.get(id) else {
            return;
        };
        let slot = self.layer_slot(id, checkpoint);
        let mut writing = slot.write_owned().await;
        // A deletion waits for the slots it finds held; one that began
        // before this slot was held is seen here.
        if writing.is_some() || session.deleting.load(Ordering::SeqCst) || !wanted(self) {
            return;
        }
        let built = async {
            let layer = self.new_layer(engine).await?;
            let (done, _) = tokio::sync::watch::channel(None);
            self.build_layer(engine, &session, checkpoint, &layer, done, true)
                .await?;
            Ok::<_, SessionError>(layer)
        }
        .await;
        let layer = match built {
            Ok(layer) => layer,
            Err(e) => {
                tracing::warn!(session = %id, checkpoint, error = %e, "could not write a fork layer ahead");
                return;
            }
        };
        *writing = Some(layer.clone());
        drop(writing);
        tracing::debug!(session = %id, checkpoint, layer, "fork layer written ahead");
        // The one before goes unless a fork stands on it; this one too if
        // the session was deleted meanwhile.
        let previous = match self.layers.ahead.lock().unwrap().get_mut(id) {
            Some(ahead) => ahead.written.replace(layer),
            None => Some(layer),
        };
        if let Some(previous) = previous {
            self.release_layer(engine, &previous).await;
        }
    }

    /// Waits until no layer of session `id`'s checkpoints is being written
    /// (by a first fork or ahead), which mounts its workspace and store: a
    /// session being deleted keeps its container until then (an engine
    /// leaves a volume in use when it removes a container's volumes). A
    /// write that takes its slot later sees the deletion and stops.
    pub(super) async fn layers_written_from(&self, id: &str) {
        let slots: Vec<LayerSlot> = self
            .layers
            .slots
            .lock()
            .unwrap()
            .iter()
            .filter(|((parent, _), _)| parent == id)
            .map(|(_, slot)| slot.clone())
            .collect();
        for slot in slots {
            drop(slot.write().await);
        }
    }

    /// For deleted session `id`'s clean-up: releases its last layer
    /// written ahead (unless a fork stands on it). Its other layers go
    /// with the last fork on them.
    pub(super) async fn settle_layers_of(&self, id: &str, engine: Option<usize>) {
        self.forget_unbuilt_slots(id);
        self.layers.forked.lock().unwrap().remove(id);
        let written = self
            .layers
            .ahead
            .lock()
            .unwrap()
            .remove(id)
            .and_then(|a| a.written);
        if let (Some(layer), Some(engine)) = (written, engine) {
            self.release_layer(engine, &layer).await;
        }
    }

    /// A new layer on `engine` (the parent's), its volumes made and empty,
    /// for [`Self::build_layer`] to fill; its name.
    pub async fn new_layer(&self, engine: usize) -> Result<String, SessionError> {
        let layer = format!("crogia-layer-{:016x}", rand::random::<u64>());
        let sandbox = &self.engines[engine].sandbox;
        if let Err(e) = sandbox.prepare_layer(&layer).await {
            if let Err(e) = sandbox.remove_layer(&layer).await {
                tracing::warn!(layer, error = %e, "could not remove a layer that failed");
            }
            return Err(e.into());
        }
        Ok(layer)
    }

    /// Writes checkpoint `checkpoint` of `parent` into `layer` (made by
    /// [`Self::new_layer`] on `engine`); `done` hears as soon as the copy
    /// is done or failed (see [`crate::sandbox::Sandbox::build_layer`]).
    /// Nothing of the layer remains on failure. `ahead`: written ahead of
    /// any fork (for the metrics).
    pub async fn build_layer(
        &self,
        engine: usize,
        parent: &Session,
        checkpoint: &str,
        layer: &str,
        done: LayerDone,
        ahead: bool,
    ) -> Result<(), SessionError> {
        let started = std::time::Instant::now();
        let built = self.engines[engine]
            .sandbox
            .build_layer(layer, &parent.container_id, checkpoint, done)
            .await
            .map_err(SandboxError::from)?;
        if let Some(m) = self.engines[engine].sandbox.metrics() {
            m.fork_layer_built(ahead);
        }
        tracing::debug!(
            layer,
            ahead,
            objects = built.objects,
            bytes = built.bytes,
            ms = started.elapsed().as_millis() as u64,
            "fork layer built"
        );
        Ok(())
    }

    /// Removes `layer` from `engine` unless a session's workspace stands on
    /// it (in this server or, sharing its database, another), and forgets
    /// it. Called once a session on it is deleted, or a fork that built it
    /// failed.
    pub async fn release_layer(&self, engine: usize, layer: &str) {
        let mut slots: Vec<((String, String), LayerSlot)> = self
            .layers
            .slots
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // Taken in one order by every release, so that two at once never
        // each hold what the other waits for.
        slots.sort_by(|a, b| a.0.cmp(&b.0));
        // A fork being made on it holds its slot: wait for it.
        let mut held = Vec::new();
        for (key, slot) in slots {
            let guard = slot.write_owned().await;
            if guard.as_deref() == Some(layer) {
                held.push((key, guard));
            }
        }
        match self.layer_in_use(layer).await {
            Ok(false) => {}
            Ok(true) => return,
            Err(e) => {
                tracing::warn!(layer, error = %e, "could not tell whether a layer is in use; kept");
                return;
            }
        }
        for (key, mut guard) in held {
            *guard = None;
            self.layers.slots.lock().unwrap().remove(&key);
        }
        match self.engines[engine].sandbox.remove_layer(layer).await {
            Ok(()) => tracing::debug!(layer, "fork layer removed"),
            Err(e) => tracing::warn!(layer, error = %e, "could not remove a fork layer"),
        }
    }

    /// Whether a stored session's workspace stands on `layer`.
    async fn layer_in_use(&self, layer: &str) -> Result<bool, SessionError> {
        let in_memory = self
            .sessions
            .read()
            .unwrap()
            .values()
            .any(|s| s.caps.workspace().layer() == Some(layer));
        if in_memory {
            return Ok(true);
        }
        Ok(self
            .store
            .sessions()
            .await?
            .iter()
            .any(|s| Workspace::record_on_layer(&s.workdir, layer)))
    }

    /// Removes the layers this server built that no stored session stands
    /// on any more (a server that stopped before it could), at start.
    pub(super) async fn sweep_layers(&self) {
        let Ok(instance) = self.store.instance_id().await else {
            return;
        };
        let labels = [
            format!("{LABEL_INSTANCE}={instance}"),
            format!("{LABEL_SERVER}={}", self.store.server()),
        ];
        let Ok(records) = self.store.sessions().await else {
            return;
        };
        for e in &self.engines {
            let Ok(layers) = e.sandbox.layers_by_labels(&[&labels[0], &labels[1]]).await else {
                continue;
            };
            for layer in layers {
                if records
                    .iter()
                    .any(|s| Workspace::record_on_layer(&s.workdir, &layer))
                {
                    continue;
                }
                if let Err(err) = e.sandbox.remove_layer(&layer).await {
                    tracing::warn!(layer, error = %err, "could not remove an unused fork layer");
                }
            }
        }
    }
}
