//! Builds the application from a [`Config`] and serves it until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::config::Config;
use crate::datadir::DataDirLock;
use crate::metrics::Metrics;
use crate::plugins::PluginRuntime;
use crate::sandbox::{DockerEngine, Sandbox};
use crate::service::SessionService;
use crate::session::SessionManager;
use crate::state::AppState;
use crate::store::Store;

/// How often the Docker engine's availability is probed.
const ENGINE_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Refuses to serve a non-loopback address without authentication, unless
/// the operator insists (`--insecure`).
pub fn check_exposure(config: &Config, insecure: bool) -> anyhow::Result<()> {
    if config.server.bind.ip().is_loopback() || config.auth.enabled() {
        return Ok(());
    }
    if !insecure {
        anyhow::bail!(
            "refusing to listen on {} without authentication: set auth.tokens (or CROGIA_AUTH_TOKENS) or [[auth.users]], \
             bind to a loopback address, or pass --insecure",
            config.server.bind
        );
    }
    tracing::warn!(
        bind = %config.server.bind,
        allowed_hosts = ?config.server.allowed_hosts,
        "listening on a non-loopback address WITHOUT authentication (--insecure); requests must \
         still name the server by a loopback name, its bind address or one of server.allowed_hosts"
    );
    Ok(())
}

/// A built application, ready to serve.
pub struct App {
    pub state: Arc<AppState>,
    monitors: Vec<tokio::task::JoinHandle<()>>,
    /// This server's claim on its data directory, held until it is dropped.
    _lock: DataDirLock,
}

impl App {
    /// Connects to the engine (waiting briefly, so the first health answer is
    /// right), opens the store, restores sessions, loads the plugins and
    /// records tasks a previous run left unfinished.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        crate::network::Policy::new(&config.network, &Default::default())
            .map_err(|e| anyhow::anyhow!("[network] {e}"))?;
        let lock = DataDirLock::acquire(&config.server.data_dir, "another server")?;
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::new());
        // Named when there are several: their errors say which.
        let several = !config.sandbox.engines.is_empty();
        let mut engines = Vec::new();
        let mut monitors = Vec::new();
        for e in config.sandbox.engines() {
            let engine = if several {
                DockerEngine::named(&e.name, &e.docker_host)
            } else {
                DockerEngine::new(&e.docker_host)
            };
            if !engine.probe().await {
                tracing::warn!(
                    engine = %e.name,
                    "Docker engine not available at start; sessions cannot be placed on it until it answers"
                );
            }
            monitors.push(engine.spawn_monitor(ENGINE_PROBE_INTERVAL));
            let sandbox =
                Sandbox::new(engine, config.sandbox.for_engine(&e)).with_metrics(metrics.clone());
            engines.push((e, sandbox));
        }
        // The first engine's: what is not about one session (health's
        // `docker_available` reads every engine).
        let sandbox = engines[0].1.clone();
        let store = Store::for_config(&config).await.with_context(|| {
            if config.store.url.is_empty() {
                format!(
                    "opening the database in {}",
                    config.server.data_dir.display()
                )
            } else {
                "opening the database".to_string()
            }
        })?;
        // Alive before anything: another server must not take this one's
        // sessions while it starts.
        store.heartbeat().await.context("recording this server")?;
        let sessions = SessionManager::open(config.clone(), engines, store.clone())
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
        let agent = Agent::new(
            config.clone(),
            store.clone(),
            plugins.clone(),
            metrics.clone(),
        );
        agent
            .recover(&sessions)
            .await
            .context("recording interrupted tasks")?;
        let shutdown = CancellationToken::new();
        crate::lease::spawn(
            store.clone(),
            sessions.clone(),
            agent.clone(),
            config.store.lease(),
            shutdown.clone(),
        );
        let service = SessionService::new(sessions.clone(), agent.clone(), config.clone());
        let state = AppState {
            config,
            store,
            sandbox,
            plugins,
            sessions,
            service,
            agent,
            metrics,
            shutdown,
        };
        Ok(Self {
            state: Arc::new(state),
            monitors,
            _lock: lock,
        })
    }

    /// Serves on `listener` until `shutdown` resolves; then stops running
    /// tasks (recording their final events), closes WebSockets and lets the
    /// remaining requests finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let router = crate::api::router(self.state.clone());
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "listening");
        let state = self.state.clone();
        let stopping = async move {
            shutdown.await;
            tracing::info!("stopping: interrupting running tasks");
            state.agent.shutdown().await;
            state.sessions.stop_file_events();
            state.shutdown.cancel();
        };
        // Events are small frames that must go out at once: no Nagle delay.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
        });
        axum::serve(listener, router)
            .with_graceful_shutdown(stopping)
            .await?;
        for monitor in &self.monitors {
            monitor.abort();
        }
        self.state
            .sessions
            .finish_cleanups(std::time::Duration::from_secs(30))
            .await;
        self.state.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_address_needs_tokens_or_insecure() {
        let mut config = Config::default();
        assert!(check_exposure(&config, false).is_ok());
        config.server.bind = "0.0.0.0:8000".parse().unwrap();
        let err = check_exposure(&config, false).unwrap_err().to_string();
        assert!(err.contains("refusing to listen on 0.0.0.0:8000"), "{err}");
        assert!(check_exposure(&config, true).is_ok());
        config.auth.tokens = vec!["0123456789abcdef".into()];
        assert!(check_exposure(&config, false).is_ok());
    }
}
