//! What other servers do: with several servers on one PostgreSQL, a task
//! runs on one of them while WebSocket clients may follow it from any, and
//! a session made or deleted on one is known or gone on all. Each server
//! listens to the database's announcements: of stored events (the session's
//! log sends its subscribers what they have not had), and of sessions made
//! and deleted (taken up, or dropped).

use std::sync::Arc;
use std::time::Duration;

use super::{Handed, SessionManager};
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
                // Whatever happened while nobody listened (since the
                // sessions were loaded, the first time).
                catch_up_all(&weak).await;
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
                        Ok(Notice::Created(id)) => {
                            if let Err(e) = manager.adopt(&id).await {
                                tracing::warn!(session = %id, error = %e, "could not take up a session another server made");
                            }
                        }
                        Ok(Notice::Deleted(id)) => {
                            manager.forget(&id);
                            manager.hand(Handed::Deleted(id));
                        }
                        Ok(Notice::Work(work)) => manager.hand(Handed::Work(work)),
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

/// Takes up and drops the sessions other servers made and deleted, and
/// sends every followed session's subscribers what the store holds.
async fn catch_up_all(manager: &std::sync::Weak<SessionManager>) {
    let Some(manager) = manager.upgrade() else {
        return;
    };
    if let Err(e) = manager.resync().await {
        tracing::warn!(error = %e, "could not compare the sessions known here with the database's");
    }
    // Work handed over meanwhile is found by rescanning.
    manager.hand(Handed::Rescan);
    for session in manager.list() {
        if session.events.subscribers() > 0
            && let Err(e) = session.events.catch_up(None).await
        {
            tracing::warn!(session = %session.id, error = %e, "could not catch up on stored events");
        }
    }
}
