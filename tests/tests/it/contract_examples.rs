//! The contract's Python and JavaScript client examples, run unchanged
//! (tests/contract/) against a real server on localhost:8000 with a scripted
//! model. They hard-code that address, so these tests take turns with it.

use std::process::Stdio;
use std::time::Duration;

use crogia_tests::model::{Reply, ScriptedModel};
use crogia_tests::{TestSandbox, TestServer, repo_root};
use serde_json::json;
use tokio::sync::Mutex;

/// Port 8000 is shared by the two examples.
static PORT_8000: Mutex<()> = Mutex::const_new(());

async fn server_on_8000(model: &ScriptedModel) -> TestServer {
    let base_url = model.base_url.clone();
    let fixture = TestSandbox::with_config(move |c| {
        c.model.base_url = base_url;
        c.model.model = "scripted".into();
    });
    TestServer::start_on(fixture, "127.0.0.1:8000").await
}

fn script() -> Vec<Reply> {
    vec![
        Reply::Tools(vec![(
            "write_file".into(),
            json!({"path": "app.py", "content": "from flask import Flask\napp = Flask(__name__)\n"}),
        )]),
        Reply::Text("Created a Flask app in app.py.".into()),
        Reply::Text("Added a route.".into()),
    ]
}

async fn run(mut cmd: tokio::process::Command) -> (bool, String) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting the example");
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("the example did not finish within 90 s")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn the_python_client_example_runs_unchanged() {
    let _port = PORT_8000.lock().await;
    let model = ScriptedModel::start(script()).await;
    let server = server_on_8000(&model).await;
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(repo_root().join("tests/contract/python_client.py"));
    let (ok, output) = run(cmd).await;
    assert!(ok, "the Python example failed:\n{output}");
    assert!(output.contains("Created session: "), "{output}");
    assert!(output.contains("Task started"), "{output}");
    assert!(output.contains("Event: task_completed"), "{output}");
    let sessions = server.get("/api/sessions").await.1;
    assert_eq!(sessions.as_array().unwrap().len(), 1);
    // The example prints "Task started" whatever the answer, and stops at
    // the first `task_completed`, which may be the first task's: the second
    // task must have been accepted and have completed on its own.
    let id = sessions[0]["session_id"].as_str().unwrap();
    assert_eq!(
        sessions[0]["last_task"],
        "Add a simple route to the Flask app"
    );
    let mut ws = server.ws(id, Some(0)).await;
    let events = ws.until_completed(2).await;
    let done: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["type"] == "task_completed")
        .map(|e| (e["task"].as_str().unwrap(), e["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        done,
        [
            ("Create a simple Flask app", "completed"),
            ("Add a simple route to the Flask app", "completed")
        ]
    );
    // Free the port before the next example takes it.
    server.stop().await;
}

#[tokio::test]
async fn the_javascript_client_example_runs_unchanged() {
    let _port = PORT_8000.lock().await;
    let model = ScriptedModel::start(script()).await;
    let server = server_on_8000(&model).await;
    let dir = repo_root().join("tests/contract");
    let mut cmd = tokio::process::Command::new("node");
    // Node 20 has WebSocket behind this flag; later versions have it always.
    cmd.current_dir(&dir).args([
        "--experimental-websocket",
        "--no-warnings",
        "--import",
        "./prelude.mjs",
        "js_client.mjs",
    ]);
    let (ok, output) = run(cmd).await;
    assert!(ok, "the JavaScript example failed:\n{output}");
    assert!(output.contains("Event: task_completed"), "{output}");
    // The prelude prints what `appendToOutput` collected when the posted
    // task completes: the second task's streamed text must be in it.
    let collected = output
        .lines()
        .find_map(|l| l.strip_prefix("OUTPUT: "))
        .unwrap_or_else(|| panic!("no OUTPUT line in:\n{output}"));
    assert!(collected.contains("Added a route."), "{output}");
    let sessions = server.get("/api/sessions").await.1;
    assert_eq!(sessions[0]["last_task"], "Add props to the React component");
    server.stop().await;
}
