//! The Docker sandbox layer: one container per session, commands run in it,
//! and background processes started, listed and stopped in it.
//!
//! This layer is stateless: it knows containers by id and processes by the
//! records it hands back. Sessions and their persistence live above it. It
//! talks to the engine only through its API socket (bollard), never to a
//! container's network address.

mod agent;
mod engine;
mod exec;
mod files;
mod processes;
mod scripts;
mod watch;

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{ContainerCreateBody, ContainerStateStatusEnum, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
    StartContainerOptions, StopContainerOptions,
};

pub use agent::AgentError;
pub use engine::DockerEngine;
pub use exec::{ExecOutput, ExecRequest, MAX_COMMAND_CHARS, check_command};
pub use processes::{BackgroundProcess, ProcessState, ProcessStatus, StopOutcome};
pub use watch::{ContainerChange, ContainerWatch, REMOVED};

use crate::config::SandboxConfig;
use crate::workspace::CONTAINER_ROOT;

/// Label on every container this server creates.
pub const LABEL_MANAGED: &str = "crogia.managed";
/// Label holding the session id a container belongs to.
pub const LABEL_SESSION: &str = "crogia.session";
/// Label naming the server instance (data directory) owning a container.
pub const LABEL_INSTANCE: &str = "crogia.instance";

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The engine could not be reached.
    #[error("Docker engine is not available: {0}")]
    Unavailable(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("{0}")]
    InvalidInput(String),
    /// The container exists but is not running, so nothing can run in it.
    #[error("container is not running (status: {0})")]
    NotRunning(String),
    #[error("Docker engine error: {0}")]
    Engine(String),
}

/// What the engine says about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    /// The engine's status word: `created`, `running`, `exited`, ...
    pub status: String,
    pub running: bool,
    pub labels: HashMap<String, String>,
}

/// Creates and drives session containers on one Docker engine.
#[derive(Debug, Clone)]
pub struct Sandbox {
    engine: std::sync::Arc<DockerEngine>,
    config: SandboxConfig,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    /// Links to the agents in this sandbox's containers (shared by clones).
    agent_links: std::sync::Arc<agent::AgentLinks>,
}

impl Sandbox {
    pub fn new(engine: std::sync::Arc<DockerEngine>, config: SandboxConfig) -> Self {
        Self {
            engine,
            config,
            metrics: None,
            agent_links: Default::default(),
        }
    }

    /// The same sandbox, timing its engine calls into `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Records how long an engine operation took.
    pub(crate) fn observe(&self, operation: &str, started: std::time::Instant) {
        if let Some(m) = &self.metrics {
            m.docker_call(operation, started.elapsed());
        }
    }

    /// Times an operation until the returned guard drops.
    pub(crate) fn timing(&self, operation: &'static str) -> Timing<'_> {
        Timing {
            sandbox: self,
            operation,
            started: std::time::Instant::now(),
        }
    }

    pub fn engine(&self) -> &std::sync::Arc<DockerEngine> {
        &self.engine
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// The same sandbox, putting one more label on the containers it creates.
    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        self.config
            .labels
            .insert(key.to_string(), value.to_string());
        self
    }

    /// Creates and starts the container of `session_id`, with `workspace`
    /// (an absolute host path) bind-mounted at `/workspace` and the configured
    /// limits. Returns the container id.
    #[tracing::instrument(skip(self, workspace), fields(workspace = %workspace.display()))]
    pub async fn create(&self, session_id: &str, workspace: &Path) -> Result<String, SandboxError> {
        if !workspace.is_absolute() {
            return Err(SandboxError::InvalidInput(format!(
                "workspace path must be absolute: {}",
                workspace.display()
            )));
        }
        let started = std::time::Instant::now();
        let c = &self.config;
        let agent = std::fs::canonicalize(&c.agent_binary).map_err(|e| {
            SandboxError::Engine(format!(
                "the sandbox agent {} cannot be used ({e}); build it with `just sandbox-agent` \
                 or set sandbox.agent_binary",
                c.agent_binary.display()
            ))
        })?;
        let docker = self.engine.client().await?;
        if let Some((uid, gid)) = c.user_ids() {
            // The container's user must own its workspace to write in it.
            std::os::unix::fs::chown(workspace, Some(uid), Some(gid)).map_err(|e| {
                SandboxError::InvalidInput(format!("cannot hand the workspace to {uid}:{gid}: {e}"))
            })?;
        }
        let mut labels: HashMap<String, String> = c.labels.clone().into_iter().collect();
        labels.insert(LABEL_MANAGED.into(), "true".into());
        labels.insert(LABEL_SESSION.into(), session_id.into());
        let memory = i64::try_from(c.memory.bytes()).unwrap_or(i64::MAX);
        let body = ContainerCreateBody {
            image: Some(c.image.clone()),
            // The agent is PID 1: it serves the server and reaps orphans.
            entrypoint: Some(vec![
                crogia_sandbox_agent::CONTAINER_BINARY.into(),
                "init".into(),
            ]),
            cmd: Some(Vec::new()),
            working_dir: Some(CONTAINER_ROOT.into()),
            labels: Some(labels),
            env: Some(vec!["HOME=/root".into(), "LANG=C.UTF-8".into()]),
            host_config: Some(HostConfig {
                binds: Some(vec![
                    format!("{}:{CONTAINER_ROOT}", workspace.display()),
                    format!(
                        "{}:{}:ro",
                        agent.display(),
                        crogia_sandbox_agent::CONTAINER_BINARY
                    ),
                ]),
                memory: Some(memory),
                // No swap beyond the memory limit.
                memory_swap: Some(memory),
                nano_cpus: Some((c.cpus * 1e9) as i64),
                pids_limit: Some(c.pids_limit),
                network_mode: Some(c.network.clone()),
                init: Some(c.init),
                security_opt: Some(vec!["no-new-privileges".into()]),
                cap_drop: Some(vec!["ALL".into()]),
                cap_add: Some(c.cap_add.clone()),
                tmpfs: Some(HashMap::from([(
                    "/tmp".to_string(),
                    format!("rw,nosuid,nodev,size={}", c.tmp_size),
                )])),
                readonly_rootfs: Some(c.read_only_root),
                ..Default::default()
            }),
            user: (!c.user.is_empty()).then(|| c.user.clone()),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(format!("crogia-{session_id}")),
            ..Default::default()
        };
        let created = docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| match self.engine.classify(e) {
                SandboxError::NotFound(m) => SandboxError::Engine(format!(
                    "sandbox image {:?} not found ({m}); build it with `just sandbox-image`",
                    c.image
                )),
                other => other,
            })?;
        if let Err(e) = self.start(&created.id).await {
            // Do not leave a created-but-dead container behind.
            let _ = self.remove(&created.id).await;
            return Err(e);
        }
        tracing::debug!(container = %created.id, "container started");
        self.observe("create", started);
        Ok(created.id)
    }

    /// Starts a stopped container (a no-op when it already runs).
    pub async fn start(&self, container: &str) -> Result<(), SandboxError> {
        let docker = self.engine.client().await?;
        match docker
            .start_container(container, None::<StartContainerOptions>)
            .await
        {
            Ok(()) => Ok(()),
            // 304: already started.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(self.engine.classify(e)),
        }
    }

    /// Inspects a container; `NotFound` when it no longer exists.
    pub async fn inspect(&self, container: &str) -> Result<ContainerInfo, SandboxError> {
        let _timing = self.timing("inspect");
        let docker = self.engine.client().await?;
        let info = docker
            .inspect_container(container, None::<InspectContainerOptions>)
            .await
            .map_err(|e| self.engine.classify(e))?;
        let state = info.state.unwrap_or_default();
        let status = state
            .status
            .unwrap_or(ContainerStateStatusEnum::EMPTY)
            .to_string();
        Ok(ContainerInfo {
            id: info.id.unwrap_or_else(|| container.to_string()),
            running: state.running.unwrap_or(false),
            status,
            labels: info.config.and_then(|c| c.labels).unwrap_or_default(),
        })
    }

    /// Starts the container again if it was stopped (say, by an engine
    /// restart), so the next command can run.
    pub async fn ensure_running(&self, container: &str) -> Result<(), SandboxError> {
        let info = self.inspect(container).await?;
        if info.running {
            return Ok(());
        }
        tracing::info!(container, status = %info.status, "starting stopped container");
        self.start(container).await
    }

    /// Stops a container, giving its processes `grace_secs` before SIGKILL.
    pub async fn stop(&self, container: &str, grace_secs: i32) -> Result<(), SandboxError> {
        let docker = self.engine.client().await?;
        let options = StopContainerOptions {
            t: Some(grace_secs),
            signal: None,
        };
        match docker.stop_container(container, Some(options)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(self.engine.classify(e)),
        }
    }

    /// Removes a container (running or not) and its anonymous volumes.
    /// Removing one that is already gone succeeds.
    pub async fn remove(&self, container: &str) -> Result<(), SandboxError> {
        let _timing = self.timing("remove");
        let docker = self.engine.client().await?;
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        match docker.remove_container(container, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) => match self.engine.classify(e) {
                SandboxError::NotFound(_) => Ok(()),
                // 409 "removal already in progress" counts as done.
                SandboxError::Conflict(m) if m.contains("in progress") => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Containers (running or not) carrying every one of `labels`; a label
    /// given without `=` matches any value.
    pub async fn find_by_labels(
        &self,
        labels: &[&str],
    ) -> Result<Vec<ContainerInfo>, SandboxError> {
        let docker = self.engine.client().await?;
        let filters = HashMap::from([(
            "label".to_string(),
            labels.iter().map(|l| l.to_string()).collect(),
        )]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let list = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.engine.classify(e))?;
        Ok(list
            .into_iter()
            .map(|c| {
                let status = c.state.map(|s| s.to_string()).unwrap_or_default();
                ContainerInfo {
                    id: c.id.unwrap_or_default(),
                    running: status == "running",
                    status,
                    labels: c.labels.unwrap_or_default(),
                }
            })
            .collect())
    }

    /// Every container this server manages (label `crogia.managed=true`).
    pub async fn managed_containers(&self) -> Result<Vec<ContainerInfo>, SandboxError> {
        self.find_by_labels(&[&format!("{LABEL_MANAGED}=true")])
            .await
    }
}

/// Records the time until it drops, whichever way the operation returns.
pub(crate) struct Timing<'a> {
    sandbox: &'a Sandbox,
    operation: &'static str,
    started: std::time::Instant,
}

impl Drop for Timing<'_> {
    fn drop(&mut self) {
        self.sandbox.observe(self.operation, self.started);
    }
}
