//! Following a stream from a session's sandbox agent for as long as the
//! session lives: again after the agent restarts or the link breaks (with
//! a growing pause while it keeps failing), until the session is deleted or
//! breaks for good, or the server stops.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Session, SessionManager};

/// Longest pause before following again after it failed or ended.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl SessionManager {
    /// Follows `session`'s sandbox (its file events and egress) from this
    /// server, unless it does already.
    pub(super) fn follow_sandbox(&self, session: &Arc<Session>) {
        if let Some(until) = session.start_following() {
            self.spawn_file_events(session, &until);
            self.spawn_egress(session, &until);
        }
    }

    /// Runs `follow` over and over for `session` until `until` is
    /// cancelled. `follow` returns whether it got anywhere (the pause then
    /// starts short again).
    pub(super) fn keep_following<F, Fut>(
        &self,
        session: &Arc<Session>,
        until: &CancellationToken,
        mut follow: F,
    ) where
        F: FnMut(Weak<Session>) -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send,
    {
        let weak = Arc::downgrade(session);
        let deleted = until.clone();
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                let progressed = tokio::select! {
                    progressed = follow(weak.clone()) => progressed,
                    () = deleted.cancelled() => return,
                    () = stopping.cancelled() => return,
                };
                if progressed {
                    backoff = Duration::from_secs(1);
                }
                match weak.upgrade() {
                    Some(session) if session.error().is_none() => {}
                    // Gone, or broken for good: nothing more will come.
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
}
