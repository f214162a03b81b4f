//! The command-line client: `crogia session …`, `crogia task …`,
//! `crogia shell …`, `crogia files …`, `crogia tools list --url …` talk to a
//! running server over its REST and WebSocket API.
//!
//! Human output by default (a spinner while the model thinks, tool calls in
//! colour); `--json` prints the server's JSON for scripts. Exit codes: 0 on
//! success, 1 when the server refused or the task did not complete, and for
//! `shell` the command's own exit code.

use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context, bail};
use console::style;
use futures_util::StreamExt;
use serde_json::{Value, json};

/// A client of one server.
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
        let bytes = resp.bytes().await?;
        let value: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        if status >= 400 {
            let detail = value["detail"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| value.to_string());
            return Err(Refused { status, detail }.into());
        }
        Ok(value)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    fn ws_url(&self, session: &str, since: u64) -> String {
        let mut url = format!(
            "{}/ws/{session}?since={since}",
            self.base.replacen("http", "ws", 1)
        );
        if let Some(token) = &self.token {
            url.push_str(&format!(
                "&token={}",
                form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
            ));
        }
        url
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub async fn session_create(
    c: &ApiClient,
    task: Option<String>,
    json_out: bool,
) -> anyhow::Result<i32> {
    let s = c.post("/api/sessions", json!({ "task": task })).await?;
    if json_out {
        print_json(&s);
    } else {
        println!("{}", s["session_id"].as_str().unwrap_or_default());
    }
    Ok(0)
}

pub async fn session_list(c: &ApiClient, json_out: bool) -> anyhow::Result<i32> {
    let list = c.get("/api/sessions").await?;
    if json_out {
        print_json(&list);
        return Ok(0);
    }
    println!(
        "{:<10}{:<9}{:<11}{:<26}LAST TASK",
        "SESSION", "STATUS", "CONTAINER", "CREATED"
    );
    for s in list.as_array().into_iter().flatten() {
        let status = s["status"].as_str().unwrap_or_default();
        let shown = match status {
            "active" => style(status).green(),
            "error" => style(status).red(),
            _ => style(status).yellow(),
        };
        println!(
            "{:<10}{:<9}{:<11}{:<26}{}",
            s["session_id"].as_str().unwrap_or_default(),
            shown,
            s["container_status"].as_str().unwrap_or_default(),
            s["created"].as_str().unwrap_or_default(),
            one_line(s["last_task"].as_str().unwrap_or(""), 60)
        );
    }
    Ok(0)
}

pub async fn session_show(c: &ApiClient, id: &str, json_out: bool) -> anyhow::Result<i32> {
    let s = c.get(&format!("/api/sessions/{id}")).await?;
    if json_out {
        print_json(&s);
        return Ok(0);
    }
    for (k, v) in s.as_object().into_iter().flatten() {
        let v = v
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| v.to_string());
        println!("{:<19}{v}", format!("{k}:"));
    }
    Ok(0)
}

pub async fn session_delete(c: &ApiClient, id: &str, json_out: bool) -> anyhow::Result<i32> {
    let r = c
        .call(
            reqwest::Method::DELETE,
            &format!("/api/sessions/{id}"),
            None,
        )
        .await?;
    if json_out {
        print_json(&r);
    } else {
        println!("{}", r["message"].as_str().unwrap_or_default());
    }
    Ok(0)
}

pub async fn shell(c: &ApiClient, id: &str, cmd: &str, json_out: bool) -> anyhow::Result<i32> {
    let r = c
        .post(&format!("/api/sessions/{id}/shell"), json!({ "cmd": cmd }))
        .await?;
    if json_out {
        print_json(&r);
        return Ok(0);
    }
    print!("{}", r["stdout"].as_str().unwrap_or_default());
    eprint!("{}", r["stderr"].as_str().unwrap_or_default());
    if r["timed_out"] == true {
        eprintln!("{}", style("(timed out; killed)").red());
    }
    Ok(r["exit_code"].as_i64().map_or(1, |c| c as i32))
}

pub async fn files(
    c: &ApiClient,
    id: &str,
    path: Option<&str>,
    json_out: bool,
) -> anyhow::Result<i32> {
    let path = path.unwrap_or(".");
    let q: String = form_urlencoded::byte_serialize(path.as_bytes()).collect();
    match c.get(&format!("/api/sessions/{id}/files?path={q}")).await {
        Ok(listing) => {
            if json_out {
                print_json(&listing);
                return Ok(0);
            }
            for item in listing["items"].as_array().into_iter().flatten() {
                let name = item["name"].as_str().unwrap_or_default();
                match item["type"].as_str() {
                    Some("directory") => println!("{}", style(format!("{name}/")).blue().bold()),
                    _ => println!(
                        "{name:<40} {:>10}",
                        item["size"]
                            .as_u64()
                            .map(|s| s.to_string())
                            .unwrap_or_default()
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
            let file = c
                .get(&format!("/api/sessions/{id}/files/content?path={q}"))
                .await?;
            if json_out {
                print_json(&file);
            } else if file["encoding"] == "base64" {
                println!(
                    "(binary file, {} bytes base64)",
                    file["content"].as_str().unwrap_or_default().len()
                );
            } else {
                print!("{}", file["content"].as_str().unwrap_or_default());
            }
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

pub async fn tools(c: &ApiClient, json_out: bool) -> anyhow::Result<i32> {
    let tools = c.get("/api/tools").await?;
    if json_out {
        print_json(&tools);
        return Ok(0);
    }
    for t in tools.as_array().into_iter().flatten() {
        let enabled = if t["enabled"] == true {
            style("yes").green()
        } else {
            style("no").red()
        };
        println!(
            "{:<16}{:<5}{:<20}{}",
            t["name"].as_str().unwrap_or_default(),
            enabled,
            t["plugin"].as_str().unwrap_or_default(),
            first_sentence(t["description"].as_str().unwrap_or_default())
        );
    }
    Ok(0)
}

/// Posts a task and streams its events to the terminal until it ends.
/// Exit code 0 when the task completed, 1 otherwise.
pub async fn task(c: &ApiClient, id: &str, text: &str, json_out: bool) -> anyhow::Result<i32> {
    let session = c.get(&format!("/api/sessions/{id}")).await?;
    let since = session["last_event_seq"].as_u64().unwrap_or(0);
    let (mut ws, _) = tokio_tungstenite::connect_async(c.ws_url(id, since))
        .await
        .context("connecting to the session's event stream")?;
    let posted = c
        .post(
            &format!("/api/sessions/{id}/tasks"),
            json!({ "task": text }),
        )
        .await?;
    let task_id = posted["task_id"].as_str().unwrap_or_default().to_string();
    if !json_out && posted["queued"] == true {
        eprintln!(
            "{}",
            style(posted["message"].as_str().unwrap_or_default()).dim()
        );
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
        let e: Value = serde_json::from_str(&text)?;
        let kind = e["type"].as_str().unwrap_or_default();
        if kind == "task_started" && e["task_id"] == task_id.as_str() {
            mine = true;
        }
        if !mine {
            continue;
        }
        if json_out {
            println!("{text}");
        } else {
            let pause = |f: &mut dyn FnMut()| match &spinner {
                Some(s) => s.suspend(f),
                None => f(),
            };
            match kind {
                "text_delta" => pause(&mut || {
                    let content = e["content"].as_str().unwrap_or_default();
                    print!("{content}");
                    at_line_start = content.ends_with('\n');
                    let _ = out.flush();
                }),
                "tool_call" => pause(&mut || {
                    if !at_line_start {
                        println!();
                        at_line_start = true;
                    }
                    println!(
                        "{} {} {}",
                        style("▶").cyan(),
                        style(e["tool_name"].as_str().unwrap_or_default())
                            .cyan()
                            .bold(),
                        one_line(&e["arguments"].to_string(), 100)
                    );
                }),
                "tool_complete" => pause(&mut || {
                    let (mark, name) = if e["is_error"] == true {
                        (
                            style("✗").red(),
                            style(e["tool_name"].as_str().unwrap_or_default()).red(),
                        )
                    } else {
                        (
                            style("✓").green(),
                            style(e["tool_name"].as_str().unwrap_or_default()).green(),
                        )
                    };
                    println!(
                        "{mark} {name} {} {}",
                        style(format!("({} ms)", e["duration_ms"])).dim(),
                        style(one_line(e["result"].as_str().unwrap_or_default(), 100)).dim()
                    );
                }),
                "error" => pause(&mut || {
                    if !at_line_start {
                        println!();
                        at_line_start = true;
                    }
                    println!(
                        "{} {}",
                        style("error:").red().bold(),
                        e["message"].as_str().unwrap_or_default()
                    );
                }),
                _ => {}
            }
        }
        if kind == "task_completed" {
            if let Some(s) = &spinner {
                s.finish_and_clear();
            }
            let status = e["status"].as_str().unwrap_or_default();
            if !json_out {
                if !at_line_start {
                    println!();
                }
                let tokens = e["usage"]["total_tokens"].as_u64().unwrap_or(0);
                let word = if status == "completed" {
                    style(status).green()
                } else {
                    style(status).red()
                };
                eprintln!(
                    "{} {word} ({} steps, {tokens} tokens)",
                    style("task").dim(),
                    e["steps"]
                );
            }
            return Ok(if status == "completed" { 0 } else { 1 });
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
