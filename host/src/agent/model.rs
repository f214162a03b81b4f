//! One model turn over any OpenAI-compatible endpoint (async-openai),
//! streamed: text deltas are published as they arrive, tool calls are
//! assembled from their pieces.
//!
//! 429s, 5xx answers, timeouts and broken streams are retried with
//! exponential backoff (and jitter) — but only while nothing of the turn has
//! been published yet, so a client never sees the same text twice.
//!
//! The agent sees a model only through the [`Model`] trait, in its own
//! message types; async-openai's types stay inside [`ModelClient`].

use std::collections::BTreeMap;
use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls,
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestAssistantMessageContent,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestSystemMessageContent, ChatCompletionRequestToolMessage,
    ChatCompletionRequestToolMessageContent, ChatCompletionRequestUserMessage,
    ChatCompletionRequestUserMessageContent, ChatCompletionStreamOptions, ChatCompletionTool,
    ChatCompletionTools, CreateChatCompletionRequest, FunctionCall, FunctionObject,
};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;

use super::messages::{Message, ToolCall};
use crate::config::{AgentConfig, ModelConfig};
use crate::events::{EventKind, EventLog, Usage};
use crate::plugins::ToolInfo;

/// What the model said in one turn.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Turn {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
}

/// What one turn asks of the model.
#[derive(Debug, Clone, Copy)]
pub struct TurnRequest<'a> {
    pub system_prompt: &'a str,
    /// The conversation so far, oldest first.
    pub messages: &'a [Message],
    /// The tools the model may call.
    pub tools: &'a [ToolInfo],
}

/// A model the agent can ask for a turn: the seam between the agent's loop
/// and any model API.
pub trait Model: Send + Sync {
    /// Runs one turn, publishing its text deltas to `events` (if given) as
    /// they arrive.
    fn turn<'a>(
        &'a self,
        request: TurnRequest<'a>,
        events: Option<&'a EventLog>,
    ) -> BoxFuture<'a, Result<Turn, ModelError>>;
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Worth another attempt (429, 5xx, timeout, broken stream).
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Fatal(String),
    /// The request does not fit the model's context window.
    #[error("{0}")]
    ContextTooLong(String),
    #[error("could not record an event: {0}")]
    Events(String),
}

/// A configured model endpoint.
#[derive(Debug, Clone)]
pub struct ModelClient {
    client: Client<OpenAIConfig>,
    model: String,
    settings: AgentConfig,
}

/// What to tell someone whose server has no model configured.
pub const NOT_CONFIGURED: &str = "No model is configured. Set [model] base_url (an OpenAI-compatible API, e.g. \
https://api.openai.com/v1) and model in crogia.toml, or CROGIA_MODEL_BASE_URL and CROGIA_MODEL_MODEL, and put \
the API key in the environment variable named by model.api_key_env (default OPENAI_API_KEY).";

impl ModelClient {
    /// A client for the configured endpoint, or why there is none.
    pub fn from_config(model: &ModelConfig, settings: &AgentConfig) -> Result<Self, String> {
        if model.base_url.trim().is_empty() || model.model.trim().is_empty() {
            return Err(NOT_CONFIGURED.into());
        }
        // Local endpoints often need no key; send a placeholder then.
        let key = std::env::var(&model.api_key_env).unwrap_or_else(|_| "none".into());
        let config = OpenAIConfig::new()
            .with_api_base(model.base_url.trim_end_matches('/'))
            .with_api_key(key);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        // A plain transport: retries are ours (async-openai's default layer
        // would retry 429/5xx on its own, out of our control and unseen).
        let client = Client::build(http.clone(), config)
            .with_http_service(async_openai::middleware::ReqwestService::new(http));
        Ok(Self {
            client,
            model: model.model.clone(),
            settings: settings.clone(),
        })
    }

    /// Runs one turn, publishing its text deltas to `events` as they stream.
    async fn run_turn(
        &self,
        request: TurnRequest<'_>,
        events: Option<&EventLog>,
    ) -> Result<Turn, ModelError> {
        let messages = openai_messages(request.system_prompt, request.messages);
        let tools = openai_tools(request.tools);
        let mut attempt = 0;
        loop {
            let mut published = false;
            let result = self
                .attempt(messages.clone(), tools.clone(), events, &mut published)
                .await;
            match result {
                Err(ModelError::Transient(reason))
                    if !published && attempt < self.settings.max_retries =>
                {
                    let delay = backoff(self.settings.retry_base_ms, attempt);
                    tracing::warn!(attempt = attempt + 1, ?delay, %reason, "model request failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(ModelError::Transient(reason)) => {
                    let tries = attempt + 1;
                    return Err(ModelError::Transient(if published {
                        format!("the model's answer broke off part-way: {reason}")
                    } else {
                        format!("the model request failed after {tries} attempts: {reason}")
                    }));
                }
                other => return other,
            }
        }
    }

    async fn attempt(
        &self,
        messages: Vec<ChatCompletionRequestMessage>,
        tools: Vec<ChatCompletionTools>,
        events: Option<&EventLog>,
        published: &mut bool,
    ) -> Result<Turn, ModelError> {
        let request = CreateChatCompletionRequest {
            model: self.model.clone(),
            messages,
            tools: (!tools.is_empty()).then_some(tools),
            stream: Some(true),
            stream_options: Some(ChatCompletionStreamOptions {
                include_usage: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(self.settings.request_timeout_secs);
        let timed_out = || {
            ModelError::Transient(format!(
                "no complete answer within {} s",
                self.settings.request_timeout_secs
            ))
        };
        let mut stream =
            tokio::time::timeout_at(deadline, self.client.chat().create_stream(request))
                .await
                .map_err(|_| timed_out())?
                .map_err(classify)?;
        let mut turn = Turn::default();
        let mut calls: BTreeMap<u32, ToolCall> = BTreeMap::new();
        loop {
            let chunk = match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => return Err(timed_out()),
                Ok(None) => break,
                Ok(Some(chunk)) => chunk.map_err(classify)?,
            };
            if let Some(u) = chunk.usage {
                turn.usage = Usage {
                    prompt_tokens: u.prompt_tokens.into(),
                    completion_tokens: u.completion_tokens.into(),
                    total_tokens: u.total_tokens.into(),
                };
            }
            let Some(choice) = chunk.choices.into_iter().next() else {
                continue;
            };
            if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                if let Some(events) = events {
                    events
                        .enqueue(EventKind::TextDelta {
                            content: text.clone(),
                        })
                        .await
                        .map_err(|e| ModelError::Events(e.to_string()))?;
                    *published = true;
                }
                turn.text.push_str(&text);
            }
            for piece in choice.delta.tool_calls.unwrap_or_default() {
                let call = calls.entry(piece.index).or_insert_with(|| ToolCall {
                    id: String::new(),
                    name: String::new(),
                    arguments: String::new(),
                });
                if let Some(id) = piece.id.filter(|id| !id.is_empty()) {
                    call.id = id;
                }
                if let Some(f) = piece.function {
                    if let Some(name) = f.name {
                        call.name.push_str(&name);
                    }
                    if let Some(args) = f.arguments {
                        call.arguments.push_str(&args);
                    }
                }
            }
        }
        turn.tool_calls = calls
            .into_iter()
            .map(|(index, mut c)| {
                if c.id.is_empty() {
                    c.id = format!("call_{index}");
                }
                c
            })
            .filter(|c| !c.name.is_empty())
            .collect();
        Ok(turn)
    }
}

impl Model for ModelClient {
    fn turn<'a>(
        &'a self,
        request: TurnRequest<'a>,
        events: Option<&'a EventLog>,
    ) -> BoxFuture<'a, Result<Turn, ModelError>> {
        Box::pin(self.run_turn(request, events))
    }
}

/// The conversation in the OpenAI chat format, after the system prompt.
fn openai_messages(system_prompt: &str, messages: &[Message]) -> Vec<ChatCompletionRequestMessage> {
    let system = ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage {
        content: ChatCompletionRequestSystemMessageContent::Text(system_prompt.to_string()),
        name: None,
    });
    let rest = messages.iter().map(|m| match m {
        Message::User { content } => {
            ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
                content: ChatCompletionRequestUserMessageContent::Text(content.clone()),
                name: None,
            })
        }
        Message::Assistant {
            content,
            tool_calls,
        } => ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage {
            content: (!content.is_empty())
                .then(|| ChatCompletionRequestAssistantMessageContent::Text(content.clone())),
            tool_calls: (!tool_calls.is_empty()).then(|| {
                tool_calls
                    .iter()
                    .map(|c| {
                        ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
                            id: c.id.clone(),
                            function: FunctionCall {
                                name: c.name.clone(),
                                arguments: c.arguments.clone(),
                            },
                        })
                    })
                    .collect()
            }),
            ..Default::default()
        }),
        Message::Tool {
            tool_call_id,
            content,
        } => ChatCompletionRequestMessage::Tool(ChatCompletionRequestToolMessage {
            content: ChatCompletionRequestToolMessageContent::Text(content.clone()),
            tool_call_id: tool_call_id.clone(),
        }),
        Message::Summary { content } => {
            ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
                content: ChatCompletionRequestUserMessageContent::Text(content.clone()),
                name: None,
            })
        }
    });
    std::iter::once(system).chain(rest).collect()
}

fn openai_tools(tools: &[ToolInfo]) -> Vec<ChatCompletionTools> {
    tools
        .iter()
        .map(|t| {
            ChatCompletionTools::Function(ChatCompletionTool {
                function: FunctionObject {
                    name: t.name.clone(),
                    description: Some(t.description.clone()),
                    parameters: Some(t.parameters.clone()),
                    strict: None,
                },
            })
        })
        .collect()
}

fn classify(e: OpenAIError) -> ModelError {
    match e {
        OpenAIError::ApiError(resp) => {
            let status = resp.status_code.as_u16();
            let message = format!(
                "the model endpoint answered {status}: {}",
                resp.api_error.message
            );
            let code = resp.api_error.code.as_deref().unwrap_or_default();
            if matches!(status, 400 | 413) && too_long(code, &resp.api_error.message) {
                ModelError::ContextTooLong(message)
            } else if status == 429 || status == 408 || status >= 500 {
                ModelError::Transient(message)
            } else {
                ModelError::Fatal(message)
            }
        }
        OpenAIError::Reqwest(e) => {
            ModelError::Transient(format!("cannot reach the model endpoint: {e}"))
        }
        OpenAIError::StreamError(e) => ModelError::Transient(format!("the stream broke: {e}")),
        other => ModelError::Fatal(other.to_string()),
    }
}

/// Whether an error says the request is longer than the model's window:
/// OpenAI's `context_length_exceeded` code, or the words other servers use
/// (vLLM, llama.cpp, Ollama, LiteLLM, Anthropic-compatible proxies).
fn too_long(code: &str, message: &str) -> bool {
    const WORDS: [&str; 7] = [
        "context length",
        "context_length",
        "context window",
        "maximum context",
        "prompt is too long",
        "exceeds the available context",
        "too many tokens",
    ];
    let message = message.to_ascii_lowercase();
    code == "context_length_exceeded" || WORDS.iter().any(|w| message.contains(w))
}

/// `base * 2^attempt`, capped at 30 s, with up to 25% jitter.
fn backoff(base_ms: u64, attempt: u32) -> Duration {
    let ms = base_ms.saturating_mul(1 << attempt.min(10)).min(30_000);
    let jitter = rand::random::<u64>() % (ms / 4 + 1);
    Duration::from_millis(ms + jitter)
}
