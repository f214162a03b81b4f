//! `WS /ws/{session_id}` — a session's events, live, as JSON text frames.
//!
//! `?since=<seq>` first replays the stored events after `seq`, then goes on
//! live, with no gap and no duplicate: the connection subscribes to live
//! events before reading the store, and drops live events it already sent.
//! Without `since` only new events are sent.
//!
//! - Unknown session, or one the caller's principal may not see: closed
//!   with code 4004.
//! - A client too slow to keep up (more than `server.ws_buffer_events` behind)
//!   gets an `error` frame saying where to resume, and is closed with 4008.
//!   The agent and other clients never wait for it.
//! - Pings every `server.ws_ping_secs` keep idle connections open; a client
//!   that answers nothing (not even the pong its WebSocket library sends on
//!   its own) for `server.ws_pong_timeout_secs` after a ping is dropped.
//! - A deleted session closes with 4004; a stopping server with 1001.
//!
//! Clients have nothing to say beyond pongs and a close, so what they send
//! is bounded hard: frames and messages over [`MAX_INBOUND_BYTES`] end the
//! connection before they are read into memory. At most
//! `server.ws_max_clients` connections are open at once, and at most
//! `server.ws_max_clients_per_session` on one session; one more is refused
//! with 429 before the upgrade.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use futures_util::SinkExt;
use futures_util::stream::{SplitSink, StreamExt};
use serde::Deserialize;

use super::ApiError;
use super::extract::ApiQuery;
use crate::config::ServerConfig;
use crate::events::{FollowError, Follower, Published};
use crate::principal::Principal;
use crate::state::AppState;

/// Close code: no such session.
pub const CLOSE_NOT_FOUND: u16 = 4004;
/// Close code: the client fell too far behind.
pub const CLOSE_TOO_SLOW: u16 = 4008;
/// Bytes read from a client at a time.
const READ_BUFFER: usize = 4096;
/// How long one frame may take to send before the client counts as gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest frame, and largest message, a client may send. A close frame
/// carries at most 125 bytes and a pong echoes our (empty) ping.
pub const MAX_INBOUND_BYTES: usize = 4096;

/// The connections open now, in all and per session, within the configured
/// limits.
#[derive(Debug)]
pub struct Connections {
    max_total: usize,
    max_per_session: usize,
    open: Mutex<(usize, HashMap<String, usize>)>,
}

/// One counted connection; uncounted when dropped.
#[derive(Debug)]
pub struct Slot {
    connections: Arc<Connections>,
    session: String,
}

impl Connections {
    pub fn new(config: &ServerConfig) -> Arc<Self> {
        Arc::new(Self {
            max_total: config.ws_max_clients,
            max_per_session: config.ws_max_clients_per_session,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// A slot for one more client of `session`, or why there is none.
    pub(super) fn take(self: &Arc<Self>, session: &str) -> Result<Slot, String> {
        let mut open = self.open.lock().unwrap();
        let (total, per_session) = &mut *open;
        if *total >= self.max_total {
            return Err(format!(
                "Too many WebSocket clients: the server allows {} at once (server.ws_max_clients)",
                self.max_total
            ));
        }
        let here = per_session.entry(session.to_string()).or_insert(0);
        if *here >= self.max_per_session {
            return Err(format!(
                "Too many WebSocket clients on session {session}: {} at once at most \
                 (server.ws_max_clients_per_session)",
                self.max_per_session
            ));
        }
        *here += 1;
        *total += 1;
        Ok(Slot {
            connections: self.clone(),
            session: session.to_string(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.connections.open.lock().unwrap();
        let (total, per_session) = &mut *open;
        *total -= 1;
        if let Some(n) = per_session.get_mut(&self.session) {
            *n -= 1;
            if *n == 0 {
                per_session.remove(&self.session);
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    /// Replay stored events with a larger sequence number first.
    pub since: Option<u64>,
    /// Auth token (when auth is on); read by the auth layer.
    #[allow(dead_code)]
    pub token: Option<String>,
}

pub fn routes(config: &ServerConfig) -> Router<Arc<AppState>> {
    Router::new()
        .route("/ws/{session_id}", get(upgrade))
        .route("/ws/{session_id}/pty", get(super::pty::upgrade))
        .layer(Extension(Connections::new(config)))
}

async fn upgrade(
    ws: WebSocketUpgrade,
    State(state): State<Arc<AppState>>,
    Extension(connections): Extension<Arc<Connections>>,
    Extension(principal): Extension<Arc<Principal>>,
    Path(session_id): Path<String>,
    ApiQuery(query): ApiQuery<WsQuery>,
) -> Response {
    let slot = match connections.take(&session_id) {
        Ok(slot) => slot,
        Err(detail) => {
            tracing::warn!(session = %session_id, "{detail}");
            return ApiError::new(StatusCode::TOO_MANY_REQUESTS, detail).into_response();
        }
    };
    // Clients send next to nothing (pongs, a close); a small read buffer
    // matters because the protocol layer zero-fills it before every read.
    ws.read_buffer_size(READ_BUFFER)
        .max_frame_size(MAX_INBOUND_BYTES)
        .max_message_size(MAX_INBOUND_BYTES)
        .on_upgrade(move |socket| async move {
            serve(socket, state, principal, session_id, query.since).await;
            drop(slot);
        })
}

/// Sends one frame; false when the client is gone or stalled.
pub(super) async fn send(tx: &mut SplitSink<WebSocket, Message>, msg: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, tx.send(msg)).await,
        Ok(Ok(()))
    )
}

/// Most event frames written before one flush.
const FRAMES_PER_FLUSH: usize = 256;

/// What ended a run of events other than running out of ready ones: the log
/// closing (`Ok(None)`) or a follower error.
type End = Result<Option<Published>, FollowError>;

/// Sends `first` (if it is an event) and the events ready behind it, up to
/// [`FRAMES_PER_FLUSH`], then flushes once: a burst costs one write, not one
/// per event. Returns whether the client took them in time, and what ended
/// the run if it was not a lack of ready events.
async fn send_ready(
    tx: &mut SplitSink<WebSocket, Message>,
    events: &mut Follower,
    first: End,
) -> (bool, Option<End>) {
    let mut next = first;
    let mut end = None;
    let write = async {
        let mut frames = 0;
        loop {
            match next {
                Ok(Some(event)) => {
                    tx.feed(Message::Text(Utf8Bytes::from(event.json.as_ref())))
                        .await?;
                    frames += 1;
                }
                other => {
                    end = Some(other);
                    break;
                }
            }
            if frames == FRAMES_PER_FLUSH {
                break;
            }
            match events.next_ready() {
                Some(ready) => next = ready.map(Some),
                None => break,
            }
        }
        if frames > 0 {
            tx.flush().await?;
        }
        Ok::<_, axum::Error>(())
    };
    let sent = matches!(tokio::time::timeout(SEND_TIMEOUT, write).await, Ok(Ok(())));
    (sent, end)
}

pub(super) fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason.to_string()),
    }))
}

async fn serve(
    socket: WebSocket,
    state: Arc<AppState>,
    principal: Arc<Principal>,
    session_id: String,
    since: Option<u64>,
) {
    let (mut tx, mut rx) = socket.split();
    let Some(session) = state
        .sessions
        .get(&session_id)
        .ok()
        .filter(|s| principal.may_see(&s.owner))
    else {
        let _ = tx.send(close(CLOSE_NOT_FOUND, "Session not found")).await;
        return;
    };
    let _counted = crate::metrics::ClientGuard::new(&state.metrics);
    let mut events = Follower::new(session.events.clone(), since);
    let mut ping =
        tokio::time::interval(Duration::from_secs(state.config.server.ws_ping_secs.max(1)));
    ping.tick().await;
    let pong_timeout = Duration::from_secs(state.config.server.ws_pong_timeout_secs.max(1));
    // Armed when a ping goes out to a client that has been silent since the
    // previous one; anything it sends disarms it.
    let pong_deadline = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(pong_deadline);
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            // Events first: a stopping server or a deleted session closes the
            // connection only after what was already published is delivered.
            biased;
            event = events.next() => {
                // This event and every one ready behind it, in one write.
                let (sent, end) = send_ready(&mut tx, &mut events, event).await;
                if !sent {
                    return;
                }
                match end {
                    None => {}
                    Some(Ok(_)) => return,
                    Some(Err(FollowError::Lagged { missed, last })) => {
                        tracing::info!(session = %session_id, missed, "WebSocket client too slow; disconnecting it");
                        let frame = serde_json::json!({
                            "type": "error",
                            "message": format!("Client too slow: {missed} events were not delivered. Reconnect with ?since={last} to resume."),
                            "timestamp": crate::time::timestamp(chrono::Utc::now()),
                            "resume_since": last,
                        });
                        let _ = send(&mut tx, Message::Text(Utf8Bytes::from(frame.to_string()))).await;
                        let _ = send(&mut tx, close(CLOSE_TOO_SLOW, "client too slow; reconnect with since")).await;
                        return;
                    }
                    Some(Err(e @ FollowError::Store(_))) => {
                        tracing::warn!(session = %session_id, error = %e, "replay failed");
                        let _ = tx.send(close(1011, "could not read the event log")).await;
                        return;
                    }
                }
            }
            incoming = rx.next() => match incoming {
                Some(Ok(Message::Close(_))) | None => return,
                Some(Err(e)) => {
                    // Among others: a frame or message over the limit.
                    tracing::debug!(session = %session_id, error = %e, "WebSocket client misbehaved; disconnecting it");
                    return;
                }
                // Pongs and anything a client says only show it is there;
                // pings are answered by the protocol layer.
                Some(Ok(_)) => awaiting_pong = false,
            },
            _ = ping.tick() => {
                if !send(&mut tx, Message::Ping(Default::default())).await {
                    return;
                }
                if !awaiting_pong {
                    awaiting_pong = true;
                    pong_deadline.as_mut().reset(tokio::time::Instant::now() + pong_timeout);
                }
            }
            _ = &mut pong_deadline, if awaiting_pong => {
                tracing::info!(session = %session_id, "WebSocket client did not answer a ping; disconnecting it");
                return;
            }
            _ = session.deleted.cancelled() => {
                let _ = tx.send(close(CLOSE_NOT_FOUND, "Session deleted")).await;
                return;
            }
            _ = state.shutdown.cancelled() => {
                let _ = tx.send(close(1001, "server shutting down")).await;
                return;
            }
        }
    }
}
