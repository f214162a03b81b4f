//! Leases: with several servers on one PostgreSQL, each session's tasks run
//! on exactly one of them, the server holding its lease (the session's
//! `server` in the database: the one that made it, until another takes it
//! over). That server also follows the session's sandbox (file events,
//! egress). Any server answers a session's REST calls; work only its holder
//! can do is stored and handed over through the database
//! ([`crate::store::Work`]): a task submitted elsewhere is queued for it,
//! a cancel is passed on, a resolved approval wakes the call waiting there.
//!
//! Every server says it is alive every third of `store.lease_secs`, on the
//! database's clock. A server silent for longer is taken for dead: the
//! first live server to notice takes its sessions over (one row update
//! each, so two never take one session), ends the task that was running
//! there `interrupted`, and runs the queued ones. A server that finds its
//! sessions held by another (it was cut off from the database for longer
//! than the lease) stops running them without recording anything: the
//! new holder has recorded their end.
//!
//! On SQLite the same loop runs for the one server; it matters only when a
//! data directory's server id changed (`<data_dir>/server-id`).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::session::{Handed, Session, SessionManager};
use crate::store::{Store, Work};

/// Why a task stopped while its server could not reach the database ended.
const LOST: &str =
    "This server could not reach the database for longer than its lease; it stopped this task.";

/// Every this many beats, servers silent for a hundred leases that hold no
/// session are forgotten.
const FORGET_EVERY: u64 = 200;

/// Keeps this server's lease and takes over silent servers' sessions until
/// `stopping` is cancelled.
pub fn spawn(
    store: Store,
    sessions: Arc<SessionManager>,
    agent: Arc<Agent>,
    lease: Duration,
    stopping: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut work = sessions.work();
    // Not kept alive by this loop: it ends with them.
    let (sessions, agent) = (Arc::downgrade(&sessions), Arc::downgrade(&agent));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(lease / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beats = 0u64;
        let mut renewal = Renewal {
            renewed: std::time::Instant::now(),
            fenced: false,
        };
        loop {
            let next = tokio::select! {
                () = stopping.cancelled() => return,
                _ = tick.tick() => None,
                handed = work.recv() => match handed {
                    Some(handed) => Some(handed),
                    None => return,
                },
            };
            let (Some(sessions), Some(agent)) = (sessions.upgrade(), agent.upgrade()) else {
                return;
            };
            let leases = Leases {
                store: store.clone(),
                sessions,
                agent,
                lease,
            };
            match next {
                None => {
                    leases
                        .beat(&mut renewal, beats % FORGET_EVERY == FORGET_EVERY - 1)
                        .await;
                    beats += 1;
                }
                Some(handed) => leases.handle(handed).await,
            }
        }
    })
}

/// When this server last renewed its lease, and whether it stopped its
/// tasks since because it could not.
struct Renewal {
    renewed: std::time::Instant,
    fenced: bool,
}

struct Leases {
    store: Store,
    sessions: Arc<SessionManager>,
    agent: Arc<Agent>,
    lease: Duration,
}

impl Leases {
    fn here(&self) -> &str {
        self.store.server()
    }

    /// A session this server holds, when it does.
    fn held(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions
            .get(id)
            .ok()
            .filter(|s| s.held_by(self.here()))
    }

    /// Says this server is alive, takes over silent servers' sessions,
    /// stops running those another server holds now, and queues the tasks
    /// handed over whose announcement was missed. Unable to say it for a
    /// whole lease, it stops its tasks (another server may run them now).
    async fn beat(&self, renewal: &mut Renewal, forget: bool) {
        // Bounded: a database that hangs must not hold the fence back
        // beyond the beat after the lease ran out.
        let renewed = tokio::time::timeout(self.lease / 3, self.store.heartbeat())
            .await
            .unwrap_or_else(|_| {
                Err(crate::store::StoreError::new(
                    "no answer within a third of the lease",
                ))
            });
        if let Err(e) = renewed {
            tracing::warn!(error = %e, "could not renew this server's lease");
            if !renewal.fenced && renewal.renewed.elapsed() >= self.lease {
                renewal.fenced = true;
                self.fence();
            }
            return;
        }
        renewal.renewed = std::time::Instant::now();
        if std::mem::take(&mut renewal.fenced) {
            self.resume_held().await;
        }
        match self.store.take_over_sessions(self.lease).await {
            Ok(taken) => {
                for id in taken {
                    self.take_over(&id).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not take over silent servers' sessions"),
        }
        self.drop_lost().await;
        self.rescan().await;
        if forget {
            match self.store.forget_idle_servers(self.lease * 100).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(servers = n, "forgot servers long silent"),
                Err(e) => tracing::warn!(error = %e, "could not forget silent servers"),
            }
        }
    }

    async fn take_over(&self, id: &str) {
        let session = match self.sessions.get_or_adopt(id).await {
            Ok(Some(session)) => session,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(session = id, error = %e, "took a session over but could not load it");
                return;
            }
        };
        self.sessions.took_over(&session);
        let why =
            "The server running this task stopped answering; another server took the session over.";
        if let Err(e) = self.agent.take_over(&session, why).await {
            tracing::error!(session = id, error = %e, "could not take over a session's tasks");
        }
    }

    /// This server's lease ran out unrenewed: other servers may hold its
    /// sessions now. Stops their tasks here without recording anything.
    fn fence(&self) {
        for session in self.sessions.list() {
            if session.held_by(self.here()) && self.agent.has_tasks(&session.id) {
                tracing::warn!(session = %session.id, "this server's lease ran out unrenewed; its tasks stop here");
                self.agent.forget(&session.id);
            }
        }
    }

    /// The lease is renewed after it ran out: the sessions still held
    /// here (nobody took them over) are taken up as after a takeover (the
    /// task stopped by [`Self::fence`] ends `interrupted`, queued ones run).
    async fn resume_held(&self) {
        if let Err(e) = self.sessions.resync().await {
            tracing::warn!(error = %e, "could not learn which sessions this server still holds");
            return;
        }
        for session in self.sessions.list() {
            if session.held_by(self.here())
                && !self.agent.has_tasks(&session.id)
                && let Err(e) = self.agent.take_over(&session, LOST).await
            {
                tracing::warn!(session = %session.id, error = %e, "could not take up a session's tasks again");
            }
        }
    }

    /// Stops the tasks of sessions this server no longer holds. Which
    /// server holds each session with tasks here is read from the database
    /// (the announcement of a takeover may have been missed).
    async fn drop_lost(&self) {
        for session in self.sessions.list() {
            if !self.agent.has_tasks(&session.id) {
                continue;
            }
            if let Err(e) = self.sessions.moved(&session.id).await {
                tracing::warn!(session = %session.id, error = %e, "could not learn which server holds a session");
            }
            if !session.held_by(self.here()) {
                tracing::warn!(session = %session.id, server = ?session.server(), "another server holds this session now; its tasks stop here");
                self.agent.forget(&session.id);
            }
        }
    }

    /// Queues the tasks stored for sessions held here that were handed
    /// over unheard, and wakes calls whose approval was resolved unheard.
    async fn rescan(&self) {
        let ids = match self.store.sessions_with_queued_tasks().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "could not look for tasks handed over");
                return;
            }
        };
        for id in ids {
            if let Some(session) = self.held(&id)
                && let Err(e) = self.agent.pick_up(&session).await
            {
                tracing::warn!(session = %id, error = %e, "could not queue tasks handed over");
            }
        }
    }

    async fn handle(&self, handed: Handed) {
        let work = match handed {
            Handed::Work(work) => work,
            Handed::Deleted(id) => return self.agent.forget(&id),
            Handed::Rescan => {
                self.rescan().await;
                for session in self.sessions.list() {
                    for approval in session.approvals.waiting().await {
                        self.resolved(&session, &approval).await;
                    }
                }
                return;
            }
        };
        let id = work.session_id().to_string();
        match work {
            Work::Queued(_) => {
                if let Some(session) = self.held(&id)
                    && let Err(e) = self.agent.pick_up(&session).await
                {
                    tracing::warn!(session = %id, error = %e, "could not queue a task handed over");
                }
            }
            Work::Cancel(_) => {
                if self.held(&id).is_some() {
                    self.agent.cancel(&id);
                }
            }
            Work::Resolved { approval_id, .. } => {
                if let Ok(session) = self.sessions.get(&id) {
                    self.resolved(&session, &approval_id).await;
                }
            }
            Work::Moved(_) => match self.sessions.moved(&id).await {
                Ok(Some(_lost)) => self.agent.forget(&id),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(session = %id, error = %e, "could not learn which server holds a session")
                }
            },
        }
    }

    async fn resolved(&self, session: &Session, approval_id: &str) {
        if let Err(e) = session.approvals.resolved_elsewhere(approval_id).await {
            tracing::warn!(session = %session.id, approval = approval_id, error = %e, "could not read a resolution made elsewhere");
        }
    }
}
