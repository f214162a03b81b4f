//! The command-line client: `crogia session …`, `crogia task …`,
//! `crogia shell …`, `crogia files …`, `crogia tools list --url …`,
//! `crogia diff|rewind|fork …` talk to a running server over its REST and WebSocket API.
//!
//! Human output by default (a spinner while the model thinks, tool calls in
//! colour); `--json` prints the server's JSON for scripts. Exit codes: 0 on
//! success, 1 when the server refused or the task did not complete, and for
//! `shell` the command's own exit code.

mod checkpoints;
mod mcp;
mod usage;

pub use checkpoints::{checkpoints, diff, fork, rewind};
pub use mcp::mcp;
pub use usage::{token_new, usage};

use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context, bail};
use console::style;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api::{
    ContentResponse, Encoding, ErrorBody, ExecChunk, ListResponse, MessageResponse, NetworkInfo,
    SessionInfo, ShellResponse, TaskResponse, ToolCallResult,
};
use crate::events::{Event, EventKind, NetworkDecision, TaskOutcome};
use crate::plugins::ToolInfo;
use crate::session::SessionStatus;
use crate::workspace::{ChangeKind, EntryKind};

/// A client of one server.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// What the server answered when it refused: its status and `detail`.
#[derive(Debug, thiserror::Error)]
#[error("{detail} (HTTP {status})")]
pub struct Refused {
    pub status: u16,
    pub detail: String,
}

impl ApiClient {
    pub fn new(url: &str, token: Option<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            base: url.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    /// One request; the JSON answer, or [`Refused`] with the server's detail.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let bytes = self.open(method, path, body).await?.bytes().await?;
        Ok(serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into())))
    }

    /// One request whose answer is still to be read (it may be a stream),
    /// or [`Refused`] with the server's detail.
    pub async fn open(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.header(reqwest::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = resp.status().as_u16();
        if status < 400 {
            return Ok(resp);
        }
        let bytes = resp.bytes().await?;
        let value: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        let detail = serde_json::from_value::<ErrorBody>(value.clone())
            .map(|e| e.detail)
            .unwrap_or_else(|_| value.to_string());
        Err(Refused { status, detail }.into())
    }

    /// [`Self::call`], with the answer read as `T` (the server's own
    /// response type) beside its JSON.
    pub async fn fetch<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(T, Value)> {
        let value = self.call(method, path, body).await?;
        Ok((typed(&value)?, value))
    }

    /// The `ws://` URL of `path_and_query` (which has a query already),
    /// with the token when there is one.
    fn ws_url(&self, path_and_query: &str) -> String {
        let mut url = format!("{}{path_and_query}", self.base.replacen("http", "ws", 1));
        if let Some(token) = &self.token {
            url.push_str(&format!(
                "&token={}",
                form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
            ));
        }
        url
    }
}

/// `value` as the response type `T`.
fn typed<T: DeserializeOwned>(value: &Value) -> anyhow::Result<T> {
    serde_json::from_value(value.clone()).with_context(|| {
        format!(
            "the server's answer is not a {}: {value}",
            std::any::type_name::<T>()
                .rsplit("::")
                .next()
                .unwrap_or("response")
        )
    })
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub async fn session_create(
    c: &ApiClient,
    task: Option<String>,
    approval: Option<String>,
    budget_tokens: Option<u64>,
    json_out: bool,
) -> anyhow::Result<i32> {
    let mut body = json!({ "task": task });
    if let Some(approval) = approval {
        body["approval"] = json!(approval);
    }
    if let Some(budget) = budget_tokens {
        body["budget_tokens"] = json!(budget);
    }
    let (s, json) = c
        .fetch::<SessionInfo>(reqwest::Method::POST, "/api/sessions", Some(body))
        .await?;
    if json_out {
        print_json(&json);
    } else {
        println!("{}", s.session_id);
    }
    Ok(0)
}

pub async fn session_list(
    c: &ApiClient,
    owner: Option<&str>,
    json_out: bool,
) -> anyhow::Result<i32> {
    let path = match owner {
        Some(owner) => format!(
            "/api/sessions?{}",
            serde_urlencoded::to_string([("owner", owner)])?
        ),
        None => "/api/sessions".into(),
    };
    let (list, json) = c
        .fetch::<Vec<SessionInfo>>(reqwest::Method::GET, &path, None)
        .await?;
    if json_out {
        print_json(&json);
        return Ok(0);
    }
    println!(
        "{:<10}{:<9}{:<11}{:<26}{:<13}LAST TASK",
        "SESSION", "STATUS", "CONTAINER", "CREATED", "OWNER"
    );
    for s in &list {
        let shown = match s.status {
            SessionStatus::Active => style("active").green(),
            SessionStatus::Error => style("error").red(),
            SessionStatus::Stopped => style("stopped").yellow(),
        };
        println!(
            "{:<10}{:<9}{:<11}{:<26}{:<13}{}",
            s.session_id,
            shown,
            s.container_status,
            s.created,
            one_line(&s.owner, 12),
            one_line(s.last_task.as_deref().unwrap_or(""), 60)
        );
    }
    Ok(0)
}

pub async fn session_show(c: &ApiClient, id: &str, json_out: bool) -> anyhow::Result<i32> {
    let (_, s) = c
        .fetch::<SessionInfo>(reqwest::Method::GET, &format!("/api/sessions/{id}"), None)
        .await?;
    if json_out {
        print_json(&s);
        return Ok(0);
    }
    // Every field the server sent, additive ones included.
    for (k, v) in s.as_object().into_iter().flatten() {
        let v = v
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| v.to_string());
        println!("{:<19}{v}", format!("{k}:"));
    }
    Ok(0)
}

/// `crogia network`: a session's network policy, shown, or changed first
/// when `allow`, `deny` or `reset` is given (what is not given stays).
pub async fn network(
    c: &ApiClient,
    id: &str,
    allow: Vec<String>,
    deny: Vec<String>,
    reset: bool,
    json_out: bool,
) -> anyhow::Result<i32> {
    let path = format!("/api/sessions/{id}/network");
    let (mut info, mut raw) = c
        .fetch::<NetworkInfo>(reqwest::Method::GET, &path, None)
        .await?;
    if reset || !allow.is_empty() || !deny.is_empty() {
        let body = if reset {
            serde_json::json!({ "allow": null, "deny": [] })
        } else {
            serde_json::json!({
                "allow": if allow.is_empty() { info.allow.clone() } else { Some(allow) },
                "deny": if deny.is_empty() { info.deny.clone() } else { deny },
            })
        };
        (info, raw) = c
            .fetch::<NetworkInfo>(reqwest::Method::PUT, &path, Some(body))
            .await?;
    }
    if json_out {
        print_json(&raw);
        return Ok(0);
    }
    let list = |l: &[String]| {
        if l.is_empty() {
            "(none)".to_string()
        } else {
            l.join(" ")
        }
    };
    println!("mode:          {}", info.mode);
    match &info.allow {
        Some(own) => println!("allow:         {}", list(own)),
        None => println!(
            "allow:         {} (the operator's)",
            list(&info.operator_allow)
        ),
    }
    println!("deny:          {}", list(&info.deny));
    println!("operator deny: {}", list(&info.operator_deny));
    println!(
        "connections:   {} open (at most {})",
        info.open_connections, info.max_connections
    );
    println!(
        "traffic:       {} bytes (at most {})",
        info.bytes_used, info.max_bytes
    );
    Ok(0)
}

pub async fn session_delete(c: &ApiClient, id: &str, json_out: bool) -> anyhow::Result<i32> {
    let (r, json) = c
        .fetch::<MessageResponse>(
            reqwest::Method::DELETE,
            &format!("/api/sessions/{id}"),
            None,
        )
        .await?;
    if json_out {
        print_json(&json);
    } else {
        println!("{}", r.message);
    }
    Ok(0)
}

pub async fn shell(c: &ApiClient, id: &str, cmd: &str, json_out: bool) -> anyhow::Result<i32> {
    if json_out {
        let (_, json) = c
            .fetch::<ShellResponse>(
                reqwest::Method::POST,
                &format!("/api/sessions/{id}/shell"),
                Some(json!({ "cmd": cmd })),
            )
            .await?;
        print_json(&json);
        return Ok(0);
    }
    // Streamed: output shows as the command writes it.
    let mut resp = c
        .open(
            reqwest::Method::POST,
            &format!("/api/sessions/{id}/shell/stream"),
            Some(json!({ "cmd": cmd })),
        )
        .await?;
    let mut pending: Vec<u8> = Vec::new();
    while let Some(bytes) = resp.chunk().await? {
        pending.extend_from_slice(&bytes);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let chunk: ExecChunk = serde_json::from_slice(&line)
                .context("the server sent a line this client cannot read")?;
            match chunk {
                ExecChunk::Stdout { data } => {
                    print!("{data}");
                    std::io::stdout().flush()?;
                }
                ExecChunk::Stderr { data } => {
                    eprint!("{data}");
                }
                ExecChunk::Exit {
                    exit_code,
                    timed_out,
                    truncated,
                } => {
                    if truncated {
                        eprintln!("{}", style("(output cut at the server's limit)").dim());
                    }
                    if timed_out {
                        eprintln!("{}", style("(timed out; killed)").red());
                    }
                    return Ok(exit_code.map_or(1, |c| c as i32));
                }
            }
        }
        if pending.len() > 1 << 20 {
            bail!("the server sent a line over 1 MiB");
        }
    }
    bail!("the command's output was cut off before it ended")
}

pub async fn files(
    c: &ApiClient,
    id: &str,
    path: Option<&str>,
    json_out: bool,
) -> anyhow::Result<i32> {
    let path = path.unwrap_or(".");
    let q: String = form_urlencoded::byte_serialize(path.as_bytes()).collect();
    let listing = c
        .fetch::<ListResponse>(
            reqwest::Method::GET,
            &format!("/api/sessions/{id}/files?path={q}"),
            None,
        )
        .await;
    match listing {
        Ok((listing, json)) => {
            if json_out {
                print_json(&json);
                return Ok(0);
            }
            for item in &listing.items {
                let name = &item.name;
                match item.kind {
                    EntryKind::Directory => {
                        println!("{}", style(format!("{name}/")).blue().bold())
                    }
                    _ => println!(
                        "{name:<40} {:>10}",
                        item.size.map(|s| s.to_string()).unwrap_or_default()
                    ),
                }
            }
            Ok(0)
        }
        // Not a directory: show the file.
        Err(e)
            if e.downcast_ref::<Refused>()
                .is_some_and(|r| r.status == 409 && r.detail.contains("not a directory")) =>
        {
            let (file, json) = c
                .fetch::<ContentResponse>(
                    reqwest::Method::GET,
                    &format!("/api/sessions/{id}/files/content?path={q}"),
                    None,
                )
                .await?;
            if json_out {
                print_json(&json);
            } else if file.encoding == Encoding::Base64 {
                println!("(binary file, {} bytes base64)", file.content.len());
            } else {
                print!("{}", file.content);
            }
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

pub async fn tools(c: &ApiClient, json_out: bool) -> anyhow::Result<i32> {
    let (tools, json) = c
        .fetch::<Vec<ToolInfo>>(reqwest::Method::GET, "/api/tools", None)
        .await?;
    if json_out {
        print_json(&json);
        return Ok(0);
    }
    for t in &tools {
        let enabled = if t.enabled {
            style("yes").green()
        } else {
            style("no").red()
        };
        // What it may use; a 0.1 tool, which cannot declare, is marked.
        let mut capabilities = t.capabilities.join(",");
        if t.declared_capabilities.is_none() {
            capabilities.push_str(" (0.1)");
        }
        println!(
            "{:<16}{:<5}{:<36}{:<20}{}",
            t.name,
            enabled,
            capabilities,
            t.plugin,
            first_sentence(&t.description)
        );
    }
    // The configured MCP servers: where each runs, and how it stands.
    let plugins = c.call(reqwest::Method::GET, "/api/plugins", None).await?;
    let servers = plugins["mcp_servers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !servers.is_empty() {
        println!("\nMCP servers:");
    }
    for m in &servers {
        let command: Vec<&str> = m["command"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let runs = if command.is_empty() {
            m["url"].as_str().unwrap_or_default().to_string()
        } else {
            format!("container: {}", command.join(" "))
        };
        let state = m["state"].as_str().unwrap_or_default();
        let shown = match state {
            "ready" => style(state).green(),
            "failed" => style(state).red(),
            _ => style(state).dim(),
        };
        let tools = m["tools"].as_array().map_or(0, Vec::len);
        println!(
            "{:<16}{:<8}{:<5}{}",
            m["name"].as_str().unwrap_or_default(),
            shown,
            tools,
            runs
        );
        if let Some(error) = m["error"].as_str() {
            println!("    {}", style(error).red());
        }
    }
    Ok(0)
}

/// Runs a tool in a session and prints what it gave. Exit code 1 when the
/// tool failed.
pub async fn tool_call(
    c: &ApiClient,
    session: &str,
    name: &str,
    arguments: &str,
    json_out: bool,
) -> anyhow::Result<i32> {
    let arguments: Value = serde_json::from_str(arguments)
        .context("the arguments must be a JSON object, e.g. '{\"path\": \"app.py\"}'")?;
    if !arguments.is_object() {
        bail!("the arguments must be a JSON object, e.g. '{{\"path\": \"app.py\"}}'");
    }
    let (out, json) = c
        .fetch::<ToolCallResult>(
            reqwest::Method::POST,
            &format!("/api/sessions/{session}/tools/{name}"),
            Some(arguments),
        )
        .await?;
    if json_out {
        print_json(&json);
    } else if out.is_error {
        eprintln!("{}", out.result);
    } else {
        print!("{}", out.result);
        if !out.result.ends_with('\n') {
            println!();
        }
    }
    Ok(i32::from(out.is_error))
}

/// How `crogia task` answers the tool calls that wait for approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approve {
    /// Ask on the terminal (y / a / n and a reason), reading stdin.
    Ask,
    /// Allow everything (`--yes`).
    All,
    /// Leave them to someone else (`--json`: scripts decide).
    Leave,
}

/// Asks on stdin about one request and sends the answer. Returns false at
/// the end of the input (no more questions: the rest wait for someone
/// else).
async fn ask_person(c: &ApiClient, session: &str, approval: &str, what: String) -> bool {
    let answer = tokio::task::spawn_blocking(move || {
        let read = || {
            let mut line = String::new();
            match std::io::stdin().read_line(&mut line) {
                Ok(0) | Err(_) => None,
                Ok(_) => Some(line.trim().to_string()),
            }
        };
        loop {
            eprint!(
                "{} {what}\n  allow? [y]es / [a]lways in this session / [n]o: ",
                style("?").yellow().bold()
            );
            let word = read()?;
            match word.to_ascii_lowercase().as_str() {
                "y" | "yes" => return Some(("allow", None)),
                "a" | "always" => return Some(("allow_session", None)),
                "n" | "no" => {
                    eprint!("  why (optional; the model reads it): ");
                    let why = read().filter(|w| !w.is_empty());
                    return Some(("deny", why));
                }
                _ => eprintln!("  answer y, a or n"),
            }
        }
    })
    .await
    .ok()
    .flatten();
    let Some((decision, message)) = answer else {
        eprintln!(
            "{}",
            style(format!(
                "  no answer on stdin; it waits for POST /api/sessions/{session}/approvals/{approval} or the console"
            ))
            .dim()
        );
        return false;
    };
    decide(c, session, approval, decision, message).await;
    true
}

/// Sends a decision; a failure (say, it expired meanwhile) is reported.
async fn decide(
    c: &ApiClient,
    session: &str,
    approval: &str,
    decision: &str,
    message: Option<String>,
) {
    let sent = c
        .fetch::<Value>(
            reqwest::Method::POST,
            &format!("/api/sessions/{session}/approvals/{approval}"),
            Some(json!({ "decision": decision, "message": message })),
        )
        .await;
    if let Err(e) = sent {
        eprintln!("{} {e}", style("approval not sent:").red());
    }
}

/// Posts a task and streams its events to the terminal until it ends.
/// Exit code 0 when the task completed, 1 otherwise. Tool calls that wait
/// for approval are answered as `approve` says.
pub async fn task(
    c: &ApiClient,
    id: &str,
    text: &str,
    json_out: bool,
    approve: Approve,
) -> anyhow::Result<i32> {
    let (session, _) = c
        .fetch::<SessionInfo>(reqwest::Method::GET, &format!("/api/sessions/{id}"), None)
        .await?;
    let since = session.last_event_seq;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(c.ws_url(&format!("/ws/{id}?since={since}")))
            .await
            .context("connecting to the session's event stream")?;
    let (posted, _) = c
        .fetch::<TaskResponse>(
            reqwest::Method::POST,
            &format!("/api/sessions/{id}/tasks"),
            Some(json!({ "task": text })),
        )
        .await?;
    let task_id = posted.task_id;
    if !json_out && posted.queued {
        eprintln!("{}", style(posted.message).dim());
    }
    let spinner = (!json_out).then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        s.enable_steady_tick(Duration::from_millis(100));
        s.set_message("waiting for the model");
        s
    });
    let mut mine = false;
    let mut at_line_start = true;
    // One question at a time; none after the input ends.
    let asking = std::sync::Arc::new(tokio::sync::Mutex::new(true));
    let mut out = std::io::stdout();
    while let Some(frame) = ws.next().await {
        let text = match frame? {
            tokio_tungstenite::tungstenite::Message::Text(t) => t,
            tokio_tungstenite::tungstenite::Message::Close(f) => {
                bail!(
                    "the server closed the stream: {}",
                    f.map(|f| f.reason.to_string()).unwrap_or_default()
                )
            }
            _ => continue,
        };
        let event: Event = serde_json::from_str(&text)
            .with_context(|| format!("the server sent an event this client cannot read: {text}"))?;
        if let EventKind::TaskStarted {
            task_id: started, ..
        } = &event.kind
            && *started == task_id
        {
            mine = true;
        }
        if !mine {
            continue;
        }
        if let EventKind::ApprovalRequested {
            approval_id,
            tool_name,
            subject,
            task_id: asked_for,
            ..
        } = &event.kind
            && asked_for.as_ref().is_none_or(|t| *t == task_id)
        {
            let (c, session, approval) = (c.clone(), id.to_string(), approval_id.clone());
            match approve {
                Approve::All => {
                    tokio::spawn(async move {
                        decide(&c, &session, &approval, "allow", None).await;
                    });
                }
                Approve::Ask => {
                    let what = format!("{tool_name} wants approval for: {subject}");
                    let asking = asking.clone();
                    let spinner = spinner.clone();
                    tokio::spawn(async move {
                        let mut open = asking.lock().await;
                        if *open {
                            if let Some(s) = &spinner {
                                s.set_message("waiting for your answer");
                            }
                            *open = ask_person(&c, &session, &approval, what).await;
                        }
                    });
                }
                Approve::Leave => {}
            }
        }
        if json_out {
            println!("{text}");
        } else {
            let pause = |f: &mut dyn FnMut()| match &spinner {
                Some(s) => s.suspend(f),
                None => f(),
            };
            match &event.kind {
                EventKind::TextDelta { content } => pause(&mut || {
                    print!("{content}");
                    at_line_start = content.ends_with('\n');
                    let _ = out.flush();
                }),
                EventKind::ToolCall {
                    tool_name,
                    arguments,
                    ..
                } => pause(&mut || {
                    if !at_line_start {
                        println!();
                        at_line_start = true;
                    }
                    println!(
                        "{} {} {}",
                        style("▶").cyan(),
                        style(tool_name).cyan().bold(),
                        one_line(&arguments.to_string(), 100)
                    );
                }),
                EventKind::ToolComplete {
                    tool_name,
                    result,
                    is_error,
                    duration_ms,
                    ..
                } => pause(&mut || {
                    let (mark, name) = if *is_error {
                        (style("✗").red(), style(tool_name).red())
                    } else {
                        (style("✓").green(), style(tool_name).green())
                    };
                    println!(
                        "{mark} {name} {} {}",
                        style(format!("({duration_ms} ms)")).dim(),
                        style(one_line(result, 100)).dim()
                    );
                }),
                EventKind::Error { message, .. } => pause(&mut || {
                    if !at_line_start {
                        println!();
                        at_line_start = true;
                    }
                    println!("{} {message}", style("error:").red().bold());
                }),
                EventKind::FileChanged { path, kind } => pause(&mut || {
                    if !at_line_start {
                        println!();
                        at_line_start = true;
                    }
                    let word = match kind {
                        ChangeKind::Created => "created",
                        ChangeKind::Modified => "modified",
                        ChangeKind::Deleted => "deleted",
                    };
                    println!("{}", style(format!("  {word} {path}")).dim());
                }),
                EventKind::ApprovalResolved { decision, by, .. } => pause(&mut || {
                    let line = format!("  {} by the {by}", decision.as_str());
                    if decision.allows() {
                        println!("{}", style(line).dim());
                    } else {
                        println!("{}", style(line).red());
                    }
                }),
                EventKind::NetworkRequest {
                    host,
                    port,
                    decision,
                    reason,
                    connections,
                    ..
                } => pause(&mut || {
                    if !at_line_start {
                        println!();
                        at_line_start = true;
                    }
                    let times = if *connections > 1 {
                        format!(" x{connections}")
                    } else {
                        String::new()
                    };
                    let line = format!("  network {host}:{port}{times} {reason}");
                    match decision {
                        NetworkDecision::Allowed => println!("{}", style(line).dim()),
                        NetworkDecision::Denied => println!("{}", style(line).red()),
                    }
                }),
                _ => {}
            }
        }
        if let EventKind::TaskCompleted {
            status,
            usage,
            steps,
            ..
        } = &event.kind
        {
            if let Some(s) = &spinner {
                s.finish_and_clear();
            }
            let completed = *status == TaskOutcome::Completed;
            if !json_out {
                if !at_line_start {
                    println!();
                }
                let word = status.as_str();
                let word = if completed {
                    style(word).green()
                } else {
                    style(word).red()
                };
                eprintln!(
                    "{} {word} ({steps} steps, {} tokens)",
                    style("task").dim(),
                    usage.total_tokens
                );
            }
            return Ok(if completed { 0 } else { 1 });
        }
    }
    bail!("the event stream ended before the task did")
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
    }
}

/// The first sentence of a description, for one-line listings.
pub fn first_sentence(text: &str) -> &str {
    let line = text.lines().next().unwrap_or_default();
    match line.find(". ") {
        Some(i) => &line[..=i],
        None => line,
    }
}

/// The local terminal in raw mode (keys go to the remote shell as typed,
/// Ctrl-C included) until dropped.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enable() -> anyhow::Result<Self> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).context("reading the terminal's mode")?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw)
            .context("putting the terminal in raw mode")?;
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

/// The local terminal's size, columns and rows.
fn local_size() -> Option<(u16, u16)> {
    let size = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
    (size.ws_col > 0 && size.ws_row > 0).then_some((size.ws_col, size.ws_row))
}

/// How long a terminal fed from a pipe stays quiet before Ctrl-D is typed.
const QUIET: Duration = Duration::from_millis(300);

/// `crogia term ID`: an interactive shell in a session's container, over
/// `/ws/{id}/pty`. On a terminal, keys go through raw and its size follows
/// the window; with piped input, the input is typed, then Ctrl-D each time
/// the terminal has been quiet for a moment (one typed at once would be lost
/// while the shell is still starting) until the shell exits.
/// Exit code 0 when the shell exited, 1 when the connection ended otherwise.
pub async fn term(c: &ApiClient, id: &str) -> anyhow::Result<i32> {
    use std::io::IsTerminal;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::Message;
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let (cols, rows) = local_size().unwrap_or((80, 24));
    let url = c.ws_url(&format!("/ws/{id}/pty?cols={cols}&rows={rows}"));
    let ws = match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => ws,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let detail = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                .and_then(|v| v["detail"].as_str().map(str::to_string))
                .unwrap_or_default();
            bail!(
                "the server refused the terminal ({}): {detail}",
                response.status()
            );
        }
        Err(e) => return Err(e).context("connecting to the session's terminal"),
    };
    let _raw = if interactive {
        Some(RawMode::enable()?)
    } else {
        None
    };
    let (mut tx, mut rx) = ws.split();
    use futures_util::SinkExt;
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let mut window = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    let mut buf = vec![0u8; 8192];
    let mut typing = true;
    let quiet = tokio::time::sleep(QUIET);
    tokio::pin!(quiet);
    let code = loop {
        tokio::select! {
            read = stdin.read(&mut buf), if typing => match read {
                Ok(n) if n > 0 => {
                    tx.send(Message::Binary(buf[..n].to_vec().into())).await?;
                }
                // Input ended: Ctrl-D once the terminal goes quiet.
                _ => {
                    typing = false;
                    quiet.as_mut().reset(tokio::time::Instant::now() + QUIET);
                }
            },
            () = &mut quiet, if !typing => {
                tx.send(Message::Binary(vec![4u8].into())).await?;
                quiet.as_mut().reset(tokio::time::Instant::now() + QUIET);
            }
            _ = window.recv() => {
                if let Some((cols, rows)) = local_size() {
                    let resize = json!({"type": "resize", "cols": cols, "rows": rows});
                    tx.send(Message::Text(resize.to_string().into())).await?;
                }
            }
            frame = rx.next() => match frame {
                Some(Ok(Message::Binary(data))) => {
                    stdout.write_all(&data).await?;
                    stdout.flush().await?;
                    quiet.as_mut().reset(tokio::time::Instant::now() + QUIET);
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                    break if code == 1000 { 0 } else { 1 };
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break 1,
            },
        }
    };
    Ok(code)
}
