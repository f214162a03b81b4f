//! A program in a container with piped standard streams, as a pair of
//! tokio streams (an MCP stdio server's transport): what is written to
//! [`StdioProgram::stdin`] reaches its stdin through the agent, and its
//! stdout is read from [`StdioProgram::stdout`]. How it ended comes last,
//! into [`StdioProgram::ended`]. Dropping both ends the program.

use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use crogia_sandbox_agent::protocol::{
    self, STDIO_EXIT_TRAILER, STDIO_STDERR_TAIL, STDIO_STDERR_TRAILER, StdioQuery, StdioSpec,
};
use http_body_util::BodyExt;
use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::agent::{AgentError, refusal, refused};
use super::{Sandbox, SandboxError};

/// Most bytes written to a program's stdin in one piece.
const WRITE_CHUNK: usize = 16 * 1024;

/// How a program ended, as its agent saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramEnd {
    /// `code N` or `signal N`.
    pub exit: String,
    /// The end of what it wrote on stderr (escaped: plain ASCII).
    pub stderr: String,
}

impl std::fmt::Display for ProgramEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.exit.split_once(' ') {
            Some(("code", code)) => write!(f, "it exited with code {code}")?,
            Some(("signal", signal)) => write!(f, "it was killed by signal {signal}")?,
            _ => write!(f, "it ended")?,
        }
        let stderr = self.stderr.trim_end_matches("\\n").trim();
        if !stderr.is_empty() {
            write!(f, "; the end of its stderr: {stderr}")?;
        }
        Ok(())
    }
}

/// A program running in a container (see the module's doc).
pub struct StdioProgram {
    pub stdin: Box<dyn AsyncWrite + Send + Unpin>,
    pub stdout: Box<dyn AsyncRead + Send + Unpin>,
    /// Set once it has ended and its output has been read to the end.
    pub ended: Arc<OnceLock<ProgramEnd>>,
}

impl Sandbox {
    /// Starts `argv` (no shell) in `container`'s `cwd` with `env` added.
    pub async fn open_stdio(
        &self,
        container: &str,
        argv: &[String],
        env: &[(String, String)],
        cwd: &str,
    ) -> Result<StdioProgram, AgentError> {
        let spec = StdioSpec {
            argv: argv.to_vec(),
            env: env.to_vec(),
            cwd: cwd.to_string(),
        };
        let query = serde_urlencoded::to_string(StdioQuery {
            spec: serde_json::to_string(&spec).expect("specs serialise"),
        })
        .expect("queries serialise");
        let (mut input, answer) = self
            .agent_duplex(container, &format!("{}?{query}", protocol::STDIO))
            .await?;
        let status = answer.status();
        if status != StatusCode::OK {
            let error = refusal(answer).await;
            return Err(match status {
                // The program is missing or cannot run (the configuration
                // is wrong): the agent says which.
                StatusCode::NOT_FOUND => SandboxError::InvalidInput(error),
                _ => refused(status, error),
            }
            .into());
        }

        // stdin: a pipe whose far end is pumped into the request's body;
        // dropping the writer (a duplex end, which closes when dropped,
        // unlike a simplex's half) ends the body, which closes the
        // program's stdin.
        let (mut from_writer, writer) = tokio::io::duplex(WRITE_CHUNK);
        tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(WRITE_CHUNK);
            loop {
                buf.reserve(WRITE_CHUNK);
                match from_writer.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if input.send_data(buf.split().freeze()).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });

        // stdout: the answer's data; its trailers say how the program ended.
        let ended = Arc::new(OnceLock::new());
        let stdout = futures_util::stream::unfold(
            (answer.into_body(), ended.clone()),
            |(mut body, ended)| async move {
                loop {
                    let frame = match body.frame().await? {
                        Ok(frame) => frame,
                        Err(e) => return Some((Err(std::io::Error::other(e)), (body, ended))),
                    };
                    match frame.into_data() {
                        Ok(data) => return Some((Ok::<Bytes, _>(data), (body, ended))),
                        Err(frame) => {
                            if let Some(trailers) = frame.trailers_ref() {
                                // At most what an honest agent sends (it is
                                // escaped: up to 6 characters a byte).
                                let get = |name| {
                                    let value = trailers
                                        .get(name)
                                        .and_then(|v| v.to_str().ok())
                                        .unwrap_or_default();
                                    value.chars().take(6 * STDIO_STDERR_TAIL).collect()
                                };
                                let _ = ended.set(ProgramEnd {
                                    exit: get(STDIO_EXIT_TRAILER),
                                    stderr: get(STDIO_STDERR_TRAILER),
                                });
                            }
                        }
                    }
                }
            },
        );
        Ok(StdioProgram {
            stdin: Box::new(writer),
            stdout: Box::new(tokio_util::io::StreamReader::new(Box::pin(stdout))),
            ended,
        })
    }
}
