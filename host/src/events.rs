//! Each session's event log: what the agent did, step by step, as the
//! WebSocket sends it.
//!
//! An event gets the next sequence number of its session, is written to the
//! store, and only then broadcast to live subscribers — under one lock, so the
//! store and the broadcast see events in the same order. A subscriber that
//! subscribes first and then reads the store from its `since` point sees every
//! event exactly once (dropping broadcast events it already read).
//!
//! Event JSON is the contract's (`type`, its fields, `timestamp`) plus `seq`
//! and the additive fields below.

use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;
use tokio::sync::{Mutex, broadcast};

use crate::store::{Store, StoreError};

/// How a task ended, carried by its `task_completed` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
}

/// Tokens the model reported for a task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// What happened. Serialised with its `type` tag.
#[derive(Debug, Clone, Serialize)]
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
    },
    ToolComplete {
        tool_call_id: String,
        tool_name: String,
        /// The result, cut to `agent.event_result_chars`.
        result: String,
        is_error: bool,
        duration_ms: u64,
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
}

/// An event as stored and sent: its sequence number and its JSON text.
#[derive(Debug, Clone)]
pub struct Published {
    pub seq: u64,
    pub json: Arc<str>,
}

/// One session's event log.
#[derive(Debug)]
pub struct EventLog {
    session_id: String,
    store: Store,
    /// The last sequence number used; held while an event is written and sent.
    last_seq: Mutex<u64>,
    sender: broadcast::Sender<Published>,
}

impl EventLog {
    /// The log of `session_id`, continuing after what the store holds.
    /// `buffer` bounds how far a live subscriber may fall behind.
    pub async fn open(store: Store, session_id: &str, buffer: usize) -> Result<Self, StoreError> {
        let last = store.last_event_seq(session_id).await?;
        let (sender, _) = broadcast::channel(buffer.max(16));
        Ok(Self {
            session_id: session_id.to_string(),
            store,
            last_seq: Mutex::new(last),
            sender,
        })
    }

    /// Writes an event to the store, then sends it to subscribers. Returns
    /// its sequence number.
    pub async fn publish(&self, kind: EventKind) -> Result<u64, StoreError> {
        let mut last = self.last_seq.lock().await;
        let seq = *last + 1;
        let json = render(seq, &kind);
        self.store
            .append_events(&self.session_id, &[(seq, json.clone())])
            .await?;
        *last = seq;
        // No subscribers is fine.
        let _ = self.sender.send(Published {
            seq,
            json: json.into(),
        });
        Ok(seq)
    }

    /// Live events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.sender.subscribe()
    }

    /// Stored events with `seq > after`, at most `limit`, in order.
    pub async fn stored_after(&self, after: u64, limit: u32) -> Result<Vec<Published>, StoreError> {
        Ok(self
            .store
            .events_after(&self.session_id, after, limit)
            .await?
            .into_iter()
            .map(|(seq, json)| Published {
                seq,
                json: json.into(),
            })
            .collect())
    }

    /// Live subscribers right now.
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }
}

fn render(seq: u64, kind: &EventKind) -> String {
    let mut value = serde_json::to_value(kind).expect("events serialise");
    if let Some(obj) = value.as_object_mut() {
        obj.insert(
            "timestamp".into(),
            crate::time::timestamp(Utc::now()).into(),
        );
        obj.insert("seq".into(), seq.into());
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SessionRecord;

    async fn log() -> (tempfile::TempDir, Store, EventLog) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        store
            .insert_session(&SessionRecord {
                id: "s1".into(),
                container_id: "c".into(),
                workdir: "/w".into(),
                created: Utc::now(),
                last_task: None,
                error: None,
            })
            .await
            .unwrap();
        let log = EventLog::open(store.clone(), "s1", 64).await.unwrap();
        (dir, store, log)
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
}
