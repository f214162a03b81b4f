//! Each session's workspace changes, as `file_changed` events: one watch
//! per session, through its container's agent (which coalesces and bounds
//! them), kept up across agent restarts and broken links, and ended when the
//! session is deleted or breaks, or the server stops.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::{Session, SessionManager};
use crate::events::EventKind;

/// Longest wait before watching again after the watch failed or ended.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl SessionManager {
    /// Publishes the workspace changes of `session` until it goes away
    /// (`workspace.file_events`).
    pub(super) fn spawn_file_events(&self, session: &Arc<Session>) {
        if !self.config.workspace.file_events {
            return;
        }
        let weak = Arc::downgrade(session);
        let sandbox = self.sandbox.clone();
        let container = session.container_id.clone();
        let deleted = session.deleted.clone();
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            let mut warned = false;
            loop {
                let follow = async {
                    let changes = match sandbox.watch_files(&container).await {
                        Ok(changes) => changes,
                        // Once loudly (say, the host's inotify limits are
                        // reached: fs.inotify.max_user_instances), then quietly.
                        Err(e) if !warned => {
                            warned = true;
                            tracing::warn!(container, error = %e, "cannot watch the workspace; retrying");
                            return;
                        }
                        Err(e) => {
                            tracing::debug!(container, error = %e, "cannot watch the workspace");
                            return;
                        }
                    };
                    let mut changes = std::pin::pin!(changes);
                    while let Some(batch) = changes.next().await {
                        let Some(session) = weak.upgrade() else {
                            return;
                        };
                        backoff = Duration::from_secs(1);
                        for change in batch {
                            let kind = EventKind::FileChanged {
                                path: change.path,
                                kind: change.kind,
                            };
                            if let Err(e) = session.events.publish(kind).await {
                                tracing::warn!(session = %session.id, error = %e, "file event not recorded");
                            }
                        }
                    }
                };
                tokio::select! {
                    () = follow => {}
                    () = deleted.cancelled() => return,
                    () = stopping.cancelled() => return,
                }
                match weak.upgrade() {
                    Some(session) if session.error().is_none() => {}
                    // Gone, or broken for good: nothing more will change.
                    _ => return,
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = deleted.cancelled() => return,
                    () = stopping.cancelled() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
    }

    /// Ends every session's file watch and terminal (the server is stopping).
    pub fn stop_file_events(&self) {
        self.stopping.cancel();
    }

    /// Cancelled when the server stops: what streams from a sandbox for as
    /// long as a client wants (a terminal) ends then.
    pub fn stopping(&self) -> tokio_util::sync::CancellationToken {
        self.stopping.clone()
    }
}
