//! The agent loop and the WebSocket stream, with a scripted OpenAI-compatible
//! model over real HTTP, real plugins and a real container.

use std::time::Duration;

use crogia_tests::model::{Reply, ScriptedModel};
use crogia_tests::{TestServer, WsRead, server_with_model};
use serde_json::{Value, json};

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

fn assert_contiguous(events: &[Value], first: u64) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], json!(first + i as u64), "event {i}: {e}");
    }
}

async fn post_task(server: &TestServer, id: &str, task: &str) -> Value {
    let (status, body) = server
        .post(&format!("/api/sessions/{id}/tasks"), json!({"task": task}))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn a_task_drives_real_plugins_and_streams_every_step() {
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![(
            "write_file".into(),
            json!({"path": "app.py", "content": "print('hello from app')\n"}),
        )]),
        Reply::Tools(vec![("shell".into(), json!({"command": "python3 app.py"}))]),
        Reply::Text("Created app.py and ran it.".into()),
    ])
    .await;
    let server = server_with_model(&model, |_| {}).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "Write app.py and run it").await;
    let events = ws.until_completed(1).await;

    assert_eq!(
        types(&events)[..5],
        [
            "task_started",
            "tool_call",
            "tool_complete",
            "tool_call",
            "tool_complete"
        ]
    );
    // The answer, then the task's checkpoint, then its end.
    assert!(
        types(&events)[5..events.len() - 2]
            .iter()
            .all(|t| *t == "text_delta")
    );
    assert_eq!(
        types(&events)[events.len() - 2..],
        ["checkpoint_created", "task_completed"]
    );
    assert_contiguous(&events, events[0]["seq"].as_u64().unwrap());

    let started = &events[0];
    assert_eq!(
        (&started["session_id"], &started["task"]),
        (&json!(id), &json!("Write app.py and run it"))
    );
    let call = &events[1];
    assert_eq!(call["tool_name"], "write_file");
    assert_eq!(
        call["arguments"],
        json!({"path": "app.py", "content": "print('hello from app')\n"})
    );
    let done = &events[2];
    assert_eq!(
        (&done["tool_name"], &done["is_error"], &done["tool_call_id"]),
        (&json!("write_file"), &json!(false), &call["tool_call_id"])
    );
    assert!(done["duration_ms"].is_u64());
    assert!(
        events[4]["result"]
            .as_str()
            .unwrap()
            .contains("hello from app"),
        "{}",
        events[4]
    );
    let text: String = events
        .iter()
        .filter(|e| e["type"] == "text_delta")
        .map(|e| e["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Created app.py and ran it.");
    let completed = events.last().unwrap();
    assert_eq!(
        (
            &completed["status"],
            &completed["session_id"],
            &completed["task"]
        ),
        (
            &json!("completed"),
            &json!(id),
            &json!("Write app.py and run it")
        )
    );
    assert_eq!(
        completed["usage"],
        json!({"prompt_tokens": 30, "completion_tokens": 15, "total_tokens": 45})
    );
    for e in &events {
        assert!(e["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    // The file is really in the workspace.
    let (_, file) = server
        .get(&format!("/api/sessions/{id}/files/content?path=app.py"))
        .await;
    assert_eq!(file["content"], "print('hello from app')\n");
    // The model got the tools with their schemas, and the tool results.
    let requests = model.requests();
    let tools: Vec<&str> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(
        tools.contains(&"write_file") && tools.contains(&"shell"),
        "{tools:?}"
    );
    let last = requests[2]["messages"].as_array().unwrap();
    assert_eq!(last.last().unwrap()["role"], "tool");
    assert!(
        last.last().unwrap()["content"]
            .as_str()
            .unwrap()
            .contains("hello from app")
    );
}

#[tokio::test]
async fn several_tool_calls_in_one_turn_run_in_order() {
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![
            (
                "write_file".into(),
                json!({"path": "a.txt", "content": "first"}),
            ),
            (
                "edit_file".into(),
                json!({"path": "a.txt", "old_text": "first", "new_text": "second"}),
            ),
            ("read_file".into(), json!({"path": "missing.txt"})),
        ]),
        Reply::Text("ok".into()),
    ])
    .await;
    let server = server_with_model(&model, |_| {}).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "edit").await;
    let events = ws.until_completed(1).await;
    let calls: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "tool_complete")
        .collect();
    assert_eq!(
        calls
            .iter()
            .map(|c| c["tool_name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["write_file", "edit_file", "read_file"]
    );
    assert_eq!(calls[2]["is_error"], true);
    assert!(
        calls[2]["result"]
            .as_str()
            .unwrap()
            .contains("missing.txt not found")
    );
    assert_eq!(
        server
            .get(&format!("/api/sessions/{id}/files/content?path=a.txt"))
            .await
            .1["content"],
        "second"
    );
}

#[tokio::test]
async fn replay_with_since_has_no_gap_and_no_duplicate_while_events_arrive() {
    let pieces: Vec<String> = (0..300).map(|i| format!("w{i} ")).collect();
    let model = ScriptedModel::start(vec![Reply::Pieces(pieces)]).await;
    let server = server_with_model(&model, |_| {}).await;
    let id = server.session().await;
    let mut early = server.ws(&id, Some(0)).await;
    post_task(&server, &id, "talk").await;
    // Read a few, then connect a second client from the middle while the
    // model keeps streaming.
    let mut first = Vec::new();
    for _ in 0..40 {
        first.push(early.event().await);
    }
    let resume_from = first[20]["seq"].as_u64().unwrap();
    let mut late = server.ws(&id, Some(resume_from)).await;
    let mut rest = early.until_completed(1).await;
    first.append(&mut rest);
    let late_events = late.until_completed(1).await;
    assert_contiguous(&first, 1);
    assert_contiguous(&late_events, resume_from + 1);
    assert_eq!(late_events.last(), first.last());
    // The session's first checkpoint, the task's start, 300 pieces, the
    // task's checkpoint and its end.
    assert_eq!(first.len(), 1 + 300 + 3);
}

#[tokio::test]
async fn two_live_clients_see_the_same_events() {
    let model = ScriptedModel::start(vec![Reply::Text("one two three four".into())]).await;
    let server = server_with_model(&model, |_| {}).await;
    let id = server.session().await;
    let mut a = server.ws(&id, None).await;
    let mut b = server.ws(&id, None).await;
    post_task(&server, &id, "count").await;
    let ea = a.until_completed(1).await;
    let eb = b.until_completed(1).await;
    assert_eq!(ea, eb);
    assert!(ea.len() >= 4);
}

#[tokio::test]
async fn cancel_stops_the_running_task_and_the_session_stays_usable() {
    let model = ScriptedModel::start(vec![
        Reply::Delay(
            Duration::from_secs(20),
            Box::new(Reply::Text("too late".into())),
        ),
        Reply::Text("after cancel".into()),
    ])
    .await;
    let server = server_with_model(&model, |_| {}).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "slow one").await;
    assert_eq!(ws.event().await["type"], "task_started");
    let (status, body) = server
        .post(&format!("/api/sessions/{id}/tasks/cancel"), json!({}))
        .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"message": format!("Task cancelled in session {id}")})
        )
    );
    let events = ws.until_completed(1).await;
    assert_eq!(
        types(&events),
        ["checkpoint_created", "error", "task_completed"]
    );
    assert_eq!(events[1]["message"], "The task was cancelled.");
    assert_eq!(events[2]["status"], "cancelled");
    assert_eq!(
        server
            .post(&format!("/api/sessions/{id}/tasks/cancel"), json!({}))
            .await
            .0,
        409
    );

    post_task(&server, &id, "next").await;
    let events = ws.until_completed(1).await;
    assert_eq!(events.last().unwrap()["status"], "completed");
}

#[tokio::test]
async fn a_task_posted_while_one_runs_is_queued_and_runs_after_it() {
    let model = ScriptedModel::start(vec![
        Reply::Delay(
            Duration::from_millis(1500),
            Box::new(Reply::Text("first done".into())),
        ),
        Reply::Text("second done".into()),
    ])
    .await;
    let server = server_with_model(&model, |_| {}).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    let a = post_task(&server, &id, "first").await;
    assert_eq!((&a["queued"], &a["position"]), (&json!(false), &json!(0)));
    assert_eq!(a["message"], format!("Task started in session {id}"));
    let b = post_task(&server, &id, "second").await;
    assert_eq!((&b["queued"], &b["position"]), (&json!(true), &json!(1)));
    assert_eq!(
        b["message"],
        format!("Task queued in session {id} (position 1)")
    );
    let events = ws.until_completed(2).await;
    let marks: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["type"] == "task_started" || e["type"] == "task_completed")
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["task"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = |t: &str, k: &str| (t.to_string(), k.to_string());
    assert_eq!(
        marks,
        [
            expect("task_started", "first"),
            expect("task_completed", "first"),
            expect("task_started", "second"),
            expect("task_completed", "second")
        ]
    );
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried() {
    let model = ScriptedModel::start(vec![
        Reply::Status(429),
        Reply::Status(500),
        Reply::Broken,
        Reply::Text("made it".into()),
    ])
    .await;
    let server = server_with_model(&model, |_| {}).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "persist").await;
    let events = ws.until_completed(1).await;
    assert_eq!(events.last().unwrap()["status"], "completed");
    assert!(!types(&events).contains(&"error"));
    assert_eq!(model.requests().len(), 4);
}

#[tokio::test]
async fn a_model_that_keeps_failing_ends_the_task_with_an_error_and_the_session_recovers() {
    let model = ScriptedModel::start(vec![Reply::Status(503), Reply::Status(503)]).await;
    let server = server_with_model(&model, |c| c.agent.max_retries = 1).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "doomed").await;
    let events = ws.until_completed(1).await;
    assert_eq!(
        types(&events),
        [
            "task_started",
            "checkpoint_created",
            "error",
            "task_completed"
        ]
    );
    let message = events[2]["message"].as_str().unwrap();
    assert!(
        message.contains("failed after 2 attempts") && message.contains("503"),
        "{message}"
    );
    assert_eq!(events[3]["status"], "failed");
    // A client error is not retried.
    model.push([Reply::Status(400)]);
    post_task(&server, &id, "bad request").await;
    let events = ws.until_completed(1).await;
    assert!(events[2]["message"].as_str().unwrap().contains("400"));
    assert_eq!(model.requests().len(), 3);
    // The session still works.
    model.push([Reply::Text("fine".into())]);
    post_task(&server, &id, "again").await;
    assert_eq!(
        ws.until_completed(1).await.last().unwrap()["status"],
        "completed"
    );
}

#[tokio::test]
async fn a_slow_model_request_times_out_and_is_retried() {
    let model = ScriptedModel::start(vec![
        Reply::Delay(Duration::from_secs(5), Box::new(Reply::Text("late".into()))),
        Reply::Text("on time".into()),
    ])
    .await;
    let server = server_with_model(&model, |c| c.agent.request_timeout_secs = 1).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "hurry").await;
    let events = ws.until_completed(1).await;
    let text: String = events
        .iter()
        .filter(|e| e["type"] == "text_delta")
        .map(|e| e["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "on time");
}

#[tokio::test]
async fn without_a_model_a_task_fails_at_once_saying_how_to_configure_one() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "anything").await;
    let events = ws.until_completed(1).await;
    assert_eq!(
        types(&events),
        [
            "task_started",
            "checkpoint_created",
            "error",
            "task_completed"
        ]
    );
    let message = events[2]["message"].as_str().unwrap();
    assert!(
        message.starts_with("No model is configured") && message.contains("base_url"),
        "{message}"
    );
    assert_eq!(events[3]["status"], "failed");
    assert_eq!(server.get("/api/health").await.0, 200);
    assert_eq!(
        server
            .post(&format!("/api/sessions/{id}/shell"), json!({"cmd": "true"}))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn a_later_task_continues_the_conversation_even_after_a_restart() {
    let model = ScriptedModel::start(vec![
        Reply::Text("The answer is 42.".into()),
        Reply::Text("You asked about 42.".into()),
    ])
    .await;
    let server = server_with_model(&model, |_| {}).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "What is the answer?").await;
    ws.until_completed(1).await;
    drop(ws);
    // The conversation is in the store, not only in memory.
    let fixture = server.stop().await;
    let server = TestServer::start_with(fixture).await;
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "What did I ask?").await;
    ws.until_completed(1).await;
    let second = &model.requests()[1]["messages"];
    let roles: Vec<&str> = second
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(second[1]["content"], "What is the answer?");
    assert_eq!(second[2]["content"], "The answer is 42.");
    assert_eq!(second[3]["content"], "What did I ask?");
    assert!(
        second[0]["content"]
            .as_str()
            .unwrap()
            .contains("/workspace")
    );
}

#[tokio::test]
async fn a_session_created_with_a_task_starts_working_on_it() {
    let model = ScriptedModel::start(vec![Reply::Text("on it".into())]).await;
    let server = server_with_model(&model, |_| {}).await;
    let (_, created) = server
        .post("/api/sessions", json!({"task": "from the start"}))
        .await;
    let id = created["session_id"].as_str().unwrap();
    let mut ws = server.ws(id, Some(0)).await;
    let events = ws.until_completed(1).await;
    // The empty workspace's checkpoint comes first, then the task.
    assert_eq!(events[0]["type"], "checkpoint_created");
    assert_eq!(events[0]["task_id"], json!(null));
    assert_eq!(events[1]["type"], "task_started");
    assert_eq!(events[1]["task"], "from the start");
}

#[tokio::test]
async fn unknown_session_websocket_is_closed_with_4004() {
    let server = TestServer::start().await;
    let mut ws = server.ws("00000000", None).await;
    match ws.read(Duration::from_secs(10)).await {
        WsRead::Closed(code, reason) => {
            assert_eq!(code, Some(4004));
            assert_eq!(reason, "Session not found");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_client_too_far_behind_is_told_and_closed_while_others_get_everything() {
    // Large deltas fill the slow client's socket quickly; it never reads.
    let pieces: Vec<String> = (0..120)
        .map(|i| format!("{i}:{}", "x".repeat(64 * 1024)))
        .collect();
    let model = ScriptedModel::start(vec![Reply::Pieces(pieces)]).await;
    let server = server_with_model(&model, |c| c.server.ws_buffer_events = 16).await;
    let id = server.session().await;
    let mut slow = server.ws(&id, None).await;
    let mut fast = server.ws(&id, None).await;
    post_task(&server, &id, "flood").await;
    let all = fast.until_completed(1).await;
    // The task's start, 120 pieces, its checkpoint and its end.
    assert_eq!(all.len(), 120 + 3);
    // Now read the slow one: some events, then an error frame and a close.
    let mut last_seq = 0;
    let error = loop {
        match slow.read(Duration::from_secs(30)).await {
            WsRead::Event(e) if e["type"] == "error" => break e,
            WsRead::Event(e) => last_seq = e["seq"].as_u64().unwrap(),
            other => panic!("expected events then an error frame, got {other:?}"),
        }
    };
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("Client too slow"),
        "{error}"
    );
    assert_eq!(error["resume_since"], json!(last_seq));
    match slow.read(Duration::from_secs(10)).await {
        WsRead::Closed(code, _) => assert_eq!(code, Some(4008)),
        other => panic!("{other:?}"),
    }
    // It can resume where it stopped and get the rest.
    let mut resumed = server.ws(&id, Some(last_seq)).await;
    let rest = resumed.until_completed(1).await;
    assert_eq!(rest.first().unwrap()["seq"], json!(last_seq + 1));
    assert_eq!(rest.last(), all.last());
}

#[tokio::test]
async fn deleting_a_session_closes_its_websockets() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    server.delete(&format!("/api/sessions/{id}")).await;
    match ws.read(Duration::from_secs(10)).await {
        WsRead::Closed(code, reason) => {
            assert_eq!((code, reason.as_str()), (Some(4004), "Session deleted"))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn stopping_the_server_marks_the_running_task_interrupted() {
    let model = ScriptedModel::start(vec![Reply::Delay(
        Duration::from_secs(30),
        Box::new(Reply::Text("never".into())),
    )])
    .await;
    let server = server_with_model(&model, |_| {}).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "long job").await;
    assert_eq!(ws.event().await["type"], "task_started");
    let fixture = server.stop().await;
    // The WebSocket saw the end, then the close.
    let events = ws.until_completed(1).await;
    assert_eq!(types(&events), ["error", "task_completed"]);
    assert_eq!(events[1]["status"], "interrupted");
    // And it is in the log after a restart.
    let server = TestServer::start_with(fixture).await;
    let mut replay = server.ws(&id, Some(0)).await;
    let all = replay.until_completed(1).await;
    // No checkpoint after an interrupted task: only the session's first.
    assert_eq!(
        types(&all),
        [
            "checkpoint_created",
            "task_started",
            "error",
            "task_completed"
        ]
    );
}

#[tokio::test]
async fn a_task_stops_at_max_steps() {
    let call = || Reply::Tools(vec![("list_files".into(), json!({}))]);
    let model = ScriptedModel::start(vec![call(), call(), call()]).await;
    let server = server_with_model(&model, |c| c.agent.max_steps = 2).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "loop forever").await;
    let events = ws.until_completed(1).await;
    let error = events.iter().find(|e| e["type"] == "error").unwrap();
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("agent.max_steps"),
        "{error}"
    );
    let done = events.last().unwrap();
    assert_eq!(
        (&done["status"], &done["steps"]),
        (&json!("max_steps"), &json!(2))
    );
    assert_eq!(model.requests().len(), 2);
}

/// The user messages of a request the model got.
fn user_texts(request: &Value) -> Vec<String> {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect()
}

fn compactions(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["type"] == "context_compacted")
        .collect()
}

/// Past `compact_at_percent` of `context_chars`, the older turns are
/// summarised by the model (asked with the summary prompt, not streamed)
/// into a note the next call sees in their place; a `context_compacted`
/// event gives the sizes.
#[tokio::test]
async fn a_conversation_near_its_window_is_summarised_and_the_next_call_sees_the_summary() {
    // Two answers of 2,400 characters: past 90% of 5,000 at the third task.
    let long = "x".repeat(2400);
    let model = ScriptedModel::start(vec![
        Reply::Text(long.clone()),
        Reply::Text(long.clone()),
        Reply::Text("SUMMARY-7f3a: the user said one and two".into()),
        Reply::Text("third".into()),
    ])
    .await;
    let server = server_with_model(&model, |c| {
        c.agent.context_chars = 5000;
        c.agent.compact_at_percent = 90;
    })
    .await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    let mut events = Vec::new();
    for task in ["one", "two", "three"] {
        post_task(&server, &id, task).await;
        events = ws.until_completed(1).await;
    }
    let requests = model.requests();
    assert_eq!(requests.len(), 4);
    // The summary request: its own prompt, the older turns as a transcript.
    let ask = &requests[2];
    assert!(
        ask["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("compact the conversation"),
        "{ask}"
    );
    let transcript = ask["messages"][1]["content"].as_str().unwrap();
    assert!(
        transcript.contains("User: one") && transcript.contains("User: two"),
        "{transcript}"
    );
    // The next call: the summary in place of "one" and "two".
    let users = user_texts(&requests[3]);
    assert_eq!(users.len(), 2, "{users:?}");
    assert!(users[0].contains("SUMMARY-7f3a"), "{users:?}");
    assert_eq!(users[1], "three");
    // The summary was not streamed; the event says what was done.
    assert!(
        !events.iter().any(
            |e| e["type"] == "text_delta" && e["content"].as_str().unwrap().contains("SUMMARY")
        )
    );
    let done = compactions(&events);
    assert_eq!(done.len(), 1, "{events:?}");
    let c = done[0];
    assert_eq!(
        (c["reason"].as_str(), c["method"].as_str()),
        (Some("threshold"), Some("summary"))
    );
    assert!(
        c["chars_after"].as_u64() < c["chars_before"].as_u64(),
        "{c}"
    );
    assert!(
        c["messages_after"].as_u64() < c["messages_before"].as_u64(),
        "{c}"
    );
    assert_eq!(events.last().unwrap()["status"], "completed");
}

/// A context-length error from the model: the older turns are summarised
/// and the call tried again, once.
#[tokio::test]
async fn a_context_length_error_compacts_and_retries_once() {
    let model = ScriptedModel::start(vec![
        Reply::Text("first answer".into()),
        Reply::TooLong,
        Reply::Text("SUMMARY-c0de of the first task".into()),
        Reply::Text("second answer".into()),
    ])
    .await;
    let server = server_with_model(&model, |_| {}).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "first").await;
    ws.until_completed(1).await;
    post_task(&server, &id, "second").await;
    let events = ws.until_completed(1).await;
    assert_eq!(events.last().unwrap()["status"], "completed", "{events:?}");
    let done = compactions(&events);
    assert_eq!(done.len(), 1, "{events:?}");
    assert_eq!(done[0]["reason"], "context_length");
    assert_eq!(done[0]["method"], "summary");
    let requests = model.requests();
    assert_eq!(requests.len(), 4);
    // The refused request and the retry: the same task, the summary in
    // place of the first.
    assert_eq!(user_texts(&requests[1]), ["first", "second"]);
    let retried = user_texts(&requests[3]);
    assert!(retried[0].contains("SUMMARY-c0de"), "{retried:?}");
    assert_eq!(retried.last().unwrap(), "second");
    assert!(!retried.iter().any(|u| u == "first"), "{retried:?}");
}

/// A model that answers "too long" whatever it is sent: summarised, then
/// the oldest turns dropped (each with its event), then the task fails
/// saying why; the requests are bounded, never a loop. The session goes
/// on afterwards.
#[tokio::test]
async fn a_model_that_keeps_answering_too_long_fails_the_task_after_bounded_tries() {
    let mut script = vec![
        Reply::Text("first answer".into()),
        Reply::TooLong,
        Reply::Text("SUMMARY-9 of the first task".into()),
    ];
    script.extend((0..10).map(|_| Reply::TooLong));
    let model = ScriptedModel::start(script).await;
    let server = server_with_model(&model, |_| {}).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "first").await;
    ws.until_completed(1).await;
    post_task(&server, &id, "second").await;
    let events = ws.until_completed(1).await;
    let end = events.last().unwrap();
    assert_eq!(end["status"], "failed", "{end}");
    let error = events.iter().rev().find(|e| e["type"] == "error").unwrap();
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("too long for the model"),
        "{error}"
    );
    let methods: Vec<&str> = compactions(&events)
        .iter()
        .map(|c| c["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["summary", "dropped"], "{events:?}");
    // The first task's call; then: refused, summary, refused, refused.
    assert_eq!(model.requests().len(), 5);
    let last = user_texts(model.requests().last().unwrap());
    assert_eq!(last, ["second"], "the oldest turns were dropped");
    // The next task fails too, after as few tries.
    post_task(&server, &id, "third").await;
    let events = ws.until_completed(1).await;
    assert_eq!(events.last().unwrap()["status"], "failed");
    assert!(model.requests().len() <= 8, "{}", model.requests().len());
}

#[tokio::test]
async fn a_stream_that_breaks_after_text_fails_the_task_without_retrying_or_repeating() {
    let model = ScriptedModel::start(vec![
        Reply::BrokenAfter(vec!["Half ".into(), "an answer".into()]),
        // What a retry would get: it must never be asked for.
        Reply::Text("a second try".into()),
    ])
    .await;
    let server = server_with_model(&model, |_| {}).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "talk").await;
    let events = ws.until_completed(1).await;
    assert_eq!(
        types(&events),
        [
            "task_started",
            "text_delta",
            "text_delta",
            "checkpoint_created",
            "error",
            "task_completed"
        ]
    );
    let text: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "text_delta")
        .map(|e| e["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, ["Half ", "an answer"]);
    assert_eq!(events[5]["status"], "failed");
    assert_eq!(model.requests().len(), 1, "the broken stream was retried");
    // The session goes on: the next task gets the reply the retry would have.
    post_task(&server, &id, "again").await;
    let events = ws.until_completed(1).await;
    assert_eq!(events.last().unwrap()["status"], "completed");
}

#[tokio::test]
async fn tool_results_are_cut_to_event_result_chars_in_events_but_not_for_the_model() {
    let content = "0123456789".repeat(30);
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![(
            "write_file".into(),
            json!({"path": "big.txt", "content": content}),
        )]),
        Reply::Tools(vec![("read_file".into(), json!({"path": "big.txt"}))]),
        Reply::Text("read it".into()),
    ])
    .await;
    let server = server_with_model(&model, |c| c.agent.event_result_chars = 50).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "write and read").await;
    let events = ws.until_completed(1).await;
    let read = events
        .iter()
        .filter(|e| e["type"] == "tool_complete")
        .nth(1)
        .unwrap();
    assert_eq!(read["tool_name"], "read_file");
    let result = read["result"].as_str().unwrap();
    let (kept, note) = result.split_once('\n').unwrap();
    assert_eq!(kept.chars().count(), 50, "{result}");
    assert!(
        content.contains(kept) || kept.ends_with(&content[..10]),
        "{result}"
    );
    let cut = note
        .strip_prefix("[... ")
        .and_then(|n| n.strip_suffix(" more characters cut]"))
        .unwrap_or_else(|| panic!("no cut note in {result:?}"));
    // The model got the whole file.
    let to_model = model.requests()[2]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|m| m["role"] == "tool")
        .unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(to_model.contains(&content), "{to_model}");
    assert_eq!(cut.parse::<usize>().unwrap() + 50, to_model.chars().count());
}

#[tokio::test]
async fn concurrent_submissions_never_queue_more_than_max_queued_tasks() {
    let model = ScriptedModel::start(vec![Reply::Stall(vec!["busy".into()])]).await;
    let server = server_with_model(&model, |c| c.agent.max_queued_tasks = 2).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "the running one").await;
    assert_eq!(ws.event().await["type"], "task_started");
    let path = format!("/api/sessions/{id}/tasks");
    let answers = futures_util::future::join_all(
        (0..20).map(|i| server.post(&path, json!({"task": format!("waiting {i}")}))),
    )
    .await;
    let accepted: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == 200)
        .map(|(_, body)| body)
        .collect();
    let refused = answers.iter().filter(|(status, _)| *status == 429).count();
    assert_eq!((accepted.len(), refused), (2, 18), "{answers:?}");
    let mut positions: Vec<u64> = accepted
        .iter()
        .map(|b| b["position"].as_u64().unwrap())
        .collect();
    positions.sort();
    assert_eq!(positions, [1, 2]);
    let (_, refusal) = answers.iter().find(|(s, _)| *s == 429).unwrap();
    assert!(
        refusal["detail"]
            .as_str()
            .unwrap()
            .contains("already has 2 tasks waiting"),
        "{refusal}"
    );
}

#[tokio::test]
async fn tool_names_a_model_makes_up_share_one_metrics_label() {
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![
            ("made_up_tool_1".into(), json!({})),
            ("made_up_tool_2".into(), json!({})),
            ("list_files".into(), json!({})),
        ]),
        Reply::Text("done".into()),
    ])
    .await;
    let server = server_with_model(&model, |_| {}).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "call things").await;
    ws.until_completed(1).await;
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"crogia_tool_calls_total{tool="unknown",outcome="unknown_tool"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"crogia_tool_calls_total{tool="list_files",outcome="ok"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains("made_up"), "{metrics}");
}
