//! `shell`: run a command in the session's container.

use std::time::Duration;

use crogia_plugin_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
struct ShellArgs {
    /// The command, run with `sh -c` in /workspace (e.g. "python3 -m pytest -q").
    command: String,
    /// Seconds before the command and everything it started are killed.
    /// Default: the server's limit (usually 120). Use start_process for
    /// servers and other long-running commands.
    timeout_secs: Option<u32>,
}

/// Run a shell command in the workspace and return its exit code, stdout and
/// stderr. The container has no network access. For commands that keep
/// running (servers, watchers), use start_process instead.
#[tool(capabilities = ["exec"], subject = "command")]
fn shell(args: ShellArgs) -> ToolResult {
    let mut command = exec::Command::new(args.command);
    if let Some(secs) = args.timeout_secs {
        command = command.timeout(Duration::from_secs(secs.into()));
    }
    let out = command.run()?;
    let mut text = String::new();
    if out.timed_out {
        text.push_str("The command timed out and was killed with everything it started.\n");
    }
    match out.exit_code {
        Some(code) => text.push_str(&format!("exit code: {code}\n")),
        None => text.push_str("exit code: none (killed)\n"),
    }
    if !out.stdout.is_empty() {
        text.push_str("stdout:\n");
        text.push_str(&out.stdout);
        if !out.stdout.ends_with('\n') {
            text.push('\n');
        }
    }
    if !out.stderr.is_empty() {
        text.push_str("stderr:\n");
        text.push_str(&out.stderr);
        if !out.stderr.ends_with('\n') {
            text.push('\n');
        }
    }
    if out.stdout.is_empty() && out.stderr.is_empty() {
        text.push_str("(no output)\n");
    }
    Ok(text)
}

export_tools!(shell);
