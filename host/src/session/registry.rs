//! Creating, finding, listing and deleting sessions, and restoring them
//! after a restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use chrono::Utc;

use tokio_util::sync::CancellationToken;

use super::approvals::{ApprovalMode, SessionApprovals};
use super::{
    Engine, EngineReport, NewSession, Prepared, Session, SessionError, SessionManager,
    SessionParts, SessionStatus, StatusReport,
};
use crate::capabilities::{Capabilities, Health, ProcessPersister, ProcessTable};
use crate::config::{Config, EngineConfig};
use crate::events::EventLog;
use crate::network::{SessionEgress, SessionNetwork};
use crate::sandbox::{BackgroundProcess, LABEL_INSTANCE, LABEL_SERVER, REMOVED, Sandbox};
use crate::store::{ProcessRecord, SessionRecord, Store};
use crate::workspace::Workspace;

/// What [`SessionManager::work`] hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handed {
    /// Work for a session's server.
    Work(crate::store::Work),
    /// Another server deleted the session.
    Deleted(String),
    /// Announcements may have been missed: look at the database.
    Rescan,
}

/// Most work from other servers waiting to be taken up.
const WORK_BACKLOG: usize = 1024;

impl SessionManager {
    /// Loads every stored session and starts following their containers. A
    /// container that vanished while the server was down turns its session to
    /// `error` as soon as the engine answers.
    pub async fn open(
        config: Arc<Config>,
        engines: Vec<(EngineConfig, Sandbox)>,
        store: Store,
    ) -> Result<Arc<Self>, SessionError> {
        assert!(!engines.is_empty(), "at least one engine");
        let instance = store.instance_id().await?;
        let engines = engines
            .into_iter()
            .map(|(e, sandbox)| {
                let sandbox = sandbox
                    .with_label(LABEL_INSTANCE, &instance)
                    .with_label(LABEL_SERVER, store.server());
                Engine {
                    watch: sandbox.watch_containers(format!("{LABEL_INSTANCE}={instance}")),
                    name: e.name,
                    sandbox,
                    max_sessions: e.max_sessions,
                }
            })
            .collect();
        let workspaces_dir = config.server.data_dir.join("workspaces");
        std::fs::create_dir_all(&workspaces_dir)
            .map_err(|e| SessionError::Workspace(e.to_string()))?;
        let workspaces_dir = std::fs::canonicalize(&workspaces_dir)
            .map_err(|e| SessionError::Workspace(e.to_string()))?;
        let manager = Arc::new(Self {
            store,
            engines,
            config,
            workspaces_dir,
            sessions: RwLock::new(HashMap::new()),
            pool: Default::default(),
            reserved: Default::default(),
            refilling: AtomicBool::new(false),
            stopping: CancellationToken::new(),
            work: Default::default(),
            layers: Default::default(),
            cleanups: Default::default(),
        });
        for record in manager.store.sessions().await? {
            let processes = manager.store.processes(&record.id).await?;
            match manager.session_from(record, processes, false).await {
                Ok(session) => {
                    manager
                        .sessions
                        .write()
                        .unwrap()
                        .insert(session.id.clone(), session);
                }
                Err(e) => tracing::error!(error = %e, "session could not be restored"),
            }
        }
        tracing::info!(
            sessions = manager.sessions.read().unwrap().len(),
            "sessions restored"
        );
        for engine in 0..manager.engines.len() {
            manager.clone().spawn_reconciler(engine);
        }
        manager.clone().spawn_event_notices();
        manager.discard_stale_pool().await;
        manager.sweep_layers().await;
        manager.clone().refill_pool();
        Ok(manager)
    }

    /// Takes up a session another server made (sharing this database),
    /// unless it is known already.
    pub(super) async fn adopt(&self, id: &str) -> Result<(), SessionError> {
        if self.sessions.read().unwrap().contains_key(id)
            || self.reserved.lock().unwrap().contains(id)
        {
            return Ok(());
        }
        let Some(record) = self.store.session(id).await? else {
            return Ok(());
        };
        let processes = self.store.processes(id).await?;
        let session = self.session_from(record, processes, false).await?;
        // Made and deleted elsewhere meanwhile, or taken up twice at once.
        let mut sessions = self.sessions.write().unwrap();
        if !sessions.contains_key(id) {
            tracing::info!(session = %id, "took up a session made by another server");
            sessions.insert(session.id.clone(), session);
        }
        Ok(())
    }

    /// What other servers hand this one for the sessions it holds, as
    /// heard. Only the latest caller hears it; when it falls behind, some
    /// is dropped (found again at its next [`Handed::Rescan`] or tick).
    pub fn work(&self) -> tokio::sync::mpsc::Receiver<Handed> {
        let (tx, rx) = tokio::sync::mpsc::channel(WORK_BACKLOG);
        *self.work.lock().unwrap() = Some(tx);
        rx
    }

    /// Passes work heard from another server on to [`Self::work`]'s taker.
    pub(super) fn hand(&self, work: Handed) {
        let tx = self.work.lock().unwrap().clone();
        if let Some(tx) = tx
            && tx.try_send(work).is_err()
        {
            // Full: what the taker missed it finds at its next rescan.
            tracing::debug!("work from other servers dropped: the taker is behind");
        }
    }

    /// Starts following the sandbox of `session`, made with
    /// [`NewSession::follow_later`].
    pub fn follow(&self, session: &Arc<Session>) {
        self.follow_sandbox(session);
    }

    /// This server took `session` over from a silent one: it follows its
    /// sandbox from now on (the agent runs its tasks).
    pub fn took_over(&self, session: &Arc<Session>) {
        session.set_server(self.store.server());
        self.follow_sandbox(session);
        tracing::info!(session = %session.id, "took the session over from a silent server");
    }

    /// Learns which server holds `id` now (another took it over); when it
    /// was this one, stops following its sandbox. Returns the session
    /// when this server no longer holds it.
    pub async fn moved(&self, id: &str) -> Result<Option<Arc<Session>>, SessionError> {
        let Ok(session) = self.get(id) else {
            return Ok(None);
        };
        let Some(Some(server)) = self.store.session_server(id).await? else {
            return Ok(None);
        };
        Ok(self.hold_as_stored(&session, &server).then_some(session))
    }

    /// Records that `server` holds `session` as the database says; returns
    /// whether this server lost it so.
    fn hold_as_stored(&self, session: &Arc<Session>, server: &str) -> bool {
        let here = self.store.server();
        let was_here = session.held_by(here);
        if !session.set_server(server) || server == here {
            return false;
        }
        session.stop_following();
        if was_here {
            tracing::warn!(session = %session.id, server, "another server holds the session now; this one stops running it");
        }
        was_here
    }

    /// A session, taken up from the database when another server made it
    /// and this one has not heard yet; `None` when there is no such
    /// session.
    pub async fn get_or_adopt(&self, id: &str) -> Result<Option<Arc<Session>>, SessionError> {
        if let Ok(session) = self.get(id) {
            return Ok(Some(session));
        }
        self.adopt(id).await?;
        Ok(self.get(id).ok())
    }

    /// Drops a session another server deleted (it removed the container).
    pub(super) fn forget(&self, id: &str) {
        let Some(session) = self.sessions.write().unwrap().remove(id) else {
            return;
        };
        session.deleting.store(true, Ordering::SeqCst);
        session.deleted.cancel();
        tracing::info!(session = %id, "another server deleted a session");
    }

    /// Makes the sessions known here those the database holds: after
    /// announcements may have been missed.
    pub async fn resync(&self) -> Result<(), SessionError> {
        // Known first: a session made here meanwhile is stored before it is
        // known, so it is never taken for one deleted elsewhere.
        let known: Vec<String> = self.sessions.read().unwrap().keys().cloned().collect();
        let records = self.store.sessions().await?;
        for r in &records {
            if let (Ok(session), Some(server)) = (self.get(&r.id), &r.server) {
                self.hold_as_stored(&session, server);
            }
        }
        let stored: Vec<String> = records.into_iter().map(|r| r.id).collect();
        for id in known.iter().filter(|id| !stored.contains(id)) {
            self.forget(id);
        }
        for id in stored.iter().filter(|id| !known.contains(id)) {
            self.adopt(id).await?;
        }
        Ok(())
    }

    /// A live session from its stored record and processes. Its sandbox
    /// is followed from now on if this server made it, unless
    /// `follow_later` ([`NewSession::follow_later`]).
    async fn session_from(
        &self,
        record: SessionRecord,
        processes: Vec<ProcessRecord>,
        follow_later: bool,
    ) -> Result<Arc<Session>, SessionError> {
        let events = EventLog::open(
            self.store.clone(),
            &record.id,
            self.config.server.ws_buffer_events,
        )
        .await?;
        let workspace = Workspace::from_record(&record.workdir)
            .map_err(|e| SessionError::Workspace(format!("{}: {e}", record.workdir)))?;
        let store = self.store.clone();
        let session_id = record.id.clone();
        let persist: ProcessPersister = Arc::new(move |p| {
            let store = store.clone();
            let id = session_id.clone();
            Box::pin(async move {
                store
                    .insert_process(&id, &process_record(&p))
                    .await
                    .map_err(|e| e.to_string())
            })
        });
        let processes = processes.into_iter().map(background_process).collect();
        let (engine, missing) = match &record.engine {
            None => (&self.engines[0], None),
            Some(name) => match self.engines.iter().find(|e| &e.name == name) {
                Some(engine) => (engine, None),
                None => (
                    &self.engines[0],
                    Some(format!(
                        "its Docker engine {name:?} is no longer configured ([[sandbox.engines]])"
                    )),
                ),
            },
        };
        let engine_name = record.engine.clone().unwrap_or_else(|| engine.name.clone());
        let caps = Capabilities::new(
            &record.id,
            engine.sandbox.clone(),
            &record.container_id,
            Arc::new(workspace),
            ProcessTable::new(processes, Some(persist)),
            Arc::new(self.config.workspace.clone()),
            Arc::new(Health::new(record.error.or(missing))),
        );
        let network = self.restored_network(&record.id, record.network.as_deref());
        let events = Arc::new(events);
        let mode = ApprovalMode::parse(&record.approval).unwrap_or_else(|| {
            tracing::warn!(session = %record.id, approval = %record.approval, "unknown approval mode stored; using default");
            ApprovalMode::Default
        });
        let approvals = SessionApprovals::new(
            &record.id,
            self.store.clone(),
            events.clone(),
            mode,
            self.config.agent.approval_timeout(),
            self.store.approval_rules(&record.id).await?,
        );
        let tokens_used = self.store.session_tokens(&record.id).await?;
        // Its sandbox's file events and egress are followed by the server
        // that made it; several would record each file event once each.
        let follow_sandbox = record
            .server
            .as_deref()
            .is_none_or(|s| s == self.store.server());
        let session = Arc::new(Session::new(SessionParts {
            server: record.server,
            owner: record.owner,
            budget_tokens: record.budget_tokens,
            tokens_used,
            id: record.id,
            created: record.created,
            container_id: record.container_id,
            engine: engine_name,
            caps,
            events,
            last_task: record.last_task,
            network: Arc::new(network),
            approvals: Arc::new(approvals),
        }));
        if follow_sandbox && !follow_later {
            self.follow_sandbox(&session);
        }
        Ok(session)
    }

    /// A stored session's network. Settings the operator's policy no
    /// longer permits fall back to it (keeping the session's `deny`).
    fn restored_network(&self, id: &str, stored: Option<&str>) -> SessionEgress {
        let config = Arc::new(self.config.network.clone());
        let own: SessionNetwork = stored
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default();
        SessionEgress::new(config.clone(), own.clone()).unwrap_or_else(|e| {
            tracing::warn!(session = id, error = %e, "the session's network settings no longer apply; it gets the operator's");
            let fallback = SessionNetwork {
                allow: None,
                deny: own.deny,
            };
            SessionEgress::new(config.clone(), fallback)
                .or_else(|_| SessionEgress::new(config, SessionNetwork::default()))
                .expect("the operator's policy was checked at start")
        })
    }

    /// Changes what `session`'s programs may reach: checked, stored, then
    /// applied to the connections asked for from now on.
    pub async fn set_network(
        &self,
        session: &Session,
        own: SessionNetwork,
    ) -> Result<(), SessionError> {
        let policy = session.network.check(&own)?;
        let json = serde_json::to_string(&own).expect("settings serialise");
        self.store.set_network(&session.id, Some(&json)).await?;
        session.network.apply(own, policy);
        Ok(())
    }

    /// The engine `session`'s container is on.
    fn engine_of(&self, session: &Session) -> &Engine {
        self.engines
            .iter()
            .find(|e| e.name == session.engine)
            .unwrap_or(&self.engines[0])
    }

    /// The sandbox of `session`'s engine.
    pub(super) fn sandbox_of(&self, session: &Session) -> Sandbox {
        self.engine_of(session).sandbox.clone()
    }

    /// How many sessions each engine holds, by index.
    pub(super) fn placed(&self) -> Vec<u64> {
        let mut placed = vec![0u64; self.engines.len()];
        for s in self.sessions.read().unwrap().values() {
            if let Some(i) = self.engines.iter().position(|e| e.name == s.engine) {
                placed[i] += 1;
            }
        }
        placed
    }

    /// Where a new session goes: the engine holding the fewest sessions
    /// among those that answer and have room (the first, of equals).
    /// Refused when every engine is full or none answers; with one engine,
    /// it is asked anyway (its own error says why it fails).
    pub(super) fn place(&self) -> Result<usize, SessionError> {
        if self.engines.len() == 1 {
            return Ok(0);
        }
        let placed = self.placed();
        let room = |i: &usize| {
            let max = self.engines[*i].max_sessions;
            max == 0 || placed[*i] < max
        };
        let with_room: Vec<usize> = (0..self.engines.len()).filter(room).collect();
        if with_room.is_empty() {
            return Err(SessionError::EnginesFull);
        }
        let answering = with_room
            .iter()
            .copied()
            .filter(|i| self.engines[*i].sandbox.engine().is_available())
            .min_by_key(|i| placed[*i]);
        answering.ok_or_else(|| {
            let names: Vec<&str> = with_room
                .iter()
                .map(|i| self.engines[*i].name.as_str())
                .collect();
            SessionError::Sandbox(crate::sandbox::SandboxError::Unavailable(format!(
                "no engine with room answers ({})",
                names.join(", ")
            )))
        })
    }

    /// Each engine: whether it answers and how many sessions it holds.
    pub fn engines(&self) -> Vec<EngineReport> {
        let placed = self.placed();
        self.engines
            .iter()
            .zip(placed)
            .map(|(e, sessions)| EngineReport {
                name: e.name.clone(),
                available: e.sandbox.engine().is_available(),
                sessions,
                max_sessions: e.max_sessions,
            })
            .collect()
    }

    pub fn get(&self, id: &str) -> Result<Arc<Session>, SessionError> {
        let session = self
            .sessions
            .read()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or(SessionError::NotFound)?;
        if session.deleting.load(Ordering::SeqCst) {
            return Err(SessionError::NotFound);
        }
        Ok(session)
    }

    /// How many sessions `owner` has.
    pub fn count_owned(&self, owner: &str) -> usize {
        self.sessions
            .read()
            .unwrap()
            .values()
            .filter(|s| s.owner == owner && !s.deleting.load(Ordering::SeqCst))
            .count()
    }

    /// Every session, oldest first.
    pub fn list(&self) -> Vec<Arc<Session>> {
        let mut all: Vec<_> = self
            .sessions
            .read()
            .unwrap()
            .values()
            .filter(|s| !s.deleting.load(Ordering::SeqCst))
            .cloned()
            .collect();
        all.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        all
    }

    /// How many sessions have each status.
    pub fn status_counts(&self) -> Vec<(&'static str, i64)> {
        let mut counts = [("active", 0), ("stopped", 0), ("error", 0)];
        for s in self.list() {
            let i = match self.status(&s).status {
                SessionStatus::Active => 0,
                SessionStatus::Stopped => 1,
                SessionStatus::Error => 2,
            };
            counts[i].1 += 1;
        }
        counts.to_vec()
    }

    /// Sessions whose status is `active`.
    pub fn active_count(&self) -> usize {
        self.list()
            .iter()
            .filter(|s| self.status(s).status == SessionStatus::Active)
            .count()
    }

    /// A session's status, from its container's and its own record.
    pub fn status(&self, s: &Session) -> StatusReport {
        let container_status = self
            .engine_of(s)
            .watch
            .status(&s.container_id)
            .unwrap_or_else(|| "unknown".into());
        let status = if s.error().is_some() {
            SessionStatus::Error
        } else {
            match container_status.as_str() {
                "running" | "unknown" => SessionStatus::Active,
                REMOVED => SessionStatus::Error,
                _ => SessionStatus::Stopped,
            }
        };
        StatusReport {
            status,
            container_status,
            error: s.error().or_else(|| {
                (status == SessionStatus::Error).then(|| "its container no longer exists".into())
            }),
        }
    }

    /// Creates a session: workspace, container, record. On failure nothing
    /// is left behind.
    #[tracing::instrument(skip_all, fields(owner = %new.owner))]
    pub async fn create(self: &Arc<Self>, new: NewSession) -> Result<Arc<Session>, SessionError> {
        let NewSession {
            task,
            network,
            approval,
            owner,
            budget_tokens,
            follow_later,
            layer,
            layer_built,
        } = new;
        // Refused before anything is made.
        if approval == ApprovalMode::None && !self.config.agent.allow_approval_none {
            return Err(SessionError::ApprovalNotPermitted(
                "\"approval\": \"none\" is not permitted by this server (agent.allow_approval_none is false)".into(),
            ));
        }
        let network = match network {
            Some(own) => {
                crate::network::Policy::new(&self.config.network, &own)?;
                Some(serde_json::to_string(&own).expect("settings serialise"))
            }
            None => None,
        };
        let prepared = match layer {
            // A container of its own, made now: the pool's have empty
            // workspaces.
            Some((engine, layer)) => self.prepare(engine, Some((&layer, layer_built))).await?,
            None => {
                let engine = self.place()?;
                match self.take_prepared(engine) {
                    Some(p) => {
                        self.clone().refill_pool();
                        p
                    }
                    None => self.prepare(engine, None).await?,
                }
            }
        };
        let Prepared {
            id,
            workspace,
            container_id,
            engine,
        } = prepared;
        let sandbox = self.engines[engine].sandbox.clone();
        let record = SessionRecord {
            id: id.clone(),
            container_id: container_id.clone(),
            workdir: workspace.to_string(),
            created: Utc::now(),
            last_task: task.filter(|t| !t.trim().is_empty()),
            error: None,
            network,
            approval: approval.as_str().into(),
            owner,
            budget_tokens,
            server: Some(self.store.server().to_string()),
            engine: Some(self.engines[engine].name.clone()),
        };
        // Until it is in the map, the database's announcement of it is not
        // a session made by another server.
        self.reserved.lock().unwrap().insert(id.clone());
        let made = async {
            if let Err(e) = self.store.insert_session(&record).await {
                let _ = sandbox.remove(&container_id).await;
                let _ = sandbox.remove_workspace(&workspace).await;
                return Err(e.into());
            }
            let session = self.session_from(record, Vec::new(), follow_later).await?;
            self.sessions
                .write()
                .unwrap()
                .insert(id.clone(), session.clone());
            Ok::<_, SessionError>(session)
        }
        .await;
        self.reserved.lock().unwrap().remove(&id);
        let session = made?;
        tracing::info!(session = %id, container = %container_id, "session created");
        Ok(session)
    }

    /// Waits (at most `within`) for what deletions still do after their
    /// answers, before the server closes its database: a layer is released
    /// only once the database says nothing else stands on it.
    pub async fn finish_cleanups(&self, within: std::time::Duration) {
        self.cleanups.close();
        if tokio::time::timeout(within, self.cleanups.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.cleanups.len(),
                "stopped before deleted sessions' workspaces and layers were removed;                  the next start (or `crogia gc`) removes them"
            );
        }
    }

    /// Records the task most recently given to a session.
    pub async fn set_last_task(&self, session: &Session, task: &str) -> Result<(), SessionError> {
        self.store.set_last_task(&session.id, task).await?;
        *session.last_task.lock().unwrap() = Some(task.to_string());
        Ok(())
    }

    /// Deletes a session: its container, its record (with processes, events
    /// and conversation) and its workspace. A second delete finds nothing.
    #[tracing::instrument(skip(self))]
    pub async fn delete(self: &Arc<Self>, id: &str) -> Result<(), SessionError> {
        let session = self.get(id)?;
        if session.deleting.swap(true, Ordering::SeqCst) {
            return Err(SessionError::NotFound);
        }
        let engine = self.engine_of(&session);
        self.layers_written_from(id).await;
        let result = async {
            engine.sandbox.remove(&session.container_id).await?;
            self.store.delete_session(id).await?;
            Ok::<_, SessionError>(())
        }
        .await;
        if let Err(e) = result {
            session.deleting.store(false, Ordering::SeqCst);
            return Err(e);
        }
        engine.watch.record(&session.container_id, REMOVED);
        self.sessions.write().unwrap().remove(id);
        self.forget_unbuilt_slots(id);
        session.deleted.cancel();
        let sandbox = engine.sandbox.clone();
        let workspace = session.caps.workspace().clone();
        let engine_index = self.engines.iter().position(|e| e.name == session.engine);
        let manager = self.clone();
        let deleted = id.to_string();
        self.cleanups.spawn(async move {
            manager.settle_layers_of(&deleted, engine_index).await;
            if let Err(e) = sandbox.remove_workspace(&workspace).await {
                tracing::warn!(%workspace, error = %e, "could not remove a deleted session's workspace");
            }
            // The last fork standing on a layer takes it along.
            if let (Some(layer), Some(engine)) = (workspace.layer(), engine_index) {
                manager.release_layer(engine, layer).await;
            }
        });
        tracing::info!(session = %id, "session deleted");
        Ok(())
    }
}

/// The store's record of a process the sandbox started.
fn process_record(p: &BackgroundProcess) -> ProcessRecord {
    ProcessRecord {
        id: p.id.clone(),
        pid: p.pid,
        start_ticks: p.start_ticks,
        cmd: p.cmd.clone(),
        log: p.log.clone(),
        started: p.started,
    }
}

fn background_process(r: ProcessRecord) -> BackgroundProcess {
    BackgroundProcess {
        id: r.id,
        pid: r.pid,
        start_ticks: r.start_ticks,
        cmd: r.cmd,
        log: r.log,
        started: r.started,
    }
}
