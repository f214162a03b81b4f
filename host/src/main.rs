//! The `crogia` binary: the server, its operator tools, and a client of its
//! API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use crogia_host::cli::{self, ApiClient};
use crogia_host::config::{Config, LogFormat};
use crogia_host::server::App;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "crogia",
    version,
    about = "A self-hosted server for autonomous coding agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Where the client commands find the server; global, so they go before
    /// or after the subcommand (`crogia --url U session list` or
    /// `crogia session list --url U`), as with docker, kubectl and gh.
    #[command(flatten)]
    remote: Remote,
}

/// How the client commands reach the server.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Client options")]
struct Remote {
    /// Server URL.
    #[arg(long, env = "CROGIA_URL", global = true)]
    url: Option<String>,
    /// API token (when the server requires one).
    #[arg(long, env = "CROGIA_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Print the server's JSON instead of a human view.
    #[arg(long, global = true)]
    json: bool,
}

impl Remote {
    fn client(&self) -> anyhow::Result<ApiClient> {
        ApiClient::new(
            self.url.as_deref().unwrap_or("http://127.0.0.1:8000"),
            self.token.clone(),
        )
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the server.
    Serve {
        /// Config file (default: ./crogia.toml when it exists).
        #[arg(long, env = "CROGIA_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on; overrides `server.bind`.
        #[arg(long)]
        bind: Option<SocketAddr>,
        /// Allow listening on a non-loopback address without auth tokens.
        #[arg(long)]
        insecure: bool,
    },
    /// Remove containers this server labelled but that belong to no session
    /// (left by a crash between creating a container and recording it, or by
    /// a deleted data directory's sessions).
    Gc {
        /// Config file (default: ./crogia.toml when it exists).
        #[arg(long, env = "CROGIA_CONFIG")]
        config: Option<PathBuf>,
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Inspect the tool plugins.
    Tools {
        #[command(subcommand)]
        command: ToolsCommand,
    },
    /// Create, list, show and delete sessions on a server.
    Session {
        #[command(subcommand)]
        command: SessionCommand,
    },
    /// Give a session a task and watch it work, until it ends (exit code 1
    /// unless it completed).
    Task {
        session: String,
        task: String,
        /// Approve every tool call that waits for approval.
        #[arg(long)]
        yes: bool,
    },
    /// Run a command in a session's container (exits with its exit code).
    Shell { session: String, command: String },
    /// An interactive shell in a session's container (a terminal; with
    /// piped input, that input is typed). Exits 0 when the shell exits.
    Term { session: String },
    /// Show what a session's programs may reach, or change it (new
    /// connections follow; what is not given stays as it is).
    Network {
        session: String,
        /// Only hosts these patterns match (within the operator's policy);
        /// repeat for more.
        #[arg(long)]
        allow: Vec<String>,
        /// Never hosts these patterns match; repeat for more.
        #[arg(long)]
        deny: Vec<String>,
        /// Back to the operator's policy alone.
        #[arg(long, conflicts_with_all = ["allow", "deny"])]
        reset: bool,
    },
    /// Serve a session's tools as an MCP server on stdin and stdout, for
    /// MCP clients that launch stdio servers (the server's own endpoint is
    /// `/mcp/{session_id}`, streamable HTTP).
    Mcp { session: String },
    /// List a directory of a session's workspace, or print a file.
    Files {
        session: String,
        path: Option<String>,
    },
    /// List a session's checkpoints, oldest first (its workspace recorded
    /// when it was made and after each task).
    Checkpoints {
        session: String,
        /// Record the workspace as a checkpoint now, first.
        #[arg(long)]
        take: bool,
    },
    /// What changed: the workspace now against the latest checkpoint; from
    /// FROM (to now); or from FROM to TO (`current`: now). A checkpoint is
    /// its number, or a prefix of its id.
    Diff {
        session: String,
        from: Option<String>,
        to: Option<String>,
    },
    /// Take a session back to a checkpoint: its files, its conversation or
    /// both (refused while a task runs).
    Rewind {
        session: String,
        checkpoint: String,
        #[arg(long, default_value = "both", value_parser = ["files", "conversation", "both"])]
        scope: String,
    },
    /// Make a new session from a checkpoint (by default the latest) of a
    /// session; prints its id.
    Fork {
        session: String,
        checkpoint: Option<String>,
    },
    /// Tokens of principals (made here; nothing is sent to a server).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// What the model calls used, from the server's usage ledger (a user
    /// sees its own; an admin everyone's).
    Usage {
        /// First day (UTC, YYYY-MM-DD); default 29 days before --to.
        #[arg(long)]
        from: Option<String>,
        /// Last day, included (UTC, YYYY-MM-DD); default today.
        #[arg(long)]
        to: Option<String>,
        #[arg(long, default_value = "day", value_parser = ["principal", "session", "day"])]
        group_by: String,
        /// Only this principal's calls (admins).
        #[arg(long)]
        principal: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a fresh token for a principal and the `[[auth.users]]` entry
    /// to paste into the server's config (which keeps only its SHA-256).
    New {
        name: String,
        #[arg(long, default_value = "user", value_parser = ["user", "admin"])]
        role: String,
    },
}

#[derive(Debug, Subcommand)]
enum SessionCommand {
    /// Create a session (prints its id).
    Create {
        /// A first task for the agent.
        #[arg(long)]
        task: Option<String>,
        /// Which tool calls wait for a person: default (as the server's
        /// config says per tool), all (every tool that can change
        /// something) or none (where the server permits it).
        #[arg(long, value_parser = ["default", "all", "none"])]
        approval: Option<String>,
        /// Most model tokens its tasks may use (within the server's cap).
        #[arg(long)]
        budget: Option<u64>,
    },
    /// List sessions (yours; an admin's: everyone's).
    List {
        /// Only this principal's (admins).
        #[arg(long)]
        owner: Option<String>,
    },
    /// Show one session.
    Show { session: String },
    /// Delete a session, its container and its workspace.
    Delete { session: String },
}

#[derive(Debug, Subcommand)]
enum ToolsCommand {
    /// List every tool: name, whether it is enabled, its plugin file, and its
    /// description. With --url (or CROGIA_URL), asks that server; otherwise
    /// loads the plugins folder as the server would, and also lists files
    /// that would be skipped, with the reason.
    List {
        /// Config file (default: ./crogia.toml when it exists).
        #[arg(long, env = "CROGIA_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run a tool in a session directly, with its JSON arguments, and print
    /// its result (exit code 1 when the tool failed).
    Call {
        session: String,
        name: String,
        /// The arguments, a JSON object (default `{}`).
        #[arg(default_value = "{}")]
        arguments: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve {
            config,
            bind,
            insecure,
        } => runtime.block_on(serve(config, bind, insecure)).map(|_| 0),
        command => {
            // The command-line tools only say what went wrong.
            init_logging(LogFormat::Text, "warn");
            runtime.block_on(client(command, cli.remote))
        }
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn client(command: Command, remote: Remote) -> anyhow::Result<i32> {
    match command {
        Command::Gc { config, dry_run } => gc(config, dry_run).await,
        Command::Tools {
            command: ToolsCommand::List { config },
        } => match remote.url {
            Some(_) => cli::tools(&remote.client()?, remote.json).await,
            None => tools_list(config, remote.json).await,
        },
        Command::Tools {
            command:
                ToolsCommand::Call {
                    session,
                    name,
                    arguments,
                },
        } => cli::tool_call(&remote.client()?, &session, &name, &arguments, remote.json).await,
        Command::Session { command } => {
            let c = remote.client()?;
            match command {
                SessionCommand::Create {
                    task,
                    approval,
                    budget,
                } => cli::session_create(&c, task, approval, budget, remote.json).await,
                SessionCommand::List { owner } => {
                    cli::session_list(&c, owner.as_deref(), remote.json).await
                }
                SessionCommand::Show { session } => {
                    cli::session_show(&c, &session, remote.json).await
                }
                SessionCommand::Delete { session } => {
                    cli::session_delete(&c, &session, remote.json).await
                }
            }
        }
        Command::Task { session, task, yes } => {
            let approve = match (yes, remote.json) {
                (true, _) => cli::Approve::All,
                (false, true) => cli::Approve::Leave,
                (false, false) => cli::Approve::Ask,
            };
            cli::task(&remote.client()?, &session, &task, remote.json, approve).await
        }
        Command::Shell { session, command } => {
            cli::shell(&remote.client()?, &session, &command, remote.json).await
        }
        Command::Term { session } => cli::term(&remote.client()?, &session).await,
        Command::Network {
            session,
            allow,
            deny,
            reset,
        } => cli::network(&remote.client()?, &session, allow, deny, reset, remote.json).await,
        Command::Mcp { session } => cli::mcp(&remote.client()?, &session).await,
        Command::Files { session, path } => {
            cli::files(&remote.client()?, &session, path.as_deref(), remote.json).await
        }
        Command::Checkpoints { session, take } => {
            cli::checkpoints(&remote.client()?, &session, take, remote.json).await
        }
        Command::Diff { session, from, to } => {
            let c = remote.client()?;
            cli::diff(&c, &session, from.as_deref(), to.as_deref(), remote.json).await
        }
        Command::Rewind {
            session,
            checkpoint,
            scope,
        } => {
            cli::rewind(
                &remote.client()?,
                &session,
                &checkpoint,
                &scope,
                remote.json,
            )
            .await
        }
        Command::Fork {
            session,
            checkpoint,
        } => {
            cli::fork(
                &remote.client()?,
                &session,
                checkpoint.as_deref(),
                remote.json,
            )
            .await
        }
        Command::Token {
            command: TokenCommand::New { name, role },
        } => cli::token_new(&name, &role, remote.json),
        Command::Usage {
            from,
            to,
            group_by,
            principal,
        } => {
            cli::usage(
                &remote.client()?,
                from.as_deref(),
                to.as_deref(),
                &group_by,
                principal.as_deref(),
                remote.json,
            )
            .await
        }
        Command::Serve { .. } => unreachable!("handled by main"),
    }
}

async fn gc(config_path: Option<PathBuf>, dry_run: bool) -> anyhow::Result<i32> {
    let config = Config::load(config_path.as_deref())?;
    let garbage = crogia_host::session::collect_garbage(&config, dry_run).await?;
    let verb = if dry_run { "would remove" } else { "removed" };
    if garbage.containers.is_empty() {
        println!("no orphaned containers");
    }
    for c in &garbage.containers {
        let session = c
            .labels
            .get(crogia_host::sandbox::LABEL_SESSION)
            .map(String::as_str)
            .unwrap_or("?");
        println!("{verb} {} (session {session}, {})", c.id, c.status);
    }
    for name in &garbage.volumes {
        println!("{verb} volume {name}");
    }
    Ok(0)
}

async fn tools_list(config_path: Option<PathBuf>, json: bool) -> anyhow::Result<i32> {
    let config = Config::load(config_path.as_deref())?;
    let plugins = crogia_host::plugins::PluginRuntime::new(&config)?;
    let report = plugins.reload().await;
    let tools = plugins.tools();
    if json {
        let out = serde_json::json!({ "tools": tools, "skipped": report.skipped });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    println!("plugins folder: {}", plugins.dir().display());
    let width = tools.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
    let pwidth = tools
        .iter()
        .map(|t| t.plugin.len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!(
        "{:width$}  {:8}  {:pwidth$}  DESCRIPTION",
        "NAME", "ENABLED", "PLUGIN"
    );
    for t in &tools {
        let enabled = if t.enabled { "yes" } else { "no" };
        println!(
            "{:width$}  {enabled:8}  {:pwidth$}  {}",
            t.name,
            t.plugin,
            cli::first_sentence(&t.description)
        );
    }
    for s in &report.skipped {
        println!("skipped {}: {}", s.file, s.reason);
    }
    Ok(0)
}

async fn serve(
    config_path: Option<PathBuf>,
    bind: Option<SocketAddr>,
    insecure: bool,
) -> anyhow::Result<()> {
    let mut config = Config::load(config_path.as_deref())?;
    init_logging(config.server.log_format, "info");
    if let Some(bind) = bind {
        config.server.bind = bind;
    }
    crogia_host::server::check_exposure(&config, insecure)?;
    let listener = tokio::net::TcpListener::bind(config.server.bind)
        .await
        .with_context(|| format!("binding {}", config.server.bind))?;
    let app = App::build(config).await?;
    app.serve(listener, shutdown_signal()).await
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
