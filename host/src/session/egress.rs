//! Each session's network: the connections its programs ask the sandbox
//! agent's proxy for, each decided, dialled and carried by
//! [`crate::network::carry`], and the coalesced `network_request` events
//! that say so.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::{Session, SessionManager};

/// How often the coalesced attempts are looked at for publishing.
const LOG_TICK: Duration = Duration::from_millis(250);

impl SessionManager {
    /// Carries the connections `session`'s programs ask for until it goes
    /// away. Nothing to do when containers have a network of their own
    /// (`sandbox.network` other than `none`): their programs were not
    /// pointed at the proxy.
    pub(super) fn spawn_egress(&self, session: &Arc<Session>) {
        if self.config.sandbox.network != "none" {
            return;
        }
        self.spawn_network_log(session);
        let sandbox = self.sandbox.clone();
        let container = session.container_id.clone();
        self.keep_following(session, move |weak| {
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
                    drop(session);
                    tokio::spawn(async move {
                        let attempt =
                            crate::network::carry(&sandbox, &container, &id, &egress, ask, &stop)
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
    fn spawn_network_log(&self, session: &Arc<Session>) {
        let weak = Arc::downgrade(session);
        let egress = session.network.clone();
        let deleted = session.deleted.clone();
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
                    for kind in egress.take_due(all) {
                        if let Err(e) = session.events.publish(kind).await {
                            tracing::warn!(session = %session.id, error = %e, "network event not recorded");
                        }
                    }
                    if all {
                        return;
                    }
                    if !egress.has_pending() {
                        break;
                    }
                }
            }
        });
    }
}
