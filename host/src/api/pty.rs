//! `WS /ws/{session_id}/pty?cols=80&rows=24` — an interactive terminal in
//! the session's container: a login shell in `/workspace`, run by the
//! sandbox agent on a pseudo-terminal of its own.
//!
//! - Binary frames carry the terminal's bytes, both ways.
//! - A text frame `{"type":"resize","cols":..,"rows":..}` resizes it.
//! - The terminal is opened before the upgrade, so a refusal is an HTTP
//!   answer: 404 unknown session, 409 a session whose container is gone,
//!   422 a size outside 1..=1000, 429 too many connections or terminals,
//!   503 the engine unreachable.
//! - When the shell exits the connection closes with 1000; a deleted
//!   session closes it with 4004, a stopping server with 1001. When the
//!   client goes away the shell and everything it started are killed.
//! - Inbound frames are bounded by [`MAX_INBOUND_BYTES`] (a paste larger
//!   than that is split by the client); a client that stops reading for
//!   30 s is dropped, and until then the shell waits (nothing queues up).

use std::sync::Arc;

use axum::Extension;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use futures_util::stream::StreamExt;
use http_body_util::BodyExt;
use serde::Deserialize;

use super::ApiError;
use super::extract::ApiQuery;
use super::ws::{CLOSE_NOT_FOUND, Connections, close, send};
use crate::capabilities::CapabilityError;
use crate::sandbox::{SandboxError, Terminal};
use crate::session::Session;
use crate::state::AppState;

/// Largest frame, and message, a terminal client may send.
pub const MAX_INBOUND_BYTES: usize = 64 * 1024;
/// Largest terminal side, in characters.
const MAX_SIDE: u16 = 1000;

#[derive(Debug, Deserialize)]
pub struct PtyQuery {
    #[serde(default = "default_cols")]
    pub cols: u16,
    #[serde(default = "default_rows")]
    pub rows: u16,
    /// Auth token (when auth is on); read by the auth layer.
    #[allow(dead_code)]
    pub token: Option<String>,
}

fn default_cols() -> u16 {
    80
}
fn default_rows() -> u16 {
    24
}

/// A text frame a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Control {
    Resize { cols: u16, rows: u16 },
}

fn check_size(cols: u16, rows: u16) -> Result<(), String> {
    if (1..=MAX_SIDE).contains(&cols) && (1..=MAX_SIDE).contains(&rows) {
        Ok(())
    } else {
        Err(format!(
            "a terminal is 1 to {MAX_SIDE} columns and rows, not {cols}x{rows}"
        ))
    }
}

pub(super) async fn upgrade(
    ws: WebSocketUpgrade,
    State(state): State<Arc<AppState>>,
    Extension(connections): Extension<Arc<Connections>>,
    Path(session_id): Path<String>,
    ApiQuery(query): ApiQuery<PtyQuery>,
) -> Response {
    if let Err(detail) = check_size(query.cols, query.rows) {
        return ApiError::unprocessable(detail).into_response();
    }
    let session = match state.sessions.get(&session_id) {
        Ok(s) => s,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let slot = match connections.take(&session_id) {
        Ok(slot) => slot,
        Err(detail) => {
            return ApiError::new(StatusCode::TOO_MANY_REQUESTS, detail).into_response();
        }
    };
    let terminal = match session.caps.open_terminal(query.cols, query.rows).await {
        Ok(t) => t,
        Err(CapabilityError::Sandbox(SandboxError::Conflict(detail))) => {
            return ApiError::new(StatusCode::TOO_MANY_REQUESTS, detail).into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    tracing::info!(session = %session_id, terminal = terminal.id, "terminal opened");
    let stopping = state.sessions.stopping();
    ws.max_frame_size(MAX_INBOUND_BYTES)
        .max_message_size(MAX_INBOUND_BYTES)
        .on_upgrade(move |socket| async move {
            serve(socket, session, terminal, stopping).await;
            drop(slot);
        })
}

/// Why a terminal's connection ended.
enum End {
    /// The shell exited.
    Exited,
    /// The client closed, went away or stopped reading.
    ClientGone,
    /// The client sent a text frame that is not a control message.
    BadControl(String),
}

async fn serve(
    socket: WebSocket,
    session: Arc<Session>,
    terminal: Terminal,
    stopping: tokio_util::sync::CancellationToken,
) {
    let (mut tx, mut rx) = socket.split();
    let Terminal {
        id,
        mut input,
        mut output,
    } = terminal;
    // The two directions run side by side: a shell that is not reading
    // must not keep its output from the client, nor the other way round.
    let to_client = async {
        while let Some(frame) = output.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data()
                && !send(&mut tx, Message::Binary(data)).await
            {
                return End::ClientGone;
            }
        }
        End::Exited
    };
    let from_client = async {
        while let Some(Ok(message)) = rx.next().await {
            match message {
                Message::Binary(data) => {
                    if input.send_data(data).await.is_err() {
                        return End::Exited;
                    }
                }
                Message::Text(text) => match serde_json::from_str::<Control>(&text) {
                    Ok(Control::Resize { cols, rows }) => {
                        if let Err(detail) = check_size(cols, rows) {
                            return End::BadControl(detail);
                        }
                        if let Err(e) = session.caps.resize_terminal(id, cols, rows).await {
                            tracing::debug!(error = %e, "resizing a terminal failed");
                        }
                    }
                    Err(e) => return End::BadControl(format!("not a control message: {e}")),
                },
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
        End::ClientGone
    };
    let end = tokio::select! {
        end = to_client => Some(end),
        end = from_client => Some(end),
        () = session.deleted.cancelled() => None,
        () = stopping.cancelled() => {
            let _ = tx.send(close(1001, "the server is stopping")).await;
            return;
        }
    };
    // Dropping the input ends the terminal: the agent kills the shell.
    drop(input);
    let frame = match end {
        Some(End::Exited) => close(1000, "the shell exited"),
        Some(End::ClientGone) => return,
        Some(End::BadControl(detail)) => close(1007, &detail),
        None => close(CLOSE_NOT_FOUND, "Session deleted"),
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tx.send(frame)).await;
}
