//! Scale-out (issue 22): the server's state in PostgreSQL, on a real
//! cluster (`tests/ensure-postgres.sh`, which `just test` runs), one
//! database per test, dropped after it.

use crogia_host::store::Store;
use crogia_host::store::scratch::ScratchDatabase;
use crogia_tests::model::{Reply, ScriptedModel};
use crogia_tests::{TestServer, server_with_model};
use serde_json::{Value, json};

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn a_server_on_postgres_runs_tasks_and_keeps_everything_across_a_restart() {
    let db = ScratchDatabase::create().await;
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![(
            "write_file".into(),
            json!({"path": "a.txt", "content": "one\n"}),
        )]),
        Reply::Text("Wrote a.txt.".into()),
        Reply::Text("Still here.".into()),
    ])
    .await;
    let store = db.config.clone();
    let server = server_with_model(&model, move |c| c.store = store).await;
    let data_dir = server.fixture.config.server.data_dir.clone();
    let id = server.session().await;
    let mut ws = server.ws(&id, Some(0)).await;
    let (status, body) = server
        .post(
            &format!("/api/sessions/{id}/tasks"),
            json!({"task": "write a.txt"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let first = ws.until_completed(1).await;
    assert_eq!(seqs(&first), (1..=first.len() as u64).collect::<Vec<_>>());
    assert_eq!(first.last().unwrap()["status"], "completed");
    // Nothing went to SQLite.
    assert!(!data_dir.join("crogia.db").exists());

    let fixture = server.stop().await;
    let server = TestServer::start_with(fixture).await;
    let (status, session) = server.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["last_task"], "write a.txt");
    // A client replaying from the start reads exactly what was sent live.
    let mut ws = server.ws(&id, Some(0)).await;
    let mut replayed = Vec::new();
    for _ in 0..first.len() {
        replayed.push(ws.event().await);
    }
    assert_eq!(replayed, first);

    // The next task's events continue the numbering, without a gap.
    let (status, body) = server
        .post(
            &format!("/api/sessions/{id}/tasks"),
            json!({"task": "again"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let second = ws.until_completed(1).await;
    let n = (first.len() + second.len()) as u64;
    assert_eq!(
        seqs(&second),
        (first.len() as u64 + 1..=n).collect::<Vec<_>>()
    );
    // The conversation came back from PostgreSQL: the model's last request
    // carries the first task's turns.
    let last = model.requests().pop().unwrap().to_string();
    assert!(
        last.contains("write a.txt") && last.contains("Wrote a.txt."),
        "{last}"
    );

    // And the database holds them, numbered as sent.
    let direct = Store::connect(&db.config).await.unwrap();
    assert_eq!(direct.last_event_seq(&id).await.unwrap(), n);
    let stored = direct.events_after(&id, 0, 1000).await.unwrap();
    let sent: Vec<String> = first.iter().chain(&second).map(|e| e.to_string()).collect();
    let stored: Vec<String> = stored
        .iter()
        .map(|(_, json)| serde_json::from_str::<Value>(json).unwrap().to_string())
        .collect();
    assert_eq!(stored, sent);
    direct.close().await;
}

#[tokio::test]
async fn a_postgres_store_that_does_not_answer_stops_the_server_naming_it_without_its_password() {
    let mut fixture = crogia_tests::TestSandbox::new();
    // A port nothing listens on.
    fixture.config.store.url = "postgres://crogia:s3cret-pass@127.0.0.1:1/crogia".into();
    fixture.config.store.max_connections = 2;
    fixture.config.store.connect_timeout_secs = 1;
    let err = match crogia_host::server::App::build(fixture.config.clone()).await {
        Ok(_) => panic!("a server started without its database"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("PostgreSQL at postgres://crogia:***@127.0.0.1:1/crogia"),
        "{err}"
    );
    assert!(!err.contains("s3cret-pass"), "{err}");
}

/// Two servers on one PostgreSQL: a session made on A is served by B
/// (made before B started, or while it runs), a WebSocket on B follows,
/// live, the task A runs, receiving exactly what A's own clients receive,
/// and a session A deletes is gone from B.
#[tokio::test]
async fn server_b_serves_server_as_sessions_and_follows_their_tasks_live() {
    let db = ScratchDatabase::create().await;
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![(
            "write_file".into(),
            json!({"path": "from-a.txt", "content": "written on A\n"}),
        )]),
        Reply::Pieces((0..40).map(|i| format!("piece {i} ")).collect()),
    ])
    .await;
    let store = db.config.clone();
    let a = server_with_model(&model, move |c| c.store = store).await;
    let id = a.session().await;
    // B starts after the session exists (it loads sessions at start).
    let store = db.config.clone();
    let base_url = model.base_url.clone();
    let b = TestServer::with_config(move |c| {
        c.store = store;
        c.model.base_url = base_url;
    })
    .await;
    let (status, on_b) = b.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(status, 200, "{on_b}");

    let mut ws_a = a.ws(&id, None).await;
    let mut ws_b = b.ws(&id, None).await;
    let (status, body) = a
        .post(
            &format!("/api/sessions/{id}/tasks"),
            json!({"task": "write from-a.txt"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let seen_on_a = ws_a.until_completed(1).await;
    let seen_on_b = ws_b.until_completed(1).await;
    assert_eq!(seen_on_b, seen_on_a);
    assert!(
        seen_on_b
            .iter()
            .filter(|e| e["type"] == "text_delta")
            .count()
            >= 40
    );
    // B serves the session's sandbox too: the file A's task wrote.
    let (status, file) = b
        .get(&format!("/api/sessions/{id}/files/content?path=from-a.txt"))
        .await;
    assert_eq!(
        (status, file["content"].as_str()),
        (200, Some("written on A\n")),
        "{file}"
    );

    // A session made on A now, while B runs, is served by B as soon as the
    // database announces it; deleted on A, it is gone from B.
    let later = a.session().await;
    let on_b = |path: String| {
        let b = &b;
        async move {
            for _ in 0..100 {
                let (status, body) = b.get(&path).await;
                if status != 404 {
                    return (status, body);
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            (404, Value::Null)
        }
    };
    let (status, body) = on_b(format!("/api/sessions/{later}")).await;
    assert_eq!(status, 200, "B never took up a session made on A: {body}");
    let (status, out) = b
        .post(
            &format!("/api/sessions/{later}/shell"),
            json!({"cmd": "echo served by B"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["stdout"], "served by B\n", "{out}");
    let (status, _) = a.delete(&format!("/api/sessions/{later}")).await;
    assert_eq!(status, 200);
    let mut gone = false;
    for _ in 0..100 {
        if b.get(&format!("/api/sessions/{later}")).await.0 == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(gone, "B still serves a session A deleted");
    assert!(
        b.get("/api/sessions")
            .await
            .1
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["session_id"] != later.as_str())
    );

    // B stops first: A owns the sessions' containers.
    b.stop().await;
}

/// Two servers on one PostgreSQL leave each other's work alone: B
/// restarting while A runs a task does not take that task for interrupted
/// (a server recovers only its own), and a file written in A's session is
/// one `file_changed` event, not one per server following the sandbox.
#[tokio::test]
async fn a_restart_of_server_b_leaves_server_as_running_task_and_file_events_alone() {
    let db = ScratchDatabase::create().await;
    let model = ScriptedModel::start(vec![Reply::Delay(
        std::time::Duration::from_secs(6),
        Box::new(Reply::Text("done".into())),
    )])
    .await;
    let store = db.config.clone();
    let a = server_with_model(&model, move |c| {
        c.store = store;
        c.workspace.file_events = true;
    })
    .await;
    let id = a.session().await;
    let store = db.config.clone();
    let b = TestServer::with_config(move |c| {
        c.store = store;
        c.workspace.file_events = true;
    })
    .await;
    let mut ws = a.ws(&id, None).await;
    // Both servers' watches are up before anything changes.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let (status, body) = a
        .post(
            &format!("/api/sessions/{id}/tasks"),
            json!({"task": "take your time"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    loop {
        if ws.event().await["type"] == "task_started" {
            break;
        }
    }
    // B restarts while A's task waits for the model.
    let b = TestServer::start_with(b.stop().await).await;
    let (status, body) = a
        .post(
            &format!("/api/sessions/{id}/files/content"),
            json!({"path": "once.txt", "content": "one event"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let events = ws.until_completed(1).await;
    let end = events.last().unwrap();
    assert_eq!(end["status"], "completed", "{events:?}");
    let changes = events
        .iter()
        .filter(|e| e["type"] == "file_changed" && e["path"] == "once.txt")
        .count();
    assert_eq!(changes, 1, "{events:?}");
    // Nor did B's restart record anything about the task.
    assert!(events.iter().all(|e| e["type"] != "error"), "{events:?}");
    b.stop().await;
}

/// Servers sharing one database share the instance id that labels their
/// containers, yet each keeps its own warm pool: B's start (which discards
/// its own stale pool) and B's `crogia gc` leave A's ready containers
/// alone, and A still hands them out.
#[tokio::test]
async fn each_server_keeps_its_own_warm_pool() {
    let db = ScratchDatabase::create().await;
    let store = db.config.clone();
    let a = TestServer::with_config(move |c| {
        c.store = store;
        c.sandbox.pool_size = 1;
    })
    .await;
    let pool_label = format!("crogia.test={}", a.fixture.label);
    let pooled = || async {
        a.fixture
            .sandbox
            .find_by_labels(&[&pool_label, "crogia.pool=true"])
            .await
            .unwrap()
            .into_iter()
            .filter(|c| c.running)
            .map(|c| c.id)
            .collect::<Vec<_>>()
    };
    let mut ready = Vec::new();
    for _ in 0..200 {
        ready = pooled().await;
        if !ready.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(ready.len(), 1, "A's pool did not fill");

    let store = db.config.clone();
    let b = TestServer::with_config(move |c| {
        c.store = store;
        c.sandbox.pool_size = 1;
    })
    .await;
    let b_config = b.fixture.config.clone();
    b.stop().await;
    let garbage = crogia_host::session::collect_garbage(&b_config, false)
        .await
        .unwrap();
    assert!(
        garbage.containers.iter().all(|c| !ready.contains(&c.id)),
        "B's gc took A's pool container: {:?}",
        garbage.containers
    );
    assert_eq!(pooled().await, ready, "A's ready container is gone");
    let (status, s) = a.post("/api/sessions", json!({})).await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["container_id"].as_str(), Some(ready[0].as_str()));
}
