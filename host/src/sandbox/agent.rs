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

use bollard::container::LogOutput;
use bollard::exec::CreateExecOptions;
use bytes::Bytes;
use crogia_sandbox_agent::CONTAINER_BINARY;
use crogia_sandbox_agent::protocol::ErrorBody;
use crogia_sandbox_agent::search::SearchError;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use super::exec::Attached;
use super::{Sandbox, SandboxError};

/// Most bytes of one answer from an agent the server reads: a container is
/// untrusted, so its agent is too.
const MAX_ANSWER_BYTES: usize = 64 << 20;

type Link = SendRequest<Full<Bytes>>;

/// The links to every container's agent.
#[derive(Debug, Default)]
pub struct AgentLinks {
    links: Mutex<HashMap<String, Link>>,
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
        let request = || {
            Request::post(format!("http://agent{path_and_query}"))
                .header("content-type", content_type)
                .body(Full::new(body.clone()))
                .expect("a valid request")
        };
        let mut link = self.agent_link(container, false).await?;
        let answer = match link.try_send_request(request()).await {
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
        };
        let status = answer.status();
        let bytes = Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| SandboxError::Engine(format!("reading the sandbox agent's answer: {e}")))?
            .to_bytes();
        if status == StatusCode::OK {
            return Ok(bytes);
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(ErrorBody {
                fault: Some(fault), ..
            }) => Err(AgentError::Refused(fault)),
            Ok(ErrorBody { error, .. }) => Err(SandboxError::Engine(format!(
                "the sandbox agent answered {status}: {error}"
            ))
            .into()),
            Err(_) => Err(SandboxError::Engine(format!(
                "the sandbox agent answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            ))
            .into()),
        }
    }

    /// What a request whose fate is unknown turns into; the link is dropped.
    async fn link_failed(&self, container: &str, e: hyper::Error) -> SandboxError {
        self.agent_links.links.lock().await.remove(container);
        if self.engine.is_available() {
            SandboxError::Engine(format!("the link to the sandbox agent broke: {e}"))
        } else {
            SandboxError::Unavailable("Docker engine is not available".into())
        }
    }

    /// The container's link, made when there is none (or `fresh` is asked).
    async fn agent_link(&self, container: &str, fresh: bool) -> Result<Link, SandboxError> {
        let mut links = self.agent_links.links.lock().await;
        if !fresh
            && let Some(link) = links.get(container)
            && !link.is_closed()
        {
            return Ok(link.clone());
        }
        links.remove(container);
        let link = self.connect_agent(container).await?;
        links.insert(container.to_string(), link.clone());
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
        let Attached { output, input, .. } = self.start_attached(container, options).await?;
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
