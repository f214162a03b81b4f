//! `crogia-agent`: the resident process in every sandbox container.
//!
//! - `crogia-agent init`: the container's PID 1. Starts `serve`, restarts it
//!   if it dies, reaps every orphan, and ends the container on SIGTERM.
//! - `crogia-agent serve`: HTTP/2 on the agent's unix socket, and the
//!   egress proxy on the container's loopback.
//! - `crogia-agent connect`: bridges stdin and stdout to the socket; the
//!   server runs this through one long-lived Docker exec and speaks HTTP/2
//!   over it.

use std::os::fd::AsFd as _;
use std::time::Duration;

use crogia_sandbox_agent::SOCKET_PATH;

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let code = match mode.as_str() {
        "init" => init(),
        "serve" => runtime().block_on(serve()),
        "connect" => runtime().block_on(connect()),
        _ => {
            eprintln!("usage: crogia-agent init | serve | connect");
            2
        }
    };
    std::process::exit(code);
}

/// One thread: every request is I/O and child processes, and a wake-up on
/// the same thread costs less than one handed to another.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the runtime")
}

extern "C" fn exit_now(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(0) }
}

/// PID 1: keeps `serve` running and reaps whatever ends up parented to it.
fn init() -> i32 {
    // PID 1 gets no default signal actions: without a handler `docker stop`
    // would wait out its grace period.
    // SAFETY: installing a handler that only calls _exit.
    unsafe {
        libc::signal(libc::SIGTERM, exit_now as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, exit_now as *const () as libc::sighandler_t);
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    loop {
        let server = match std::process::Command::new(&exe).arg("serve").spawn() {
            Ok(child) => child.id() as libc::pid_t,
            Err(e) => {
                eprintln!("crogia-agent: cannot start the server: {e}");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        loop {
            let mut status = 0;
            // SAFETY: waitpid on any child, blocking.
            let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
            if pid == server {
                eprintln!("crogia-agent: the server ended (status {status}); restarting it");
                std::thread::sleep(Duration::from_millis(100));
                break;
            }
            if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
                break;
            }
        }
    }
}

async fn serve() -> i32 {
    let _ = std::fs::remove_file(SOCKET_PATH);
    let listener = match tokio::net::UnixListener::bind(SOCKET_PATH) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("crogia-agent: cannot listen on {SOCKET_PATH}: {e}");
            return 1;
        }
    };
    tokio::spawn(crogia_sandbox_agent::egress::serve_proxy());
    match crogia_sandbox_agent::server::serve(listener).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("crogia-agent: {e}");
            1
        }
    }
}

/// How much the bridge moves at a time: bulk transfers (a fork's objects)
/// cross the engine's exec stream in large writes, not 8 KiB ones.
const BRIDGE_BUFFER: usize = 1 << 20;

/// Stdin, read without the blocking pool when it is a pipe (as the
/// engine's exec gives it), in pieces of up to a [`BRIDGE_BUFFER`].
fn stdio_in() -> Box<dyn tokio::io::AsyncRead + Unpin + Send> {
    let fd = std::io::stdin().as_fd().try_clone_to_owned();
    match fd.map(|fd| {
        grow_pipe(&fd);
        tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
    }) {
        Ok(Ok(pipe)) => Box::new(pipe),
        _ => Box::new(tokio::io::stdin()),
    }
}

/// Stdout, written without the blocking pool when it is a pipe.
fn stdio_out() -> Box<dyn tokio::io::AsyncWrite + Unpin + Send> {
    let fd = std::io::stdout().as_fd().try_clone_to_owned();
    match fd.map(|fd| {
        grow_pipe(&fd);
        tokio::net::unix::pipe::Sender::from_owned_fd(fd)
    }) {
        Ok(Ok(pipe)) => Box::new(pipe),
        _ => Box::new(tokio::io::stdout()),
    }
}

/// Asks for a pipe of a [`BRIDGE_BUFFER`] (the default is 64 KiB); a pipe
/// that cannot grow works as it is.
fn grow_pipe(fd: &impl std::os::fd::AsRawFd) {
    // SAFETY: F_SETPIPE_SZ on a descriptor this process owns; on anything
    // but a pipe it fails harmlessly.
    unsafe {
        libc::fcntl(
            fd.as_raw_fd(),
            libc::F_SETPIPE_SZ,
            BRIDGE_BUFFER as libc::c_int,
        )
    };
}

/// Bridges stdin/stdout to the agent's socket until either side closes.
async fn connect() -> i32 {
    let mut socket = None;
    // The server may still be starting (or restarting): wait a little.
    for _ in 0..50 {
        match tokio::net::UnixStream::connect(SOCKET_PATH).await {
            Ok(s) => {
                socket = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let Some(mut socket) = socket else {
        eprintln!("crogia-agent: no agent listens on {SOCKET_PATH}");
        return 1;
    };
    let (from_agent, mut to_agent) = socket.split();
    let mut stdin = tokio::io::BufReader::with_capacity(BRIDGE_BUFFER, stdio_in());
    let mut from_agent = tokio::io::BufReader::with_capacity(BRIDGE_BUFFER, from_agent);
    let mut stdout = stdio_out();
    // Whichever side ends first ends the bridge: the server going away, or
    // the agent (killed, restarting), which the server must then see as its
    // stream ending rather than as silence.
    let code = tokio::select! {
        up = tokio::io::copy_buf(&mut stdin, &mut to_agent) => match up {
            Ok(_) => 0,
            Err(e) => {
                eprintln!("crogia-agent: bridge ended: {e}");
                1
            }
        },
        down = tokio::io::copy_buf(&mut from_agent, &mut stdout) => match down {
            Ok(_) => 0,
            Err(e) => {
                eprintln!("crogia-agent: bridge ended: {e}");
                1
            }
        },
    };
    use tokio::io::AsyncWriteExt;
    let _ = stdout.flush().await;
    // Not a return: the runtime would wait for its thread blocked reading
    // stdin, which only the server can end.
    std::process::exit(code)
}
