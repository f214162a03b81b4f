//! A person's approval of tool calls, per session: the requests waiting for
//! one, how they were resolved, and the rules "allow for this session"
//! added.
//!
//! A request is stored, then announced (`approval_requested`), then waited
//! for by the tool call that asked. Exactly one resolution wins, in the
//! store (`UPDATE ... WHERE decision IS NULL`): a person's decision, the
//! timeout, or the task's cancellation; it is announced
//! (`approval_resolved`) and handed to the waiting call. Requests outlive
//! the server: after a restart, the resumed task waits on the same request
//! (see [`SessionApprovals::wait`]), and clients find it through replay and
//! `GET /api/sessions/{id}/approvals`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::subject_glob;
use crate::events::{EventKind, EventLog};
use crate::store::{ApprovalRecord, ApprovalResolution, Store, StoreError};

/// How a session's tool calls are approved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalMode {
    /// As the operator configured each tool (`[tools.<name>] approval`).
    #[default]
    Default,
    /// Every call of a tool that can change something asks.
    All,
    /// Nothing asks (only where `agent.allow_approval_none` permits it).
    None,
}

impl ApprovalMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::All => "all",
            Self::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Default, Self::All, Self::None]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

pub use crate::events::ApprovalDecision as Decision;

/// Who resolved a request when no person did.
pub const BY_TIMEOUT: &str = "timeout";
pub const BY_CANCEL: &str = "cancel";

/// A request for approval, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalRequest {
    pub approval_id: String,
    /// The task whose call waits; null for a connection (`tool_name`
    /// `network`).
    pub task_id: Option<String>,
    /// Null for a connection.
    pub tool_call_id: Option<String>,
    /// The tool, or `network` for a connection to a host outside the
    /// allow list (`[network] ask = true`).
    pub tool_name: String,
    /// The arguments as the model gave them.
    pub arguments: serde_json::Value,
    /// What is being approved: the argument the tool declares (a command, a
    /// path), or all the arguments as JSON.
    pub subject: String,
    pub requested_at: DateTime<Utc>,
    /// When it is denied by timeout.
    pub expires_at: DateTime<Utc>,
}

impl ApprovalRequest {
    fn from_record(r: &ApprovalRecord) -> Self {
        Self {
            approval_id: r.id.clone(),
            task_id: Some(r.task_id.clone()).filter(|t| !t.is_empty()),
            tool_call_id: Some(r.tool_call_id.clone()).filter(|t| !t.is_empty()),
            tool_name: r.tool_name.clone(),
            arguments: serde_json::from_str(&r.arguments)
                .unwrap_or_else(|_| serde_json::Value::String(r.arguments.clone())),
            subject: r.subject.clone(),
            requested_at: r.requested,
            expires_at: r.expires,
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub decision: Decision,
    /// The person's message (for a denial: why).
    pub message: Option<String>,
    /// Who resolved it: `user`, `timeout` or `cancel`.
    pub by: String,
}

/// A rule "allow for this session" added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalRule {
    pub tool_name: String,
    /// Glob on the subject: `*` matches anything, `?` one character.
    pub pattern: String,
}

/// Why a request could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no approval request {0} in this session")]
    NotFound(String),
    #[error("approval request {id} was already resolved: {decision} by {by}")]
    AlreadyResolved {
        id: String,
        decision: String,
        by: String,
    },
    #[error("{0}")]
    InvalidPattern(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Glob metacharacters escaped, so a subject matches only itself.
pub fn literal_pattern(subject: &str) -> String {
    let mut out = String::with_capacity(subject.len());
    for c in subject.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One session's approvals.
pub struct SessionApprovals {
    session_id: String,
    store: Store,
    events: Arc<EventLog>,
    mode: ApprovalMode,
    timeout: Duration,
    state: Mutex<State>,
}

impl std::fmt::Debug for SessionApprovals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionApprovals")
            .field("session_id", &self.session_id)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    /// Tool calls waiting, by approval id.
    waiters: HashMap<String, oneshot::Sender<Resolution>>,
    rules: Vec<(ApprovalRule, globset::GlobMatcher)>,
}

impl SessionApprovals {
    /// A session's approvals, with the rules it stored.
    pub fn new(
        session_id: &str,
        store: Store,
        events: Arc<EventLog>,
        mode: ApprovalMode,
        timeout: Duration,
        rules: Vec<(String, String)>,
    ) -> Self {
        let rules = rules
            .into_iter()
            .filter_map(|(tool_name, pattern)| {
                let matcher = subject_glob(&pattern).ok()?;
                Some((ApprovalRule { tool_name, pattern }, matcher))
            })
            .collect();
        Self {
            session_id: session_id.to_string(),
            store,
            events,
            mode,
            timeout,
            state: Mutex::new(State {
                waiters: HashMap::new(),
                rules,
            }),
        }
    }

    pub fn mode(&self) -> ApprovalMode {
        self.mode
    }

    /// How long a request waits before it is denied.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether a rule of this session allows `tool` with `subject`.
    pub async fn rule_allows(&self, tool: &str, subject: &str) -> bool {
        let state = self.state.lock().await;
        state
            .rules
            .iter()
            .any(|(rule, m)| rule.tool_name == tool && m.is_match(subject))
    }

    pub async fn rules(&self) -> Vec<ApprovalRule> {
        let state = self.state.lock().await;
        state.rules.iter().map(|(r, _)| r.clone()).collect()
    }

    /// Requests still waiting, oldest first.
    pub async fn pending(&self) -> Result<Vec<ApprovalRequest>, StoreError> {
        Ok(self
            .store
            .pending_approvals(&self.session_id)
            .await?
            .iter()
            .map(ApprovalRequest::from_record)
            .collect())
    }

    /// Stores and announces a request, which expires after `timeout`, and
    /// returns it with the receiver its resolution arrives on. `call`: the
    /// task and tool call that wait (none for a connection).
    pub async fn request(
        &self,
        call: Option<(&str, &str)>,
        tool_name: &str,
        arguments: &str,
        subject: &str,
        timeout: Duration,
    ) -> Result<(ApprovalRequest, oneshot::Receiver<Resolution>), StoreError> {
        let now = Utc::now();
        let expires = now + chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
        let (task_id, tool_call_id) = call.unwrap_or_default();
        let record = ApprovalRecord {
            id: format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff),
            task_id: task_id.to_string(),
            tool_call_id: tool_call_id.to_string(),
            tool_name: tool_name.to_string(),
            arguments: arguments.to_string(),
            subject: subject.to_string(),
            requested: now,
            expires,
            resolution: None,
        };
        let request = ApprovalRequest::from_record(&record);
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.state.lock().await;
            self.store
                .insert_approval(&self.session_id, &record)
                .await?;
            state.waiters.insert(record.id.clone(), tx);
        }
        self.events
            .publish(EventKind::ApprovalRequested {
                approval_id: request.approval_id.clone(),
                tool_call_id: request.tool_call_id.clone(),
                tool_name: request.tool_name.clone(),
                arguments: request.arguments.clone(),
                subject: request.subject.clone(),
                expires_at: expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                task_id: request.task_id.clone(),
            })
            .await?;
        Ok((request, rx))
    }

    /// Waits for the answer to `request`; when it expires first, it is
    /// denied by `timeout` (unless a person's decision got there first).
    /// `Stopped` when `stop` fires first: the request still waits, and the
    /// caller decides what becomes of it.
    pub async fn answer(
        &self,
        request: &ApprovalRequest,
        mut answer: oneshot::Receiver<Resolution>,
        stop: &CancellationToken,
    ) -> Result<Waited, ResolveError> {
        let left = (request.expires_at - Utc::now())
            .to_std()
            .unwrap_or_default();
        tokio::select! {
            r = &mut answer => Ok(Waited::Answered(r.unwrap_or_else(|_| abandoned()))),
            _ = tokio::time::sleep(left) => {
                let secs = (request.expires_at - request.requested_at).num_seconds();
                let message = format!("no one approved this call within {secs} s");
                let r = self.settle(&request.approval_id, Decision::Deny, message, BY_TIMEOUT, answer).await?;
                Ok(Waited::Answered(r))
            }
            _ = stop.cancelled() => Ok(Waited::Stopped(answer)),
        }
    }

    /// Resolves a request for the server (a timeout, a cancel) and returns
    /// how it ended: when a person's decision got there first, that one.
    pub async fn settle(
        &self,
        id: &str,
        decision: Decision,
        message: String,
        by: &str,
        answer: oneshot::Receiver<Resolution>,
    ) -> Result<Resolution, ResolveError> {
        match self.resolve(id, decision, Some(message), by, None).await {
            Ok(_) | Err(ResolveError::AlreadyResolved { .. }) => {
                Ok(answer.await.unwrap_or_else(|_| abandoned()))
            }
            Err(e) => Err(e),
        }
    }

    /// After a restart: the request made for `tool_call_id`, with a
    /// receiver for its resolution (which holds it already when it was
    /// resolved while no call waited). `None` when no request was made.
    pub async fn wait(
        &self,
        tool_call_id: &str,
    ) -> Result<Option<(ApprovalRequest, oneshot::Receiver<Resolution>)>, StoreError> {
        let mut state = self.state.lock().await;
        let Some(record) = self
            .store
            .approval_for_call(&self.session_id, tool_call_id)
            .await?
        else {
            return Ok(None);
        };
        let (tx, rx) = oneshot::channel();
        match &record.resolution {
            Some(r) => {
                let _ = tx.send(resolution(r));
            }
            None => {
                state.waiters.insert(record.id.clone(), tx);
            }
        }
        Ok(Some((ApprovalRequest::from_record(&record), rx)))
    }

    /// Resolves a waiting request: records it (exactly one resolution
    /// wins), adds the session rule `allow_session` asks for (`pattern`, or
    /// the exact subject), announces it and wakes the call that waits.
    pub async fn resolve(
        &self,
        approval_id: &str,
        decision: Decision,
        message: Option<String>,
        by: &str,
        pattern: Option<String>,
    ) -> Result<ApprovalRequest, ResolveError> {
        let mut state = self.state.lock().await;
        let record = self
            .store
            .approval(&self.session_id, approval_id)
            .await?
            .ok_or_else(|| ResolveError::NotFound(approval_id.to_string()))?;
        if let Some(done) = &record.resolution {
            return Err(ResolveError::AlreadyResolved {
                id: approval_id.to_string(),
                decision: done.decision.clone(),
                by: done.by.clone(),
            });
        }
        let rule = match decision {
            Decision::AllowSession => {
                let pattern = pattern.unwrap_or_else(|| literal_pattern(&record.subject));
                let matcher = subject_glob(&pattern).map_err(ResolveError::InvalidPattern)?;
                Some((
                    ApprovalRule {
                        tool_name: record.tool_name.clone(),
                        pattern,
                    },
                    matcher,
                ))
            }
            _ => None,
        };
        let resolved = ApprovalResolution {
            decision: decision.as_str().to_string(),
            message: message.clone(),
            by: by.to_string(),
            at: Utc::now(),
        };
        if !self
            .store
            .resolve_approval(&self.session_id, approval_id, &resolved)
            .await?
        {
            return Err(ResolveError::AlreadyResolved {
                id: approval_id.to_string(),
                decision: "resolved".into(),
                by: "someone else".into(),
            });
        }
        if let Some((rule, matcher)) = rule {
            self.store
                .insert_approval_rule(&self.session_id, &rule.tool_name, &rule.pattern)
                .await?;
            if !state.rules.iter().any(|(r, _)| r == &rule) {
                state.rules.push((rule, matcher));
            }
        }
        self.events
            .publish(EventKind::ApprovalResolved {
                approval_id: approval_id.to_string(),
                decision,
                by: by.to_string(),
                message: message.clone(),
            })
            .await?;
        match state.waiters.remove(approval_id) {
            Some(waiter) => {
                let _ = waiter.send(Resolution {
                    decision,
                    message,
                    by: by.to_string(),
                });
            }
            // The call may wait on the server holding the session.
            None => {
                let work = crate::store::Work::Resolved {
                    session_id: self.session_id.clone(),
                    approval_id: approval_id.to_string(),
                };
                if let Err(e) = self.store.hand_over(&work).await {
                    tracing::warn!(session = %self.session_id, approval = approval_id, error = %e, "could not tell the other servers of a resolution; the call waiting for it sees it at its server's next start");
                }
            }
        }
        Ok(ApprovalRequest::from_record(&record))
    }

    /// Wakes the call waiting here for `approval_id`, which another server
    /// resolved, with the stored resolution (and the session rules stored
    /// since, which may include the one it added).
    pub async fn resolved_elsewhere(&self, approval_id: &str) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        if !state.waiters.contains_key(approval_id) {
            return Ok(());
        }
        let Some(record) = self.store.approval(&self.session_id, approval_id).await? else {
            return Ok(());
        };
        let Some(done) = &record.resolution else {
            return Ok(());
        };
        for (tool_name, pattern) in self.store.approval_rules(&self.session_id).await? {
            let rule = ApprovalRule { tool_name, pattern };
            if !state.rules.iter().any(|(r, _)| r == &rule)
                && let Ok(matcher) = subject_glob(&rule.pattern)
            {
                state.rules.push((rule, matcher));
            }
        }
        if let Some(waiter) = state.waiters.remove(approval_id) {
            let _ = waiter.send(resolution(done));
        }
        Ok(())
    }

    /// The approvals a call waits for on this server.
    pub async fn waiting(&self) -> Vec<String> {
        self.state.lock().await.waiters.keys().cloned().collect()
    }

    /// Forgets the waiter of a request whose call no longer waits (the
    /// server is stopping: the request stays pending for the next start).
    pub async fn abandon(&self, approval_id: &str) {
        self.state.lock().await.waiters.remove(approval_id);
    }
}

/// What waiting for an answer came to.
#[derive(Debug)]
pub enum Waited {
    Answered(Resolution),
    /// Stopped first; the receiver of the still-awaited answer.
    Stopped(oneshot::Receiver<Resolution>),
}

/// The answer when no one will send one: the request was abandoned.
fn abandoned() -> Resolution {
    Resolution {
        decision: Decision::Deny,
        message: Some("the approval request was abandoned".into()),
        by: "server".into(),
    }
}

fn resolution(r: &ApprovalResolution) -> Resolution {
    Resolution {
        decision: Decision::parse(&r.decision).unwrap_or(Decision::Deny),
        message: r.message.clone(),
        by: r.by.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_literal_pattern_matches_only_its_subject() {
        let subject = "rm -rf build/* [x] {a,b} a?b \\n";
        let m = subject_glob(&literal_pattern(subject)).unwrap();
        assert!(m.is_match(subject));
        assert!(!m.is_match("rm -rf build/x [x] {a,b} a?b \\n"));
        assert!(!m.is_match("rm -rf build/* x {a,b} acb \\n"));
    }

    #[test]
    fn patterns_match_across_slashes() {
        let m = subject_glob("pytest*").unwrap();
        assert!(m.is_match("pytest -q tests/unit/test_a.py"));
        assert!(!m.is_match("python -m pytest"));
        assert!(subject_glob("a[").is_err());
    }
}
