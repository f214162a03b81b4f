//! Following the sessions' containers: a session whose container vanishes
//! (now, or while the server was down) turns to `error`, with the reason
//! kept in its record.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Session, SessionManager};
use crate::sandbox::REMOVED;

impl SessionManager {
    /// Marks sessions on `engine` whose containers vanish, now and
    /// whenever it happens.
    pub(super) fn spawn_reconciler(self: Arc<Self>, engine: usize) {
        let weak = Arc::downgrade(&self);
        let mut changes = self.engines[engine].watch.subscribe();
        drop(self);
        tokio::spawn(async move {
            // Sessions whose containers vanished while we were down: checked
            // once the watch has synced with the engine.
            loop {
                let Some(manager) = weak.upgrade() else {
                    return;
                };
                let watch = &manager.engines[engine].watch;
                if watch.is_synced() {
                    let name = &manager.engines[engine].name;
                    let vanished: Vec<Arc<Session>> = manager
                        .list()
                        .into_iter()
                        .filter(|s| {
                            &s.engine == name
                                && watch.status(&s.container_id).as_deref() == Some(REMOVED)
                        })
                        .collect();
                    for s in vanished {
                        manager.mark_broken(&s, "its container no longer exists (removed while the server was down)").await;
                    }
                    manager.report_orphans(engine);
                    break;
                }
                drop(manager);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            loop {
                let change = match changes.recv().await {
                    Ok(change) => change,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                let Some(manager) = weak.upgrade() else {
                    return;
                };
                if change.status != REMOVED {
                    continue;
                }
                let name = &manager.engines[engine].name;
                let owner = manager
                    .list()
                    .into_iter()
                    .find(|s| s.container_id == change.id && &s.engine == name);
                if let Some(s) = owner
                    && !s.deleting.load(Ordering::SeqCst)
                {
                    manager
                        .mark_broken(&s, "its container was removed outside Crogia")
                        .await;
                }
            }
        });
    }

    async fn mark_broken(&self, session: &Session, reason: &str) {
        if !session.caps.health().mark_broken(reason) {
            return;
        }
        tracing::warn!(session = %session.id, container = %session.container_id, reason, "session is now in error");
        if let Err(e) = self.store.set_error(&session.id, Some(reason)).await {
            tracing::error!(session = %session.id, error = %e, "could not persist the session's error");
        }
    }

    /// Logs containers of this server that belong to no session; `crogia gc`
    /// removes them.
    fn report_orphans(&self, engine: usize) {
        let known: Vec<String> = self.list().iter().map(|s| s.container_id.clone()).collect();
        for id in self.engines[engine].watch.containers() {
            if !known.contains(&id) {
                tracing::warn!(container = %id, "container carries this server's label but belongs to no session; remove it with `crogia gc`");
            }
        }
    }
}
