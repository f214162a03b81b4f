//! Each session's workspace changes, as `file_changed` events: one watch
//! per session, through its container's agent (which coalesces and bounds
//! them), kept up across agent restarts and broken links, and ended when the
//! session is deleted or breaks, or the server stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{Session, SessionManager};
use crate::events::EventKind;

impl SessionManager {
    /// Publishes the workspace changes of `session` until it goes away
    /// (`workspace.file_events`).
    pub(super) fn spawn_file_events(&self, session: &Arc<Session>, until: &CancellationToken) {
        if !self.config.workspace.file_events {
            return;
        }
        let sandbox = self.sandbox_of(session);
        let container = session.container_id.clone();
        let warned = Arc::new(AtomicBool::new(false));
        self.keep_following(session, until, move |weak| {
            let sandbox = sandbox.clone();
            let container = container.clone();
            let warned = warned.clone();
            async move {
                let changes = match sandbox.watch_files(&container).await {
                    Ok(changes) => changes,
                    Err(e) => {
                        // Once loudly (say, the host's inotify limits are
                        // reached: fs.inotify.max_user_instances), then
                        // quietly; quietly too while the session's container
                        // is being removed (stopping it ends the watch).
                        let deleting = weak
                            .upgrade()
                            .is_some_and(|s| s.deleting.load(Ordering::SeqCst));
                        if !deleting && !warned.swap(true, Ordering::Relaxed) {
                            tracing::warn!(container, error = %e, "cannot watch the workspace; retrying");
                        } else {
                            tracing::debug!(container, error = %e, "cannot watch the workspace");
                        }
                        return false;
                    }
                };
                let mut changes = std::pin::pin!(changes);
                let mut progressed = false;
                while let Some(batch) = changes.next().await {
                    let Some(session) = weak.upgrade() else {
                        break;
                    };
                    progressed = true;
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
                progressed
            }
        });
    }

    /// Ends every session's file watch, network and terminal (the server
    /// is stopping).
    pub fn stop_file_events(&self) {
        self.stopping.cancel();
    }

    /// Cancelled when the server stops: what streams from a sandbox for as
    /// long as a client wants (a terminal) ends then.
    pub fn stopping(&self) -> tokio_util::sync::CancellationToken {
        self.stopping.clone()
    }
}
