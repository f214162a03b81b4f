//! Every standard tool, invoked through the real wasmtime runtime against a
//! real container and workspace.

use std::sync::Arc;
use std::time::Duration;

use crogia_host::capabilities::{Capabilities, Health, ProcessTable};
use crogia_host::plugins::PluginRuntime;
use crogia_tests::TestSandbox;
use serde_json::{Value, json};

async fn call(
    rt: &PluginRuntime,
    caps: &Capabilities,
    tool: &str,
    args: Value,
) -> Result<String, String> {
    rt.invoke(caps.clone(), tool, &args.to_string())
        .await
        .map_err(|e| format!("{}: {e}", e.code()))
}

#[tokio::test]
async fn write_file_creates_parents_and_the_container_sees_it() {
    let t = TestSandbox::new();
    let rt = t.plugins().await;
    let caps = t.capabilities().await;
    let out = call(
        &rt,
        &caps,
        "write_file",
        json!({"path": "pkg/mod.py", "content": "X = 1\nY = 2\n"}),
    )
    .await
    .unwrap();
    assert_eq!(out, "Wrote pkg/mod.py (12 bytes, 2 lines)");
    let seen = caps.exec("cat /workspace/pkg/mod.py", None).await.unwrap();
    assert_eq!(seen.stdout, "X = 1\nY = 2\n");
}

#[tokio::test]
async fn edit_file_replaces_exactly_one_match_and_refuses_missing_or_ambiguous_text() {
    let t = TestSandbox::new();
    let rt = t.plugins().await;
    let caps = t.capabilities().await;
    caps.write_file("app.py", b"a = 1\nb = 2\nb = 2\n".to_vec())
        .await
        .unwrap();

    let out = call(
        &rt,
        &caps,
        "edit_file",
        json!({"path": "app.py", "old_text": "a = 1", "new_text": "a = 10"}),
    )
    .await
    .unwrap();
    assert_eq!(out, "Edited app.py: replaced 1 occurrence at line 1");

    let missing = call(
        &rt,
        &caps,
        "edit_file",
        json!({"path": "app.py", "old_text": "c = 3", "new_text": ""}),
    )
    .await
    .unwrap_err();
    assert!(
        missing.starts_with("failed: old_text was not found in app.py"),
        "{missing}"
    );

    let ambiguous = call(
        &rt,
        &caps,
        "edit_file",
        json!({"path": "app.py", "old_text": "b = 2", "new_text": "b = 3"}),
    )
    .await
    .unwrap_err();
    assert!(ambiguous.contains("occurs 2 times"), "{ambiguous}");
    // Refusals changed nothing.
    assert_eq!(
        caps.read_file("app.py").await.unwrap(),
        b"a = 10\nb = 2\nb = 2\n"
    );

    let all = call(
        &rt,
        &caps,
        "edit_file",
        json!({"path": "app.py", "old_text": "b = 2", "new_text": "b = 3", "replace_all": true}),
    )
    .await
    .unwrap();
    assert_eq!(
        all,
        "Edited app.py: replaced 2 occurrences (first at line 2)"
    );
    assert_eq!(
        caps.read_file("app.py").await.unwrap(),
        b"a = 10\nb = 3\nb = 3\n"
    );
}

#[tokio::test]
async fn read_file_returns_whole_files_and_line_ranges() {
    let t = TestSandbox::new();
    let rt = t.plugins().await;
    let caps = t.capabilities().await;
    caps.exec("printf 'one\\ntwo\\nthree\\n' > notes.txt", None)
        .await
        .unwrap();
    assert_eq!(
        call(&rt, &caps, "read_file", json!({"path": "notes.txt"}))
            .await
            .unwrap(),
        "one\ntwo\nthree\n"
    );
    let range = json!({"path": "/workspace/notes.txt", "start_line": 2, "end_line": 3});
    assert_eq!(
        call(&rt, &caps, "read_file", range).await.unwrap(),
        "two\nthree\n"
    );
    let past = call(
        &rt,
        &caps,
        "read_file",
        json!({"path": "notes.txt", "start_line": 9}),
    )
    .await
    .unwrap_err();
    assert!(past.contains("past the end"), "{past}");
}

#[tokio::test]
async fn list_files_shows_directories_and_sizes() {
    let t = TestSandbox::new();
    let rt = t.plugins().await;
    let caps = t.capabilities().await;
    caps.exec(
        "mkdir -p src && printf 12345 > src/a.txt && printf x > b.txt",
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        call(&rt, &caps, "list_files", json!({})).await.unwrap(),
        "b.txt (1 bytes)\nsrc/\n"
    );
    assert_eq!(
        call(&rt, &caps, "list_files", json!({"path": "src"}))
            .await
            .unwrap(),
        "a.txt (5 bytes)\n"
    );
}

#[tokio::test]
async fn search_files_and_grep_find_by_name_and_content_honouring_gitignore() {
    let t = TestSandbox::new();
    let rt = t.plugins().await;
    let caps = t.capabilities().await;
    for (path, text) in [
        ("app.py", "from flask import Flask\n"),
        ("lib/models.py", "class User:\n    pass  # Flask model\n"),
        ("web/index.js", "// Flask frontend\n"),
        ("venv/site.py", "Flask inside venv\n"),
        (".gitignore", "venv/\n"),
    ] {
        caps.write_file(path, text.as_bytes().to_vec())
            .await
            .unwrap();
    }
    let files = call(&rt, &caps, "search_files", json!({"pattern": "*.py"}))
        .await
        .unwrap();
    assert_eq!(files, "app.py\nlib/models.py");
    let js = call(
        &rt,
        &caps,
        "search_files",
        json!({"pattern": "*", "file_types": ["*.js"]}),
    )
    .await
    .unwrap();
    assert_eq!(js, "web/index.js");

    let hits = call(
        &rt,
        &caps,
        "grep",
        json!({"pattern": "Flask", "file_types": ["*.py"]}),
    )
    .await
    .unwrap();
    assert_eq!(
        hits,
        "app.py:1: from flask import Flask\nlib/models.py:2:     pass  # Flask model\n"
    );
    let capped = call(
        &rt,
        &caps,
        "grep",
        json!({"pattern": "(?i)flask", "max_results": 1}),
    )
    .await
    .unwrap();
    assert!(
        capped.starts_with("app.py:1:") && capped.contains("showing the first 1"),
        "{capped}"
    );
    let bad = call(&rt, &caps, "grep", json!({"pattern": "("}))
        .await
        .unwrap_err();
    assert!(bad.contains("invalid regular expression"), "{bad}");
}

#[tokio::test]
async fn shell_reports_exit_code_output_and_timeouts() {
    let t = TestSandbox::new();
    let rt = t.plugins().await;
    let caps = t.capabilities().await;
    let out = call(
        &rt,
        &caps,
        "shell",
        json!({"command": "echo hi; echo oops >&2; exit 2"}),
    )
    .await
    .unwrap();
    assert_eq!(out, "exit code: 2\nstdout:\nhi\nstderr:\noops\n");
    let slow = call(
        &rt,
        &caps,
        "shell",
        json!({"command": "sleep 30", "timeout_secs": 1}),
    )
    .await
    .unwrap();
    assert!(
        slow.starts_with("The command timed out and was killed"),
        "{slow}"
    );
}

#[tokio::test]
async fn process_tools_start_list_read_logs_and_stop() {
    let t = TestSandbox::new();
    let rt = t.plugins().await;
    let caps = t.capabilities().await;
    let started = call(
        &rt,
        &caps,
        "start_process",
        json!({"command": "echo ready; exec sleep 300"}),
    )
    .await
    .unwrap();
    let pid: u32 = started.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(started.contains("output goes to .agent_logs/"), "{started}");

    let list = call(&rt, &caps, "list_processes", json!({})).await.unwrap();
    assert!(
        list.starts_with(&format!("pid {pid}: running — echo ready; exec sleep 300")),
        "{list}"
    );

    let mut logs = String::new();
    for _ in 0..50 {
        logs = call(&rt, &caps, "process_logs", json!({"pid": pid}))
            .await
            .unwrap();
        if logs == "ready\n" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(logs, "ready\n");

    let stopped = call(&rt, &caps, "stop_process", json!({"pid": pid}))
        .await
        .unwrap();
    assert_eq!(stopped, format!("Sent SIGTERM to process {pid}"));
    let list = call(&rt, &caps, "list_processes", json!({})).await.unwrap();
    assert!(
        list.starts_with(&format!("pid {pid}: exited (143)")),
        "{list}"
    );

    let unknown = call(&rt, &caps, "stop_process", json!({"pid": 999_999}))
        .await
        .unwrap_err();
    assert!(unknown.contains("no process with pid 999999"), "{unknown}");
}

/// Issue 15: the usability check lived in three REST handlers and in no
/// host function, so a plugin could still run commands in a session whose
/// container was gone. It now lives in `Capabilities`, for both.
#[tokio::test]
async fn host_functions_refuse_commands_in_an_unusable_session_like_rest_does() {
    let t = TestSandbox::new();
    let rt = t.plugins().await;
    let (container, workspace) = t.container().await;
    let health = Arc::new(Health::default());
    let caps = Capabilities::new(
        "0000beef",
        t.sandbox.clone(),
        &container,
        workspace,
        ProcessTable::new(Vec::new(), None),
        Arc::new(t.config.workspace.clone()),
        health.clone(),
    );
    let ran = call(&rt, &caps, "shell", json!({"command": "echo before"})).await;
    assert!(ran.unwrap().contains("before"));

    assert!(health.mark_broken("its container was removed outside Crogia"));
    // Files too: they are read and written inside the container.
    for (tool, args) in [
        ("shell", json!({"command": "echo after"})),
        ("start_process", json!({"command": "sleep 30"})),
        (
            "write_file",
            json!({"path": "after.txt", "content": "after"}),
        ),
    ] {
        let refused = call(&rt, &caps, tool, args).await;
        let text = refused.as_ref().map_or_else(|e| e.as_str(), |o| o.as_str());
        assert!(
            text.contains("Session 0000beef is unusable: its container was removed outside Crogia"),
            "{tool}: {refused:?}"
        );
        assert!(!text.contains("after"), "{tool} ran: {refused:?}");
    }
}
