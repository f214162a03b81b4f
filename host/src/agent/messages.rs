//! The conversation's messages in the project's own types, and the form they
//! are stored in.
//!
//! A stored message is JSON tagged with a format version (`"v": 1`), so a
//! change of these types or of a dependency can never silently orphan
//! history: a row in a version this server does not read is an error that
//! says so. Rows written before the version existed (version 0) are the
//! OpenAI chat format as async-openai wrote it; they are read by
//! [`Legacy`], which depends on nothing but serde. Conversion to a model
//! API's own types happens at the model's edge (`model.rs`).

use serde::{Deserialize, Serialize};

/// The format version written by this server.
pub const FORMAT_VERSION: u32 = 1;

/// A tool call the model asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// Raw JSON text as the model produced it.
    pub arguments: String,
}

/// One message of a session's conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Message {
    /// A task, as the user gave it.
    User { content: String },
    /// The model's answer: text, tool calls, or both.
    Assistant {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        content: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
    },
    /// A tool's result, for the call it answers.
    Tool {
        tool_call_id: String,
        content: String,
    },
    /// A note standing for older messages the conversation compacted: the
    /// model's summary of them (or, when they were dropped, what it must
    /// not lose). Sent to the model as a user message.
    Summary { content: String },
}

impl Message {
    /// Whether this message opens a turn (a task given by the user).
    pub fn is_user(&self) -> bool {
        matches!(self, Self::User { .. })
    }

    /// Whether the conversation may be cut just before it: anything but a
    /// tool's result, which must follow the call that asked for it.
    pub fn starts_a_group(&self) -> bool {
        !matches!(self, Self::Tool { .. })
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    v: u32,
    #[serde(flatten)]
    message: Message,
}

/// Why a stored message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "it is in format version {0}, which this server does not read (written by a newer server?)"
    )]
    UnknownVersion(u64),
    #[error("it is not a message: {0}")]
    Malformed(String),
}

/// The stored form of `message`.
pub fn encode(message: &Message) -> String {
    serde_json::to_string(&Stored {
        v: FORMAT_VERSION,
        message: message.clone(),
    })
    .expect("messages serialise")
}

/// Reads a stored message of any version this server knows.
pub fn decode(json: &str) -> Result<Message, DecodeError> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let malformed = |e: serde_json::Error| DecodeError::Malformed(e.to_string());
    match value.get("v") {
        None => Ok(serde_json::from_value::<Legacy>(value)
            .map_err(malformed)?
            .into()),
        Some(v) => match v.as_u64() {
            Some(1) => Ok(serde_json::from_value::<Stored>(value)
                .map_err(malformed)?
                .message),
            Some(other) => Err(DecodeError::UnknownVersion(other)),
            None => Err(DecodeError::Malformed(format!(
                "version {v} is not a number"
            ))),
        },
    }
}

/// Version 0: the OpenAI chat format, as stored before versions existed.
#[derive(Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
enum Legacy {
    User {
        content: LegacyContent,
    },
    Assistant {
        #[serde(default)]
        content: Option<LegacyContent>,
        #[serde(default)]
        tool_calls: Option<Vec<LegacyToolCall>>,
    },
    Tool {
        tool_call_id: String,
        content: LegacyContent,
    },
}

/// Text, or a list of parts of which the text ones count.
#[derive(Deserialize)]
#[serde(untagged)]
enum LegacyContent {
    Text(String),
    Parts(Vec<LegacyPart>),
}

#[derive(Deserialize)]
struct LegacyPart {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct LegacyToolCall {
    id: String,
    function: LegacyFunction,
}

#[derive(Deserialize)]
struct LegacyFunction {
    name: String,
    arguments: String,
}

impl LegacyContent {
    fn text(self) -> String {
        match self {
            Self::Text(t) => t,
            Self::Parts(parts) => parts.into_iter().filter_map(|p| p.text).collect(),
        }
    }
}

impl From<Legacy> for Message {
    fn from(m: Legacy) -> Self {
        match m {
            Legacy::User { content } => Self::User {
                content: content.text(),
            },
            Legacy::Assistant {
                content,
                tool_calls,
            } => Self::Assistant {
                content: content.map(LegacyContent::text).unwrap_or_default(),
                tool_calls: tool_calls
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| ToolCall {
                        id: c.id,
                        name: c.function.name,
                        arguments: c.function.arguments,
                    })
                    .collect(),
            },
            Legacy::Tool {
                tool_call_id,
                content,
            } => Self::Tool {
                tool_call_id,
                content: content.text(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_their_stored_form() {
        let all = [
            Message::User {
                content: "Create a Flask app".into(),
            },
            Message::Assistant {
                content: "Writing it.".into(),
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "write_file".into(),
                    arguments: r#"{"path":"app.py"}"#.into(),
                }],
            },
            Message::Assistant {
                content: "Done.".into(),
                tool_calls: vec![],
            },
            Message::Tool {
                tool_call_id: "call_1".into(),
                content: "Wrote 10 bytes".into(),
            },
        ];
        for m in all {
            let stored = encode(&m);
            assert!(stored.contains(r#""v":1"#), "{stored}");
            assert_eq!(decode(&stored).unwrap(), m);
        }
    }

    /// Rows exactly as the server wrote them before messages were versioned
    /// (async-openai 0.43's serialisation of its request messages).
    #[test]
    fn rows_written_before_versions_still_load() {
        let user = r#"{"role":"user","content":"Create a Flask app"}"#;
        let assistant = r#"{"content":"Let me write it.","role":"assistant","tool_calls":[{"id":"call_1","type":"function","function":{"name":"write_file","arguments":"{\"path\": \"app.py\", \"content\": \"x\"}"}}]}"#;
        let assistant_no_text = r#"{"role":"assistant","tool_calls":[{"id":"c2","type":"function","function":{"name":"shell","arguments":"{}"}}]}"#;
        let tool = r#"{"role":"tool","content":"Wrote 1 bytes to app.py","tool_call_id":"call_1"}"#;
        let parts =
            r#"{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}"#;
        assert_eq!(
            decode(user).unwrap(),
            Message::User {
                content: "Create a Flask app".into()
            }
        );
        assert_eq!(
            decode(assistant).unwrap(),
            Message::Assistant {
                content: "Let me write it.".into(),
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "write_file".into(),
                    arguments: r#"{"path": "app.py", "content": "x"}"#.into(),
                }],
            }
        );
        assert!(matches!(
            decode(assistant_no_text).unwrap(),
            Message::Assistant { content, tool_calls } if content.is_empty() && tool_calls[0].name == "shell"
        ));
        assert_eq!(
            decode(tool).unwrap(),
            Message::Tool {
                tool_call_id: "call_1".into(),
                content: "Wrote 1 bytes to app.py".into()
            }
        );
        assert_eq!(
            decode(parts).unwrap(),
            Message::User {
                content: "ab".into()
            }
        );
    }

    #[test]
    fn a_newer_version_is_an_error_not_a_silent_skip() {
        let err = decode(r#"{"v":2,"role":"user","content":"x"}"#).unwrap_err();
        assert_eq!(err, DecodeError::UnknownVersion(2));
        assert!(err.to_string().contains("format version 2"), "{err}");
        assert!(matches!(
            decode(r#"{"v":1,"role":"wizard"}"#),
            Err(DecodeError::Malformed(_))
        ));
    }
}
