//! The Docker sandbox layer: one container per session, commands run in it,
//! and background processes started, listed and stopped in it.
//!
//! This layer is stateless: it knows containers by id and processes by the
//! records it hands back. Sessions and their persistence live above it. It
//! talks to the engine only through its API socket (bollard), never to a
//! container's network address.

mod agent;
mod checkpoints;
mod egress;
mod engine;
mod exec;
mod files;
mod layers;
mod processes;
mod scripts;
mod stdio;
mod watch;

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, HostConfig, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, ListVolumesOptions,
    RemoveContainerOptions, RemoveVolumeOptions, StartContainerOptions, StopContainerOptions,
    UploadToContainerOptions,
};

pub use agent::{AgentError, Terminal};
pub use checkpoints::CheckpointExport;
pub use crogia_sandbox_agent::checkpoint::{
    Diff as CheckpointDiff, FileDiff, FileStatus, Imported, Restored, SkippedFile, Taken,
};
pub use egress::EgressConnection;
pub use engine::DockerEngine;
pub use exec::{ExecChunk, ExecOutput, ExecRequest, MAX_COMMAND_CHARS, check_command};
pub use layers::{LABEL_LAYER, LayerBuilt, LayerDone, layer_store};
pub use processes::{BackgroundProcess, ProcessState, ProcessStatus, StopOutcome};
pub use stdio::{ProgramEnd, StdioProgram};
pub use watch::{ContainerChange, ContainerWatch, REMOVED};

use crogia_sandbox_agent::{
    CHECKPOINT_BASE, CHECKPOINT_BASE_FILES, CHECKPOINT_STORE, CHECKPOINT_VOLUME, CONTAINER_BINARY,
};

use crate::config::SandboxConfig;
use crate::workspace::{CONTAINER_ROOT, Workspace};

/// The directory the agent's binary is in, inside a container.
fn agent_dir() -> &'static str {
    CONTAINER_BINARY
        .rsplit_once('/')
        .map_or("/", |(dir, _)| dir)
}

/// The agent binary's file name in [`agent_dir`].
fn agent_file_name() -> &'static str {
    CONTAINER_BINARY
        .rsplit_once('/')
        .map_or(CONTAINER_BINARY, |(_, name)| name)
}

/// Every container's environment. Without a network of its own (`none`,
/// the default) programs reach out through the agent's proxy on loopback;
/// the usual variables point every HTTP client there (pip, cargo, npm, git,
/// curl, apt), and loopback itself stays direct.
fn container_env(c: &SandboxConfig) -> Vec<String> {
    let mut env = vec!["HOME=/root".to_string(), "LANG=C.UTF-8".to_string()];
    if c.network == "none" {
        let proxy = format!(
            "http://127.0.0.1:{}",
            crogia_sandbox_agent::protocol::PROXY_PORT
        );
        for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            env.push(format!("{name}={proxy}"));
        }
        for name in ["NO_PROXY", "no_proxy"] {
            env.push(format!("{name}=localhost,127.0.0.1,::1"));
        }
    }
    env
}

/// A tar archive whose one entry is the directory `path`, owned by
/// `uid:gid`: extracted at `/` over a mount point, it hands the volume
/// mounted there to that user; extracted in a volume, it makes a directory
/// of that user's there.
fn owned_dir(path: &str, uid: u32, gid: u32) -> bytes::Bytes {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_uid(uid.into());
    header.set_gid(gid.into());
    header.set_size(0);
    let mut archive = tar::Builder::new(Vec::new());
    archive
        .append_data(&mut header, path.trim_start_matches('/'), std::io::empty())
        .expect("writing to memory");
    archive.into_inner().expect("writing to memory").into()
}

/// Label on every container this server creates.
pub const LABEL_MANAGED: &str = "crogia.managed";
/// Label holding the session id a container belongs to.
pub const LABEL_SESSION: &str = "crogia.session";
/// Label naming the server instance (data directory) owning a container.
pub const LABEL_INSTANCE: &str = "crogia.instance";
/// Label naming the server that made a container and its volume (its id):
/// servers sharing one database share the instance id, not this.
pub const LABEL_SERVER: &str = "crogia.server";

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

    /// Where this sandbox records what it measures, if anywhere.
    pub fn metrics(&self) -> Option<&std::sync::Arc<crate::metrics::Metrics>> {
        self.metrics.as_ref()
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

    /// Whether the engine shares this machine's filesystem
    /// (`sandbox.local_engine`): the agent is then bind-mounted and
    /// workspaces are host directories; otherwise the agent is uploaded into
    /// each container and workspaces are named volumes.
    pub fn is_local(&self) -> bool {
        self.config.engine_is_local()
    }

    /// Creates and starts the container of `session_id`, with `workspace`
    /// mounted at `/workspace`, the sandbox agent injected, and the
    /// configured limits. Returns the container id.
    #[tracing::instrument(skip(self, workspace), fields(workspace = %workspace))]
    pub async fn create(
        &self,
        session_id: &str,
        workspace: &Workspace,
    ) -> Result<String, SandboxError> {
        self.create_container(session_id, workspace, None, Vec::new(), None)
            .await
    }

    /// [`Self::create`], on a fork layer still being written: the
    /// container (and its workspace's volumes) is made meanwhile, and
    /// started once `built` says the layer is done. If it says the layer
    /// will not be, or its builder goes away without saying, nothing of
    /// the container remains.
    pub async fn create_on_layer(
        &self,
        session_id: &str,
        workspace: &Workspace,
        built: LayerBuilt,
    ) -> Result<String, SandboxError> {
        self.create_container(session_id, workspace, None, Vec::new(), Some(built))
            .await
    }

    /// The labels of the containers (and volumes) this sandbox makes for
    /// `session_id`.
    fn labels_for(&self, session_id: &str) -> HashMap<String, String> {
        let mut labels: HashMap<String, String> = self.config.labels.clone().into_iter().collect();
        labels.insert(LABEL_MANAGED.into(), "true".into());
        labels.insert(LABEL_SESSION.into(), session_id.into());
        labels
    }

    /// [`Self::create`], with the checkpoint store in the named volume
    /// `store` (made if needed, kept when the container is removed)
    /// rather than in a volume of the container's own, `extra` binds
    /// (`source:target[:options]`) besides, and started only once `built`
    /// (if given) says the layer its workspace stands on is done.
    async fn create_container(
        &self,
        session_id: &str,
        workspace: &Workspace,
        store: Option<&str>,
        extra: Vec<String>,
        mut built: Option<LayerBuilt>,
    ) -> Result<String, SandboxError> {
        let started = std::time::Instant::now();
        let c = &self.config;
        let docker = self.engine.client().await?;
        let labels = self.labels_for(session_id);
        let mut binds = extra;
        match workspace {
            Workspace::Host(root) => {
                if let Some((uid, gid)) = c.user_ids() {
                    // The container's user must own its workspace to write in it.
                    std::os::unix::fs::chown(root, Some(uid), Some(gid)).map_err(|e| {
                        SandboxError::InvalidInput(format!(
                            "cannot hand the workspace to {uid}:{gid}: {e}"
                        ))
                    })?;
                }
                binds.push(format!("{}:{CONTAINER_ROOT}", root.display()));
            }
            Workspace::Volume(name) => {
                self.create_volume(name, &labels).await?;
                if let Some((uid, gid)) = c.user_ids() {
                    self.hand_volume(name, uid, gid, &labels).await?;
                }
                // `nocopy`: the image's own /workspace is not copied in (nor
                // its owner over the one just set), as with a directory.
                binds.push(format!("{name}:{CONTAINER_ROOT}:nocopy"));
            }
            Workspace::Layered { volume, layer } => {
                self.create_layered_volume(volume, layer, &labels).await?;
                if let Some((uid, gid)) = c.user_ids() {
                    // Handing it over mounts it: not before its layer is
                    // written (an overlay's lower directory must not change
                    // under it).
                    if let Some(built) = built.take() {
                        layers::wait_built(built).await?;
                    }
                    self.hand_volume(volume, uid, gid, &labels).await?;
                }
                binds.push(format!("{volume}:{CONTAINER_ROOT}:nocopy"));
                // The layer's objects, read (never written) by the store,
                // and its files, which hold the checkpoint's file blobs.
                binds.push(format!("{}:{CHECKPOINT_BASE}:ro", layer_store(layer)));
                binds.push(format!("{layer}:{CHECKPOINT_BASE_FILES}:ro"));
            }
        }
        if let Some(store) = store {
            self.create_volume(store, &labels).await?;
            binds.push(format!("{store}:{CHECKPOINT_VOLUME}:nocopy"));
        }
        // The agent: bind-mounted read-only from this host, or uploaded into
        // a volume of the container's own (an upload cannot reach a
        // read-only root) on an engine elsewhere.
        let agent = if self.is_local() {
            let path = self.agent_binary()?;
            binds.push(format!("{}:{CONTAINER_BINARY}:ro", path.display()));
            None
        } else {
            Some(self.agent_archive().await?)
        };
        let memory = i64::try_from(c.memory.bytes()).unwrap_or(i64::MAX);
        let body = ContainerCreateBody {
            image: Some(c.image.clone()),
            // The agent is PID 1: it serves the server and reaps orphans.
            entrypoint: Some(vec![CONTAINER_BINARY.into(), "init".into()]),
            cmd: Some(Vec::new()),
            working_dir: Some(CONTAINER_ROOT.into()),
            labels: Some(labels),
            env: Some(container_env(c)),
            // Volumes of the container's own: the checkpoint store (outside
            // the workspace, kept as long as the container), and the agent's
            // directory when it is uploaded.
            volumes: Some(
                (store.is_none().then(|| CHECKPOINT_VOLUME.to_string()))
                    .into_iter()
                    .chain(agent.is_some().then(|| agent_dir().to_string()))
                    .collect(),
            ),
            host_config: Some(HostConfig {
                binds: Some(binds),
                memory: Some(memory),
                // No swap beyond the memory limit.
                memory_swap: Some(memory),
                nano_cpus: Some((c.cpus * 1e9) as i64),
                pids_limit: Some(c.pids_limit),
                network_mode: Some(c.network.clone()),
                // The agent is the init: nothing stands in front of it.
                init: Some(false),
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
        let ready = async {
            // An upload mounts the container's volumes, its workspace too.
            if let Some(built) = built {
                layers::wait_built(built).await?;
            }
            if let Some(archive) = agent {
                self.upload(&created.id, agent_dir(), archive).await?;
            }
            if let Some((uid, gid)) = c.user_ids() {
                // The container's user must own its checkpoint store: a
                // directory made in the volume by an upload (which reaches a
                // volume under a read-only root too).
                let name = CHECKPOINT_STORE
                    .strip_prefix(CHECKPOINT_VOLUME)
                    .expect("the store is in its volume");
                let store = owned_dir(name, uid, gid);
                self.upload(&created.id, CHECKPOINT_VOLUME, store).await?;
            }
            self.start(&created.id).await
        };
        if let Err(e) = ready.await {
            // Do not leave a created-but-dead container behind.
            let _ = self.remove(&created.id).await;
            return Err(e);
        }
        tracing::debug!(container = %created.id, "container started");
        self.observe("create", started);
        Ok(created.id)
    }

    /// The agent binary on this host, as a canonical path.
    fn agent_binary(&self) -> Result<std::path::PathBuf, SandboxError> {
        let path = &self.config.agent_binary;
        std::fs::canonicalize(path).map_err(|e| {
            SandboxError::Engine(format!(
                "the sandbox agent {} cannot be used ({e}); build it with `just sandbox-agent` \
                 or set sandbox.agent_binary",
                path.display()
            ))
        })
    }

    /// A tar archive holding the agent binary, to upload into a container.
    async fn agent_archive(&self) -> Result<bytes::Bytes, SandboxError> {
        let path = self.agent_binary()?;
        tokio::task::spawn_blocking(move || -> std::io::Result<bytes::Bytes> {
            let binary = std::fs::read(&path)?;
            let mut header = tar::Header::new_gnu();
            header.set_size(binary.len() as u64);
            header.set_mode(0o755);
            header.set_entry_type(tar::EntryType::Regular);
            let mut archive = tar::Builder::new(Vec::with_capacity(binary.len() + 2048));
            archive.append_data(&mut header, agent_file_name(), binary.as_slice())?;
            Ok(archive.into_inner()?.into())
        })
        .await
        .expect("archiving does not panic")
        .map_err(|e| SandboxError::Engine(format!("cannot read the sandbox agent: {e}")))
    }

    /// Hands a fresh volume to `uid:gid` (the container's user must own its
    /// workspace to write in it, and a new volume belongs to root). The
    /// engine does it: a tar archive whose one entry is the mount point,
    /// owned by that user, extracted over the volume in a helper container
    /// that is created for it and never started, so it works whatever the
    /// image holds and whatever capabilities the session's container keeps.
    async fn hand_volume(
        &self,
        name: &str,
        uid: u32,
        gid: u32,
        labels: &HashMap<String, String>,
    ) -> Result<(), SandboxError> {
        let docker = self.engine.client().await?;
        let body = ContainerCreateBody {
            image: Some(self.config.image.clone()),
            labels: Some(labels.clone()),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                binds: Some(vec![format!("{name}:{CONTAINER_ROOT}:nocopy")]),
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let helper = docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(|e| self.engine.classify(e))?;
        let archive = owned_dir(CONTAINER_ROOT, uid, gid);
        let handed = self.upload(&helper.id, "/", archive).await;
        self.remove(&helper.id).await?;
        handed
    }

    /// Extracts a tar archive into `dir` of a (created) container.
    async fn upload(
        &self,
        container: &str,
        dir: &str,
        archive: bytes::Bytes,
    ) -> Result<(), SandboxError> {
        let _timing = self.timing("upload");
        let docker = self.engine.client().await?;
        let options = UploadToContainerOptions {
            path: dir.to_string(),
            ..Default::default()
        };
        docker
            .upload_to_container(container, Some(options), bollard::body_full(archive))
            .await
            .map_err(|e| self.engine.classify(e))
    }

    /// Creates a named volume for a workspace (labelled like its container,
    /// so `crogia gc` can find it); one that exists already is kept.
    async fn create_volume(
        &self,
        name: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), SandboxError> {
        let docker = self.engine.client().await?;
        let request = VolumeCreateRequest {
            name: Some(name.to_string()),
            labels: Some(labels.clone()),
            ..Default::default()
        };
        docker
            .create_volume(request)
            .await
            .map(drop)
            .map_err(|e| self.engine.classify(e))
    }

    /// Removes a session's workspace (after its container): the host
    /// directory, or the volume on the engine. One already gone is fine.
    pub async fn remove_workspace(&self, workspace: &Workspace) -> Result<(), SandboxError> {
        match workspace {
            Workspace::Host(_) => {
                let workspace = workspace.clone();
                tokio::task::spawn_blocking(move || workspace.remove_host_dir())
                    .await
                    .expect("removing a directory does not panic");
                Ok(())
            }
            Workspace::Volume(name) => self.remove_volume(name).await,
            Workspace::Layered { volume, .. } => {
                // The overlay first: its upper and work directories are
                // the other two. The layer is the fork's to release.
                self.remove_volume(volume).await?;
                self.remove_volume(&layers::upper(volume)).await?;
                self.remove_volume(&layers::work(volume)).await
            }
        }
    }

    /// Removes a named volume; one already gone is fine.
    async fn remove_volume(&self, name: &str) -> Result<(), SandboxError> {
        let docker = self.engine.client().await?;
        let options = RemoveVolumeOptions { force: true };
        match docker.remove_volume(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) => match self.engine.classify(e) {
                SandboxError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Names of the workspace volumes carrying every one of `labels`.
    pub async fn volumes_by_labels(
        &self,
        labels: &[&str],
    ) -> Result<Vec<(String, HashMap<String, String>)>, SandboxError> {
        let docker = self.engine.client().await?;
        let filters = HashMap::from([(
            "label".to_string(),
            labels.iter().map(|l| l.to_string()).collect(),
        )]);
        let list = docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(|e| self.engine.classify(e))?;
        Ok(list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| (v.name, v.labels))
            .collect())
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

    /// Sets the CPUs a container may use: `None`, every CPU of the engine's
    /// machine (for work the server asks of the agent, such as writing a
    /// fork's workspace, that the session's own limit would only slow);
    /// `Some`, the configured limit again.
    pub async fn set_cpus(&self, container: &str, cpus: Option<f64>) -> Result<(), SandboxError> {
        let nano = match cpus {
            Some(cpus) => (cpus * 1e9) as i64,
            None => self.engine.cpus().await? * 1_000_000_000,
        };
        let update = bollard::models::ContainerUpdateBody {
            nano_cpus: Some(nano),
            ..Default::default()
        };
        let _timing = self.timing("update");
        let docker = self.engine.client().await?;
        docker
            .update_container(container, update)
            .await
            .map_err(|e| self.engine.classify(e))
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
        self.agent_links.forget(container);
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
