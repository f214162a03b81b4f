//! The sandbox agent (issue 16): commands run through the resident agent in
//! each container, which kills them when whoever asked goes away. Each test
//! is one of the reproductions, against a real server, container
//! and plugin.

use std::time::Duration;

use crogia_host::config::ToolConfig;
use crogia_tests::model::{Reply, ScriptedModel};
use crogia_tests::{TestServer, server_with_model};
use serde_json::json;

/// Whether a process whose command line contains `needle` runs in the
/// session's container, once it has had up to 10 s to go away.
async fn still_running(server: &TestServer, id: &str, needle: &str) -> bool {
    for _ in 0..50 {
        if !server.process_running(id, needle).await {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    true
}

/// Waits until a process whose command line contains `needle` runs.
async fn wait_running(server: &TestServer, id: &str, needle: &str) {
    for _ in 0..100 {
        let (_, out) = server
            .post(
                &format!("/api/sessions/{id}/shell"),
                json!({"cmd": "ps -eo args"}),
            )
            .await;
        if out["stdout"].as_str().unwrap_or_default().contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{needle} never started");
}

#[tokio::test]
async fn a_rest_caller_that_disconnects_takes_its_command_with_it() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let gave_up = client
        .post(server.url(&format!("/api/sessions/{id}/shell")))
        .json(&json!({"cmd": "sleep 779", "timeout": 600}))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client gave up after 1 s");
    assert!(
        !still_running(&server, &id, "sleep 779").await,
        "the command outlived its caller"
    );
}

#[tokio::test]
async fn a_plugin_that_times_out_takes_its_command_with_it() {
    let server = TestServer::with_config(|c| {
        c.tools.insert(
            "shell".into(),
            ToolConfig {
                timeout_ms: Some(1500),
                ..ToolConfig::default()
            },
        );
    })
    .await;
    let id = server.session().await;
    let session = server.state.sessions.get(&id).unwrap();
    let outcome = server
        .state
        .plugins
        .invoke(
            session.caps.clone(),
            "shell",
            &json!({"command": "sleep 778", "timeout": 600}).to_string(),
        )
        .await;
    assert_eq!(outcome.unwrap_err().code(), "timeout");
    assert!(
        !still_running(&server, &id, "sleep 778").await,
        "the command outlived the tool"
    );
}

#[tokio::test]
async fn a_cancelled_task_takes_its_running_command_with_it() {
    let model = ScriptedModel::start(vec![Reply::Tools(vec![(
        "shell".into(),
        json!({"command": "sleep 777", "timeout": 600}),
    )])])
    .await;
    let server = server_with_model(&model, |_| {}).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    let (status, _) = server
        .post(
            &format!("/api/sessions/{id}/tasks"),
            json!({"task": "wait a long time"}),
        )
        .await;
    assert_eq!(status, 200);
    wait_running(&server, &id, "sleep 777").await;
    let (status, body) = server
        .post(&format!("/api/sessions/{id}/tasks/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let events = ws.until_completed(1).await;
    assert_eq!(events.last().unwrap()["status"], "cancelled");
    assert!(
        !still_running(&server, &id, "sleep 777").await,
        "the command outlived its task"
    );
}

#[tokio::test]
async fn a_command_whose_output_never_pauses_still_times_out() {
    let server = TestServer::with_config(|c| c.sandbox.output_limit_bytes = 4096).await;
    let id = server.session().await;
    let (status, out) = server
        .post(
            &format!("/api/sessions/{id}/shell"),
            json!({"cmd": "sleep 1; yes", "timeout": 3}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["timed_out"], true, "{out}");
    assert_eq!(out["truncated"], true);
    assert!(out["stdout"].as_str().unwrap().len() < 8192);
    assert!(!still_running(&server, &id, "yes").await);
}

#[tokio::test]
async fn the_agent_is_the_containers_first_process_and_reaps_orphans() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let (_, out) = server
        .post(
            &format!("/api/sessions/{id}/shell"),
            json!({"cmd": "cat /proc/1/cmdline | tr '\\0' ' '; echo; sh -c 'sleep 0.2 &' ; sleep 1; ps -eo stat,args"}),
        )
        .await;
    let text = out["stdout"].as_str().unwrap();
    let pid1 = text.lines().next().unwrap();
    // PID 1 itself: nothing (Docker's init) stands in front of it.
    assert_eq!(pid1.trim(), "/.crogia/crogia-agent init", "{text}");
    assert!(
        text.contains("/.crogia/crogia-agent"),
        "the agent runs: {text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with('Z')),
        "an orphan was left a zombie: {text}"
    );
}

#[tokio::test]
async fn an_agent_killed_inside_the_container_is_back_for_the_next_request() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let (status, body) = server
        .post(
            &format!("/api/sessions/{id}/files/content"),
            json!({"path": "kept.txt", "content": "still here"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The command kills the agent that runs it, so its own answer is lost.
    let (status, _) = server
        .post(
            &format!("/api/sessions/{id}/shell"),
            json!({"cmd": "kill -9 $(pgrep -f 'crogia-agen[t] serve')"}),
        )
        .await;
    assert_ne!(status, 200, "the command's own agent died before answering");
    // Init starts a new agent; the server makes a new link to it by itself.
    let mut answered = None;
    for _ in 0..50 {
        let (status, out) = server
            .post(
                &format!("/api/sessions/{id}/shell"),
                json!({"cmd": "pgrep -f 'crogia-agen[t] serve' | wc -l"}),
            )
            .await;
        if status == 200 {
            answered = Some(out);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = answered.expect("the session never recovered");
    assert_eq!(out["stdout"].as_str().unwrap().trim(), "1", "{out}");
    let (status, body) = server
        .get(&format!("/api/sessions/{id}/files/content?path=kept.txt"))
        .await;
    assert_eq!(
        (status, body["content"].as_str()),
        (200, Some("still here"))
    );
    let (_, info) = server.get(&format!("/api/sessions/{id}")).await;
    assert_ne!(info["status"], "error", "{info}");
}

/// A session on an image with nothing but a static busybox (no python, no
/// bash; `sandbox/build-minimal-image.sh`): the agent is mounted in, so
/// commands, files, search and processes all work.
#[tokio::test]
async fn a_session_works_on_an_image_without_python() {
    let server =
        TestServer::with_config(|c| c.sandbox.image = "crogia-minimal:latest".into()).await;
    let id = server.session().await;
    let (status, out) = server
        .post(
            &format!("/api/sessions/{id}/shell"),
            json!({"cmd": "command -v python3 || echo no python; echo needle > found.txt"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["stdout"], "no python\n", "{out}");
    let (status, body) = server
        .post(
            &format!("/api/sessions/{id}/files/content"),
            json!({"path": "src/app.txt", "content": "another needle\n"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .get(&format!("/api/sessions/{id}/files/content?path=found.txt"))
        .await;
    assert_eq!((status, body["content"].as_str()), (200, Some("needle\n")));
    let (status, body) = server
        .post(
            &format!("/api/sessions/{id}/search/grep"),
            json!({"pattern": "needle"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let files: Vec<&str> = body["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["file"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["found.txt", "src/app.txt"]);
    let (status, started) = server
        .post(
            &format!("/api/sessions/{id}/processes"),
            json!({"cmd": "echo from the background; sleep 300"}),
        )
        .await;
    assert_eq!(status, 200, "{started}");
    let pid = started["pid"].as_u64().unwrap();
    let mut logs = String::new();
    for _ in 0..50 {
        let (_, body) = server
            .get(&format!("/api/sessions/{id}/processes/{pid}/logs"))
            .await;
        logs = body["logs"].as_str().unwrap_or_default().to_string();
        if !logs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(logs, "from the background\n");
}

/// The next line of an NDJSON answer; `None` at its end.
async fn next_line(
    resp: &mut reqwest::Response,
    pending: &mut Vec<u8>,
) -> Option<serde_json::Value> {
    loop {
        if let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            return Some(serde_json::from_slice(&line).unwrap());
        }
        let chunk = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
            .await
            .expect("the stream went silent")
            .unwrap()?;
        pending.extend_from_slice(&chunk);
    }
}

#[tokio::test]
async fn a_streamed_command_shows_its_output_as_it_comes_and_dies_with_its_caller() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let url = server.url(&format!("/api/sessions/{id}/shell/stream"));
    // The command waits, after its first line, for a file only the test makes.
    let mut resp = server
        .client
        .post(&url)
        .json(&json!({"cmd": "echo first; while [ ! -f go ]; do sleep 0.05; done; echo second >&2; exit 4"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let mut pending = Vec::new();
    let first = next_line(&mut resp, &mut pending).await.unwrap();
    assert_eq!(first, json!({"type": "stdout", "data": "first\n"}));
    // It arrived while the command still runs: only now may it go on.
    let (status, _) = server
        .post(
            &format!("/api/sessions/{id}/files/content"),
            json!({"path": "go", "content": ""}),
        )
        .await;
    assert_eq!(status, 200);
    let mut rest = Vec::new();
    while let Some(line) = next_line(&mut resp, &mut pending).await {
        rest.push(line);
    }
    assert_eq!(
        rest,
        [
            json!({"type": "stderr", "data": "second\n"}),
            json!({"type": "exit", "exit_code": 4, "timed_out": false, "truncated": false}),
        ]
    );

    // A caller that goes away takes its (silent) command with it.
    let mut resp = server
        .client
        .post(&url)
        .json(&json!({"cmd": "echo started; exec sleep 4343"}))
        .send()
        .await
        .unwrap();
    let mut pending = Vec::new();
    next_line(&mut resp, &mut pending).await.unwrap();
    assert!(server.process_running(&id, "sleep 4343").await);
    drop(resp);
    assert!(
        !still_running(&server, &id, "sleep 4343").await,
        "the streamed command outlived its caller"
    );
}

/// Reads `program`'s stdout until it holds `want` (10 s at most).
async fn read_until(stdout: &mut (impl tokio::io::AsyncRead + Unpin), want: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(want) {
        let n = tokio::time::timeout(Duration::from_secs(10), stdout.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {want:?} in {:?}", String::from_utf8_lossy(&seen)))
            .unwrap();
        assert!(n > 0, "stdout ended before {want:?}");
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// A program with piped standard streams (how stdio MCP servers run): what
/// is written reaches its stdin, its stdout comes back, closing its stdin
/// lets it exit, and its exit code and the end of its stderr follow (the
/// rest of an endless stderr dropped); what it left running is killed when
/// it exits, and a program whose caller goes away is killed with what it
/// started, even one that never stops writing.
#[tokio::test]
async fn a_stdio_program_talks_ends_with_its_exit_and_dies_with_its_caller() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start().await;
    let id = server.session().await;
    let caps = server.state.sessions.get(&id).unwrap().caps.clone();
    let argv = |script: &str| ["sh".to_string(), "-c".to_string(), script.to_string()];

    let mut program = caps
        .open_stdio(
            &argv("head -c 100000 /dev/zero | tr '\\0' e >&2; sleep 4441 & echo \"$GREETING\"; cat; echo bye >&2; exit 7"),
            &[("GREETING".into(), "hello from the env".into())],
            "/workspace",
        )
        .await
        .unwrap();
    read_until(&mut program.stdout, "hello from the env\n").await;
    program.stdin.write_all(b"ping\n").await.unwrap();
    program.stdin.flush().await.unwrap();
    read_until(&mut program.stdout, "ping\n").await;
    assert!(server.process_running(&id, "sleep 4441").await);
    program.stdin.shutdown().await.unwrap();
    drop(program.stdin);
    let mut rest = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        program.stdout.read_to_end(&mut rest),
    )
    .await
    .expect("stdout ends once the program exits")
    .unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    let end = program.ended.get().expect("how it ended").clone();
    assert_eq!(end.exit, "code 7");
    assert!(end.stderr.ends_with("eeebye\\n"), "{}", end.stderr);
    assert!(end.stderr.len() <= 2048 + 2, "{}", end.stderr.len());
    assert!(
        !still_running(&server, &id, "sleep 4441").await,
        "what it left running outlived it"
    );

    // A missing program is refused at once.
    let missing = caps
        .open_stdio(&["/nonexistent/program".to_string()], &[], "/workspace")
        .await
        .err()
        .expect("a missing program is refused");
    assert!(
        missing
            .to_string()
            .contains("cannot start /nonexistent/program"),
        "{missing}"
    );

    // Its caller goes away: it goes, with what it started, though it
    // never stops writing.
    let program = caps
        .open_stdio(&argv("sleep 4442 & yes"), &[], "/workspace")
        .await
        .unwrap();
    wait_running(&server, &id, "sleep 4442").await;
    drop(program);
    assert!(
        !still_running(&server, &id, "sleep 4442").await,
        "the program outlived its caller"
    );
    assert!(!still_running(&server, &id, "yes").await);
}
