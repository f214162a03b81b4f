//! `/ws/{session_id}/pty`: an interactive terminal in a session's container.

use std::time::Duration;

use crogia_tests::TestServer;
use serde_json::json;

#[tokio::test]
async fn a_terminal_runs_a_shell_in_the_workspace_resizes_and_dies_with_its_client() {
    let server = TestServer::start().await;
    let id = server.session().await;
    server
        .post(
            &format!("/api/sessions/{id}/files/content"),
            json!({"path": "hello.txt", "content": "from the workspace"}),
        )
        .await;
    let mut term = server.terminal(&id, 100, 30).await;
    // The shell sits in /workspace on a real terminal of the asked size.
    term.type_in("tty; stty size; cat hello.txt; echo; echo $((6*7))\n")
        .await;
    term.until("/dev/pts/").await;
    term.until("30 100").await;
    term.until("from the workspace").await;
    term.until("42").await;
    // A resize reaches the shell.
    term.send_text(r#"{"type":"resize","cols":120,"rows":40}"#)
        .await;
    term.type_in("stty size\n").await;
    term.until("40 120").await;
    // Interactive input: a program reading the terminal gets what is typed.
    term.type_in("read answer; echo got-$answer\n").await;
    term.type_in("yes-typed\n").await;
    term.until("got-yes-typed").await;

    // The client goes away mid-command: the command and the shell die.
    term.type_in("sleep 4242\n").await;
    let mut seen = false;
    for _ in 0..50 {
        if server.process_running(&id, "sleep 4242").await {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "the command never started");
    drop(term);
    let mut gone = false;
    for _ in 0..100 {
        if !server.process_running(&id, "sleep 4242").await {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the terminal's command outlived its client");
    assert!(
        !server.process_running(&id, "bash -l").await,
        "the shell outlived its client"
    );
}

#[tokio::test]
async fn a_terminal_whose_shell_exits_closes_normally_and_bad_input_is_refused() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let mut term = server.terminal(&id, 80, 24).await;
    term.type_in("exit\n").await;
    assert_eq!(term.closed().await.0, 1000);

    // A text frame that is not a control message ends the connection.
    let mut term = server.terminal(&id, 80, 24).await;
    term.send_text("hello").await;
    let (code, reason) = term.closed().await;
    assert_eq!(code, 1007, "{reason}");

    // Refusals are HTTP answers before the upgrade.
    let ws = server.base.replacen("http", "ws", 1);
    for (url, status) in [
        (format!("{ws}/ws/{id}/pty?cols=0&rows=24"), 422),
        (format!("{ws}/ws/{id}/pty?cols=80&rows=5000"), 422),
        (format!("{ws}/ws/deadbeef/pty"), 404),
    ] {
        match tokio_tungstenite::connect_async(&url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), status, "{url}");
            }
            other => panic!("{url}: expected {status}, got {other:?}"),
        }
    }
}
