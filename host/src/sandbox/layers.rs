//! Fork layers: a checkpoint's files written once into a volume, that
//! forks of it then use, copy on write, as the lower directory of an
//! overlay volume each (the engine's `local` driver mounts it), instead of
//! each writing a copy of its own.
//!
//! A layer is two volumes on the engine: `<layer>`, the checkpoint's files,
//! and `<layer>.store`, the checkpoint store that wrote them (its objects,
//! which each fork's store reads from, mounted read-only). A container of
//! its own writes them, from the parent's export checked object by object
//! as a fork's import is, and is removed as soon as it is done: nothing
//! that runs can write in a layer after it is built, and no container
//! mounts its files at all (only overlays name them), so a fork never sees
//! another's or its parent's changes.

use std::collections::HashMap;

use bollard::models::VolumeCreateRequest;

use super::agent::AgentError;
use super::{CheckpointExport, Imported, Sandbox, SandboxError};
use crate::workspace::Workspace;

/// Label on a layer's volumes (and the container writing them), holding
/// the layer's name.
pub const LABEL_LAYER: &str = "crogia.layer";

/// The volume holding the store that wrote `layer`.
pub fn layer_store(layer: &str) -> String {
    format!("{layer}.store")
}

/// The volume of a layered workspace's upper directory (what the session
/// changed).
pub(super) fn upper(volume: &str) -> String {
    format!("{volume}.upper")
}

/// The volume of a layered workspace's work directory (the overlay's own).
pub(super) fn work(volume: &str) -> String {
    format!("{volume}.work")
}

impl Sandbox {
    /// Writes checkpoint `export` into the new layer `layer`: its files in
    /// the layer's volume as a fork's import writes them, its objects in
    /// the layer's store, each checked against its id. The container
    /// that does it is removed before this returns, whatever happened; on
    /// failure so is the layer.
    pub async fn build_layer(
        &self,
        layer: &str,
        export: CheckpointExport,
    ) -> Result<Imported, AgentError> {
        let builder = self.clone().with_label(LABEL_LAYER, layer);
        let built = async {
            let container = builder
                .create_container(
                    layer,
                    &Workspace::Volume(layer.to_string()),
                    Some(&layer_store(layer)),
                )
                .await?;
            let imported = builder.import_checkpoint(&container, export, true).await;
            // Whatever it did, it ends here: nothing runs that could write
            // in the layer once forks stand on it.
            let removed = builder.remove(&container).await;
            let imported = imported?;
            removed?;
            Ok::<_, AgentError>(imported)
        }
        .await;
        if built.is_err()
            && let Err(e) = self.remove_layer(layer).await
        {
            tracing::warn!(layer, error = %e, "could not remove a layer that failed");
        }
        built
    }

    /// Removes a layer's volumes (once no workspace stands on it); those
    /// already gone are fine.
    pub async fn remove_layer(&self, layer: &str) -> Result<(), SandboxError> {
        self.remove_volume(&layer_store(layer)).await?;
        self.remove_volume(layer).await
    }

    /// Names of the layers on this engine carrying every one of `labels`.
    pub async fn layers_by_labels(&self, labels: &[&str]) -> Result<Vec<String>, SandboxError> {
        let mut names: Vec<String> = self
            .volumes_by_labels(labels)
            .await?
            .into_iter()
            .filter_map(|(_, labels)| labels.get(LABEL_LAYER).cloned())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Makes `volume`, an overlay over `layer`'s files, with an upper and
    /// a work directory of its own (two more volumes), all labelled
    /// `labels`. The engine mounts it when a container using it starts.
    pub(super) async fn create_layered_volume(
        &self,
        volume: &str,
        layer: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), SandboxError> {
        let (upper, work) = (upper(volume), work(volume));
        self.create_volume(&upper, labels).await?;
        self.create_volume(&work, labels).await?;
        let lower = self.mountpoint(layer).await?;
        let options = format!(
            "lowerdir={lower},upperdir={},workdir={},redirect_dir=on",
            self.mountpoint(&upper).await?,
            self.mountpoint(&work).await?,
        );
        let request = VolumeCreateRequest {
            name: Some(volume.to_string()),
            driver: Some("local".into()),
            driver_opts: Some(HashMap::from([
                ("type".to_string(), "overlay".to_string()),
                ("device".to_string(), "overlay".to_string()),
                ("o".to_string(), options),
            ])),
            labels: Some(labels.clone()),
            ..Default::default()
        };
        let docker = self.engine.client().await?;
        docker
            .create_volume(request)
            .await
            .map(drop)
            .map_err(|e| self.engine.classify(e))
    }

    /// Where the engine keeps volume `name`'s files on its own machine.
    async fn mountpoint(&self, name: &str) -> Result<String, SandboxError> {
        let docker = self.engine.client().await?;
        let volume = docker
            .inspect_volume(name)
            .await
            .map_err(|e| self.engine.classify(e))?;
        // A path that would end the mount's options early is refused.
        if volume.mountpoint.is_empty() || volume.mountpoint.contains([',', ':', '\n']) {
            return Err(SandboxError::Engine(format!(
                "volume {name} is at {:?}, which an overlay cannot name",
                volume.mountpoint
            )));
        }
        Ok(volume.mountpoint)
    }
}
