//! Sessions: a workspace directory, a container, and their record in the
//! store. The [`SessionManager`] creates, lists, finds and deletes them, and
//! brings them back after a restart.
//!
//! A session's status comes from its container, whose status the engine's
//! event stream keeps current ([`ContainerWatch`]): `active` while it runs,
//! `stopped` while it exists but does not run (the next command starts it
//! again), `error` once it vanished (with the reason in `error`). Nothing a
//! client was told about is lost: the record is written before the answer.
//!
//! - `registry.rs`: creating, finding, listing and deleting sessions;
//! - `pool.rs`: the warm pool of containers started ahead of time;
//! - `reconcile.rs`: following containers, marking sessions whose container vanished;
//! - `gc.rs`: `crogia gc`, removing containers that belong to no session.

mod approvals;
mod egress;
mod files;
mod follow;
mod gc;
mod layers;
mod notices;
mod pool;
mod reconcile;
mod registry;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use crate::network::SessionNetwork;
pub use approvals::{
    ApprovalMode, ApprovalRequest, ApprovalRule, BY_CANCEL, BY_TIMEOUT, Decision, Resolution,
    ResolveError, SessionApprovals, Waited,
};
pub use gc::{Garbage, collect_garbage};
pub use layers::LayerSlot;
pub use registry::Handed;

use crate::capabilities::Capabilities;
use crate::config::Config;
use crate::events::EventLog;
use crate::network::SessionEgress;
use crate::sandbox::{ContainerWatch, Sandbox, SandboxError};
use crate::store::{Store, StoreError};
use pool::Prepared;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("Session not found")]
    NotFound,
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("workspace: {0}")]
    Workspace(String),
    /// The network settings asked for are malformed.
    #[error("{0}")]
    InvalidNetwork(String),
    /// The network settings asked for reach past the operator's policy.
    #[error("{0}")]
    NetworkNotPermitted(String),
    /// The approval mode asked for is not permitted by the operator.
    #[error("{0}")]
    ApprovalNotPermitted(String),
    /// Every engine holds its `max_sessions`.
    #[error("every Docker engine holds as many sessions as it may (sandbox.engines' max_sessions)")]
    EnginesFull,
}

impl From<crate::network::PolicyError> for SessionError {
    fn from(e: crate::network::PolicyError) -> Self {
        match e {
            crate::network::PolicyError::Malformed(m) => Self::InvalidNetwork(m),
            crate::network::PolicyError::NotPermitted(m) => Self::NetworkNotPermitted(m),
        }
    }
}

/// A session's status as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    /// Its container runs.
    Active,
    /// Its container exists but is not running; the next command starts it.
    Stopped,
    /// It cannot run commands any more (see `error`).
    Error,
}

/// What a session's container says about it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    pub status: SessionStatus,
    /// The engine's word for the container: running, exited, removed, unknown...
    pub container_status: String,
    /// Why the session is in error.
    pub error: Option<String>,
}

/// One live session.
#[derive(Debug)]
pub struct Session {
    pub id: String,
    pub created: DateTime<Utc>,
    pub container_id: String,
    /// The engine its container is on (`[[sandbox.engines]]`' name).
    pub engine: String,
    /// Everything the session can do; shared by REST handlers and plugins.
    pub caps: Capabilities,
    /// What the agent did, in order.
    pub events: Arc<EventLog>,
    /// Cancelled when the session is deleted (WebSocket clients close).
    pub deleted: CancellationToken,
    /// What its programs may reach, and what they use.
    pub network: Arc<SessionEgress>,
    /// Tool calls waiting for a person, and the rules they left.
    pub approvals: Arc<SessionApprovals>,
    /// Held while a checkpoint is taken, compared or put back.
    pub checkpointing: tokio::sync::Mutex<()>,
    /// The principal that made it ('' for sessions made before principals).
    pub owner: String,
    /// Most model tokens its tasks may use, when limited.
    pub budget_tokens: Option<u64>,
    /// Model tokens its tasks used, as the usage ledger sums them.
    tokens_used: AtomicU64,
    last_task: Mutex<Option<String>>,
    /// The server holding its lease, which runs its tasks and follows its
    /// sandbox (`None`: a session from before servers had ids, this one's).
    server: Mutex<Option<String>>,
    /// Cancelled when this server stops following its sandbox's file
    /// events and egress (deleted, or held by another server now).
    following: Mutex<Option<CancellationToken>>,
    deleting: AtomicBool,
}

/// What a new session is made with.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    /// Its first task (recorded as `last_task`; the caller hands it over).
    pub task: Option<String>,
    pub network: Option<SessionNetwork>,
    pub approval: ApprovalMode,
    /// The principal making it.
    pub owner: String,
    pub budget_tokens: Option<u64>,
    /// Its sandbox's file events and egress are followed only once
    /// [`SessionManager::follow`] is called (a fork's, after its workspace
    /// is in place: the 10,000 files its import writes are not changes, and
    /// watching them would cost the import).
    pub follow_later: bool,
    /// A fork's: its workspace stands on this layer, on this engine (by
    /// index), rather than being a new empty one of its own.
    pub layer: Option<(usize, String)>,
    /// If that layer is still being written: its container is made
    /// meanwhile and started once it is done.
    pub layer_built: Option<crate::sandbox::LayerBuilt>,
}

/// What a [`Session`] is made of.
pub struct SessionParts {
    pub id: String,
    pub created: DateTime<Utc>,
    pub container_id: String,
    pub engine: String,
    pub caps: Capabilities,
    pub events: Arc<EventLog>,
    pub last_task: Option<String>,
    pub network: Arc<SessionEgress>,
    pub approvals: Arc<SessionApprovals>,
    pub owner: String,
    pub budget_tokens: Option<u64>,
    pub tokens_used: u64,
    pub server: Option<String>,
}

impl Session {
    /// A session made of its parts.
    pub fn new(parts: SessionParts) -> Self {
        let SessionParts {
            id,
            created,
            container_id,
            engine,
            caps,
            events,
            last_task,
            network,
            approvals,
            owner,
            budget_tokens,
            tokens_used,
            server,
        } = parts;
        Self {
            id,
            created,
            container_id,
            engine,
            caps,
            events,
            deleted: CancellationToken::new(),
            network,
            approvals,
            last_task: Mutex::new(last_task),
            checkpointing: tokio::sync::Mutex::default(),
            owner,
            budget_tokens,
            tokens_used: AtomicU64::new(tokens_used),
            server: Mutex::new(server),
            following: Mutex::new(None),
            deleting: AtomicBool::new(false),
        }
    }

    /// Whether the server `id` holds its lease (runs its tasks).
    pub fn held_by(&self, id: &str) -> bool {
        self.server
            .lock()
            .unwrap()
            .as_deref()
            .is_none_or(|s| s == id)
    }

    /// The server holding its lease, when it is known.
    pub fn server(&self) -> Option<String> {
        self.server.lock().unwrap().clone()
    }

    /// A token for following its sandbox from here, unless that is done
    /// already: cancelled by [`Self::stop_following`] or its deletion.
    fn start_following(&self) -> Option<CancellationToken> {
        let mut following = self.following.lock().unwrap();
        if following.as_ref().is_some_and(|t| !t.is_cancelled()) {
            return None;
        }
        let token = self.deleted.child_token();
        *following = Some(token.clone());
        Some(token)
    }

    /// Stops following its sandbox from here.
    fn stop_following(&self) {
        if let Some(token) = self.following.lock().unwrap().take() {
            token.cancel();
        }
    }

    /// Records that the server `id` holds it now; returns whether that
    /// changed anything.
    pub(crate) fn set_server(&self, id: &str) -> bool {
        let mut server = self.server.lock().unwrap();
        if server.as_deref() == Some(id) {
            return false;
        }
        *server = Some(id.to_string());
        true
    }

    /// Model tokens its tasks used so far.
    pub fn tokens_used(&self) -> u64 {
        self.tokens_used.load(Ordering::Relaxed)
    }

    /// Counts `tokens` more as used (once the ledger has them).
    pub fn add_tokens(&self, tokens: u64) {
        self.tokens_used.fetch_add(tokens, Ordering::Relaxed);
    }

    pub fn last_task(&self) -> Option<String> {
        self.last_task.lock().unwrap().clone()
    }

    /// Why the session can no longer run commands, when it cannot.
    pub fn error(&self) -> Option<String> {
        self.caps.health().broken()
    }
}

/// Creates, finds and deletes sessions.
/// Whether a container or volume with these labels was made by the server
/// `server` (or before servers labelled theirs): another server's are left
/// to it.
pub(crate) fn made_here(labels: &std::collections::HashMap<String, String>, server: &str) -> bool {
    labels
        .get(crate::sandbox::LABEL_SERVER)
        .is_none_or(|s| s == server)
}

/// One Docker engine sessions are placed on, with its containers'
/// statuses.
#[derive(Debug)]
struct Engine {
    name: String,
    sandbox: Sandbox,
    watch: Arc<ContainerWatch>,
    /// Most sessions placed on it; 0: no limit.
    max_sessions: u64,
}

/// What one engine holds and whether it answers, as health reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EngineReport {
    pub name: String,
    /// Whether it answered its latest probe or request.
    pub available: bool,
    /// Sessions placed on it.
    pub sessions: u64,
    /// Most sessions placed on it; 0: no limit.
    pub max_sessions: u64,
}

#[derive(Debug)]
pub struct SessionManager {
    store: Store,
    /// Where sessions are placed, in the order configured (at least one).
    engines: Vec<Engine>,
    config: Arc<Config>,
    workspaces_dir: PathBuf,
    sessions: RwLock<HashMap<String, Arc<Session>>>,
    /// Ready containers (`sandbox.pool_size` of them) for fast creation.
    pool: Mutex<VecDeque<Prepared>>,
    /// Ids promised to pool entries being prepared.
    reserved: Mutex<HashSet<String>>,
    refilling: AtomicBool,
    /// Cancelled when the server stops: ends the sessions' file watches.
    stopping: CancellationToken,
    /// Where work other servers hand this one goes (`None`: announcements
    /// may have been missed), once someone takes it ([`Self::work`]).
    work: Mutex<Option<tokio::sync::mpsc::Sender<registry::Handed>>>,
    /// The fork layers this server built.
    layers: layers::Layers,
    /// What a deletion does after its answer (a workspace's removal, a
    /// layer's release): a stopping server waits for it
    /// ([`Self::finish_cleanups`]).
    cleanups: tokio_util::task::TaskTracker,
}
