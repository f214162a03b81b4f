//! The agent's state machine without Docker or HTTP: a model the test
//! answers turn by turn, tools that answer at once (or never), a real store
//! in a temporary directory.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::capabilities::{Capabilities, ProcessTable};
use crate::plugins::{ToolError, ToolInfo};
use crate::sandbox::{DockerEngine, Sandbox};
use crate::store::SessionRecord;
use crate::workspace::Workspace;

/// One turn the agent asked for: the conversation it sent, and where the
/// test puts the answer.
struct Asked {
    messages: Vec<Message>,
    answer: oneshot::Sender<Result<Turn, ModelError>>,
}

/// A model whose every turn is answered by the test.
struct DrivenModel {
    asked: mpsc::UnboundedSender<Asked>,
}

impl Model for DrivenModel {
    fn turn<'a>(
        &'a self,
        request: TurnRequest<'a>,
        _events: Option<&'a crate::events::EventLog>,
    ) -> BoxFuture<'a, Result<Turn, ModelError>> {
        let (answer, reply) = oneshot::channel();
        let _ = self.asked.send(Asked {
            messages: request.messages.to_vec(),
            answer,
        });
        Box::pin(async move {
            reply
                .await
                .unwrap_or_else(|_| Err(ModelError::Fatal("the test dropped the turn".into())))
        })
    }
}

/// `echo` returns its arguments, `fail` fails, `hang` never returns.
struct FakeTools;

impl FakeTools {
    fn all(&self) -> Vec<ToolInfo> {
        ["echo", "fail", "hang", "denied"]
            .into_iter()
            .map(|name| ToolInfo {
                name: name.into(),
                description: String::new(),
                parameters: serde_json::json!({"type": "object"}),
                plugin: "fake".into(),
                enabled: true,
                contract: "0.2.0".into(),
                declared_capabilities: Some(Vec::new()),
                capabilities: Vec::new(),
                subject: None,
                server: None,
            })
            .collect()
    }
}

impl ToolRunner for FakeTools {
    fn enabled_tools<'a>(&'a self, _session: &'a Session) -> BoxFuture<'a, Vec<ToolInfo>> {
        Box::pin(async move { self.all() })
    }

    fn has_tool(&self, name: &str) -> bool {
        matches!(name, "echo" | "fail" | "hang" | "denied")
    }

    fn tool(&self, name: &str) -> Option<ToolInfo> {
        self.all().into_iter().find(|t| t.name == name)
    }

    fn invoke<'a>(
        &'a self,
        _session: &'a Session,
        tool: &'a str,
        arguments: &'a str,
    ) -> BoxFuture<'a, Result<String, ToolError>> {
        Box::pin(async move {
            match tool {
                "echo" => Ok(arguments.to_string()),
                "fail" => Err(ToolError::Failed("it broke".into())),
                "denied" => Err(ToolError::Host {
                    kind: "denied",
                    message: "tool denied may not use the exec capability".into(),
                }),
                "hang" => std::future::pending().await,
                other => Err(ToolError::UnknownTool(other.into())),
            }
        })
    }
}

struct Harness {
    agent: Arc<Agent>,
    session: Arc<Session>,
    store: Store,
    asked: mpsc::UnboundedReceiver<Asked>,
    _dir: tempfile::TempDir,
}

fn say(text: &str) -> Result<Turn, ModelError> {
    Ok(Turn {
        text: text.into(),
        ..Turn::default()
    })
}

fn call(id: &str, tool: &str) -> Result<Turn, ModelError> {
    Ok(Turn {
        tool_calls: vec![ToolCall {
            id: id.into(),
            name: tool.into(),
            arguments: r#"{"x":1}"#.into(),
        }],
        ..Turn::default()
    })
}

async fn harness(configure: impl FnOnce(&mut Config)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    // No container stands behind these sessions to record checkpoints in.
    config.workspace.checkpoints = false;
    configure(&mut config);
    let store = Store::open(dir.path()).await.unwrap();
    let id = "0000abcd".to_string();
    store
        .insert_session(&SessionRecord {
            id: id.clone(),
            container_id: "no-container".into(),
            workdir: dir.path().join("ws").display().to_string(),
            created: chrono::Utc::now(),
            last_task: None,
            error: None,
            network: None,
            approval: "default".into(),
            owner: "local".into(),
            budget_tokens: None,
            server: None,
            engine: None,
        })
        .await
        .unwrap();
    // Never reached: the fake tools do not use the sandbox.
    let sandbox = Sandbox::new(
        DockerEngine::new("unix:///nonexistent/docker.sock"),
        config.sandbox.clone(),
    );
    let caps = Capabilities::new(
        &id,
        sandbox,
        "no-container",
        Arc::new(Workspace::create(dir.path().join("ws")).unwrap()),
        ProcessTable::new(Vec::new(), None),
        Arc::new(config.workspace.clone()),
        Arc::default(),
    );
    let events = crate::events::EventLog::open(store.clone(), &id, 1024)
        .await
        .unwrap();
    let events = Arc::new(events);
    let approvals = crate::session::SessionApprovals::new(
        &id,
        store.clone(),
        events.clone(),
        crate::session::ApprovalMode::Default,
        config.agent.approval_timeout(),
        Vec::new(),
    );
    let session = Arc::new(Session::new(crate::session::SessionParts {
        id,
        created: chrono::Utc::now(),
        container_id: "no-container".into(),
        engine: crate::config::DEFAULT_ENGINE.into(),
        caps,
        events,
        last_task: None,
        network: Arc::new(
            crate::network::SessionEgress::new(Arc::default(), Default::default())
                .expect("the default network settings are valid"),
        ),
        approvals: Arc::new(approvals),
        owner: crate::principal::LOCAL.into(),
        budget_tokens: None,
        tokens_used: 0,
        server: None,
    }));
    let (tx, asked) = mpsc::unbounded_channel();
    let agent = Agent::with_parts(
        Arc::new(config),
        store.clone(),
        Ok(Arc::new(DrivenModel { asked: tx })),
        Arc::new(FakeTools),
        Arc::new(Metrics::new()),
    );
    Harness {
        agent,
        session,
        store,
        asked,
        _dir: dir,
    }
}

impl Harness {
    async fn submit(&self, task: &str) -> Result<Submitted, AgentError> {
        self.agent.submit(&self.session, task.into()).await
    }

    /// The next turn the agent asks for.
    async fn next_turn(&mut self) -> Asked {
        tokio::time::timeout(Duration::from_secs(10), self.asked.recv())
            .await
            .expect("the agent asked the model for a turn")
            .expect("the model is still connected")
    }

    /// Every stored event, once `done` holds for them.
    async fn events_when(&self, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        for _ in 0..1000 {
            let events: Vec<Value> = self
                .store
                .events_after(&self.session.id, 0, 10_000)
                .await
                .unwrap()
                .iter()
                .map(|(_, json)| serde_json::from_str(json).unwrap())
                .collect();
            if done(&events) {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the events never reached the expected state");
    }

    async fn completed(&self, n: usize) -> Vec<Value> {
        self.events_when(|e| of_type(e, "task_completed").len() >= n)
            .await
    }
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// The event types in order, for tasks' starts and ends.
fn starts_and_ends(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "task_started" || e["type"] == "task_completed")
        .map(|e| {
            format!(
                "{} {}",
                e["type"].as_str().unwrap(),
                e["task"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn queued_tasks_run_one_at_a_time_in_submission_order() {
    let mut h = harness(|_| {}).await;
    let first = h.submit("a").await.unwrap();
    let turn = h.next_turn().await;
    let second = h.submit("b").await.unwrap();
    let third = h.submit("c").await.unwrap();
    assert_eq!((first.position, second.position, third.position), (0, 1, 2));
    assert!(h.agent.is_busy(&h.session.id));
    turn.answer.send(say("did a")).unwrap();
    for text in ["did b", "did c"] {
        h.next_turn().await.answer.send(say(text)).unwrap();
    }
    let events = h.completed(3).await;
    assert_eq!(
        starts_and_ends(&events),
        [
            "task_started a",
            "task_completed a",
            "task_started b",
            "task_completed b",
            "task_started c",
            "task_completed c"
        ]
    );
    assert!(
        of_type(&events, "task_completed")
            .iter()
            .all(|e| e["status"] == "completed")
    );
}

#[tokio::test]
async fn a_later_task_sees_the_earlier_conversation() {
    let mut h = harness(|_| {}).await;
    h.submit("first task").await.unwrap();
    h.next_turn()
        .await
        .answer
        .send(say("first answer"))
        .unwrap();
    h.completed(1).await;
    h.submit("second task").await.unwrap();
    let turn = h.next_turn().await;
    assert_eq!(
        turn.messages,
        [
            Message::User {
                content: "first task".into()
            },
            Message::Assistant {
                content: "first answer".into(),
                tool_calls: vec![]
            },
            Message::User {
                content: "second task".into()
            },
        ]
    );
}

#[tokio::test]
async fn cancel_ends_the_running_task_as_cancelled_and_the_next_one_runs() {
    let mut h = harness(|_| {}).await;
    h.submit("slow").await.unwrap();
    let stalled = h.next_turn().await;
    h.submit("after").await.unwrap();
    assert!(h.agent.cancel(&h.session.id));
    h.next_turn().await.answer.send(say("done")).unwrap();
    let events = h.completed(2).await;
    drop(stalled);
    let ends = of_type(&events, "task_completed");
    assert_eq!(ends[0]["task"], "slow");
    assert_eq!(ends[0]["status"], "cancelled");
    assert_eq!(ends[1]["status"], "completed");
    let errors = of_type(&events, "error");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["message"], "The task was cancelled.");
    assert_eq!(errors[0]["task_id"], ends[0]["task_id"]);
    assert!(!h.agent.cancel(&h.session.id), "nothing runs any more");
}

#[tokio::test]
async fn cancel_stops_a_tool_that_never_returns() {
    let mut h = harness(|_| {}).await;
    h.submit("hang").await.unwrap();
    h.next_turn().await.answer.send(call("c1", "hang")).unwrap();
    h.events_when(|e| !of_type(e, "tool_call").is_empty()).await;
    assert!(h.agent.cancel(&h.session.id));
    let events = h.completed(1).await;
    let complete = of_type(&events, "tool_complete");
    assert_eq!(complete[0]["is_error"], true);
    assert!(
        complete[0]["result"]
            .as_str()
            .unwrap()
            .contains("stopped while this tool ran")
    );
    assert_eq!(of_type(&events, "task_completed")[0]["status"], "cancelled");
}

#[tokio::test]
async fn max_steps_ends_a_task_whose_model_never_stops_calling_tools() {
    let mut h = harness(|c| c.agent.max_steps = 3).await;
    h.submit("loop").await.unwrap();
    for i in 0..3 {
        h.next_turn()
            .await
            .answer
            .send(call(&format!("c{i}"), "echo"))
            .unwrap();
    }
    let events = h.completed(1).await;
    let end = of_type(&events, "task_completed")[0];
    assert_eq!(end["status"], "max_steps");
    assert_eq!(end["steps"], 3);
    assert_eq!(of_type(&events, "tool_complete").len(), 3);
    assert!(
        of_type(&events, "error")[0]["message"]
            .as_str()
            .unwrap()
            .contains("agent.max_steps")
    );
}

/// A server killed while a tool ran left the call without a result; the
/// next task gives it one before the model is asked, so the conversation
/// stays one an OpenAI-compatible server accepts.
#[tokio::test]
async fn a_call_a_killed_server_never_answered_gets_a_result_before_the_next_task() {
    let mut h = harness(|_| {}).await;
    let before = [
        Message::User {
            content: "first".into(),
        },
        Message::Assistant {
            content: String::new(),
            tool_calls: vec![ToolCall {
                id: "c0".into(),
                name: "echo".into(),
                arguments: "{}".into(),
            }],
        },
    ]
    .map(|m| super::messages::encode(&m));
    h.store
        .append_messages(&h.session.id, None, 1, &before)
        .await
        .unwrap();
    h.submit("second").await.unwrap();
    let turn = h.next_turn().await;
    let tail: Vec<&Message> = turn.messages.iter().skip(1).collect();
    assert_eq!(
        tail,
        [
            &Message::Assistant {
                content: String::new(),
                tool_calls: vec![ToolCall {
                    id: "c0".into(),
                    name: "echo".into(),
                    arguments: "{}".into(),
                }],
            },
            &Message::Tool {
                tool_call_id: "c0".into(),
                content: super::run::NO_RESULT.into(),
            },
            &Message::User {
                content: "second".into(),
            },
        ]
    );
    turn.answer.send(say("ok")).unwrap();
    h.completed(1).await;
}

#[tokio::test]
async fn the_kind_of_a_host_failure_reaches_the_model_with_its_message() {
    let mut h = harness(|_| {}).await;
    h.submit("try").await.unwrap();
    h.next_turn()
        .await
        .answer
        .send(call("c1", "denied"))
        .unwrap();
    let turn = h.next_turn().await;
    let expected = "Error (denied): tool denied may not use the exec capability";
    assert_eq!(
        turn.messages.last(),
        Some(&Message::Tool {
            tool_call_id: "c1".into(),
            content: expected.into()
        })
    );
    turn.answer.send(say("ok")).unwrap();
    let events = h.completed(1).await;
    assert_eq!(of_type(&events, "tool_complete")[0]["result"], expected);
}

#[tokio::test]
async fn a_failing_tool_is_reported_to_the_model_and_the_task_goes_on() {
    let mut h = harness(|_| {}).await;
    h.submit("try").await.unwrap();
    h.next_turn().await.answer.send(call("c1", "fail")).unwrap();
    let turn = h.next_turn().await;
    assert_eq!(
        turn.messages.last(),
        Some(&Message::Tool {
            tool_call_id: "c1".into(),
            content: "Error: it broke".into()
        })
    );
    turn.answer.send(say("gave up")).unwrap();
    let events = h.completed(1).await;
    assert_eq!(of_type(&events, "tool_complete")[0]["is_error"], true);
    assert_eq!(of_type(&events, "task_completed")[0]["status"], "completed");
    assert_eq!(of_type(&events, "task_completed")[0]["steps"], 2);
}

#[tokio::test]
async fn a_model_failure_fails_the_task_with_its_reason() {
    let mut h = harness(|_| {}).await;
    h.submit("x").await.unwrap();
    h.next_turn()
        .await
        .answer
        .send(Err(ModelError::Fatal(
            "the model endpoint answered 401".into(),
        )))
        .unwrap();
    let events = h.completed(1).await;
    assert_eq!(of_type(&events, "task_completed")[0]["status"], "failed");
    assert_eq!(
        of_type(&events, "error")[0]["message"],
        "the model endpoint answered 401"
    );
}

#[tokio::test]
async fn the_queue_is_bounded_by_max_queued_tasks() {
    let mut h = harness(|c| c.agent.max_queued_tasks = 2).await;
    h.submit("running").await.unwrap();
    let _stalled = h.next_turn().await;
    h.submit("q1").await.unwrap();
    h.submit("q2").await.unwrap();
    let err = h.submit("q3").await.unwrap_err();
    assert!(matches!(err, AgentError::QueueFull { max: 2, .. }), "{err}");
}

#[tokio::test]
async fn hold_records_the_running_tasks_end_and_starts_nothing_until_released() {
    let mut h = harness(|_| {}).await;
    h.submit("running").await.unwrap();
    let _stalled = h.next_turn().await;
    h.submit("waiting").await.unwrap();
    h.agent.hold(&h.session.id).await;
    // hold returns once the running task's end is recorded.
    let events = h.completed(1).await;
    assert_eq!(of_type(&events, "task_completed")[0]["status"], "cancelled");
    assert!(!h.agent.is_busy(&h.session.id));
    h.submit("also waiting").await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), h.asked.recv())
            .await
            .is_err(),
        "a held session starts nothing"
    );
    h.agent.release(&h.session);
    h.next_turn().await.answer.send(say("ok")).unwrap();
    h.next_turn().await.answer.send(say("ok")).unwrap();
    let events = h.completed(3).await;
    assert_eq!(
        starts_and_ends(&events)[2..],
        [
            "task_started waiting",
            "task_completed waiting",
            "task_started also waiting",
            "task_completed also waiting"
        ]
    );
}

#[tokio::test]
async fn shutdown_interrupts_the_running_task_and_the_queued_ones() {
    let mut h = harness(|_| {}).await;
    h.submit("running").await.unwrap();
    let _stalled = h.next_turn().await;
    h.submit("queued").await.unwrap();
    h.agent.shutdown().await;
    let events = h.completed(2).await;
    let ends = of_type(&events, "task_completed");
    assert_eq!(ends[0]["status"], "interrupted");
    assert_eq!(ends[1]["status"], "interrupted");
    assert_eq!(ends[1]["steps"], 0);
    assert!(matches!(
        h.submit("late").await,
        Err(AgentError::ShuttingDown)
    ));
    let stored = h.store.unfinished_tasks().await.unwrap();
    assert!(
        stored.is_empty(),
        "every task has a final status: {stored:?}"
    );
}
