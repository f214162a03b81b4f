//! The warm pool: containers started ahead of time (`sandbox.pool_size`),
//! each with its session id and workspace already chosen (a container's
//! mounts and labels are fixed when it is created), so creating a session
//! takes a ready one instead of waiting for the engine.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{SessionError, SessionManager};
use crate::sandbox::{LABEL_INSTANCE, LABEL_SESSION};
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
        let Ok(stale) = self.sandbox.find_by_labels(&[&filter[0], &filter[1]]).await else {
            return;
        };
        for c in stale {
            if !super::made_here(&c.labels, self.store.server()) {
                continue;
            }
            let id = c.labels.get(LABEL_SESSION).cloned().unwrap_or_default();
            if self.sessions.read().unwrap().contains_key(&id) {
                continue;
            }
            let _ = self.sandbox.remove(&c.id).await;
            if !id.is_empty()
                && let Ok(workspace) = self.workspace_for(&id)
            {
                let _ = self.sandbox.remove_workspace(&workspace).await;
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
                match self.prepare().await {
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

    /// A fresh id, workspace and running container.
    pub(super) async fn prepare(&self) -> Result<Prepared, SessionError> {
        let id = self.fresh_id();
        let pool_label = self.config.sandbox.pool_size > 0;
        let result = async {
            let workspace = self.workspace_for(&id)?;
            let sandbox = if pool_label {
                self.sandbox.clone().with_label(LABEL_POOL, "true")
            } else {
                self.sandbox.clone()
            };
            match sandbox.create(&id, &workspace).await {
                Ok(container_id) => {
                    self.watch.record(&container_id, "running");
                    // The link to its agent, made now: a session's first
                    // request (its first checkpoint) does not wait for it.
                    if let Err(e) = self.sandbox.stat(&container_id, ".").await {
                        tracing::debug!(container = %container_id, error = %e, "the agent did not answer yet");
                    }
                    Ok(Prepared {
                        id: id.clone(),
                        workspace,
                        container_id,
                    })
                }
                Err(e) => {
                    let _ = self.sandbox.remove_workspace(&workspace).await;
                    Err(e.into())
                }
            }
        }
        .await;
        self.reserved.lock().unwrap().remove(&id);
        result
    }

    /// Where session `id`'s workspace goes: a directory under the data
    /// directory (made here), or a volume on an engine that is not local.
    pub(super) fn workspace_for(&self, id: &str) -> Result<Workspace, SessionError> {
        if self.sandbox.is_local() {
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

    /// A ready container from the pool, if one is still running.
    pub(super) fn take_prepared(&self) -> Option<Prepared> {
        let mut pool = self.pool.lock().unwrap();
        while let Some(p) = pool.pop_front() {
            if self.watch.status(&p.container_id).as_deref() == Some("running") {
                return Some(p);
            }
            tracing::info!(container = %p.container_id, "discarding a pool container that stopped");
            let sandbox = self.sandbox.clone();
            tokio::spawn(async move {
                let _ = sandbox.remove(&p.container_id).await;
                let _ = sandbox.remove_workspace(&p.workspace).await;
            });
        }
        None
    }
}
