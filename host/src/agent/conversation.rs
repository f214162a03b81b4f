//! A session's conversation with the model, persisted message by message so
//! a later task continues with the earlier context, and bounded: when it
//! grows past `agent.context_chars`, whole old turns (a user message and
//! everything after it up to the next user message) are dropped, oldest
//! first, which keeps every tool result next to the call that asked for it.
//! Messages are stored in their versioned form ([`messages::encode`]); one
//! that cannot be read fails the load instead of vanishing from history.

use super::messages::{self, Message};
use crate::store::{Store, StoreError};

#[derive(Debug)]
pub struct Conversation {
    session_id: String,
    store: Store,
    /// (sequence number, message, its size in characters)
    messages: Vec<(u64, Message, usize)>,
    next_seq: u64,
}

impl Conversation {
    pub async fn load(store: Store, session_id: &str) -> Result<Self, StoreError> {
        let mut messages = Vec::new();
        for (seq, json) in store.messages(session_id).await? {
            let m = messages::decode(&json).map_err(|e| {
                StoreError::new(format!(
                    "message {seq} of session {session_id}'s conversation cannot be read: {e}"
                ))
            })?;
            messages.push((seq, m, json.len()));
        }
        let next_seq = messages.last().map_or(1, |(seq, _, _)| seq + 1);
        Ok(Self {
            session_id: session_id.to_string(),
            store,
            messages,
            next_seq,
        })
    }

    /// Appends a message and persists it.
    pub async fn push(&mut self, message: Message) -> Result<(), StoreError> {
        let json = messages::encode(&message);
        self.store
            .append_messages(&self.session_id, self.next_seq, std::slice::from_ref(&json))
            .await?;
        self.messages.push((self.next_seq, message, json.len()));
        self.next_seq += 1;
        Ok(())
    }

    /// Drops whole old turns until the conversation fits in `max_chars` (the
    /// current turn is always kept), here and in the store.
    pub async fn trim(&mut self, max_chars: usize) -> Result<(), StoreError> {
        let total: usize = self.messages.iter().map(|(_, _, n)| n).sum();
        if total <= max_chars {
            return Ok(());
        }
        let turn_starts = self
            .messages
            .iter()
            .enumerate()
            .filter(|(i, (_, m, _))| *i > 0 && m.is_user())
            .map(|(i, _)| i);
        // Cut at the first turn boundary that makes it fit; at worst keep
        // only the last turn (the one being worked on).
        let mut drop_until = 0;
        for start in turn_starts {
            drop_until = start;
            let dropped: usize = self.messages[..start].iter().map(|(_, _, n)| n).sum();
            if total - dropped <= max_chars {
                break;
            }
        }
        if drop_until == 0 {
            return Ok(());
        }
        let first_kept = self.messages[drop_until].0;
        self.store
            .delete_messages_before(&self.session_id, first_kept)
            .await?;
        self.messages.drain(..drop_until);
        tracing::info!(session = %self.session_id, dropped_before = first_kept, "trimmed old turns from the conversation");
        Ok(())
    }

    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        self.messages.iter().map(|(_, m, _)| m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SessionRecord;

    async fn store_with_session(dir: &std::path::Path) -> Store {
        let store = Store::open(dir).await.unwrap();
        store
            .insert_session(&SessionRecord {
                id: "s1".into(),
                container_id: "c".into(),
                workdir: "/w".into(),
                created: chrono::Utc::now(),
                last_task: None,
                error: None,
                network: None,
                approval: "default".into(),
            })
            .await
            .unwrap();
        store
    }

    #[tokio::test]
    async fn a_conversation_stored_before_versions_loads_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_session(dir.path()).await;
        // Rows exactly as the server wrote them with async-openai's types.
        let old = [
            r#"{"role":"user","content":"Create a Flask app"}"#.to_string(),
            r#"{"content":null,"role":"assistant","tool_calls":[{"id":"call_1","type":"function","function":{"name":"write_file","arguments":"{}"}}]}"#.to_string(),
            r#"{"role":"tool","content":"Wrote app.py","tool_call_id":"call_1"}"#.to_string(),
        ];
        store.append_messages("s1", 1, &old).await.unwrap();
        let mut c = Conversation::load(store.clone(), "s1").await.unwrap();
        assert_eq!(c.messages().count(), 3);
        c.push(Message::User {
            content: "Now add a test".into(),
        })
        .await
        .unwrap();
        let c = Conversation::load(store, "s1").await.unwrap();
        let all: Vec<&Message> = c.messages().collect();
        assert_eq!(
            all[1],
            &Message::Assistant {
                content: String::new(),
                tool_calls: vec![super::super::messages::ToolCall {
                    id: "call_1".into(),
                    name: "write_file".into(),
                    arguments: "{}".into(),
                }],
            }
        );
        assert_eq!(
            all[3],
            &Message::User {
                content: "Now add a test".into()
            }
        );
    }

    #[tokio::test]
    async fn a_row_this_server_cannot_read_fails_the_load_and_says_which() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_session(dir.path()).await;
        store
            .append_messages("s1", 1, &[r#"{"v":9,"role":"user","content":"x"}"#.into()])
            .await
            .unwrap();
        let err = Conversation::load(store, "s1")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("message 1 of session s1") && err.contains("format version 9"),
            "{err}"
        );
    }
}
