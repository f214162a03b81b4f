//! A person's approval of tool calls: a call that needs one waits, announced
//! by `approval_requested`; allow, allow for the session, deny with a
//! message, the timeout and a cancel resolve it; a pending request survives
//! a restart. Real server, real plugins, real container; the scripted model.

use crogia_tests::model::{Reply, ScriptedModel};
use crogia_tests::{TestServer, WsClient, ask_before, server_with_model};
use serde_json::{Value, json};

fn shell(command: &str) -> (String, Value) {
    ("shell".into(), json!({ "command": command }))
}

async fn post_task(server: &TestServer, id: &str, task: &str) {
    let (status, body) = server
        .post(&format!("/api/sessions/{id}/tasks"), json!({"task": task}))
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Events up to and including the first of type `kind`.
async fn until(ws: &mut WsClient, kind: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let e = ws.event().await;
        let done = e["type"] == kind;
        seen.push(e);
        if done {
            return seen;
        }
    }
}

async fn next_of(ws: &mut WsClient, kind: &str) -> Value {
    until(ws, kind).await.pop().unwrap()
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

async fn decide(server: &TestServer, id: &str, approval: &str, body: Value) -> (u16, Value) {
    server
        .post(&format!("/api/sessions/{id}/approvals/{approval}"), body)
        .await
}

/// Whether `path` exists in the session's workspace, asked through the API.
async fn exists(server: &TestServer, id: &str, path: &str) -> bool {
    let (status, body) = server
        .post(
            &format!("/api/sessions/{id}/shell"),
            json!({"cmd": format!("test -e {path} && echo yes || echo no")}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["stdout"].as_str().unwrap().trim() == "yes"
}

/// The content of the last message of the model's `n`th request.
fn last_message(model: &ScriptedModel, n: usize) -> Value {
    let requests = model.requests();
    requests[n]["messages"].as_array().unwrap().last().unwrap()["content"].clone()
}

#[tokio::test]
async fn an_allowed_call_runs_after_the_person_says_so_and_not_before() {
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![shell("echo approved > a.txt; echo done")]),
        Reply::Text("finished".into()),
    ])
    .await;
    let server = server_with_model(&model, |c| ask_before(c, "shell", &[])).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "make a.txt").await;
    let asked = next_of(&mut ws, "approval_requested").await;
    assert_eq!(asked["tool_name"], "shell");
    assert_eq!(asked["subject"], "echo approved > a.txt; echo done");
    assert_eq!(
        asked["arguments"],
        json!({"command": "echo approved > a.txt; echo done"})
    );
    assert!(asked["expires_at"].as_str().unwrap().ends_with('Z'));
    let approval = asked["approval_id"].as_str().unwrap().to_string();
    // Waiting: listed, and nothing ran.
    let (_, listed) = server.get(&format!("/api/sessions/{id}/approvals")).await;
    assert_eq!(listed["pending"][0]["approval_id"], approval.as_str());
    assert_eq!(listed["pending"][0]["tool_call_id"], asked["tool_call_id"]);
    assert_eq!(listed["mode"], "default");
    assert!(!exists(&server, &id, "a.txt").await);

    let (status, body) = decide(&server, &id, &approval, json!({"decision": "allow"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "allow");
    assert_eq!(body["by"], "user");
    let events = ws.until_completed(1).await;
    let resolved = of_type(&events, "approval_resolved");
    assert_eq!(resolved[0]["approval_id"], approval.as_str());
    assert_eq!(resolved[0]["decision"], "allow");
    assert_eq!(resolved[0]["by"], "user");
    let done = of_type(&events, "tool_complete");
    assert_eq!(done[0]["is_error"], false, "{}", done[0]);
    assert!(done[0]["result"].as_str().unwrap().contains("done"));
    assert_eq!(of_type(&events, "task_completed")[0]["status"], "completed");
    assert!(exists(&server, &id, "a.txt").await);

    // Once only; and an unknown id is a 404.
    let (status, body) = decide(&server, &id, &approval, json!({"decision": "deny"})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("already resolved")
    );
    let (status, _) = decide(&server, &id, "0123456789ab", json!({"decision": "allow"})).await;
    assert_eq!(status, 404);
    let (_, listed) = server.get(&format!("/api/sessions/{id}/approvals")).await;
    assert_eq!(listed["pending"], json!([]));
}

#[tokio::test]
async fn a_denial_reaches_the_model_with_the_persons_message_and_nothing_runs() {
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![shell("touch denied.txt")]),
        Reply::Text("understood".into()),
    ])
    .await;
    let server = server_with_model(&model, |c| ask_before(c, "shell", &[])).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "touch it").await;
    let asked = next_of(&mut ws, "approval_requested").await;
    let approval = asked["approval_id"].as_str().unwrap();
    let (status, _) = decide(
        &server,
        &id,
        approval,
        json!({"decision": "deny", "message": "use the build directory instead"}),
    )
    .await;
    assert_eq!(status, 200);
    let events = ws.until_completed(1).await;
    let expected = "Not run: denied by the user: use the build directory instead";
    let resolved = of_type(&events, "approval_resolved")[0];
    assert_eq!(resolved["decision"], "deny");
    assert_eq!(resolved["message"], "use the build directory instead");
    let done = of_type(&events, "tool_complete")[0];
    assert_eq!(
        (done["is_error"].clone(), done["result"].clone()),
        (json!(true), json!(expected))
    );
    // The model's next request carries the person's words.
    assert_eq!(last_message(&model, 1), expected);
    assert!(!exists(&server, &id, "denied.txt").await);
    // A bad decision is refused.
    let (status, _) = decide(&server, &id, approval, json!({"decision": "maybe"})).await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn allow_for_the_session_adds_a_rule_that_spares_later_matching_calls() {
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![shell("ls")]),
        Reply::Tools(vec![shell("ls")]),
        Reply::Tools(vec![shell("pwd")]),
        Reply::Text("done".into()),
    ])
    .await;
    let server = server_with_model(&model, |c| ask_before(c, "shell", &[])).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "look around").await;
    let first = next_of(&mut ws, "approval_requested").await;
    let (status, _) = decide(
        &server,
        &id,
        first["approval_id"].as_str().unwrap(),
        json!({"decision": "allow_session"}),
    )
    .await;
    assert_eq!(status, 200);
    // The second `ls` runs without asking; `pwd` asks.
    let seen = until(&mut ws, "approval_requested").await;
    assert_eq!(of_type(&seen, "tool_complete").len(), 2, "{seen:?}");
    let second = seen.last().unwrap();
    assert_eq!(second["subject"], "pwd");
    let (_, listed) = server.get(&format!("/api/sessions/{id}/approvals")).await;
    assert_eq!(
        listed["rules"],
        json!([{"tool_name": "shell", "pattern": "ls"}])
    );
    decide(
        &server,
        &id,
        second["approval_id"].as_str().unwrap(),
        json!({"decision": "allow"}),
    )
    .await;
    let events = ws.until_completed(1).await;
    assert_eq!(of_type(&events, "task_completed")[0]["status"], "completed");
}

#[tokio::test]
async fn a_request_no_one_answers_expires_as_a_denial_by_timeout() {
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![shell("touch late.txt")]),
        Reply::Text("ok".into()),
    ])
    .await;
    let server = server_with_model(&model, |c| {
        ask_before(c, "shell", &[]);
        c.agent.approval_timeout_secs = 1;
    })
    .await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "touch").await;
    let asked = next_of(&mut ws, "approval_requested").await;
    let events = ws.until_completed(1).await;
    let resolved = of_type(&events, "approval_resolved")[0];
    assert_eq!(resolved["decision"], "deny");
    assert_eq!(resolved["by"], "timeout");
    let done = of_type(&events, "tool_complete")[0];
    assert_eq!(
        done["result"],
        "Not run: no one approved this call within 1 s."
    );
    let (status, _) = decide(
        &server,
        &id,
        asked["approval_id"].as_str().unwrap(),
        json!({"decision": "allow"}),
    )
    .await;
    assert_eq!(status, 409);
    assert!(!exists(&server, &id, "late.txt").await);
}

#[tokio::test]
async fn cancelling_the_task_resolves_its_waiting_request_as_cancelled() {
    let model = ScriptedModel::start(vec![Reply::Tools(vec![shell("touch never.txt")])]).await;
    let server = server_with_model(&model, |c| ask_before(c, "shell", &[])).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "touch").await;
    let asked = next_of(&mut ws, "approval_requested").await;
    let (status, _) = server
        .post(&format!("/api/sessions/{id}/tasks/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);
    let events = ws.until_completed(1).await;
    let resolved = of_type(&events, "approval_resolved")[0];
    assert_eq!(resolved["approval_id"], asked["approval_id"]);
    assert_eq!(
        (resolved["decision"].as_str(), resolved["by"].as_str()),
        (Some("cancelled"), Some("cancel"))
    );
    assert_eq!(of_type(&events, "task_completed")[0]["status"], "cancelled");
    let (_, listed) = server.get(&format!("/api/sessions/{id}/approvals")).await;
    assert_eq!(listed["pending"], json!([]));
    assert!(!exists(&server, &id, "never.txt").await);
}

#[tokio::test]
async fn auto_approve_patterns_spare_matching_subjects_only() {
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![shell("echo hi"), shell("rm -f x")]),
        Reply::Text("done".into()),
    ])
    .await;
    let server =
        server_with_model(&model, |c| ask_before(c, "shell", &["echo *", "pytest*"])).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "go").await;
    let seen = until(&mut ws, "approval_requested").await;
    // `echo hi` ran without asking; `rm -f x` asks.
    let done = of_type(&seen, "tool_complete");
    assert_eq!(done.len(), 1);
    assert!(done[0]["result"].as_str().unwrap().contains("hi"));
    assert_eq!(seen.last().unwrap()["subject"], "rm -f x");
    decide(
        &server,
        &id,
        seen.last().unwrap()["approval_id"].as_str().unwrap(),
        json!({"decision": "allow"}),
    )
    .await;
    ws.until_completed(1).await;
}

#[tokio::test]
async fn a_session_with_approval_all_asks_for_writes_but_never_for_reads() {
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![
            ("read_file".into(), json!({"path": "README"})),
            (
                "write_file".into(),
                json!({"path": "notes.txt", "content": "hi"}),
            ),
        ]),
        Reply::Text("done".into()),
    ])
    .await;
    let server = server_with_model(&model, |_| {}).await;
    let (status, created) = server
        .post("/api/sessions", json!({"approval": "all"}))
        .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["approval"], "all");
    let id = created["session_id"].as_str().unwrap().to_string();
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "write notes").await;
    let seen = until(&mut ws, "approval_requested").await;
    let asked = seen.last().unwrap();
    assert_eq!(
        (asked["tool_name"].as_str(), asked["subject"].as_str()),
        (Some("write_file"), Some("notes.txt"))
    );
    // read_file ran (and failed: there is no README) without asking.
    assert_eq!(of_type(&seen, "tool_complete")[0]["tool_name"], "read_file");
    decide(
        &server,
        &id,
        asked["approval_id"].as_str().unwrap(),
        json!({"decision": "allow"}),
    )
    .await;
    ws.until_completed(1).await;
    assert!(exists(&server, &id, "notes.txt").await);
    // `none` only where the operator permits it.
    let (status, body) = server
        .post("/api/sessions", json!({"approval": "none"}))
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("allow_approval_none")
    );
}

#[tokio::test]
async fn a_waiting_request_survives_a_restart_and_the_task_goes_on_once_allowed() {
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![shell("echo after-restart > r.txt; cat r.txt")]),
        Reply::Text("all done".into()),
    ])
    .await;
    let server = server_with_model(&model, |c| ask_before(c, "shell", &[])).await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    post_task(&server, &id, "write r.txt").await;
    let asked = next_of(&mut ws, "approval_requested").await;
    let approval = asked["approval_id"].as_str().unwrap().to_string();
    drop(ws);
    let fixture = server.stop().await;
    let server = TestServer::start_with(fixture).await;

    // A client that reconnects finds it in the replay and in the list.
    let mut ws = server.ws(&id, Some(0)).await;
    let replayed = until(&mut ws, "approval_requested").await;
    assert_eq!(replayed.last().unwrap()["approval_id"], approval.as_str());
    let (_, listed) = server.get(&format!("/api/sessions/{id}/approvals")).await;
    assert_eq!(listed["pending"][0]["approval_id"], approval.as_str());
    // Nothing after the request: no interruption was recorded.
    let (_, session) = server.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(session["last_event_seq"], replayed.last().unwrap()["seq"]);

    let (status, body) = decide(&server, &id, &approval, json!({"decision": "allow"})).await;
    assert_eq!(status, 200, "{body}");
    let events = ws.until_completed(1).await;
    let done = of_type(&events, "tool_complete")[0];
    assert!(
        done["result"].as_str().unwrap().contains("after-restart"),
        "{done}"
    );
    let completed = of_type(&events, "task_completed")[0];
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["task_id"], asked["task_id"]);
    // The model saw the result after the restart.
    assert!(
        last_message(&model, 1)
            .as_str()
            .unwrap()
            .contains("after-restart")
    );
    assert!(exists(&server, &id, "r.txt").await);
}
