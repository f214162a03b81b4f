//! Fork layers, as sessions use them ([`crate::sandbox`]'s `layers` makes
//! and removes them): the first fork of a checkpoint builds its layer on
//! the parent's engine, later forks of the same checkpoint stand on it
//! too, and it is removed once no session's workspace stands on it.
//!
//! A layer is kept per (parent session, checkpoint), never shared between
//! two parents, and known only to the server that built it: after a
//! restart, a fork builds a new one, and the old stays as long as the
//! sessions standing on it (their records name it).

use std::collections::HashMap;
use std::sync::Arc;

use super::{Session, SessionError, SessionManager};
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
    /// Nothing of the layer remains on failure.
    pub async fn build_layer(
        &self,
        engine: usize,
        parent: &Session,
        checkpoint: &str,
        layer: &str,
        done: LayerDone,
    ) -> Result<(), SessionError> {
        let started = std::time::Instant::now();
        let built = self.engines[engine]
            .sandbox
            .build_layer(layer, &parent.container_id, checkpoint, done)
            .await
            .map_err(SandboxError::from)?;
        tracing::debug!(
            layer,
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
        let slots: Vec<((String, String), LayerSlot)> = self
            .layers
            .slots
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
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
