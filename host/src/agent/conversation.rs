//! A session's conversation with the model, persisted message by message so
//! a later task continues with the earlier context, and bounded by
//! compaction: older messages are replaced, for the model, by a summary (a
//! [`Message::Summary`]) or dropped, always cut where a group of messages
//! begins (a user's task, or a model answer with the results of its calls),
//! so every tool result stays next to the call that asked for it.
//!
//! A compaction is recorded beside the messages (`upto`: the last one it
//! replaces); the messages themselves stay in the store, so a rewind to a
//! point before it finds them. Messages are stored in their versioned form
//! ([`messages::encode`]); one that cannot be read fails the load instead of
//! vanishing from history.

use super::messages::{self, Message};
use crate::events::Fence;
use crate::store::{CompactionRecord, Store, StoreError};

#[derive(Debug)]
pub struct Conversation {
    session_id: String,
    store: Store,
    /// The lease of the task it is pushed to from, if any.
    fence: Option<Fence>,
    /// What stands for the compacted messages, with its size in characters.
    summary: Option<(Message, usize)>,
    /// The last message the latest compaction replaced (0: none).
    upto: u64,
    /// (sequence number, message, its size in characters)
    messages: Vec<(u64, Message, usize)>,
    next_seq: u64,
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    pub messages_before: u64,
    pub messages_after: u64,
    pub chars_before: u64,
    pub chars_after: u64,
}

impl Conversation {
    pub async fn load(store: Store, session_id: &str) -> Result<Self, StoreError> {
        let decode = |seq: u64, json: &str| {
            messages::decode(json).map_err(|e| {
                StoreError::new(format!(
                    "message {seq} of session {session_id}'s conversation cannot be read: {e}"
                ))
            })
        };
        let compaction = store.latest_compaction(session_id).await?;
        let upto = compaction.as_ref().map_or(0, |c| c.upto);
        let summary = match compaction.and_then(|c| c.summary) {
            Some(json) => Some((decode(upto, &json)?, json.len())),
            None => None,
        };
        let mut messages = Vec::new();
        for (seq, json) in store.messages_after(session_id, upto).await? {
            let m = decode(seq, &json)?;
            messages.push((seq, m, json.len()));
        }
        let next_seq = store.next_message_seq(session_id).await?;
        Ok(Self {
            session_id: session_id.to_string(),
            store,
            fence: None,
            summary,
            upto,
            messages,
            next_seq,
        })
    }

    /// Pushes from now on under a task's lease: once another server took
    /// the session over, [`Self::push`] is refused and the fence told.
    pub fn under(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
    }

    /// Appends a message and persists it.
    pub async fn push(&mut self, message: Message) -> Result<(), StoreError> {
        let json = messages::encode(&message);
        let lease = self.fence.as_ref().map(Fence::lease);
        let stored = self
            .store
            .append_messages(
                &self.session_id,
                lease,
                self.next_seq,
                std::slice::from_ref(&json),
            )
            .await;
        if let (Err(e), Some(fence)) = (&stored, &self.fence)
            && e.is_fenced()
        {
            fence.refused();
        }
        stored?;
        self.messages.push((self.next_seq, message, json.len()));
        self.next_seq += 1;
        Ok(())
    }

    /// What the model is sent: the summary (if any), then the messages.
    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        self.summary
            .iter()
            .map(|(m, _)| m)
            .chain(self.messages.iter().map(|(_, m, _)| m))
    }

    /// Its size in characters (as stored), summary included.
    pub fn chars(&self) -> usize {
        self.summary.as_ref().map_or(0, |(_, n)| *n)
            + self.messages.iter().map(|(_, _, n)| n).sum::<usize>()
    }

    fn count(&self) -> u64 {
        (self.messages.len() + usize::from(self.summary.is_some())) as u64
    }

    /// Where the oldest messages could be cut so that what is kept is at
    /// most `keep_chars` (at worst the last group alone): the index of the
    /// first message kept. `None` when there is only one group.
    pub fn cut(&self, keep_chars: usize) -> Option<usize> {
        let starts: Vec<usize> = (1..self.messages.len())
            .filter(|&i| self.messages[i].1.starts_a_group())
            .collect();
        let last = *starts.last()?;
        let fits = starts
            .into_iter()
            .find(|&i| self.messages[i..].iter().map(|(_, _, n)| n).sum::<usize>() <= keep_chars);
        Some(fits.unwrap_or(last))
    }

    /// The messages before `cut`, for a summary of them to be made.
    pub fn head(&self, cut: usize) -> impl Iterator<Item = &Message> {
        self.summary
            .iter()
            .map(|(m, _)| m)
            .chain(self.messages[..cut].iter().map(|(_, m, _)| m))
    }

    /// The latest task the user gave, if the messages before `cut` hold it
    /// (so a compaction there must keep its words).
    pub fn task_before(&self, cut: usize) -> Option<&str> {
        let last_task = self.messages.iter().rposition(|(_, m, _)| m.is_user())?;
        if last_task >= cut {
            return None;
        }
        match &self.messages[last_task].1 {
            Message::User { content } => Some(content),
            _ => None,
        }
    }

    /// Replaces the messages before `cut` (and any earlier summary) with
    /// `summary`, or drops them, here and in the store.
    pub async fn compact(
        &mut self,
        cut: usize,
        summary: Option<Message>,
    ) -> Result<Compacted, StoreError> {
        let (messages_before, chars_before) = (self.count(), self.chars() as u64);
        let upto = match cut {
            0 => self.upto,
            _ => self.messages[cut - 1].0,
        };
        let json = summary.as_ref().map(messages::encode);
        self.store
            .insert_compaction(
                &self.session_id,
                &CompactionRecord {
                    upto,
                    summary: json.clone(),
                },
            )
            .await?;
        self.messages.drain(..cut);
        self.upto = upto;
        self.summary = summary.zip(json.map(|j| j.len()));
        tracing::info!(session = %self.session_id, upto, summarised = self.summary.is_some(), "compacted the conversation");
        Ok(Compacted {
            messages_before,
            messages_after: self.count(),
            chars_before,
            chars_after: self.chars() as u64,
        })
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
                owner: "local".into(),
                budget_tokens: None,
                server: None,
                engine: None,
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
        store.append_messages("s1", None, 1, &old).await.unwrap();
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
            .append_messages(
                "s1",
                None,
                1,
                &[r#"{"v":9,"role":"user","content":"x"}"#.into()],
            )
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

    fn user(text: &str) -> Message {
        Message::User {
            content: text.into(),
        }
    }

    fn texts(c: &Conversation) -> Vec<String> {
        c.messages()
            .map(|m| match m {
                Message::User { content }
                | Message::Summary { content }
                | Message::Assistant { content, .. }
                | Message::Tool { content, .. } => content.clone(),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_compaction_stands_for_its_messages_after_a_reload_and_a_rewind_before_it_undoes_it()
    {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_session(dir.path()).await;
        let mut c = Conversation::load(store.clone(), "s1").await.unwrap();
        for t in ["a", "b", "c", "d", "e"] {
            c.push(user(t)).await.unwrap();
        }
        let before = c.chars();
        let done = c
            .compact(
                3,
                Some(Message::Summary {
                    content: "S".into(),
                }),
            )
            .await
            .unwrap();
        assert_eq!((done.messages_before, done.messages_after), (5, 3));
        assert_eq!(done.chars_before, before as u64);
        assert!(done.chars_after < done.chars_before);
        assert_eq!(texts(&c), ["S", "d", "e"]);
        let reloaded = Conversation::load(store.clone(), "s1").await.unwrap();
        assert_eq!(texts(&reloaded), ["S", "d", "e"]);
        assert_eq!(reloaded.chars(), c.chars());

        // A later compaction replaces the summary too; dropping keeps none.
        let mut c = reloaded;
        c.compact(1, None).await.unwrap();
        assert_eq!(
            texts(&Conversation::load(store.clone(), "s1").await.unwrap()),
            ["e"]
        );
        c.push(user("f")).await.unwrap();

        // A rewind after the compactions keeps them; one before them finds
        // the messages they stood for.
        store.delete_messages_from("s1", 6).await.unwrap();
        assert_eq!(
            texts(&Conversation::load(store.clone(), "s1").await.unwrap()),
            ["e"]
        );
        store.delete_messages_from("s1", 4).await.unwrap();
        assert_eq!(
            texts(&Conversation::load(store.clone(), "s1").await.unwrap()),
            ["S"],
            "the first compaction (up to message 3) still holds"
        );
        store.delete_messages_from("s1", 3).await.unwrap();
        assert_eq!(
            texts(&Conversation::load(store, "s1").await.unwrap()),
            ["a", "b"]
        );
    }

    #[tokio::test]
    async fn a_cut_keeps_what_fits_and_never_parts_a_result_from_its_call() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_session(dir.path()).await;
        let mut c = Conversation::load(store, "s1").await.unwrap();
        c.push(user(&"x".repeat(100))).await.unwrap();
        assert_eq!(c.cut(1_000), None, "one group cannot be cut");
        c.push(Message::Assistant {
            content: String::new(),
            tool_calls: vec![super::super::messages::ToolCall {
                id: "c1".into(),
                name: "shell".into(),
                arguments: "{}".into(),
            }],
        })
        .await
        .unwrap();
        c.push(Message::Tool {
            tool_call_id: "c1".into(),
            content: "y".repeat(100),
        })
        .await
        .unwrap();
        c.push(user("short")).await.unwrap();
        // Everything after the first message fits in a lot.
        assert_eq!(c.cut(10_000), Some(1));
        // Only the last task fits in little; at worst the last group is kept.
        assert_eq!(c.cut(50), Some(3));
        assert_eq!(c.cut(0), Some(3));
        // The task's words are kept by whoever cuts past them.
        assert_eq!(c.task_before(3), None);
        assert_eq!(c.task_before(1), None);
        c.push(Message::Assistant {
            content: "done".into(),
            tool_calls: vec![],
        })
        .await
        .unwrap();
        assert_eq!(c.task_before(4), Some("short"));
        // The tool result (index 2) is never where a cut falls.
        for keep in 0..400 {
            assert_ne!(c.cut(keep), Some(2), "{keep}");
        }
    }
}
