//! Faults: the Docker engine going away and coming back (or never there), a
//! container killed or removed from outside, a delete that fails.

use std::time::Duration;

use crogia_tests::model::{Reply, ScriptedModel};
use crogia_tests::proxy::EngineProxy;
use crogia_tests::{TestServer, server_with_model};
use serde_json::{Value, json};

async fn wait_for(
    server: &TestServer,
    what: &str,
    mut check: impl FnMut(&Value) -> bool,
    path: &str,
) -> Value {
    for _ in 0..100 {
        let (_, body) = server.get(path).await;
        if check(&body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn an_engine_outage_gives_503s_and_everything_recovers_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = EngineProxy::start(dir.path()).await;
    let host = proxy.docker_host();
    let server = TestServer::with_config(move |c| {
        c.sandbox.docker_host = host;
        // The proxy fronts this machine's engine.
        c.sandbox.local_engine = Some(true);
    })
    .await;
    let id = server.session().await;
    assert_eq!(server.get("/api/health").await.1["docker_available"], true);

    proxy.cut();
    wait_for(
        &server,
        "health to report the outage",
        |h| h["docker_available"] == false,
        "/api/health",
    )
    .await;
    let (status, body) = server.post("/api/sessions", json!({})).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("Docker engine is not available"),
        "{body}"
    );
    let (status, body) = server
        .post(&format!("/api/sessions/{id}/shell"), json!({"cmd": "true"}))
        .await;
    assert_eq!(status, 503, "{body}");
    // Files are read inside the container, through the engine, so they
    // wait for it the same way; what does not need the engine still works.
    let (status, body) = server.get(&format!("/api/sessions/{id}/files")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(server.get("/api/sessions").await.0, 200);

    proxy.restore();
    wait_for(
        &server,
        "health to recover",
        |h| h["docker_available"] == true,
        "/api/health",
    )
    .await;
    let (status, out) = server
        .post(
            &format!("/api/sessions/{id}/shell"),
            json!({"cmd": "echo back"}),
        )
        .await;
    assert_eq!(
        (status, out["stdout"].as_str()),
        (200, Some("back\n")),
        "{out}"
    );
    assert_eq!(
        server.get(&format!("/api/sessions/{id}/files")).await.0,
        200
    );
    assert_eq!(server.post("/api/sessions", json!({})).await.0, 200);
    // Its session never went to error: the container was there all along.
    assert_eq!(
        server.get(&format!("/api/sessions/{id}")).await.1["status"],
        "active"
    );
}

#[tokio::test]
async fn a_container_killed_from_outside_is_reported_and_restarted_on_next_use() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let container = server.get(&format!("/api/sessions/{id}")).await.1["container_id"]
        .as_str()
        .unwrap()
        .to_string();
    let docker = server.fixture.sandbox.engine().client().await.unwrap();
    docker
        .kill_container(
            &container,
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .unwrap();
    let info = wait_for(
        &server,
        "the session to show it stopped",
        |s| s["status"] == "stopped",
        &format!("/api/sessions/{id}"),
    )
    .await;
    assert_eq!(info["container_status"], "exited");
    let (status, out) = server
        .post(
            &format!("/api/sessions/{id}/shell"),
            json!({"cmd": "echo restarted"}),
        )
        .await;
    assert_eq!(
        (status, out["stdout"].as_str()),
        (200, Some("restarted\n")),
        "{out}"
    );
    wait_for(
        &server,
        "the session to be active again",
        |s| s["status"] == "active",
        &format!("/api/sessions/{id}"),
    )
    .await;
}

/// Issue 15's reproduction: DELETE used to drop the session's queue and
/// abort its running task before removing the container, so when the
/// removal failed the session lived on with its running task ended without a
/// `task_completed` and its queued tasks gone.
#[tokio::test]
async fn a_delete_that_fails_keeps_the_session_and_its_queued_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = EngineProxy::start(dir.path()).await;
    let host = proxy.docker_host();
    let model = ScriptedModel::start(vec![
        Reply::Stall(vec!["working".into()]),
        Reply::Text("second done".into()),
    ])
    .await;
    let server = server_with_model(&model, move |c| {
        c.sandbox.docker_host = host;
        c.sandbox.local_engine = Some(true);
    })
    .await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    let tasks = format!("/api/sessions/{id}/tasks");
    assert_eq!(server.post(&tasks, json!({"task": "first"})).await.0, 200);
    loop {
        let e = ws.event().await;
        if e["type"] == "text_delta" {
            break;
        }
    }
    let (status, queued) = server.post(&tasks, json!({"task": "second"})).await;
    assert_eq!((status, queued["queued"].as_bool()), (200, Some(true)));

    proxy.cut();
    let (status, body) = server.delete(&format!("/api/sessions/{id}")).await;
    let first = events_until_completed(&mut ws).await;
    // Back before any assertion, so a failure still cleans up through it.
    proxy.restore();
    assert_eq!(status, 503, "the engine is away: {body}");
    // The running task was stopped, and its end recorded.
    let end = first.last().expect("the running task's end was recorded");
    assert_eq!(
        (&end["type"], &end["task"], &end["status"]),
        (
            &json!("task_completed"),
            &json!("first"),
            &json!("cancelled")
        )
    );

    // The session is still there, and its queued task runs.
    assert_eq!(server.get(&format!("/api/sessions/{id}")).await.0, 200);
    let second = ws.until_completed(1).await;
    let started = second.iter().find(|e| e["type"] == "task_started").unwrap();
    assert_eq!(started["task"], "second");
    let end = second.last().unwrap();
    assert_eq!(
        (&end["task"], &end["status"]),
        (&json!("second"), &json!("completed"))
    );
    // Once the engine answers, the delete goes through.
    assert_eq!(server.delete(&format!("/api/sessions/{id}")).await.0, 200);
    assert_eq!(server.get(&format!("/api/sessions/{id}")).await.0, 404);
}

/// Events up to the next `task_completed`, or what came before the stream
/// went quiet for 20 s or closed.
async fn events_until_completed(ws: &mut crogia_tests::WsClient) -> Vec<Value> {
    let mut events = Vec::new();
    while let crogia_tests::WsRead::Event(e) = ws.read(Duration::from_secs(20)).await {
        let done = e["type"] == "task_completed";
        events.push(e);
        if done {
            break;
        }
    }
    events
}
#[tokio::test]
async fn without_a_docker_engine_creation_is_503_and_health_says_so() {
    let server = TestServer::with_config(|c| {
        c.sandbox.docker_host = "unix:///nonexistent/docker.sock".into()
    })
    .await;
    let (_, health) = server.get("/api/health").await;
    assert_eq!(health["docker_available"], false);
    assert_eq!(health["status"], "healthy");
    let (status, body) = server.post("/api/sessions", json!({"task": "x"})).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("Docker engine is not available"),
        "{body}"
    );
    assert_eq!(server.get("/api/sessions").await.1, json!([]));
    let workspaces = server.fixture.tmp.path().join("workspaces");
    assert_eq!(
        std::fs::read_dir(workspaces).unwrap().count(),
        0,
        "a failed create left a workspace behind"
    );
}

#[tokio::test]
async fn a_container_removed_outside_shows_the_session_in_error() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let container = server.get(&format!("/api/sessions/{id}")).await.1["container_id"]
        .as_str()
        .unwrap()
        .to_string();
    server.fixture.sandbox.remove(&container).await.unwrap();
    let mut info = Value::Null;
    for _ in 0..50 {
        info = server.get(&format!("/api/sessions/{id}")).await.1;
        if info["status"] == "error" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(info["status"], "error", "{info}");
    assert_eq!(info["container_status"], "removed");
    assert!(
        info["error"]
            .as_str()
            .unwrap()
            .contains("removed outside Crogia"),
        "{info}"
    );
    let (status, body) = server
        .post(&format!("/api/sessions/{id}/shell"), json!({"cmd": "true"}))
        .await;
    assert_eq!(status, 409);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("Delete it and create a new one"),
        "{body}"
    );
    // Its files went with the container (the server opens none itself):
    // they are refused the same way, and the session can be deleted.
    let (status, body) = server.get(&format!("/api/sessions/{id}/files")).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("Delete it and create a new one"),
        "{body}"
    );
    assert_eq!(server.delete(&format!("/api/sessions/{id}")).await.0, 200);
}
