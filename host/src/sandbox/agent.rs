//! The server's side of the sandbox agent: one HTTP/2 connection per
//! container, carried by one long-lived Docker exec of `crogia-agent
//! connect` (which bridges its stdin and stdout to the agent's socket), so
//! many requests share one exec and the container needs no network.
//!
//! A link is made on first use and kept; when its stream breaks (the
//! container restarted, the engine went away, the server restarted) the next
//! request makes a new one. A request that cannot have reached the agent is
//! retried once on the new link; one that may have is never repeated.
//! Dropping a request's future resets its HTTP/2 stream, and the agent then
//! kills what the request started.

use std::collections::HashMap;
use std::sync::Arc;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bytes::Bytes;
use crogia_sandbox_agent::CONTAINER_BINARY;
use crogia_sandbox_agent::protocol::{self, ErrorBody};
use crogia_sandbox_agent::search::SearchError;
use crogia_sandbox_agent::watch::{Batch, FileChange};
use futures_util::StreamExt;
use http_body_util::channel::{Channel, Sender};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use super::{Sandbox, SandboxError};

/// Most bytes of one answer from an agent the server reads: a container is
/// untrusted, so its agent is too.
const MAX_ANSWER_BYTES: usize = 64 << 20;
/// Longest line of a streamed answer (a watch batch of at most 32 paths,
/// a 16 KiB piece of command output escaped as JSON).
const MAX_LINE: usize = 1 << 20;

/// A request's body: whole, or a stream the caller keeps feeding (a
/// terminal's input).
type RequestBody = Either<Full<Bytes>, Channel<Bytes>>;
type Link = SendRequest<RequestBody>;

/// A terminal open in a container: what is typed goes to `input`, what it
/// shows comes from `output`. Dropping both ends it (the agent then kills
/// its shell).
pub struct Terminal {
    /// The agent's id for it, to resize it.
    pub id: u64,
    pub input: Sender<Bytes>,
    pub output: hyper::body::Incoming,
}

/// One container's link, made by whoever needs it first while the others
/// wait for it.
type LinkSlot = Arc<Mutex<Option<Link>>>;

/// The links to every container's agent. Making one locks only its
/// container's slot, so a container whose engine is slow to answer holds
/// up no other container's requests.
#[derive(Debug, Default)]
pub struct AgentLinks {
    links: std::sync::Mutex<HashMap<String, LinkSlot>>,
}

impl AgentLinks {
    fn slot(&self, container: &str) -> LinkSlot {
        self.links
            .lock()
            .unwrap()
            .entry(container.to_string())
            .or_default()
            .clone()
    }

    /// Drops the container's link (it broke, or the container is gone).
    pub(crate) fn forget(&self, container: &str) {
        self.links.lock().unwrap().remove(container);
    }
}

/// Why a call to the agent failed: the sandbox could not be reached, or
/// the agent understood the request and refused it.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Refused(SearchError),
}

/// For callers whose requests the agent never refuses (commands): a
/// refusal is then the agent misbehaving.
impl From<AgentError> for SandboxError {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::Sandbox(e) => e,
            AgentError::Refused(fault) => {
                SandboxError::Engine(format!("the sandbox agent refused: {fault}"))
            }
        }
    }
}

impl Sandbox {
    /// Sends `body` to `path` of the agent in `container` and reads its
    /// JSON answer.
    pub(crate) async fn agent_call<B: Serialize, T: DeserializeOwned>(
        &self,
        container: &str,
        path: &str,
        body: &B,
    ) -> Result<T, AgentError> {
        let json = serde_json::to_vec(body).expect("requests serialise");
        let bytes = self
            .agent_send(container, path, "application/json", Bytes::from(json))
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            SandboxError::Engine(format!("the sandbox agent's answer is malformed: {e}")).into()
        })
    }

    /// Sends `body` (of `content_type`) to `path_and_query` of the agent in
    /// `container` and reads its answer's bytes.
    pub(crate) async fn agent_send(
        &self,
        container: &str,
        path_and_query: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<Bytes, AgentError> {
        let answer = self
            .agent_open(container, path_and_query, content_type, body)
            .await?;
        read_answer(answer).await
    }

    /// Sends `body` to `path_and_query` of the agent in `container`,
    /// streamed as it comes (from another container's agent), and reads the
    /// answer's bytes. Never sent twice (a stream cannot be), so the link is
    /// made anew first if it is found broken. A body that breaks off ends
    /// the request early: the receiving end must check that what it got is
    /// whole.
    pub(crate) async fn agent_upload(
        &self,
        container: &str,
        path_and_query: &str,
        mut body: tokio::sync::mpsc::Receiver<Bytes>,
    ) -> Result<Bytes, AgentError> {
        let mut link = self.agent_link(container, false).await?;
        if link.ready().await.is_err() {
            link = self.agent_link(container, true).await?;
        }
        let (mut input, channel) = Channel::new(16);
        let request = Request::post(format!("http://agent{path_and_query}"))
            .header("content-type", "application/octet-stream")
            .body(Either::Right(channel))
            .expect("a valid request");
        let pump = async move {
            while let Some(data) = body.recv().await {
                if input.send_data(data).await.is_err() {
                    break;
                }
            }
        };
        let (answer, ()) = tokio::join!(link.send_request(request), pump);
        match answer {
            Ok(answer) => read_answer(answer).await,
            Err(e) => Err(self.link_failed(container, e).await.into()),
        }
    }

    /// Sends a request and returns the agent's answer as it starts, its
    /// body still to be read (a stream, for a watch).
    pub(crate) async fn agent_open(
        &self,
        container: &str,
        path_and_query: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<hyper::Response<hyper::body::Incoming>, AgentError> {
        let request = || {
            Request::post(format!("http://agent{path_and_query}"))
                .header("content-type", content_type)
                .body(Either::Left(Full::new(body.clone())))
                .expect("a valid request")
        };
        self.agent_request(container, request).await
    }

    /// Sends the request `make` builds on the container's link; when the
    /// link was found broken before anything was sent, once more on a new
    /// one (so `make` may be called twice).
    async fn agent_request(
        &self,
        container: &str,
        mut request: impl FnMut() -> Request<RequestBody>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, AgentError> {
        let mut link = self.agent_link(container, false).await?;
        Ok(match link.try_send_request(request()).await {
            Ok(answer) => answer,
            // Never sent: the link was already broken. Once more, anew.
            Err(e) if e.message().is_some() => {
                tracing::debug!(container, error = %e.error(), "agent link broken; reconnecting");
                let mut link = self.agent_link(container, true).await?;
                match link.send_request(request()).await {
                    Ok(answer) => answer,
                    Err(e) => return Err(self.link_failed(container, e).await.into()),
                }
            }
            Err(e) => return Err(self.link_failed(container, e.into_error()).await.into()),
        })
    }

    /// Opens a terminal of `cols` x `rows` running a login shell in
    /// `container`'s workspace.
    pub async fn open_terminal(
        &self,
        container: &str,
        cols: u16,
        rows: u16,
    ) -> Result<Terminal, AgentError> {
        let path = format!("{}?cols={cols}&rows={rows}", protocol::PTY);
        let (input, answer) = self.agent_duplex(container, &path).await?;
        let status = answer.status();
        if status != StatusCode::OK {
            return Err(refused(status, refusal(answer).await).into());
        }
        let id = answer
            .headers()
            .get(protocol::PTY_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| SandboxError::Engine("the sandbox agent named no terminal".into()))?;
        Ok(Terminal {
            id,
            input,
            output: answer.into_body(),
        })
    }

    /// Opens a two-way stream to `path_and_query`: what is sent into the
    /// returned sender is the request's body, streamed; the answer comes
    /// back as it starts.
    pub(crate) async fn agent_duplex(
        &self,
        container: &str,
        path_and_query: &str,
    ) -> Result<(Sender<Bytes>, hyper::Response<hyper::body::Incoming>), AgentError> {
        let mut input = None;
        let answer = self
            .agent_request(container, || {
                let (tx, body) = Channel::new(16);
                input = Some(tx);
                Request::post(format!("http://agent{path_and_query}"))
                    .header("content-type", "application/octet-stream")
                    .body(Either::Right(body))
                    .expect("a valid request")
            })
            .await?;
        Ok((input.expect("the request was made"), answer))
    }

    /// Gives terminal `id` in `container` a new size.
    pub async fn resize_terminal(
        &self,
        container: &str,
        id: u64,
        cols: u16,
        rows: u16,
    ) -> Result<(), AgentError> {
        let _: serde_json::Value = self
            .agent_call(
                container,
                protocol::PTY_RESIZE,
                &protocol::PtyResize { id, cols, rows },
            )
            .await?;
        Ok(())
    }

    /// The workspace's changes in `container`, a coalesced batch at a time,
    /// until the agent or the link goes away (the stream then ends).
    pub async fn watch_files(
        &self,
        container: &str,
    ) -> Result<impl futures_util::Stream<Item = Vec<FileChange>> + Send + 'static, AgentError>
    {
        let answer = self
            .agent_stream(container, protocol::WATCH, &serde_json::json!({}))
            .await?;
        Ok(ndjson::<Batch>(answer, container).map(|batch| batch.changes))
    }

    /// Opens a streamed request (JSON `body` to `path`) and returns its
    /// answer, refusing any status but 200.
    pub(crate) async fn agent_stream<B: Serialize>(
        &self,
        container: &str,
        path: &str,
        body: &B,
    ) -> Result<hyper::Response<hyper::body::Incoming>, AgentError> {
        let json = serde_json::to_vec(body).expect("requests serialise");
        let answer = self
            .agent_open(container, path, "application/json", Bytes::from(json))
            .await?;
        if answer.status() != StatusCode::OK {
            let status = answer.status();
            return Err(refused(status, refusal(answer).await).into());
        }
        Ok(answer)
    }
}

/// An answer's bytes when it is a 200; else the error it carries.
async fn read_answer(answer: hyper::Response<hyper::body::Incoming>) -> Result<Bytes, AgentError> {
    let status = answer.status();
    let bytes = Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| SandboxError::Engine(format!("reading the sandbox agent's answer: {e}")))?
        .to_bytes();
    if status == StatusCode::OK {
        return Ok(bytes);
    }
    Err(answer_error(status, &bytes))
}

/// The error a whole answer other than 200 carries: the agent's refusal
/// when it names its fault, else its status as [`refused`] maps it.
fn answer_error(status: StatusCode, bytes: &[u8]) -> AgentError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(ErrorBody {
            fault: Some(fault), ..
        }) => AgentError::Refused(fault),
        parsed => {
            let error = parsed
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned());
            refused(status, error).into()
        }
    }
}

/// What the agent's refusal with `status` means to the server's callers:
/// what was asked for is not there (404), the request is wrong (422, 413),
/// or the sandbox is at a limit (429); anything else is the agent failing.
pub(crate) fn refused(status: StatusCode, error: String) -> SandboxError {
    match status {
        StatusCode::NOT_FOUND => SandboxError::NotFound(error),
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::PAYLOAD_TOO_LARGE => {
            SandboxError::InvalidInput(error)
        }
        StatusCode::TOO_MANY_REQUESTS => SandboxError::Conflict(error),
        _ => SandboxError::Engine(format!("the sandbox agent answered {status}: {error}")),
    }
}

/// Why the agent refused a streamed request: its `error`, or its body.
pub(crate) async fn refusal(answer: hyper::Response<hyper::body::Incoming>) -> String {
    let bytes = Limited::new(answer.into_body(), 64 << 10)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    serde_json::from_slice::<ErrorBody>(&bytes)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned())
}

/// An answer of JSON lines as a stream of `T`. A line that is too long or
/// not a `T` ends the stream: the agent is not to be believed any further.
pub(crate) fn ndjson<T: DeserializeOwned + Send + 'static>(
    answer: hyper::Response<hyper::body::Incoming>,
    container: &str,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    let bytes = http_body_util::BodyDataStream::new(answer.into_body())
        .map(|chunk| chunk.map_err(std::io::Error::other));
    let lines = tokio_util::codec::FramedRead::new(
        tokio_util::io::StreamReader::new(bytes),
        tokio_util::codec::LinesCodec::new_with_max_length(MAX_LINE),
    );
    let container = container.to_string();
    lines.scan((), move |(), line| {
        let item = match line.map(|l| serde_json::from_str::<T>(&l)) {
            Ok(Ok(item)) => Some(item),
            Ok(Err(e)) => {
                tracing::warn!(container, error = %e, "malformed line from the agent");
                None
            }
            Err(e) => {
                tracing::debug!(container, error = %e, "the agent's stream ended");
                None
            }
        };
        std::future::ready(item)
    })
}

impl Sandbox {
    /// What a request whose fate is unknown turns into; the link is dropped.
    async fn link_failed(&self, container: &str, e: hyper::Error) -> SandboxError {
        self.agent_links.forget(container);
        if self.engine.is_available() {
            SandboxError::Engine(format!("the link to the sandbox agent broke: {e}"))
        } else {
            SandboxError::Unavailable("Docker engine is not available".into())
        }
    }

    /// The container's link, made when there is none (or `fresh` is asked).
    async fn agent_link(&self, container: &str, fresh: bool) -> Result<Link, SandboxError> {
        let slot = self.agent_links.slot(container);
        let mut current = slot.lock().await;
        if !fresh
            && let Some(link) = current.as_ref()
            && !link.is_closed()
        {
            return Ok(link.clone());
        }
        *current = None;
        let link = self.connect_agent(container).await?;
        *current = Some(link.clone());
        Ok(link)
    }

    /// Starts `crogia-agent connect` in the container and speaks HTTP/2
    /// over its stdin and stdout.
    async fn connect_agent(&self, container: &str) -> Result<Link, SandboxError> {
        let options = CreateExecOptions {
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            cmd: Some(vec![CONTAINER_BINARY.to_string(), "connect".to_string()]),
            ..Default::default()
        };
        let docker = self.engine.client().await?;
        let exec = docker.create_exec(container, options).await.map_err(|e| {
            match self.engine.classify(e) {
                SandboxError::Conflict(m) => SandboxError::NotRunning(m),
                other => other,
            }
        })?;
        let (output, input) = match docker
            .start_exec(&exec.id, None)
            .await
            .map_err(|e| self.engine.classify(e))?
        {
            StartExecResults::Attached { output, input } => (output, input),
            StartExecResults::Detached => {
                return Err(SandboxError::Engine("exec started detached".into()));
            }
        };
        let container_name = container.to_string();
        let stdout = output.filter_map(move |item| {
            let container = container_name.clone();
            async move {
                match item {
                    Ok(LogOutput::StdOut { message }) => Some(Ok(message)),
                    Ok(LogOutput::StdErr { message }) => {
                        tracing::warn!(
                            container,
                            "sandbox agent: {}",
                            String::from_utf8_lossy(&message).trim_end()
                        );
                        None
                    }
                    Ok(_) => None,
                    Err(e) => Some(Err(std::io::Error::other(e))),
                }
            }
        });
        let reader = tokio_util::io::StreamReader::new(Box::pin(stdout));
        let io = TokioIo::new(tokio::io::join(reader, input));
        let (link, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(protocol::link::STREAM_WINDOW)
            .initial_connection_window_size(protocol::link::CONNECTION_WINDOW)
            .max_frame_size(protocol::link::MAX_FRAME)
            .handshake(io)
            .await
            .map_err(|e| SandboxError::Engine(format!("cannot reach the sandbox agent: {e}")))?;
        let container = container.to_string();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(container, error = %e, "agent link closed");
            }
        });
        Ok(link)
    }
}
