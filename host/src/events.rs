//! Each session's event log: what the agent did, step by step, as the
//! WebSocket sends it.
//!
//! An event is written to the store, which gives it the next sequence number
//! of its session, and only then broadcast to live subscribers, by one writer
//! task that takes events in order, so the store and the broadcast see events
//! in the same order (with events other servers stored sent in their place).
//! A subscriber that subscribes first and then reads the store from its
//! `since` point sees every event exactly once (dropping broadcast events it
//! already read).
//!
//! Event JSON is the contract's (`type`, its fields, `timestamp`) plus `seq`
//! and the additive fields below.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::store::{Lease, Store, StoreError};

/// How a task ended, carried by its `task_completed` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskOutcome {
    /// The model finished.
    Completed,
    /// It failed (the `error` event before it says why).
    Failed,
    /// A client cancelled it.
    Cancelled,
    /// The server stopped while it ran (or was queued).
    Interrupted,
    /// It used `agent.max_steps` model turns.
    MaxSteps,
    /// The next model call would have gone past the session's token budget
    /// or its principal's tokens per day (the `error` before it says which).
    BudgetExceeded,
}

impl TaskOutcome {
    /// The word the API uses for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
            Self::MaxSteps => "max_steps",
            Self::BudgetExceeded => "budget_exceeded",
        }
    }
}

/// Tokens the model reported for a task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// What happened. Serialised with its `type` tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    TaskStarted {
        session_id: String,
        task: String,
        task_id: String,
    },
    TextDelta {
        content: String,
    },
    ToolCall {
        tool_name: String,
        /// The arguments as the model gave them (a JSON object; a string when
        /// the model produced invalid JSON).
        arguments: serde_json::Value,
        tool_call_id: String,
        /// Who called it when not the model (additive): `api`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<ToolSource>,
    },
    ToolComplete {
        tool_call_id: String,
        tool_name: String,
        /// The result, cut to `agent.event_result_chars`.
        result: String,
        is_error: bool,
        duration_ms: u64,
        /// Who called it when not the model (additive): `api`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<ToolSource>,
    },
    TaskCompleted {
        session_id: String,
        task: String,
        task_id: String,
        status: TaskOutcome,
        usage: Usage,
        steps: u32,
    },
    Error {
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        task_id: Option<String>,
    },
    /// A path in the workspace changed (additive): coalesced by the sandbox
    /// agent over half a second; a flood is reported by top-level directory,
    /// or as `.` (the whole workspace).
    FileChanged {
        path: String,
        kind: crate::workspace::ChangeKind,
    },
    /// A tool call waits for a person's approval (additive).
    ApprovalRequested {
        approval_id: String,
        /// Null for a connection (`tool_name` `network`).
        tool_call_id: Option<String>,
        /// The tool, or `network` for a connection.
        tool_name: String,
        arguments: serde_json::Value,
        /// What is being approved: the argument the tool declares (a
        /// command, a path), or all the arguments as JSON.
        subject: String,
        /// When it is denied by timeout.
        expires_at: String,
        task_id: Option<String>,
    },
    /// A request for approval was resolved (additive): by `user`, or by
    /// `timeout` (a denial) or `cancel` (the task was cancelled).
    ApprovalResolved {
        approval_id: String,
        decision: ApprovalDecision,
        by: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// The workspace was recorded as a checkpoint (additive): when the
    /// session was made (`task_id` null) and after each task, its changes
    /// counted against the checkpoint before it.
    CheckpointCreated {
        checkpoint_id: String,
        task_id: Option<String>,
        files_changed: u64,
        insertions: u64,
        deletions: u64,
        /// Files it left out: larger than
        /// `workspace.checkpoint_max_file_bytes`, or not a regular file.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        skipped: Vec<String>,
    },
    /// The session went back to a checkpoint (additive): its files, its
    /// conversation, or both. Nothing of the event log is removed.
    Rewound {
        checkpoint_id: String,
        scope: RewindScope,
        files_written: u64,
        files_removed: u64,
        messages_dropped: u64,
    },
    /// The conversation outgrew the model's window (additive): its older
    /// turns were summarised into a note that replaces them for the model
    /// (`method: "summary"`), or, when that was not enough, dropped
    /// (`"dropped"`). The event log keeps all of them.
    ContextCompacted {
        /// `threshold`: it reached `agent.compact_at_percent`;
        /// `context_length`: the model said the request was too long.
        reason: CompactReason,
        method: CompactMethod,
        messages_before: u64,
        messages_after: u64,
        chars_before: u64,
        chars_after: u64,
        task_id: Option<String>,
    },
    /// The session was made as a fork of another (additive), with its
    /// workspace as `checkpoint_id` recorded it and its conversation up to
    /// that checkpoint; the first event of a fork's log.
    Forked {
        parent_session_id: String,
        checkpoint_id: String,
    },
    /// Connections a program in the sandbox asked for (additive): one event
    /// per host, port, decision and reason, coalescing the connections that
    /// came close together (`connections` of them; bytes summed; the
    /// duration from the first one's start to the last one's end).
    NetworkRequest {
        host: String,
        port: u16,
        decision: NetworkDecision,
        reason: String,
        bytes_up: u64,
        bytes_down: u64,
        duration_ms: u64,
        connections: u64,
    },
}

/// Why a conversation was compacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompactReason {
    Threshold,
    ContextLength,
}

/// How a conversation was compacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompactMethod {
    Summary,
    Dropped,
}

/// What a rewind puts back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RewindScope {
    /// The workspace's files, as the checkpoint recorded them.
    Files,
    /// The conversation, cut after the checkpoint's task.
    Conversation,
    Both,
}

impl RewindScope {
    pub fn files(self) -> bool {
        matches!(self, Self::Files | Self::Both)
    }

    pub fn conversation(self) -> bool {
        matches!(self, Self::Conversation | Self::Both)
    }
}

/// Who called a tool, when not the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ToolSource {
    /// A client, through `POST /api/sessions/{id}/tools/{name}`.
    Api,
    /// An MCP client, through `/mcp/{session_id}`.
    Mcp,
}

impl ToolSource {
    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Mcp => "mcp",
        }
    }

    /// Whether its calls wait for a person's approval as the model's do. A
    /// REST caller is the person who would give it; an MCP client is most
    /// often another model.
    pub fn asks_approval(self) -> bool {
        match self {
            Self::Api => false,
            Self::Mcp => true,
        }
    }
}

/// How a request for approval was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalDecision {
    /// Run this call.
    Allow,
    /// Run it, and every later call of the tool whose subject matches the
    /// rule's pattern, without asking.
    AllowSession,
    /// Do not run it; the model is told why.
    Deny,
    /// The task was cancelled while the request waited.
    Cancelled,
}

impl ApprovalDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::AllowSession => "allow_session",
            Self::Deny => "deny",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Allow, Self::AllowSession, Self::Deny, Self::Cancelled]
            .into_iter()
            .find(|d| d.as_str() == s)
    }

    /// Whether the call runs.
    pub fn allows(self) -> bool {
        matches!(self, Self::Allow | Self::AllowSession)
    }
}

/// Whether a connection was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkDecision {
    Allowed,
    Denied,
}

impl NetworkDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
        }
    }
}

/// An event as a client reads it: its number, its time and what happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub timestamp: String,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// An event as stored and sent: its sequence number and its JSON text.
#[derive(Debug, Clone)]
pub struct Published {
    pub seq: u64,
    pub json: Arc<str>,
}

/// Most events written to the store in one statement.
const WRITE_BATCH: usize = 512;

/// One session's event log.
///
/// Events are queued in order. A writer task takes whatever is queued,
/// writes it to the store in one transaction (group commit) that also gives
/// the events their numbers, and only then broadcasts it. A burst of events
/// — a model streaming text — costs one write per batch, not one per event,
/// and no subscriber ever sees an event the store lacks. The store numbers
/// them, not this log, so two logs of one session (on two servers sharing
/// a database) never give out the same number; events another server
/// stored reach this log's subscribers through [`EventLog::catch_up`], in
/// order with this log's own: subscribers get every number once, in order.
#[derive(Debug)]
pub struct EventLog {
    store: Store,
    shared: Arc<Shared>,
    queue: mpsc::Sender<Pending>,
    /// The lease what is queued now is written under, while a task runs
    /// here ([`EventLog::fence`]).
    fence: std::sync::Mutex<Option<Arc<Fence>>>,
}

/// The lease this server runs a task of a session under, and what to stop
/// when a write under it is refused.
#[derive(Debug, Clone)]
pub struct Fence {
    lease: Lease,
    /// Cancelled when a write under the lease was refused: another server
    /// holds the session now, and the task must stop here.
    lost: CancellationToken,
}

impl Fence {
    pub fn new(lease: Lease, lost: CancellationToken) -> Self {
        Self { lease, lost }
    }

    pub fn lease(&self) -> Lease {
        self.lease
    }

    /// A write under the lease was refused: the task stops.
    pub fn refused(&self) {
        self.lost.cancel();
    }
}

/// While it lives, what its log queues is written under a lease; see
/// [`EventLog::fence`].
#[must_use = "the lease holds only while the guard lives"]
#[derive(Debug)]
pub struct FenceGuard<'a> {
    log: &'a EventLog,
}

impl Drop for FenceGuard<'_> {
    fn drop(&mut self) {
        self.log.fence.lock().unwrap().take();
    }
}

#[derive(Debug)]
struct Shared {
    session_id: String,
    /// The last sequence number broadcast (or skipped while nobody
    /// listened): every event up to it was sent, in order.
    published: AtomicU64,
    /// Held while broadcasting, so this log's own events and those caught
    /// up from the store go out one run at a time, in order.
    turn: tokio::sync::Mutex<()>,
    /// Why the last write failed, for the next [`EventLog::enqueue`].
    failure: std::sync::Mutex<Option<StoreError>>,
    sender: broadcast::Sender<Published>,
}

#[derive(Debug)]
struct Pending {
    kind: EventKind,
    /// Told when the event is stored and sent (or could not be stored).
    done: Option<oneshot::Sender<Result<u64, StoreError>>>,
    /// The lease it is written under, when a task ran here as it was
    /// queued.
    fence: Option<Arc<Fence>>,
}

impl Pending {
    fn same_fence(&self, other: &Self) -> bool {
        match (&self.fence, &other.fence) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl EventLog {
    /// The log of `session_id`, continuing after what the store holds.
    /// `buffer` bounds how far a live subscriber may fall behind.
    pub async fn open(store: Store, session_id: &str, buffer: usize) -> Result<Self, StoreError> {
        let last = store.last_event_seq(session_id).await?;
        let buffer = buffer.max(16);
        let (sender, _) = broadcast::channel(buffer);
        let shared = Arc::new(Shared {
            session_id: session_id.to_string(),
            published: last.into(),
            turn: Default::default(),
            failure: Default::default(),
            sender,
        });
        let (queue, pending) = mpsc::channel(WRITE_BATCH * 4);
        // A write hands out at most a buffer's worth: a burst larger than
        // that would put every follower behind at once, however fast.
        let batch = WRITE_BATCH.min(buffer);
        tokio::spawn(write_events(store.clone(), shared.clone(), pending, batch));
        Ok(Self {
            store,
            shared,
            queue,
            fence: Default::default(),
        })
    }

    /// Until the guard is dropped, what is queued here is written under
    /// the lease a task running here started with: once another server
    /// took the session over, the database refuses those writes (they fail
    /// with [`StoreError::Fenced`], and the fence is told, so the task
    /// stops), even if this server never heard of the takeover.
    pub fn fence(&self, fence: Fence) -> FenceGuard<'_> {
        *self.fence.lock().unwrap() = Some(Arc::new(fence));
        FenceGuard { log: self }
    }

    /// Writes an event to the store, then sends it to subscribers; returns
    /// its sequence number once both are done.
    pub async fn publish(&self, kind: EventKind) -> Result<u64, StoreError> {
        let (done, stored) = oneshot::channel();
        self.queue_event(kind, Some(done)).await?;
        let result = stored.await.map_err(|_| closed())?;
        if result.is_err() {
            // Reported here; not again by the next `enqueue`.
            self.shared.failure.lock().unwrap().take();
        }
        result
    }

    /// Queues an event to be stored and sent, in order with every other,
    /// without waiting for the write: for bursts such as streamed text. If
    /// a write failed since the last error reported, that error is returned
    /// here instead and nothing is queued.
    pub async fn enqueue(&self, kind: EventKind) -> Result<(), StoreError> {
        if let Some(e) = self.shared.failure.lock().unwrap().take() {
            return Err(e);
        }
        self.queue_event(kind, None).await
    }

    async fn queue_event(
        &self,
        kind: EventKind,
        done: Option<oneshot::Sender<Result<u64, StoreError>>>,
    ) -> Result<(), StoreError> {
        let fence = self.fence.lock().unwrap().clone();
        self.queue
            .send(Pending { kind, done, fence })
            .await
            .map_err(|_| closed())
    }

    /// Live events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.shared.sender.subscribe()
    }

    /// Stored events with `seq > after`, at most `limit`, in order.
    pub async fn stored_after(&self, after: u64, limit: u32) -> Result<Vec<Published>, StoreError> {
        Ok(self
            .store
            .events_after(&self.shared.session_id, after, limit)
            .await?
            .into_iter()
            .map(|(seq, json)| Published {
                seq,
                json: json.into(),
            })
            .collect())
    }

    /// The sequence number of the latest event stored and sent (0 when none).
    pub fn last_seq(&self) -> u64 {
        self.shared.published.load(Ordering::Acquire)
    }

    /// Sends subscribers the stored events up to `upto` that they have not
    /// had: those another server wrote (it announced `upto`). `None`: up
    /// to whatever the store holds (announcements may have been missed).
    pub async fn catch_up(&self, upto: Option<u64>) -> Result<(), StoreError> {
        if upto.is_some_and(|upto| upto <= self.last_seq()) {
            return Ok(());
        }
        let upto = match upto {
            Some(upto) => upto,
            None => self.store.last_event_seq(&self.shared.session_id).await?,
        };
        let _turn = self.shared.turn.lock().await;
        send_stored(&self.store, &self.shared, upto).await
    }

    /// Live subscribers right now.
    pub fn subscribers(&self) -> usize {
        self.shared.sender.receiver_count()
    }
}

fn closed() -> StoreError {
    StoreError::new("the event log is closed")
}

/// The writer: stores what is queued in batches, then broadcasts it. Ends
/// when the log is dropped and its queue drained.
async fn write_events(
    store: Store,
    shared: Arc<Shared>,
    mut pending: mpsc::Receiver<Pending>,
    most: usize,
) {
    let mut batch = Vec::with_capacity(most);
    while pending.recv_many(&mut batch, most).await > 0 {
        while !batch.is_empty() {
            // Events queued under one lease (or none) go in one write.
            let run = batch.iter().take_while(|p| p.same_fence(&batch[0])).count();
            let lease = batch[0].fence.as_ref().map(|f| f.lease);
            let stored = store
                .append_events(&shared.session_id, lease, &batch[..run], |seq, p| {
                    render(seq, &p.kind)
                })
                .await;
            match stored {
                Ok(rows) => {
                    let seqs: Vec<u64> = rows.iter().map(|(seq, _)| *seq).collect();
                    broadcast_written(&store, &shared, rows).await;
                    for (p, seq) in batch.drain(..run).zip(seqs) {
                        if let Some(done) = p.done {
                            let _ = done.send(Ok(seq));
                        }
                    }
                    // Followers take these before the next are sent.
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    if e.is_fenced()
                        && let Some(fence) = &batch[0].fence
                    {
                        tracing::warn!(session = %shared.session_id, "another server took the session over; this server's task stops writing");
                        fence.refused();
                    } else {
                        tracing::error!(session = %shared.session_id, error = %e, events = run, "could not store events");
                    }
                    // Everything queued behind the failed events fails with
                    // them; the store gave no numbers away, so the log stays
                    // without gaps.
                    while let Ok(p) = pending.try_recv() {
                        batch.push(p);
                    }
                    for p in batch.drain(..) {
                        if let Some(done) = p.done {
                            let _ = done.send(Err(e.clone()));
                        }
                    }
                    *shared.failure.lock().unwrap() = Some(e);
                }
            }
        }
    }
}

/// Broadcasts events this log stored, after those other servers stored
/// before them. Should reading those fail, these wait too (they are
/// stored; the next catch-up sends them): a gap would make followers skip
/// what is missing.
async fn broadcast_written(store: &Store, shared: &Shared, rows: Vec<(u64, String)>) {
    let _turn = shared.turn.lock().await;
    let first = rows[0].0;
    let caught_up = match send_stored(store, shared, first - 1).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(session = %shared.session_id, error = %e, "could not read events stored elsewhere");
            false
        }
    };
    for (seq, json) in rows {
        if caught_up && seq > shared.published.load(Ordering::Acquire) {
            send(shared, seq, json.into());
        }
    }
}

/// Broadcasts one event and marks it sent.
fn send(shared: &Shared, seq: u64, json: Arc<str>) {
    shared.published.store(seq, Ordering::Release);
    // No subscribers is fine.
    let _ = shared.sender.send(Published { seq, json });
}

/// Broadcasts the stored events after the last one sent, up to `upto`.
/// With nobody subscribed there is nothing to read: a subscriber reads the
/// store after it subscribes, so it finds them there. Call it holding
/// `shared.turn`.
async fn send_stored(store: &Store, shared: &Shared, upto: u64) -> Result<(), StoreError> {
    loop {
        let after = shared.published.load(Ordering::Acquire);
        if after >= upto {
            return Ok(());
        }
        if shared.sender.receiver_count() == 0 {
            shared.published.store(upto, Ordering::Release);
            return Ok(());
        }
        let most = (upto - after).min(u64::from(REPLAY_BATCH)) as u32;
        let events = store.events_after(&shared.session_id, after, most).await?;
        if events.is_empty() {
            // Announced but not visible yet: the next announcement or
            // write sends them.
            return Ok(());
        }
        for (seq, json) in events {
            send(shared, seq, json.into());
        }
    }
}

/// Why a [`Follower`] stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowError {
    /// The follower fell more than the buffer behind; `last` is the last
    /// event it delivered (resume after it).
    #[error("fell {missed} events behind after event {last}")]
    Lagged { missed: u64, last: u64 },
    #[error("could not read stored events: {0}")]
    Store(String),
}

/// Stored events after a point, then live ones, each exactly once and in
/// order: it subscribes before it reads the store, and drops live events it
/// already delivered from the store.
pub struct Follower {
    log: Arc<EventLog>,
    live: broadcast::Receiver<Published>,
    replay: std::collections::VecDeque<Published>,
    /// Still reading the store.
    replaying: bool,
    last: u64,
}

/// Events read from the store per query while replaying.
const REPLAY_BATCH: u32 = 500;

impl Follower {
    /// Follows `log`: with `since`, from the stored event after it; without,
    /// from the next event published.
    pub fn new(log: Arc<EventLog>, since: Option<u64>) -> Self {
        let live = log.subscribe();
        Self {
            log,
            live,
            replay: Default::default(),
            replaying: since.is_some(),
            last: since.unwrap_or(0),
        }
    }

    /// The last sequence number delivered.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The next event if one is ready now, without waiting: for sending
    /// what is already there in one write. `None` when nothing is ready
    /// (then [`Self::next`] waits, and reports a closed log).
    pub fn next_ready(&mut self) -> Option<Result<Published, FollowError>> {
        if let Some(event) = self.replay.pop_front() {
            self.last = event.seq;
            return Some(Ok(event));
        }
        if self.replaying {
            return None;
        }
        loop {
            match self.live.try_recv() {
                Ok(event) if event.seq <= self.last => {}
                Ok(event) => {
                    self.last = event.seq;
                    return Some(Ok(event));
                }
                Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                    return Some(Err(FollowError::Lagged {
                        missed,
                        last: self.last,
                    }));
                }
                Err(_) => return None,
            }
        }
    }

    /// The next event; `Ok(None)` when the log is gone.
    pub async fn next(&mut self) -> Result<Option<Published>, FollowError> {
        loop {
            if let Some(event) = self.replay.pop_front() {
                self.last = event.seq;
                return Ok(Some(event));
            }
            if self.replaying {
                let batch = self
                    .log
                    .stored_after(self.last, REPLAY_BATCH)
                    .await
                    .map_err(|e| FollowError::Store(e.to_string()))?;
                self.replaying = batch.len() == REPLAY_BATCH as usize;
                self.replay.extend(batch);
                continue;
            }
            match self.live.recv().await {
                Ok(event) if event.seq <= self.last => {}
                Ok(event) => {
                    self.last = event.seq;
                    return Ok(Some(event));
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Err(FollowError::Lagged {
                        missed,
                        last: self.last,
                    });
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(None),
            }
        }
    }
}

fn render(seq: u64, kind: &EventKind) -> String {
    /// [`Event`], borrowing what happened.
    #[derive(Serialize)]
    struct Rendered<'a> {
        seq: u64,
        timestamp: String,
        #[serde(flatten)]
        kind: &'a EventKind,
    }
    let event = Rendered {
        seq,
        timestamp: crate::time::timestamp(Utc::now()),
        kind,
    };
    serde_json::to_string(&event).expect("events serialise")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::SessionRecord;

    /// A store holding one session, `s1`.
    async fn store_with_session(dir: &std::path::Path) -> Store {
        let store = Store::open(dir).await.unwrap();
        store_session(&store).await;
        store
    }

    async fn store_session(store: &Store) {
        store.insert_session(&session_s1(None)).await.unwrap();
    }

    /// Session `s1`, held by `server`.
    fn session_s1(server: Option<&str>) -> SessionRecord {
        SessionRecord {
            id: "s1".into(),
            container_id: "c".into(),
            workdir: "/w".into(),
            created: Utc::now(),
            last_task: None,
            error: None,
            network: None,
            approval: "default".into(),
            owner: "local".into(),
            budget_tokens: None,
            server: server.map(str::to_string),
            engine: None,
        }
    }

    async fn log() -> (tempfile::TempDir, Store, EventLog) {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_session(dir.path()).await;
        let log = EventLog::open(store.clone(), "s1", 64).await.unwrap();
        (dir, store, log)
    }

    #[test]
    fn outcome_words_are_their_serialised_form() {
        for outcome in [
            TaskOutcome::Completed,
            TaskOutcome::Failed,
            TaskOutcome::Cancelled,
            TaskOutcome::Interrupted,
            TaskOutcome::MaxSteps,
        ] {
            assert_eq!(serde_json::to_value(outcome).unwrap(), outcome.as_str());
        }
    }

    #[test]
    fn a_rendered_event_reads_back_as_the_same_event() {
        let kinds = [
            EventKind::ToolCall {
                tool_name: "shell".into(),
                arguments: serde_json::json!({"cmd": "ls"}),
                tool_call_id: "c1".into(),
                source: None,
            },
            EventKind::ToolComplete {
                tool_call_id: "api_1".into(),
                tool_name: "shell".into(),
                result: "hi".into(),
                is_error: false,
                duration_ms: 3,
                source: Some(ToolSource::Api),
            },
            EventKind::ApprovalRequested {
                approval_id: "a1".into(),
                tool_call_id: None,
                tool_name: "network".into(),
                arguments: serde_json::json!({"host": "pypi.org", "port": 443}),
                subject: "pypi.org:443".into(),
                expires_at: "2026-11-26T10:00:00.000Z".into(),
                task_id: None,
            },
            EventKind::ApprovalResolved {
                approval_id: "a1".into(),
                decision: ApprovalDecision::AllowSession,
                by: "user".into(),
                message: None,
            },
            EventKind::Error {
                message: "boom".into(),
                task_id: None,
            },
            EventKind::CheckpointCreated {
                checkpoint_id: "0123456789abcdef0123456789abcdef01234567".into(),
                task_id: Some("1".into()),
                files_changed: 2,
                insertions: 3,
                deletions: 1,
                skipped: vec!["big.bin".into()],
            },
            EventKind::Rewound {
                checkpoint_id: "0123456789abcdef0123456789abcdef01234567".into(),
                scope: RewindScope::Both,
                files_written: 2,
                files_removed: 1,
                messages_dropped: 4,
            },
            EventKind::Forked {
                parent_session_id: "0000abcd".into(),
                checkpoint_id: "0123456789abcdef0123456789abcdef01234567".into(),
            },
            EventKind::TaskCompleted {
                session_id: "0000abcd".into(),
                task: "t".into(),
                task_id: "1".into(),
                status: TaskOutcome::MaxSteps,
                usage: Usage {
                    prompt_tokens: 1,
                    completion_tokens: 2,
                    total_tokens: 3,
                },
                steps: 4,
            },
        ];
        for (i, kind) in kinds.into_iter().enumerate() {
            let json = render(i as u64 + 7, &kind);
            let event: Event = serde_json::from_str(&json).unwrap();
            assert_eq!((event.seq, event.kind), (i as u64 + 7, kind), "{json}");
        }
    }

    #[tokio::test]
    async fn events_carry_contract_fields_seq_and_timestamp() {
        let (_d, _s, log) = log().await;
        let mut rx = log.subscribe();
        log.publish(EventKind::TextDelta {
            content: "hi".into(),
        })
        .await
        .unwrap();
        let got = rx.recv().await.unwrap();
        assert_eq!(got.seq, 1);
        let v: serde_json::Value = serde_json::from_str(&got.json).unwrap();
        assert_eq!(v["type"], "text_delta");
        assert_eq!(v["content"], "hi");
        assert_eq!(v["seq"], 1);
        assert_eq!(v["timestamp"].as_str().unwrap().len(), 24);
    }

    mod generated {
        use super::*;
        use proptest::prelude::*;

        /// Publishes `before` events, then `during` more while a follower
        /// from `since` reads; returns what it delivered and how it ended.
        async fn scenario(
            before: u64,
            during: u64,
            since: u64,
            buffer: usize,
        ) -> (Vec<u64>, Option<FollowError>) {
            let dir = tempfile::tempdir().unwrap();
            let store = super::store_with_session(dir.path()).await;
            let log = Arc::new(EventLog::open(store, "s1", buffer).await.unwrap());
            for _ in 0..before {
                log.publish(EventKind::TextDelta {
                    content: "b".into(),
                })
                .await
                .unwrap();
            }
            let mut follower = Follower::new(log.clone(), Some(since));
            let writer = {
                let log = log.clone();
                tokio::spawn(async move {
                    for i in 0..during {
                        let event = EventKind::TextDelta {
                            content: "d".into(),
                        };
                        // Streamed (queued) and awaited events interleave.
                        if i % 3 == 0 {
                            log.publish(event).await.unwrap();
                        } else {
                            log.enqueue(event).await.unwrap();
                        }
                        tokio::task::yield_now().await;
                    }
                })
            };
            let total = before + during;
            let mut seqs = Vec::new();
            let mut ended = None;
            while seqs.last().copied().unwrap_or(since) < total {
                // What is ready is taken without waiting, as the WebSocket
                // does; then it waits.
                let next = match follower.next_ready() {
                    Some(ready) => ready.map(Some),
                    None => follower.next().await,
                };
                match next {
                    Ok(Some(p)) => seqs.push(p.seq),
                    Ok(None) => break,
                    Err(e) => {
                        ended = Some(e);
                        break;
                    }
                }
            }
            writer.await.unwrap();
            (seqs, ended)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]

            /// A follower delivers exactly the events after `since`, in order,
            /// with no gap and no duplicate, however publishing interleaves;
            /// if it falls behind its buffer it says so, and what it did
            /// deliver is still a gap-free prefix to resume after.
            #[test]
            fn replay_then_live_is_exact(before in 0u64..80, during in 0u64..200, since_frac in 0.0f64..1.0, small in any::<bool>()) {
                let since = ((before as f64) * since_frac) as u64;
                let buffer = if small { 16 } else { 4096 };
                let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
                let (seqs, ended) = rt.block_on(scenario(before, during, since, buffer));
                let expected_prefix: Vec<u64> = (since + 1..=since + seqs.len() as u64).collect();
                prop_assert_eq!(&seqs, &expected_prefix);
                match ended {
                    None => prop_assert_eq!(seqs.len() as u64, before + during - since),
                    Some(FollowError::Lagged { last, .. }) => {
                        prop_assert!(small, "lagged with a large buffer");
                        prop_assert_eq!(last, seqs.last().copied().unwrap_or(since));
                    }
                    Some(e) => prop_assert!(false, "unexpected error {e}"),
                }
            }
        }
    }

    /// A PostgreSQL database holding session `s1`, and two stores on it:
    /// two servers' views.
    async fn two_servers() -> (crate::store::scratch::ScratchDatabase, Store, Store) {
        let db = crate::store::scratch::ScratchDatabase::create().await;
        let a = Store::connect(&db.config).await.unwrap();
        let b = Store::connect(&db.config).await.unwrap();
        store_session(&a).await;
        (db, a, b)
    }

    /// Two servers sharing one PostgreSQL each hold a log of the same
    /// session (one runs its task, the other answers a REST call): their
    /// events are numbered by the database, so none is refused as a
    /// duplicate number and the log has no gap.
    #[tokio::test]
    async fn logs_of_one_session_on_two_servers_never_collide() {
        let (_db, a, b) = two_servers().await;
        let logs = [
            Arc::new(EventLog::open(a.clone(), "s1", 64).await.unwrap()),
            Arc::new(EventLog::open(b, "s1", 64).await.unwrap()),
        ];
        let writers: Vec<_> = logs
            .iter()
            .cloned()
            .enumerate()
            .map(|(w, log)| {
                tokio::spawn(async move {
                    let mut seqs = Vec::new();
                    for i in 0..40 {
                        let kind = EventKind::TextDelta {
                            content: format!("{w}/{i}"),
                        };
                        seqs.push(log.publish(kind).await.unwrap());
                    }
                    seqs
                })
            })
            .collect();
        let mut all = Vec::new();
        for w in writers {
            let seqs = w.await.unwrap();
            // Each writer's own events keep their order.
            assert!(seqs.windows(2).all(|p| p[0] < p[1]), "{seqs:?}");
            all.extend(seqs);
        }
        all.sort_unstable();
        assert_eq!(all, (1..=80).collect::<Vec<_>>());
        let stored = a.events_after("s1", 0, 1000).await.unwrap();
        assert_eq!(stored.len(), 80);
    }

    /// A WebSocket on server B follows a task running on server A: B's
    /// follower gets A's events as PostgreSQL announces them, interleaved
    /// with B's own, each number once and in order.
    #[tokio::test]
    async fn a_follower_on_one_server_gets_events_written_on_another() {
        let (_db, a, b) = two_servers().await;
        let on_a = Arc::new(EventLog::open(a, "s1", 64).await.unwrap());
        let on_b = Arc::new(EventLog::open(b.clone(), "s1", 64).await.unwrap());
        // What the session manager does on B.
        let mut notices = b.event_notices().await.unwrap().unwrap();
        let listener = {
            let on_b = on_b.clone();
            tokio::spawn(async move {
                loop {
                    match notices.next().await.unwrap() {
                        crate::store::Notice::Stored { last, .. } => {
                            on_b.catch_up(Some(last)).await.unwrap()
                        }
                        crate::store::Notice::Missed => on_b.catch_up(None).await.unwrap(),
                        crate::store::Notice::Created(_)
                        | crate::store::Notice::Deleted(_)
                        | crate::store::Notice::Work(_) => {}
                    }
                }
            })
        };
        let mut follower = Follower::new(on_b.clone(), Some(0));
        let text = |s: String| EventKind::TextDelta { content: s };
        let writers: Vec<_> = [on_a.clone(), on_b.clone()]
            .into_iter()
            .enumerate()
            .map(|(w, log)| {
                tokio::spawn(async move {
                    for i in 0..60 {
                        if i % 4 == 0 {
                            log.publish(text(format!("{w}/{i}"))).await.unwrap();
                        } else {
                            log.enqueue(text(format!("{w}/{i}"))).await.unwrap();
                        }
                        if i % 7 == 0 {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    }
                })
            })
            .collect();
        let mut got = Vec::new();
        while got.len() < 120 {
            let event = tokio::time::timeout(Duration::from_secs(10), follower.next())
                .await
                .unwrap_or_else(|_| panic!("stuck after {} events: {got:?}", got.len()))
                .unwrap()
                .unwrap();
            let v: serde_json::Value = serde_json::from_str(&event.json).unwrap();
            assert_eq!(v["seq"], event.seq);
            got.push((event.seq, v["content"].as_str().unwrap().to_string()));
        }
        for w in writers {
            w.await.unwrap();
        }
        assert_eq!(
            got.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            (1..=120).collect::<Vec<_>>()
        );
        // Both servers' events are there, each writer's in its own order.
        for w in 0..2 {
            let mine: Vec<&str> = got
                .iter()
                .map(|(_, c)| c.as_str())
                .filter(|c| c.starts_with(&format!("{w}/")))
                .collect();
            let expected: Vec<String> = (0..60).map(|i| format!("{w}/{i}")).collect();
            assert_eq!(mine, expected);
        }
        listener.abort();
    }

    #[tokio::test]
    async fn sequence_continues_after_reopening() {
        let (_d, store, log) = log().await;
        for _ in 0..3 {
            log.publish(EventKind::TextDelta {
                content: "x".into(),
            })
            .await
            .unwrap();
        }
        let reopened = EventLog::open(store, "s1", 64).await.unwrap();
        assert_eq!(
            reopened
                .publish(EventKind::TextDelta {
                    content: "y".into()
                })
                .await
                .unwrap(),
            4
        );
        let stored = reopened.stored_after(2, 100).await.unwrap();
        assert_eq!(stored.iter().map(|p| p.seq).collect::<Vec<_>>(), vec![3, 4]);
    }

    #[tokio::test]
    async fn queued_events_are_stored_in_order_before_a_later_publish_returns() {
        let (_d, store, _) = log().await;
        let log = EventLog::open(store.clone(), "s1", 1024).await.unwrap();
        let mut rx = log.subscribe();
        for i in 1..=300u64 {
            log.enqueue(EventKind::TextDelta {
                content: i.to_string(),
            })
            .await
            .unwrap();
        }
        let last = log
            .publish(EventKind::TextDelta {
                content: "end".into(),
            })
            .await
            .unwrap();
        assert_eq!(last, 301);
        assert_eq!(log.last_seq(), 301);
        // All stored, in order, when the publish behind them returned.
        let stored = store.events_after("s1", 0, 1000).await.unwrap();
        assert_eq!(
            stored.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            (1..=301).collect::<Vec<_>>()
        );
        for (seq, json) in &stored[..300] {
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(v["content"], seq.to_string());
        }
        // And broadcast in the same order.
        for i in 1..=301u64 {
            assert_eq!(rx.recv().await.unwrap().seq, i);
        }
    }

    /// A burst queued faster than anyone reads (a model's stream read in
    /// one chunk) never puts a follower that keeps up behind its buffer:
    /// the writer hands out at most a buffer's worth of events per write
    /// and lets followers run before the next.
    #[tokio::test]
    async fn a_burst_larger_than_the_buffer_does_not_lag_a_follower_that_keeps_up() {
        let (_d, store, _) = log().await;
        let log = Arc::new(EventLog::open(store, "s1", 16).await.unwrap());
        let mut follower = Follower::new(log.clone(), None);
        for i in 0..200u64 {
            log.enqueue(EventKind::TextDelta {
                content: i.to_string(),
            })
            .await
            .unwrap();
        }
        for expected in 1..=200u64 {
            let event = tokio::time::timeout(Duration::from_secs(10), follower.next())
                .await
                .expect("an event within 10 s");
            match event {
                Ok(Some(p)) => assert_eq!(p.seq, expected),
                other => panic!("event {expected}: {other:?}"),
            }
        }
    }

    /// What a log queues while a task's fence is up is written under its
    /// lease: once another server took the session over, those writes are
    /// refused (nothing stored, no number used, the fence told), while
    /// what was queued before or after the fence is written as usual.
    #[tokio::test]
    async fn events_queued_under_a_lost_lease_are_refused_and_the_fence_told() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open(dir.path()).await.unwrap().with_server("aaaa");
        let b = Store::open(dir.path()).await.unwrap().with_server("bbbb");
        a.heartbeat().await.unwrap();
        b.heartbeat().await.unwrap();
        a.insert_session(&session_s1(Some("aaaa"))).await.unwrap();
        a.insert_task("s1", "t1", "x").await.unwrap();
        let lease = a.start_task("s1", "t1").await.unwrap().unwrap();
        let log = EventLog::open(a.clone(), "s1", 64).await.unwrap();
        let text = |s: &str| EventKind::TextDelta { content: s.into() };

        let lost = CancellationToken::new();
        let fenced = log.fence(Fence::new(lease, lost.clone()));
        log.enqueue(text("under the lease")).await.unwrap();
        assert_eq!(log.publish(text("still held")).await, Ok(2));
        assert!(!lost.is_cancelled());
        a.execute_raw("UPDATE servers SET heartbeat = heartbeat - 120000 WHERE id = 'aaaa'")
            .await;
        let taken = b.take_over_sessions(Duration::from_secs(60)).await.unwrap();
        assert_eq!(taken, ["s1"]);
        log.enqueue(text("late")).await.unwrap();
        assert_eq!(log.publish(text("late too")).await, Err(StoreError::Fenced));
        assert!(lost.is_cancelled(), "the fence was not told");
        drop(fenced);
        // Not a task's: written as any other server's would be.
        assert_eq!(log.publish(text("after")).await, Ok(3));
        let stored = b.events_after("s1", 0, 100).await.unwrap();
        assert_eq!(stored.len(), 3, "{stored:?}");
        assert!(
            stored.iter().all(|(_, e)| !e.contains("late")),
            "{stored:?}"
        );
    }

    #[tokio::test]
    async fn a_failed_write_is_reported_and_numbering_stays_gapless() {
        let (_d, store, log) = log().await;
        let text = |s: &str| EventKind::TextDelta { content: s.into() };
        log.publish(text("kept")).await.unwrap();
        // The store refuses writes for a while (a full disk, say).
        store
            .execute_raw(
                "CREATE TRIGGER refuse BEFORE INSERT ON events \
                 BEGIN SELECT RAISE(ABORT, 'disk full'); END",
            )
            .await;
        let err = log.publish(text("lost")).await.unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(log.last_seq(), 1);
        // A queued event's failure comes back from a later enqueue.
        log.enqueue(text("lost too")).await.unwrap();
        let mut reported = false;
        for _ in 0..500 {
            if log.enqueue(text("probe")).await.is_err() {
                reported = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(reported, "a failed queued write was never reported");
        // Once the store takes writes again, numbering resumes after the
        // last stored event: no gap.
        store.execute_raw("DROP TRIGGER refuse").await;
        let seq = log.publish(text("again")).await.unwrap();
        assert_eq!(seq, 2);
        let stored = store.events_after("s1", 0, 100).await.unwrap();
        assert_eq!(
            stored.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            (1..=seq).collect::<Vec<_>>()
        );
    }
}
