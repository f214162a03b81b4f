//! A session's conversation with the model, persisted message by message so
//! a later task continues with the earlier context, and bounded: when it
//! grows past `agent.context_chars`, whole old turns (a user message and
//! everything after it up to the next user message) are dropped, oldest
//! first, which keeps every tool result next to the call that asked for it.

use async_openai::types::chat::ChatCompletionRequestMessage;

use crate::store::{Store, StoreError};

#[derive(Debug)]
pub struct Conversation {
    session_id: String,
    store: Store,
    /// (sequence number, message, its size in characters)
    messages: Vec<(u64, ChatCompletionRequestMessage, usize)>,
    next_seq: u64,
}

impl Conversation {
    pub async fn load(store: Store, session_id: &str) -> Result<Self, StoreError> {
        let mut messages = Vec::new();
        for (seq, json) in store.messages(session_id).await? {
            match serde_json::from_str::<ChatCompletionRequestMessage>(&json) {
                Ok(m) => messages.push((seq, m, json.len())),
                Err(e) => {
                    tracing::warn!(session = session_id, seq, error = %e, "skipping an unreadable stored message")
                }
            }
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
    pub async fn push(&mut self, message: ChatCompletionRequestMessage) -> Result<(), StoreError> {
        let json = serde_json::to_string(&message).expect("messages serialise");
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
            .filter(|(i, (_, m, _))| *i > 0 && matches!(m, ChatCompletionRequestMessage::User(_)))
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

    pub fn messages(&self) -> impl Iterator<Item = &ChatCompletionRequestMessage> {
        self.messages.iter().map(|(_, m, _)| m)
    }
}
