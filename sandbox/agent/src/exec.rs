//! Running a command inside the container: `sh -c` in its own process
//! group, stdout and stderr read concurrently and capped, a timeout that
//! kills the whole group, and the group killed too when the caller goes
//! away (the future is dropped) before the command ends.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::output::CappedBuffer;
use crate::protocol::{ExecChunk, ExecRequest, ExecResponse};

/// How long output may keep flowing after the command ended or was killed
/// (a background child can hold the pipes open).
const DRAIN: Duration = Duration::from_millis(500);

/// Kills a command, everything it started and its process group when
/// dropped, unless disarmed.
struct GroupKiller {
    pgid: Option<i32>,
}

impl GroupKiller {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            kill_tree(pgid);
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGKILLs `root`, its descendants (found through `/proc`, so children that
/// left its process group with `setsid` are found too) and its process
/// group. The tree is stopped first, round by round, so nothing in it can
/// fork new children while it is being collected.
pub fn kill_tree(root: i32) {
    let mut all: Vec<i32> = Vec::new();
    for _ in 0..4 {
        let tree = descendants(root);
        for &pid in &tree {
            // SAFETY: kill(2) on pids we just read from /proc.
            unsafe {
                libc::kill(pid, libc::SIGSTOP);
            }
        }
        if tree == all {
            break;
        }
        all = tree;
    }
    for &pid in &all {
        // SAFETY: as above.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    // SAFETY: a negative pid signals the process group.
    unsafe {
        libc::kill(-root, libc::SIGKILL);
    }
}

/// `root` and every live process descending from it, sorted.
fn descendants(root: i32) -> Vec<i32> {
    let mut parents: Vec<(i32, i32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The command name may hold spaces or parentheses: cut at the last ") ".
            let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
                continue;
            };
            if let Some(ppid) = rest.split(' ').nth(1).and_then(|p| p.parse().ok()) {
                parents.push((pid, ppid));
            }
        }
    }
    let mut tree = vec![root];
    let mut grew = true;
    while grew {
        grew = false;
        for &(pid, ppid) in &parents {
            if tree.contains(&ppid) && !tree.contains(&pid) {
                tree.push(pid);
                grew = true;
            }
        }
    }
    tree.sort_unstable();
    tree
}

/// Starts `request`'s command: `sh -c` in a process group of its own,
/// stdout and stderr piped.
fn spawn(request: &ExecRequest) -> std::io::Result<tokio::process::Child> {
    tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&request.command)
        .current_dir(&request.cwd)
        .envs(request.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
}

/// Runs `request` to its end. When the returned future is dropped early the
/// command's process group is killed.
pub async fn run(request: &ExecRequest) -> std::io::Result<ExecResponse> {
    let mut child = spawn(request)?;
    let mut killer = GroupKiller {
        pgid: child.id().map(|pid| pid as i32),
    };
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let limit = request.output_limit;
    let out = Collected::spawn(stdout, limit);
    let err = Collected::spawn(stderr, limit);
    let timeout = Duration::from_millis(request.timeout_ms);
    let (exit_code, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => {
            let status = status?;
            // The command is done; what it left running in the background
            // may go on (the group is no longer ours to kill).
            killer.pgid = None;
            let code = status.code().map(i64::from).or_else(|| {
                std::os::unix::process::ExitStatusExt::signal(&status).map(|s| 128 + i64::from(s))
            });
            (code, false)
        }
        Err(_) => {
            killer.kill();
            let _ = child.wait().await;
            (None, true)
        }
    };
    let (stdout, out_cut) = out.finish().await;
    let (stderr, err_cut) = err.finish().await;
    Ok(ExecResponse {
        exit_code,
        stdout,
        stderr,
        timed_out,
        truncated: out_cut || err_cut,
    })
}

/// Starts `request`'s command and streams it: one JSON [`ExecChunk`] line
/// per piece of output into the returned body, then an `exit` line. The
/// timeout kills the group as in [`run`]; so does the caller going away,
/// even while the command is silent.
pub fn stream(request: &ExecRequest) -> std::io::Result<crate::pipe::Pipe> {
    let child = spawn(request)?;
    let (tx, body) = crate::pipe::pipe(16);
    let timeout = Duration::from_millis(request.timeout_ms);
    tokio::spawn(pump(child, request.output_limit, timeout, tx));
    Ok(body)
}

/// Sends one chunk as a line; false when the caller is gone.
async fn send_chunk(tx: &tokio::sync::mpsc::Sender<bytes::Bytes>, chunk: &ExecChunk) -> bool {
    let mut line = serde_json::to_vec(chunk).expect("chunks serialise");
    line.push(b'\n');
    tx.send(line.into()).await.is_ok()
}

/// Reads from `pipe` while there is one; never ready once it is gone.
async fn read_some(
    pipe: &mut Option<impl AsyncRead + Unpin>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match pipe {
        Some(p) => p.read(buf).await,
        None => std::future::pending().await,
    }
}

/// One output stream on its way out: what is left of its limit, and the
/// bytes of a character split across two reads.
struct Outgoing {
    left: usize,
    tail: Vec<u8>,
}

impl Outgoing {
    /// The text of `bytes` (plus the tail kept from before) within the
    /// limit, keeping an incomplete character for next time; and whether
    /// some was cut.
    fn text(&mut self, bytes: &[u8], last: bool) -> (String, bool) {
        let take = bytes.len().min(self.left);
        self.left -= take;
        let cut = take < bytes.len();
        self.tail.extend_from_slice(&bytes[..take]);
        let keep = if last || cut {
            0
        } else {
            match std::str::from_utf8(&self.tail) {
                Ok(_) => 0,
                // An incomplete character at the very end waits for its rest.
                Err(e) if e.error_len().is_none() => self.tail.len() - e.valid_up_to(),
                Err(_) => 0,
            }
        };
        let rest = self.tail.split_off(self.tail.len() - keep);
        let text = String::from_utf8_lossy(&self.tail).into_owned();
        self.tail = rest;
        (text, cut)
    }
}

async fn pump(
    mut child: tokio::process::Child,
    limit: usize,
    timeout: Duration,
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
) {
    let mut killer = GroupKiller {
        pgid: child.id().map(|pid| pid as i32),
    };
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut outgoing = [
        Outgoing {
            left: limit,
            tail: Vec::new(),
        },
        Outgoing {
            left: limit,
            tail: Vec::new(),
        },
    ];
    let mut out_buf = vec![0u8; 16 * 1024];
    let mut err_buf = vec![0u8; 16 * 1024];
    let mut truncated = false;
    let mut timed_out = false;
    let mut exit_code = None;
    let mut ended = false;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    // Armed once the command has ended.
    let drained = tokio::time::sleep(Duration::from_secs(86400 * 365));
    tokio::pin!(drained);
    loop {
        if ended && stdout.is_none() && stderr.is_none() {
            break;
        }
        let (which, read) = tokio::select! {
            read = read_some(&mut stdout, &mut out_buf) => (0, read),
            read = read_some(&mut stderr, &mut err_buf) => (1, read),
            status = child.wait(), if !ended => {
                ended = true;
                // Done: what it left in the background may go on, and gets
                // DRAIN to finish writing what it holds open.
                killer.pgid = None;
                exit_code = status.ok().and_then(|s| {
                    s.code().map(i64::from).or_else(|| {
                        std::os::unix::process::ExitStatusExt::signal(&s).map(|n| 128 + i64::from(n))
                    })
                });
                drained.as_mut().reset(tokio::time::Instant::now() + DRAIN);
                continue;
            }
            () = &mut deadline, if !ended => {
                killer.kill();
                let _ = child.wait().await;
                ended = true;
                timed_out = true;
                drained.as_mut().reset(tokio::time::Instant::now() + DRAIN);
                continue;
            }
            () = &mut drained, if ended => break,
            // The caller went away: the command goes too (the killer drops).
            () = tx.closed() => return,
        };
        let n = read.unwrap_or(0);
        let bytes = if which == 0 {
            if n == 0 {
                stdout = None;
            }
            &out_buf[..n]
        } else {
            if n == 0 {
                stderr = None;
            }
            &err_buf[..n]
        };
        let (data, cut) = outgoing[which].text(bytes, n == 0);
        truncated |= cut;
        if data.is_empty() {
            continue;
        }
        let chunk = if which == 0 {
            ExecChunk::Stdout { data }
        } else {
            ExecChunk::Stderr { data }
        };
        if !send_chunk(&tx, &chunk).await {
            return;
        }
    }
    let exit = ExecChunk::Exit {
        exit_code,
        timed_out,
        truncated,
    };
    let _ = send_chunk(&tx, &exit).await;
}

/// One pipe, read into a capped buffer by a task of its own.
struct Collected {
    buffer: Arc<Mutex<CappedBuffer>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Collected {
    fn spawn(mut pipe: impl AsyncRead + Unpin + Send + 'static, limit: usize) -> Self {
        let buffer = Arc::new(Mutex::new(CappedBuffer::new(limit)));
        let shared = buffer.clone();
        let reader = tokio::spawn(async move {
            let mut chunk = vec![0u8; 64 * 1024];
            while let Ok(n) = pipe.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                shared.lock().unwrap().push(&chunk[..n]);
            }
        });
        Self { buffer, reader }
    }

    /// What was read, once the pipe closed or [`DRAIN`] passed (a
    /// background child may hold it open for ever).
    async fn finish(mut self) -> (String, bool) {
        if tokio::time::timeout(DRAIN, &mut self.reader).await.is_err() {
            self.reader.abort();
        }
        let buffer = std::mem::replace(&mut *self.buffer.lock().unwrap(), CappedBuffer::new(0));
        buffer.finish()
    }
}

impl Drop for Collected {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(command: &str, timeout_ms: u64) -> ExecRequest {
        ExecRequest {
            command: command.into(),
            cwd: "/".into(),
            timeout_ms,
            output_limit: 1024,
            env: vec![("GREETING".into(), "hi".into())],
        }
    }

    fn alive(pid: i32) -> bool {
        // A zombie counts as gone: it no longer runs.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.rsplit(") ").next().unwrap_or("").starts_with('Z'))
            .unwrap_or(false)
    }

    async fn gone(pid: i32) -> bool {
        for _ in 0..100 {
            if !alive(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_command_reports_its_output_apart_and_its_exit_code() {
        let done = run(&request("echo $GREETING; echo oops >&2; exit 3", 10_000))
            .await
            .unwrap();
        assert_eq!(
            (done.stdout.as_str(), done.stderr.as_str(), done.exit_code),
            ("hi\n", "oops\n", Some(3))
        );
        assert!(!done.timed_out && !done.truncated);
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_group() {
        let pidfile = tempfile::NamedTempFile::new().unwrap();
        let command = format!(
            "sleep 30 & echo $! > {}; sleep 30",
            pidfile.path().display()
        );
        let done = run(&request(&command, 300)).await.unwrap();
        assert!(done.timed_out);
        assert_eq!(done.exit_code, None);
        let child: i32 = std::fs::read_to_string(pidfile.path())
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(gone(child).await, "the background child {child} survived");
    }

    #[tokio::test]
    async fn a_timeout_also_kills_children_that_left_the_group() {
        let pidfile = tempfile::NamedTempFile::new().unwrap();
        let command = format!(
            "setsid sh -c 'echo $$ > {}; exec sleep 31' & sleep 30",
            pidfile.path().display()
        );
        let done = run(&request(&command, 500)).await.unwrap();
        assert!(done.timed_out);
        let child: i32 = std::fs::read_to_string(pidfile.path())
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(gone(child).await, "the setsid child {child} survived");
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_takes_the_command_with_it() {
        let pidfile = tempfile::NamedTempFile::new().unwrap();
        let command = format!("echo $$ > {}; exec sleep 779", pidfile.path().display());
        let exec = request(&command, 600_000);
        let running = tokio::spawn(async move { run(&exec).await });
        let mut pid = None;
        for _ in 0..100 {
            if let Ok(text) = std::fs::read_to_string(pidfile.path())
                && let Ok(p) = text.trim().parse::<i32>()
            {
                pid = Some(p);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pid = pid.expect("the command started");
        assert!(alive(pid));
        running.abort();
        assert!(gone(pid).await, "the command outlived its caller");
    }

    #[tokio::test]
    async fn endless_output_is_capped_and_still_times_out() {
        let done = run(&request("yes", 500)).await.unwrap();
        assert!(done.timed_out && done.truncated);
        assert!(done.stdout.len() < 2048, "{}", done.stdout.len());
        assert!(done.stdout.contains(crate::output::TRUNCATION_MARKER));
    }

    #[tokio::test]
    async fn a_background_child_holding_the_pipe_does_not_hold_the_answer() {
        let done = run(&request("echo started; sleep 3 &", 10_000))
            .await
            .unwrap();
        assert_eq!(
            (done.stdout.as_str(), done.exit_code),
            ("started\n", Some(0))
        );
    }

    /// Every chunk a stream sends, until its body ends.
    async fn chunks(body: crate::pipe::Pipe) -> Vec<ExecChunk> {
        use http_body_util::BodyExt;
        let bytes = body.collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_stream_sends_output_apart_and_ends_with_the_exit() {
        let body = stream(&request("echo $GREETING; echo oops >&2; exit 3", 10_000)).unwrap();
        let got = chunks(body).await;
        assert!(
            got.contains(&ExecChunk::Stdout {
                data: "hi\n".into()
            }),
            "{got:?}"
        );
        assert!(
            got.contains(&ExecChunk::Stderr {
                data: "oops\n".into()
            }),
            "{got:?}"
        );
        assert_eq!(
            got.last(),
            Some(&ExecChunk::Exit {
                exit_code: Some(3),
                timed_out: false,
                truncated: false
            })
        );
    }

    #[tokio::test]
    async fn a_stream_is_cut_at_its_limit_and_killed_at_its_timeout() {
        let body = stream(&request("yes", 300)).unwrap();
        let got = chunks(body).await;
        let sent: usize = got
            .iter()
            .map(|c| match c {
                ExecChunk::Stdout { data } => data.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(sent, 1024);
        assert_eq!(
            got.last(),
            Some(&ExecChunk::Exit {
                exit_code: None,
                timed_out: true,
                truncated: true
            })
        );
    }

    #[tokio::test]
    async fn a_stream_whose_caller_goes_away_kills_a_silent_command() {
        let body = stream(&request("echo $$; exec sleep 600", 60_000)).unwrap();
        let mut body = Box::pin(body);
        use http_body_util::BodyExt;
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        let pid: i32 = match serde_json::from_slice(first.trim_ascii_end()).unwrap() {
            ExecChunk::Stdout { data } => data.trim().parse().unwrap(),
            other => panic!("{other:?}"),
        };
        assert!(alive(pid));
        drop(body);
        assert!(gone(pid).await, "the command outlived its caller");
    }

    #[test]
    fn a_character_split_across_reads_is_sent_whole() {
        let mut out = Outgoing {
            left: 100,
            tail: Vec::new(),
        };
        assert_eq!(out.text(&[b'a', 0xC3], false), ("a".to_string(), false));
        assert_eq!(
            out.text(&[0xA9, b'b'], false),
            ("\u{e9}b".to_string(), false)
        );
        // Invalid bytes are not held back.
        assert_eq!(
            out.text(&[0xFF, b'c'], false),
            ("\u{fffd}c".to_string(), false)
        );
        // At the end, an incomplete character goes out as it is.
        assert_eq!(
            out.text(&[0xE2, 0x82], true),
            ("\u{fffd}".to_string(), false)
        );
    }
}
