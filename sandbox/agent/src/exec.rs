//! Running a command inside the container: `sh -c` in its own process
//! group, stdout and stderr read concurrently and capped, a timeout that
//! kills the whole group, and the group killed too when the caller goes
//! away (the future is dropped) before the command ends.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::output::CappedBuffer;
use crate::protocol::{ExecRequest, ExecResponse};

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

/// Runs `request` to its end. When the returned future is dropped early the
/// command's process group is killed.
pub async fn run(request: &ExecRequest) -> std::io::Result<ExecResponse> {
    let mut command = tokio::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(&request.command)
        .current_dir(&request.cwd)
        .envs(request.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn()?;
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
}
