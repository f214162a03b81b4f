//! Several Docker engines (`[[sandbox.engines]]`, issue 22): sessions are
//! placed on the least loaded engine with room, and an engine that goes
//! away (unreachable, or its daemon stopped) makes only its own sessions
//! unavailable (503 naming it) until it is back.

use std::time::Duration;

use crogia_host::config::EngineConfig;
use crogia_tests::proxy::EngineProxy;
use crogia_tests::{TestServer, second_engine};
use serde_json::{Value, json};

fn engine(name: &str, docker_host: &str, max_sessions: u64) -> EngineConfig {
    EngineConfig {
        name: name.into(),
        docker_host: docker_host.into(),
        local_engine: None,
        max_sessions,
    }
}

async fn create(server: &TestServer) -> (u16, Value) {
    server.post("/api/sessions", json!({})).await
}

/// A session on engine `a`, then one on `b` (placement with both empty);
/// their ids.
async fn one_on_each(server: &TestServer) -> (String, String) {
    let (_, on_a) = create(server).await;
    let (_, on_b) = create(server).await;
    assert_eq!(
        (on_a["engine"].as_str(), on_b["engine"].as_str()),
        (Some("a"), Some("b"))
    );
    let id = |s: &Value| s["session_id"].as_str().unwrap().to_string();
    (id(&on_a), id(&on_b))
}

async fn shell(server: &TestServer, id: &str, cmd: &str) -> (u16, Value) {
    server
        .post(&format!("/api/sessions/{id}/shell"), json!({"cmd": cmd}))
        .await
}

/// Waits until session `id` runs `cmd` again; its answer.
async fn answers_again(server: &TestServer, id: &str, cmd: &str) -> Value {
    for _ in 0..150 {
        let (status, body) = shell(server, id, cmd).await;
        if status == 200 {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("session {id} never answered again");
}

/// Waits until health says engine `a` (the first) is back.
async fn health_sees_a_back(server: &TestServer) {
    for _ in 0..100 {
        if server.get("/api/health").await.1["engines"][0]["available"] == true {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("health never saw engine a back");
}

/// Two engines, this machine's and the second one `just test` starts:
/// each new session goes to the one holding fewer (the first, of equals)
/// until an engine holds its `max_sessions`; with every engine full, a
/// create is refused with 503. Each session's container is on its engine,
/// and runs commands there.
#[tokio::test]
async fn sessions_go_to_the_least_loaded_engine_with_room() {
    let second = second_engine();
    let engines = vec![engine("here", "", 2), engine("second", &second, 1)];
    let server = TestServer::with_config(move |c| c.sandbox.engines = engines).await;
    let mut placed = Vec::new();
    for _ in 0..3 {
        let (status, body) = create(&server).await;
        assert_eq!(status, 200, "{body}");
        placed.push(body);
    }
    let names: Vec<&str> = placed
        .iter()
        .map(|s| s["engine"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["here", "second", "here"]);
    // On the second engine, the workspace is a volume there.
    assert!(
        placed[1]["workdir"]
            .as_str()
            .unwrap()
            .starts_with("volume:"),
        "{}",
        placed[1]
    );
    assert!(
        placed[0]["workdir"].as_str().unwrap().starts_with('/'),
        "{}",
        placed[0]
    );
    // Each container is on its own engine, and nowhere else.
    for s in &placed {
        let container = s["container_id"].as_str().unwrap();
        let on = |host: &str| {
            std::process::Command::new("docker")
                .args(if host.is_empty() {
                    vec![]
                } else {
                    vec!["-H", host]
                })
                .args(["inspect", "--format", "{{.State.Running}}", container])
                .output()
                .unwrap()
        };
        let (here, there) = (on(""), on(&second));
        let expected_here = s["engine"] == "here";
        assert_eq!(here.status.success(), expected_here, "{s}");
        assert_eq!(there.status.success(), !expected_here, "{s}");
        let id = s["session_id"].as_str().unwrap();
        let (status, out) = server
            .post(
                &format!("/api/sessions/{id}/shell"),
                json!({"cmd": "echo on $HOSTNAME"}),
            )
            .await;
        assert_eq!(status, 200, "{out}");
        assert_eq!(out["exit_code"], 0, "{out}");
    }
    let (status, full) = create(&server).await;
    assert_eq!(status, 503, "{full}");
    assert!(
        full["detail"].as_str().unwrap().contains("max_sessions"),
        "{full}"
    );
    let health = server.get("/api/health").await.1;
    assert_eq!(
        health["engines"],
        json!([
            {"name": "here", "available": true, "sessions": 2, "max_sessions": 2},
            {"name": "second", "available": true, "sessions": 1, "max_sessions": 1},
        ]),
        "{health}"
    );
    // Deleting one makes room there again.
    let id = placed[1]["session_id"].as_str().unwrap();
    assert_eq!(server.delete(&format!("/api/sessions/{id}")).await.0, 200);
    let (status, body) = create(&server).await;
    assert_eq!(
        (status, body["engine"].as_str()),
        (200, Some("second")),
        "{body}"
    );
}

/// Engine `a` goes away (its socket is cut: from the server's side, the
/// engine stopped) and comes back. Meanwhile its session answers 503
/// naming it, the session on `b` works as before, new sessions go to `b`,
/// and health says which engine is down; once `a` is back its session
/// runs commands again, with nothing restarted.
#[tokio::test]
async fn an_engine_outage_makes_only_its_sessions_unavailable_until_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = EngineProxy::start(dir.path()).await;
    let mut a = engine("a", &proxy.docker_host(), 0);
    // The proxy fronts this machine's engine.
    a.local_engine = Some(true);
    let engines = vec![a, engine("b", "", 0)];
    let server = TestServer::with_config(move |c| c.sandbox.engines = engines).await;
    let (on_a, on_b) = one_on_each(&server).await;

    proxy.cut();
    let (status, body) = shell(&server, &on_a, "echo up").await;
    assert_eq!(status, 503, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("Docker engine is not available") && detail.contains("engine \"a\""),
        "{body}"
    );
    let (status, body) = shell(&server, &on_b, "echo up").await;
    assert_eq!(
        (status, body["stdout"].as_str()),
        (200, Some("up\n")),
        "{body}"
    );
    let (status, body) = create(&server).await;
    assert_eq!(
        (status, body["engine"].as_str()),
        (200, Some("b")),
        "{body}"
    );
    let health = server.get("/api/health").await.1;
    assert_eq!(health["docker_available"], true, "{health}");
    assert_eq!(health["engines"][0]["available"], false, "{health}");
    assert_eq!(health["engines"][1]["available"], true, "{health}");
    let (_, session) = server.get(&format!("/api/sessions/{on_a}")).await;
    assert_ne!(session["status"], "error", "{session}");

    proxy.restore();
    let back = answers_again(&server, &on_a, "echo up").await;
    assert_eq!(back["stdout"], "up\n", "{back}");
    health_sees_a_back(&server).await;
}

/// A real engine stopped and started again (a `dockerd` of this test's
/// own; its containers stop with it): while it is down its session
/// answers 503 naming it and the other engine's session works; once it is
/// back, the session runs commands again (its container started again)
/// with its workspace as it was, and health sees the engine back.
#[tokio::test]
async fn an_engine_stopped_and_started_again_takes_its_sessions_with_it_and_back() {
    let own = crogia_tests::engine::OwnEngine::start();
    let engines = vec![engine("a", &own.docker_host(), 0), engine("b", "", 0)];
    let server = TestServer::with_config(move |c| c.sandbox.engines = engines).await;
    let (on_a, on_b) = one_on_each(&server).await;
    let (status, body) = shell(&server, &on_a, "echo kept > kept.txt").await;
    assert_eq!(status, 200, "{body}");

    own.stop();
    let (status, body) = shell(&server, &on_a, "cat kept.txt").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("engine \"a\""),
        "{body}"
    );
    let (status, body) = shell(&server, &on_b, "echo up").await;
    assert_eq!(
        (status, body["stdout"].as_str()),
        (200, Some("up\n")),
        "{body}"
    );
    let health = server.get("/api/health").await.1;
    assert_eq!(health["engines"][0]["available"], false, "{health}");

    own.start_again();
    let back = answers_again(&server, &on_a, "cat kept.txt").await;
    assert_eq!(back["stdout"], "kept\n", "{back}");
    let (_, session) = server.get(&format!("/api/sessions/{on_a}")).await;
    assert_eq!(session["status"], "active", "{session}");
    health_sees_a_back(&server).await;
}

/// A fork placed on another engine than its parent's: the checkpoint's
/// objects go from the parent's agent on one engine to the child's on the
/// other, and the child has the parent's files. (The copy once went to
/// the parent's engine for both, which does not know the child's
/// container.)
#[tokio::test]
async fn a_fork_placed_on_another_engine_has_its_parents_files() {
    let second = second_engine();
    let engines = vec![engine("here", "", 1), engine("second", &second, 1)];
    let server = TestServer::with_config(move |c| c.sandbox.engines = engines).await;
    let (status, parent) = create(&server).await;
    assert_eq!(
        (status, parent["engine"].as_str()),
        (200, Some("here")),
        "{parent}"
    );
    let id = parent["session_id"].as_str().unwrap();
    let (status, body) = server
        .post(
            &format!("/api/sessions/{id}/files/content"),
            json!({"path": "kept/a.txt", "content": "from the parent\n"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, point) = server
        .post(&format!("/api/sessions/{id}/checkpoints"), json!({}))
        .await;
    assert_eq!(status, 201, "{point}");
    let (status, child) = server
        .post(&format!("/api/sessions/{id}/fork"), json!({}))
        .await;
    assert_eq!(status, 201, "{child}");
    assert_eq!(child["engine"], "second", "{child}");
    let child = child["session_id"].as_str().unwrap();
    let (status, file) = server
        .get(&format!(
            "/api/sessions/{child}/files/content?path=kept/a.txt"
        ))
        .await;
    assert_eq!(
        (status, file["content"].as_str()),
        (200, Some("from the parent\n")),
        "{file}"
    );
}
