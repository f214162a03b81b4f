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
    /// The same, readable without waiting.
    published: std::sync::atomic::AtomicU64,
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
            published: last.into(),
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
        self.published
            .store(seq, std::sync::atomic::Ordering::Release);
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

    /// The sequence number of the latest event (0 when none).
    pub fn last_seq(&self) -> u64 {
        self.published.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Live subscribers right now.
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
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

    /// A store holding one session, `s1`.
    async fn store_with_session(dir: &std::path::Path) -> Store {
        let store = Store::open(dir).await.unwrap();
        let record = SessionRecord {
            id: "s1".into(),
            container_id: "c".into(),
            workdir: "/w".into(),
            created: Utc::now(),
            last_task: None,
            error: None,
        };
        store.insert_session(&record).await.unwrap();
        store
    }

    async fn log() -> (tempfile::TempDir, Store, EventLog) {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_session(dir.path()).await;
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
                    for _ in 0..during {
                        log.publish(EventKind::TextDelta {
                            content: "d".into(),
                        })
                        .await
                        .unwrap();
                        tokio::task::yield_now().await;
                    }
                })
            };
            let total = before + during;
            let mut seqs = Vec::new();
            let mut ended = None;
            while seqs.last().copied().unwrap_or(since) < total {
                match follower.next().await {
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
