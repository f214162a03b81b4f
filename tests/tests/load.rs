//! Load: 100 WebSocket clients on one session during a task (with two
//! hostile ones among them: one sending huge frames, one never reading), and
//! 50 sessions running shell commands at once — no errors, and afterwards
//! nothing leaked: containers, processes in them, tasks, subscribers, file
//! descriptors.
//!
//! The workload runs twice. Pools (HTTP keep-alive, the database, the engine
//! connection) grow to their working size in the first round; a leak is what
//! the second round adds on top. (A process of its own, so the counts are
//! this test's alone.)

use std::time::Duration;

use crogia_tests::model::{Reply, ScriptedModel};
use crogia_tests::{TestServer, server_with_model};
use serde_json::json;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Polls until `f` holds or 20 s pass; returns whether it held.
async fn settles(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

fn descriptor_kinds() -> std::collections::BTreeMap<String, usize> {
    let mut kinds = std::collections::BTreeMap::new();
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let target = std::fs::read_link(e.path())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        *kinds
            .entry(target.split(':').next().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    kinds
}

async fn workload(server: &TestServer, model: &ScriptedModel) {
    let label = format!("crogia.test={}", server.fixture.label);
    model.push([Reply::Pieces(
        (0..300).map(|i| format!("token{i} ")).collect(),
    )]);
    let first = server.session().await;

    // 100 WebSocket clients on one session during a task.
    let mut clients = Vec::new();
    for _ in 0..100 {
        clients.push(server.ws(&first, None).await);
    }
    let events = server.state.sessions.get(&first).unwrap().events.clone();
    // The server subscribes each connection just after its handshake.
    assert!(
        settles(|| events.subscribers() == 100).await,
        "only {} subscribed",
        events.subscribers()
    );
    // Two hostile clients: one sends a huge frame, one never reads again.
    let url = format!("{}/ws/{first}", server.base.replacen("http", "ws", 1));
    let (mut flooder, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    {
        use futures_util::SinkExt;
        let _ = flooder
            .send(tokio_tungstenite::tungstenite::Message::Binary(
                vec![b'x'; 16 << 20].into(),
            ))
            .await;
    }
    let silent = server.ws(&first, None).await;
    server
        .post(
            &format!("/api/sessions/{first}/tasks"),
            json!({"task": "talk to everyone"}),
        )
        .await;
    let streams =
        futures_util::future::join_all(clients.iter_mut().map(|c| c.until_completed(1))).await;
    // The flooder was cut off.
    {
        use futures_util::StreamExt;
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match flooder.next().await {
                    None | Some(Err(_)) => return,
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) => return,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(end.is_ok(), "a client sending a 16 MiB frame was kept");
    }
    for stream in &streams {
        // The task's start, 300 pieces, its checkpoint and its end.
        assert_eq!(stream.len(), 303);
        assert_eq!(stream, &streams[0]);
        let first_seq = stream[0]["seq"].as_u64().unwrap();
        for (i, e) in stream.iter().enumerate() {
            assert_eq!(e["seq"], first_seq + i as u64);
        }
    }
    drop(clients);
    // The silent client is still held open here: the server dropped it for
    // never answering its pings.
    assert!(
        settles(|| events.subscribers() == 0).await,
        "WebSocket subscribers leaked ({} left)",
        events.subscribers()
    );
    drop(silent);
    drop(events);
    assert!(!server.state.agent.is_busy(&first));

    // 50 sessions doing shell calls at once.
    let created =
        futures_util::future::join_all((0..50).map(|_| server.post("/api/sessions", json!({}))))
            .await;
    let ids: Vec<String> = created
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 200, "{body}");
            body["session_id"].as_str().unwrap().to_string()
        })
        .collect();
    for round in 0..3 {
        let calls = ids.iter().map(|id| async move {
            server
                .post(
                    &format!("/api/sessions/{id}/shell"),
                    json!({"cmd": format!("echo {id}-{round}")}),
                )
                .await
        });
        for (i, (status, out)) in futures_util::future::join_all(calls)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(status, 200, "{out}");
            assert_eq!(out["stdout"], format!("{}-{round}\n", ids[i]));
        }
    }
    // No exec left running inside the containers.
    for id in ids.iter().take(5) {
        let out = server
            .post(
                &format!("/api/sessions/{id}/shell"),
                json!({"cmd": "ps -eo comm= | sort | uniq -c"}),
            )
            .await
            .1;
        let ps = out["stdout"].as_str().unwrap();
        assert!(!ps.contains("echo"), "{ps}");
        // The agent's init, its server and the one bridge the server's link
        // runs through: one link per container, however many calls.
        assert!(ps.lines().any(|l| l.trim() == "3 crogia-agent"), "{ps}");
    }
    assert_eq!(
        server
            .fixture
            .sandbox
            .find_by_labels(&[&label])
            .await
            .unwrap()
            .len(),
        51
    );

    // Delete everything: no container left.
    let deletes = ids
        .iter()
        .chain(std::iter::once(&first))
        .map(|id| async move { server.delete(&format!("/api/sessions/{id}")).await });
    for (status, body) in futures_util::future::join_all(deletes).await {
        assert_eq!(status, 200, "{body}");
    }
    assert!(
        server
            .fixture
            .sandbox
            .find_by_labels(&[&label])
            .await
            .unwrap()
            .is_empty(),
        "containers leaked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_and_sessions_at_once_work_and_leak_nothing() {
    let model = ScriptedModel::start(Vec::new()).await;
    let server = server_with_model(&model, |c| {
        c.sandbox.pids_limit = 128;
        // A client that never answers a ping is dropped within seconds.
        c.server.ws_ping_secs = 1;
        c.server.ws_pong_timeout_secs = 10;
    })
    .await;

    workload(&server, &model).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (fds, tasks) = (open_fds(), alive_tasks());

    workload(&server, &model).await;
    let fds_ok = settles(|| open_fds() <= fds + 8).await;
    assert!(
        fds_ok,
        "file descriptors leaked: {fds} -> {} ({:?})",
        open_fds(),
        descriptor_kinds()
    );
    let tasks_ok = settles(|| alive_tasks() <= tasks + 4).await;
    assert!(tasks_ok, "tasks leaked: {tasks} -> {}", alive_tasks());
}
