//! Fork layers: a checkpoint's files written once into a volume, that
//! forks of it then use, copy on write, as the lower directory of an
//! overlay volume each (the engine's `local` driver mounts it), instead of
//! each writing a copy of its own.
//!
//! A layer is two volumes on the engine: `<layer>`, the checkpoint's files,
//! and `<layer>.store`, the checkpoint store that wrote them (the history's
//! objects, and where among the files each file blob is), both of which
//! each fork's store reads from, mounted read-only. A container of its own
//! writes them, from the parent's workspace and store mounted read-only
//! (each file checked against the checkpoint's blob id), and is removed as
//! soon as it is done: nothing that runs can write in a layer after it is
//! built, and no container mounts it writable, so a fork never sees
//! another's or its parent's changes.

use std::collections::HashMap;

use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::InspectContainerOptions;
use crogia_sandbox_agent::protocol;
use crogia_sandbox_agent::{
    CHECKPOINT_BASE, CHECKPOINT_BASE_FILES, CHECKPOINT_VOLUME, LAYER_SOURCE_BASE,
    LAYER_SOURCE_BASE_FILES, LAYER_SOURCE_VOLUME, LAYER_SOURCE_WORKSPACE,
};

use super::agent::AgentError;
use super::{Imported, Sandbox, SandboxError};
use crate::workspace::{CONTAINER_ROOT, Workspace};

/// Label on a layer's volumes (and the container writing them), holding
/// the layer's name.
pub const LABEL_LAYER: &str = "crogia.layer";

/// Whether a layer being written is done, as the containers to stand on
/// it wait for it: `None` until it is, then `Ok`, or why it will not be.
pub type LayerBuilt = tokio::sync::watch::Receiver<Option<Result<(), String>>>;

/// The builder's side of [`LayerBuilt`].
pub type LayerDone = tokio::sync::watch::Sender<Option<Result<(), String>>>;

/// Waits until the layer `built` follows is done; an error if it will
/// not be (or its builder went away without saying).
pub(super) async fn wait_built(mut built: LayerBuilt) -> Result<(), SandboxError> {
    let not_built =
        |why: &str| SandboxError::Engine(format!("its fork layer was not built: {why}"));
    match built.wait_for(Option::is_some).await {
        Ok(done) => match done.as_ref() {
            Some(Ok(())) => Ok(()),
            Some(Err(why)) => Err(not_built(why)),
            None => unreachable!("waited for an answer"),
        },
        Err(_) => Err(not_built("its builder went away")),
    }
}

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
    /// Writes checkpoint `checkpoint` of the session whose container is
    /// `parent` (on this engine) into the new layer `layer`: its files in
    /// the layer's volume, its objects (with its history) in the layer's
    /// store. A container of its own does it, with the parent's workspace
    /// and store mounted read-only beside the layer's: its agent copies
    /// each file from the parent's workspace where it still holds what the
    /// checkpoint recorded (checked by its blob id), writes the others from
    /// the parent's objects, and copies the history's objects, each
    /// checked ([`crogia_sandbox_agent::checkpoint::Store::copy_checkpoint`]).
    /// Nothing passes through the server. `done` hears as soon as the
    /// copy is (`Ok` once the builder's agent has answered: it writes
    /// nothing after that, so containers on the layer may start while the
    /// builder is removed) or why it failed. The container is removed
    /// before this returns, whatever happened; on failure so is the layer.
    /// The layer's volumes are those [`Self::prepare_layer`] made.
    pub async fn build_layer(
        &self,
        layer: &str,
        parent: &str,
        checkpoint: &str,
        done: LayerDone,
    ) -> Result<Imported, AgentError> {
        let builder = self.layer_builder(layer);
        let started = std::time::Instant::now();
        let ms = |at: std::time::Instant| at.elapsed().as_millis() as u64;
        let built = async {
            let sources = self.layer_sources(parent).await?;
            let container = builder
                .create_container(
                    layer,
                    &Workspace::Volume(layer.to_string()),
                    Some(&layer_store(layer)),
                    sources,
                    None,
                )
                .await?;
            let asked = protocol::CheckpointLayer {
                checkpoint: checkpoint.to_string(),
            };
            let running = ms(started);
            let copying = std::time::Instant::now();
            let copied = builder
                .agent_call(&container, protocol::CHECKPOINT_LAYER, &asked)
                .await;
            let copy = ms(copying);
            done.send_replace(Some(copied.as_ref().map(drop).map_err(ToString::to_string)));
            // Whatever it did, it ends here: nothing runs that could write
            // in the layer once forks stand on it.
            let removing = std::time::Instant::now();
            let removed = builder.remove(&container).await;
            tracing::debug!(
                layer,
                running,
                copy,
                removed = ms(removing),
                "fork layer's builder done"
            );
            let copied = copied?;
            removed?;
            Ok::<_, AgentError>(copied)
        }
        .await;
        if let Err(e) = &built {
            // Unless it heard already (the copy was done, the removal failed).
            done.send_if_modified(|state| {
                let unsaid = state.is_none();
                if unsaid {
                    *state = Some(Err(e.to_string()));
                }
                unsaid
            });
            if let Err(e) = self.remove_layer(layer).await {
                tracing::warn!(layer, error = %e, "could not remove a layer that failed");
            }
        }
        built
    }

    /// This sandbox as it makes `layer`'s builder (and the layer's volumes):
    /// labelled with the layer, and with every CPU, since it runs nothing
    /// but this server's agent copying.
    fn layer_builder(&self, layer: &str) -> Sandbox {
        let mut builder = self.clone().with_label(LABEL_LAYER, layer);
        builder.config.cpus = 0.0;
        builder
    }

    /// Makes `layer`'s volumes, empty, for [`Self::build_layer`] to fill:
    /// made first, workspaces can be made on the layer while it is written.
    pub async fn prepare_layer(&self, layer: &str) -> Result<(), SandboxError> {
        let builder = self.layer_builder(layer);
        let labels = builder.labels_for(layer);
        builder.create_volume(layer, &labels).await?;
        builder.create_volume(&layer_store(layer), &labels).await
    }

    /// Binds that give a layer's builder what container `parent` has at
    /// its workspace, its checkpoint volume and its base's store and files
    /// (if it stands on a layer itself), read-only.
    async fn layer_sources(&self, parent: &str) -> Result<Vec<String>, SandboxError> {
        let docker = self.engine.client().await?;
        let info = docker
            .inspect_container(parent, None::<InspectContainerOptions>)
            .await
            .map_err(|e| self.engine.classify(e))?;
        let mut binds = Vec::new();
        for mount in info.mounts.unwrap_or_default() {
            let target = match mount.destination.as_deref() {
                Some(CONTAINER_ROOT) => LAYER_SOURCE_WORKSPACE,
                Some(CHECKPOINT_VOLUME) => LAYER_SOURCE_VOLUME,
                Some(CHECKPOINT_BASE) => LAYER_SOURCE_BASE,
                Some(CHECKPOINT_BASE_FILES) => LAYER_SOURCE_BASE_FILES,
                _ => continue,
            };
            let source = match mount.typ.as_deref() {
                Some("volume") => mount.name,
                Some("bind") => mount.source,
                _ => None,
            };
            // A name or path that would end the bind's fields early is refused.
            match source {
                Some(source) if !source.is_empty() && !source.contains([':', ',', '\n']) => {
                    binds.push(format!("{source}:{target}:ro"));
                }
                _ => {
                    return Err(SandboxError::Engine(format!(
                        "container {parent}'s mount at {target} cannot be named in a bind"
                    )));
                }
            }
        }
        if !binds.iter().any(|b| b.contains(LAYER_SOURCE_VOLUME)) {
            return Err(SandboxError::Engine(format!(
                "container {parent} has no checkpoint volume"
            )));
        }
        Ok(binds)
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
