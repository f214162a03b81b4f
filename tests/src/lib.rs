//! Shared fixtures for the integration tests: a sandbox whose containers are
//! swept when the fixture drops (even when the test panics), and a real
//! server on an ephemeral loopback port, and a scripted model.

pub mod engine;
pub mod model;
pub mod process;
pub mod proxy;
pub mod upstream;

use std::path::PathBuf;
use std::sync::Arc;

use crogia_host::capabilities::{Capabilities, ProcessTable};
use crogia_host::config::Config;
use crogia_host::plugins::PluginRuntime;
use crogia_host::sandbox::{DockerEngine, Sandbox};
use crogia_host::server::App;
use crogia_host::workspace::Workspace;

/// Label key on every container a test creates; `just test` sweeps it too.
pub const TEST_LABEL: &str = "crogia.test";

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A standard tool plugin built by `just build-plugins`, e.g. `"read-file"`.
pub fn dist_plugin(crate_name: &str) -> PathBuf {
    repo_root()
        .join("plugins/dist")
        .join(format!("{crate_name}.wasm"))
}

/// A test-only plugin from `plugins/testing/`, e.g. `"fixture-tools"`.
pub fn fixture_plugin(crate_name: &str) -> PathBuf {
    let file = format!("{}.wasm", crate_name.replace('-', "_"));
    repo_root()
        .join("plugins/target/wasm32-wasip2/release")
        .join(file)
}

/// Makes calls of `tool` wait for a person's approval, except those whose
/// subject matches one of `auto_approve`.
pub fn ask_before(config: &mut Config, tool: &str, auto_approve: &[&str]) {
    config.tools.insert(
        tool.into(),
        crogia_host::config::ToolConfig {
            approval: crogia_host::config::ToolApproval::Always,
            auto_approve: auto_approve.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        },
    );
}

/// A config for tests: small limits, a unique container label, data in a
/// temporary directory, plugins from `plugins/dist`.
pub fn test_config(data_dir: &std::path::Path, run_label: &str) -> Config {
    let mut config = Config::default();
    config.server.bind = "127.0.0.1:0".parse().unwrap();
    config.server.data_dir = data_dir.to_path_buf();
    config.sandbox.memory = "512m".parse().unwrap();
    config.sandbox.cpus = 1.0;
    config.sandbox.pids_limit = 256;
    config.sandbox.stop_grace_secs = 1;
    config
        .sandbox
        .labels
        .insert(TEST_LABEL.into(), run_label.into());
    config.plugins.dir = repo_root().join("plugins/dist");
    config.sandbox.agent_binary = repo_root().join("target/crogia-agent");
    // Tests that follow a task compare its exact events; the ones about
    // file events turn them on.
    config.workspace.file_events = false;
    // Layers are written ahead only for sessions forked over one, so that
    // a checkpoint starts no background copy beside what a test times or
    // counts; the tests about layers written ahead say what they want.
    config.workspace.fork_layers_ahead = crogia_host::config::ForkLayersAhead::Forked;
    config
}

/// The second Docker engine on this machine that `just test` starts
/// (`sandbox/ensure-second-engine.sh`), as a `docker_host`. It shares no
/// filesystem with the server, so the server treats it as remote.
pub fn second_engine() -> String {
    let dir = std::env::var("CROGIA_ENGINE2_DIR")
        .unwrap_or_else(|_| "/var/lib/crogia-engine2".to_string());
    let socket = format!("{dir}/docker.sock");
    assert!(
        std::path::Path::new(&socket).exists(),
        "no second Docker engine at {socket}: `just engine2` starts one (`just test` does)"
    );
    format!("unix://{socket}")
}

fn unique_label() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Removes every container carrying `crogia.test=<label>` on the default
/// engine. Runs on its own thread and runtime so it works from `Drop`,
/// inside or outside a runtime, while unwinding or not.
pub fn sweep_containers(label: &str) {
    sweep_engine(label, "");
}

/// Removes every container and volume carrying `crogia.test=<label>` on
/// the engine at `docker_host` (empty: the default one).
pub fn sweep_engine(label: &str, docker_host: &str) {
    let filter = format!("{TEST_LABEL}={label}");
    let docker_host = docker_host.to_string();
    let result = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let sandbox = Sandbox::new(DockerEngine::new(&docker_host), Config::default().sandbox);
            let containers = sandbox.find_by_labels(&[&filter]).await?;
            for c in &containers {
                sandbox.remove(&c.id).await?;
            }
            for (name, _) in sandbox.volumes_by_labels(&[&filter]).await? {
                sandbox.remove_workspace(&Workspace::Volume(name)).await?;
            }
            anyhow::Ok(containers.len())
        })
    })
    .join();
    match result {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => eprintln!("warning: sweeping test containers failed: {e}"),
        Err(_) => eprintln!("warning: sweeping test containers panicked"),
    }
}

/// A sandbox for one test. Every container it creates carries a label unique
/// to it and is removed when it drops.
pub struct TestSandbox {
    pub sandbox: Sandbox,
    pub config: Config,
    pub label: String,
    pub tmp: tempfile::TempDir,
}

impl TestSandbox {
    pub fn new() -> Self {
        Self::with_config(|_| {})
    }

    pub fn with_config(adjust: impl FnOnce(&mut Config)) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let label = unique_label();
        let mut config = test_config(tmp.path(), &label);
        adjust(&mut config);
        let sandbox = Sandbox::new(
            DockerEngine::new(&config.sandbox.docker_host),
            config.sandbox.clone(),
        );
        Self {
            sandbox,
            config,
            label,
            tmp,
        }
    }

    /// Creates a workspace (a directory, or a volume on an engine that is
    /// not local) and a running container for it.
    pub async fn container(&self) -> (String, Arc<Workspace>) {
        let id = format!("{:08x}", rand::random::<u32>());
        let ws = if self.sandbox.is_local() {
            Workspace::create(self.tmp.path().join(format!("workspaces/session_{id}"))).unwrap()
        } else {
            Workspace::volume_for(&id)
        };
        let container = self
            .sandbox
            .create(&id, &ws)
            .await
            .expect("creating a container");
        (container, Arc::new(ws))
    }
}

impl TestSandbox {
    /// A container and the capabilities of a session living in it.
    pub async fn capabilities(&self) -> Capabilities {
        let (container, workspace) = self.container().await;
        Capabilities::new(
            &container,
            self.sandbox.clone(),
            &container,
            workspace,
            ProcessTable::new(Vec::new(), None),
            Arc::new(self.config.workspace.clone()),
            Arc::default(),
        )
    }

    /// A plugin runtime over this fixture's config, with its folder loaded.
    pub async fn plugins(&self) -> Arc<PluginRuntime> {
        let runtime = PluginRuntime::new(&self.config).expect("plugin runtime");
        let report = runtime.reload().await;
        assert!(
            report.skipped.is_empty(),
            "plugins skipped: {:?}",
            report.skipped
        );
        runtime
    }

    /// A fresh plugins folder (inside this fixture's temporary directory)
    /// holding copies of `files`; the config now points at it.
    pub fn plugin_dir(&mut self, files: &[PathBuf]) -> PathBuf {
        let dir = self
            .tmp
            .path()
            .join(format!("plugins-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in files {
            std::fs::copy(f, dir.join(f.file_name().unwrap())).unwrap_or_else(|e| {
                panic!("copying {}: {e} (run `just build-plugins`)", f.display())
            });
        }
        self.config.plugins.dir = dir.clone();
        dir
    }
}

impl Default for TestSandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl TestSandbox {
    /// A placeholder that owns no containers (its sweep finds nothing).
    fn detached() -> Self {
        Self::new()
    }
}

impl Drop for TestSandbox {
    fn drop(&mut self) {
        // The default engine always (a proxy in front of it may be gone by
        // now); the configured one too when it is another engine.
        sweep_engine(&self.label, "");
        if !self.config.sandbox.engine_is_local() {
            sweep_engine(&self.label, &self.config.sandbox.docker_host);
        }
        for engine in &self.config.sandbox.engines {
            if !engine.docker_host.is_empty() && !engine.docker_host.contains("engine-proxy") {
                sweep_engine(&self.label, &engine.docker_host);
            }
        }
    }
}

/// A real server on an ephemeral loopback port, stopped (and its containers
/// removed) when dropped.
pub struct TestServer {
    pub base: String,
    pub fixture: TestSandbox,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub client: reqwest::Client,
    /// The server's state, to look inside (subscribers, running tasks).
    pub state: std::sync::Arc<crogia_host::state::AppState>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with_config(|_| {}).await
    }

    pub async fn with_config(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_with(TestSandbox::with_config(adjust)).await
    }

    /// Starts a server over an existing fixture (its config and data
    /// directory), e.g. to restart one that [`TestServer::stop`] stopped.
    pub async fn start_with(fixture: TestSandbox) -> Self {
        Self::start_on(fixture, "127.0.0.1:0").await
    }

    /// Like [`TestServer::start_with`], listening on `addr`.
    pub async fn start_on(fixture: TestSandbox, addr: &str) -> Self {
        // A fixed port may still be held by a server that is shutting down.
        let mut attempt = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(_) if attempt < 50 => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("binding {addr}: {e}"),
            }
        };
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = App::build(fixture.config.clone())
            .await
            .expect("building the app");
        let state = app.state.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.serve(listener, async move {
            let _ = rx.await;
        }));
        Self {
            base,
            fixture,
            shutdown: Some(tx),
            task: Some(task),
            client: reqwest::Client::new(),
            state,
        }
    }

    /// `GET path` → (status, JSON body).
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        Self::parse(self.client.get(self.url(path)).send().await.unwrap()).await
    }

    /// `POST path` with a JSON body → (status, JSON body).
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        Self::parse(
            self.client
                .post(self.url(path))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// `method path` (with a JSON body, if any) carrying `token` as a
    /// bearer token → (status, JSON body).
    pub async fn call_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        Self::parse(req.send().await.unwrap()).await
    }

    /// `DELETE path` → (status, JSON body).
    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        Self::parse(self.client.delete(self.url(path)).send().await.unwrap()).await
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Creates a session and returns its id.
    pub async fn session(&self) -> String {
        let (status, body) = self.post("/api/sessions", serde_json::json!({})).await;
        assert_eq!(status, 200, "{body}");
        body["session_id"].as_str().unwrap().to_string()
    }

    async fn parse(resp: reqwest::Response) -> (u16, serde_json::Value) {
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, body)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the server and waits until it has shut down.
    pub async fn stop(mut self) -> TestSandbox {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        std::mem::replace(&mut self.fixture, TestSandbox::detached())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A WebSocket client of `/ws/{session_id}`.
pub struct WsClient {
    stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

/// What a WebSocket read produced.
#[derive(Debug)]
pub enum WsRead {
    Event(serde_json::Value),
    Closed(Option<u16>, String),
    TimedOut,
}

impl TestServer {
    /// Connects to a session's event stream (`since` replays from there).
    pub async fn ws(&self, session_id: &str, since: Option<u64>) -> WsClient {
        let mut url = format!("{}/ws/{session_id}", self.base.replacen("http", "ws", 1));
        if let Some(since) = since {
            url.push_str(&format!("?since={since}"));
        }
        let session = self.state.sessions.get(session_id).ok();
        let before = session.as_ref().map_or(0, |s| s.events.subscribers());
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("WebSocket connect");
        // The server subscribes just after the handshake; wait for it, so a
        // test never races its first events.
        if let Some(session) = session {
            for _ in 0..500 {
                if session.events.subscribers() > before {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        WsClient { stream }
    }
}

impl WsClient {
    /// Connects to a full `ws://` URL.
    pub async fn connect(url: &str) -> Self {
        // tungstenite zero-fills its whole read buffer before each read; the
        // default 128 KiB makes a reader that keeps up with a flood slow.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(16 * 1024);
        let (stream, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
            .await
            .expect("WebSocket connect");
        Self { stream }
    }

    /// The next frame that matters: an event, or the close.
    pub async fn read(&mut self, within: std::time::Duration) -> WsRead {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match tokio::time::timeout(within, self.stream.next()).await {
                Err(_) => return WsRead::TimedOut,
                Ok(None) => return WsRead::Closed(None, String::new()),
                Ok(Some(Err(e))) => return WsRead::Closed(None, e.to_string()),
                Ok(Some(Ok(Message::Text(text)))) => {
                    return WsRead::Event(
                        serde_json::from_str(&text).expect("event frames are JSON"),
                    );
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return match frame {
                        Some(f) => WsRead::Closed(Some(f.code.into()), f.reason.to_string()),
                        None => WsRead::Closed(None, String::new()),
                    };
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The next text frame, unparsed (for readers that must keep up with a
    /// flood); panics on close or after 30 s.
    pub async fn text(&mut self) -> tokio_tungstenite::tungstenite::Utf8Bytes {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(30), self.stream.next()).await
            {
                Ok(Some(Ok(Message::Text(text)))) => return text,
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) => panic!("closed"),
                Ok(Some(Err(e))) => panic!("WebSocket error: {e}"),
                Err(_) => panic!("no frame in 30 s"),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The next event; panics on close or after 30 s.
    pub async fn event(&mut self) -> serde_json::Value {
        match self.read(std::time::Duration::from_secs(30)).await {
            WsRead::Event(e) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// Events until (and including) the `n`th `task_completed`.
    pub async fn until_completed(&mut self, n: usize) -> Vec<serde_json::Value> {
        let mut events = Vec::new();
        let mut seen = 0;
        while seen < n {
            let e = self.event().await;
            if e["type"] == "task_completed" {
                seen += 1;
            }
            events.push(e);
        }
        events
    }
}

/// A server whose model is `model` (a scripted one).
pub async fn server_with_model(
    model: &model::ScriptedModel,
    adjust: impl FnOnce(&mut Config),
) -> TestServer {
    let base_url = model.base_url.clone();
    TestServer::with_config(move |c| {
        c.model.base_url = base_url;
        c.model.model = "scripted".into();
        c.agent.retry_base_ms = 20;
        adjust(c);
    })
    .await
}

impl TestServer {
    /// Whether a process whose command line contains `needle` runs in a
    /// session's container right now.
    pub async fn process_running(&self, session_id: &str, needle: &str) -> bool {
        let (status, out) = self
            .post(
                &format!("/api/sessions/{session_id}/shell"),
                serde_json::json!({"cmd": "ps -eo args"}),
            )
            .await;
        assert_eq!(status, 200, "{out}");
        out["stdout"]
            .as_str()
            .unwrap()
            .lines()
            .any(|l| l.contains(needle))
    }
}

/// A client of `/ws/{session_id}/pty`: an interactive terminal.
pub struct TermClient {
    stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    /// Everything the terminal has shown so far.
    pub screen: String,
}

impl TestServer {
    /// Opens a terminal of `cols` x `rows` in a session.
    pub async fn terminal(&self, session_id: &str, cols: u16, rows: u16) -> TermClient {
        let url = format!(
            "{}/ws/{session_id}/pty?cols={cols}&rows={rows}",
            self.base.replacen("http", "ws", 1)
        );
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("terminal connect");
        TermClient {
            stream,
            screen: String::new(),
        }
    }
}

impl TermClient {
    /// Types `keys` (a binary frame).
    pub async fn type_in(&mut self, keys: &str) {
        use futures_util::SinkExt;
        self.stream
            .send(tokio_tungstenite::tungstenite::Message::Binary(
                keys.as_bytes().to_vec().into(),
            ))
            .await
            .unwrap();
    }

    /// Sends a text frame as it is.
    pub async fn send_text(&mut self, text: &str) {
        use futures_util::SinkExt;
        self.stream
            .send(tokio_tungstenite::tungstenite::Message::Text(text.into()))
            .await
            .unwrap();
    }

    /// Reads until the screen holds `text` (panics after 20 s, or when the
    /// connection closes first).
    pub async fn until(&mut self, text: &str) {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        while !self.screen.contains(text) {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(Ok(Message::Binary(data)))) => {
                    self.screen.push_str(&String::from_utf8_lossy(&data));
                }
                Ok(Some(Ok(_))) => {}
                other => panic!(
                    "the terminal never showed {text:?} ({other:?}); it showed {:?}",
                    self.screen
                ),
            }
        }
    }

    /// Reads until the server closes; its close code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(20), self.stream.next()).await
            {
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                }
                Ok(Some(Ok(Message::Binary(data)))) => {
                    self.screen.push_str(&String::from_utf8_lossy(&data));
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("the terminal did not close cleanly: {other:?}"),
            }
        }
    }
}
