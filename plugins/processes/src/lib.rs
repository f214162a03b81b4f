//! Background processes: `start_process`, `list_processes`, `stop_process`,
//! `process_logs` — four tools from one plugin.

use crogia_plugin_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
struct StartProcessArgs {
    /// The command, run with `sh -c` in /workspace (e.g. "python3 app.py").
    command: String,
}

/// Start a long-running command (a server, a watcher, a slow build) in the
/// background and return at once with its pid. Its output goes to a log file;
/// read it with process_logs, stop it with stop_process.
#[tool(capabilities = ["processes"], subject = "command")]
fn start_process(args: StartProcessArgs) -> ToolResult {
    let p = process::start(&args.command)?;
    Ok(format!(
        "Started process {} ({}); output goes to {}",
        p.pid, p.cmd, p.log
    ))
}

#[derive(Deserialize, JsonSchema)]
struct ListProcessesArgs {}

/// List the background processes started in this session, with their status
/// (running or exited, with the exit code when known).
#[tool(capabilities = ["processes"])]
fn list_processes(_args: ListProcessesArgs) -> ToolResult {
    let list = process::list()?;
    if list.is_empty() {
        return Ok("No background processes have been started.".into());
    }
    let mut out = String::new();
    for p in list {
        let age = std::time::SystemTime::now()
            .duration_since(p.started)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        out.push_str(&format!(
            "pid {}: {} — {} (log: {}, started {age} s ago)\n",
            p.pid, p.status, p.cmd, p.log
        ));
    }
    Ok(out)
}

#[derive(Deserialize, JsonSchema)]
struct StopProcessArgs {
    /// The pid start_process returned.
    pid: u32,
}

/// Stop a background process and everything it started: SIGTERM, then
/// SIGKILL if it is still running after a grace period.
#[tool(capabilities = ["processes"])]
fn stop_process(args: StopProcessArgs) -> ToolResult {
    let pid = args.pid;
    Ok(match process::stop(pid)? {
        process::StopOutcome::NotRunning => format!("Process {pid} was not running"),
        process::StopOutcome::Killed => format!(
            "Sent SIGTERM to process {pid}; it was still running after the grace period and was killed with SIGKILL"
        ),
        _ => format!("Sent SIGTERM to process {pid}"),
    })
}

#[derive(Deserialize, JsonSchema)]
struct ProcessLogsArgs {
    /// The pid start_process returned.
    pid: u32,
    /// How many of the last lines to return. Default 50.
    lines: Option<u32>,
}

/// Read the last lines of a background process's output (stdout and stderr).
#[tool(capabilities = ["processes"])]
fn process_logs(args: ProcessLogsArgs) -> ToolResult {
    let logs = process::logs(args.pid, args.lines.unwrap_or(50))?;
    if logs.is_empty() {
        return Ok(format!(
            "Process {} has not written any output yet.",
            args.pid
        ));
    }
    Ok(logs)
}

export_tools!(start_process, list_processes, stop_process, process_logs);
