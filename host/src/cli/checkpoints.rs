//! `crogia checkpoints`, `crogia diff`, `crogia rewind`, `crogia fork`: a
//! session's checkpoints, what changed between them, going back to one,
//! and a new session from one. A checkpoint may be named by a prefix of
//! its id (as git's are) or by its number in the list.

use anyhow::bail;
use console::style;
use serde_json::{Value, json};

use super::{ApiClient, one_line, print_json};
use crate::api::{CheckpointInfo, SessionInfo};

/// Shortest id prefix taken for a checkpoint.
const MIN_PREFIX: usize = 4;

async fn list(c: &ApiClient, session: &str) -> anyhow::Result<(Vec<CheckpointInfo>, Value)> {
    c.fetch::<Vec<CheckpointInfo>>(
        reqwest::Method::GET,
        &format!("/api/sessions/{session}/checkpoints"),
        None,
    )
    .await
}

/// The full id of the checkpoint `given` names: a whole id, a unique prefix
/// of one, or its number (`seq`) in the session's list.
async fn resolve(c: &ApiClient, session: &str, given: &str) -> anyhow::Result<String> {
    if given.len() == 40 {
        return Ok(given.to_string());
    }
    let (all, _) = list(c, session).await?;
    if let Ok(seq) = given.parse::<u64>()
        && let Some(found) = all.iter().find(|p| p.seq == seq)
    {
        return Ok(found.checkpoint_id.clone());
    }
    if given.len() < MIN_PREFIX {
        bail!(
            "{given:?}: give a checkpoint's number or at least {MIN_PREFIX} characters of its id"
        );
    }
    let matching: Vec<&CheckpointInfo> = all
        .iter()
        .filter(|p| p.checkpoint_id.starts_with(given))
        .collect();
    match matching.as_slice() {
        [one] => Ok(one.checkpoint_id.clone()),
        [] => bail!("session {session} has no checkpoint {given:?}"),
        _ => bail!("{given:?} names more than one checkpoint of session {session}"),
    }
}

/// `crogia checkpoints ID [--take]`: oldest first, after recording one now
/// when asked.
pub async fn checkpoints(
    c: &ApiClient,
    session: &str,
    take: bool,
    json_out: bool,
) -> anyhow::Result<i32> {
    if take {
        c.fetch::<CheckpointInfo>(
            reqwest::Method::POST,
            &format!("/api/sessions/{session}/checkpoints"),
            None,
        )
        .await?;
    }
    let (all, json) = list(c, session).await?;
    if json_out {
        print_json(&json);
        return Ok(0);
    }
    println!(
        "{:<5}{:<14}{:<26}{:>7} {:>8} {:>8}  TASK",
        "#", "CHECKPOINT", "CREATED", "FILES", "+", "-"
    );
    for p in &all {
        let task = match &p.task {
            Some(task) => one_line(task, 50),
            None if p.seq == 1 => style("(session made)").dim().to_string(),
            None => style("(taken on request)").dim().to_string(),
        };
        println!(
            "{:<5}{:<14}{:<26}{:>7} {:>8} {:>8}  {task}",
            p.seq,
            &p.checkpoint_id[..12],
            p.created,
            p.files_changed,
            style(format!("+{}", p.insertions)).green(),
            style(format!("-{}", p.deletions)).red(),
        );
        for s in &p.skipped {
            println!(
                "     {} {} ({})",
                style("left out:").yellow(),
                s.path,
                s.reason
            );
        }
    }
    Ok(0)
}

/// `crogia diff ID [FROM [TO]]`: by default the workspace now against the
/// latest checkpoint; FROM alone: from it to now; TO may be `current`.
pub async fn diff(
    c: &ApiClient,
    session: &str,
    from: Option<&str>,
    to: Option<&str>,
    json_out: bool,
) -> anyhow::Result<i32> {
    let mut query = Vec::new();
    if let Some(from) = from {
        query.push(("from", resolve(c, session, from).await?));
    }
    if let Some(to) = to {
        let to = match to {
            "current" => to.to_string(),
            _ => resolve(c, session, to).await?,
        };
        query.push(("to", to));
    }
    let query = serde_urlencoded::to_string(&query)?;
    let diff = c
        .call(
            reqwest::Method::GET,
            &format!("/api/sessions/{session}/diff?{query}"),
            None,
        )
        .await?;
    if json_out {
        print_json(&diff);
        return Ok(0);
    }
    let files = diff["files"].as_array().cloned().unwrap_or_default();
    if files.is_empty() {
        println!("no changes");
        return Ok(0);
    }
    for f in &files {
        let counts = if f["binary"] == true {
            "binary".to_string()
        } else {
            format!(
                "{} {}",
                style(format!("+{}", f["insertions"])).green(),
                style(format!("-{}", f["deletions"])).red()
            )
        };
        println!(
            "{:<9}{}  {counts}",
            f["status"].as_str().unwrap_or(""),
            f["path"].as_str().unwrap_or("")
        );
    }
    println!();
    for line in diff["patch"].as_str().unwrap_or("").lines() {
        let shown = if line.starts_with("+++") || line.starts_with("---") {
            style(line).bold()
        } else if line.starts_with('+') {
            style(line).green()
        } else if line.starts_with('-') {
            style(line).red()
        } else if line.starts_with("@@") {
            style(line).cyan()
        } else {
            style(line)
        };
        println!("{shown}");
    }
    Ok(0)
}

/// `crogia rewind ID CHECKPOINT [--scope files|conversation|both]`.
pub async fn rewind(
    c: &ApiClient,
    session: &str,
    checkpoint: &str,
    scope: &str,
    json_out: bool,
) -> anyhow::Result<i32> {
    let checkpoint_id = resolve(c, session, checkpoint).await?;
    let done = c
        .call(
            reqwest::Method::POST,
            &format!("/api/sessions/{session}/rewind"),
            Some(json!({ "checkpoint_id": checkpoint_id, "scope": scope })),
        )
        .await?;
    if json_out {
        print_json(&done);
    } else {
        println!(
            "rewound {session} to {} ({}): {} files written, {} removed, {} messages dropped",
            &checkpoint_id[..12],
            done["scope"].as_str().unwrap_or(scope),
            done["files_written"],
            done["files_removed"],
            done["messages_dropped"]
        );
    }
    Ok(0)
}

/// `crogia fork ID [CHECKPOINT]`: prints the new session's id.
pub async fn fork(
    c: &ApiClient,
    session: &str,
    checkpoint: Option<&str>,
    json_out: bool,
) -> anyhow::Result<i32> {
    let mut body = json!({});
    if let Some(checkpoint) = checkpoint {
        body["checkpoint_id"] = json!(resolve(c, session, checkpoint).await?);
    }
    let (made, json) = c
        .fetch::<SessionInfo>(
            reqwest::Method::POST,
            &format!("/api/sessions/{session}/fork"),
            Some(body),
        )
        .await?;
    if json_out {
        print_json(&json);
    } else {
        println!("{}", made.session_id);
    }
    Ok(0)
}
