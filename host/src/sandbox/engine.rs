//! The connection to the Docker engine, and whether it currently answers.
//!
//! The engine may be absent when the server starts, or restart while it runs.
//! [`DockerEngine`] connects lazily, negotiates the API version with whatever
//! engine answers (bollard's default version is newer than older engines
//! accept), and keeps an `available` flag that health reports read without
//! touching the engine. A background monitor refreshes the flag; any request
//! that fails to reach the engine clears it at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bollard::Docker;
use tokio::sync::Mutex;

use super::SandboxError;

/// How long a liveness probe may take before the engine counts as unavailable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub struct DockerEngine {
    /// Its name among several (`[[sandbox.engines]]`), said in its errors.
    name: Option<String>,
    /// Where the engine listens; empty for bollard's defaults.
    host: String,
    /// A client whose API version has been negotiated with the engine; `None`
    /// until an engine has answered once.
    client: Mutex<Option<Docker>>,
    available: AtomicBool,
    /// The CPUs the engine's machine has, once asked.
    cpus: tokio::sync::OnceCell<i64>,
}

impl DockerEngine {
    /// An engine at `host` (`unix://...`, `tcp://...`); empty means
    /// `$DOCKER_HOST` or the local socket.
    pub fn new(host: &str) -> Arc<Self> {
        Self::build(None, host)
    }

    /// [`Self::new`], one of several: its errors and logs name it.
    pub fn named(name: &str, host: &str) -> Arc<Self> {
        Self::build(Some(name.to_string()), host)
    }

    fn build(name: Option<String>, host: &str) -> Arc<Self> {
        Arc::new(Self {
            name,
            host: host.to_string(),
            client: Mutex::new(None),
            available: AtomicBool::new(false),
            cpus: tokio::sync::OnceCell::new(),
        })
    }

    /// How many CPUs the engine's machine has (asked once).
    pub async fn cpus(&self) -> Result<i64, SandboxError> {
        self.cpus
            .get_or_try_init(|| async {
                let info = self
                    .client()
                    .await?
                    .info()
                    .await
                    .map_err(|e| self.classify(e))?;
                Ok(info.ncpu.unwrap_or(1).max(1))
            })
            .await
            .copied()
    }

    /// Whether the engine answered the last request or probe.
    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    /// A client ready for requests, connecting and negotiating first if no
    /// engine has answered yet.
    pub async fn client(&self) -> Result<Docker, SandboxError> {
        let mut guard = self.client.lock().await;
        if let Some(client) = guard.as_ref() {
            return Ok(client.clone());
        }
        let connect = async {
            let docker = if self.host.is_empty() {
                Docker::connect_with_defaults()?
            } else {
                Docker::connect_with_host(&self.host)?
            };
            docker.negotiate_version().await
        };
        match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
            Ok(Ok(docker)) => {
                tracing::info!(api_version = %docker.client_version(), "connected to the Docker engine");
                self.available.store(true, Ordering::Relaxed);
                *guard = Some(docker.clone());
                Ok(docker)
            }
            Ok(Err(e)) => Err(self.unavailable(e.to_string())),
            Err(_) => Err(self.unavailable("no answer within 3 s".into())),
        }
    }

    /// Pings the engine and updates the availability flag.
    pub async fn probe(&self) -> bool {
        let ok = match self.client().await {
            Ok(docker) => matches!(
                tokio::time::timeout(PROBE_TIMEOUT, docker.ping()).await,
                Ok(Ok(_))
            ),
            Err(_) => false,
        };
        let was = self.available.swap(ok, Ordering::Relaxed);
        if was != ok {
            if ok {
                tracing::info!(
                    engine = self.name.as_deref(),
                    "Docker engine is available again"
                );
            } else {
                tracing::warn!(
                    engine = self.name.as_deref(),
                    "Docker engine stopped answering"
                );
            }
        }
        ok
    }

    /// Probes the engine every `interval` for as long as the engine handle lives.
    pub fn spawn_monitor(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(engine) = weak.upgrade() else { return };
                engine.probe().await;
            }
        })
    }

    /// Turns a bollard error into ours, clearing the availability flag when
    /// the engine could not be reached at all.
    pub fn classify(&self, e: bollard::errors::Error) -> SandboxError {
        use bollard::errors::Error as E;
        match e {
            E::DockerResponseServerError {
                status_code: 404,
                message,
            } => SandboxError::NotFound(message),
            E::DockerResponseServerError {
                status_code: 409,
                message,
            } => SandboxError::Conflict(message),
            E::DockerResponseServerError {
                status_code,
                message,
            } => SandboxError::Engine(format!("engine answered {status_code}: {message}")),
            E::JsonDataError { .. } | E::JsonSerdeError { .. } => {
                SandboxError::Engine(e.to_string())
            }
            other => self.unavailable(other.to_string()),
        }
    }

    fn unavailable(&self, reason: String) -> SandboxError {
        if self.available.swap(false, Ordering::Relaxed) {
            tracing::warn!(engine = self.name.as_deref(), %reason, "Docker engine unavailable");
        }
        match &self.name {
            Some(name) => SandboxError::Unavailable(format!("engine {name:?}: {reason}")),
            None => SandboxError::Unavailable(reason),
        }
    }

    /// Its name among several, when it has one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}
