//! The workspace through the sandbox agent (issue 16): what code in a
//! container can put in its workspace (FIFOs, files swapped for FIFOs,
//! ignore files that are links to devices, directories swapped for
//! symlinks) cannot block, bloat or mislead the server, because the server
//! opens none of it: the agent inside the container does, and refuses
//! special files without waiting on them. Each test is one of the issue's
//! reproductions, against a real server and container.

use std::time::Duration;

use crogia_tests::TestServer;
use serde_json::json;

/// A liveness bound: a blocked read would never answer at all. Not a speed
/// assertion; these answers take milliseconds.
const HANG: Duration = Duration::from_secs(60);

async fn shell(server: &TestServer, id: &str, cmd: &str) -> serde_json::Value {
    let (status, out) = server
        .post(&format!("/api/sessions/{id}/shell"), json!({"cmd": cmd}))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["exit_code"], 0, "{cmd}: {out}");
    out
}

async fn background(server: &TestServer, id: &str, cmd: &str) {
    let (status, out) = server
        .post(
            &format!("/api/sessions/{id}/processes"),
            json!({"cmd": cmd}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
}

/// The pid and resident size (KiB) of the agent's server in the container.
async fn agent_server(server: &TestServer, id: &str) -> (u32, u64) {
    let out = shell(server, id, "ps -eo pid=,rss=,args=").await;
    let stdout = out["stdout"].as_str().unwrap();
    let line = stdout
        .lines()
        .find(|l| l.contains("crogia-agent serve"))
        .unwrap_or_else(|| panic!("no agent server in:\n{stdout}"));
    let mut fields = line.split_whitespace();
    let pid = fields.next().unwrap().parse().unwrap();
    let rss = fields.next().unwrap().parse().unwrap();
    (pid, rss)
}

async fn health_answers(server: &TestServer) {
    let (status, body) = tokio::time::timeout(HANG, server.get("/api/health"))
        .await
        .expect("the server stopped answering");
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn forty_parallel_reads_of_a_fifo_are_refused_at_once_and_nothing_else_waits() {
    let server = TestServer::start().await;
    let id = server.session().await;
    shell(&server, &id, "mkfifo pipe").await;
    let path = format!("/api/sessions/{id}/files/content?path=pipe");
    let reads = (0..40).map(|_| server.get(&path));
    let answers = tokio::time::timeout(HANG, futures_util::future::join_all(reads))
        .await
        .expect("a read of the FIFO blocked");
    for (status, body) in answers {
        assert_eq!(status, 409, "{body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("not a regular file"),
            "{body}"
        );
    }
    // The FIFO is still there, unread, and files work as ever, here and in
    // another session.
    let (status, listing) = server
        .get(&format!("/api/sessions/{id}/files?path=."))
        .await;
    assert_eq!(status, 200, "{listing}");
    let other = server.session().await;
    for session in [&id, &other] {
        let (status, body) = server
            .post(
                &format!("/api/sessions/{session}/files/content"),
                json!({"path": "ok.txt", "content": "fine"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = server
            .get(&format!(
                "/api/sessions/{session}/files/content?path=ok.txt"
            ))
            .await;
        assert_eq!((status, body["content"].as_str()), (200, Some("fine")));
    }
    health_answers(&server).await;
}

#[tokio::test]
async fn a_file_swapped_with_a_fifo_under_concurrent_reads_blocks_nothing() {
    let server = TestServer::start().await;
    let id = server.session().await;
    background(
        &server,
        &id,
        // `target` always exists, swapped atomically between a FIFO and a
        // whole regular file.
        "while true; do mkfifo t.fifo; mv -f t.fifo target; echo data > t.file; mv -f t.file target; done",
    )
    .await;
    shell(&server, &id, "while [ ! -e target ]; do sleep 0.05; done").await;
    let mut seen_fifo = 0;
    let mut seen_file = 0;
    let readers = (0..8).map(|_| async {
        let mut answers = Vec::new();
        for _ in 0..25 {
            answers.push(
                server
                    .get(&format!("/api/sessions/{id}/files/content?path=target"))
                    .await,
            );
        }
        answers
    });
    let all = tokio::time::timeout(HANG, futures_util::future::join_all(readers))
        .await
        .expect("a read blocked on the swapped-in FIFO");
    for (status, body) in all.into_iter().flatten() {
        match status {
            200 => {
                assert_eq!(body["content"], "data\n");
                seen_file += 1;
            }
            409 => seen_fifo += 1,
            _ => panic!("unexpected answer {status}: {body}"),
        }
    }
    assert!(seen_file + seen_fifo > 0, "every read missed both");
    health_answers(&server).await;
}

#[tokio::test]
async fn ignore_files_linked_to_dev_zero_or_made_fifos_are_passed_over_by_searches() {
    let server = TestServer::start().await;
    let id = server.session().await;
    shell(
        &server,
        &id,
        "mkdir -p a b c && echo needle > a/one.py && echo needle > b/two.py \
         && echo needle > c/three.py && ln -s /dev/zero .ignore \
         && ln -s ../../../../../../dev/zero a/.gitignore && mkfifo b/.ignore \
         && mkfifo c/.gitignore",
    )
    .await;
    let agent_before = agent_server(&server, &id).await;
    let files_path = format!("/api/sessions/{id}/search/files");
    let files = server.post(&files_path, json!({"pattern": "*.py"}));
    let (status, body) = tokio::time::timeout(HANG, files)
        .await
        .expect("search hung");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["matches"],
        json!(["a/one.py", "b/two.py", "c/three.py"])
    );
    let grep_path = format!("/api/sessions/{id}/search/grep");
    let grep = server.post(&grep_path, json!({"pattern": "needle"}));
    let (status, body) = tokio::time::timeout(HANG, grep).await.expect("grep hung");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["matches"].as_array().unwrap().len(), 3, "{body}");
    // The same agent process answered throughout (none was killed for
    // running out of memory and restarted), and it stays small.
    let (pid, rss_kib) = agent_server(&server, &id).await;
    assert_eq!(pid, agent_before.0, "the agent was restarted");
    assert!(
        rss_kib < 64 * 1024,
        "the agent holds {rss_kib} KiB after the searches"
    );
    health_answers(&server).await;
}

#[tokio::test]
async fn a_directory_swapped_for_a_symlink_during_searches_never_yields_a_name_from_outside() {
    let server = TestServer::start().await;
    let id = server.session().await;
    shell(&server, &id, "mkdir -p dir && echo inside > dir/a.txt").await;
    background(
        &server,
        &id,
        "while true; do mv dir dir.x; ln -s /etc dir; rm dir; mv dir.x dir; done",
    )
    .await;
    let allowed = ["dir/a.txt", "dir.x/a.txt"];
    for _ in 0..100 {
        let (status, body) = server
            .post(
                &format!("/api/sessions/{id}/search/files"),
                json!({"pattern": "*"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        for m in body["matches"].as_array().unwrap() {
            assert!(
                allowed.contains(&m.as_str().unwrap()),
                "a search named {m}, from outside the workspace"
            );
        }
        // Contents too: /etc/passwd holds "root:", the workspace does not.
        let (status, body) = server
            .post(
                &format!("/api/sessions/{id}/search/grep"),
                json!({"pattern": "root:"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["matches"], json!([]), "grep read a file from outside");
    }
    health_answers(&server).await;
}

/// The next `file_changed` event on `ws`, skipping others.
async fn next_change(ws: &mut crogia_tests::WsClient) -> serde_json::Value {
    loop {
        let event = tokio::time::timeout(HANG, ws.event())
            .await
            .expect("no file_changed event came");
        if event["type"] == "file_changed" {
            return event;
        }
    }
}

#[tokio::test]
async fn workspace_changes_reach_websocket_clients_and_a_flood_stays_a_few_events() {
    let server = TestServer::with_config(|c| c.workspace.file_events = true).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    // Give the watch a moment to start inside the container.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, body) = server
        .post(
            &format!("/api/sessions/{id}/files/content"),
            json!({"path": "notes.txt", "content": "hello"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let e = next_change(&mut ws).await;
    assert_eq!(
        (e["path"].as_str(), e["kind"].as_str()),
        (Some("notes.txt"), Some("created")),
        "{e}"
    );
    shell(&server, &id, "rm notes.txt").await;
    let e = next_change(&mut ws).await;
    assert_eq!(
        (e["path"].as_str(), e["kind"].as_str()),
        (Some("notes.txt"), Some("deleted")),
        "{e}"
    );

    // A build writing 10,000 files, then one more file once it is done.
    shell(
        &server,
        &id,
        "mkdir -p build && i=0; while [ $i -lt 10000 ]; do : > build/f$i.o; i=$((i+1)); done",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    shell(&server, &id, "echo done > done.txt").await;
    let mut during = Vec::new();
    loop {
        let e = next_change(&mut ws).await;
        if e["path"] == "done.txt" {
            break;
        }
        during.push(e);
    }
    assert!(
        !during.is_empty() && during.len() <= 40,
        "{} events for the build: {during:?}",
        during.len()
    );
    for e in &during {
        let path = e["path"].as_str().unwrap();
        assert!(
            path == "build" || path.starts_with("build/") || path == ".",
            "{e}"
        );
    }
}
