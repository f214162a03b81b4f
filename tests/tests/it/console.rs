//! The web console in real headless Chromium (Debian's chromium and
//! chromium-driver), driven over WebDriver: create a session with a task,
//! watch it stream to completion (scripted model), open the file it wrote,
//! stop a process it started; with auth on, ask for the token and type into
//! a terminal. Screenshots of the main views go to
//! target/screenshots/ (or docs/ with CROGIA_TEST_UPDATE_SCREENSHOTS=1).

use std::process::Stdio;
use std::time::Duration;

use crogia_tests::model::{Reply, ScriptedModel};
use crogia_tests::process::free_port;
use crogia_tests::{ask_before, repo_root, server_with_model};
use fantoccini::{ClientBuilder, Locator};
use serde_json::json;

struct Driver {
    /// Killed when the driver drops.
    _child: tokio::process::Child,
    url: String,
    /// The browser's profile, unique to this driver: every Chromium process
    /// it starts names it, so they can all be found and ended.
    profile: tempfile::TempDir,
}

/// Chromium outlives a chromedriver that is killed (a test that fails
/// never closes its browser): its processes are ended by their profile.
impl Drop for Driver {
    fn drop(&mut self) {
        let _ = std::process::Command::new("pkill")
            .args(["-KILL", "-f"])
            .arg(self.profile.path())
            .status();
    }
}

impl Driver {
    async fn start() -> Self {
        let port = free_port();
        let child = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; just test installs it)");
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if reqwest::get(format!("{url}/status")).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            _child: child,
            url,
            profile: tempfile::tempdir().unwrap(),
        }
    }
}

async fn browser(driver: &Driver) -> fantoccini::Client {
    // Two rustls providers are compiled in (ring, aws-lc-rs); pick one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1400,900",
            format!("--user-data-dir={}", driver.profile.path().display()),
        ]}),
    );
    ClientBuilder::rustls()
        .unwrap()
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session")
}

async fn screenshot(client: &fantoccini::Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    let dir = if std::env::var_os("CROGIA_TEST_UPDATE_SCREENSHOTS").is_some() {
        repo_root().join("docs")
    } else {
        repo_root().join("target/screenshots")
    };
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

#[tokio::test]
async fn the_console_runs_a_task_shows_its_file_and_stops_its_process() {
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![(
            "write_file".into(),
            json!({"path": "app.py", "content": "from flask import Flask\n\napp = Flask(__name__)\n\n@app.route('/')\ndef hello():\n    return 'Hello from Crogia'\n"}),
        )]),
        Reply::Tools(vec![("start_process".into(), json!({"command": "python3 -c 'import time; print(\"serving\"); time.sleep(600)'"}))]),
        Reply::Text("I wrote app.py with a Flask app and started it in the background.".into()),
    ])
    .await;
    // An MCP server that cannot start: the tools view reports it.
    let server = server_with_model(&model, |c| {
        c.mcp.servers.insert(
            "broken".into(),
            crogia_host::config::McpServerConfig {
                command: vec!["/nonexistent/mcp-server".into()],
                ..Default::default()
            },
        );
    })
    .await;
    let driver = Driver::start().await;
    let c = browser(&driver).await;
    let wait = Duration::from_secs(30);

    new_session_with_task(&c, &server, "Create a Flask app and run it").await;

    // The task streams to completion: its tool calls, then its answer.
    c.wait()
        .at_most(wait)
        .for_element(Locator::Css(".event.done.completed"))
        .await
        .unwrap();
    let tools = c.find_all(Locator::Css(".event.tool .name")).await.unwrap();
    let mut names = Vec::new();
    for t in tools {
        names.push(t.text().await.unwrap());
    }
    assert_eq!(names, ["write_file", "start_process"]);
    let message = c
        .find(Locator::Css(".event.message"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        message,
        "I wrote app.py with a Flask app and started it in the background."
    );
    screenshot(&c, "console-activity").await;

    // The file it wrote, in the file tree and the editor.
    c.find(Locator::Css("[data-tab=files]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(wait)
        .for_element(Locator::Css("[data-path='app.py']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let mut content = String::new();
    for _ in 0..50 {
        content = c
            .find(Locator::Css("#file-content"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .unwrap_or_default();
        if content.contains("Flask") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(content.contains("return 'Hello from Crogia'"), "{content}");
    screenshot(&c, "console-files").await;

    // The process it started, stopped from the console.
    c.find(Locator::Css("[data-tab=processes]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(wait)
        .for_element(Locator::Css("#processes button.danger:not([disabled])"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let mut stopped = false;
    for _ in 0..100 {
        let (_, list) = server
            .get(&format!(
                "/api/sessions/{}/processes",
                first_session(&server).await
            ))
            .await;
        if list[0]["status"] == "exited" {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stopped, "the process was not stopped");
    c.find(Locator::Css("#refresh-processes"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    screenshot(&c, "console-processes").await;

    c.find(Locator::Css("#show-tools"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(wait)
        .for_element(Locator::Css("#tools-table tbody tr"))
        .await
        .unwrap();
    let broken = c
        .wait()
        .at_most(wait)
        .for_element(Locator::Css("#mcp-table tr.mcp-server"))
        .await
        .unwrap()
        // (below the fold of the scrolled panel, so not "visible" text)
        .prop("textContent")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(
        broken.contains("broken")
            && broken.contains("failed")
            && broken.contains("container: /nonexistent/mcp-server")
            && broken.contains("cannot start /nonexistent/mcp-server"),
        "{broken}"
    );
    screenshot(&c, "console-tools").await;

    // The usage view: the task's three model calls, from the ledger.
    c.find(Locator::Css("#show-usage"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let row = c
        .wait()
        .at_most(wait)
        .for_element(Locator::Css("#usage-table tr.usage-row"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(row.contains("scripted"), "{row}");
    // Only the usage view shows, not the session behind it.
    assert!(
        !c.find(Locator::Css("#session"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap(),
        "the session's panel shows under the usage view"
    );
    let total = c
        .find(Locator::Css("#usage-table tr.usage-total"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let numbers: Vec<&str> = total.split_whitespace().collect();
    assert!(
        numbers.windows(4).any(|w| w == ["3", "30", "15", "45"]),
        "calls, prompt, completion and total tokens of the three calls: {total}"
    );
    screenshot(&c, "console-usage").await;
    c.close().await.unwrap();
    drop(driver);
}

/// Opens the console and creates a session with `task` from its form.
async fn new_session_with_task(
    c: &fantoccini::Client,
    server: &crogia_tests::TestServer,
    task: &str,
) {
    c.goto(&server.base).await.unwrap();
    c.find(Locator::Css("#new-task"))
        .await
        .unwrap()
        .send_keys(task)
        .await
        .unwrap();
    c.find(Locator::Css("#new-session button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn first_session(server: &crogia_tests::TestServer) -> String {
    server.get("/api/sessions").await.1[0]["session_id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn the_console_asks_for_the_token_and_then_works_with_auth_on() {
    const TOKEN: &str = "console-test-token-0123456789abcdef";
    let model = ScriptedModel::start(vec![Reply::Text("Done: nothing to change.".into())]).await;
    let server = server_with_model(&model, |c| c.auth.tokens = vec![TOKEN.into()]).await;
    let driver = Driver::start().await;
    let c = browser(&driver).await;
    let wait = Duration::from_secs(30);

    // The session list is refused without a token, so the console asks for one.
    c.goto(&server.base).await.unwrap();
    let input = c
        .wait()
        .at_most(wait)
        .for_element(Locator::Css("#token-dialog[open] #token-input"))
        .await
        .unwrap();
    input.send_keys(TOKEN).await.unwrap();
    c.find(Locator::Css("#token-dialog button[value=ok]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // With it, REST and the WebSocket (?token=) both work: a task streams to completion.
    c.find(Locator::Css("#new-task"))
        .await
        .unwrap()
        .send_keys("Check the workspace")
        .await
        .unwrap();
    c.find(Locator::Css("#new-session button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(wait)
        .for_element(Locator::Css(".event.done.completed"))
        .await
        .unwrap();
    let message = c
        .find(Locator::Css(".event.message"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(message, "Done: nothing to change.");
    let sessions: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/sessions", server.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sessions[0]["last_task"], "Check the workspace");

    // The Terminal tab: a shell in the session's container (its WebSocket
    // carries the token too), typed into like any terminal.
    c.find(Locator::Css("[data-tab=terminal]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let input = c
        .wait()
        .at_most(wait)
        .for_element(Locator::Css("#terminal .xterm-helper-textarea"))
        .await
        .unwrap();
    let mut connected = false;
    for _ in 0..100 {
        let state = c
            .find(Locator::Css("#term-state"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if state == "connected" {
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(connected, "the terminal did not connect");
    input
        .send_keys("echo $((6*7)) from-$(pwd)\u{E007}")
        .await
        .unwrap();
    let mut screen = String::new();
    for _ in 0..100 {
        screen = c
            .find(Locator::Css("#terminal .xterm-rows"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if screen.contains("42 from-/workspace") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(screen.contains("42 from-/workspace"), "{screen}");
    screenshot(&c, "console-terminal").await;
    c.close().await.unwrap();
    drop(driver);
}

/// A tool call that waits for approval shows in the console with its
/// subject and arguments, and its buttons answer it: Allow runs it, Deny
/// with a reason refuses it and the model reads the reason.
#[tokio::test]
async fn the_console_shows_waiting_approvals_and_its_buttons_answer_them() {
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![(
            "shell".into(),
            json!({"command": "touch allowed.txt"}),
        )]),
        Reply::Tools(vec![(
            "shell".into(),
            json!({"command": "touch denied.txt"}),
        )]),
        Reply::Text("Done.".into()),
    ])
    .await;
    let server = server_with_model(&model, |c| ask_before(c, "shell", &[])).await;
    let driver = Driver::start().await;
    let c = browser(&driver).await;
    let wait = Duration::from_secs(30);
    new_session_with_task(&c, &server, "Touch two files").await;

    // The first request: its subject, then Allow.
    let allow = c
        .wait()
        .at_most(wait)
        .for_element(Locator::Css(".event.approval:not(.resolved) button.allow"))
        .await
        .unwrap();
    let subject = c
        .find(Locator::Css(".event.approval .subject"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(subject, "touch allowed.txt");
    screenshot(&c, "console-approval").await;
    allow.click().await.unwrap();

    // The second (after the first is shown resolved): a reason, then Deny.
    let second = ".event.approval.resolved ~ .event.approval:not(.resolved)";
    c.wait()
        .at_most(wait)
        .for_element(Locator::Css(&format!("{second} .subject")))
        .await
        .unwrap();
    c.find(Locator::Css(&format!("{second} input")))
        .await
        .unwrap()
        .send_keys("not that one")
        .await
        .unwrap();
    c.find(Locator::Css(&format!("{second} button.deny")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(wait)
        .for_element(Locator::Css(".event.done.completed"))
        .await
        .unwrap();
    let mut states = Vec::new();
    for s in c
        .find_all(Locator::Css(".event.approval .state"))
        .await
        .unwrap()
    {
        states.push(s.text().await.unwrap());
    }
    assert_eq!(states, ["allow by user", "deny by user: not that one"]);
    let id = first_session(&server).await;
    let (_, out) = server
        .post(
            &format!("/api/sessions/{id}/shell"),
            json!({"cmd": "ls allowed.txt denied.txt 2>&1; true"}),
        )
        .await;
    let listing = out["stdout"].as_str().unwrap();
    assert!(
        listing.contains("allowed.txt") && listing.contains("No such file"),
        "{listing}"
    );
    let last = model.requests()[2]["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["content"]
        .clone();
    assert_eq!(last, "Not run: denied by the user: not that one");

    // A call a client made shows who made it.
    let (status, _) = server
        .post(
            &format!("/api/sessions/{id}/tools/read_file"),
            json!({"path": "allowed.txt"}),
        )
        .await;
    assert_eq!(status, 200);
    let tag = c
        .wait()
        .at_most(wait)
        .for_element(Locator::Css(".event.tool .source"))
        .await
        .unwrap();
    assert_eq!(tag.text().await.unwrap(), "via api");
    assert_eq!(
        c.find_all(Locator::Css(".event.tool .source"))
            .await
            .unwrap()
            .len(),
        1,
        "the model's calls carry no tag"
    );
    c.close().await.unwrap();
    drop(driver);
}

/// The Changes tab lists the session's checkpoints, shows a task's diff,
/// and forks a new session from one, which the console then opens.
#[tokio::test]
async fn the_changes_tab_shows_a_tasks_diff_and_forks_from_it() {
    let model = ScriptedModel::start(vec![
        Reply::Tools(vec![(
            "write_file".into(),
            json!({"path": "notes.txt", "content": "hello from the task\n"}),
        )]),
        Reply::Text("Wrote notes.txt.".into()),
    ])
    .await;
    let server = server_with_model(&model, |_| {}).await;
    let driver = Driver::start().await;
    let c = browser(&driver).await;
    let wait = Duration::from_secs(30);

    new_session_with_task(&c, &server, "Write the notes").await;
    c.wait()
        .at_most(wait)
        .for_element(Locator::Css(".event.done.completed"))
        .await
        .unwrap();
    let parent = first_session(&server).await;
    c.find(Locator::Css("[data-tab=changes]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The task's checkpoint (newest first), then the session's first.
    c.wait()
        .at_most(wait)
        .for_element(Locator::Css("#checkpoints li:nth-child(2)"))
        .await
        .unwrap();
    let newest = c.find(Locator::Css("#checkpoints li")).await.unwrap();
    assert!(
        newest.text().await.unwrap().contains("Write the notes"),
        "{}",
        newest.text().await.unwrap()
    );
    newest.click().await.unwrap();
    let plus = c
        .wait()
        .at_most(wait)
        .for_element(Locator::Css("#diff-patch .plus"))
        .await
        .unwrap();
    assert_eq!(plus.text().await.unwrap().trim(), "+hello from the task");
    let files = c.find(Locator::Css("#diff-files")).await.unwrap();
    let listed = files.text().await.unwrap();
    assert!(
        listed.contains("added") && listed.contains("notes.txt"),
        "{listed}"
    );
    screenshot(&c, "console-changes").await;

    // Fork from it: the console opens the new session, whose log starts
    // with the fork.
    c.find(Locator::Css("#fork-checkpoint"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let forked = c
        .wait()
        .at_most(wait)
        .for_element(Locator::XPath(
            "//div[@id='events']/div[contains(@class, 'checkpoint') and contains(., 'Forked from')]",
        ))
        .await
        .unwrap();
    assert!(
        forked
            .text()
            .await
            .unwrap()
            .contains(&format!("Forked from session {parent}")),
        "{}",
        forked.text().await.unwrap()
    );
    let sessions = server.get("/api/sessions").await.1;
    assert_eq!(sessions.as_array().unwrap().len(), 2, "{sessions}");
    let title = c.find(Locator::Css("#session-title")).await.unwrap();
    assert_ne!(title.text().await.unwrap(), parent);
    c.close().await.unwrap();
    drop(driver);
}
