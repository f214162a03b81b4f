//! Checkpoints (issue 20): the workspace recorded by the sandbox agent in a
//! git object store of the container's own, outside the workspace; diffs
//! between states; a state put back byte for byte.

use crogia_host::capabilities::CapabilityError;
use crogia_host::sandbox::{FileStatus, SandboxError};
use crogia_tests::TestServer;
use serde_json::json;

/// Runs `cmd` in the session's workspace; its stdout (it must succeed).
async fn sh(server: &TestServer, id: &str, cmd: &str) -> String {
    let (status, out) = server
        .post(&format!("/api/sessions/{id}/shell"), json!({"cmd": cmd}))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["exit_code"], 0, "{cmd}: {out}");
    out["stdout"].as_str().unwrap().to_string()
}

/// What a rewind must put back: each path's content hash, mode and type.
const STATE: &str = "find . -path ./.crogia -prune -o -print | sort | while read -r p; do \
    if [ -L \"$p\" ]; then echo \"$p link $(readlink \"$p\")\"; \
    elif [ -p \"$p\" ]; then echo \"$p fifo\"; \
    elif [ -d \"$p\" ]; then echo \"$p dir $(stat -c %a \"$p\")\"; \
    else echo \"$p $(stat -c %a \"$p\") $(sha256sum < \"$p\" | cut -c1-16)\"; fi; done";

#[tokio::test]
async fn a_checkpoint_records_diffs_and_puts_back_the_workspace_in_the_container() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let caps = server.state.sessions.get(&id).unwrap().caps.clone();
    sh(
        &server,
        &id,
        "printf 'one\\n' > a.txt && chmod 600 a.txt && mkdir -p d/e && printf 'x' > d/b.txt \
         && printf '#!/bin/sh\\necho hi\\n' > run.sh && ln -s a.txt link && mkdir empty \
         && head -c 3000000 /dev/urandom > big.bin && mkfifo pipe",
    )
    .await;
    let first = caps
        .take_checkpoint(None, "created", 1 << 20)
        .await
        .unwrap();
    let skipped: Vec<(&str, Option<u64>)> = first
        .skipped
        .iter()
        .map(|s| (s.path.as_str(), s.size))
        .collect();
    assert_eq!(skipped, [("big.bin", Some(3_000_000)), ("pipe", None)]);
    assert_eq!(first.files_changed, 4, "{first:?}");
    let before = sh(&server, &id, STATE).await;

    // A task's work: an edit, a chmod +x, a deletion, a new binary file,
    // a new mode git cannot see.
    sh(
        &server,
        &id,
        "printf 'two\\n' >> a.txt && chmod 640 a.txt && chmod +x run.sh && rm d/b.txt \
         && printf '\\000\\001' > bin.dat && rmdir empty",
    )
    .await;
    let second = caps
        .take_checkpoint(Some(&first.checkpoint), "task 1", 1 << 20)
        .await
        .unwrap();
    assert_eq!(
        (second.files_changed, second.insertions, second.deletions),
        (4, 1, 1),
        "{second:?}"
    );
    let diff = caps
        .checkpoint_diff(&first.checkpoint, Some(&second.checkpoint), 1 << 20)
        .await
        .unwrap();
    let files: Vec<(&str, FileStatus, bool)> = diff
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.status, f.binary))
        .collect();
    assert_eq!(
        files,
        [
            ("a.txt", FileStatus::Modified, false),
            ("bin.dat", FileStatus::Added, true),
            ("d/b.txt", FileStatus::Deleted, false),
            ("run.sh", FileStatus::Modified, false),
        ]
    );
    assert!(diff.patch.contains(" one\n+two\n"), "{}", diff.patch);
    assert!(
        diff.patch.contains("old mode 100644\nnew mode 100755"),
        "{}",
        diff.patch
    );
    // Against the workspace as it is now.
    sh(&server, &id, "echo three >> a.txt").await;
    let now = caps
        .checkpoint_diff(&second.checkpoint, None, 1 << 20)
        .await
        .unwrap();
    assert_eq!(now.files.len(), 1, "{now:?}");
    assert_eq!(
        (now.files[0].path.as_str(), now.files[0].insertions),
        ("a.txt", 1)
    );

    // Back to the first: bytes, modes, links, deletions, new files; what
    // it left out stays.
    let restored = caps.restore_checkpoint(&first.checkpoint).await.unwrap();
    assert!(
        restored.written >= 3 && restored.removed >= 1,
        "{restored:?}"
    );
    assert_eq!(sh(&server, &id, STATE).await, before);
    // And forward again.
    caps.restore_checkpoint(&second.checkpoint).await.unwrap();
    assert_eq!(
        sh(&server, &id, "stat -c %a a.txt run.sh").await,
        "640\n755\n"
    );

    // The store is outside the workspace, and git reads it.
    assert!(!sh(&server, &id, "ls -a").await.contains("crogia"));
    assert_eq!(
        sh(
            &server,
            &id,
            "git --git-dir=/.crogia-checkpoints/store log --format=%s"
        )
        .await,
        "task 1\ncreated\n"
    );
    let unknown = caps
        .restore_checkpoint("0123456789012345678901234567890123456789")
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, CapabilityError::Sandbox(SandboxError::NotFound(_))),
        "{unknown:?}"
    );
}

/// Through the API: a checkpoint when the session is made and after each
/// task (its event before `task_completed`), listed oldest first; the diff
/// of a task as JSON and as `text/x-diff`, and against the workspace now.
#[tokio::test]
async fn each_task_leaves_a_checkpoint_whose_diff_the_api_shows() {
    use crogia_tests::model::{Reply, ScriptedModel};
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![(
            "write_file".into(),
            json!({"path": "app.py", "content": "print('hello')\n"}),
        )]),
        Reply::Text("Written.".into()),
    ])
    .await;
    let server = crogia_tests::server_with_model(&model, |_| {}).await;
    let id = server.session().await;
    let (status, list) = server.get(&format!("/api/sessions/{id}/checkpoints")).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["task_id"], json!(null));
    assert_eq!(list[0]["seq"], 1);
    let created = list[0]["checkpoint_id"].as_str().unwrap().to_string();

    let mut ws = server.ws(&id, Some(0)).await;
    let (status, task) = server
        .post(
            &format!("/api/sessions/{id}/tasks"),
            json!({"task": "write it"}),
        )
        .await;
    assert_eq!(status, 200, "{task}");
    let events = ws.until_completed(1).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let checkpoint = events
        .iter()
        .rposition(|e| e["type"] == "checkpoint_created")
        .expect("a checkpoint_created event");
    assert_eq!(kinds[checkpoint + 1], "task_completed", "{kinds:?}");
    let event = &events[checkpoint];
    assert_eq!(event["task_id"], task["task_id"], "{event}");
    assert_eq!(
        (
            &event["files_changed"],
            &event["insertions"],
            &event["deletions"]
        ),
        (&json!(1), &json!(1), &json!(0)),
        "{event}"
    );

    let (_, list) = server.get(&format!("/api/sessions/{id}/checkpoints")).await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["task"], "write it");
    assert_eq!(list[1]["seq"], 2);
    let after = list[1]["checkpoint_id"].as_str().unwrap();
    assert_eq!(event["checkpoint_id"], after);

    // The task's diff: from defaults to the checkpoint before `to`.
    let (status, diff) = server
        .get(&format!("/api/sessions/{id}/diff?to={after}"))
        .await;
    assert_eq!(status, 200, "{diff}");
    assert_eq!(
        diff["files"],
        json!([{"path": "app.py", "status": "added", "insertions": 1, "deletions": 0, "binary": false}])
    );
    assert!(
        diff["patch"].as_str().unwrap().contains("+print('hello')"),
        "{diff}"
    );
    let text = server
        .client
        .get(server.url(&format!(
            "/api/sessions/{id}/diff?from={created}&to={after}"
        )))
        .header("accept", "text/x-diff")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 200);
    assert!(
        text.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/x-diff")
    );
    let patch = text.text().await.unwrap();
    assert!(
        patch.starts_with("diff --git a/app.py b/app.py\nnew file mode 100644\n"),
        "{patch}"
    );

    // Since the latest: nothing, then a change made outside any task.
    let (_, none) = server.get(&format!("/api/sessions/{id}/diff")).await;
    assert_eq!(none["files"], json!([]), "{none}");
    sh(&server, &id, "echo more >> app.py").await;
    let (_, now) = server
        .get(&format!("/api/sessions/{id}/diff?to=current"))
        .await;
    assert_eq!(now["files"][0]["status"], "modified", "{now}");

    let missing = "0123456789012345678901234567890123456789";
    let (status, body) = server
        .get(&format!("/api/sessions/{id}/diff?from={missing}"))
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = server.get("/api/sessions/ffffffff/checkpoints").await;
    assert_eq!(status, 404);
}

/// A rewind of the files puts back the workspace; of the conversation,
/// the model no longer sees the later turns (its request log shows it);
/// `rewound` says so, the next checkpoint follows the one gone back to,
/// and nothing is rewound while a task runs.
#[tokio::test]
async fn a_rewind_takes_back_files_and_conversation_and_waits_for_no_task() {
    use std::time::Duration;

    use crogia_tests::model::{Reply, ScriptedModel};
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![(
            "write_file".into(),
            json!({"path": "notes.txt", "content": "first\n"}),
        )]),
        Reply::Text("Remembered ALPHA.".into()),
        Reply::Tools(vec![(
            "write_file".into(),
            json!({"path": "notes.txt", "content": "second\n"}),
        )]),
        Reply::Text("Remembered BRAVO.".into()),
        Reply::Delay(
            Duration::from_secs(3),
            Box::new(Reply::Text("Slow.".into())),
        ),
        Reply::Text("What I know.".into()),
    ])
    .await;
    let server = crogia_tests::server_with_model(&model, |_| {}).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    let run = |task: &'static str| {
        let server = &server;
        let id = id.clone();
        async move {
            let (status, body) = server
                .post(&format!("/api/sessions/{id}/tasks"), json!({"task": task}))
                .await;
            assert_eq!(status, 200, "{body}");
        }
    };
    run("remember ALPHA").await;
    ws.until_completed(1).await;
    run("remember BRAVO").await;
    ws.until_completed(1).await;
    let (_, list) = server.get(&format!("/api/sessions/{id}/checkpoints")).await;
    let after_alpha = list[1]["checkpoint_id"].as_str().unwrap().to_string();
    assert_eq!(sh(&server, &id, "cat notes.txt").await, "second\n");

    // While a task runs: 409, and nothing changes.
    run("be slow").await;
    let (status, body) = server
        .post(
            &format!("/api/sessions/{id}/rewind"),
            json!({"checkpoint_id": after_alpha, "scope": "both"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    ws.until_completed(1).await;

    let (status, done) = server
        .post(
            &format!("/api/sessions/{id}/rewind"),
            json!({"checkpoint_id": after_alpha, "scope": "both"}),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["scope"], "both");
    assert!(done["files_written"].as_u64().unwrap() >= 1, "{done}");
    assert!(done["messages_dropped"].as_u64().unwrap() >= 4, "{done}");
    assert_eq!(sh(&server, &id, "cat notes.txt").await, "first\n");
    let event = ws.event().await;
    assert_eq!(event["type"], "rewound", "{event}");
    assert_eq!(event["checkpoint_id"], after_alpha.as_str());

    // The model's next request holds ALPHA's turn but not BRAVO's.
    run("what do you know").await;
    ws.until_completed(1).await;
    let last = model.requests().last().unwrap()["messages"].to_string();
    assert!(
        last.contains("remember ALPHA") && last.contains("Remembered ALPHA"),
        "{last}"
    );
    assert!(
        !last.contains("BRAVO") && !last.contains("be slow"),
        "{last}"
    );
    // The next checkpoint follows the one gone back to.
    let (_, diff) = server.get(&format!("/api/sessions/{id}/diff")).await;
    assert_eq!(diff["files"], json!([]), "{diff}");
    let (_, list) = server.get(&format!("/api/sessions/{id}/checkpoints")).await;
    let latest = list.as_array().unwrap().last().unwrap().clone();
    let (_, since) = server
        .get(&format!(
            "/api/sessions/{id}/diff?from={after_alpha}&to={}",
            latest["checkpoint_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(since["files"], json!([]), "{since}");

    // Bad requests.
    let (status, _) = server
        .post(
            &format!("/api/sessions/{id}/rewind"),
            json!({"checkpoint_id": after_alpha, "scope": "everything"}),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = server
        .post(
            &format!("/api/sessions/{id}/rewind"),
            json!({"checkpoint_id": "0123456789012345678901234567890123456789", "scope": "files"}),
        )
        .await;
    assert_eq!(status, 409);
}

/// With the hardened configuration (a read-only root, a user of its own),
/// the store belongs to that user and checkpoints work.
#[tokio::test]
async fn checkpoints_work_under_a_read_only_root_as_the_containers_user() {
    let server = TestServer::with_config(|c| {
        c.sandbox.user = "1000:1000".into();
        c.sandbox.read_only_root = true;
    })
    .await;
    let id = server.session().await;
    assert_eq!(
        sh(&server, &id, "stat -c %u:%g /.crogia-checkpoints/store").await,
        "1000:1000\n"
    );
    let (_, list) = server.get(&format!("/api/sessions/{id}/checkpoints")).await;
    let first = list[0]["checkpoint_id"].as_str().unwrap().to_string();
    sh(&server, &id, "echo made > new.txt").await;
    let (_, diff) = server.get(&format!("/api/sessions/{id}/diff")).await;
    assert_eq!(diff["files"][0]["path"], "new.txt", "{diff}");
    let (status, done) = server
        .post(
            &format!("/api/sessions/{id}/rewind"),
            json!({"checkpoint_id": first, "scope": "files"}),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(sh(&server, &id, "ls").await, "");
}

/// Every file, link and directory of the session's workspace (content hash,
/// mode), as [`STATE`] lists them.
async fn state(server: &TestServer, id: &str) -> String {
    sh(server, id, STATE).await
}

/// A fork (issue 20): a new session with its own container, the workspace
/// as the checkpoint recorded it (bytes and modes; a file too large to
/// record is listed, over REST too, and not carried), the conversation up
/// to it, its log starting with `forked`, the parent's checkpoints; then the
/// two are independent both ways, even once the parent is gone.
#[tokio::test]
async fn a_fork_is_its_parent_at_a_checkpoint_and_then_independent_both_ways() {
    use crogia_tests::model::{Reply, ScriptedModel};
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![(
            "write_file".into(),
            json!({"path": "notes.txt", "content": "ALPHA\n"}),
        )]),
        Reply::Text("Remembered ALPHA.".into()),
        Reply::Text("What the fork knows.".into()),
    ])
    .await;
    let server = crogia_tests::server_with_model(&model, |_| {}).await;
    let parent = server.session().await;
    sh(
        &server,
        &parent,
        "mkdir -p src && printf 'fn main() {}\\n' > src/main.rs && chmod 640 src/main.rs \
         && printf '#!/bin/sh\\n' > run.sh && chmod 755 run.sh && ln -s src/main.rs link \
         && head -c 9000000 /dev/zero > big.bin",
    )
    .await;
    let mut ws = server.ws(&parent, None).await;
    let (status, body) = server
        .post(
            &format!("/api/sessions/{parent}/tasks"),
            json!({"task": "remember ALPHA"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    ws.until_completed(1).await;
    let (_, parent_points) = server
        .get(&format!("/api/sessions/{parent}/checkpoints"))
        .await;
    let latest = parent_points.as_array().unwrap().last().unwrap().clone();
    // The file over workspace.checkpoint_max_file_bytes, listed over REST.
    assert_eq!(
        latest["skipped"],
        json!([{"path": "big.bin", "size": 9_000_000, "reason": latest["skipped"][0]["reason"]}]),
        "{latest}"
    );
    let recorded: String = state(&server, &parent)
        .await
        .lines()
        .filter(|l| !l.starts_with("./big.bin"))
        .map(|l| format!("{l}\n"))
        .collect();

    let (status, forked) = server
        .post(&format!("/api/sessions/{parent}/fork"), json!({}))
        .await;
    assert_eq!(status, 201, "{forked}");
    let child = forked["session_id"].as_str().unwrap().to_string();
    assert_ne!(child, parent);
    assert_eq!(forked["status"], "active", "{forked}");
    let child_container = server
        .state
        .sessions
        .get(&child)
        .unwrap()
        .container_id
        .clone();
    assert_ne!(
        child_container,
        server.state.sessions.get(&parent).unwrap().container_id
    );

    // Its log starts with `forked`, and nothing before it.
    let mut child_ws = server.ws(&child, Some(0)).await;
    let first = child_ws.event().await;
    assert_eq!(first["type"], "forked", "{first}");
    assert_eq!(first["seq"], 1);
    assert_eq!(first["parent_session_id"], parent.as_str());
    assert_eq!(first["checkpoint_id"], latest["checkpoint_id"]);
    assert_eq!(forked["last_event_seq"], 1, "{forked}");

    // The workspace as recorded: the same bytes, modes and link; the file
    // left out is not there.
    let child_state = state(&server, &child).await;
    assert_eq!(child_state, recorded);
    assert!(child_state.contains("./src/main.rs 640"), "{child_state}");
    assert!(!child_state.contains("big.bin"), "{child_state}");
    // Its checkpoints are the parent's up to the fork.
    let (_, child_points) = server
        .get(&format!("/api/sessions/{child}/checkpoints"))
        .await;
    assert_eq!(child_points, parent_points);
    let (status, diff) = server
        .get(&format!(
            "/api/sessions/{child}/diff?from={}&to={}",
            parent_points[0]["checkpoint_id"].as_str().unwrap(),
            latest["checkpoint_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200, "{diff}");
    assert!(
        diff["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == "notes.txt"),
        "{diff}"
    );

    // Independent both ways.
    sh(&server, &child, "echo child > only-child.txt && rm run.sh").await;
    sh(&server, &parent, "echo parent > only-parent.txt").await;
    let parent_now = sh(&server, &parent, "ls").await;
    let child_now = sh(&server, &child, "ls").await;
    assert!(parent_now.contains("only-parent.txt") && parent_now.contains("run.sh"));
    assert!(!parent_now.contains("only-child.txt"), "{parent_now}");
    assert!(child_now.contains("only-child.txt") && !child_now.contains("run.sh"));
    assert!(!child_now.contains("only-parent.txt"), "{child_now}");

    // The conversation came along: the fork's next task is seen by the
    // model after ALPHA's turn.
    let (status, deleted) = server.delete(&format!("/api/sessions/{parent}")).await;
    assert_eq!(status, 200, "{deleted}");
    let (status, body) = server
        .post(
            &format!("/api/sessions/{child}/tasks"),
            json!({"task": "what do you know"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let events = child_ws.until_completed(1).await;
    assert_eq!(events.last().unwrap()["status"], "completed", "{events:?}");
    let last = model.requests().last().unwrap()["messages"].to_string();
    assert!(
        last.contains("remember ALPHA") && last.contains("Remembered ALPHA"),
        "{last}"
    );
    // And its own next checkpoint follows the fork's.
    let (_, diff) = server
        .get(&format!(
            "/api/sessions/{child}/diff?from={}",
            latest["checkpoint_id"].as_str().unwrap()
        ))
        .await;
    let paths: Vec<&str> = diff["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["only-child.txt", "run.sh"], "{diff}");
}

/// A fork while the parent runs a task takes the checkpoint, not the work
/// in progress, and the parent's task goes on undisturbed; an earlier
/// checkpoint can be named.
#[tokio::test]
async fn a_fork_while_the_parent_runs_a_task_takes_the_checkpoint_not_the_work_in_progress() {
    use std::time::Duration;

    use crogia_tests::model::{Reply, ScriptedModel};
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![(
            "write_file".into(),
            json!({"path": "done.txt", "content": "one\n"}),
        )]),
        Reply::Text("First done.".into()),
        Reply::Tools(vec![(
            "write_file".into(),
            json!({"path": "wip.txt", "content": "half\n"}),
        )]),
        Reply::Delay(
            Duration::from_secs(4),
            Box::new(Reply::Text("Second done.".into())),
        ),
    ])
    .await;
    let server = crogia_tests::server_with_model(&model, |_| {}).await;
    let parent = server.session().await;
    let mut ws = server.ws(&parent, None).await;
    let task = |text: &'static str| {
        let server = &server;
        let parent = parent.clone();
        async move {
            let (status, body) = server
                .post(
                    &format!("/api/sessions/{parent}/tasks"),
                    json!({"task": text}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    };
    task("first").await;
    ws.until_completed(1).await;
    task("second").await;
    loop {
        let e = ws.event().await;
        if e["type"] == "tool_complete" {
            break;
        }
    }
    assert_eq!(sh(&server, &parent, "cat wip.txt").await, "half\n");
    // No checkpoint on request in the middle of a task.
    let (status, body) = server
        .post(&format!("/api/sessions/{parent}/checkpoints"), json!({}))
        .await;
    assert_eq!(status, 409, "{body}");

    let (status, forked) = server
        .post(&format!("/api/sessions/{parent}/fork"), json!({}))
        .await;
    assert_eq!(status, 201, "{forked}");
    let child = forked["session_id"].as_str().unwrap().to_string();
    assert_eq!(sh(&server, &child, "ls").await, "done.txt\n");

    // The parent's task ends as it would have.
    let events = ws.until_completed(1).await;
    assert_eq!(events.last().unwrap()["status"], "completed", "{events:?}");
    assert_eq!(sh(&server, &parent, "ls").await, "done.txt\nwip.txt\n");

    // From the first checkpoint (the session as it was made): empty.
    let (_, points) = server
        .get(&format!("/api/sessions/{parent}/checkpoints"))
        .await;
    assert_eq!(points.as_array().unwrap().len(), 3, "{points}");
    let (status, forked) = server
        .post(
            &format!("/api/sessions/{parent}/fork"),
            json!({"checkpoint_id": points[0]["checkpoint_id"]}),
        )
        .await;
    assert_eq!(status, 201, "{forked}");
    let empty = forked["session_id"].as_str().unwrap();
    assert_eq!(sh(&server, empty, "ls").await, "");
    let (_, points) = server
        .get(&format!("/api/sessions/{empty}/checkpoints"))
        .await;
    assert_eq!(points.as_array().unwrap().len(), 1, "{points}");

    // A change made by hand, recorded on request, is what the next fork
    // gets.
    sh(&server, &parent, "echo by hand > manual.txt").await;
    let (status, taken) = server
        .post(&format!("/api/sessions/{parent}/checkpoints"), json!({}))
        .await;
    assert_eq!(status, 201, "{taken}");
    assert_eq!(taken["seq"], 4, "{taken}");
    assert_eq!(taken["files_changed"], 1, "{taken}");
    assert_eq!(taken["task"], json!(null), "{taken}");
    let (status, forked) = server
        .post(&format!("/api/sessions/{parent}/fork"), json!({}))
        .await;
    assert_eq!(status, 201, "{forked}");
    let latest = forked["session_id"].as_str().unwrap();
    assert_eq!(sh(&server, latest, "cat manual.txt").await, "by hand\n");
}

async fn sessions(server: &TestServer) -> usize {
    server
        .get("/api/sessions")
        .await
        .1
        .as_array()
        .unwrap()
        .len()
}

/// Forks that cannot be made say why, and leave no session behind: an
/// unknown checkpoint (409) or session (404), a parent whose checkpoint store was
/// tampered with (the import is refused, unless the parent's workspace
/// still holds the file, checked, to take instead), checkpoints turned off
/// (409).
#[tokio::test]
async fn a_fork_that_cannot_be_made_says_why_and_leaves_nothing_behind() {
    let server = TestServer::start().await;
    let parent = server.session().await;
    assert_eq!(sessions(&server).await, 1);
    let (status, body) = server
        .post(
            &format!("/api/sessions/{parent}/fork"),
            json!({"checkpoint_id": "0123456789012345678901234567890123456789"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = server.post("/api/sessions/ffffffff/fork", json!({})).await;
    assert_eq!(status, 404);

    // The parent's sandbox spoils a blob of its checkpoint: the fork's
    // sandbox refuses the copy and the fork is undone.
    sh(&server, &parent, "echo data > file.txt").await;
    let (status, body) = server
        .post(
            &format!("/api/sessions/{parent}/tasks"),
            json!({"task": "x"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut ws = server.ws(&parent, None).await;
    ws.until_completed(1).await;
    let blob = sh(
        &server,
        &parent,
        "git --git-dir=/.crogia-checkpoints/store rev-parse HEAD:file.txt",
    )
    .await;
    let blob = blob.trim();
    sh(
        &server,
        &parent,
        &format!(
            "f=/.crogia-checkpoints/store/objects/{}/{}; chmod u+w $f; \
             printf 'blob 5\\0spoilt' | python3 -c 'import sys,zlib; \
             sys.stdout.buffer.write(zlib.compress(sys.stdin.buffer.read()))' > $f",
            &blob[..2],
            &blob[2..]
        ),
    )
    .await;
    // Its file changed since too: no checked copy of the blob is left
    // anywhere, so both the layer and the copy refuse it.
    sh(&server, &parent, "echo changed > file.txt").await;
    let (status, body) = server
        .post(&format!("/api/sessions/{parent}/fork"), json!({}))
        .await;
    assert!(status >= 400 && status != 404, "{status} {body}");
    assert_eq!(sessions(&server).await, 1, "the failed fork left a session");
    // Nor a container or a volume: not the layer, nor the new session's
    // container and overlay volumes, made while the layer was being written.
    assert_left(&server, 1).await;
    // The file back as the checkpoint has it: the layer takes the file
    // (checked against the blob's id) and stores the blob from it.
    sh(&server, &parent, "echo data > file.txt").await;
    let (status, forked) = server
        .post(&format!("/api/sessions/{parent}/fork"), json!({}))
        .await;
    assert_eq!(status, 201, "{forked}");
    let child = forked["session_id"].as_str().unwrap();
    assert_eq!(sh(&server, child, "cat file.txt").await, "data\n");
    sh(&server, child, "echo other > file.txt").await;
    let (status, body) = server.get(&format!("/api/sessions/{child}/diff")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["patch"].as_str().unwrap().contains("-data"), "{body}");
    let (status, _) = server.delete(&format!("/api/sessions/{child}")).await;
    assert_eq!(status, 200);

    // Checkpoints off: 409.
    let off = TestServer::with_config(|c| c.workspace.checkpoints = false).await;
    let id = off.session().await;
    let (status, body) = off
        .post(&format!("/api/sessions/{id}/fork"), json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("workspace.checkpoints"), "{body}");
}

/// A workspace that is a git repository of its own: taking checkpoints
/// never touches its `.git` (the files are recorded like any others), and a
/// rewind puts the repository back as it was, commits, index and all, and
/// git finds it whole.
#[tokio::test]
async fn a_users_own_git_repository_is_recorded_as_files_and_kept_intact() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let git = "git -c user.name=t -c user.email=t@example.com";
    sh(
        &server,
        &id,
        &format!(
            "git init -q -b main . && printf 'v1\\n' > app.py && {git} add app.py \
             && {git} commit -q -m first"
        ),
    )
    .await;
    // Every file of the repository with its mode and content.
    let repo = "find .git -print | sort | while read -r p; do \
        if [ -d \"$p\" ]; then echo \"$p dir\"; \
        else echo \"$p $(stat -c %a \"$p\") $(sha256sum < \"$p\" | cut -c1-16)\"; fi; done";
    let before = sh(&server, &id, repo).await;
    let (status, taken) = server
        .post(&format!("/api/sessions/{id}/checkpoints"), json!({}))
        .await;
    assert_eq!(status, 201, "{taken}");
    let checkpoint = taken["checkpoint_id"].as_str().unwrap().to_string();
    // Taking it changed nothing in the repository, and it has no object of
    // the checkpoint's.
    assert_eq!(sh(&server, &id, repo).await, before);
    let missing = server
        .post(
            &format!("/api/sessions/{id}/shell"),
            json!({"cmd": format!("git cat-file -e {checkpoint}")}),
        )
        .await
        .1;
    assert_ne!(missing["exit_code"], 0, "{missing}");
    // The repository's files are in the checkpoint like any others.
    let (_, diff) = server
        .get(&format!("/api/sessions/{id}/diff?to={checkpoint}"))
        .await;
    let paths: Vec<&str> = diff["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&".git/HEAD") && paths.contains(&"app.py"),
        "{paths:?}"
    );

    // Work after it: a second commit, a branch.
    sh(
        &server,
        &id,
        &format!("printf 'v2\\n' > app.py && {git} commit -q -am second && git branch topic"),
    )
    .await;
    assert_ne!(sh(&server, &id, repo).await, before);
    let (status, body) = server
        .post(
            &format!("/api/sessions/{id}/rewind"),
            json!({"checkpoint_id": checkpoint, "scope": "files"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(sh(&server, &id, repo).await, before);
    assert_eq!(sh(&server, &id, "git log --format=%s").await, "first\n");
    assert_eq!(
        sh(&server, &id, "git branch --format='%(refname:short)'").await,
        "main\n"
    );
    assert_eq!(sh(&server, &id, "git status --porcelain").await, "");
    sh(&server, &id, "git fsck --strict --no-dangling").await;
}

/// Forks at once, more than the server reads ahead for (four): each
/// export is read ahead while its new container starts, or read as its
/// import takes it once the read-ahead is spoken for; every fork gets the
/// whole workspace either way, in a second wave as in the first.
#[tokio::test]
async fn forks_at_once_beyond_the_read_ahead_each_get_the_whole_workspace() {
    let server = TestServer::start().await;
    let parent = server.session().await;
    // Incompressible, so each export is many of the link's frames.
    sh(
        &server,
        &parent,
        "mkdir -p data && for i in 1 2 3 4; do head -c 1500000 /dev/urandom > data/$i.bin; done \
         && printf 'kept\\n' > notes.txt",
    )
    .await;
    let (status, body) = server
        .post(&format!("/api/sessions/{parent}/checkpoints"), json!({}))
        .await;
    assert_eq!(status, 201, "{body}");
    let recorded = state(&server, &parent).await;
    let fork = format!("/api/sessions/{parent}/fork");
    for wave in 0..2 {
        let forks = (0..6).map(|_| server.post(&fork, json!({})));
        for (status, forked) in futures_util::future::join_all(forks).await {
            assert_eq!(status, 201, "wave {wave}: {forked}");
            let child = forked["session_id"].as_str().unwrap();
            assert_eq!(
                state(&server, child).await,
                recorded,
                "wave {wave}: fork {child}"
            );
            let (status, _) = server.delete(&format!("/api/sessions/{child}")).await;
            assert_eq!(status, 200, "wave {wave}: deleting fork {child}");
        }
    }
}

/// A fork's files are its starting state, not changes: its import is not
/// watched (the watch starts once the workspace is in place), so its log
/// shows no `file_changed` before the first change made in the fork, and
/// that one is reported.
#[tokio::test]
async fn a_forks_copied_files_are_not_reported_as_changes_and_later_ones_are() {
    use crogia_tests::WsRead;
    use std::time::Duration;
    let server = TestServer::with_config(|c| c.workspace.file_events = true).await;
    let parent = server.session().await;
    sh(
        &server,
        &parent,
        "mkdir -p a b && for i in $(seq 1 100); do echo $i > a/f$i; echo $i > b/g$i; done",
    )
    .await;
    let (status, body) = server
        .post(&format!("/api/sessions/{parent}/checkpoints"), json!({}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, forked) = server
        .post(&format!("/api/sessions/{parent}/fork"), json!({}))
        .await;
    assert_eq!(status, 201, "{forked}");
    let child = forked["session_id"].as_str().unwrap().to_string();
    // Everything the fork's log holds, then what comes.
    let mut ws = server.ws(&child, Some(0)).await;
    let mut seen = Vec::new();
    // The watch starts just after the fork answers: written until reported.
    'reported: for attempt in 0..20 {
        sh(&server, &child, &format!("echo {attempt} > later.txt")).await;
        loop {
            match ws.read(Duration::from_secs(2)).await {
                WsRead::Event(e) if e["type"] == "file_changed" => {
                    seen.push(e);
                    break 'reported;
                }
                WsRead::Event(e) => seen.push(e),
                WsRead::TimedOut => break,
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(seen[0]["type"], "forked", "{seen:?}");
    let changes: Vec<_> = seen
        .iter()
        .filter(|e| e["type"] == "file_changed")
        .collect();
    assert_eq!(changes.len(), 1, "{seen:?}");
    assert_eq!(changes[0]["path"], "later.txt", "{seen:?}");
    assert_eq!(
        sh(&server, &child, "ls a | wc -l; ls b | wc -l").await,
        "100\n100\n"
    );
}

/// The volumes on the test engine whose `label` is `value`, by name.
async fn volumes_labelled(label: &str, value: &str) -> Vec<String> {
    let sandbox = crogia_host::sandbox::Sandbox::new(
        crogia_host::sandbox::DockerEngine::new(""),
        Default::default(),
    );
    let mut names: Vec<String> = sandbox
        .volumes_by_labels(&[&format!("{label}={value}")])
        .await
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    names.sort();
    names
}

/// Asserts that this test's server has `containers` containers on the test
/// engine and (soon: a deletion finishes after its answer) no volume.
async fn assert_left(server: &TestServer, containers: usize) {
    let label = &server.fixture.label;
    let left = server
        .fixture
        .sandbox
        .find_by_labels(&[&format!("{}={label}", crogia_tests::TEST_LABEL)])
        .await
        .unwrap();
    assert_eq!(left.len(), containers, "{left:?}");
    assert!(
        volumes_gone(crogia_tests::TEST_LABEL, label).await,
        "left behind: {:?}",
        volumes_labelled(crogia_tests::TEST_LABEL, label).await
    );
}

/// Until `volumes` is empty (a deleted session's workspace and layer are
/// removed just after the answer), at most 30 s; whether it became so.
async fn volumes_gone(label: &str, value: &str) -> bool {
    for _ in 0..150 {
        if volumes_labelled(label, value).await.is_empty() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    false
}

/// Forks of one checkpoint stand on one layer (issue 20's fork cost): the
/// first fork writes the checkpoint's files once into it, every fork of
/// it then has an overlay of its own over it, copy on write. Each is the
/// checkpoint byte for byte, changes (an edit, a deletion, a directory
/// renamed) stay in the fork that made them, a rewind puts a fork back, a
/// fork of a fork reads its history through the layer, a restart keeps
/// both, and the layer goes with the last session standing on it.
#[tokio::test]
async fn forks_of_a_checkpoint_share_its_layer_copy_on_write_and_the_last_takes_it_along() {
    let server = TestServer::start().await;
    let parent = server.session().await;
    sh(
        &server,
        &parent,
        "mkdir -p src/deep && printf 'fn main() {}\\n' > src/main.rs && chmod 640 src/main.rs \
         && printf 'x\\n' > src/deep/x.txt && printf '#!/bin/sh\\n' > run.sh && chmod 755 run.sh \
         && ln -s src/main.rs link",
    )
    .await;
    let (status, point) = server
        .post(&format!("/api/sessions/{parent}/checkpoints"), json!({}))
        .await;
    assert_eq!(status, 201, "{point}");
    let recorded = state(&server, &parent).await;

    let fork = format!("/api/sessions/{parent}/fork");
    let (mut children, mut layers) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let (status, forked) = server.post(&fork, json!({})).await;
        assert_eq!(status, 201, "{forked}");
        let workdir = forked["workdir"].as_str().unwrap();
        let layer = workdir
            .strip_prefix("layered:")
            .and_then(|w| w.split_once('/'))
            .unwrap_or_else(|| panic!("not a layered workspace: {workdir}"))
            .0
            .to_string();
        children.push(forked["session_id"].as_str().unwrap().to_string());
        layers.push(layer);
    }
    assert_eq!(
        layers[0], layers[1],
        "two forks of one checkpoint, two layers"
    );
    let layer = layers[0].clone();
    // The layer: its files and its store; the container that wrote them is gone.
    assert_eq!(
        volumes_labelled(crogia_host::sandbox::LABEL_LAYER, &layer).await,
        [layer.clone(), format!("{layer}.store")]
    );
    let sandbox = crogia_host::sandbox::Sandbox::new(
        crogia_host::sandbox::DockerEngine::new(""),
        Default::default(),
    );
    let writers = sandbox
        .find_by_labels(&[&format!("{}={layer}", crogia_host::sandbox::LABEL_LAYER)])
        .await
        .unwrap();
    assert!(writers.is_empty(), "{writers:?}");
    for child in &children {
        assert_eq!(state(&server, child).await, recorded, "fork {child}");
    }

    // Copy on write: what one fork changes, neither the other fork nor the
    // parent sees; the parent's changes reach no fork.
    let (a, b) = (&children[0], &children[1]);
    sh(
        &server,
        a,
        "printf 'changed\\n' >> src/main.rs && rm run.sh && mv src/deep src/moved \
         && echo new > new.txt",
    )
    .await;
    sh(&server, &parent, "echo parent > only-parent.txt && rm link").await;
    assert_eq!(state(&server, b).await, recorded);
    let parent_now = sh(&server, &parent, "ls; cat src/main.rs").await;
    assert_eq!(parent_now, "only-parent.txt\nrun.sh\nsrc\nfn main() {}\n");
    assert_eq!(
        sh(&server, a, "ls src; cat src/main.rs src/moved/x.txt").await,
        "main.rs\nmoved\nfn main() {}\nchanged\nx\n"
    );
    // The fork's diff from the checkpoint is its own changes; its rewind
    // puts the checkpoint back over the layer.
    let point_id = point["checkpoint_id"].as_str().unwrap();
    let (status, diff) = server
        .get(&format!(
            "/api/sessions/{a}/diff?from={point_id}&to=current"
        ))
        .await;
    assert_eq!(status, 200, "{diff}");
    let mut paths: Vec<&str> = diff["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "new.txt",
            "run.sh",
            "src/deep/x.txt",
            "src/main.rs",
            "src/moved/x.txt"
        ],
        "{diff}"
    );
    let (status, done) = server
        .post(
            &format!("/api/sessions/{a}/rewind"),
            json!({"checkpoint_id": point_id, "scope": "files"}),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(state(&server, a).await, recorded);

    // A fork of a fork: the checkpoint's objects come from the layer's
    // store, into a layer of its own.
    sh(&server, a, "echo second > second.txt").await;
    let (status, second) = server
        .post(&format!("/api/sessions/{a}/checkpoints"), json!({}))
        .await;
    assert_eq!(status, 201, "{second}");
    let a_state = state(&server, a).await;
    let (status, grandchild) = server
        .post(&format!("/api/sessions/{a}/fork"), json!({}))
        .await;
    assert_eq!(status, 201, "{grandchild}");
    let grandchild = grandchild["session_id"].as_str().unwrap().to_string();
    assert_eq!(state(&server, &grandchild).await, a_state);
    let grand_layer = server
        .state
        .sessions
        .get(&grandchild)
        .unwrap()
        .caps
        .workspace()
        .layer()
        .unwrap()
        .to_string();
    assert_ne!(grand_layer, layer);

    // The layer stays while a session stands on it, the parent or not.
    for id in [&parent, a] {
        let (status, _) = server.delete(&format!("/api/sessions/{id}")).await;
        assert_eq!(status, 200);
    }
    assert_eq!(state(&server, b).await, recorded);
    // A restart keeps the layer (a stored session names it) and the fork
    // on it as it was, then releases it as before.
    let server = TestServer::start_with(server.stop().await).await;
    assert_eq!(state(&server, b).await, recorded);
    assert_eq!(
        volumes_labelled(crogia_host::sandbox::LABEL_LAYER, &layer)
            .await
            .len(),
        2
    );
    // A fork's own: its overlay, and the overlay's upper and work volumes.
    assert_eq!(volumes_labelled("crogia.session", b).await.len(), 3);
    let (status, _) = server.delete(&format!("/api/sessions/{b}")).await;
    assert_eq!(status, 200);
    assert!(
        volumes_gone(crogia_host::sandbox::LABEL_LAYER, &layer).await,
        "the layer outlived the last fork on it"
    );
    // Nor are the forks' own volumes left (their overlays, upper and work).
    for child in &children {
        assert!(
            volumes_gone("crogia.session", child).await,
            "fork {child}'s volumes were left"
        );
    }
    assert_eq!(
        volumes_labelled(crogia_host::sandbox::LABEL_LAYER, &grand_layer)
            .await
            .len(),
        2
    );
}

/// A server told to stop just after it answered a fork's deletion still
/// removes what the deletion leaves to do after its answer: the fork's
/// volumes, and the layer it was the last to stand on (which needs the
/// database, to tell that no other session stands on it). The stop waits
/// for that clean-up; nothing waits for a next start to sweep it.
#[tokio::test]
async fn a_server_stopping_right_after_a_forks_deletion_still_removes_its_layer() {
    let server = TestServer::start().await;
    let parent = server.session().await;
    sh(&server, &parent, "echo x > x.txt").await;
    let (status, forked) = server
        .post(&format!("/api/sessions/{parent}/fork"), json!({}))
        .await;
    assert_eq!(status, 201, "{forked}");
    let child = forked["session_id"].as_str().unwrap().to_string();
    let layer = server
        .state
        .sessions
        .get(&child)
        .unwrap()
        .caps
        .workspace()
        .layer()
        .expect("a fork on a layer")
        .to_string();
    assert_eq!(
        volumes_labelled(crogia_host::sandbox::LABEL_LAYER, &layer)
            .await
            .len(),
        2
    );
    let (status, _) = server.delete(&format!("/api/sessions/{child}")).await;
    assert_eq!(status, 200);
    let fixture = server.stop().await;
    assert!(
        volumes_gone(crogia_host::sandbox::LABEL_LAYER, &layer).await,
        "the layer outlived the server's stop"
    );
    assert!(
        volumes_gone("crogia.session", &child).await,
        "the fork's volumes outlived the server's stop"
    );
    drop(fixture);
}

/// The first fork's container is made while its layer is still being
/// written, and must not start (mounting an overlay whose lower directory
/// is still changing) before the layer is done: it waits, created and not
/// running, until told; told the layer will not be, it and its volumes are
/// removed and the reason is given.
#[tokio::test]
async fn a_container_on_a_layer_being_written_starts_only_once_it_is_done() {
    use crogia_host::workspace::Workspace;
    let t = crogia_tests::TestSandbox::new();
    let layer = format!("crogia-layer-{:016x}", rand::random::<u64>());
    t.sandbox.prepare_layer(&layer).await.unwrap();
    let status_of = |session: String| {
        let sandbox = t.sandbox.clone();
        async move {
            sandbox
                .find_by_labels(&[&format!("crogia.session={session}")])
                .await
                .unwrap()
                .into_iter()
                .map(|c| c.status)
                .collect::<Vec<_>>()
        }
    };

    // Session ids of this test's own.
    let suffix = format!("{:08x}", rand::random::<u32>());
    let (gated, refused) = (format!("g{suffix}"), format!("r{suffix}"));
    let (done, built) = tokio::sync::watch::channel(None);
    let workspace = Workspace::layered_for(&gated, &layer);
    let creating = tokio::spawn({
        let (sandbox, workspace, id) = (t.sandbox.clone(), workspace.clone(), gated.clone());
        async move { sandbox.create_on_layer(&id, &workspace, built).await }
    });
    // Made, then held: still not started a while after it was made.
    let mut made = false;
    for _ in 0..150 {
        if !status_of(gated.clone()).await.is_empty() {
            made = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        made,
        "the container was not made while its layer was written"
    );
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(status_of(gated.clone()).await, ["created"]);
    assert!(!creating.is_finished());
    done.send_replace(Some(Ok(())));
    let container = creating.await.unwrap().unwrap();
    assert_eq!(status_of(gated.clone()).await, ["running"]);
    t.sandbox.remove(&container).await.unwrap();
    t.sandbox.remove_workspace(&workspace).await.unwrap();

    // Told the layer will not be: nothing of it remains, and it says why.
    let (done, built) = tokio::sync::watch::channel(None);
    let workspace = Workspace::layered_for(&refused, &layer);
    let creating = tokio::spawn({
        let (sandbox, workspace, id) = (t.sandbox.clone(), workspace.clone(), refused.clone());
        async move { sandbox.create_on_layer(&id, &workspace, built).await }
    });
    done.send_replace(Some(Err("the parent's object was spoilt".into())));
    let err = creating.await.unwrap().unwrap_err().to_string();
    assert!(err.contains("the parent's object was spoilt"), "{err}");
    assert!(status_of(refused.clone()).await.is_empty());
    // The refused container's workspace is its caller's to remove (as
    // `create` leaves it); then only the layer's own volumes are left.
    t.sandbox.remove_workspace(&workspace).await.unwrap();
    assert!(volumes_gone("crogia.session", &refused).await);
    assert!(volumes_gone("crogia.session", &gated).await);
    t.sandbox.remove_layer(&layer).await.unwrap();
    assert!(volumes_gone(crogia_host::sandbox::LABEL_LAYER, &layer).await);
}

/// The value of the `/metrics` sample `sample` (0 when absent).
async fn metric(server: &TestServer, sample: &str) -> f64 {
    let text = server.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Until no layer is left to write ahead (at most 60 s).
async fn ahead_settled(server: &TestServer) {
    for _ in 0..300 {
        if metric(server, "crogia_fork_layers_ahead_pending").await == 0.0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("layers written ahead did not settle");
}

/// The layers of this test's server on the test engine, by name.
async fn layers_of(server: &TestServer) -> Vec<String> {
    server
        .fixture
        .sandbox
        .layers_by_labels(&[&format!(
            "{}={}",
            crogia_tests::TEST_LABEL,
            server.fixture.label
        )])
        .await
        .unwrap()
}

/// The layer a forked session's workspace stands on.
fn layer_of(forked: &serde_json::Value) -> String {
    let workdir = forked["workdir"].as_str().unwrap();
    workdir
        .strip_prefix("layered:")
        .and_then(|w| w.split_once('/'))
        .unwrap_or_else(|| panic!("not a layered workspace: {workdir}"))
        .0
        .to_string()
}

/// `workspace.fork_layers_ahead = "forked"` (the tests' config): once a session
/// has been forked, each checkpoint it takes has its layer written right
/// after, in the background, so the first fork of that checkpoint copies
/// nothing; the layer written ahead before goes unless a fork stands on
/// it, and the last goes with the session. A session never forked has
/// none written.
#[tokio::test]
async fn a_forked_sessions_next_checkpoints_have_their_layers_written_ahead() {
    let server = TestServer::start().await;
    let (ahead, at_fork) = (
        "crogia_fork_layers_built_total{when=\"ahead\"}",
        "crogia_fork_layers_built_total{when=\"fork\"}",
    );
    let parent = server.session().await;
    let checkpoint = format!("/api/sessions/{parent}/checkpoints");
    let fork = format!("/api/sessions/{parent}/fork");
    sh(&server, &parent, "echo one > one.txt").await;
    let (status, body) = server.post(&checkpoint, json!({})).await;
    assert_eq!(status, 201, "{body}");
    ahead_settled(&server).await;
    assert_eq!(metric(&server, ahead).await, 0.0, "never forked, yet ahead");
    assert!(layers_of(&server).await.is_empty());

    // The first fork writes its checkpoint's layer.
    let (status, first) = server.post(&fork, json!({})).await;
    assert_eq!(status, 201, "{first}");
    let first_layer = layer_of(&first);
    assert_eq!(metric(&server, at_fork).await, 1.0);

    // The next checkpoint's layer is written ahead: its fork stands on it
    // and writes none, and has the checkpoint's files.
    sh(&server, &parent, "echo two > two.txt && chmod 600 one.txt").await;
    let (status, body) = server.post(&checkpoint, json!({})).await;
    assert_eq!(status, 201, "{body}");
    let recorded = state(&server, &parent).await;
    ahead_settled(&server).await;
    assert_eq!(metric(&server, ahead).await, 1.0);
    let written = layers_of(&server).await;
    assert_eq!(written.len(), 2, "{written:?}");
    sh(&server, &parent, "echo after > after.txt").await;
    let (status, second) = server.post(&fork, json!({})).await;
    assert_eq!(status, 201, "{second}");
    let second_layer = layer_of(&second);
    assert_ne!(second_layer, first_layer);
    assert!(written.contains(&second_layer), "{written:?} {second}");
    assert_eq!(
        metric(&server, at_fork).await,
        1.0,
        "the fork wrote a layer"
    );
    let second_id = second["session_id"].as_str().unwrap().to_string();
    assert_eq!(state(&server, &second_id).await, recorded);
    // Nothing that wrote it runs any more.
    let writers = server
        .fixture
        .sandbox
        .find_by_labels(&[
            crogia_host::sandbox::LABEL_LAYER,
            &format!("{}={}", crogia_tests::TEST_LABEL, server.fixture.label),
        ])
        .await
        .unwrap();
    assert!(writers.is_empty(), "{writers:?}");

    // Two more checkpoints: the layer of the first, forked by none, goes
    // when the second's is written; the forked one stays.
    let mut unforked = Vec::new();
    for round in 0..2 {
        sh(&server, &parent, &format!("echo {round} >> two.txt")).await;
        let (status, body) = server.post(&checkpoint, json!({})).await;
        assert_eq!(status, 201, "{body}");
        ahead_settled(&server).await;
        let now = layers_of(&server).await;
        assert_eq!(now.len(), 3, "round {round}: {now:?}");
        assert!(now.contains(&first_layer) && now.contains(&second_layer));
        unforked.extend(
            now.into_iter()
                .filter(|l| *l != first_layer && *l != second_layer),
        );
    }
    assert_eq!(metric(&server, ahead).await, 3.0);
    assert_ne!(unforked[0], unforked[1]);
    assert!(
        volumes_gone(crogia_host::sandbox::LABEL_LAYER, &unforked[0]).await,
        "a layer written ahead and forked by none outlived the next"
    );

    // The session's deletion takes its last layer written ahead along;
    // those forks stand on stay until they go.
    let (status, _) = server.delete(&format!("/api/sessions/{parent}")).await;
    assert_eq!(status, 200);
    assert!(
        volumes_gone(crogia_host::sandbox::LABEL_LAYER, &unforked[1]).await,
        "the deleted session's layer written ahead was left"
    );
    let mut left = layers_of(&server).await;
    left.sort();
    let mut forked = vec![first_layer, second_layer];
    forked.sort();
    assert_eq!(left, forked);
    assert_eq!(state(&server, &second_id).await, recorded);
}

/// `"always"` (the product's default): a session's checkpoints that hold
/// files, up to `fork_layers_ahead_max_bytes` of them, have their layers
/// written ahead, forked or not; one over that only once the session is
/// forked; an empty one never. `"never"`: not even after a fork. A session
/// deleted while its layer is being written ahead (from its workspace)
/// leaves nothing behind: its deletion waits for the copy, then removes
/// the layer with the workspace.
#[tokio::test]
async fn layers_written_ahead_always_up_to_a_size_or_never_and_a_deletion_midway_leaves_nothing() {
    use crogia_host::config::ForkLayersAhead;
    let ahead = "crogia_fork_layers_built_total{when=\"ahead\"}";
    assert_eq!(ForkLayersAhead::default(), ForkLayersAhead::Always);
    let server = TestServer::with_config(|c| {
        // The product's default, which the tests' config sets otherwise.
        c.workspace.fork_layers_ahead = ForkLayersAhead::default();
        c.workspace.fork_layers_ahead_max_bytes = 64 * 1024;
    })
    .await;
    // A session's first checkpoint, of its empty workspace: nothing to write.
    let big = server.session().await;
    ahead_settled(&server).await;
    assert_eq!(metric(&server, ahead).await, 0.0, "an empty workspace's");
    // Over the limit: none, until the session is forked.
    sh(&server, &big, "head -c 100000 /dev/urandom > big.bin").await;
    let checkpoints = format!("/api/sessions/{big}/checkpoints");
    let (status, body) = server.post(&checkpoints, json!({})).await;
    assert_eq!(status, 201, "{body}");
    ahead_settled(&server).await;
    assert_eq!(metric(&server, ahead).await, 0.0, "over the limit");
    assert!(layers_of(&server).await.is_empty());
    let (status, forked) = server
        .post(&format!("/api/sessions/{big}/fork"), json!({}))
        .await;
    assert_eq!(status, 201, "{forked}");
    sh(&server, &big, "echo more >> big.bin").await;
    let (status, body) = server.post(&checkpoints, json!({})).await;
    assert_eq!(status, 201, "{body}");
    ahead_settled(&server).await;
    assert_eq!(
        metric(&server, ahead).await,
        1.0,
        "forked: whatever its size"
    );
    for id in [forked["session_id"].as_str().unwrap(), &big] {
        let (status, _) = server.delete(&format!("/api/sessions/{id}")).await;
        assert_eq!(status, 200);
    }
    assert_left(&server, 0).await;

    // Under the limit, never forked: written ahead.
    let id = server.session().await;
    sh(&server, &id, "echo small > small.txt").await;
    let (status, body) = server
        .post(&format!("/api/sessions/{id}/checkpoints"), json!({}))
        .await;
    assert_eq!(status, 201, "{body}");
    ahead_settled(&server).await;
    assert_eq!(metric(&server, ahead).await, 2.0, "under the limit");
    assert_eq!(layers_of(&server).await.len(), 1);
    // Enough files that the copy is under way when the deletion comes.
    sh(
        &server,
        &id,
        "mkdir d && for i in $(seq 1 3000); do echo $i > d/$i; done",
    )
    .await;
    // Its volumes, the anonymous ones too (its checkpoint store), which
    // the layer's writer mounts.
    let docker = bollard::Docker::connect_with_local_defaults().unwrap();
    let container = server.state.sessions.get(&id).unwrap().container_id.clone();
    let volumes: Vec<String> = docker
        .inspect_container(&container, None)
        .await
        .unwrap()
        .mounts
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.typ.as_deref() == Some("volume"))
        .filter_map(|m| m.name)
        .collect();
    assert!(!volumes.is_empty());
    let (status, body) = server
        .post(&format!("/api/sessions/{id}/checkpoints"), json!({}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = server.delete(&format!("/api/sessions/{id}")).await;
    assert_eq!(status, 200);
    ahead_settled(&server).await;
    // Removed just after the answer: at most 30 s.
    for _ in 0..150 {
        let mut left = 0;
        for v in &volumes {
            left += usize::from(docker.inspect_volume(v).await.is_ok());
        }
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    for v in &volumes {
        assert!(
            docker.inspect_volume(v).await.is_err(),
            "the deleted session's volume {v} was left"
        );
    }
    assert_left(&server, 0).await;

    let never = TestServer::with_config(|c| {
        c.workspace.fork_layers_ahead = ForkLayersAhead::Never;
    })
    .await;
    let id = never.session().await;
    sh(&never, &id, "echo x > x.txt").await;
    let (status, forked) = never
        .post(&format!("/api/sessions/{id}/fork"), json!({}))
        .await;
    assert_eq!(status, 201, "{forked}");
    sh(&never, &id, "echo y > y.txt").await;
    let (status, body) = never
        .post(&format!("/api/sessions/{id}/checkpoints"), json!({}))
        .await;
    assert_eq!(status, 201, "{body}");
    ahead_settled(&never).await;
    assert_eq!(metric(&never, ahead).await, 0.0);
    assert_eq!(layers_of(&never).await, [layer_of(&forked)]);
}
