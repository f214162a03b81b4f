//! Sessions: a workspace directory, a container, and their record in the
//! store. The [`SessionManager`] creates, lists, finds and deletes them, and
//! brings them back after a restart.
//!
//! A session's status comes from its container, whose status the engine's
//! event stream keeps current ([`ContainerWatch`]): `active` while it runs,
//! `stopped` while it exists but does not run (the next command starts it
//! again), `error` once it vanished (with the reason in `error`). Nothing a
//! client was told about is lost: the record is written before the answer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Serialize;

use tokio_util::sync::CancellationToken;

use crate::capabilities::{Capabilities, ProcessPersister, ProcessTable};
use crate::config::Config;
use crate::events::EventLog;
use crate::sandbox::{ContainerWatch, LABEL_INSTANCE, REMOVED, Sandbox, SandboxError};
use crate::store::{SessionRecord, Store, StoreError};
use crate::workspace::Workspace;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("Session not found")]
    NotFound,
    /// The session exists but its container is gone.
    #[error("Session {id} is unusable: {reason}. Delete it and create a new one.")]
    Broken { id: String, reason: String },
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("workspace: {0}")]
    Workspace(String),
}

/// A session's status as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    /// Its container runs.
    Active,
    /// Its container exists but is not running; the next command starts it.
    Stopped,
    /// It cannot run commands any more (see `error`).
    Error,
}

/// A session as the API shows it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SessionInfo {
    /// 8 lowercase hex characters.
    pub session_id: String,
    pub container_id: String,
    /// Absolute host path of the workspace (mounted at /workspace in the container).
    pub workdir: String,
    pub created: String,
    /// The most recent task given to the session.
    pub last_task: Option<String>,
    pub status: SessionStatus,
    /// The engine's word for the container: running, exited, removed, unknown...
    pub container_status: String,
    /// Why the session is in error (additive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Sequence number of its latest event: connect with `?since=` this to
    /// get only what comes next (additive). In a create response it is taken
    /// before the session's first task starts.
    pub last_event_seq: u64,
}

/// One live session.
#[derive(Debug)]
pub struct Session {
    pub id: String,
    pub created: DateTime<Utc>,
    pub container_id: String,
    /// Everything the session can do; shared by REST handlers and plugins.
    pub caps: Capabilities,
    /// What the agent did, in order.
    pub events: Arc<EventLog>,
    /// Cancelled when the session is deleted (WebSocket clients close).
    pub deleted: CancellationToken,
    last_task: Mutex<Option<String>>,
    error: Mutex<Option<String>>,
    deleting: AtomicBool,
}

impl Session {
    pub fn last_task(&self) -> Option<String> {
        self.last_task.lock().unwrap().clone()
    }

    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap().clone()
    }

    /// Fails when the session can no longer run commands.
    pub fn check_usable(&self) -> Result<(), SessionError> {
        match self.error() {
            Some(reason) => Err(SessionError::Broken {
                id: self.id.clone(),
                reason,
            }),
            None => Ok(()),
        }
    }
}

/// A container started ahead of time, with its session id and workspace
/// already chosen (a container's mounts and labels are fixed when it is
/// created), waiting in the warm pool to become a session.
#[derive(Debug)]
struct Prepared {
    id: String,
    workspace: Workspace,
    container_id: String,
}

/// Label on containers created for the warm pool.
const LABEL_POOL: &str = "crogia.pool";

/// Creates, finds and deletes sessions.
#[derive(Debug)]
pub struct SessionManager {
    store: Store,
    sandbox: Sandbox,
    watch: Arc<ContainerWatch>,
    config: Arc<Config>,
    workspaces_dir: PathBuf,
    sessions: RwLock<HashMap<String, Arc<Session>>>,
    /// Ready containers (`sandbox.pool_size` of them) for fast creation.
    pool: Mutex<std::collections::VecDeque<Prepared>>,
    /// Ids promised to pool entries being prepared.
    reserved: Mutex<std::collections::HashSet<String>>,
    refilling: AtomicBool,
}

impl SessionManager {
    /// Loads every stored session and starts following their containers. A
    /// container that vanished while the server was down turns its session to
    /// `error` as soon as the engine answers.
    pub async fn open(
        config: Arc<Config>,
        sandbox: Sandbox,
        store: Store,
    ) -> Result<Arc<Self>, SessionError> {
        let instance = store.instance_id().await?;
        let sandbox = sandbox.with_label(LABEL_INSTANCE, &instance);
        let watch = sandbox.watch_containers(format!("{LABEL_INSTANCE}={instance}"));
        let workspaces_dir = config.server.data_dir.join("workspaces");
        std::fs::create_dir_all(&workspaces_dir)
            .map_err(|e| SessionError::Workspace(e.to_string()))?;
        let workspaces_dir = std::fs::canonicalize(&workspaces_dir)
            .map_err(|e| SessionError::Workspace(e.to_string()))?;
        let manager = Arc::new(Self {
            store,
            sandbox,
            watch,
            config,
            workspaces_dir,
            sessions: RwLock::new(HashMap::new()),
            pool: Mutex::new(Default::default()),
            reserved: Mutex::new(Default::default()),
            refilling: AtomicBool::new(false),
        });
        for record in manager.store.sessions().await? {
            let processes = manager.store.processes(&record.id).await?;
            match manager.session_from(record, processes).await {
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
        manager.clone().spawn_reconciler();
        manager.discard_stale_pool().await;
        manager.clone().refill_pool();
        Ok(manager)
    }

    /// Removes pool containers a previous run left unused (they belong to no
    /// session) and their workspaces.
    async fn discard_stale_pool(&self) {
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
            let id = c
                .labels
                .get(crate::sandbox::LABEL_SESSION)
                .cloned()
                .unwrap_or_default();
            if self.sessions.read().unwrap().contains_key(&id) {
                continue;
            }
            let _ = self.sandbox.remove(&c.id).await;
            if !id.is_empty() {
                let _ = std::fs::remove_dir_all(self.workspaces_dir.join(format!("session_{id}")));
            }
        }
    }

    /// Tops the warm pool up to `sandbox.pool_size` in the background.
    fn refill_pool(self: Arc<Self>) {
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
    async fn prepare(&self) -> Result<Prepared, SessionError> {
        let id = self.fresh_id();
        let pool_label = self.config.sandbox.pool_size > 0;
        let result = async {
            let workdir = self.workspaces_dir.join(format!("session_{id}"));
            let workspace =
                Workspace::create(&workdir).map_err(|e| SessionError::Workspace(e.to_string()))?;
            let sandbox = if pool_label {
                self.sandbox.clone().with_label(LABEL_POOL, "true")
            } else {
                self.sandbox.clone()
            };
            match sandbox.create(&id, workspace.root()).await {
                Ok(container_id) => {
                    self.watch.record(&container_id, "running");
                    Ok(Prepared {
                        id: id.clone(),
                        workspace,
                        container_id,
                    })
                }
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&workdir);
                    Err(e.into())
                }
            }
        }
        .await;
        self.reserved.lock().unwrap().remove(&id);
        result
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
    fn take_prepared(&self) -> Option<Prepared> {
        let mut pool = self.pool.lock().unwrap();
        while let Some(p) = pool.pop_front() {
            if self.watch.status(&p.container_id).as_deref() == Some("running") {
                return Some(p);
            }
            tracing::info!(container = %p.container_id, "discarding a pool container that stopped");
            let sandbox = self.sandbox.clone();
            let root = p.workspace.root().to_path_buf();
            tokio::spawn(async move {
                let _ = sandbox.remove(&p.container_id).await;
                let _ = std::fs::remove_dir_all(root);
            });
        }
        None
    }

    async fn session_from(
        &self,
        record: SessionRecord,
        processes: Vec<crate::sandbox::BackgroundProcess>,
    ) -> Result<Arc<Session>, SessionError> {
        let events = EventLog::open(
            self.store.clone(),
            &record.id,
            self.config.server.ws_buffer_events,
        )
        .await?;
        let workspace = Workspace::create(&record.workdir)
            .map_err(|e| SessionError::Workspace(format!("{}: {e}", record.workdir)))?
            .with_owner(self.config.sandbox.user_ids());
        let store = self.store.clone();
        let session_id = record.id.clone();
        let persist: ProcessPersister = Arc::new(move |p| {
            let store = store.clone();
            let id = session_id.clone();
            Box::pin(async move {
                store
                    .insert_process(&id, &p)
                    .await
                    .map_err(|e| e.to_string())
            })
        });
        Ok(Arc::new(Session {
            caps: Capabilities {
                sandbox: self.sandbox.clone(),
                container_id: record.container_id.clone().into(),
                workspace: Arc::new(workspace),
                processes: Arc::new(ProcessTable::new(processes, Some(persist))),
                limits: Arc::new(self.config.workspace.clone()),
            },
            events: Arc::new(events),
            deleted: CancellationToken::new(),
            id: record.id,
            created: record.created,
            container_id: record.container_id,
            last_task: Mutex::new(record.last_task),
            error: Mutex::new(record.error),
            deleting: AtomicBool::new(false),
        }))
    }

    /// Marks sessions whose containers vanish, now and whenever it happens.
    fn spawn_reconciler(self: Arc<Self>) {
        let weak = Arc::downgrade(&self);
        let mut changes = self.watch.subscribe();
        drop(self);
        tokio::spawn(async move {
            // Sessions whose containers vanished while we were down: checked
            // once the watch has synced with the engine.
            loop {
                let Some(manager) = weak.upgrade() else {
                    return;
                };
                if manager.watch.is_synced() {
                    let vanished: Vec<Arc<Session>> = manager
                        .list()
                        .into_iter()
                        .filter(|s| {
                            manager.watch.status(&s.container_id).as_deref() == Some(REMOVED)
                        })
                        .collect();
                    for s in vanished {
                        manager.mark_broken(&s, "its container no longer exists (removed while the server was down)").await;
                    }
                    manager.report_orphans();
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
                let owner = manager
                    .list()
                    .into_iter()
                    .find(|s| s.container_id == change.id);
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
        if session.error().is_some() {
            return;
        }
        tracing::warn!(session = %session.id, container = %session.container_id, reason, "session is now in error");
        *session.error.lock().unwrap() = Some(reason.to_string());
        if let Err(e) = self.store.set_error(&session.id, Some(reason)).await {
            tracing::error!(session = %session.id, error = %e, "could not persist the session's error");
        }
    }

    /// Logs containers of this server that belong to no session; `crogia gc`
    /// removes them.
    fn report_orphans(&self) {
        let known: Vec<String> = self.list().iter().map(|s| s.container_id.clone()).collect();
        for id in self.watch.containers() {
            if !known.contains(&id) {
                tracing::warn!(container = %id, "container carries this server's label but belongs to no session; remove it with `crogia gc`");
            }
        }
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
            let i = match self.status(&s).0 {
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
            .filter(|s| self.status(s).0 == SessionStatus::Active)
            .count()
    }

    fn status(&self, s: &Session) -> (SessionStatus, String) {
        let container_status = self
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
        (status, container_status)
    }

    pub fn info(&self, s: &Session) -> SessionInfo {
        let (status, container_status) = self.status(s);
        SessionInfo {
            session_id: s.id.clone(),
            container_id: s.container_id.clone(),
            workdir: s.caps.workspace.root().display().to_string(),
            created: crate::time::timestamp(s.created),
            last_task: s.last_task(),
            status,
            container_status,
            last_event_seq: s.events.last_seq(),
            error: s.error().or_else(|| {
                (status == SessionStatus::Error).then(|| "its container no longer exists".into())
            }),
        }
    }

    /// Creates a session: workspace, container, record. On failure nothing
    /// is left behind.
    #[tracing::instrument(skip(self, task))]
    pub async fn create(
        self: &Arc<Self>,
        task: Option<String>,
    ) -> Result<Arc<Session>, SessionError> {
        let prepared = match self.take_prepared() {
            Some(p) => {
                self.clone().refill_pool();
                p
            }
            None => self.prepare().await?,
        };
        let Prepared {
            id,
            workspace,
            container_id,
        } = prepared;
        let record = SessionRecord {
            id: id.clone(),
            container_id: container_id.clone(),
            workdir: workspace.root().display().to_string(),
            created: Utc::now(),
            last_task: task.filter(|t| !t.trim().is_empty()),
            error: None,
        };
        if let Err(e) = self.store.insert_session(&record).await {
            let _ = self.sandbox.remove(&container_id).await;
            let _ = std::fs::remove_dir_all(workspace.root());
            return Err(e.into());
        }
        let session = self.session_from(record, Vec::new()).await?;
        self.sessions
            .write()
            .unwrap()
            .insert(id.clone(), session.clone());
        tracing::info!(session = %id, container = %container_id, "session created");
        Ok(session)
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
    pub async fn delete(&self, id: &str) -> Result<(), SessionError> {
        let session = self.get(id)?;
        if session.deleting.swap(true, Ordering::SeqCst) {
            return Err(SessionError::NotFound);
        }
        let result = async {
            self.sandbox.remove(&session.container_id).await?;
            self.store.delete_session(id).await?;
            Ok::<_, SessionError>(())
        }
        .await;
        if let Err(e) = result {
            session.deleting.store(false, Ordering::SeqCst);
            return Err(e);
        }
        self.watch.record(&session.container_id, REMOVED);
        self.sessions.write().unwrap().remove(id);
        session.deleted.cancel();
        let root = session.caps.workspace.root().to_path_buf();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = std::fs::remove_dir_all(&root) {
                tracing::warn!(path = %root.display(), error = %e, "could not remove a deleted session's workspace");
            }
        });
        tracing::info!(session = %id, "session deleted");
        Ok(())
    }

    /// Containers of this server that belong to no session.
    pub async fn orphan_containers(&self) -> Result<Vec<String>, SessionError> {
        let known: Vec<String> = self.list().iter().map(|s| s.container_id.clone()).collect();
        let instance = self.store.instance_id().await?;
        let ours = self
            .sandbox
            .find_by_labels(&[&format!("{LABEL_INSTANCE}={instance}")])
            .await?;
        Ok(ours
            .into_iter()
            .map(|c| c.id)
            .filter(|id| !known.contains(id))
            .collect())
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }
}

/// Finds the containers labelled with this data directory's instance id that
/// belong to no stored session, and (unless `dry_run`) removes them. What
/// `crogia gc` does. Refused while a server runs on the same data directory:
/// its warm pool and the containers of sessions being created belong to no
/// stored session yet, and would be taken for orphans.
pub async fn collect_garbage(
    config: &Config,
    dry_run: bool,
) -> anyhow::Result<Vec<crate::sandbox::ContainerInfo>> {
    let _lock = crate::datadir::DataDirLock::acquire(&config.server.data_dir, "`crogia gc`")?;
    let store = Store::open(&config.server.data_dir).await?;
    let instance = store.instance_id().await?;
    let known: Vec<String> = store
        .sessions()
        .await?
        .into_iter()
        .map(|s| s.container_id)
        .collect();
    store.close().await;
    let sandbox = Sandbox::new(
        crate::sandbox::DockerEngine::new(&config.sandbox.docker_host),
        config.sandbox.clone(),
    );
    let ours = sandbox
        .find_by_labels(&[&format!("{LABEL_INSTANCE}={instance}")])
        .await?;
    let orphans: Vec<_> = ours
        .into_iter()
        .filter(|c| !known.contains(&c.id))
        .collect();
    if !dry_run {
        for c in &orphans {
            sandbox.remove(&c.id).await?;
        }
    }
    Ok(orphans)
}
