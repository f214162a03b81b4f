//! Events other servers store: with several servers on one PostgreSQL, a
//! task runs on one of them while WebSocket clients may follow it from any.
//! Each server listens to the database's announcements of stored events
//! and has the session's log send its subscribers what they have not had.

use std::sync::Arc;
use std::time::Duration;

use super::SessionManager;
use crate::store::{Notice, Store};

/// Pause before listening again after the database could not be reached.
const RETRY: Duration = Duration::from_secs(1);

impl SessionManager {
    /// Follows the store's announcements (PostgreSQL only) until the server
    /// stops.
    pub(super) fn spawn_event_notices(self: Arc<Self>) {
        let weak = Arc::downgrade(&self);
        let store: Store = self.store.clone();
        let stopping = self.stopping.clone();
        drop(self);
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let mut notices = match store.event_notices().await {
                    Ok(Some(notices)) => notices,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for events stored by other servers; retrying");
                        tokio::select! {
                            _ = stopping.cancelled() => return,
                            _ = tokio::time::sleep(RETRY) => continue,
                        }
                    }
                };
                // Whatever was stored while nobody listened.
                if !first {
                    catch_up_all(&weak).await;
                }
                first = false;
                loop {
                    let notice = tokio::select! {
                        _ = stopping.cancelled() => return,
                        notice = notices.next() => notice,
                    };
                    let Some(manager) = weak.upgrade() else {
                        return;
                    };
                    match notice {
                        Ok(Notice::Stored { session_id, last }) => {
                            if let Ok(session) = manager.get(&session_id)
                                && let Err(e) = session.events.catch_up(Some(last)).await
                            {
                                tracing::warn!(session = %session_id, error = %e, "could not send events stored elsewhere");
                            }
                        }
                        Ok(Notice::Missed) => {
                            drop(manager);
                            catch_up_all(&weak).await;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "lost the database's event announcements; listening again");
                            break;
                        }
                    }
                }
            }
        });
    }
}

/// Sends every followed session's subscribers what the store holds.
async fn catch_up_all(manager: &std::sync::Weak<SessionManager>) {
    let Some(manager) = manager.upgrade() else {
        return;
    };
    for session in manager.list() {
        if session.events.subscribers() > 0
            && let Err(e) = session.events.catch_up(None).await
        {
            tracing::warn!(session = %session.id, error = %e, "could not catch up on stored events");
        }
    }
}
