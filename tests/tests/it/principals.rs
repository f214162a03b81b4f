//! Principals, quotas, budgets and the usage ledger (issue 21): users with
//! tokens of their own against a real server, a real container per
//! session and the scripted model.

use std::time::Duration;

use crogia_host::config::{Config, Price, Role, UserConfig};
use crogia_host::principal::token_sha256;
use crogia_tests::model::{Reply, ScriptedModel};
use crogia_tests::{TestServer, WsClient, WsRead, server_with_model};
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-0123456789abcdef";
const ALICE: &str = "alice-token-0123456789abcdef";
const BOB: &str = "bob-token-0123456789abcdef00";

/// `auth.tokens` holds the admin; alice and bob are users, alice with
/// `alice` as her limits.
fn principals(c: &mut Config, alice: impl FnOnce(&mut UserConfig)) {
    c.auth.tokens = vec![ADMIN.into()];
    let user = |name: &str, token: &str| UserConfig {
        name: name.into(),
        token_sha256: token_sha256(token),
        role: Role::User,
        max_sessions: None,
        max_running_tasks: None,
        tokens_per_day: None,
    };
    let mut a = user("alice", ALICE);
    alice(&mut a);
    c.auth.users = vec![a, user("bob", BOB)];
}

async fn create(server: &TestServer, token: &str, body: Value) -> (u16, Value) {
    server
        .call_as(token, Method::POST, "/api/sessions", Some(body))
        .await
}

async fn session_of(server: &TestServer, token: &str) -> String {
    let (status, body) = create(server, token, json!({})).await;
    assert_eq!(status, 200, "{body}");
    body["session_id"].as_str().unwrap().to_string()
}

async fn task(server: &TestServer, token: &str, id: &str, text: &str) -> (u16, Value) {
    server
        .call_as(
            token,
            Method::POST,
            &format!("/api/sessions/{id}/tasks"),
            Some(json!({"task": text})),
        )
        .await
}

async fn ws_as(server: &TestServer, token: &str, id: &str) -> WsClient {
    let base = server.base.replacen("http", "ws", 1);
    WsClient::connect(&format!("{base}/ws/{id}?since=0&token={token}")).await
}

fn ids(list: &Value) -> Vec<&str> {
    let mut ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

fn sorted(mut v: Vec<&str>) -> Vec<&str> {
    v.sort_unstable();
    v
}

fn assert_quota(body: &Value, name: &str, limit: u64, used: u64) {
    assert_eq!(
        body["quota"],
        json!({"name": name, "principal": "alice", "limit": limit, "used": used}),
        "{body}"
    );
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(name) || detail.contains("alice"),
        "{detail}"
    );
}

/// Every route under `/api/sessions/{session_id}` that the API document
/// lists, called by bob on alice's session, is a 404 that tells nothing;
/// the event WebSocket closes with 4004; neither changes her session.
/// Alice sees only hers, bob only his, the admin both (and one owner's
/// with `?owner=`).
#[tokio::test]
async fn two_users_see_and_touch_only_their_own_sessions_on_every_route_and_the_websocket() {
    let server = TestServer::with_config(|c| principals(c, |_| {})).await;
    let (status, made) = create(&server, ALICE, json!({})).await;
    assert_eq!(status, 200, "{made}");
    assert_eq!(made["owner"], "alice");
    let hers = made["session_id"].as_str().unwrap().to_string();
    let his = session_of(&server, BOB).await;
    let (status, body) = server
        .call_as(
            ALICE,
            Method::POST,
            &format!("/api/sessions/{hers}/files/content"),
            Some(json!({"path": "notes.txt", "content": "hers"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let list = |token: &'static str, query: &'static str| {
        let server = &server;
        async move {
            let (status, body) = server
                .call_as(token, Method::GET, &format!("/api/sessions{query}"), None)
                .await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    assert_eq!(ids(&list(ALICE, "").await), [hers.as_str()]);
    assert_eq!(ids(&list(BOB, "").await), [his.as_str()]);
    assert_eq!(ids(&list(BOB, "?owner=alice").await), Vec::<&str>::new());
    assert_eq!(
        ids(&list(ADMIN, "").await),
        sorted(vec![hers.as_str(), his.as_str()])
    );
    assert_eq!(ids(&list(ADMIN, "?owner=alice").await), [hers.as_str()]);

    // Every session route of the API document, as bob, on alice's session.
    let (status, doc) = server
        .call_as(ADMIN, Method::GET, "/openapi.json", None)
        .await;
    assert_eq!(status, 200);
    let mut checked = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        if !template.contains("{session_id}") {
            continue;
        }
        // Other parameters get a plausible value: the session is checked
        // before anything else is looked at.
        let path = template.replace("{session_id}", &hers);
        let path = fill_parameters(&path);
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = (method != "get" && method != "delete").then(|| json!({}));
            let (status, answer) = server.call_as(BOB, m, &path, body).await;
            assert_eq!(status, 404, "{method} {path}: {answer}");
            assert_eq!(
                answer,
                json!({"detail": "Session not found"}),
                "{method} {path}"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 20,
        "only {checked} session routes in the document"
    );
    // The routes outside the document: the MCP endpoint and the terminal.
    for (method, path) in [
        (Method::POST, format!("/mcp/{hers}")),
        (Method::GET, format!("/ws/{hers}/pty")),
    ] {
        let (status, answer) = server.call_as(BOB, method, &path, Some(json!({}))).await;
        assert_eq!(status, 404, "{path}: {answer}");
    }

    // The event stream: bob is closed with 4004, alice and the admin get it.
    let mut ws = ws_as(&server, BOB, &hers).await;
    assert!(
        matches!(
            ws.read(Duration::from_secs(5)).await,
            WsRead::Closed(Some(4004), _)
        ),
        "bob was not closed with 4004"
    );
    let mut ws = ws_as(&server, ALICE, &his).await;
    assert!(matches!(
        ws.read(Duration::from_secs(5)).await,
        WsRead::Closed(Some(4004), _)
    ));
    for token in [ALICE, ADMIN] {
        let mut ws = ws_as(&server, token, &hers).await;
        assert!(
            matches!(ws.read(Duration::from_secs(5)).await, WsRead::Event(_)),
            "the owner and the admin get the events"
        );
    }

    // Nothing bob sent reached her session: it is there, its file as she
    // wrote it, no task ever started.
    let (status, info) = server
        .call_as(ALICE, Method::GET, &format!("/api/sessions/{hers}"), None)
        .await;
    assert_eq!(status, 200, "{info}");
    let (status, file) = server
        .call_as(
            ALICE,
            Method::GET,
            &format!("/api/sessions/{hers}/files/content?path=notes.txt"),
            None,
        )
        .await;
    assert_eq!(
        (status, file["content"].as_str()),
        (200, Some("hers")),
        "{file}"
    );
    let events = replay(&server, ALICE, &hers).await;
    assert!(
        !events.iter().any(|e| e["type"] == "task_started"),
        "a task of bob's ran: {events:?}"
    );
    // The admin may do what bob could not.
    let (status, _) = server
        .call_as(ADMIN, Method::GET, &format!("/api/sessions/{his}"), None)
        .await;
    assert_eq!(status, 200);
    // Only admins read the metrics.
    let (status, _) = server.call_as(ALICE, Method::GET, "/metrics", None).await;
    assert_eq!(status, 403);
    let (status, _) = server.call_as(ADMIN, Method::GET, "/metrics", None).await;
    assert_eq!(status, 200);
    for id in [&hers, &his] {
        server
            .call_as(ADMIN, Method::DELETE, &format!("/api/sessions/{id}"), None)
            .await;
    }
}

/// `{name}` parameters other than the session's get a value.
fn fill_parameters(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').expect("a closed parameter") + open;
        out.push_str(match &rest[open + 1..close] {
            "pid" | "process_id" => "1",
            _ => "x",
        });
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// A session's events so far, as its owner replays them.
async fn replay(server: &TestServer, token: &str, id: &str) -> Vec<Value> {
    let mut ws = ws_as(server, token, id).await;
    let mut events = Vec::new();
    while let WsRead::Event(e) = ws.read(Duration::from_millis(500)).await {
        events.push(e);
    }
    events
}

/// Alice's sessions, running tasks and tokens of the day are each limited:
/// one more is a 429 naming the quota, its limit and her use; others are
/// not held back by her limits; a session deleted frees its place; the
/// day's tokens also stop a task already queued when they run out.
#[tokio::test]
async fn each_quota_is_a_429_naming_it_its_limit_and_the_use() {
    let model = ScriptedModel::start(vec![
        Reply::Delay(
            Duration::from_secs(2),
            Box::new(Reply::Usage(
                100_000,
                5,
                Box::new(Reply::Text("done".into())),
            )),
        ),
        Reply::Text("bob's".into()),
    ])
    .await;
    let server = server_with_model(&model, |c| {
        principals(c, |a| {
            a.max_sessions = Some(2);
            a.max_running_tasks = Some(1);
            a.tokens_per_day = Some(100_000);
        })
    })
    .await;
    let one = session_of(&server, ALICE).await;
    let two = session_of(&server, ALICE).await;
    let (status, body) = create(&server, ALICE, json!({})).await;
    assert_eq!(status, 429, "{body}");
    assert_quota(&body, "max_sessions", 2, 2);
    // Bob is not held back by her limits.
    let bobs = session_of(&server, BOB).await;

    let mut ws = ws_as(&server, ALICE, &one).await;
    let (status, body) = task(&server, ALICE, &one, "first").await;
    assert_eq!(status, 200, "{body}");
    // Her call takes the first reply before bob's task can ask for one.
    while model.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = task(&server, ALICE, &two, "beside it").await;
    assert_eq!(status, 429, "{body}");
    assert_quota(&body, "max_running_tasks", 1, 1);
    // Behind it in the same session never runs beside it: let in.
    let (status, body) = task(&server, ALICE, &one, "queued behind").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = task(&server, BOB, &bobs, "his own").await;
    assert_eq!(status, 200, "{body}");

    let events = ws.until_completed(2).await;
    let ends: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "task_completed")
        .collect();
    assert_eq!(ends[0]["status"], "completed", "{:?}", ends[0]);
    assert_eq!(ends[0]["usage"]["total_tokens"], 100_005);
    // The queued task found the day's tokens spent at its first call.
    assert_eq!(ends[1]["status"], "budget_exceeded", "{:?}", ends[1]);
    let error = events
        .iter()
        .rev()
        .find(|e| e["type"] == "error")
        .expect("an error event says why");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("tokens_per_day"),
        "{error}"
    );
    let (status, body) = task(&server, ALICE, &two, "more").await;
    assert_eq!(status, 429, "{body}");
    assert_quota(&body, "tokens_per_day", 100_000, 100_005);

    // A session deleted makes room for another.
    let (status, _) = server
        .call_as(ALICE, Method::DELETE, &format!("/api/sessions/{one}"), None)
        .await;
    assert_eq!(status, 200);
    let three = session_of(&server, ALICE).await;
    // Alice's first task, bob's: no other model call was made.
    assert_eq!(model.requests().len(), 2);
    for id in [&two, &three, &bobs] {
        server
            .call_as(ADMIN, Method::DELETE, &format!("/api/sessions/{id}"), None)
            .await;
    }
}

/// A session's `budget_tokens` is checked before every model call: the
/// task whose next call would pass it ends `budget_exceeded` after an
/// `error` saying so, without making the call; the operator's cap on
/// budgets is a 403.
#[tokio::test]
async fn a_session_budget_stops_the_task_before_the_call_that_would_pass_it() {
    let model = ScriptedModel::start(vec![Reply::Usage(
        2_990,
        5,
        Box::new(Reply::Tools(vec![(
            "write_file".into(),
            json!({"path": "a.txt", "content": "a"}),
        )])),
    )])
    .await;
    let server = server_with_model(&model, |c| c.agent.max_session_budget_tokens = 1_000_000).await;
    let (status, body) = server
        .post("/api/sessions", json!({"budget_tokens": 1_000_001}))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(server.get("/api/sessions").await.1, json!([]));

    let (status, made) = server
        .post("/api/sessions", json!({"budget_tokens": 3_000}))
        .await;
    assert_eq!(status, 200, "{made}");
    assert_eq!(
        (made["budget_tokens"].as_u64(), made["tokens_used"].as_u64()),
        (Some(3_000), Some(0))
    );
    let id = made["session_id"].as_str().unwrap();
    let mut ws = server.ws(id, None).await;
    let (status, _) = server
        .post(
            &format!("/api/sessions/{id}/tasks"),
            json!({"task": "write a"}),
        )
        .await;
    assert_eq!(status, 200);
    let events = ws.until_completed(1).await;
    let end = events.last().unwrap();
    assert_eq!(end["status"], "budget_exceeded", "{end}");
    assert_eq!(end["usage"]["total_tokens"], 2_995);
    let error = &events[events.len() - 2];
    assert_eq!(error["type"], "error", "{events:?}");
    assert!(
        error["message"].as_str().unwrap().contains("budget"),
        "{error}"
    );
    // The tool ran; the call after it was never made.
    assert!(events.iter().any(|e| e["type"] == "tool_complete"));
    assert_eq!(model.requests().len(), 1);
    let (_, info) = server.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(info["tokens_used"], 2_995, "{info}");

    // A next task stops at once, still without calling the model.
    server
        .post(
            &format!("/api/sessions/{id}/tasks"),
            json!({"task": "more"}),
        )
        .await;
    let events = ws.until_completed(1).await;
    assert_eq!(events.last().unwrap()["status"], "budget_exceeded");
    assert_eq!(model.requests().len(), 1);
}

/// Every model call is in the ledger: its sums by session, principal and
/// day equal the `usage` the tasks' `task_completed` reported, with the
/// cost of the configured prices; a user sees only its own; the
/// per-principal counters agree.
#[tokio::test]
async fn the_usage_ledger_sums_what_task_completed_reported() {
    let model = ScriptedModel::start(vec![
        Reply::Usage(
            7,
            3,
            Box::new(Reply::Tools(vec![(
                "write_file".into(),
                json!({"path": "a.txt", "content": "a"}),
            )])),
        ),
        Reply::Usage(20, 11, Box::new(Reply::Text("done".into()))),
        Reply::Usage(100, 50, Box::new(Reply::Text("his".into()))),
    ])
    .await;
    let server = server_with_model(&model, |c| {
        principals(c, |_| {});
        c.model.prices.insert(
            "scripted".into(),
            Price {
                prompt: 1.0,
                completion: 2.0,
            },
        );
    })
    .await;
    let mut reported = Vec::new();
    for (token, text) in [(ALICE, "hers"), (BOB, "his")] {
        let id = session_of(&server, token).await;
        let mut ws = ws_as(&server, token, &id).await;
        let (status, body) = task(&server, token, &id, text).await;
        assert_eq!(status, 200, "{body}");
        let events = ws.until_completed(1).await;
        let end = events.last().unwrap().clone();
        assert_eq!(end["status"], "completed", "{end}");
        reported.push((id, end["usage"]["total_tokens"].as_u64().unwrap()));
    }
    assert_eq!(
        reported.iter().map(|(_, n)| n).collect::<Vec<_>>(),
        [&41, &150]
    );

    let usage = |token: &'static str, query: String| {
        let server = &server;
        async move {
            server
                .call_as(token, Method::GET, &format!("/api/usage{query}"), None)
                .await
        }
    };
    let (status, by_session) = usage(ADMIN, "?group_by=session".into()).await;
    assert_eq!(status, 200, "{by_session}");
    for (id, total) in &reported {
        let row = by_session["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == id.as_str())
            .unwrap_or_else(|| panic!("no row for {id}: {by_session}"));
        assert_eq!(row["total_tokens"].as_u64(), Some(*total), "{row}");
        assert_eq!(row["model"], "scripted");
    }
    let total = &by_session["total"];
    assert_eq!(
        (
            total["calls"].as_u64(),
            total["prompt_tokens"].as_u64(),
            total["completion_tokens"].as_u64()
        ),
        (Some(3), Some(127), Some(64)),
        "{total}"
    );
    let cost = total["cost"].as_f64().expect("every model is priced");
    assert!((cost - (127.0 + 2.0 * 64.0) / 1e6).abs() < 1e-12, "{cost}");

    let (_, by_principal) = usage(ADMIN, "?group_by=principal".into()).await;
    let rows: Vec<(String, u64)> = by_principal["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["total_tokens"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, [("alice".to_string(), 41), ("bob".to_string(), 150)]);
    // A user: its own, whatever it asks; another's is refused.
    let (status, own) = usage(ALICE, "?group_by=principal".into()).await;
    assert_eq!(status, 200);
    assert_eq!(own["principal"], "alice");
    assert_eq!(own["total"]["total_tokens"], 41, "{own}");
    let (status, _) = usage(BOB, "?principal=alice".into()).await;
    assert_eq!(status, 403);
    let today = chrono::Utc::now().date_naive();
    let (_, by_day) = usage(ADMIN, format!("?from={today}&to={today}")).await;
    assert_eq!(by_day["rows"][0]["key"], today.to_string(), "{by_day}");
    assert_eq!(by_day["total"]["total_tokens"], 191);
    let tomorrow = today.succ_opt().unwrap();
    let (_, later) = usage(ADMIN, format!("?from={tomorrow}")).await;
    assert_eq!(later["rows"], json!([]), "{later}");
    let (status, _) = usage(ADMIN, "?from=2026-02-30".into()).await;
    assert_eq!(status, 422);

    let (_, metrics) = server.call_as(ADMIN, Method::GET, "/metrics", None).await;
    let metrics = metrics.as_str().unwrap().to_string();
    for (principal, kind, n) in [
        ("alice", "prompt", 27),
        ("alice", "completion", 14),
        ("bob", "prompt", 100),
    ] {
        let line = format!(
            "crogia_principal_tokens_total{{principal=\"{principal}\",kind=\"{kind}\"}} {n}"
        );
        assert!(metrics.contains(&line), "no {line:?} in\n{metrics}");
    }
    for (id, _) in &reported {
        server
            .call_as(ADMIN, Method::DELETE, &format!("/api/sessions/{id}"), None)
            .await;
    }
}

/// After a restart, a session still belongs to its owner (the other user
/// still gets a 404), and its budget and the tokens it used are still
/// counted: a task past the budget still stops before calling the model.
#[tokio::test]
async fn owners_budgets_and_spent_tokens_survive_a_restart() {
    let model = ScriptedModel::start(vec![Reply::Usage(
        4_000,
        900,
        Box::new(Reply::Text("spent".into())),
    )])
    .await;
    let server = server_with_model(&model, |c| principals(c, |_| {})).await;
    let (status, made) = create(&server, ALICE, json!({"budget_tokens": 5_000})).await;
    assert_eq!(status, 200, "{made}");
    let id = made["session_id"].as_str().unwrap().to_string();
    let mut ws = ws_as(&server, ALICE, &id).await;
    task(&server, ALICE, &id, "spend").await;
    assert_eq!(
        ws.until_completed(1).await.last().unwrap()["status"],
        "completed"
    );
    drop(ws);

    let server = TestServer::start_with(server.stop().await).await;
    let path = format!("/api/sessions/{id}");
    let (status, info) = server.call_as(ALICE, Method::GET, &path, None).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(
        (
            info["owner"].as_str(),
            info["budget_tokens"].as_u64(),
            info["tokens_used"].as_u64()
        ),
        (Some("alice"), Some(5_000), Some(4_900)),
        "{info}"
    );
    let (status, _) = server.call_as(BOB, Method::GET, &path, None).await;
    assert_eq!(status, 404);
    let mut ws = ws_as(&server, ALICE, &id).await;
    task(&server, ALICE, &id, "more").await;
    let events = ws.until_completed(2).await;
    assert_eq!(events.last().unwrap()["status"], "budget_exceeded");
    assert_eq!(model.requests().len(), 1);
    server.call_as(ADMIN, Method::DELETE, &path, None).await;
}
