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

/// Waits until `server` has heard of session `id` (made on another).
async fn served_by(server: &TestServer, id: &str) {
    for _ in 0..100 {
        if server.get(&format!("/api/sessions/{id}")).await.0 == 200 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("session {id} never reached the other server");
}

/// Reads `ws` until the event for which `is` holds, returning everything
/// read up to and including it.
async fn until(ws: &mut crogia_tests::WsClient, is: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let e = ws.event().await;
        let done = is(&e);
        seen.push(e);
        if done {
            return seen;
        }
    }
}

fn ended(task_id: &str) -> impl Fn(&Value) -> bool + '_ {
    move |e| e["type"] == "task_completed" && e["task_id"] == task_id
}

/// A session's tasks run on the server holding it, one at a time, whoever
/// is asked: a task submitted on B while A runs one waits behind it and
/// then runs on A, and a cancel sent to B stops it there.
#[tokio::test]
async fn tasks_submitted_on_b_run_one_at_a_time_on_the_server_holding_the_session() {
    let db = ScratchDatabase::create().await;
    let model = ScriptedModel::start(vec![
        Reply::Delay(
            std::time::Duration::from_millis(1500),
            Box::new(Reply::Text("first done".into())),
        ),
        Reply::Stall(vec!["second, ".into(), "until cancelled".into()]),
    ])
    .await;
    let store = db.config.clone();
    let a = server_with_model(&model, move |c| c.store = store).await;
    let store = db.config.clone();
    let base_url = model.base_url.clone();
    let b = TestServer::with_config(move |c| {
        c.store = store;
        c.model.base_url = base_url;
    })
    .await;
    let id = a.session().await;
    // B hears of the session, then follows it.
    served_by(&b, &id).await;
    let mut ws = b.ws(&id, Some(0)).await;
    let (status, first) = a
        .post(&format!("/api/sessions/{id}/tasks"), json!({"task": "one"}))
        .await;
    assert_eq!(status, 200, "{first}");
    let first = first["task_id"].as_str().unwrap().to_string();
    let mut events = until(&mut ws, |e| e["type"] == "task_started").await;

    let (status, second) = b
        .post(&format!("/api/sessions/{id}/tasks"), json!({"task": "two"}))
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["position"], 1, "{second}");
    let second = second["task_id"].as_str().unwrap().to_string();
    events.extend(until(&mut ws, ended(&first)).await);
    assert_eq!(events.last().unwrap()["status"], "completed");
    events.extend(
        until(&mut ws, |e| {
            e["type"] == "text_delta" && e["content"] == "until cancelled"
        })
        .await,
    );
    // Cancelled through B, which does not run it.
    let (status, body) = b
        .post(&format!("/api/sessions/{id}/tasks/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    events.extend(until(&mut ws, ended(&second)).await);
    assert_eq!(events.last().unwrap()["status"], "cancelled", "{events:?}");

    // One at a time: the second started after the first ended.
    let at = |ty: &str, task: &str| {
        events
            .iter()
            .position(|e| e["type"] == ty && e["task_id"] == task)
            .unwrap_or_else(|| panic!("no {ty} of {task}: {events:?}"))
    };
    assert!(at("task_started", &second) > at("task_completed", &first));
    assert_eq!(seqs(&events), (1..=events.len() as u64).collect::<Vec<_>>());
    // Both ran on A: B finished none.
    let finished = |m: &str, outcome: &str| {
        m.lines()
            .find(|l| l.starts_with(&format!("crogia_tasks_total{{outcome=\"{outcome}\"}}")))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
    };
    let (on_a, on_b) = (a.metrics().await, b.metrics().await);
    assert_eq!(finished(&on_a, "completed").as_deref(), Some("1"), "{on_a}");
    assert_eq!(finished(&on_a, "cancelled").as_deref(), Some("1"), "{on_a}");
    assert_eq!(finished(&on_b, "completed"), None, "{on_b}");
    assert_eq!(finished(&on_b, "cancelled"), None, "{on_b}");
    b.stop().await;
}

/// `kill -9` of the server running a session's task: once its lease runs
/// out, B takes the session over. The task that was running ends
/// `interrupted`, the one queued behind it runs on B, and B then follows
/// the session's sandbox (its file events) and serves it as its own.
#[tokio::test]
async fn when_server_a_is_killed_mid_task_b_takes_its_sessions_over() {
    use crogia_tests::process::ServerProcess;
    let db = ScratchDatabase::create().await;
    let model = ScriptedModel::start(vec![
        // A's task: never answered before A dies.
        Reply::Delay(
            std::time::Duration::from_secs(3600),
            Box::new(Reply::Text("never".into())),
        ),
        // The queued task, on B.
        Reply::Tools(vec![(
            "write_file".into(),
            json!({"path": "after.txt", "content": "written on B\n"}),
        )]),
        Reply::Text("Wrote after.txt.".into()),
    ])
    .await;
    let lease = |c: &mut crogia_host::config::Config, store: &crogia_host::config::StoreConfig| {
        c.store = store.clone();
        c.store.lease_secs = 2;
        c.workspace.file_events = true;
    };
    let mut a_fixture = crogia_tests::TestSandbox::with_config(|c| {
        lease(c, &db.config);
        c.model.base_url = model.base_url.clone();
        c.model.model = "scripted".into();
    });
    a_fixture.config.server.data_dir = a_fixture.tmp.path().join("data");
    let mut a = ServerProcess::spawn(&a_fixture.config).await;
    let b = server_with_model(&model, |c| lease(c, &db.config)).await;
    let (status, made) = post(&a.base, "/api/sessions", json!({})).await;
    assert_eq!(status, 200, "{made}");
    let id = made["session_id"].as_str().unwrap().to_string();
    served_by(&b, &id).await;
    let mut ws = b.ws(&id, Some(0)).await;
    let (status, running) = post(
        &a.base,
        &format!("/api/sessions/{id}/tasks"),
        json!({"task": "hang"}),
    )
    .await;
    assert_eq!(status, 200, "{running}");
    let running = running["task_id"].as_str().unwrap().to_string();
    until(&mut ws, |e| e["type"] == "task_started").await;
    let (status, queued) = post(
        &a.base,
        &format!("/api/sessions/{id}/tasks"),
        json!({"task": "write after.txt"}),
    )
    .await;
    assert_eq!(
        (status, queued["position"].as_u64()),
        (200, Some(1)),
        "{queued}"
    );
    let queued = queued["task_id"].as_str().unwrap().to_string();

    a.signal("KILL");
    a.wait(std::time::Duration::from_secs(10)).await;

    let events = until(&mut ws, ended(&running)).await;
    let end = events.last().unwrap();
    assert_eq!(end["status"], "interrupted", "{events:?}");
    let said = events
        .iter()
        .find(|e| e["type"] == "error" && e["task_id"] == running.as_str())
        .unwrap_or_else(|| panic!("no error for the interrupted task: {events:?}"));
    assert!(
        said["message"]
            .as_str()
            .unwrap()
            .contains("took the session over"),
        "{said}"
    );
    let events = until(&mut ws, ended(&queued)).await;
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "task_started" && e["task_id"] == queued.as_str()),
        "{events:?}"
    );
    assert_eq!(events.last().unwrap()["status"], "completed", "{events:?}");
    let (status, file) = b
        .get(&format!("/api/sessions/{id}/files/content?path=after.txt"))
        .await;
    assert_eq!(
        (status, file["content"].as_str()),
        (200, Some("written on B\n"))
    );

    // B follows the session's sandbox now: a change is one file event.
    let (status, body) = b
        .post(
            &format!("/api/sessions/{id}/shell"),
            json!({"cmd": "echo x > by-shell.txt"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let changed = until(&mut ws, |e| {
        e["type"] == "file_changed" && e["path"] == "by-shell.txt"
    })
    .await;
    // And B runs its next task itself.
    model.push([Reply::Text("on B".into())]);
    let (status, next) = b
        .post(
            &format!("/api/sessions/{id}/tasks"),
            json!({"task": "again"}),
        )
        .await;
    assert_eq!(
        (status, next["position"].as_u64()),
        (200, Some(0)),
        "{next}"
    );
    let next = next["task_id"].as_str().unwrap().to_string();
    let rest = until(&mut ws, ended(&next)).await;
    assert_eq!(rest.last().unwrap()["status"], "completed", "{rest:?}");
    assert!(
        rest.iter()
            .chain(&changed)
            .filter(|e| e["type"] == "file_changed" && e["path"] == "by-shell.txt")
            .count()
            == 1,
        "{changed:?} {rest:?}"
    );
    drop(a);
    b.stop().await;
}

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Waits until the scripted model has been asked `n` times.
async fn asked(model: &ScriptedModel, n: usize) {
    for _ in 0..400 {
        if model.requests().len() >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "the model was asked {} times, not {n}",
        model.requests().len()
    );
}

/// Fencing in the database: a task's writes are made under the lease its
/// server started it with, so once another server holds the session the
/// database refuses them, even when the server never heard of the
/// takeover (here made in the database alone, with no announcement, and
/// a lease so long that no heartbeat checks meanwhile). The model's late
/// answer asks for a tool: it is never run, nothing of it is recorded,
/// and the task stops there (counted `lost`).
#[tokio::test]
async fn a_task_whose_session_was_taken_over_unheard_writes_nothing_more() {
    let db = ScratchDatabase::create().await;
    let model = ScriptedModel::start(vec![Reply::Delay(
        std::time::Duration::from_secs(3),
        Box::new(Reply::Tools(vec![(
            "write_file".into(),
            json!({"path": "late.txt", "content": "written after the takeover\n"}),
        )])),
    )])
    .await;
    let direct = db.config.clone();
    let a = server_with_model(&model, move |c| {
        c.store = direct;
        c.store.lease_secs = 3600;
    })
    .await;
    let id = a.session().await;
    let mut ws = a.ws(&id, Some(0)).await;
    let (status, body) = a
        .post(
            &format!("/api/sessions/{id}/tasks"),
            json!({"task": "write late.txt"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    until(&mut ws, |e| e["type"] == "task_started").await;
    asked(&model, 1).await;

    // Another server takes the session over; A is not told.
    db.execute(&format!(
        "UPDATE sessions SET server = 'ffffffffffffffff', lease = lease + 1 WHERE id = '{id}'"
    ))
    .await;
    let store = Store::connect(&db.config).await.unwrap();
    let before = store.events_after(&id, 0, 10_000).await.unwrap();

    let mut lost = String::new();
    for _ in 0..300 {
        lost = a.metrics().await;
        if lost.contains("crogia_tasks_total{outcome=\"lost\"} 1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        lost.contains("crogia_tasks_total{outcome=\"lost\"} 1"),
        "A never stopped the task: {lost}"
    );
    let after = store.events_after(&id, 0, 10_000).await.unwrap();
    assert_eq!(after, before, "A recorded events after it lost the lease");
    let (status, file) = a
        .get(&format!("/api/sessions/{id}/files/content?path=late.txt"))
        .await;
    assert_eq!(status, 404, "the late answer's tool ran: {file}");
    assert_eq!(model.requests().len(), 1, "A asked the model again");
    let tasks = store.session_unfinished_tasks(&id).await.unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(
        tasks[0].status,
        crogia_host::store::TaskStatus::Running,
        "A recorded the task's end"
    );
    store.close().await;
}

/// A server cut off from the database for longer than its lease stops its
/// task itself: B takes the session over (the task ends `interrupted`, the
/// queued one runs on B), and when A reaches the database again, the
/// model's late answer to A's task is never recorded, and A learns that B
/// holds the session.
#[tokio::test]
async fn a_server_cut_off_from_the_database_stops_its_task_and_b_takes_over() {
    use crogia_tests::proxy::TcpProxy;
    // When the model answers A's task: long after A's lease ran out and B
    // took over, even on a loaded machine, and after A reached the
    // database again.
    const LATE: std::time::Duration = std::time::Duration::from_secs(20);
    let db = ScratchDatabase::create().await;
    let mut url = reqwest::Url::parse(&db.config.url).unwrap();
    let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let proxy = TcpProxy::start(target.parse().unwrap()).await;
    url.set_port(Some(proxy.port)).unwrap();
    let model = ScriptedModel::start(vec![
        // A's task: answered after A's lease ran out and it reached the
        // database again.
        Reply::Delay(
            LATE,
            Box::new(Reply::Pieces(vec!["late answer to A".into()])),
        ),
        Reply::Text("queued, done on B".into()),
    ])
    .await;
    let (proxied, direct) = (url.to_string(), db.config.clone());
    let a = server_with_model(&model, move |c| {
        c.store = direct.clone();
        c.store.url = proxied;
        c.store.lease_secs = 2;
        c.store.connect_timeout_secs = 1;
    })
    .await;
    let direct = db.config.clone();
    let base_url = model.base_url.clone();
    let b = TestServer::with_config(move |c| {
        c.store = direct;
        c.store.lease_secs = 2;
        c.model.base_url = base_url;
        c.model.model = "scripted".into();
    })
    .await;
    let id = a.session().await;
    served_by(&b, &id).await;
    let mut ws = b.ws(&id, Some(0)).await;
    let (status, running) = a
        .post(
            &format!("/api/sessions/{id}/tasks"),
            json!({"task": "slow"}),
        )
        .await;
    assert_eq!(status, 200, "{running}");
    let running = running["task_id"].as_str().unwrap().to_string();
    until(&mut ws, |e| e["type"] == "task_started").await;
    let (status, queued) = a
        .post(
            &format!("/api/sessions/{id}/tasks"),
            json!({"task": "next"}),
        )
        .await;
    assert_eq!(status, 200, "{queued}");
    let queued = queued["task_id"].as_str().unwrap().to_string();
    // A's task has the slow answer coming (the script answers in order:
    // B's queued task must get the next one).
    asked(&model, 1).await;
    let asked_at = std::time::Instant::now();

    proxy.cut();
    let events = until(&mut ws, ended(&running)).await;
    assert_eq!(
        events.last().unwrap()["status"],
        "interrupted",
        "{events:?}"
    );
    assert!(
        asked_at.elapsed() < LATE - std::time::Duration::from_secs(4),
        "B took over only after {:?}, too late for this test to show anything",
        asked_at.elapsed()
    );
    proxy.restore().await;
    let events = until(&mut ws, ended(&queued)).await;
    assert_eq!(events.last().unwrap()["status"], "completed", "{events:?}");
    // Past the model's answer to A's task, and A's next heartbeats.
    tokio::time::sleep(LATE.saturating_sub(asked_at.elapsed())).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;

    let store = Store::connect(&db.config).await.unwrap();
    let stored = store.events_after(&id, 0, 10_000).await.unwrap();
    store.close().await;
    assert!(
        stored.iter().all(|(_, e)| !e.contains("late answer to A")),
        "A went on with a task B had taken over"
    );
    let (_, on_b) = b.get(&format!("/api/sessions/{id}")).await;
    let mut on_a = Value::Null;
    for _ in 0..50 {
        on_a = a.get(&format!("/api/sessions/{id}")).await.1;
        if on_a["server"] == on_b["server"] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(on_a["server"], on_b["server"], "A never learned B holds it");
    b.stop().await;
}

/// A principal's `max_running_tasks` holds across servers: with one of
/// alice's sessions busy on A, a task for another of hers is refused on
/// B, whether B holds that session or hands it to A. (Each server once
/// counted only its own: both were let in.)
#[tokio::test]
async fn max_running_tasks_counts_a_principals_tasks_on_every_server() {
    use crogia_host::config::{Role, UserConfig};
    use crogia_host::principal::token_sha256;
    use reqwest::Method;
    const ALICE: &str = "alice-token-0123456789abcdef";
    let db = ScratchDatabase::create().await;
    let model = ScriptedModel::start(vec![Reply::Delay(
        std::time::Duration::from_secs(3),
        Box::new(Reply::Text("slow".into())),
    )])
    .await;
    let limited = |c: &mut crogia_host::config::Config| {
        c.auth.tokens = vec!["admin-token-0123456789abcdef".into()];
        c.auth.users = vec![UserConfig {
            name: "alice".into(),
            token_sha256: token_sha256(ALICE),
            role: Role::User,
            max_sessions: None,
            max_running_tasks: Some(1),
            tokens_per_day: None,
        }];
    };
    let direct = db.config.clone();
    let a = server_with_model(&model, move |c| {
        c.store = direct;
        limited(c);
    })
    .await;
    let direct = db.config.clone();
    let b = server_with_model(&model, move |c| {
        c.store = direct;
        limited(c);
    })
    .await;
    let session_on = async |server: &TestServer| {
        let (status, body) = server
            .call_as(ALICE, Method::POST, "/api/sessions", Some(json!({})))
            .await;
        assert_eq!(status, 200, "{body}");
        body["session_id"].as_str().unwrap().to_string()
    };
    let task = async |server: &TestServer, id: &str| {
        server
            .call_as(
                ALICE,
                Method::POST,
                &format!("/api/sessions/{id}/tasks"),
                Some(json!({"task": "work"})),
            )
            .await
    };
    let (busy, also_on_a, on_b) = (
        session_on(&a).await,
        session_on(&a).await,
        session_on(&b).await,
    );
    // B has heard of the session made on A.
    for _ in 0..100 {
        let path = format!("/api/sessions/{also_on_a}");
        if b.call_as(ALICE, Method::GET, &path, None).await.0 == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, body) = task(&a, &busy).await;
    assert_eq!(status, 200, "{body}");
    asked(&model, 1).await;
    for (id, how) in [(&on_b, "held by B"), (&also_on_a, "handed to A")] {
        let (status, body) = task(&b, id).await;
        assert_eq!(status, 429, "{how}: {body}");
        assert_eq!(body["quota"]["name"], "max_running_tasks", "{body}");
        assert_eq!(body["quota"]["used"], 1, "{body}");
    }
    drop(a);
    b.stop().await;
}
