//! Builds the application from a [`Config`] and serves it until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::plugins::PluginRuntime;
use crate::sandbox::{DockerEngine, Sandbox};
use crate::session::{Session, SessionError, SessionManager};
use crate::store::Store;

/// How often the Docker engine's availability is probed.
const ENGINE_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Everything the request handlers share.
#[derive(Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub sandbox: Sandbox,
    pub plugins: Arc<PluginRuntime>,
    pub sessions: Arc<SessionManager>,
}

impl AppState {
    /// Records a task as the session's latest and hands it to the agent.
    pub async fn submit_task(
        &self,
        session: &Arc<Session>,
        task: String,
    ) -> Result<(), SessionError> {
        self.sessions.set_last_task(session, &task).await?;
        tracing::info!(session = %session.id, "task recorded");
        Ok(())
    }
}

/// A built application, ready to serve.
pub struct App {
    pub state: Arc<AppState>,
    monitor: tokio::task::JoinHandle<()>,
}

impl App {
    /// Connects to the engine (waiting briefly, so the first health answer is
    /// right), opens the store, restores sessions and loads the plugins.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.server.data_dir)
            .with_context(|| format!("creating data dir {}", config.server.data_dir.display()))?;
        let config = Arc::new(config);
        let engine = DockerEngine::new(&config.sandbox.docker_host);
        if !engine.probe().await {
            tracing::warn!(
                "Docker engine not available at start; sessions cannot be created until it answers"
            );
        }
        let monitor = engine.spawn_monitor(ENGINE_PROBE_INTERVAL);
        let sandbox = Sandbox::new(engine, config.sandbox.clone());
        let store = Store::open(&config.server.data_dir)
            .await
            .with_context(|| {
                format!(
                    "opening the database in {}",
                    config.server.data_dir.display()
                )
            })?;
        let sessions = SessionManager::open(config.clone(), sandbox.clone(), store.clone())
            .await
            .context("restoring sessions")?;
        let plugins = PluginRuntime::new(&config)?;
        let report = plugins.reload().await;
        tracing::info!(
            dir = %plugins.dir().display(),
            loaded = report.loaded.len(),
            skipped = report.skipped.len(),
            from_cache = report.from_cache,
            tools = plugins.tools().len(),
            "plugins loaded"
        );
        if let Err(e) = plugins.watch() {
            tracing::warn!(error = %format!("{e:#}"), "plugins folder not watched; changes need a restart");
        }
        Ok(Self {
            state: Arc::new(AppState {
                config,
                store,
                sandbox,
                plugins,
                sessions,
            }),
            monitor,
        })
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let router = crate::api::router(self.state.clone());
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "listening");
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await?;
        self.monitor.abort();
        self.state.store.close().await;
        Ok(())
    }
}
