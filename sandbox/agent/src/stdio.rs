//! Programs with piped standard streams (an MCP stdio server): the
//! caller's bytes are the program's stdin, its stdout is streamed back,
//! and how it ended (its exit, the end of its stderr) follows as trailers.
//! Each program lives at most as long as its request: when the caller goes
//! away the program and everything it started are killed, and so is what
//! it left behind when it exits.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::HeaderMap;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};

use crate::pipe::{Pipe, forward, pipe_with_trailers};
use crate::protocol::{
    MAX_STDIO, STDIO_EXIT_TRAILER, STDIO_STDERR_TAIL, STDIO_STDERR_TRAILER, StdioSpec,
};

/// How long output may keep flowing after the program exited (something
/// it started can hold its stdout open).
const DRAIN: Duration = Duration::from_millis(500);

/// Programs running now.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("{MAX_STDIO} programs are running already")]
    TooMany,
    #[error("{0}")]
    BadSpec(String),
    #[error("cannot start {program}: {error}")]
    Spawn {
        program: String,
        error: std::io::Error,
    },
}

/// One of the [`RUNNING`] slots, given back when dropped.
struct Slot;

impl Slot {
    fn take() -> Option<Self> {
        RUNNING
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_STDIO).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts `spec`'s program, its stdin fed from `input`. Returns the stream
/// of its stdout, which ends with how it ended.
pub fn open(spec: &StdioSpec, input: Incoming) -> Result<Pipe, StdioError> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(StdioError::BadSpec("argv is empty".into()));
    };
    if program.is_empty() {
        return Err(StdioError::BadSpec("the program's name is empty".into()));
    }
    let slot = Slot::take().ok_or(StdioError::TooMany)?;
    let child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(&spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| StdioError::Spawn {
            program: program.clone(),
            error,
        })?;
    let (tx, trailers, body) = pipe_with_trailers(8);
    tokio::spawn(async move {
        let ended = run(child, input, tx).await;
        let _ = trailers.send(ended);
        drop(slot);
    });
    Ok(body)
}

/// Runs the program until it exits or the caller goes away, and says how
/// it ended.
async fn run(mut child: Child, input: Incoming, tx: tokio::sync::mpsc::Sender<Bytes>) -> HeaderMap {
    let pid = child.id().map(|p| p as i32);
    let stdin = child.stdin.take();
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let stderr = tokio::spawn(tail(stderr));
    let mut status = None;
    tokio::select! {
        // The caller went away: the program goes too.
        () = feed(input, stdin) => {}
        // Its stdout closed, or the caller stopped reading.
        () = forward(&mut stdout, &tx) => {}
        exited = child.wait() => {
            status = exited.ok();
            let _ = tokio::time::timeout(DRAIN, forward(&mut stdout, &tx)).await;
        }
    }
    drop(tx);
    let status = match (status, pid) {
        // It is gone (and its pid free for another): what it left in its
        // process group goes too.
        (Some(s), Some(pgid)) => {
            // SAFETY: a negative pid signals the process group.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            Some(s)
        }
        (Some(s), None) => Some(s),
        (None, pid) => {
            if let Some(pid) = pid {
                crate::exec::kill_tree(pid);
            }
            child.wait().await.ok()
        }
    };
    let stderr = tokio::time::timeout(DRAIN, stderr)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let mut trailers = HeaderMap::new();
    let exit = match status {
        Some(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
            (Some(code), _) => format!("code {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            (None, None) => "unknown".into(),
        },
        None => "unknown".into(),
    };
    trailers.insert(
        STDIO_EXIT_TRAILER,
        HeaderValue::from_str(&exit).expect("ASCII"),
    );
    let stderr = String::from_utf8_lossy(&stderr)
        .escape_default()
        .to_string();
    if let Ok(value) = HeaderValue::from_str(&stderr) {
        trailers.insert(STDIO_STDERR_TRAILER, value);
    }
    trailers
}

/// Writes what the caller sends into the program's stdin, and closes it
/// when the caller's body ends (the program may go on answering). Returns
/// only when the caller went away.
async fn feed(mut input: Incoming, mut stdin: Option<ChildStdin>) {
    loop {
        match input.frame().await {
            Some(Ok(frame)) => {
                if let (Ok(data), Some(pipe)) = (frame.into_data(), stdin.as_mut())
                    && pipe.write_all(&data).await.is_err()
                {
                    // It closed its stdin: what comes is dropped.
                    stdin = None;
                }
            }
            Some(Err(_)) => return,
            None => {
                drop(stdin);
                return std::future::pending().await;
            }
        }
    }
}

/// The last [`STDIO_STDERR_TAIL`] bytes `stderr` carries, read to its end.
async fn tail(mut stderr: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut kept: VecDeque<u8> = VecDeque::with_capacity(STDIO_STDERR_TAIL);
    let mut buf = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend(&buf[..n]);
        let over = kept.len().saturating_sub(STDIO_STDERR_TAIL);
        kept.drain(..over);
    }
    kept.into()
}
