//! MCP both ways, with real peers: the official Python `mcp` package as a
//! client of a session's tools over streamable HTTP and through
//! `crogia mcp`.

use std::process::Stdio;
use std::time::Duration;

use crogia_tests::process::binary;
use crogia_tests::{TestServer, WsClient, repo_root};
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
