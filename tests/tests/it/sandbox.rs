//! The sandbox layer against the real Docker engine, and sweeping the
//! containers tests leave behind.

use std::time::Duration;

use crogia_host::sandbox::{AgentError, ExecRequest, ProcessState, SandboxError, StopOutcome};
use crogia_host::workspace::{SearchError, WorkspaceError};
use crogia_tests::{TestSandbox, TestServer, sweep_containers};

#[tokio::test]
async fn exec_reports_exit_code_and_keeps_stderr_apart() {
    let t = TestSandbox::new();
    let (c, _ws) = t.container().await;
    let out = t
        .sandbox
        .exec(&c, ExecRequest::new("echo out; echo err >&2; pwd; exit 3"))
        .await
        .unwrap();
    assert_eq!(out.exit_code, Some(3));
    assert_eq!(out.stdout, "out\n/workspace\n");
    assert_eq!(out.stderr, "err\n");
    assert!(!out.timed_out);
    assert!(!out.truncated);
}

#[tokio::test]
async fn exec_handles_quotes_and_multiline_commands_verbatim() {
    let t = TestSandbox::new();
    let (c, _ws) = t.container().await;
    let cmd = "printf '%s\\n' \"a 'b' \\$HOME\"\nfor i in 1 2; do echo $i; done";
    let out = t.sandbox.exec(&c, ExecRequest::new(cmd)).await.unwrap();
    assert_eq!(out.stdout, "a 'b' $HOME\n1\n2\n");
    assert_eq!(out.exit_code, Some(0));
}

#[tokio::test]
async fn timed_out_command_is_killed_with_its_children() {
    let t = TestSandbox::new();
    let (c, _ws) = t.container().await;
    let out = t
        .sandbox
        .exec(
            &c,
            ExecRequest::new("sleep 301 & sleep 302; echo never").timeout(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    assert!(out.timed_out);
    assert!(!out.stdout.contains("never"));
    // Nothing it started is left behind.
    let ps = t
        .sandbox
        .exec(&c, ExecRequest::new("ps -eo args"))
        .await
        .unwrap();
    assert!(
        !ps.stdout.contains("sleep 30"),
        "left running:\n{}",
        ps.stdout
    );
}

#[tokio::test]
async fn output_over_the_cap_is_truncated_with_a_visible_marker() {
    let t = TestSandbox::with_config(|c| c.sandbox.output_limit_bytes = 4096);
    let (c, _ws) = t.container().await;
    let out = t
        .sandbox
        .exec(
            &c,
            ExecRequest::new("echo FIRST; head -c 5000000 /dev/zero | tr '\\0' x; echo; echo LAST"),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, Some(0));
    assert!(out.truncated);
    assert!(out.stdout.starts_with("FIRST\n"));
    assert!(out.stdout.trim_end().ends_with("LAST"));
    assert!(
        out.stdout.contains("[... crogia: output truncated,"),
        "no marker"
    );
    assert!(
        out.stdout.len() < 4096 + 200,
        "kept {} bytes",
        out.stdout.len()
    );
}

#[tokio::test]
async fn exec_in_a_missing_container_is_not_found() {
    let t = TestSandbox::new();
    let err = t
        .sandbox
        .exec("crogia-no-such-container", ExecRequest::new("true"))
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn background_process_runs_logs_and_stops_with_sigterm() {
    let t = TestSandbox::new();
    let (c, _ws) = t.container().await;
    let p = t
        .sandbox
        .start_process(&c, "echo started; exec sleep 300")
        .await
        .unwrap();
    assert!(p.pid > 1);
    assert_eq!(p.log, format!(".agent_logs/{}.log", p.id));
    assert_eq!(p.cmd, "echo started; exec sleep 300");

    let states = t
        .sandbox
        .process_states(&c, std::slice::from_ref(&p))
        .await
        .unwrap();
    assert_eq!(states, vec![ProcessState::Running]);

    // The log is in the workspace, read through the agent.
    let mut logs = String::new();
    for _ in 0..50 {
        logs = t.sandbox.tail(&c, &p.log, 50).await.unwrap();
        if logs.contains("started") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(logs, "started\n");

    assert_eq!(
        t.sandbox.stop_process(&c, &p).await.unwrap(),
        StopOutcome::Terminated
    );
    let states = t
        .sandbox
        .process_states(&c, std::slice::from_ref(&p))
        .await
        .unwrap();
    assert_eq!(
        states,
        vec![ProcessState::Exited {
            exit_code: Some(143)
        }]
    );
    // Stopping again is harmless.
    assert_eq!(
        t.sandbox.stop_process(&c, &p).await.unwrap(),
        StopOutcome::NotRunning
    );
}

#[tokio::test]
async fn process_ignoring_sigterm_is_killed_after_the_grace_period() {
    let t = TestSandbox::new(); // stop_grace_secs = 1
    let (c, _ws) = t.container().await;
    let p = t
        .sandbox
        .start_process(&c, "trap '' TERM; while true; do sleep 0.2; done")
        .await
        .unwrap();
    assert_eq!(
        t.sandbox.stop_process(&c, &p).await.unwrap(),
        StopOutcome::Killed
    );
    let states = t
        .sandbox
        .process_states(&c, std::slice::from_ref(&p))
        .await
        .unwrap();
    assert!(matches!(states[0], ProcessState::Exited { .. }));
    let ps = t
        .sandbox
        .exec(&c, ExecRequest::new("ps -eo args"))
        .await
        .unwrap();
    assert!(!ps.stdout.contains("while true"), "{}", ps.stdout);
}

#[tokio::test]
async fn exited_process_reports_its_exit_code() {
    let t = TestSandbox::new();
    let (c, _ws) = t.container().await;
    let p = t.sandbox.start_process(&c, "exit 7").await.unwrap();
    let mut state = ProcessState::Running;
    for _ in 0..50 {
        state = t
            .sandbox
            .process_states(&c, std::slice::from_ref(&p))
            .await
            .unwrap()[0];
        if state != ProcessState::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, ProcessState::Exited { exit_code: Some(7) });
}

#[tokio::test]
async fn processes_from_before_a_container_restart_are_not_running() {
    let t = TestSandbox::new();
    let (c, _ws) = t.container().await;
    let p = t.sandbox.start_process(&c, "sleep 300").await.unwrap();
    t.sandbox.stop(&c, 1).await.unwrap();
    assert!(!t.sandbox.inspect(&c).await.unwrap().running);
    t.sandbox.ensure_running(&c).await.unwrap();
    assert!(t.sandbox.inspect(&c).await.unwrap().running);
    let states = t
        .sandbox
        .process_states(&c, std::slice::from_ref(&p))
        .await
        .unwrap();
    assert!(
        matches!(states[0], ProcessState::Exited { .. }),
        "{states:?}"
    );
}

#[tokio::test]
async fn containers_carry_labels_limits_and_no_network() {
    let t = TestSandbox::new();
    let (c, ws) = t.container().await;
    let docker = t.sandbox.engine().client().await.unwrap();
    let info = docker.inspect_container(&c, None).await.unwrap();
    let hc = info.host_config.unwrap();
    assert_eq!(hc.memory, Some(512 << 20));
    assert_eq!(hc.memory_swap, Some(512 << 20));
    assert_eq!(hc.nano_cpus, Some(1_000_000_000));
    assert_eq!(hc.pids_limit, Some(256));
    assert_eq!(hc.network_mode.as_deref(), Some("none"));
    // The agent is the init.
    assert_eq!(hc.init, Some(false));
    assert!(
        hc.security_opt
            .unwrap_or_default()
            .iter()
            .any(|o| o == "no-new-privileges")
    );
    // The workspace, and the sandbox agent read-only.
    let agent = std::fs::canonicalize(&t.config.sandbox.agent_binary).unwrap();
    assert_eq!(
        hc.binds.unwrap(),
        vec![
            format!("{ws}:/workspace"),
            format!("{}:/.crogia/crogia-agent:ro", agent.display()),
        ]
    );
    let config = info.config.unwrap();
    assert_eq!(
        config.entrypoint.unwrap_or_default(),
        ["/.crogia/crogia-agent", "init"]
    );
    let labels = config.labels.unwrap();
    assert_eq!(
        labels.get("crogia.managed").map(String::as_str),
        Some("true")
    );
    assert!(labels.contains_key("crogia.session"));

    let net = t
        .sandbox
        .exec(&c, ExecRequest::new("ls /sys/class/net"))
        .await
        .unwrap();
    assert_eq!(
        net.stdout.split_whitespace().collect::<Vec<_>>(),
        vec!["lo"]
    );
}

#[tokio::test]
async fn find_by_label_and_remove_clean_up() {
    let t = TestSandbox::new();
    let (c, _ws) = t.container().await;
    let label = format!("crogia.test={}", t.label);
    let found = t.sandbox.find_by_labels(&[&label]).await.unwrap();
    assert_eq!(
        found.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
        vec![c.as_str()]
    );
    assert!(found[0].running);
    t.sandbox.remove(&c).await.unwrap();
    assert!(
        t.sandbox
            .find_by_labels(&[&label])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        t.sandbox.inspect(&c).await.unwrap_err(),
        SandboxError::NotFound(_)
    ));
    // Removing twice is fine.
    t.sandbox.remove(&c).await.unwrap();
}

#[tokio::test]
async fn symlinks_made_inside_the_container_cannot_escape_the_workspace() {
    let t = TestSandbox::new();
    let (c, _ws) = t.container().await;
    let out = t
        .sandbox
        .exec(&c, ExecRequest::new("ln -s /etc/passwd leak && ln -s / rootdir && ln -s ../.. up && echo ok > real.txt && ln -s real.txt alias"))
        .await
        .unwrap();
    assert_eq!(out.exit_code, Some(0), "{}", out.stderr);
    let outside = |e: AgentError| {
        matches!(
            e,
            AgentError::Refused(SearchError::Workspace(WorkspaceError::OutsideWorkspace(_)))
        )
    };
    for path in ["leak", "rootdir/etc/passwd", "up/etc/passwd"] {
        let err = t.sandbox.read_file(&c, path, 1 << 20).await.unwrap_err();
        assert!(outside(err), "{path}");
    }
    assert!(outside(
        t.sandbox.list_dir(&c, "rootdir").await.unwrap_err()
    ));
    assert!(outside(
        t.sandbox
            .write_file(&c, "rootdir/tmp/pwned", b"x".to_vec())
            .await
            .unwrap_err()
    ));
    assert!(outside(
        t.sandbox
            .write_file(&c, "leak", b"x".to_vec())
            .await
            .unwrap_err()
    ));
    // A link that stays inside works.
    assert_eq!(
        t.sandbox.read_file(&c, "alias", 100).await.unwrap(),
        b"ok\n"
    );
}

#[tokio::test]
async fn files_written_through_the_agent_are_the_container_s_and_back() {
    let t = TestSandbox::new();
    let (c, ws) = t.container().await;
    t.sandbox
        .write_file(&c, "src/hello.py", b"print('hello')\n".to_vec())
        .await
        .unwrap();
    let out = t
        .sandbox
        .exec(&c, ExecRequest::new("python3 src/hello.py > out.txt"))
        .await
        .unwrap();
    assert_eq!(out.exit_code, Some(0), "{}", out.stderr);
    assert_eq!(
        t.sandbox.read_file(&c, "out.txt", 100).await.unwrap(),
        b"hello\n"
    );
    // The same bytes are in the bind-mounted directory (the test reads it;
    // the server never does).
    assert_eq!(std::fs::read(format!("{ws}/out.txt")).unwrap(), b"hello\n");
}

#[tokio::test]
async fn sweeping_by_label_removes_leftover_containers() {
    // The harness's own guarantee: what a test leaves, the sweep removes.
    let server = TestServer::start().await;
    server.session().await;
    let label = format!("crogia.test={}", server.fixture.label);
    assert_eq!(
        server
            .fixture
            .sandbox
            .find_by_labels(&[&label])
            .await
            .unwrap()
            .len(),
        1
    );
    sweep_containers(&server.fixture.label);
    assert!(
        server
            .fixture
            .sandbox
            .find_by_labels(&[&label])
            .await
            .unwrap()
            .is_empty()
    );
}
