//! A server's life: graceful shutdown on SIGTERM, nothing acknowledged lost
//! on SIGKILL, refusing to listen publicly without auth, everything intact
//! after a restart, the warm pool, and many sessions created at once.

use std::collections::BTreeSet;
use std::time::Duration;

use crogia_tests::model::{Reply, ScriptedModel};
use crogia_tests::process::{ServerProcess, binary, free_port};
use crogia_tests::{TestSandbox, TestServer, WsClient, WsRead};
use serde_json::{Value, json};

fn fixture(model: &ScriptedModel) -> TestSandbox {
    let base_url = model.base_url.clone();
    let mut t = TestSandbox::with_config(move |c| {
        c.model.base_url = base_url;
        c.model.model = "scripted".into();
    });
    t.config.server.data_dir = t.tmp.path().join("data");
    t
}

async fn post(base: &str, path: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn get(base: &str, path: &str) -> Value {
    reqwest::get(format!("{base}{path}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn ws_url(base: &str, id: &str, since: Option<u64>) -> String {
    let mut url = format!("{}/ws/{id}", base.replacen("http", "ws", 1));
    if let Some(s) = since {
        url.push_str(&format!("?since={s}"));
    }
    url
}

#[tokio::test]
async fn sigterm_interrupts_running_tasks_records_it_and_exits_cleanly() {
    // Longer than any test could take: the model never answers in time.
    let model = ScriptedModel::start(vec![Reply::Delay(
        Duration::from_secs(3600),
        Box::new(Reply::Text("never".into())),
    )])
    .await;
    let t = fixture(&model);
    let mut server = ServerProcess::spawn(&t.config).await;
    let id = post(&server.base, "/api/sessions", json!({})).await["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ws = WsClient::connect(&ws_url(&server.base, &id, None)).await;
    post(
        &server.base,
        &format!("/api/sessions/{id}/tasks"),
        json!({"task": "long"}),
    )
    .await;
    assert_eq!(ws.event().await["type"], "task_started");

    server.signal("TERM");
    let status = server.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status}");
    let tail = ws.until_completed(1).await;
    assert_eq!(tail[0]["type"], "error");
    assert_eq!(tail[1]["status"], "interrupted");
    assert!(matches!(
        ws.read(Duration::from_secs(5)).await,
        WsRead::Closed(Some(1001), _) | WsRead::Closed(None, _)
    ));

    let server = ServerProcess::spawn(&t.config).await;
    let mut replay = WsClient::connect(&ws_url(&server.base, &id, Some(0))).await;
    let all = replay.until_completed(1).await;
    let types: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
    // The session's first checkpoint; none after an interrupted task.
    assert_eq!(
        types,
        [
            "checkpoint_created",
            "task_started",
            "error",
            "task_completed"
        ]
    );
}

#[tokio::test]
async fn after_sigkill_nothing_acknowledged_is_lost() {
    let pieces: Vec<String> = (0..10).map(|i| format!("part {i} ")).collect();
    let model = ScriptedModel::start(vec![Reply::Stall(pieces)]).await;
    let t = fixture(&model);
    let mut server = ServerProcess::spawn(&t.config).await;
    let base = server.base.clone();
    let created = post(&base, "/api/sessions", json!({})).await;
    let id = created["session_id"].as_str().unwrap().to_string();
    post(
        &base,
        &format!("/api/sessions/{id}/files/content"),
        json!({"path": "kept.txt", "content": "acknowledged"}),
    )
    .await;
    let process = post(
        &base,
        &format!("/api/sessions/{id}/processes"),
        json!({"cmd": "echo before the crash; sleep 600"}),
    )
    .await;
    let mut ws = WsClient::connect(&ws_url(&base, &id, Some(0))).await;
    post(
        &base,
        &format!("/api/sessions/{id}/tasks"),
        json!({"task": "stream then hang"}),
    )
    .await;
    // Acknowledged: what the client has received.
    let mut received = Vec::new();
    while received
        .iter()
        .filter(|e: &&Value| e["type"] == "text_delta")
        .count()
        < 10
    {
        received.push(ws.event().await);
    }

    server.signal("KILL");
    server.wait(Duration::from_secs(10)).await;

    let server = ServerProcess::spawn(&t.config).await;
    let base = server.base.clone();
    let session = get(&base, &format!("/api/sessions/{id}")).await;
    assert_eq!(session["container_id"], created["container_id"]);
    assert_eq!(session["status"], "active");
    assert_eq!(
        get(
            &base,
            &format!("/api/sessions/{id}/files/content?path=kept.txt")
        )
        .await["content"],
        "acknowledged"
    );
    let processes = get(&base, &format!("/api/sessions/{id}/processes")).await;
    assert_eq!(processes[0]["pid"], process["pid"]);
    assert_eq!(processes[0]["status"], "running");
    // Its log, kept by the agent inside the container, is whole.
    let pid = process["pid"].as_u64().unwrap();
    assert_eq!(
        get(&base, &format!("/api/sessions/{id}/processes/{pid}/logs")).await["logs"],
        "before the crash\n"
    );
    let mut replay = WsClient::connect(&ws_url(&base, &id, Some(0))).await;
    let stored = replay.until_completed(1).await;
    assert_eq!(
        stored[..received.len()],
        received[..],
        "acknowledged events changed or went missing"
    );
    // The task the crash cut short is recorded as interrupted.
    let ending: Vec<&str> = stored[received.len()..]
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(ending, ["error", "task_completed"]);
    assert_eq!(stored.last().unwrap()["status"], "interrupted");
}

#[tokio::test]
async fn a_public_address_without_tokens_is_refused_unless_insecure() {
    let t = TestSandbox::new();
    let config_path = t.tmp.path().join("crogia.toml");
    let mut config = t.config.clone();
    config.server.data_dir = t.tmp.path().join("data");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
    let port = free_port();
    let out = tokio::process::Command::new(binary())
        .args(["serve", "--config"])
        .arg(&config_path)
        .args(["--bind", &format!("0.0.0.0:{port}")])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to listen on 0.0.0.0"), "{stderr}");

    let mut child = tokio::process::Command::new(binary())
        .args(["serve", "--insecure", "--config"])
        .arg(&config_path)
        .args(["--bind", &format!("0.0.0.0:{port}")])
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..300 {
        if reqwest::get(format!("http://127.0.0.1:{port}/api/health"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().await.unwrap();
    assert!(up, "--insecure did not start the server");
}
#[tokio::test]
async fn fifty_sessions_created_at_once_all_succeed() {
    let server = TestServer::start().await;
    let creates =
        (0..50).map(|i| server.post("/api/sessions", json!({"task": format!("task {i}")})));
    let results = futures_util::future::join_all(creates).await;
    let mut ids = BTreeSet::new();
    for (status, body) in &results {
        assert_eq!(*status, 200, "{body}");
        ids.insert(body["session_id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 50);
    let (_, list) = server.get("/api/sessions").await;
    assert_eq!(list.as_array().unwrap().len(), 50);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "active")
    );
}

#[tokio::test]
async fn after_a_restart_sessions_files_processes_and_containers_are_intact() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    server
        .post(
            &format!("/api/sessions/{id}/tasks"),
            json!({"task": "remember me"}),
        )
        .await;
    // The task's last events (its checkpoint, then `task_completed`) are
    // written before the snapshot below, not while it is taken.
    ws.until_completed(1).await;
    server
        .post(
            &format!("/api/sessions/{id}/files/content"),
            json!({"path": "notes.txt", "content": "kept"}),
        )
        .await;
    let (_, p) = server
        .post(
            &format!("/api/sessions/{id}/processes"),
            json!({"cmd": "sleep 300"}),
        )
        .await;
    let before = server.get(&format!("/api/sessions/{id}")).await.1;
    let procs_before = server.get(&format!("/api/sessions/{id}/processes")).await.1;

    let fixture = server.stop().await;
    let server = TestServer::start_with(fixture).await;

    let after = server.get(&format!("/api/sessions/{id}")).await.1;
    assert_eq!(after, before);
    assert_eq!(after["container_id"], before["container_id"]);
    assert_eq!(after["last_task"], "remember me");
    assert_eq!(
        server
            .get(&format!("/api/sessions/{id}/files/content?path=notes.txt"))
            .await
            .1["content"],
        "kept"
    );
    let procs_after = server.get(&format!("/api/sessions/{id}/processes")).await.1;
    assert_eq!(procs_after, procs_before);
    assert_eq!(procs_after[0]["pid"], p["pid"]);
    assert_eq!(procs_after[0]["status"], "running");
}

#[tokio::test]
async fn the_warm_pool_hands_out_ready_containers_once_and_refills() {
    let server = TestServer::with_config(|c| c.sandbox.pool_size = 2).await;
    let label = format!("crogia.test={}", server.fixture.label);
    let pooled = |server: &TestServer| {
        let sandbox = server.fixture.sandbox.clone();
        let label = label.clone();
        async move {
            sandbox
                .find_by_labels(&[&label, "crogia.pool=true"])
                .await
                .unwrap()
        }
    };
    let mut ready = Vec::new();
    for _ in 0..100 {
        ready = pooled(&server).await;
        if ready.len() == 2 && ready.iter().all(|c| c.running) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready.len(), 2, "the pool did not fill");
    let ready_ids: BTreeSet<String> = ready.iter().map(|c| c.id.clone()).collect();

    let mut handed_out = BTreeSet::new();
    for _ in 0..3 {
        let (status, s) = server.post("/api/sessions", json!({})).await;
        assert_eq!(status, 200, "{s}");
        assert_eq!(s["container_status"], "running");
        assert!(
            handed_out.insert(s["container_id"].as_str().unwrap().to_string()),
            "a container was handed out twice"
        );
    }
    assert!(
        handed_out.iter().filter(|c| ready_ids.contains(*c)).count() >= 1,
        "no session came from the pool"
    );

    // It refills to its size with fresh containers.
    let mut refilled = Vec::new();
    for _ in 0..100 {
        refilled = pooled(&server)
            .await
            .into_iter()
            .filter(|c| !handed_out.contains(&c.id))
            .collect::<Vec<_>>();
        if refilled.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(refilled.len(), 2);

    // A restart discards unused pool containers and fills a new pool; the
    // sessions keep theirs.
    let fixture = server.stop().await;
    let server = TestServer::start_with(fixture).await;
    let sessions = server.get("/api/sessions").await.1;
    assert_eq!(sessions.as_array().unwrap().len(), 3);
    for _ in 0..100 {
        let now: BTreeSet<String> = pooled(&server).await.into_iter().map(|c| c.id).collect();
        let unused: Vec<_> = now.iter().filter(|c| !handed_out.contains(*c)).collect();
        if unused.len() == 2 && refilled.iter().all(|old| !now.contains(&old.id)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the restarted server did not replace the stale pool");
}
