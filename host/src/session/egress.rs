//! Each session's network: the connections its programs ask the sandbox
//! agent's proxy for, each decided, dialled and carried by
//! [`crate::network::carry`], and the coalesced `network_request` events
//! that say so.

use std::sync::Arc;
use std::time::Duration;

use crogia_sandbox_agent::protocol::EGRESS_ANSWER_SECS;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::approvals::{ApprovalMode, BY_CANCEL, BY_TIMEOUT, Decision, SessionApprovals, Waited};
use super::{Session, SessionManager};
use crate::network::Asker;

/// The tool name of a connection's approval request (no tool may have it).
const NETWORK: &str = crogia_plugin_contract::NETWORK_TOOL;

/// How often the coalesced attempts are looked at for publishing.
const LOG_TICK: Duration = Duration::from_millis(250);

/// The longest a connection waits for a person: the server answers the
/// sandbox's proxy before it gives up on the program's behalf.
const MAX_ASK: Duration = Duration::from_secs(EGRESS_ANSWER_SECS - 10);

/// Asks the session's person about a connection to an unlisted host
/// (subject `host:port`, tool name `network`); "allow for this session"
/// leaves a rule that spares the next ones.
struct PersonAsker {
    approvals: Arc<SessionApprovals>,
    stop: CancellationToken,
}

impl Asker for PersonAsker {
    fn ask<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let subject = format!("{host}:{port}");
            if self.approvals.rule_allows(NETWORK, &subject).await {
                return Ok(format!("allowed by the session's rule for {subject}"));
            }
            let arguments = serde_json::json!({"host": host, "port": port}).to_string();
            let timeout = self.approvals.timeout().min(MAX_ASK);
            let (request, answer) = self
                .approvals
                .request(None, NETWORK, &arguments, &subject, timeout)
                .await
                .map_err(|e| e.to_string())?;
            let id = request.approval_id.as_str();
            let waited = self
                .approvals
                .answer(&request, answer, &self.stop)
                .await
                .map_err(|e| e.to_string())?;
            let r = match waited {
                Waited::Answered(r) => r,
                Waited::Stopped(answer) => self
                    .approvals
                    .settle(
                        id,
                        Decision::Cancelled,
                        "the session is being deleted".into(),
                        BY_CANCEL,
                        answer,
                    )
                    .await
                    .map_err(|e| e.to_string())?,
            };
            let said = r.message.map(|m| format!(": {m}")).unwrap_or_default();
            match (r.decision.allows(), r.by.as_str()) {
                (true, by) => Ok(format!("allowed by the {by} (approval {id})")),
                (false, BY_TIMEOUT) => Err(format!(
                    "no one approved it within {} s (approval {id})",
                    timeout.as_secs()
                )),
                (false, by) => Err(format!("denied by the {by} (approval {id}){said}")),
            }
        })
    }
}

impl SessionManager {
    /// Carries the connections `session`'s programs ask for until it goes
    /// away. Nothing to do when containers have a network of their own
    /// (`sandbox.network` other than `none`): their programs were not
    /// pointed at the proxy.
    pub(super) fn spawn_egress(&self, session: &Arc<Session>, until: &CancellationToken) {
        if self.config.sandbox.network != "none" {
            return;
        }
        self.spawn_network_log(session, until);
        let sandbox = self.sandbox_of(session);
        let container = session.container_id.clone();
        self.keep_following(session, until, move |weak| {
            let sandbox = sandbox.clone();
            let container = container.clone();
            async move {
                let asks = match sandbox.follow_egress(&container).await {
                    Ok(asks) => asks,
                    Err(e) => {
                        tracing::debug!(container, error = %e, "cannot follow the sandbox's network");
                        return false;
                    }
                };
                let mut asks = std::pin::pin!(asks);
                let mut progressed = false;
                while let Some(ask) = asks.next().await {
                    progressed = true;
                    let Some(session) = weak.upgrade() else {
                        break;
                    };
                    let sandbox = sandbox.clone();
                    let container = container.clone();
                    let id = session.id.clone();
                    let egress = session.network.clone();
                    let stop = session.deleted.clone();
                    let person = (session.approvals.mode() != ApprovalMode::None).then(|| {
                        PersonAsker {
                            approvals: session.approvals.clone(),
                            stop: stop.clone(),
                        }
                    });
                    drop(session);
                    tokio::spawn(async move {
                        let person = person.as_ref().map(|p| p as &dyn Asker);
                        let attempt = crate::network::carry(
                            &sandbox, &container, &id, &egress, ask, person, &stop,
                        )
                        .await;
                        if let Some(metrics) = sandbox.metrics() {
                            metrics.network_connection(
                                attempt.decision.as_str(),
                                attempt.bytes_up,
                                attempt.bytes_down,
                            );
                        }
                        tracing::debug!(
                            session = %id,
                            host = %attempt.host,
                            port = attempt.port,
                            decision = attempt.decision.as_str(),
                            reason = %attempt.reason,
                            "network connection"
                        );
                        egress.record(attempt);
                    });
                }
                progressed
            }
        });
    }

    /// Publishes `session`'s coalesced connection attempts as they come
    /// due (idle while nothing is logged), and what is left when the server
    /// stops.
    fn spawn_network_log(&self, session: &Arc<Session>, until: &CancellationToken) {
        let weak = Arc::downgrade(session);
        let egress = session.network.clone();
        let deleted = until.clone();
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = egress.logged() => {}
                    () = stopping.cancelled() => {}
                    () = deleted.cancelled() => return,
                }
                // Until everything logged is out, or the server stops.
                loop {
                    let all = tokio::select! {
                        () = tokio::time::sleep(LOG_TICK) => false,
                        () = stopping.cancelled() => true,
                        () = deleted.cancelled() => return,
                    };
                    let Some(session) = weak.upgrade() else {
                        return;
                    };
                    let (due, pending) = egress.take_due(all);
                    for kind in due {
                        if let Err(e) = session.events.publish(kind).await {
                            tracing::warn!(session = %session.id, error = %e, "network event not recorded");
                        }
                    }
                    if all {
                        return;
                    }
                    if !pending {
                        break;
                    }
                }
            }
        });
    }
}
