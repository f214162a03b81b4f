//! The REST API on a real server, against the contract (crogia-api.md):
//! field names, status codes and error bodies.

use std::collections::BTreeSet;
use std::time::Duration;

use crogia_tests::TestServer;
use serde_json::{Value, json};

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn is_timestamp(v: &Value) -> bool {
    let s = v.as_str().unwrap_or_default();
    s.len() == 24 && s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

const SESSION_FIELDS: &[&str] = &[
    "session_id",
    "container_id",
    "workdir",
    "created",
    "last_task",
    "status",
    "container_status",
];

#[tokio::test]
async fn session_create_get_list_delete_follow_the_contract() {
    let server = TestServer::start().await;
    let (status, created) = server
        .post(
            "/api/sessions",
            json!({"task": "Create a Flask web application"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    // The contract's fields, plus the additive `last_event_seq`,
    // `approval`, `owner`, `tokens_used`, `engine` and `server`
    // (`budget_tokens` only when the session has one).
    let mut expected = set(SESSION_FIELDS);
    for additive in [
        "last_event_seq",
        "approval",
        "owner",
        "tokens_used",
        "engine",
        "server",
    ] {
        expected.insert(additive.into());
    }
    assert_eq!(keys(&created), expected);
    assert_eq!(created["engine"], "default");
    // This server's id, as kept in its data directory.
    let server_id =
        std::fs::read_to_string(server.fixture.config.server.data_dir.join("server-id")).unwrap();
    assert_eq!(created["server"].as_str(), Some(server_id.trim()));
    assert_eq!(created["approval"], "default");
    // Without auth, everything is the local principal's.
    assert_eq!(created["owner"], "local");
    assert_eq!(created["tokens_used"], 0);
    // The session's first event is its first checkpoint.
    assert_eq!(created["last_event_seq"], 1);
    let id = created["session_id"].as_str().unwrap();
    assert!(
        id.len() == 8
            && id
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{id}"
    );
    assert_eq!(created["last_task"], "Create a Flask web application");
    assert_eq!(created["status"], "active");
    assert_eq!(created["container_status"], "running");
    assert!(is_timestamp(&created["created"]));
    let workdir = created["workdir"].as_str().unwrap();
    assert!(workdir.ends_with(&format!("session_{id}")) && std::path::Path::new(workdir).is_dir());

    // The task runs (and, with no model configured, fails) on its own
    // schedule: only the event count may have moved since the create.
    let same_but_seq = |mut v: Value| {
        let seq = v["last_event_seq"].as_u64().unwrap();
        v["last_event_seq"] = created["last_event_seq"].clone();
        assert_eq!(v, created);
        seq
    };
    let (status, one) = server.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(status, 200);
    let seq = same_but_seq(one);
    let (_, list) = server.get("/api/sessions").await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert!(same_but_seq(list[0].clone()) >= seq);
    let (_, health) = server.get("/api/health").await;
    assert_eq!(health["active_sessions"], 1);

    // `last_event_seq` of the create response is from before the task: a
    // client following from it sees the task from its start (here, with no
    // model configured, to its failure).
    let mut ws = server.ws(id, created["last_event_seq"].as_u64()).await;
    let types: Vec<Value> = ws
        .until_completed(1)
        .await
        .iter()
        .map(|e| e["type"].clone())
        .collect();
    assert_eq!(
        types,
        [
            "task_started",
            "checkpoint_created",
            "error",
            "task_completed"
        ]
    );

    let (status, body) = server.delete(&format!("/api/sessions/{id}")).await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"message": format!("Session {id} deleted successfully")})
        )
    );
    assert!(!std::path::Path::new(workdir).exists() || wait_gone(workdir).await);
    let container = created["container_id"].as_str().unwrap();
    let err = server.fixture.sandbox.inspect(container).await.unwrap_err();
    assert!(
        matches!(err, crogia_host::sandbox::SandboxError::NotFound(_)),
        "{err:?}"
    );

    let not_found = json!({"detail": "Session not found"});
    assert_eq!(
        server.delete(&format!("/api/sessions/{id}")).await,
        (404, not_found.clone())
    );
    assert_eq!(
        server.get(&format!("/api/sessions/{id}")).await,
        (404, not_found.clone())
    );
    assert_eq!(
        server.get("/api/sessions/zzzzzzzz/files").await,
        (404, not_found)
    );
    assert_eq!(server.get("/api/sessions").await.1, json!([]));
}

async fn wait_gone(path: &str) -> bool {
    for _ in 0..50 {
        if !std::path::Path::new(path).exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn tasks_are_recorded_and_bad_task_bodies_are_422() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let path = format!("/api/sessions/{id}/tasks");
    let (status, body) = server
        .post(&path, json!({"task": "Add user authentication"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], format!("Task started in session {id}"));
    assert_eq!(body["task"], "Add user authentication");
    assert_eq!(
        server.get(&format!("/api/sessions/{id}")).await.1["last_task"],
        "Add user authentication"
    );

    let (status, body) = server.post(&path, json!({"tsak": "typo"})).await;
    assert_eq!(status, 422);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("missing field `task`"),
        "{body}"
    );
    let (status, body) = server.post(&path, json!({"task": 5})).await;
    assert_eq!(status, 422);
    assert!(
        body["detail"].as_str().unwrap().contains("`task`"),
        "{body}"
    );
    let resp = server
        .client
        .post(server.url(&path))
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("Request body is not valid JSON"),
        "{body}"
    );
    assert_eq!(
        server
            .post("/api/sessions/00000000/tasks", json!({"task": "x"}))
            .await
            .0,
        404
    );
    // Nothing changed.
    assert_eq!(
        server.get(&format!("/api/sessions/{id}")).await.1["last_task"],
        "Add user authentication"
    );
}

#[tokio::test]
async fn files_list_read_write_and_delete_with_contract_fields() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let base = format!("/api/sessions/{id}/files");
    let (status, body) = server
        .post(
            &format!("{base}/content"),
            json!({"path": "app.py", "content": "from flask import Flask\n"}),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"message": "File app.py written successfully"}))
    );
    server
        .post(
            &format!("{base}/content"),
            json!({"path": "templates/index.html", "content": "<h1/>"}),
        )
        .await;

    let (status, read) = server.get(&format!("{base}/content?path=app.py")).await;
    assert_eq!(status, 200);
    assert_eq!(read["path"], "app.py");
    assert_eq!(read["content"], "from flask import Flask\n");

    let (status, listing) = server.get(&format!("{base}?path=.")).await;
    assert_eq!(status, 200);
    assert_eq!(listing["path"], ".");
    let items = listing["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(keys(&items[0]), set(&["name", "type", "size", "modified"]));
    assert_eq!(
        (&items[0]["name"], &items[0]["type"], &items[0]["size"]),
        (&json!("app.py"), &json!("file"), &json!(24))
    );
    assert_eq!(
        (&items[1]["name"], &items[1]["type"], &items[1]["size"]),
        (&json!("templates"), &json!("directory"), &Value::Null)
    );
    assert!(is_timestamp(&items[0]["modified"]));
    // Default path is the workspace root.
    assert_eq!(server.get(&base).await.1["items"], listing["items"]);

    // Binary content travels as base64.
    let (status, _) = server
        .post(
            &format!("{base}/content"),
            json!({"path": "logo.bin", "content": "AAH/", "encoding": "base64"}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, bin) = server.get(&format!("{base}/content?path=logo.bin")).await;
    assert_eq!(
        (&bin["content"], &bin["encoding"]),
        (&json!("AAH/"), &json!("base64"))
    );
    let out = server
        .post(
            &format!("/api/sessions/{id}/shell"),
            json!({"cmd": "od -An -tx1 logo.bin"}),
        )
        .await
        .1;
    assert_eq!(out["stdout"].as_str().unwrap().trim(), "00 01 ff");

    let resp = server
        .client
        .delete(server.url(&format!("{base}/content?path=logo.bin")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        server.get(&format!("{base}/content?path=logo.bin")).await.0,
        404
    );
}

#[tokio::test]
async fn file_errors_are_clear_and_change_nothing() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let base = format!("/api/sessions/{id}/files");
    let (status, body) = server.get(&format!("{base}/content?path=missing.py")).await;
    assert_eq!(status, 404);
    assert_eq!(body["detail"], "missing.py not found");
    // Escapes: `..`, absolute paths, NUL bytes, symlinks made inside the container.
    let (status, body) = server
        .get(&format!("{base}/content?path=../../etc/passwd"))
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("outside the session workspace")
    );
    let (status, _) = server
        .post(
            &format!("{base}/content"),
            json!({"path": "../escape.txt", "content": "x"}),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        server
            .get(&format!("{base}/content?path=/etc/passwd"))
            .await
            .0,
        403
    );
    // What the document forbids is a 422 naming the field.
    for (path, why) in [("a\u{0}b", "NUL"), ("", "must not be empty")] {
        let (status, body) = server
            .post(
                &format!("{base}/content"),
                json!({"path": path, "content": "x"}),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("`path`") && detail.contains(why),
            "{detail}"
        );
    }
    // A directory where a file is wanted, and the other way round: the
    // workspace holds something else there.
    server
        .post(
            &format!("{base}/content"),
            json!({"path": "d/f.txt", "content": "x"}),
        )
        .await;
    assert_eq!(server.get(&format!("{base}/content?path=d")).await.0, 409);
    assert_eq!(server.get(&format!("{base}?path=d/f.txt")).await.0, 409);
    assert_eq!(
        server.delete(&format!("{base}/content?path=d")).await.0,
        200
    );
    // Base64 that does not decode is refused, as the document says.
    let (status, body) = server
        .post(
            &format!("{base}/content"),
            json!({"path": "b.bin", "content": "not base64!", "encoding": "base64"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    server
        .post(
            &format!("/api/sessions/{id}/shell"),
            json!({"cmd": "ln -s /etc/passwd leak; ln -s / root"}),
        )
        .await;
    assert_eq!(
        server.get(&format!("{base}/content?path=leak")).await.0,
        403
    );
    assert_eq!(server.get(&format!("{base}?path=root")).await.0, 403);
    assert_eq!(
        server
            .post(
                &format!("{base}/content"),
                json!({"path": "root/tmp/x", "content": "x"})
            )
            .await
            .0,
        403
    );
    // A missing field is named.
    let (status, body) = server
        .post(&format!("{base}/content"), json!({"path": "a.txt"}))
        .await;
    assert_eq!(status, 422);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("missing field `content`"),
        "{body}"
    );
    let (status, body) = server.get(&format!("{base}/content")).await;
    assert_eq!(status, 422);
    assert!(body["detail"].as_str().unwrap().contains("path"), "{body}");
    // None of it wrote anything.
    let listing = server.get(&base).await.1;
    let names: Vec<&str> = listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["leak", "root"]);
    assert!(
        !server
            .fixture
            .tmp
            .path()
            .join("workspaces/escape.txt")
            .exists()
    );
}

/// Files come from the sandbox agent over HTTP/2, in 16 KiB frames under a
/// 64 KiB flow-control window: a file of any size around those comes back
/// whole, and one over `workspace.max_read_bytes` is refused.
#[tokio::test]
async fn files_of_every_size_read_back_whole_and_over_the_limit_are_refused() {
    // HTTP/2's initial flow-control window.
    let inline = 65_535;
    let server = TestServer::with_config(|c| c.workspace.max_read_bytes = 4 * 65536).await;
    let id = server.session().await;
    let base = format!("/api/sessions/{id}/files");
    for size in [0, 1, 4095, inline - 1, inline, inline + 1, 3 * inline] {
        // Distinct lines, so a cut or a repeated block would show.
        let mut content = String::new();
        let mut i = 0;
        while content.len() < size {
            content.push_str(&format!("{i:07}\n"));
            i += 1;
        }
        content.truncate(size);
        let path = format!("size-{size}.txt");
        let (status, _) = server
            .post(
                &format!("{base}/content"),
                json!({"path": path, "content": content}),
            )
            .await;
        assert_eq!(status, 200);
        let (status, body) = server.get(&format!("{base}/content?path={path}")).await;
        assert_eq!(status, 200, "{size}: {body}");
        assert_eq!(body["content"].as_str().unwrap(), content, "size {size}");
    }
    let over = "y".repeat(4 * 65536 + 1);
    server
        .post(
            &format!("{base}/content"),
            json!({"path": "over.txt", "content": over}),
        )
        .await;
    let (status, body) = server.get(&format!("{base}/content?path=over.txt")).await;
    assert_eq!(status, 413, "{body}");
}

#[tokio::test]
async fn search_files_and_grep_follow_the_contract() {
    let server = TestServer::start().await;
    let id = server.session().await;
    for (path, content) in [
        ("app.py", "from flask import Flask\n"),
        ("models.py", "x = 1\n"),
        ("README.md", "Flask app\n"),
        ("web.js", ""),
    ] {
        server
            .post(
                &format!("/api/sessions/{id}/files/content"),
                json!({"path": path, "content": content}),
            )
            .await;
    }
    let (status, files) = server
        .post(
            &format!("/api/sessions/{id}/search/files"),
            json!({"pattern": "*.py", "path": ".", "file_types": "*.py,*.js"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        files,
        json!({"pattern": "*.py", "path": ".", "matches": ["app.py", "models.py"]})
    );

    let (status, grep) = server
        .post(
            &format!("/api/sessions/{id}/search/grep"),
            json!({"pattern": "Flask", "path": ".", "file_types": "*.py,*.md"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        grep,
        json!({"pattern": "Flask", "path": ".", "matches": [
            {"file": "README.md", "line": 1, "content": "Flask app"},
            {"file": "app.py", "line": 1, "content": "from flask import Flask"}
        ]})
    );
    let (status, body) = server
        .post(
            &format!("/api/sessions/{id}/search/grep"),
            json!({"pattern": "("}),
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("invalid regular expression"),
        "{body}"
    );
    // A directory the workspace does not have: the session is there, so not a 404.
    let (status, body) = server
        .post(
            &format!("/api/sessions/{id}/search/grep"),
            json!({"pattern": "x", "path": "no/such/dir"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    // A glob that does not parse means its own text, as in a shell.
    let (status, body) = server
        .post(
            &format!("/api/sessions/{id}/search/files"),
            json!({"pattern": "[unclosed"}),
        )
        .await;
    assert_eq!((status, &body["matches"]), (200, &json!([])), "{body}");
    assert_eq!(
        server
            .post(
                &format!("/api/sessions/{id}/search/files"),
                json!({"path": "."})
            )
            .await
            .0,
        422
    );
}

#[tokio::test]
async fn shell_runs_commands_with_contract_and_additive_fields() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let (status, out) = server
        .post(
            &format!("/api/sessions/{id}/shell"),
            json!({"cmd": "ls -la", "tty": true}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(keys(&out).is_superset(&set(&["command", "output", "timestamp"])));
    assert_eq!(out["command"], "ls -la");
    assert!(
        out["output"].as_str().unwrap().starts_with("total"),
        "{out}"
    );
    assert!(is_timestamp(&out["timestamp"]));
    assert_eq!(out["exit_code"], 0);

    let (status, out) = server
        .post(
            &format!("/api/sessions/{id}/shell"),
            json!({"cmd": "echo a; echo b >&2; exit 4"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            &out["exit_code"],
            &out["stdout"],
            &out["stderr"],
            &out["output"]
        ),
        (&json!(4), &json!("a\n"), &json!("b\n"), &json!("a\nb\n"))
    );
    let (_, out) = server
        .post(
            &format!("/api/sessions/{id}/shell"),
            json!({"cmd": "sleep 30", "timeout": 0.5}),
        )
        .await;
    assert_eq!(out["timed_out"], true);
    assert_eq!(
        server
            .post(
                &format!("/api/sessions/{id}/shell"),
                json!({"command": "ls"})
            )
            .await
            .0,
        422
    );
    // Blank commands and timeouts that are not positive are refused by the
    // document's rules, naming the field.
    for (body, field) in [
        (json!({"cmd": ""}), "`cmd`"),
        (json!({"cmd": " \t\n"}), "`cmd`"),
        (json!({"cmd": "ls", "timeout": 0}), "`timeout`"),
        (json!({"cmd": "ls", "timeout": -1}), "`timeout`"),
    ] {
        let (status, out) = server
            .post(&format!("/api/sessions/{id}/shell"), body.clone())
            .await;
        assert_eq!(status, 422, "{body}: {out}");
        assert!(out["detail"].as_str().unwrap().contains(field), "{out}");
    }
    // A request body must be an object, even where every field is optional.
    let (status, out) = server.post("/api/sessions", json!([])).await;
    assert_eq!(status, 422, "{out}");
    assert!(
        out["detail"]
            .as_str()
            .unwrap()
            .contains("must be a JSON object"),
        "{out}"
    );
}

#[tokio::test]
async fn processes_start_list_logs_and_stop_over_rest() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let base = format!("/api/sessions/{id}/processes");
    let (status, started) = server
        .post(
            &base,
            json!({"cmd": "echo Starting app...; exec sleep 300"}),
        )
        .await;
    assert_eq!(status, 200, "{started}");
    let pid = started["pid"].as_u64().unwrap();

    let (status, list) = server.get(&base).await;
    assert_eq!(status, 200);
    let p = &list[0];
    assert!(keys(p).is_superset(&set(&["pid", "cmd", "status", "log", "started"])));
    assert_eq!(
        (&p["pid"], &p["cmd"], &p["status"]),
        (
            &json!(pid),
            &json!("echo Starting app...; exec sleep 300"),
            &json!("running")
        )
    );
    assert!(p["log"].as_str().unwrap().starts_with(".agent_logs/"));
    assert!(is_timestamp(&p["started"]));

    let mut logs = Value::Null;
    for _ in 0..50 {
        logs = server.get(&format!("{base}/{pid}/logs")).await.1;
        if logs["logs"] == "Starting app...\n" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(logs, json!({"logs": "Starting app...\n", "pid": pid}));
    assert_eq!(
        server.get(&format!("{base}/{pid}/logs?lines=0")).await.1["logs"],
        ""
    );

    let (status, stopped) = server.post(&format!("{base}/{pid}/stop"), json!({})).await;
    assert_eq!(
        (status, stopped),
        (
            200,
            json!({"message": format!("Sent SIGTERM to process {pid}")})
        )
    );
    assert_eq!(server.get(&base).await.1[0]["status"], "exited");

    assert_eq!(
        server
            .post(&format!("{base}/4242424/stop"), json!({}))
            .await
            .0,
        404
    );
    assert_eq!(server.get(&format!("{base}/notanumber/logs")).await.0, 422);
    assert_eq!(
        server.get(&format!("{base}/{pid}/logs?lines=many")).await.0,
        422
    );
    // The document's bounds hold: at most 10,000 lines, pids within u32.
    assert_eq!(
        server
            .get(&format!("{base}/{pid}/logs?lines=10001"))
            .await
            .0,
        422
    );
    assert_eq!(
        server
            .get(&format!("{base}/{pid}/logs?lines=10000"))
            .await
            .0,
        200
    );
    assert_eq!(server.get(&format!("{base}/4294967296/logs")).await.0, 422);
}

#[tokio::test]
async fn bodies_over_the_limit_unknown_routes_and_methods_get_json_errors() {
    let server = TestServer::with_config(|c| c.server.max_body_bytes = 4096).await;
    let id = server.session().await;
    let big = "x".repeat(10_000);
    let (status, body) = server
        .post(
            &format!("/api/sessions/{id}/files/content"),
            json!({"path": "big.txt", "content": big}),
        )
        .await;
    assert_eq!(status, 413);
    assert!(
        body["detail"].as_str().unwrap().contains("larger than"),
        "{body}"
    );
    assert_eq!(
        server
            .get(&format!("/api/sessions/{id}/files/content?path=big.txt"))
            .await
            .0,
        404
    );
    assert_eq!(
        server.get("/api/nope").await,
        (404, json!({"detail": "Not Found"}))
    );
    let (status, body) = server.delete("/api/health").await;
    assert_eq!(
        (status, body),
        (405, json!({"detail": "Method Not Allowed"}))
    );
}

#[tokio::test]
async fn openapi_document_and_docs_pages_are_served_without_a_cdn() {
    let server = TestServer::start().await;
    let (status, doc) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/api/health",
        "/api/sessions",
        "/api/sessions/{session_id}",
        "/api/sessions/{session_id}/tasks",
        "/api/sessions/{session_id}/tasks/cancel",
        "/api/sessions/{session_id}/processes",
        "/api/sessions/{session_id}/processes/{pid}/stop",
        "/api/sessions/{session_id}/processes/{pid}/logs",
        "/api/sessions/{session_id}/files",
        "/api/sessions/{session_id}/files/content",
        "/api/sessions/{session_id}/search/files",
        "/api/sessions/{session_id}/search/grep",
        "/api/sessions/{session_id}/shell",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from /openapi.json"
        );
    }
    let create = &doc["paths"]["/api/sessions"]["post"];
    assert!(create["requestBody"].is_object());
    for page in ["/docs", "/redoc"] {
        let resp = server.client.get(server.url(page)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{page}");
        let html = resp.text().await.unwrap();
        assert!(html.contains("/openapi.json"), "{page}");
        for cdn in ["src=\"http", "href=\"http", "unpkg.com", "jsdelivr"] {
            assert!(!html.contains(cdn), "{page} loads {cdn}");
        }
    }
}

/// `POST /api/sessions/{id}/tools/{name}` runs a tool directly, under the
/// same limits, without asking for approval, with `tool_call` /
/// `tool_complete` events marked `source: "api"`.
#[tokio::test]
async fn a_tool_runs_directly_with_its_events_marked_as_from_the_api() {
    let server = TestServer::with_config(|c| {
        crogia_tests::ask_before(c, "write_file", &[]);
        c.tools.insert(
            "grep".into(),
            crogia_host::config::ToolConfig {
                enabled: false,
                ..Default::default()
            },
        );
    })
    .await;
    let id = server.session().await;
    let mut ws = server.ws(&id, None).await;
    let (status, out) = server
        .post(
            &format!("/api/sessions/{id}/tools/write_file"),
            json!({"path": "direct.txt", "content": "hello\n"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["result"], "Wrote direct.txt (6 bytes, 1 lines)");
    assert_eq!(out["is_error"], false);
    assert!(out["duration_ms"].is_u64());
    let call = ws.event().await;
    assert_eq!(
        (
            call["type"].as_str(),
            call["tool_name"].as_str(),
            call["source"].as_str()
        ),
        (Some("tool_call"), Some("write_file"), Some("api"))
    );
    assert_eq!(call["arguments"]["path"], "direct.txt");
    let done = ws.event().await;
    assert_eq!(done["type"], "tool_complete");
    assert_eq!(done["tool_call_id"], call["tool_call_id"]);
    assert_eq!(done["source"], "api");
    // It was written (and no approval was asked for).
    let (_, read) = server
        .get(&format!("/api/sessions/{id}/files/content?path=direct.txt"))
        .await;
    assert_eq!(read["content"], "hello\n");
    let (_, approvals) = server.get(&format!("/api/sessions/{id}/approvals")).await;
    assert_eq!(approvals["pending"], json!([]));

    // A failing tool is a result; refusals are statuses.
    let (status, out) = server
        .post(
            &format!("/api/sessions/{id}/tools/read_file"),
            json!({"path": "missing.txt"}),
        )
        .await;
    assert_eq!(
        (status, out["is_error"].clone()),
        (200, json!(true)),
        "{out}"
    );
    assert!(
        out["result"].as_str().unwrap().contains("not-found"),
        "{out}"
    );
    let tool = |name: &str| format!("/api/sessions/{id}/tools/{name}");
    assert_eq!(server.post(&tool("no_such_tool"), json!({})).await.0, 404);
    assert_eq!(
        server.post(&tool("grep"), json!({"pattern": "x"})).await.0,
        403
    );
    assert_eq!(
        server
            .post(&tool("read_file"), json!(["not", "an", "object"]))
            .await
            .0,
        422
    );
    assert_eq!(
        server
            .post(
                "/api/sessions/00000000/tools/read_file",
                json!({"path": "x"})
            )
            .await
            .0,
        404
    );
}
