//! The `crogia` binary: the server and its command-line tools.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use crogia_host::config::Config;
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
}

#[derive(Debug, Subcommand)]
enum ToolsCommand {
    /// Load the plugins folder as the server would and list every tool:
    /// name, whether it is enabled, its plugin file, and its description.
    /// Files that would be skipped are listed with the reason.
    List {
        /// Config file (default: ./crogia.toml when it exists).
        #[arg(long, env = "CROGIA_CONFIG")]
        config: Option<PathBuf>,
        /// Print JSON (tools with their argument schemas) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The server logs at info; the command-line tools only say what went wrong.
    let default_level = if matches!(cli.command, Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve {
            config,
            bind,
            insecure,
        } => runtime.block_on(serve(config, bind, insecure)),
        Command::Gc { config, dry_run } => runtime.block_on(gc(config, dry_run)),
        Command::Tools {
            command: ToolsCommand::List { config, json },
        } => runtime.block_on(tools_list(config, json)),
    }
}

async fn gc(config_path: Option<PathBuf>, dry_run: bool) -> anyhow::Result<()> {
    let config = Config::load(config_path.as_deref())?;
    let orphans = crogia_host::session::collect_garbage(&config, dry_run).await?;
    if orphans.is_empty() {
        println!("no orphaned containers");
    }
    for c in &orphans {
        let session = c
            .labels
            .get(crogia_host::sandbox::LABEL_SESSION)
            .map(String::as_str)
            .unwrap_or("?");
        let verb = if dry_run { "would remove" } else { "removed" };
        println!("{verb} {} (session {session}, {})", c.id, c.status);
    }
    Ok(())
}

async fn tools_list(config_path: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let config = Config::load(config_path.as_deref())?;
    let plugins = crogia_host::plugins::PluginRuntime::new(&config)?;
    let report = plugins.reload().await;
    let tools = plugins.tools();
    if json {
        let out = serde_json::json!({ "tools": tools, "skipped": report.skipped });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
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
        let summary = first_sentence(&t.description);
        let enabled = if t.enabled { "yes" } else { "no" };
        println!(
            "{:width$}  {enabled:8}  {:pwidth$}  {summary}",
            t.name, t.plugin
        );
    }
    for s in &report.skipped {
        println!("skipped {}: {}", s.file, s.reason);
    }
    Ok(())
}

async fn serve(
    config_path: Option<PathBuf>,
    bind: Option<SocketAddr>,
    insecure: bool,
) -> anyhow::Result<()> {
    let mut config = Config::load(config_path.as_deref())?;
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

/// The first sentence of a description, for one-line listings.
fn first_sentence(text: &str) -> &str {
    let line = text.lines().next().unwrap_or_default();
    match line.find(". ") {
        Some(i) => &line[..=i],
        None => line,
    }
}
