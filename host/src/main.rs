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
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve { config, bind } => runtime.block_on(serve(config, bind)),
    }
}

async fn serve(config_path: Option<PathBuf>, bind: Option<SocketAddr>) -> anyhow::Result<()> {
    let mut config = Config::load(config_path.as_deref())?;
    if let Some(bind) = bind {
        config.server.bind = bind;
    }
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
