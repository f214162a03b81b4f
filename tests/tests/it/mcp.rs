//! MCP both ways, with real peers: the official Python `mcp` package as a
//! client of a session's tools over streamable HTTP and through
//! `crogia mcp`, and as a remote server whose tools the model calls; a
//! stdio server run inside the session's container.

use std::process::Stdio;
use std::time::Duration;

use crogia_tests::model::{Reply, ScriptedModel};
use crogia_tests::process::binary;
use crogia_tests::{TestServer, WsClient, repo_root, server_with_model};
use serde_json::{Value, json};

const TOKEN: &str = "mcp-token-0123456789abcdef";

/// A server that requires [`TOKEN`], with a client that sends it.
async fn server_with_token(adjust: impl FnOnce(&mut crogia_host::config::Config)) -> TestServer {
    let mut server = TestServer::with_config(|c| {
        c.auth.tokens = vec![TOKEN.into()];
        adjust(c);
    })
    .await;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {TOKEN}").parse().unwrap(),
    );
    server.client = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    server
}

async fn events(server: &TestServer, id: &str) -> WsClient {
    let url = format!(
        "{}/ws/{id}?since=0&token={TOKEN}",
        server.base.replacen("http", "ws", 1)
    );
    WsClient::connect(&url).await
}

/// Runs `tests/mcp/session_client.py` with `args`; its JSON report.
async fn python_client(args: &[&str]) -> Value {
    let child = tokio::process::Command::new("python3")
        .arg(repo_root().join("tests/mcp/session_client.py"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting python3");
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the MCP client did not finish within 120 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the MCP client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// What every run of the client must have seen, over whatever transport.
fn check_report(report: &Value, transport: &str, mode: &str) {
    assert_eq!(report["server"], "crogia", "{report}");
    // "auto" finds the newest revision; "legacy" keeps to the handshake's.
    let protocol = report["protocol"].as_str().unwrap();
    match mode {
        "auto" => assert_eq!(protocol, "2026-07-28"),
        _ => assert!(protocol < "2026-07-28", "{protocol}"),
    }
    let tools = report["tools"].as_object().unwrap();
    for name in ["write_file", "read_file", "grep", "shell"] {
        assert!(tools.contains_key(name), "{name} missing: {report}");
    }
    // The JSON schemas are the plugins' own.
    assert_eq!(
        tools["write_file"]["schema"]["required"],
        json!(["path", "content"])
    );
    assert_eq!(tools["read_file"]["read_only"], true, "{report}");
    assert_eq!(tools["write_file"]["read_only"], false, "{report}");
    // A disabled tool is not offered.
    assert!(!tools.contains_key("list_files"), "{report}");
    assert_eq!(report["write"]["is_error"], false, "{report}");
    assert_eq!(
        report["read"]["text"].as_str().unwrap(),
        format!("written over {transport}\n")
    );
    // A tool that fails is a result the caller reads; an unknown one is a
    // protocol error (invalid params, as the specification asks).
    assert_eq!(report["missing"]["is_error"], true, "{report}");
    assert!(
        report["missing"]["text"]
            .as_str()
            .unwrap()
            .contains("not-found"),
        "{report}"
    );
    assert_eq!(report["unknown"]["raised"], true, "{report}");
    assert_eq!(report["unknown"]["code"], -32602, "{report}");
}

fn disable_list_files(c: &mut crogia_host::config::Config) {
    c.tools.insert(
        "list_files".into(),
        crogia_host::config::ToolConfig {
            enabled: false,
            ..Default::default()
        },
    );
}

/// The Python SDK lists and calls a session's tools at `/mcp/{id}`, with
/// the newest protocol revision and with the older `initialize` handshake;
/// the calls act on the session's workspace and show in its events as
/// `source: "mcp"`.
#[tokio::test]
async fn the_python_sdk_calls_a_sessions_tools_over_streamable_http() {
    let server = server_with_token(disable_list_files).await;
    let id = server.session().await;
    let url = server.url(&format!("/mcp/{id}"));
    for mode in ["auto", "legacy"] {
        let report = python_client(&["http", &url, TOKEN, mode]).await;
        check_report(&report, "http", mode);
    }
    let (status, file) = server
        .get(&format!(
            "/api/sessions/{id}/files/content?path=from-mcp.txt"
        ))
        .await;
    assert_eq!(
        (status, file["content"].as_str()),
        (200, Some("written over http\n"))
    );

    let mut ws = events(&server, &id).await;
    let mut calls = Vec::new();
    for _ in 0..16 {
        let e = ws.event().await;
        if e["type"] == "tool_call" {
            assert_eq!(e["source"], "mcp", "{e}");
            calls.push(e["tool_name"].as_str().unwrap().to_string());
        }
        if e["type"] == "tool_complete" {
            assert_eq!(e["source"], "mcp", "{e}");
        }
        if calls.len() == 6 {
            break;
        }
    }
    // Per run: write, read, read of a missing file (the unknown tool never ran).
    assert_eq!(
        calls,
        ["write_file", "read_file", "read_file"].repeat(2),
        "{calls:?}"
    );
}

/// `crogia mcp ID` serves the same tools on stdin/stdout to a client that
/// launches it, as desktop MCP clients do.
#[tokio::test]
async fn crogia_mcp_bridges_stdio_to_the_session() {
    let server = server_with_token(disable_list_files).await;
    let id = server.session().await;
    let crogia = binary();
    for mode in ["auto", "legacy"] {
        let report = python_client(&[
            "stdio",
            crogia.to_str().unwrap(),
            &server.base,
            TOKEN,
            &id,
            mode,
        ])
        .await;
        check_report(&report, "stdio", mode);
    }
    // A wrong session or token is said on stderr, before any MCP.
    for (session, token, says) in [
        ("00000000", TOKEN, "not found"),
        (id.as_str(), "wrong-token", "Invalid token"),
    ] {
        let out = tokio::process::Command::new(&crogia)
            .args(["mcp", session])
            .env("CROGIA_URL", &server.base)
            .env("CROGIA_TOKEN", token)
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(out.stdout.is_empty(), "stdout is for MCP only");
    }
}

/// The endpoint is behind the token, and an unknown session is a 404 before
/// any MCP is spoken.
#[tokio::test]
async fn the_mcp_endpoint_needs_the_token_and_a_session() {
    let server = server_with_token(|_| {}).await;
    let id = server.session().await;
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"}
        }
    });
    let post = |url: String, token: Option<&str>| {
        let mut req = reqwest::Client::new()
            .post(url)
            .header("accept", "application/json, text/event-stream")
            .json(&initialize);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send()
    };
    let url = server.url(&format!("/mcp/{id}"));
    assert_eq!(post(url.clone(), None).await.unwrap().status(), 401);
    assert_eq!(
        post(url.clone(), Some("wrong")).await.unwrap().status(),
        401
    );
    let missing = post(server.url("/mcp/00000000"), Some(TOKEN))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await.unwrap().contains("not found"));
    let ok = post(url, Some(TOKEN)).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.headers().contains_key("mcp-session-id"));
}

/// An MCP client is most often another model: its calls wait for a
/// person's approval where the session's settings ask, like the model's;
/// a denial is the call's result, with the person's reason.
#[tokio::test]
async fn mcp_calls_wait_for_approval_where_the_session_asks() {
    let server = server_with_token(|c| crogia_tests::ask_before(c, "write_file", &[])).await;
    let id = server.session().await;
    let url = server.url(&format!("/mcp/{id}"));
    let client = {
        let url = url.clone();
        tokio::spawn(async move { python_client(&["http", &url, TOKEN, "auto"]).await })
    };
    let mut ws = events(&server, &id).await;
    // The write waits for a person, who denies it.
    loop {
        let e = ws.event().await;
        if e["type"] != "approval_requested" {
            continue;
        }
        assert_eq!(e["tool_name"], "write_file", "{e}");
        assert_eq!(e["subject"], "from-mcp.txt", "{e}");
        let approval = e["approval_id"].as_str().unwrap();
        let (status, body) = server
            .post(
                &format!("/api/sessions/{id}/approvals/{approval}"),
                json!({"decision": "deny", "message": "not over MCP"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        break;
    }
    let report = client.await.unwrap();
    assert_eq!(report["write"]["is_error"], true, "{report}");
    assert!(
        report["write"]["text"]
            .as_str()
            .unwrap()
            .contains("not over MCP"),
        "{report}"
    );
    // Reads never ask; the file was never written.
    assert_eq!(report["read"]["is_error"], true, "{report}");
}

/// `tests/mcp/remote_server.py` on a free loopback port, killed when
/// dropped. Its key is this test process's `CARGO_PKG_NAME` (set by cargo
/// for every test process), so the server can take the header's value
/// from an environment variable, as an operator's config would.
struct RemoteServer {
    _child: tokio::process::Child,
    port: u16,
}

const KEY_VAR: &str = "CARGO_PKG_NAME";

impl RemoteServer {
    async fn start() -> Self {
        use tokio::io::AsyncBufReadExt;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let key = std::env::var(KEY_VAR).expect("cargo sets CARGO_PKG_NAME for tests");
        let mut child = tokio::process::Command::new("python3")
            .arg(repo_root().join("tests/mcp/remote_server.py"))
            .args([&port.to_string(), &key])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting python3");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the MCP server did not start within 60 s")
            .unwrap();
        assert_eq!(ready.as_deref(), Some("ready"));
        Self {
            _child: child,
            port,
        }
    }

    /// `[mcp.servers.remote]` for it, and (when `allowed`) the network
    /// policy's pattern that opens its address.
    fn configure(&self, c: &mut crogia_host::config::Config, allowed: bool) {
        c.mcp.servers.insert(
            "remote".into(),
            crogia_host::config::McpServerConfig {
                url: format!("http://127.0.0.1:{}/mcp", self.port),
                headers: [("X-Api-Key".to_string(), KEY_VAR.to_string())].into(),
                ..Default::default()
            },
        );
        c.mcp.retry_secs = 0;
        if allowed {
            c.network.allow.push(format!("127.0.0.1:{}", self.port));
        }
    }
}

/// The model's tool names in its `n`th request.
fn offered(model: &ScriptedModel, n: usize) -> Vec<String> {
    model.requests()[n]["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .map(|t| t["function"]["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn run_task(server: &TestServer, id: &str) -> Vec<Value> {
    let mut ws = server.ws(id, None).await;
    let (status, body) = server
        .post(&format!("/api/sessions/{id}/tasks"), json!({"task": "go"}))
        .await;
    assert_eq!(status, 200, "{body}");
    ws.until_completed(1).await
}

fn results(events: &[Value]) -> Vec<(String, String, bool)> {
    events
        .iter()
        .filter(|e| e["type"] == "tool_complete")
        .map(|e| {
            (
                e["tool_name"].as_str().unwrap().to_string(),
                e["result"].as_str().unwrap().to_string(),
                e["is_error"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// The first `network_request` event of `id` for `host` (replayed from the
/// start; 20 s at most).
async fn network_event(server: &TestServer, id: &str, host: &str) -> Value {
    let mut ws = server.ws(id, Some(0)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.read(left).await {
            crogia_tests::WsRead::Event(e)
                if e["type"] == "network_request" && e["host"] == host =>
            {
                return e;
            }
            crogia_tests::WsRead::Event(_) => {}
            other => panic!("no network_request for {host}: {other:?}"),
        }
    }
}

/// A remote MCP server the network policy allows: its tools are offered to
/// the model as `remote__<tool>` (with the header from the environment
/// reaching it), called, listed in `GET /api/tools` with their server; a
/// tool no model could call by its name is left out and reported.
#[tokio::test]
async fn a_remote_mcp_servers_tools_are_offered_to_the_model_and_called() {
    let remote = RemoteServer::start().await;
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![("remote__echo".into(), json!({"text": "hi"}))]),
        Reply::Text("Done.".into()),
    ])
    .await;
    let server = server_with_model(&model, |c| remote.configure(c, true)).await;
    let id = server.session().await;
    let events = run_task(&server, &id).await;
    assert_eq!(
        results(&events),
        [("remote__echo".into(), "echo: hi".into(), false)]
    );
    let tools = offered(&model, 0);
    assert!(tools.contains(&"remote__echo".to_string()), "{tools:?}");
    assert!(tools.contains(&"remote__crash".to_string()), "{tools:?}");
    assert!(tools.contains(&"read_file".to_string()), "{tools:?}");
    assert!(!tools.iter().any(|t| t.contains("bad")), "{tools:?}");
    assert!(
        !events
            .iter()
            .any(|e| e["type"] == "error" && !e["message"].as_str().unwrap().contains("bad.name")),
        "{events:?}"
    );

    let (_, listed) = server.get("/api/tools").await;
    let echo = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "remote__echo")
        .expect("remote__echo in GET /api/tools");
    assert_eq!(echo["server"], "remote");
    assert_eq!(echo["parameters"]["required"], json!(["text"]));
    let (_, plugins) = server.get("/api/plugins").await;
    let status = &plugins["mcp_servers"][0];
    assert_eq!(status["name"], "remote");
    assert_eq!(status["state"], "ready", "{status}");
    // The connection is in the session's network log.
    let logged = network_event(&server, &id, "127.0.0.1").await;
    assert_eq!(
        (&logged["decision"], &logged["port"]),
        (&json!("allowed"), &json!(remote.port)),
        "{logged}"
    );
    assert!(
        logged["reason"]
            .as_str()
            .unwrap()
            .contains("the MCP server remote"),
        "{logged}"
    );
    assert_eq!(status["skipped"][0]["tool"], "bad.name", "{status}");
    // The same tools over the session's own MCP endpoint.
    let report = python_client_tools(&server, &id).await;
    assert!(report.contains(&"remote__echo".to_string()), "{report:?}");
}

/// The session's tools as the Python SDK lists them at `/mcp/{id}`.
async fn python_client_tools(server: &TestServer, id: &str) -> Vec<String> {
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import asyncio, sys\nfrom mcp import Client\nasync def main():\n    async with Client(sys.argv[1]) as c:\n        print('\\n'.join(t.name for t in (await c.list_tools()).tools))\nasyncio.run(main())",
        )
        .arg(server.url(&format!("/mcp/{id}")))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// A server the policy does not open, and one that dies mid-task, never
/// break the session: the task goes on without their tools, `error` events
/// say why, and `GET /api/plugins` reports the failure.
#[tokio::test]
async fn an_mcp_server_refused_by_the_policy_or_crashing_never_breaks_the_session() {
    let remote = RemoteServer::start().await;
    // Not allowed: no tools, an error event, and the task completes.
    let model = ScriptedModel::start(vec![Reply::Text("Fine without it.".into())]).await;
    let server = server_with_model(&model, |c| remote.configure(c, false)).await;
    let id = server.session().await;
    let events = run_task(&server, &id).await;
    assert_eq!(events.last().unwrap()["status"], "completed", "{events:?}");
    let error = events
        .iter()
        .find(|e| e["type"] == "error")
        .expect("an error event");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("MCP server remote") && message.contains("network policy"),
        "{message}"
    );
    assert!(!offered(&model, 0).iter().any(|t| t.starts_with("remote__")));
    let (_, plugins) = server.get("/api/plugins").await;
    assert_eq!(plugins["mcp_servers"][0]["state"], "failed");
    let refused = network_event(&server, &id, "127.0.0.1").await;
    assert_eq!(refused["decision"], "denied", "{refused}");
    drop(server);

    // Allowed, then it dies: the crash and the next call are failed results;
    // the task completes, and the next listing reports it gone.
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![("remote__crash".into(), json!({}))]),
        Reply::Tools(vec![("remote__echo".into(), json!({"text": "again"}))]),
        Reply::Text("Done.".into()),
    ])
    .await;
    let server = server_with_model(&model, |c| remote.configure(c, true)).await;
    let id = server.session().await;
    let events = run_task(&server, &id).await;
    assert_eq!(events.last().unwrap()["status"], "completed", "{events:?}");
    let results = results(&events);
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(results.iter().all(|(_, _, failed)| *failed), "{results:?}");
    assert!(offered(&model, 0).contains(&"remote__echo".to_string()));
    // After the crash the server is gone from what the model is offered.
    assert!(
        !offered(&model, 2).iter().any(|t| t.starts_with("remote__")),
        "{:?}",
        offered(&model, 2)
    );
    assert!(events.iter().any(|e| e["type"] == "error"), "{events:?}");
    let (_, plugins) = server.get("/api/plugins").await;
    assert_eq!(plugins["mcp_servers"][0]["state"], "failed", "{plugins}");
    // The session's own tools still work.
    let (status, out) = server
        .post(
            &format!("/api/sessions/{id}/tools/write_file"),
            json!({"path": "still.txt", "content": "ok"}),
        )
        .await;
    assert_eq!((status, out["is_error"].clone()), (200, json!(false)));
}

/// A plugin's tool keeps its name: the MCP server's tool of the same name
/// is left out and reported, and the model's call runs the plugin's.
#[tokio::test]
async fn a_plugins_tool_keeps_a_name_an_mcp_server_also_offers() {
    let remote = RemoteServer::start().await;
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![("remote__echo".into(), json!({}))]),
        Reply::Text("Done.".into()),
    ])
    .await;
    let mut fixture = crogia_tests::TestSandbox::with_config(|c| {
        c.model.base_url = model.base_url.clone();
        c.model.model = "scripted".into();
        remote.configure(c, true);
    });
    fixture.plugin_dir(&[crogia_tests::fixture_plugin("fixture-tools")]);
    let server = TestServer::start_with(fixture).await;
    let id = server.session().await;
    let events = run_task(&server, &id).await;
    assert_eq!(
        results(&events),
        [(
            "remote__echo".into(),
            "the plugin's remote__echo".into(),
            false
        )]
    );
    let tools = offered(&model, 0);
    assert_eq!(
        tools.iter().filter(|t| *t == "remote__echo").count(),
        1,
        "{tools:?}"
    );
    assert!(tools.contains(&"remote__crash".to_string()), "{tools:?}");
    let (_, plugins) = server.get("/api/plugins").await;
    let skipped = &plugins["mcp_servers"][0]["skipped"];
    assert!(
        skipped
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["tool"] == "echo"
                && s["reason"] == "a plugin's tool is already named remote__echo"),
        "{skipped}"
    );
}

/// `[mcp.servers.local]`: `tests/mcp/stdio_server.py`, run inside each
/// session's container from its workspace, its GREETING taken from
/// [`KEY_VAR`].
fn configure_stdio(c: &mut crogia_host::config::Config) {
    c.mcp.servers.insert(
        "local".into(),
        crogia_host::config::McpServerConfig {
            command: vec!["python3".into(), "stdio_server.py".into()],
            env: [("GREETING".to_string(), KEY_VAR.to_string())].into(),
            ..Default::default()
        },
    );
    c.mcp.retry_secs = 0;
}

/// A session (made with `body`) whose workspace holds the stdio server and
/// a marker file with `marker` in it.
async fn stdio_session(server: &TestServer, body: Value, marker: &str) -> String {
    let (status, created) = server.post("/api/sessions", body).await;
    assert_eq!(status, 200, "{created}");
    let id = created["session_id"].as_str().unwrap().to_string();
    let script = std::fs::read_to_string(repo_root().join("tests/mcp/stdio_server.py")).unwrap();
    for (path, content) in [("stdio_server.py", script.as_str()), ("marker.txt", marker)] {
        let (status, out) = server
            .post(
                &format!("/api/sessions/{id}/files/content"),
                json!({"path": path, "content": content}),
            )
            .await;
        assert_eq!(status, 200, "{out}");
    }
    id
}

/// The JSON a `local__where` call answered.
fn where_report(result: &str) -> Value {
    serde_json::from_str(result).unwrap_or_else(|e| panic!("{e}: {result}"))
}

/// A stdio MCP server runs inside the session's container: started on the
/// first listing, it sees the workspace and its configured environment;
/// its connections go through the session's egress policy (an allowed
/// upstream answers, another host is refused with a `network_request`
/// event); when it crashes the call fails saying how (its exit code and
/// stderr), and the next listing starts it again.
#[tokio::test]
async fn a_stdio_mcp_server_runs_in_the_container_under_the_sessions_policy() {
    let upstream = crogia_tests::upstream::Upstream::start().await;
    let allowed = format!("http://127.0.0.1:{}/", upstream.port);
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![("local__where".into(), json!({}))]),
        Reply::Tools(vec![
            ("local__fetch".into(), json!({"url": allowed})),
            (
                "local__fetch".into(),
                json!({"url": "http://denied.example.com/"}),
            ),
        ]),
        Reply::Tools(vec![("local__crash".into(), json!({}))]),
        Reply::Tools(vec![("local__where".into(), json!({}))]),
        Reply::Text("Done.".into()),
    ])
    .await;
    let port = upstream.port;
    let server = server_with_model(&model, |c| {
        configure_stdio(c);
        c.network.allow.push(format!("127.0.0.1:{port}"));
    })
    .await;
    let marker = format!("only in the workspace {}", std::process::id());
    let id = stdio_session(&server, json!({}), &marker).await;
    let events = run_task(&server, &id).await;
    assert_eq!(events.last().unwrap()["status"], "completed", "{events:?}");
    let results = results(&events);
    assert_eq!(results.len(), 5, "{results:?}");

    let first = where_report(&results[0].1);
    assert_eq!(first["marker"], marker.as_str(), "{first}");
    assert_eq!(first["cwd"], "/workspace", "{first}");
    let key = std::env::var(KEY_VAR).unwrap();
    assert_eq!(first["greeting"], key.as_str(), "{first}");

    assert_eq!(
        results[1],
        (
            "local__fetch".into(),
            format!("200 {}", crogia_tests::upstream::HELLO),
            false
        )
    );
    assert_eq!(upstream.hits(), 1);
    assert!(
        results[2].1.starts_with("403 ") && results[2].1.contains("denied.example.com"),
        "{:?}",
        results[2]
    );

    let (name, crashed, failed) = &results[3];
    assert_eq!((name.as_str(), *failed), ("local__crash", true));
    assert!(
        crashed.contains("exited with code 3") && crashed.contains("crashing on purpose"),
        "{crashed}"
    );
    // Started again for the next turn: a new process, the same workspace.
    let again = where_report(&results[4].1);
    assert_eq!(again["marker"], marker.as_str(), "{again}");
    assert_ne!(again["pid"], first["pid"], "{again}");
    assert!(offered(&model, 3).contains(&"local__where".to_string()));

    // The refused connection is the session's network event.
    let denied = network_event(&server, &id, "denied.example.com").await;
    assert_eq!(denied["decision"], "denied", "{denied}");

    // It runs in the container, as a process of the session's.
    let (_, ps) = server
        .post(
            &format!("/api/sessions/{id}/shell"),
            json!({"cmd": "ps -eo args"}),
        )
        .await;
    assert!(
        ps["stdout"].as_str().unwrap().contains("stdio_server.py"),
        "{ps}"
    );
    let (_, plugins) = server.get("/api/plugins").await;
    let status = &plugins["mcp_servers"][0];
    assert_eq!(status["name"], "local", "{status}");
    assert_eq!(status["command"], json!(["python3", "stdio_server.py"]));
    assert_eq!(status["url"], "", "{status}");
    assert_eq!(status["state"], "ready", "{status}");
    let (_, tools) = server.get("/api/tools").await;
    assert!(
        tools
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "local__fetch" && t["server"] == "local"),
        "{tools}"
    );
}

/// A stdio server that cannot start, or exits at once, leaves the session
/// working: its tools are left out, an `error` event says why (the
/// missing program; the exit code and the end of its stderr), and
/// `GET /api/plugins` reports it failed.
#[tokio::test]
async fn a_stdio_mcp_server_that_cannot_start_never_breaks_the_session() {
    let model = ScriptedModel::start(vec![Reply::Text("Fine without them.".into())]).await;
    let server = server_with_model(&model, |c| {
        for (name, command) in [
            ("missing", vec!["/nonexistent/mcp-server".to_string()]),
            (
                "dies",
                vec![
                    "python3".to_string(),
                    "-c".to_string(),
                    "import sys; sys.stderr.write('no module named boom\\n'); sys.exit(2)"
                        .to_string(),
                ],
            ),
        ] {
            c.mcp.servers.insert(
                name.into(),
                crogia_host::config::McpServerConfig {
                    command,
                    ..Default::default()
                },
            );
        }
    })
    .await;
    let id = server.session().await;
    let events = run_task(&server, &id).await;
    assert_eq!(events.last().unwrap()["status"], "completed", "{events:?}");
    let errors: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "error")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        errors.iter().any(|m| m.contains("MCP server missing")
            && m.contains("cannot start /nonexistent/mcp-server")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|m| m.contains("MCP server dies")
            && m.contains("exited with code 2")
            && m.contains("no module named boom")),
        "{errors:?}"
    );
    assert!(
        !offered(&model, 0)
            .iter()
            .any(|t| t.starts_with("missing__") || t.starts_with("dies__"))
    );
    assert!(offered(&model, 0).contains(&"read_file".to_string()));
    let (_, plugins) = server.get("/api/plugins").await;
    for status in plugins["mcp_servers"].as_array().unwrap() {
        assert_eq!(status["state"], "failed", "{status}");
    }
    let (status, out) = server
        .post(
            &format!("/api/sessions/{id}/shell"),
            json!({"cmd": "echo still here"}),
        )
        .await;
    assert_eq!(
        (status, out["stdout"].clone()),
        (200, json!("still here\n"))
    );
}

/// An MCP server's tool is never taken for read-only: a session that asks
/// before every tool asks before it, and a person's denial is what the
/// model reads.
#[tokio::test]
async fn an_mcp_servers_tool_asks_in_a_session_that_asks_for_everything() {
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![("local__where".into(), json!({}))]),
        Reply::Text("Understood.".into()),
    ])
    .await;
    let server = server_with_model(&model, configure_stdio).await;
    let id = stdio_session(&server, json!({"approval": "all"}), "x").await;
    let mut ws = server.ws(&id, None).await;
    let (status, body) = server
        .post(&format!("/api/sessions/{id}/tasks"), json!({"task": "go"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let asked = loop {
        let e = ws.event().await;
        if e["type"] == "approval_requested" {
            break e;
        }
    };
    assert_eq!(asked["tool_name"], "local__where", "{asked}");
    let approval = asked["approval_id"].as_str().unwrap();
    let (status, body) = server
        .post(
            &format!("/api/sessions/{id}/approvals/{approval}"),
            json!({"decision": "deny", "message": "not that server"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let events = ws.until_completed(1).await;
    let results = results(&events);
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(
        results[0].2 && results[0].1.contains("not that server"),
        "{results:?}"
    );
    let told = model.requests()[1]["messages"].to_string();
    assert!(told.contains("not that server"), "{told}");
}

/// An MCP server's tools obey `[tools.<server>__<tool>]`: a disabled one
/// is not offered and is refused when called directly; one past its
/// `timeout_ms` fails as a timeout, and the server answers the next call
/// (one without a limit of its own, which waits for it).
#[tokio::test]
async fn an_mcp_servers_tools_obey_their_tool_settings() {
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![("local__sleep".into(), json!({"seconds": 4}))]),
        Reply::Tools(vec![("local__where".into(), json!({}))]),
        Reply::Text("Done.".into()),
    ])
    .await;
    let server = server_with_model(&model, |c| {
        configure_stdio(c);
        c.tools.insert(
            "local__crash".into(),
            crogia_host::config::ToolConfig {
                enabled: false,
                ..Default::default()
            },
        );
        c.tools.insert(
            "local__sleep".into(),
            crogia_host::config::ToolConfig {
                timeout_ms: Some(1000),
                ..Default::default()
            },
        );
    })
    .await;
    let id = stdio_session(&server, json!({}), "x").await;
    let events = run_task(&server, &id).await;
    let results = results(&events);
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(
        results[0].2 && results[0].1.contains("1000 ms"),
        "{results:?}"
    );
    // The server is still there (this call waits for it to wake up).
    assert!(!results[1].2, "{results:?}");
    assert_eq!(where_report(&results[1].1)["marker"], "x");
    let tools = offered(&model, 0);
    assert!(tools.contains(&"local__sleep".to_string()), "{tools:?}");
    assert!(!tools.contains(&"local__crash".to_string()), "{tools:?}");
    let (status, body) = server
        .post(&format!("/api/sessions/{id}/tools/local__crash"), json!({}))
        .await;
    assert_eq!(status, 403, "{body}");
}
