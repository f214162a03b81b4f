//! Interactive terminals: a login shell on a new pseudo-terminal in
//! `/workspace`, its output streamed to the caller and the caller's bytes
//! typed into it. Each terminal lives exactly as long as its request: when
//! the caller goes away the shell and everything it started are killed;
//! when the shell exits the answer ends.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;

use crate::fs::CONTAINER_ROOT;
use crate::pipe::{Pipe, forward, pipe};
use crate::protocol::{MAX_PTYS, PtyQuery, PtyResize};

/// The open terminals by id: a duplicate of each one's controlling side,
/// to resize it.
static OPEN: LazyLock<Mutex<HashMap<u64, OwnedFd>>> = LazyLock::new(Default::default);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error("{MAX_PTYS} terminals are open already")]
    TooMany,
    #[error("no terminal {0}")]
    NotFound(u64),
    #[error("a terminal is at least 1x1 characters")]
    BadSize,
    #[error("cannot open a terminal: {0}")]
    Io(#[from] std::io::Error),
}

impl From<pty_process::Error> for PtyError {
    fn from(e: pty_process::Error) -> Self {
        match e {
            pty_process::Error::Io(e) => Self::Io(e),
            other => Self::Io(std::io::Error::other(other)),
        }
    }
}

/// The shell a terminal runs: bash where the image has it, else sh.
fn shell() -> (&'static str, &'static [&'static str]) {
    if std::path::Path::new("/bin/bash").exists() {
        ("/bin/bash", &["-l"])
    } else {
        ("/bin/sh", &["-l"])
    }
}

/// Opens a terminal of `size` with a shell on it, typing what `input`
/// carries. Returns its id and the stream of what it shows.
pub fn open(size: PtyQuery, input: Incoming) -> Result<(u64, Pipe), PtyError> {
    if size.cols == 0 || size.rows == 0 {
        return Err(PtyError::BadSize);
    }
    let mut open = OPEN.lock().unwrap();
    if open.len() >= MAX_PTYS {
        return Err(PtyError::TooMany);
    }
    let (pty, pts) = pty_process::open()?;
    pty.resize(pty_process::Size::new(size.rows, size.cols))?;
    let (program, args) = shell();
    let mut child = pty_process::Command::new(program)
        .args(args)
        .current_dir(CONTAINER_ROOT)
        .env("TERM", "xterm-256color")
        .kill_on_drop(true)
        .spawn(pts)?;
    let pid = child.id().map(|p| p as i32);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    open.insert(id, pty.as_fd().try_clone_to_owned()?);
    drop(open);
    let (mut from_shell, mut to_shell) = pty.into_split();
    let (tx, body) = pipe(8);
    tokio::spawn(async move {
        let typing = async {
            let mut input = input;
            while let Some(Ok(frame)) = input.frame().await {
                if let Ok(data) = frame.into_data()
                    && to_shell.write_all(&data).await.is_err()
                {
                    break;
                }
            }
        };
        tokio::select! {
            // The caller went away (or closed its side): the shell goes too.
            () = typing => {}
            // The shell ended (or the caller stopped reading).
            () = forward(&mut from_shell, &tx) => {}
        }
        OPEN.lock().unwrap().remove(&id);
        if let Some(pid) = pid {
            crate::exec::kill_tree(pid);
        }
        let _ = child.kill().await;
    });
    Ok((id, body))
}

/// Gives terminal `id` a new size (the shell gets SIGWINCH).
pub fn resize(request: &PtyResize) -> Result<(), PtyError> {
    if request.cols == 0 || request.rows == 0 {
        return Err(PtyError::BadSize);
    }
    let open = OPEN.lock().unwrap();
    let fd = open
        .get(&request.id)
        .ok_or(PtyError::NotFound(request.id))?;
    let size = rustix::termios::Winsize {
        ws_row: request.rows,
        ws_col: request.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(fd, size).map_err(|e| PtyError::Io(e.into()))
}
