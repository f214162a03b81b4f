//! A scripted OpenAI-compatible model over real HTTP: `POST
//! /v1/chat/completions` answers with the next scripted reply, streamed as
//! server-sent events the way OpenAI streams them (text in several chunks,
//! tool-call arguments split across chunks, usage in a final chunk), or with
//! an HTTP error, a broken stream, or a delay. Every request is recorded.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::StreamExt;
use serde_json::{Value, json};

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Text, streamed in chunks of a few characters.
    Text(String),
    /// Text streamed in the given pieces (one event per piece).
    Pieces(Vec<String>),
    /// Tool calls in one turn: (name, arguments). Arguments arrive split
    /// across several chunks.
    Tools(Vec<(String, Value)>),
    /// An HTTP error status with an OpenAI-style error body.
    Status(u16),
    /// Starts streaming, then the connection breaks before any content.
    Broken,
    /// Streams these text pieces, then the connection breaks.
    BrokenAfter(Vec<String>),
    /// Waits, then answers.
    Delay(Duration, Box<Reply>),
    /// Answers so, reporting this usage (prompt, completion tokens) instead
    /// of the usual 10 and 5.
    Usage(u64, u64, Box<Reply>),
    /// A 400 saying the request is longer than the model's context window,
    /// as OpenAI words it (`code: context_length_exceeded`).
    TooLong,
    /// Streams these pieces, then hangs without ever finishing.
    Stall(Vec<String>),
    /// `count` text pieces at `per_second`, each the wall-clock time it was
    /// sent (nanoseconds since the Unix epoch, then a space) — for measuring
    /// delivery latency end to end.
    Clocked { count: usize, per_second: usize },
}

#[derive(Default)]
struct Script {
    replies: VecDeque<Reply>,
    requests: Vec<Value>,
}

/// The scripted model server.
pub struct ScriptedModel {
    /// Base URL to configure as `model.base_url`.
    pub base_url: String,
    script: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedModel {
    pub async fn start(replies: Vec<Reply>) -> Self {
        let script = Arc::new(Mutex::new(Script {
            replies: replies.into(),
            requests: Vec::new(),
        }));
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            // Streamed chunks go out as written, as a real model server's do.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base_url,
            script,
            task,
        }
    }

    /// Adds replies at the end of the script.
    pub fn push(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().unwrap().replies.extend(replies);
    }

    /// Every request body received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.script.lock().unwrap().requests.clone()
    }
}

impl Drop for ScriptedModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn completions(
    State(script): State<Arc<Mutex<Script>>>,
    Json(body): Json<Value>,
) -> Response {
    let reply = {
        let mut s = script.lock().unwrap();
        s.requests.push(body);
        s.replies.pop_front()
    };
    let Some(mut reply) = reply else {
        return error(400, "scripted model: no more replies in the script");
    };
    let mut usage = (10, 5);
    loop {
        match reply {
            Reply::Delay(d, next) => {
                tokio::time::sleep(d).await;
                reply = *next;
            }
            Reply::Usage(prompt, completion, next) => {
                usage = (prompt, completion);
                reply = *next;
            }
            _ => break,
        }
    }
    match reply {
        Reply::Status(code) => error(code, "scripted failure"),
        Reply::TooLong => {
            let body = json!({"error": {
                "message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9001 tokens.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }});
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
        Reply::Text(text) => {
            let pieces: Vec<String> = text
                .chars()
                .collect::<Vec<_>>()
                .chunks(4)
                .map(|c| c.iter().collect())
                .collect();
            sse(text_chunks(pieces, usage), false)
        }
        Reply::Pieces(pieces) => sse(text_chunks(pieces, usage), false),
        Reply::Tools(calls) => sse(tool_chunks(calls, usage), false),
        Reply::Broken => sse(vec![chunk(json!({"role": "assistant"}), None)], true),
        Reply::BrokenAfter(pieces) => {
            let mut chunks = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
            chunks.extend(
                pieces
                    .into_iter()
                    .map(|p| chunk(json!({"content": p}), None)),
            );
            sse(chunks, true)
        }
        Reply::Stall(pieces) => {
            let frames: Vec<Result<Bytes, std::io::Error>> = text_chunks(pieces, usage)
                .into_iter()
                .take_while(|c| {
                    c["choices"][0]["finish_reason"].is_null()
                        && !c["choices"].as_array().unwrap().is_empty()
                })
                .map(|c| Ok(Bytes::from(format!("data: {c}\n\n"))))
                .collect();
            let stream = futures_util::stream::iter(frames)
                .then(|f| async move {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    f
                })
                .chain(futures_util::stream::pending());
            Response::builder()
                .status(200)
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
        Reply::Clocked { count, per_second } => clocked(count, per_second, usage),
        Reply::Delay(..) | Reply::Usage(..) => unreachable!(),
    }
}

fn error(code: u16, message: &str) -> Response {
    let body =
        json!({"error": {"message": message, "type": "scripted", "param": null, "code": null}});
    (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
}

fn chunk(delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "scripted",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    })
}

fn usage_chunk((prompt, completion): (u64, u64)) -> Value {
    json!({
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "scripted",
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    })
}

fn text_chunks(pieces: Vec<String>, usage: (u64, u64)) -> Vec<Value> {
    let mut out = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    out.extend(
        pieces
            .into_iter()
            .map(|p| chunk(json!({"content": p}), None)),
    );
    out.push(chunk(json!({}), Some("stop")));
    out.push(usage_chunk(usage));
    out
}

fn tool_chunks(calls: Vec<(String, Value)>, usage: (u64, u64)) -> Vec<Value> {
    let mut out = vec![chunk(json!({"role": "assistant"}), None)];
    for (i, (name, args)) in calls.into_iter().enumerate() {
        let args = args.to_string();
        out.push(chunk(
            json!({"tool_calls": [{"index": i, "id": format!("call_{i}_{}", rand::random::<u16>()), "type": "function",
                    "function": {"name": name, "arguments": ""}}]}),
            None,
        ));
        // The arguments arrive in pieces, as real models send them.
        let chars: Vec<char> = args.chars().collect();
        for piece in chars.chunks(7) {
            let piece: String = piece.iter().collect();
            out.push(chunk(
                json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}),
                None,
            ));
        }
    }
    out.push(chunk(json!({}), Some("tool_calls")));
    out.push(usage_chunk(usage));
    out
}

fn clocked(count: usize, per_second: usize, usage: (u64, u64)) -> Response {
    // Each millisecond, the pieces due in it, written together.
    let per_tick = (per_second / 1000).max(1);
    let ticks = count.div_ceil(per_tick);
    let head = futures_util::stream::once(async {
        Ok::<_, std::io::Error>(Bytes::from(format!(
            "data: {}\n\n",
            chunk(json!({"role": "assistant", "content": ""}), None)
        )))
    });
    let body = futures_util::stream::unfold(
        (0usize, tokio::time::interval(Duration::from_millis(1))),
        move |(tick, mut interval)| async move {
            if tick >= ticks {
                return None;
            }
            interval.tick().await;
            let mut frame = String::new();
            for _ in 0..per_tick.min(count - tick * per_tick) {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos();
                frame.push_str(&format!(
                    "data: {}\n\n",
                    chunk(json!({"content": format!("{now} ")}), None)
                ));
            }
            Some((
                Ok::<_, std::io::Error>(Bytes::from(frame)),
                (tick + 1, interval),
            ))
        },
    );
    let tail = futures_util::stream::iter([
        Ok(Bytes::from(format!(
            "data: {}\n\n",
            chunk(json!({}), Some("stop"))
        ))),
        Ok(Bytes::from(format!("data: {}\n\n", usage_chunk(usage)))),
        Ok(Bytes::from_static(b"data: [DONE]\n\n")),
    ]);
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(head.chain(body).chain(tail)))
        .unwrap()
}

fn sse(chunks: Vec<Value>, broken: bool) -> Response {
    let stream = async_stream(chunks, broken);
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn async_stream(
    chunks: Vec<Value>,
    broken: bool,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let mut frames: Vec<Result<Bytes, std::io::Error>> = chunks
        .into_iter()
        .map(|c| Ok(Bytes::from(format!("data: {c}\n\n"))))
        .collect();
    if broken {
        frames.push(Err(std::io::Error::other("scripted broken stream")));
    } else {
        frames.push(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
    }
    futures_util::stream::iter(frames).then(|f| async move {
        // A little time between chunks, like a real stream.
        tokio::time::sleep(Duration::from_millis(2)).await;
        f
    })
}
