//! The warm pool: containers started ahead of time (`sandbox.pool_size`),
//! each with its session id and workspace already chosen (a container's
//! mounts and labels are fixed when it is created), so creating a session
//! takes a ready one instead of waiting for the engine.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{SessionError, SessionManager};
use crate::sandbox::{LABEL_INSTANCE, LABEL_SESSION, LayerBuilt};
use crate::workspace::Workspace;

/// Label on containers created for the warm pool.
const LABEL_POOL: &str = "crogia.pool";

/// A container started ahead of time, waiting in the warm pool to become a
/// session.
#[derive(Debug)]
pub(super) struct Prepared {
    pub(super) id: String,
    pub(super) workspace: Workspace,
    pub(super) container_id: String,
    /// The engine it is on, by index.
    pub(super) engine: usize,
}

impl SessionManager {
    /// Removes pool containers a previous run of this server left unused
    /// (they belong to no session) and their workspaces. Another server's
    /// (sharing the database, hence the instance) are its own.
    pub(super) async fn discard_stale_pool(&self) {
        let Ok(instance) = self.store.instance_id().await else {
            return;
        };
        let filter = [
            format!("{LABEL_INSTANCE}={instance}"),
            format!("{LABEL_POOL}=true"),
        ];
        for (engine, e) in self.engines.iter().enumerate() {
            let Ok(stale) = e.sandbox.find_by_labels(&[&filter[0], &filter[1]]).await else {
                continue;
            };
            for c in stale {
                if !super::made_here(&c.labels, self.store.server()) {
                    continue;
                }
                let id = c.labels.get(LABEL_SESSION).cloned().unwrap_or_default();
                if self.sessions.read().unwrap().contains_key(&id) {
                    continue;
                }
                let _ = e.sandbox.remove(&c.id).await;
                if !id.is_empty()
                    && let Ok(workspace) = self.workspace_for(engine, &id)
                {
                    let _ = e.sandbox.remove_workspace(&workspace).await;
                }
            }
        }
    }

    /// Tops the warm pool up to `sandbox.pool_size` in the background.
    pub(super) fn refill_pool(self: Arc<Self>) {
        let size = self.config.sandbox.pool_size;
        if size == 0 || self.refilling.swap(true, Ordering::SeqCst) {
            return;
        }
        tokio::spawn(async move {
            while self.pool.lock().unwrap().len() < size {
                let prepared = match self.place() {
                    Ok(engine) => self.prepare(engine, None).await,
                    Err(e) => Err(e),
                };
                match prepared {
                    Ok(p) => self.pool.lock().unwrap().push_back(p),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not refill the warm pool");
                        break;
                    }
                }
            }
            self.refilling.store(false, Ordering::SeqCst);
        });
    }

    /// A fresh id, workspace (over fork layer `layer`, if given) and
    /// running container on `engine`.
    pub(super) async fn prepare(
        &self,
        engine: usize,
        layer: Option<(&str, Option<LayerBuilt>)>,
    ) -> Result<Prepared, SessionError> {
        let id = self.fresh_id();
        let pool_label = self.config.sandbox.pool_size > 0;
        let e = &self.engines[engine];
        let result = async {
            let (workspace, built) = match layer {
                Some((layer, built)) => (Workspace::layered_for(&id, layer), built),
                None => (self.workspace_for(engine, &id)?, None),
            };
            let sandbox = if pool_label && workspace.layer().is_none() {
                e.sandbox.clone().with_label(LABEL_POOL, "true")
            } else {
                e.sandbox.clone()
            };
            let created = match built {
                Some(built) => sandbox.create_on_layer(&id, &workspace, built).await,
                None => sandbox.create(&id, &workspace).await,
            };
            match created {
                Ok(container_id) => {
                    e.watch.record(&container_id, "running");
                    // The link to its agent, made now: a session's first
                    // request (its first checkpoint) does not wait for it.
                    if let Err(e) = e.sandbox.stat(&container_id, ".").await {
                        tracing::debug!(container = %container_id, error = %e, "the agent did not answer yet");
                    }
                    Ok(Prepared {
                        id: id.clone(),
                        workspace,
                        container_id,
                        engine,
                    })
                }
                Err(err) => {
                    let _ = e.sandbox.remove_workspace(&workspace).await;
                    Err(err.into())
                }
            }
        }
        .await;
        self.reserved.lock().unwrap().remove(&id);
        result
    }

    /// Where session `id`'s workspace on `engine` goes: a directory under
    /// the data directory (made here), or a volume on an engine that is not
    /// local.
    pub(super) fn workspace_for(&self, engine: usize, id: &str) -> Result<Workspace, SessionError> {
        if self.engines[engine].sandbox.is_local() {
            Workspace::create(self.workspaces_dir.join(format!("session_{id}")))
                .map_err(|e| SessionError::Workspace(e.to_string()))
        } else {
            Ok(Workspace::volume_for(id))
        }
    }

    /// An id no session, pool entry or preparation uses; reserved until
    /// [`Self::prepare`] is done with it.
    fn fresh_id(&self) -> String {
        loop {
            let id = format!("{:08x}", rand::random::<u32>());
            let taken = self.sessions.read().unwrap().contains_key(&id)
                || self.pool.lock().unwrap().iter().any(|p| p.id == id);
            if !taken && self.reserved.lock().unwrap().insert(id.clone()) {
                return id;
            }
        }
    }

    /// A ready container on `engine` from the pool, if one is still
    /// running.
    pub(super) fn take_prepared(&self, engine: usize) -> Option<Prepared> {
        let mut pool = self.pool.lock().unwrap();
        while let Some(i) = pool.iter().position(|p| p.engine == engine) {
            let p = pool.remove(i).expect("found above");
            let e = &self.engines[engine];
            if e.watch.status(&p.container_id).as_deref() == Some("running") {
                return Some(p);
            }
            tracing::info!(container = %p.container_id, "discarding a pool container that stopped");
            let sandbox = e.sandbox.clone();
            tokio::spawn(async move {
                let _ = sandbox.remove(&p.container_id).await;
                let _ = sandbox.remove_workspace(&p.workspace).await;
            });
        }
        None
    }
}
