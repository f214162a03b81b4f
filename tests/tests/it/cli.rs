//! The `crogia` command-line client against a real server, and `crogia gc`.

use crogia_tests::model::{Reply, ScriptedModel};
use crogia_tests::process::binary;
use crogia_tests::{TestServer, ask_before, server_with_model};
use serde_json::{Value, json};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn crogia(server: &TestServer, args: &[&str]) -> Run {
    crogia_typing(server, args, b"").await
}

/// Runs the client with `input` on its stdin (then closed).
async fn crogia_typing(server: &TestServer, args: &[&str], input: &[u8]) -> Run {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(binary())
        .args(args)
        .env("CROGIA_URL", &server.base)
        .env_remove("CROGIA_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn session_commands_create_list_show_and_delete() {
    let server = TestServer::start().await;
    let created = crogia(&server, &["session", "create"]).await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    let id = created.stdout.trim().to_string();
    assert_eq!(id.len(), 8);

    let list = crogia(&server, &["session", "list"]).await;
    assert!(
        list.stdout.contains(&id) && list.stdout.contains("active"),
        "{}",
        list.stdout
    );
    let json_list: Value =
        serde_json::from_str(&crogia(&server, &["session", "list", "--json"]).await.stdout)
            .unwrap();
    assert_eq!(json_list[0]["session_id"], json!(id));
    let show = crogia(&server, &["session", "show", &id]).await;
    assert!(
        show.stdout
            .lines()
            .any(|l| l.starts_with("container_status:") && l.ends_with(" running")),
        "{}",
        show.stdout
    );

    let gone = crogia(&server, &["session", "delete", &id]).await;
    assert_eq!(
        gone.stdout.trim(),
        format!("Session {id} deleted successfully")
    );
    let again = crogia(&server, &["session", "show", &id]).await;
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("Session not found (HTTP 404)"),
        "{}",
        again.stderr
    );
}

#[tokio::test]
async fn client_options_go_before_or_after_the_subcommand() {
    let server = TestServer::start().await;
    let id = server.session().await;
    for args in [
        vec!["--url", server.base.as_str(), "--json", "session", "list"],
        vec!["session", "list", "--url", server.base.as_str(), "--json"],
        vec!["session", "--json", "list", "--url", server.base.as_str()],
    ] {
        let out = tokio::process::Command::new(binary())
            .args(&args)
            .env_remove("CROGIA_URL")
            .env_remove("CROGIA_TOKEN")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(list[0]["session_id"], json!(id), "{args:?}");
    }
}

#[tokio::test]
async fn shell_and_files_commands() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let out = crogia(
        &server,
        &[
            "shell",
            &id,
            "mkdir -p src && echo hello > src/a.txt && echo oops >&2; exit 3",
        ],
    )
    .await;
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (3, "", "oops\n")
    );
    let listing = crogia(&server, &["files", &id]).await;
    assert!(listing.stdout.contains("src/"), "{}", listing.stdout);
    let file = crogia(&server, &["files", &id, "src/a.txt"]).await;
    assert_eq!(file.stdout, "hello\n");
    let missing = crogia(&server, &["files", &id, "nope.txt"]).await;
    assert_eq!(missing.code, 1);
}

#[tokio::test]
async fn term_types_piped_input_into_a_shell_and_exits_with_it() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start().await;
    let id = server.session().await;
    let mut child = tokio::process::Command::new(binary())
        .args(["term", &id])
        .env("CROGIA_URL", &server.base)
        .env_remove("CROGIA_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"echo $((6*7)) in $(pwd) on $(tty)\n")
        .await
        .unwrap();
    drop(stdin);
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the shell ended after its input")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("42 in /workspace on /dev/pts/"), "{stdout}");

    let refused = crogia(&server, &["term", "deadbeef"]).await;
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("404"), "{}", refused.stderr);
}

#[tokio::test]
async fn task_streams_the_work_and_exits_by_its_outcome() {
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![(
            "write_file".into(),
            json!({"path": "out.txt", "content": "done"}),
        )]),
        Reply::Text("All done.".into()),
        Reply::Status(400),
    ])
    .await;
    let server = server_with_model(&model, |_| {}).await;
    let id = server.session().await;
    let run = crogia(&server, &["task", &id, "write out.txt"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("write_file") && run.stdout.contains("All done."),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("completed"), "{}", run.stderr);

    // A failing task: non-zero exit, the error shown.
    let failed = crogia(&server, &["task", &id, "this will fail"]).await;
    assert_eq!(failed.code, 1);
    assert!(
        failed.stdout.contains("error:") && failed.stdout.contains("400"),
        "{}",
        failed.stdout
    );

    // --json prints the task's events, one per line.
    model.push([Reply::Text("ok".into())]);
    let json_run = crogia(&server, &["task", &id, "again", "--json"]).await;
    let types: Vec<String> = json_run
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(types.first().map(String::as_str), Some("task_started"));
    assert_eq!(types.last().map(String::as_str), Some("task_completed"));
}

/// `crogia task` answers tool calls that wait for approval: on stdin
/// (y / a / n with a reason), or all at once with `--yes`.
#[tokio::test]
async fn task_asks_on_stdin_for_approvals_or_approves_all_with_yes() {
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![(
            "shell".into(),
            json!({"command": "touch asked.txt"}),
        )]),
        Reply::Text("Understood.".into()),
        Reply::Tools(vec![("shell".into(), json!({"command": "touch yes.txt"}))]),
        Reply::Text("Done.".into()),
    ])
    .await;
    let server = server_with_model(&model, |c| ask_before(c, "shell", &[])).await;
    let id = server.session().await;
    // Answered "n" with a reason, typed on stdin.
    let run = crogia_typing(
        &server,
        &["task", &id, "touch a file"],
        b"n\nnot in this directory\n",
    )
    .await;
    let (stdout, stderr) = (&run.stdout, &run.stderr);
    assert_eq!(run.code, 0, "{stderr}");
    assert!(
        stderr.contains("shell wants approval for: touch asked.txt"),
        "{stderr}"
    );
    assert!(stdout.contains("deny by the user"), "{stdout}");
    let seen = &model.requests()[1]["messages"];
    let last = seen.as_array().unwrap().last().unwrap()["content"].clone();
    assert_eq!(last, "Not run: denied by the user: not in this directory");

    // A session that asks for every write, made from the command line.
    let all = crogia(
        &server,
        &["session", "create", "--approval", "all", "--json"],
    )
    .await;
    assert_eq!(all.code, 0, "{}", all.stderr);
    let all: Value = serde_json::from_str(&all.stdout).unwrap();
    assert_eq!(all["approval"], "all");

    // --yes approves without asking.
    let run = crogia(&server, &["task", &id, "touch another", "--yes"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("allow by the user"), "{}", run.stdout);
    assert!(!run.stderr.contains("wants approval"), "{}", run.stderr);
    let check = crogia(&server, &["shell", &id, "ls"]).await;
    assert!(
        check.stdout.contains("yes.txt") && !check.stdout.contains("asked.txt"),
        "{}",
        check.stdout
    );
}

#[tokio::test]
async fn tools_call_runs_a_tool_and_exits_by_its_outcome() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let run = crogia(
        &server,
        &[
            "tools",
            "call",
            &id,
            "shell",
            r#"{"command": "echo from-cli"}"#,
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("from-cli"), "{}", run.stdout);
    let failed = crogia(
        &server,
        &["tools", "call", &id, "read_file", r#"{"path": "nope.txt"}"#],
    )
    .await;
    assert_eq!(failed.code, 1);
    assert!(failed.stderr.contains("nope.txt"), "{}", failed.stderr);
    let bad = crogia(&server, &["tools", "call", &id, "read_file", "[1]"]).await;
    assert_eq!(bad.code, 1, "{}", bad.stdout);
    assert!(bad.stderr.contains("JSON object"), "{}", bad.stderr);
}

#[tokio::test]
async fn tools_list_asks_the_server_with_a_url() {
    let model = ScriptedModel::start(vec![Reply::Text("Fine.".into())]).await;
    let server = server_with_model(&model, |c| {
        c.mcp.servers.insert(
            "broken".into(),
            crogia_host::config::McpServerConfig {
                command: vec!["/nonexistent/mcp-server".into()],
                ..Default::default()
            },
        );
    })
    .await;
    let out = crogia(&server, &["tools", "list", "--url", &server.base.clone()]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("shell") && l.contains(" exec ")),
        "{}",
        out.stdout
    );
    // The MCP server no session has started yet.
    assert!(
        out.stdout.lines().any(|l| l.starts_with("broken")
            && l.contains("unused")
            && l.contains("container: /nonexistent/mcp-server")),
        "{}",
        out.stdout
    );
    // Once a session has tried it, it says why it failed.
    let id = server.session().await;
    let (status, _) = server
        .post(
            &format!("/api/sessions/{id}/tasks"),
            json!({"task": "anything"}),
        )
        .await;
    assert_eq!(status, 200);
    let mut failed = String::new();
    for _ in 0..100 {
        failed = crogia(&server, &["tools", "list", "--url", &server.base.clone()])
            .await
            .stdout;
        if failed.contains("failed") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        failed.contains("cannot start /nonexistent/mcp-server"),
        "{failed}"
    );
    let json: Value = serde_json::from_str(
        &crogia(
            &server,
            &["tools", "list", "--url", &server.base.clone(), "--json"],
        )
        .await
        .stdout,
    )
    .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 11);
}

#[tokio::test]
async fn the_client_sends_the_token() {
    let token = "cli-token-0123456789abcdef";
    let server = TestServer::with_config(|c| c.auth.tokens = vec![token.into()]).await;
    let refused = crogia(&server, &["session", "list"]).await;
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("Not authenticated"),
        "{}",
        refused.stderr
    );
    let out = tokio::process::Command::new(binary())
        .args(["session", "list", "--json"])
        .env("CROGIA_URL", &server.base)
        .env("CROGIA_TOKEN", token)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn metrics_count_sessions_tasks_tools_and_clients() {
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![("list_files".into(), json!({}))]),
        Reply::Text("ok".into()),
    ])
    .await;
    let server = server_with_model(&model, |_| {}).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    server
        .post(
            &format!("/api/sessions/{id}/tasks"),
            json!({"task": "look"}),
        )
        .await;
    ws.until_completed(1).await;
    let resp = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = resp.text().await.unwrap();
    for line in [
        "crogia_sessions{status=\"active\"} 1",
        "crogia_tasks_total{outcome=\"completed\"} 1",
        "crogia_tool_calls_total{tool=\"list_files\",outcome=\"ok\"} 1",
        "crogia_tool_call_seconds_count{tool=\"list_files\"} 1",
        "crogia_model_tokens_total{kind=\"prompt\"} 20",
        "crogia_websocket_clients 1",
    ] {
        assert!(text.contains(line), "missing {line}:\n{text}");
    }
    assert!(
        text.contains("crogia_docker_call_seconds_count{operation=\"create\"}"),
        "{text}"
    );
}
#[tokio::test]
async fn gc_removes_only_this_servers_orphaned_containers() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let kept = server.get(&format!("/api/sessions/{id}")).await.1["container_id"]
        .as_str()
        .unwrap()
        .to_string();
    // An orphan: this server's instance label, but no session record (as a
    // crash between creating a container and recording it would leave).
    let instance = server.fixture.config.server.data_dir.join("crogia.db");
    assert!(instance.exists());
    let store = crogia_host::store::Store::open(&server.fixture.config.server.data_dir)
        .await
        .unwrap();
    let instance_id = store.instance_id().await.unwrap();
    let sandbox = server
        .fixture
        .sandbox
        .clone()
        .with_label(crogia_host::sandbox::LABEL_INSTANCE, &instance_id);
    let ws = crogia_host::workspace::Workspace::create(server.fixture.tmp.path().join("orphan-ws"))
        .unwrap();
    let orphan = sandbox.create("deadbeef", &ws).await.unwrap();

    // While the server runs, gc is refused: containers the server is still
    // setting up (its warm pool, sessions being created) belong to no stored
    // session yet, and would be taken for orphans.
    let err = crogia_host::session::collect_garbage(&server.fixture.config, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is in use by") && err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    assert!(server.fixture.sandbox.inspect(&orphan).await.is_ok());

    let fixture = server.stop().await;
    let dry = crogia_host::session::collect_garbage(&fixture.config, true)
        .await
        .unwrap();
    assert_eq!(
        dry.containers
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>(),
        [orphan.as_str()]
    );
    assert!(
        fixture.sandbox.inspect(&orphan).await.is_ok(),
        "dry run removed it"
    );
    let removed = crogia_host::session::collect_garbage(&fixture.config, false)
        .await
        .unwrap();
    assert_eq!(removed.containers.len(), 1);
    assert!(fixture.sandbox.inspect(&orphan).await.is_err());
    assert!(fixture.sandbox.inspect(&kept).await.unwrap().running);
}

/// `crogia gc` and fork layers: a layer a stored session stands on is
/// kept, one whose forks' records are gone is removed with them.
#[tokio::test]
async fn gc_keeps_a_layer_a_fork_stands_on_and_removes_one_nothing_does() {
    use crogia_host::sandbox::LABEL_LAYER;
    let server = TestServer::start().await;
    let parent = server.session().await;
    let mut forks = Vec::new();
    for round in 0..2 {
        let (status, body) = server
            .post(
                &format!("/api/sessions/{parent}/files/content"),
                json!({"path": "a.txt", "content": format!("round {round}\n")}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, point) = server
            .post(&format!("/api/sessions/{parent}/checkpoints"), json!({}))
            .await;
        assert_eq!(status, 201, "{point}");
        let (status, forked) = server
            .post(&format!("/api/sessions/{parent}/fork"), json!({}))
            .await;
        assert_eq!(status, 201, "{forked}");
        let id = forked["session_id"].as_str().unwrap().to_string();
        let layer = server
            .state
            .sessions
            .get(&id)
            .unwrap()
            .caps
            .workspace()
            .layer()
            .expect("a fork over a layer")
            .to_string();
        forks.push((id, layer));
    }
    assert_ne!(forks[0].1, forks[1].1);
    let fixture = server.stop().await;
    // The second fork's record is lost (as a crash could leave it).
    let store = crogia_host::store::Store::open(&fixture.config.server.data_dir)
        .await
        .unwrap();
    store.delete_session(&forks[1].0).await.unwrap();
    store.close().await;
    let layer_volumes = |layer: String| {
        let sandbox = fixture.sandbox.clone();
        async move {
            sandbox
                .volumes_by_labels(&[&format!("{LABEL_LAYER}={layer}")])
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(layer_volumes(forks[1].1.clone()).await, 2);
    let removed = crogia_host::session::collect_garbage(&fixture.config, false)
        .await
        .unwrap();
    assert_eq!(layer_volumes(forks[0].1.clone()).await, 2, "{removed:?}");
    assert_eq!(layer_volumes(forks[1].1.clone()).await, 0, "{removed:?}");
    for name in [forks[1].1.clone(), format!("{}.store", forks[1].1)] {
        assert!(removed.volumes.contains(&name), "{name}: {removed:?}");
    }
}

#[tokio::test]
async fn network_shows_and_changes_a_sessions_policy() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let shown = crogia(&server, &["network", &id]).await;
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(
        shown.stdout.contains("mode:          allowlist"),
        "{}",
        shown.stdout
    );
    assert!(shown.stdout.contains("pypi.org:443"), "{}", shown.stdout);
    assert!(
        shown.stdout.contains("(the operator's)"),
        "{}",
        shown.stdout
    );

    let narrowed = crogia(
        &server,
        &[
            "network",
            &id,
            "--allow",
            "pypi.org:443",
            "--deny",
            "evil.example.com",
        ],
    )
    .await;
    assert_eq!(narrowed.code, 0, "{}", narrowed.stderr);
    let (_, info) = server.get(&format!("/api/sessions/{id}/network")).await;
    assert_eq!(info["allow"], json!(["pypi.org:443"]));
    assert_eq!(info["deny"], json!(["evil.example.com"]));
    // What is not given stays.
    let more = crogia(
        &server,
        &["network", &id, "--deny", "worse.example.com", "--json"],
    )
    .await;
    let json_out: Value = serde_json::from_str(&more.stdout).unwrap();
    assert_eq!(json_out["allow"], json!(["pypi.org:443"]));
    assert_eq!(json_out["deny"], json!(["worse.example.com"]));

    let widened = crogia(&server, &["network", &id, "--allow", "example.com"]).await;
    assert_ne!(widened.code, 0);
    assert!(
        widened
            .stderr
            .contains("not within the operator's network policy"),
        "{}",
        widened.stderr
    );

    let reset = crogia(&server, &["network", &id, "--reset"]).await;
    assert_eq!(reset.code, 0, "{}", reset.stderr);
    let (_, info) = server.get(&format!("/api/sessions/{id}/network")).await;
    assert_eq!(info["allow"], Value::Null);
    assert_eq!(info["deny"], json!([]));
}

/// `crogia checkpoints`, `diff`, `rewind` and `fork`, a checkpoint named by
/// its number or an id prefix; a refusal exits 1 with the server's reason.
#[tokio::test]
async fn checkpoint_commands_list_diff_rewind_and_fork() {
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![(
            "write_file".into(),
            json!({"path": "notes.txt", "content": "one\ntwo\n"}),
        )]),
        Reply::Text("Written.".into()),
    ])
    .await;
    let server = server_with_model(&model, |_| {}).await;
    let id = server.session().await;
    let task = crogia(&server, &["task", &id, "write the notes"]).await;
    assert_eq!(task.code, 0, "{}", task.stderr);

    let list = crogia(&server, &["checkpoints", &id]).await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(list.stdout.contains("write the notes"), "{}", list.stdout);
    assert!(list.stdout.contains("(session made)"), "{}", list.stdout);
    let listed: Value = serde_json::from_str(
        &crogia(&server, &["checkpoints", &id, "--json"])
            .await
            .stdout,
    )
    .unwrap();
    let first = listed[0]["checkpoint_id"].as_str().unwrap().to_string();
    let second = listed[1]["checkpoint_id"].as_str().unwrap().to_string();

    // What the task did: from checkpoint 1 to 2, by number and by prefix.
    let diff = crogia(&server, &["diff", &id, "1", &second[..8]]).await;
    assert_eq!(diff.code, 0, "{}", diff.stderr);
    assert!(diff.stdout.contains("added"), "{}", diff.stdout);
    assert!(diff.stdout.contains("+++ b/notes.txt"), "{}", diff.stdout);
    assert!(diff.stdout.contains("+two"), "{}", diff.stdout);
    let json_diff: Value = serde_json::from_str(
        &crogia(&server, &["diff", &id, &first, "--json"])
            .await
            .stdout,
    )
    .unwrap();
    assert_eq!(json_diff["files"][0]["path"], "notes.txt", "{json_diff}");
    assert_eq!(json_diff["files"][0]["insertions"], 2, "{json_diff}");
    let none = crogia(&server, &["diff", &id]).await;
    assert_eq!(none.stdout.trim(), "no changes", "{}", none.stdout);
    // A change by hand, recorded on request.
    crogia(&server, &["shell", &id, "echo three >> notes.txt"]).await;
    let taken = crogia(&server, &["checkpoints", &id, "--take"]).await;
    assert_eq!(taken.code, 0, "{}", taken.stderr);
    assert!(
        taken.stdout.contains("(taken on request)"),
        "{}",
        taken.stdout
    );
    let diff = crogia(&server, &["diff", &id, "2", "3"]).await;
    assert!(diff.stdout.contains("+three"), "{}", diff.stdout);

    // A fork from the first checkpoint, then the parent rewound to it.
    let fork = crogia(&server, &["fork", &id, "1"]).await;
    assert_eq!(fork.code, 0, "{}", fork.stderr);
    let child = fork.stdout.trim().to_string();
    assert_eq!(child.len(), 8, "{}", fork.stdout);
    let ls = crogia(&server, &["shell", &child, "ls"]).await;
    assert_eq!(ls.stdout, "", "{}", ls.stdout);
    let rewind = crogia(&server, &["rewind", &id, &first[..6], "--scope", "files"]).await;
    assert_eq!(rewind.code, 0, "{}", rewind.stderr);
    assert!(rewind.stdout.contains("1 removed"), "{}", rewind.stdout);
    let ls = crogia(&server, &["shell", &id, "ls"]).await;
    assert_eq!(ls.stdout, "", "{}", ls.stdout);

    // Refusals: an unknown checkpoint, a bad scope.
    let unknown = crogia(&server, &["rewind", &id, "ffffff"]).await;
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("no checkpoint"),
        "{}",
        unknown.stderr
    );
    let bad = crogia(&server, &["rewind", &id, "1", "--scope", "all"]).await;
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("files"), "{}", bad.stderr);
}

/// `crogia token new` makes a token whose printed entry, pasted into the
/// config, lets it in as that principal; `session create --budget`,
/// `session list --owner` and `usage` work as that user.
#[tokio::test]
async fn a_token_made_by_the_cli_works_once_pasted_and_its_user_sees_its_usage() {
    let made = tokio::process::Command::new(binary())
        .args(["token", "new", "carol", "--json"])
        .output()
        .await
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let made: Value = serde_json::from_slice(&made.stdout).unwrap();
    let token = made["token"].as_str().unwrap().to_string();
    assert_eq!(
        made["token_sha256"],
        crogia_host::principal::token_sha256(&token)
    );
    assert_eq!(made["role"], "user");
    // The printed entry is TOML the config takes as it is.
    let text = tokio::process::Command::new(binary())
        .args(["token", "new", "carol"])
        .output()
        .await
        .unwrap();
    let entry = String::from_utf8_lossy(&text.stdout).into_owned();
    let pasted: toml::Value = toml::from_str(
        entry
            .lines()
            .skip(1)
            .collect::<Vec<_>>()
            .join("\n")
            .as_str(),
    )
    .unwrap_or_else(|e| panic!("{e}: {entry}"));
    assert_eq!(
        pasted["auth"]["users"][0]["name"].as_str(),
        Some("carol"),
        "{entry}"
    );
    let bad = tokio::process::Command::new(binary())
        .args(["token", "new", "no spaces"])
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());

    let hash = made["token_sha256"].as_str().unwrap().to_string();
    let server = TestServer::with_config(move |c| {
        c.auth.tokens = vec!["admin-token-0123456789abcdef".into()];
        c.auth.users = vec![crogia_host::config::UserConfig {
            name: "carol".into(),
            token_sha256: hash,
            role: crogia_host::config::Role::User,
            max_sessions: None,
            max_running_tasks: None,
            tokens_per_day: None,
        }];
    })
    .await;
    let as_carol = |args: &[&str]| {
        let mut all = vec!["--token", token.as_str()];
        all.extend_from_slice(args);
        let all: Vec<String> = all.into_iter().map(String::from).collect();
        let server = &server;
        async move {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            crogia(server, &refs).await
        }
    };
    let created = as_carol(&["session", "create", "--budget", "5000", "--json"]).await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    let created: Value = serde_json::from_str(&created.stdout).unwrap();
    assert_eq!(
        (created["owner"].as_str(), created["budget_tokens"].as_u64()),
        (Some("carol"), Some(5000))
    );
    let list = as_carol(&["session", "list", "--owner", "carol"]).await;
    assert!(list.stdout.contains("carol"), "{}", list.stdout);
    let usage = as_carol(&["usage", "--group-by", "session", "--json"]).await;
    assert_eq!(usage.code, 0, "{}", usage.stderr);
    let usage: Value = serde_json::from_str(&usage.stdout).unwrap();
    assert_eq!(
        (usage["principal"].as_str(), &usage["total"]["calls"]),
        (Some("carol"), &json!(0))
    );
    let table = as_carol(&["usage"]).await;
    assert!(table.stdout.contains("TOTAL"), "{}", table.stdout);
    let theirs = as_carol(&["usage", "--principal", "someone"]).await;
    assert_ne!(theirs.code, 0);
    let id = created["session_id"].as_str().unwrap();
    server
        .call_as(
            "admin-token-0123456789abcdef",
            reqwest::Method::DELETE,
            &format!("/api/sessions/{id}"),
            None,
        )
        .await;
}
