//! Sessions on a Docker engine that shares nothing with the server's host:
//! the second engine `just test` starts. The agent is uploaded into each
//! container through the Engine API, the workspace is a named volume there,
//! and everything the contract offers works, across a server restart too.

use std::time::Duration;

use bollard::Docker;
use crogia_tests::model::{Reply, ScriptedModel};
use crogia_tests::{TestSandbox, TestServer, second_engine};
use serde_json::{Value, json};

/// A fixture whose sandbox is the second engine.
fn on_second_engine(adjust: impl FnOnce(&mut crogia_host::config::Config)) -> TestSandbox {
    let engine = second_engine();
    TestSandbox::with_config(move |c| {
        c.sandbox.docker_host = engine;
        adjust(c);
    })
}

async fn ok(server: &TestServer, path: &str, body: Value) -> Value {
    let (status, out) = server.post(path, body).await;
    assert_eq!(status, 200, "POST {path}: {out}");
    out
}

async fn got(server: &TestServer, path: &str) -> Value {
    let (status, out) = server.get(path).await;
    assert_eq!(status, 200, "GET {path}: {out}");
    out
}

/// Waits until a process's log holds `text`.
async fn log_holds(server: &TestServer, id: &str, pid: &Value, text: &str) -> String {
    let mut logs = String::new();
    for _ in 0..100 {
        logs = got(
            server,
            &format!("/api/sessions/{id}/processes/{pid}/logs?lines=50"),
        )
        .await["logs"]
            .as_str()
            .unwrap()
            .to_string();
        if logs.contains(text) {
            return logs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the process log never held {text:?}: {logs:?}");
}

#[tokio::test]
async fn a_session_on_an_engine_that_is_not_local_works_fully_and_is_readopted_after_a_restart() {
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![(
            "write_file".into(),
            json!({"path": "app.py", "content": "print('hello from the second engine')\n"}),
        )]),
        Reply::Tools(vec![("shell".into(), json!({"command": "python3 app.py"}))]),
        Reply::Text("Ran it.".into()),
    ])
    .await;
    let base_url = model.base_url.clone();
    let upstream = crogia_tests::upstream::Upstream::start().await;
    let upstream_addr = format!("127.0.0.1:{}", upstream.port);
    let allowed = upstream_addr.clone();
    let fixture = on_second_engine(move |c| {
        c.model.base_url = base_url;
        c.model.model = "scripted".into();
        c.network.allow = vec![allowed];
    });
    let data_dir = fixture.config.server.data_dir.clone();
    let server = TestServer::start_with(fixture).await;
    let id = server.session().await;
    let session = got(&server, &format!("/api/sessions/{id}")).await;
    let volume = format!("crogia-ws-{id}");
    assert_eq!(session["workdir"], format!("volume:{volume}"));
    assert_eq!(session["container_status"], "running");
    let container = session["container_id"].as_str().unwrap().to_string();

    // The container is on the second engine, and nothing of this host is
    // mounted into it: the workspace is the volume, the agent sits in an
    // anonymous volume of the container's own.
    let remote = Docker::connect_with_host(&second_engine()).unwrap();
    let info = remote.inspect_container(&container, None).await.unwrap();
    let binds = info.host_config.unwrap().binds.unwrap_or_default();
    assert_eq!(binds, [format!("{volume}:/workspace:nocopy")]);
    let mounts = info.mounts.unwrap();
    let workspace = mounts
        .iter()
        .find(|m| m.destination.as_deref() == Some("/workspace"))
        .expect("a workspace mount");
    assert_eq!(workspace.name.as_deref(), Some(volume.as_str()));
    assert!(
        mounts
            .iter()
            .all(|m| m.typ.as_ref().map(|t| t.to_string()).as_deref() == Some("volume")),
        "{mounts:?}"
    );
    let local = Docker::connect_with_defaults().unwrap();
    assert!(local.inspect_container(&container, None).await.is_err());
    assert!(!data_dir.join(format!("workspaces/session_{id}")).exists());

    // Files and search.
    ok(
        &server,
        &format!("/api/sessions/{id}/files/content"),
        json!({"path": "src/notes.txt", "content": "kept across restarts\n"}),
    )
    .await;
    let read = got(
        &server,
        &format!("/api/sessions/{id}/files/content?path=src/notes.txt"),
    )
    .await;
    assert_eq!(read["content"], "kept across restarts\n");
    let listing = got(&server, &format!("/api/sessions/{id}/files?path=src")).await;
    assert_eq!(listing["items"][0]["name"], "notes.txt");
    let grep = ok(
        &server,
        &format!("/api/sessions/{id}/search/grep"),
        json!({"pattern": "restarts", "path": "."}),
    )
    .await;
    assert_eq!(grep["matches"][0]["file"], "src/notes.txt");
    let found = ok(
        &server,
        &format!("/api/sessions/{id}/search/files"),
        json!({"pattern": "*.txt"}),
    )
    .await;
    assert_eq!(found["matches"], json!(["src/notes.txt"]));

    // The network goes through the server there too.
    let fetched = ok(
        &server,
        &format!("/api/sessions/{id}/shell"),
        json!({"cmd": format!("curl -sS --noproxy '' http://{upstream_addr}/")}),
    )
    .await;
    assert_eq!(
        fetched["stdout"],
        crogia_tests::upstream::HELLO,
        "{fetched}"
    );
    assert_eq!(upstream.hits(), 1);

    // A command sees the same files; the agent is PID 1 there too.
    let shell = ok(
        &server,
        &format!("/api/sessions/{id}/shell"),
        json!({"cmd": "cat src/notes.txt; tr '\\0' ' ' </proc/1/cmdline"}),
    )
    .await;
    assert_eq!(shell["exit_code"], 0, "{shell}");
    assert_eq!(
        shell["stdout"],
        "kept across restarts\n/.crogia/crogia-agent init "
    );

    // An interactive terminal.
    let mut term = server.terminal(&id, 90, 20).await;
    term.type_in("stty size; cat src/notes.txt\n").await;
    term.until("20 90").await;
    term.until("kept across restarts").await;
    drop(term);

    // A background process and its log.
    let process = ok(
        &server,
        &format!("/api/sessions/{id}/processes"),
        json!({"cmd": "echo started; sleep 300"}),
    )
    .await;
    let pid = process["pid"].clone();
    log_holds(&server, &id, &pid, "started").await;

    // A task: the model's tools (WebAssembly plugins) act in that container.
    let mut ws = server.ws(&id, None).await;
    ok(
        &server,
        &format!("/api/sessions/{id}/tasks"),
        json!({"task": "write app.py and run it"}),
    )
    .await;
    let events = ws.until_completed(1).await;
    let shell_result = events
        .iter()
        .find(|e| e["type"] == "tool_complete" && e["tool_name"] == "shell")
        .expect("the shell tool ran");
    assert!(
        shell_result["result"]
            .to_string()
            .contains("hello from the second engine"),
        "{shell_result}"
    );
    assert_eq!(events.last().unwrap()["status"], "completed");

    // The server restarts; the session, its container, files and process
    // are taken up again from the engine.
    let processes_before = got(&server, &format!("/api/sessions/{id}/processes")).await;
    let fixture = server.stop().await;
    let server = TestServer::start_with(fixture).await;
    let after = got(&server, &format!("/api/sessions/{id}")).await;
    assert_eq!(after["container_id"], container.as_str());
    assert_eq!(after["workdir"], format!("volume:{volume}"));
    let read = got(
        &server,
        &format!("/api/sessions/{id}/files/content?path=app.py"),
    )
    .await;
    assert_eq!(read["content"], "print('hello from the second engine')\n");
    let processes_after = got(&server, &format!("/api/sessions/{id}/processes")).await;
    assert_eq!(processes_after, processes_before);
    assert_eq!(processes_after[0]["status"], "running");
    log_holds(&server, &id, &pid, "started").await;
    let shell = ok(
        &server,
        &format!("/api/sessions/{id}/shell"),
        json!({"cmd": "cat src/notes.txt"}),
    )
    .await;
    assert_eq!(shell["stdout"], "kept across restarts\n");
    let stopped = ok(
        &server,
        &format!("/api/sessions/{id}/processes/{pid}/stop"),
        json!({}),
    )
    .await;
    assert!(
        stopped["message"].as_str().unwrap().contains("SIGTERM"),
        "{stopped}"
    );

    // Deleting the session removes its container and its volume there.
    let (status, _) = server.delete(&format!("/api/sessions/{id}")).await;
    assert_eq!(status, 200);
    assert!(remote.inspect_container(&container, None).await.is_err());
    let mut volume_gone = false;
    for _ in 0..50 {
        if remote.inspect_volume(&volume).await.is_err() {
            volume_gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        volume_gone,
        "the workspace volume {volume} outlived its session"
    );
}

#[tokio::test]
async fn a_remote_workspace_belongs_to_the_configured_user_even_with_a_read_only_root() {
    let server = TestServer::start_with(on_second_engine(|c| {
        c.sandbox.user = "1000:1000".into();
        c.sandbox.read_only_root = true;
    }))
    .await;
    let id = server.session().await;
    let shell = ok(
        &server,
        &format!("/api/sessions/{id}/shell"),
        json!({"cmd": "id -u; stat -c %u:%g /workspace; echo made > by-user.txt && stat -c %u by-user.txt; touch /etc/nope 2>/dev/null || echo read-only"}),
    )
    .await;
    assert_eq!(
        shell["stdout"], "1000\n1000:1000\n1000\nread-only\n",
        "{shell}"
    );
    // The agent (running as that user) writes there too.
    ok(
        &server,
        &format!("/api/sessions/{id}/files/content"),
        json!({"path": "from-api.txt", "content": "x"}),
    )
    .await;
    // A fork there stands on a layer of its checkpoint (volumes of that
    // engine only), and belongs to the same user.
    let (status, point) = server
        .post(&format!("/api/sessions/{id}/checkpoints"), json!({}))
        .await;
    assert_eq!(status, 201, "{point}");
    let (status, forked) = server
        .post(&format!("/api/sessions/{id}/fork"), json!({}))
        .await;
    assert_eq!(status, 201, "{forked}");
    assert!(
        forked["workdir"].as_str().unwrap().starts_with("layered:"),
        "{forked}"
    );
    let child = forked["session_id"].as_str().unwrap();
    let shell = ok(
        &server,
        &format!("/api/sessions/{child}/shell"),
        json!({"cmd": "stat -c %u:%g /workspace; cat from-api.txt; echo; echo more >> by-user.txt && cat by-user.txt"}),
    )
    .await;
    assert_eq!(shell["stdout"], "1000:1000\nx\nmade\nmore\n", "{shell}");
    let parent = ok(
        &server,
        &format!("/api/sessions/{id}/shell"),
        json!({"cmd": "cat by-user.txt"}),
    )
    .await;
    assert_eq!(parent["stdout"], "made\n", "{parent}");
}
