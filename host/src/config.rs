//! Server configuration: `crogia.toml`, overridden by `CROGIA_<SECTION>_<KEY>`
//! environment variables, overridden by command-line flags.
//!
//! Every key has a default (see `crogia.example.toml`, which a test keeps in
//! step with [`Config::default`]). Unknown keys are rejected, naming the key and
//! where it came from, so a typo never silently falls back to a default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Deserializer, Serialize};

/// The sections that environment variables may override, as
/// `CROGIA_<SECTION>_<KEY>`.
pub const ENV_SECTIONS: &[&str] = &[
    "server",
    "store",
    "auth",
    "sandbox",
    "workspace",
    "model",
    "agent",
    "plugins",
    "network",
    "mcp",
];

/// `CROGIA_` variables that are not configuration keys: the command-line
/// client's (`CROGIA_URL`, `CROGIA_TOKEN`), the config file's path, the
/// plugin build script's choice of toolchain, and anything starting with
/// `CROGIA_TEST_` (the test suite's own switches). Every other `CROGIA_`
/// variable must name a key, so a typo is an error rather than a silently
/// ignored setting.
pub const NON_CONFIG_VARS: &[&str] = &[
    "CROGIA_URL",
    "CROGIA_TOKEN",
    "CROGIA_CONFIG",
    "CROGIA_PLUGIN_TOOLCHAIN",
];
/// Prefix of the test suite's own variables (never configuration).
const TEST_VAR_PREFIX: &str = "CROGIA_TEST_";

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    /// Where the server's state lives: SQLite in `server.data_dir` unless
    /// a PostgreSQL URL is given.
    pub store: StoreConfig,
    pub auth: AuthConfig,
    pub sandbox: SandboxConfig,
    pub workspace: WorkspaceConfig,
    pub model: ModelConfig,
    pub agent: AgentConfig,
    pub plugins: PluginsConfig,
    /// What the sandboxes may reach on the network (through the sandbox
    /// agent's proxy; containers have no network interface of their own).
    pub network: NetworkConfig,
    /// Per-tool settings, keyed by tool name.
    pub tools: BTreeMap<String, ToolConfig>,
    /// External MCP servers whose tools are offered as `<server>__<tool>`.
    pub mcp: McpConfig,
}

/// `[mcp]`: external MCP servers the agent may use.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct McpConfig {
    /// Keyed by the server's name: lowercase letters and digits, words
    /// joined by single `_` (no `__`, which separates it from the tool's
    /// name), at most 32 characters.
    pub servers: BTreeMap<String, McpServerConfig>,
    /// Seconds to connect to a server and list its tools.
    pub connect_timeout_secs: u64,
    /// Seconds a session waits before trying again a server that failed.
    pub retry_secs: u64,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            servers: BTreeMap::new(),
            connect_timeout_secs: 20,
            retry_secs: 60,
        }
    }
}

/// `[mcp.servers.<name>]`: an MCP server, remote (`url`, streamable HTTP)
/// or a program in each session's container (`command`, stdio).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct McpServerConfig {
    /// A remote server's endpoint, `http://` or `https://`. Reached from
    /// the server under each session's network policy (its host must be
    /// allowed, as for the session's own programs), one connection per
    /// session.
    pub url: String,
    /// Headers sent with every request (`url` only): header name → the
    /// name of the environment variable holding its value (so secrets stay
    /// out of the config file), read when a session connects.
    pub headers: BTreeMap<String, String>,
    /// A stdio server: the program and its arguments (no shell), started
    /// inside each session's container by its agent the first time the
    /// session needs its tools, and again when it has died. It runs
    /// sandboxed, under the session's network policy, as the session's own
    /// commands do.
    pub command: Vec<String>,
    /// Its environment (`command` only): variable → the name of the
    /// server's environment variable holding its value, read when it
    /// starts. Everything in the container can read it, the model's
    /// commands too.
    pub env: BTreeMap<String, String>,
    /// Its working directory (`command` only); the workspace by default.
    pub cwd: Option<String>,
}

impl McpServerConfig {
    /// What it is, for people: its URL or its command line.
    pub fn describe(&self) -> String {
        if self.command.is_empty() {
            self.url.clone()
        } else {
            self.command.join(" ")
        }
    }
}

/// Most stdio MCP servers (`command`): each session runs them all, and its
/// agent runs at most `MAX_STDIO` such programs.
pub const MAX_MCP_PROGRAMS: usize = crogia_sandbox_agent::protocol::MAX_STDIO / 2;

/// The rule for an MCP server's name in `[mcp.servers.<name>]`.
pub const MCP_SERVER_NAME_RULE: &str = "lowercase letters and digits, words joined by single '_', starting with a letter, at most 32 characters";

/// Whether `name` may name an MCP server (see [`MCP_SERVER_NAME_RULE`]).
pub fn valid_mcp_server_name(name: &str) -> bool {
    name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.split('_').all(|word| {
            !word.is_empty()
                && word
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Loopback by default.
    pub bind: SocketAddr,
    /// Where sessions' workspaces and the database live.
    pub data_dir: PathBuf,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Events a WebSocket client may fall behind before it is disconnected
    /// (it can resume with `?since=`).
    pub ws_buffer_events: usize,
    /// Seconds between pings on WebSocket connections.
    pub ws_ping_secs: u64,
    /// Seconds a WebSocket client may stay silent after a ping (a pong
    /// answers it) before it counts as gone and is disconnected.
    pub ws_pong_timeout_secs: u64,
    /// Most WebSocket clients connected at once, over all sessions; one more
    /// is refused with 429.
    pub ws_max_clients: usize,
    /// Most WebSocket clients following one session at once.
    pub ws_max_clients_per_session: usize,
    /// Host names (as in the `Host` header, without the port) accepted
    /// besides loopback names and the bind address while no `auth.tokens`
    /// are set. Refusing other names stops DNS rebinding: a web page whose
    /// name resolves to 127.0.0.1 cannot drive the server.
    pub allowed_hosts: Vec<String>,
    /// Log lines as `text` (for people) or `json` (one object per line, for
    /// log collectors).
    pub log_format: LogFormat,
}

/// `[store]`: the database.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `postgres://user:password@host:port/database` (sqlx's URL, with its
    /// `sslmode` and other parameters) to keep state in PostgreSQL; empty:
    /// SQLite at `<server.data_dir>/crogia.db`.
    pub url: String,
    /// Most connections the server opens to PostgreSQL.
    pub max_connections: u32,
    /// How long to wait for a connection (at start, while PostgreSQL is
    /// still coming up, and later when all are busy) before failing.
    pub connect_timeout_secs: u64,
    /// With PostgreSQL, several servers may share the database. Each runs
    /// the tasks of the sessions it holds, and says every third of this it
    /// is alive; a server silent for this long is taken for dead, and the
    /// others take its sessions over (its running tasks end `interrupted`,
    /// its queued ones run).
    pub lease_secs: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            max_connections: 16,
            connect_timeout_secs: 30,
            lease_secs: 15,
        }
    }
}

impl StoreConfig {
    /// How long a server may be silent before its sessions are taken over.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }
}

impl StoreConfig {
    /// The URL without its password, for logs and errors.
    pub fn display_url(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(mut u) => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("***"));
                }
                u.to_string()
            }
            Err(_) => "(not a URL)".into(),
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.display_url())
            .field("max_connections", &self.max_connections)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("lease_secs", &self.lease_secs)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            data_dir: PathBuf::from("data"),
            max_body_bytes: 10 * 1024 * 1024,
            ws_buffer_events: 4096,
            ws_ping_secs: 20,
            ws_pong_timeout_secs: 30,
            ws_max_clients: 1024,
            ws_max_clients_per_session: 128,
            allowed_hosts: Vec::new(),
            log_format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// API tokens: requests must carry one (`Authorization: Bearer <token>`,
    /// or `?token=` on the WebSocket). Empty: no authentication, which the
    /// server allows only on a loopback address (or with `--insecure`).
    /// A list, or one comma-separated string (handy for CROGIA_AUTH_TOKENS).
    #[serde(deserialize_with = "tokens")]
    pub tokens: Vec<String>,
    /// Whether `GET /api/health` answers without a token.
    pub public_health: bool,
    /// Origins allowed to call the API from a browser (CORS), e.g.
    /// `["https://console.example.com"]`; `["*"]` for any. Empty: CORS off.
    pub cors_origins: Vec<String>,
    /// Principals: `[[auth.users]]` entries, each a name, the SHA-256 of
    /// its token (`crogia token new NAME` makes both) and a role. A `user`
    /// sees and touches only the sessions it created, within its limits;
    /// an `admin` sees every session. Each of `tokens` is an admin too.
    pub users: Vec<UserConfig>,
    /// What each `user` may use, unless its own entry says otherwise
    /// (admins have no limits but those their entry sets).
    pub limits: LimitsConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            public_health: true,
            cors_origins: Vec::new(),
            users: Vec::new(),
            limits: LimitsConfig::default(),
        }
    }
}

impl AuthConfig {
    /// Whether requests must carry a token.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty() || !self.users.is_empty()
    }

    fn check_users(&self) -> anyhow::Result<()> {
        let mut names = std::collections::BTreeSet::new();
        let mut hashes = std::collections::BTreeSet::new();
        for u in &self.users {
            if !valid_principal_name(&u.name) {
                bail!(
                    "auth.users: {:?} is not a name: 1 to 64 letters, digits, '.', '_' or '-'",
                    u.name
                );
            }
            if !names.insert(u.name.as_str()) {
                bail!("auth.users: {:?} is named twice", u.name);
            }
            let hash = u.token_sha256.to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!(
                    "auth.users.{}: token_sha256 must be 64 hex characters (`crogia token new {}` prints one)",
                    u.name,
                    u.name
                );
            }
            if !hashes.insert(hash) {
                bail!("auth.users.{}: another user has the same token", u.name);
            }
        }
        Ok(())
    }
}

/// Whether `name` can name a principal: 1 to 64 ASCII letters, digits,
/// `.`, `_` or `-`.
pub fn valid_principal_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A principal: who a token stands for.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// 1 to 64 letters, digits, `.`, `_` or `-`; unique.
    pub name: String,
    /// The SHA-256 of its token, in hex (64 characters): the token itself
    /// is never stored.
    pub token_sha256: String,
    #[serde(default)]
    pub role: Role,
    /// Its own limits, in place of `[auth.limits]`' (0: none).
    #[serde(default)]
    pub max_sessions: Option<u64>,
    #[serde(default)]
    pub max_running_tasks: Option<u64>,
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
}

/// What a principal may do.
#[derive(
    Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees and touches only its own sessions.
    #[default]
    User,
    /// Sees and touches every session.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
        }
    }
}

/// Limits of one principal; 0 means none.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Sessions it has at once.
    pub max_sessions: u64,
    /// Its tasks running at once (across its sessions; a task queued
    /// behind another in the same session does not count).
    pub max_running_tasks: u64,
    /// Model tokens (prompt and completion) it may use per UTC day.
    pub tokens_per_day: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_sessions: 20,
            max_running_tasks: 4,
            tokens_per_day: 0,
        }
    }
}

fn tokens<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    let list = match Raw::deserialize(d)? {
        Raw::One(s) => s.split(',').map(|t| t.trim().to_string()).collect(),
        Raw::Many(v) => v,
    };
    let list: Vec<String> = list.into_iter().filter(|t| !t.is_empty()).collect();
    if let Some(short) = list.iter().find(|t| t.len() < 16) {
        return Err(serde::de::Error::custom(format!(
            "auth.tokens: a token of {} characters is too short to be safe; use at least 16",
            short.len()
        )));
    }
    Ok(list)
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Docker engine address (`unix:///var/run/docker.sock`, `tcp://...`).
    /// Empty: `$DOCKER_HOST`, else the local socket.
    pub docker_host: String,
    /// Whether the engine shares this machine's filesystem. When it does,
    /// the agent binary is bind-mounted into containers and workspaces are
    /// directories under the data directory; when not, the agent is
    /// uploaded into each container through the Engine API and each
    /// workspace is a named volume on the engine (`crogia-ws-<session>`).
    /// Unset: local exactly when `docker_host` is empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_engine: Option<bool>,
    /// `[[sandbox.engines]]`: several Docker engines to place sessions on
    /// (each new session goes to the least loaded one that answers). Empty:
    /// the one engine at `docker_host`, named `default`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub engines: Vec<EngineConfig>,
    /// Image every session container is created from.
    pub image: String,
    /// Memory limit per container, Docker-style (`"2g"`, `"512m"`, bytes).
    pub memory: MemorySize,
    /// CPU limit per container, in CPUs (fractions allowed).
    pub cpus: f64,
    /// Most processes (and threads) a container may hold at once.
    pub pids_limit: i64,
    /// Docker network mode for containers: `"none"` (no network) by default.
    pub network: String,
    /// Kept so that older config files still load; it changes nothing. The
    /// sandbox agent is every container's PID 1 and reaps orphaned processes.
    pub init: bool,
    /// Linux capabilities kept (all others are dropped).
    pub cap_add: Vec<String>,
    /// Size of the tmpfs mounted at /tmp (Docker syntax, e.g. "256m").
    pub tmp_size: String,
    /// Mount the image's root filesystem read-only (/workspace and /tmp stay
    /// writable).
    pub read_only_root: bool,
    /// Run as this user ("uid:gid"); empty: the image's user (root). The
    /// workspace is handed to that user when a session is created.
    pub user: String,
    /// Default timeout of one command run with exec, in seconds.
    pub exec_timeout_secs: u64,
    /// Longest timeout a caller may ask for, in seconds.
    pub max_exec_timeout_secs: u64,
    /// Most bytes kept of each of stdout and stderr of one command; the rest
    /// is dropped from the middle and replaced by a visible marker.
    pub output_limit_bytes: usize,
    /// Seconds between SIGTERM and SIGKILL when stopping a background process.
    pub stop_grace_secs: u64,
    /// Extra labels put on every container (besides `crogia.managed` and
    /// `crogia.session`).
    pub labels: BTreeMap<String, String>,
    /// Containers kept started ahead of time, so creating a session only
    /// takes one (the pool refills in the background; a container is never
    /// handed out twice). 0: create each on demand.
    pub pool_size: usize,
    /// The sandbox agent's static binary (`just sandbox-agent` builds it into
    /// `target/crogia-agent`). It is mounted read-only into every container
    /// and runs there as PID 1; a relative path is taken from the directory
    /// the server starts in.
    pub agent_binary: PathBuf,
}

/// `[[sandbox.engines]]`: one Docker engine sessions may be placed on.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// What the API, errors and metrics call it (`[a-z0-9_-]`, at most 32).
    pub name: String,
    /// Its address, as `sandbox.docker_host` (empty: `$DOCKER_HOST`, else
    /// the local socket).
    #[serde(default)]
    pub docker_host: String,
    /// Whether it shares this machine's filesystem, as
    /// `sandbox.local_engine`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_engine: Option<bool>,
    /// Most sessions placed on it; 0: no limit.
    #[serde(default)]
    pub max_sessions: u64,
}

/// The engine's name when `[[sandbox.engines]]` is not set.
pub const DEFAULT_ENGINE: &str = "default";

impl SandboxConfig {
    /// The engines sessions are placed on, in the order configured.
    pub fn engines(&self) -> Vec<EngineConfig> {
        if !self.engines.is_empty() {
            return self.engines.clone();
        }
        vec![EngineConfig {
            name: DEFAULT_ENGINE.into(),
            docker_host: self.docker_host.clone(),
            local_engine: self.local_engine,
            max_sessions: 0,
        }]
    }

    /// These settings for the containers of `engine`.
    pub fn for_engine(&self, engine: &EngineConfig) -> SandboxConfig {
        SandboxConfig {
            docker_host: engine.docker_host.clone(),
            local_engine: engine.local_engine,
            engines: Vec::new(),
            ..self.clone()
        }
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            docker_host: String::new(),
            local_engine: None,
            engines: Vec::new(),
            image: "crogia-sandbox:latest".into(),
            memory: MemorySize(2 * 1024 * 1024 * 1024),
            cpus: 1.0,
            pids_limit: 512,
            network: "none".into(),
            init: true,
            cap_add: [
                "CHOWN",
                "DAC_OVERRIDE",
                "FOWNER",
                "FSETID",
                "KILL",
                "SETGID",
                "SETUID",
                "NET_BIND_SERVICE",
            ]
            .map(String::from)
            .to_vec(),
            tmp_size: "256m".into(),
            read_only_root: false,
            user: String::new(),
            exec_timeout_secs: 120,
            max_exec_timeout_secs: 3600,
            output_limit_bytes: 256 * 1024,
            stop_grace_secs: 5,
            labels: BTreeMap::new(),
            pool_size: 0,
            agent_binary: PathBuf::from("target/crogia-agent"),
        }
    }
}

impl SandboxConfig {
    /// `local_engine`, or its default.
    pub fn engine_is_local(&self) -> bool {
        self.local_engine.unwrap_or(self.docker_host.is_empty())
    }

    /// `sandbox.user` as (uid, gid), when set.
    pub fn user_ids(&self) -> Option<(u32, u32)> {
        let (u, g) = self.user.split_once(':')?;
        Some((u.parse().ok()?, g.parse().ok()?))
    }

    pub fn exec_timeout(&self) -> Duration {
        Duration::from_secs(self.exec_timeout_secs)
    }
    pub fn max_exec_timeout(&self) -> Duration {
        Duration::from_secs(self.max_exec_timeout_secs)
    }
    pub fn stop_grace(&self) -> Duration {
        Duration::from_secs(self.stop_grace_secs)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WorkspaceConfig {
    /// Largest file read whole (REST reads, the read_file tool), in bytes.
    pub max_read_bytes: u64,
    /// Most results one search returns.
    pub search_max_results: usize,
    /// Longest matched line returned by grep, in characters.
    pub search_max_line_chars: usize,
    /// Files larger than this are skipped by grep, in bytes.
    pub search_max_file_bytes: u64,
    /// Publish `file_changed` events for what changes in each workspace.
    pub file_events: bool,
    /// Record the workspace as a checkpoint when a session is made and after
    /// each task (in a git object store in the container, outside the
    /// workspace), for diffs, rewinds and forks.
    pub checkpoints: bool,
    /// Files larger than this are left out of checkpoints (and listed), in
    /// bytes.
    pub checkpoint_max_file_bytes: u64,
    /// Forks stand on a layer: the checkpoint's files written once (by the
    /// first fork of it) and shared, copy on write, by every fork of it
    /// through an overlay volume, instead of each fork writing a copy.
    /// Needs an engine whose `local` volume driver can mount overlays (a
    /// fork that cannot falls back to copying). Off: every fork copies.
    pub fork_layers: bool,
    /// Which sessions have each new checkpoint's layer written as soon as
    /// the checkpoint is taken, in the background, so that its first fork
    /// copies nothing either (with `fork_layers`). It costs a copy of the
    /// workspace per checkpoint and the disk of one more (the last such
    /// layer no fork stands on is removed when the next is written).
    pub fork_layers_ahead: ForkLayersAhead,
    /// With `fork_layers_ahead = "always"`: the most bytes of files a
    /// checkpoint of a session never forked may hold to have its layer
    /// written ahead, which bounds the disk that costs per session (a
    /// session forked over a layer has them written whatever its size,
    /// as with `"forked"`). 0: no limit.
    pub fork_layers_ahead_max_bytes: u64,
}

/// Which sessions' checkpoints have their fork layers written ahead
/// ([`WorkspaceConfig::fork_layers_ahead`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForkLayersAhead {
    /// None: the first fork of a checkpoint writes its layer.
    Never,
    /// Those this server has forked over a layer since it started: after
    /// one fork, more are likely.
    Forked,
    /// Those, and every other session's checkpoints that hold files, up to
    /// [`WorkspaceConfig::fork_layers_ahead_max_bytes`] of them: a
    /// session's first fork then copies nothing either.
    #[default]
    Always,
}

impl Default for WorkspaceConfig {
    fn default() -> Self {
        Self {
            max_read_bytes: 10 * 1024 * 1024,
            search_max_results: 1000,
            search_max_line_chars: 500,
            search_max_file_bytes: 50 * 1024 * 1024,
            file_events: true,
            checkpoints: true,
            checkpoint_max_file_bytes: 8 * 1024 * 1024,
            fork_layers: true,
            fork_layers_ahead: ForkLayersAhead::Always,
            fork_layers_ahead_max_bytes: 256 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Base URL of an OpenAI-compatible API (e.g. `https://api.openai.com/v1`).
    /// Empty: no model configured; tasks fail with a message saying so.
    pub base_url: String,
    /// Model name sent with every request.
    pub model: String,
    /// Name of the environment variable that holds the API key.
    pub api_key_env: String,
    /// Prices per million tokens, by model name, for the cost in
    /// `GET /api/usage`: `prices."gpt-4o" = { prompt = 2.5, completion = 10.0 }`.
    pub prices: BTreeMap<String, Price>,
}

/// What a million tokens of a model cost, in the operator's currency.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub prompt: f64,
    pub completion: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            model: String::new(),
            api_key_env: "OPENAI_API_KEY".into(),
            prices: BTreeMap::new(),
        }
    }
}

/// The default system prompt: what the agent is and where it works.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are an autonomous coding agent working in a Linux container. \
Your workspace is /workspace: every file path you give a tool is relative to it, and it persists between tasks. \
The container has Python 3 with pip and venv, git, ripgrep and curl. Its HTTP and HTTPS traffic goes through a proxy \
that lets the package registries through (pip, cargo, npm and apt work) and refuses other hosts unless the operator \
allows them; a refused request answers 403 saying why. \
Work step by step: look at what is there before changing it, make focused changes with the tools, \
run the code or its tests to check your work, and fix what fails. Use start_process for servers and other \
long-running commands, and stop them when you are done. When the task is complete, reply with a short \
summary of what you did and how to use it.";

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// The system prompt sent before the conversation.
    pub system_prompt: String,
    /// Most model turns one task may take before it is stopped.
    pub max_steps: u32,
    /// Conversation kept for the model, in characters (about 4 per token).
    /// Past `compact_at_percent` of it, or when the model says the request
    /// is too long, the older turns are summarised by the model into a note
    /// that replaces them; if that is not enough, the oldest are dropped.
    pub context_chars: usize,
    /// How full the conversation may get, in percent of `context_chars`,
    /// before it is compacted.
    pub compact_at_percent: u8,
    /// Longest tool result sent back to the model, in characters.
    pub tool_result_chars: usize,
    /// Longest tool result carried in a `tool_complete` event, in characters.
    pub event_result_chars: usize,
    /// Seconds one model request may take before it is retried.
    pub request_timeout_secs: u64,
    /// Retries of a model request that failed with 429, 5xx, a timeout or a
    /// broken stream before anything of it was streamed.
    pub max_retries: u32,
    /// First retry delay in milliseconds; doubles each retry (with jitter).
    pub retry_base_ms: u64,
    /// Most tasks waiting behind the running one in a session.
    pub max_queued_tasks: usize,
    /// Seconds a tool call waits for a person's approval before it is
    /// denied (`by: "timeout"`).
    pub approval_timeout_secs: u64,
    /// Whether a session may be created with `"approval": "none"` (no tool
    /// call ever asks, whatever `[tools.<name>] approval` says).
    pub allow_approval_none: bool,
    /// Token budget of a session created without `budget_tokens` (0: none).
    pub session_budget_tokens: u64,
    /// Largest `budget_tokens` a session may be created with (0: any).
    pub max_session_budget_tokens: u64,
}

impl AgentConfig {
    /// Characters past which the conversation is compacted before a call.
    pub fn compact_threshold(&self) -> usize {
        self.context_chars / 100 * usize::from(self.compact_at_percent)
    }

    pub fn approval_timeout(&self) -> Duration {
        Duration::from_secs(self.approval_timeout_secs)
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            system_prompt: DEFAULT_SYSTEM_PROMPT.into(),
            max_steps: 50,
            context_chars: 400_000,
            compact_at_percent: 90,
            tool_result_chars: 30_000,
            event_result_chars: 4_000,
            request_timeout_secs: 300,
            max_retries: 4,
            retry_base_ms: 1_000,
            max_queued_tasks: 32,
            approval_timeout_secs: 600,
            allow_approval_none: false,
            session_budget_tokens: 0,
            max_session_budget_tokens: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// Folder scanned for `*.wasm` tool components.
    pub dir: PathBuf,
    /// Default wall-clock limit of one tool invocation, in milliseconds.
    pub timeout_ms: u64,
    /// Default memory limit of one tool invocation, in MiB.
    pub memory_mb: u64,
    /// Most tool invocations running at once; more wait their turn.
    pub max_concurrent: u32,
    /// Pre-reserve instance slots (wasmtime's pooling allocator) for fast
    /// instantiation; falls back to on-demand allocation where the machine
    /// cannot reserve the address space.
    pub pooling: bool,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("plugins/dist"),
            timeout_ms: 30_000,
            memory_mb: 64,
            max_concurrent: 32,
            pooling: true,
        }
    }
}

/// How much of the network the sandboxes may reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Only hosts an `allow` pattern matches.
    #[default]
    Allowlist,
    /// Any public host (loopback, private and link-local addresses still
    /// only where an `allow` pattern names them).
    Open,
    /// Nothing.
    None,
}

/// The package registries, and the hosts their files come from: Python
/// (pip), Rust (cargo), npm, and Debian (apt).
pub const DEFAULT_NETWORK_ALLOW: &[&str] = &[
    "pypi.org:443",
    "files.pythonhosted.org:443",
    "crates.io:443",
    "index.crates.io:443",
    "static.crates.io:443",
    "static.rust-lang.org:443",
    "registry.npmjs.org:443",
    "deb.debian.org:80",
    "deb.debian.org:443",
    "security.debian.org:80",
    "security.debian.org:443",
];

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// `allowlist` (hosts `allow` matches), `open` (any public host) or
    /// `none`.
    pub mode: NetworkMode,
    /// Host patterns sandboxes may reach: `host[:port]`, `*.suffix`, `*`,
    /// an address or a network (`10.0.0.0/8`). A loopback, private or
    /// link-local address is reached only when a pattern names it as an
    /// address or network, never through a name that resolves to it.
    pub allow: Vec<String>,
    /// Host patterns sandboxes may never reach (wins over `allow`).
    pub deny: Vec<String>,
    /// Whether a session's own `allow` may name hosts beyond this `allow`
    /// (otherwise it may only narrow it).
    pub sessions_may_widen: bool,
    /// Most connections one session holds open at once.
    pub max_connections: usize,
    /// Most bytes (both directions) one session may move over the network
    /// while the server runs.
    pub max_bytes: MemorySize,
    /// Seconds to resolve and connect to a remote host.
    pub connect_timeout_secs: u64,
    /// In `allowlist` mode, a connection to a host no allow pattern names
    /// asks a person (an `approval_requested` with subject `host:port`)
    /// instead of being refused; denied hosts are refused still. The
    /// program waits at most `agent.approval_timeout_secs` and never more
    /// than 170 s.
    pub ask: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            mode: NetworkMode::Allowlist,
            allow: DEFAULT_NETWORK_ALLOW
                .iter()
                .map(|s| s.to_string())
                .collect(),
            deny: Vec::new(),
            sessions_may_widen: false,
            max_connections: 64,
            max_bytes: MemorySize(8 << 30),
            connect_timeout_secs: 10,
            ask: false,
        }
    }
}

impl NetworkConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ToolConfig {
    /// `false` hides the tool from the model and refuses invocations.
    pub enabled: bool,
    /// Overrides `plugins.timeout_ms` for this tool.
    pub timeout_ms: Option<u64>,
    /// Overrides `plugins.memory_mb` for this tool.
    pub memory_mb: Option<u64>,
    /// Free-form settings handed to the plugin as JSON.
    pub config: toml::Table,
    /// `always`: a call waits for a person's approval (unless its subject
    /// matches `auto_approve` or a session rule); `never`: it runs at once.
    pub approval: ToolApproval,
    /// Glob patterns (`*` matches anything, `/` included) on the subject the
    /// tool declares (shell: the command; write_file: the path): a call
    /// whose subject matches one runs without asking.
    pub auto_approve: Vec<String>,
    /// Narrows the host capabilities the tool may use to these (names as in
    /// the plugin contract: files-read, files-write, exec, processes). Never
    /// widens what the tool declares. Unset: what it declares.
    pub capabilities: Option<Vec<String>>,
}

impl ToolConfig {
    /// The operator's limit on the tool's capabilities, if any. Names were
    /// checked when the config was loaded.
    pub fn capability_limit(
        &self,
    ) -> Option<std::collections::BTreeSet<crogia_plugin_contract::Capability>> {
        self.capabilities.as_ref().map(|names| {
            names
                .iter()
                .filter_map(|n| crogia_plugin_contract::Capability::from_name(n))
                .collect()
        })
    }
}

impl Default for ToolConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            timeout_ms: None,
            memory_mb: None,
            config: toml::Table::new(),
            approval: ToolApproval::Never,
            auto_approve: Vec::new(),
            capabilities: None,
        }
    }
}

/// A glob on an approval subject (a command, a path, `host:port`): `*`
/// matches anything, `/` included, `?` one character, `[...]` a class.
pub fn subject_glob(pattern: &str) -> Result<globset::GlobMatcher, String> {
    if pattern.is_empty() || pattern.len() > 1000 {
        return Err(format!("pattern {pattern:?} must be 1 to 1000 characters"));
    }
    globset::GlobBuilder::new(pattern)
        .literal_separator(false)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("pattern {pattern:?}: {e}"))
}

/// Whether a tool's calls wait for a person.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ToolApproval {
    #[default]
    Never,
    Always,
}

/// A memory size written the way Docker takes it: a number of bytes, or a
/// number with a `k`, `m` or `g` suffix (binary units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySize(pub u64);

impl MemorySize {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl std::str::FromStr for MemorySize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        let t = t.strip_suffix('b').unwrap_or(&t);
        let (digits, factor) = match t.char_indices().last() {
            Some((i, 'k')) => (&t[..i], 1u64 << 10),
            Some((i, 'm')) => (&t[..i], 1 << 20),
            Some((i, 'g')) => (&t[..i], 1 << 30),
            _ => (t, 1),
        };
        let n: u64 = digits.trim().parse().map_err(|_| {
            format!(
                "invalid memory size {s:?}: expected e.g. \"512m\", \"2g\" or a number of bytes"
            )
        })?;
        n.checked_mul(factor)
            .filter(|&b| b > 0)
            .map(MemorySize)
            .ok_or_else(|| format!("invalid memory size {s:?}"))
    }
}

impl std::fmt::Display for MemorySize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const G: u64 = 1 << 30;
        const M: u64 = 1 << 20;
        const K: u64 = 1 << 10;
        match self.0 {
            b if b % G == 0 => write!(f, "{}g", b / G),
            b if b % M == 0 => write!(f, "{}m", b / M),
            b if b % K == 0 => write!(f, "{}k", b / K),
            b => write!(f, "{b}"),
        }
    }
}

impl<'de> Deserialize<'de> for MemorySize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(0) => Err(serde::de::Error::custom("memory size must be positive")),
            Raw::Int(n) => Ok(MemorySize(n)),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for MemorySize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl Config {
    /// Loads the configuration the way `crogia serve` does: the file at `path`
    /// (or `./crogia.toml` when present), then the process environment.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, &env)
    }

    /// [`Config::load`] with an explicit environment, for tests.
    pub fn load_with_env(path: Option<&Path>, env: &[(String, String)]) -> anyhow::Result<Self> {
        let default_path = Path::new("crogia.toml");
        let (table, origin) = match path {
            Some(p) => (read_table(p)?, Some(p)),
            None if default_path.exists() => (read_table(default_path)?, Some(default_path)),
            None => (toml::Table::new(), None),
        };
        let origin_name = origin.map_or_else(
            || "defaults".to_string(),
            |p| format!("config file {}", p.display()),
        );
        // Validate the file on its own first, so its errors name the file.
        let config: Config = toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("{origin_name}: {}", e.message()))?;
        let overrides = env_overrides(env)?;
        if overrides.is_empty() {
            return config.validated();
        }
        let mut merged = table;
        let mut names = Vec::new();
        for (var, section, key, value) in overrides {
            let section_table = merged
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(section_table) = section_table.as_table_mut() else {
                bail!("{origin_name}: [{section}] must be a table");
            };
            section_table.insert(key, value);
            names.push(var);
        }
        let config: Config =
            toml::Value::Table(merged)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    anyhow::anyhow!(
                        "{origin_name} with environment overrides ({}): {}",
                        names.join(", "),
                        e.message()
                    )
                })?;
        config.validated()
    }

    fn validated(self) -> anyhow::Result<Self> {
        let server = &self.server;
        if server.ws_ping_secs == 0
            || server.ws_pong_timeout_secs == 0
            || server.ws_max_clients == 0
            || server.ws_max_clients_per_session == 0
            || server.ws_buffer_events == 0
        {
            bail!(
                "server.ws_ping_secs, ws_pong_timeout_secs, ws_max_clients, ws_max_clients_per_session \
                 and ws_buffer_events must be positive"
            );
        }
        if server.max_body_bytes < 1024 {
            bail!(
                "server.max_body_bytes must be at least 1024, got {}",
                server.max_body_bytes
            );
        }
        let store = &self.store;
        if !store.url.is_empty() {
            let scheme = store.url.split_once("://").map(|(s, _)| s);
            if !matches!(scheme, Some("postgres" | "postgresql")) {
                bail!(
                    "store.url must be a postgres:// URL (or empty for SQLite in server.data_dir), got {}",
                    store.display_url()
                );
            }
            if store.max_connections < 2 {
                bail!(
                    "store.max_connections must be at least 2, got {}",
                    store.max_connections
                );
            }
            if store.connect_timeout_secs == 0 {
                bail!("store.connect_timeout_secs must be positive");
            }
            if !(2..=3600).contains(&store.lease_secs) {
                bail!(
                    "store.lease_secs must be between 2 and 3600, got {}",
                    store.lease_secs
                );
            }
        }
        let s = &self.sandbox;
        if !s.engines.is_empty() && (!s.docker_host.is_empty() || s.local_engine.is_some()) {
            bail!(
                "set sandbox.docker_host (one engine) or [[sandbox.engines]] (several), not both"
            );
        }
        let mut names = std::collections::HashSet::new();
        for e in &s.engines {
            let well_formed = !e.name.is_empty()
                && e.name.len() <= 32
                && e.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !well_formed {
                bail!(
                    "sandbox.engines: name {:?} must be 1 to 32 of a-z, 0-9, '-' and '_'",
                    e.name
                );
            }
            if !names.insert(e.name.as_str()) {
                bail!("sandbox.engines: two engines are named {:?}", e.name);
            }
        }
        if !(s.cpus > 0.0 && s.cpus.is_finite()) {
            bail!("sandbox.cpus must be a positive number, got {}", s.cpus);
        }
        if s.pids_limit < 16 {
            bail!(
                "sandbox.pids_limit must be at least 16, got {}",
                s.pids_limit
            );
        }
        if s.exec_timeout_secs == 0 || s.exec_timeout_secs > s.max_exec_timeout_secs {
            bail!(
                "sandbox.exec_timeout_secs must be between 1 and sandbox.max_exec_timeout_secs ({}), got {}",
                s.max_exec_timeout_secs,
                s.exec_timeout_secs
            );
        }
        if s.output_limit_bytes < 1024 {
            bail!(
                "sandbox.output_limit_bytes must be at least 1024, got {}",
                s.output_limit_bytes
            );
        }
        if s.image.trim().is_empty() {
            bail!("sandbox.image must not be empty");
        }
        if !s.user.is_empty() && s.user_ids().is_none() {
            bail!(
                "sandbox.user must be numeric \"uid:gid\" (e.g. \"1000:1000\"), got {:?}",
                s.user
            );
        }
        self.auth.check_users()?;
        let a = &self.agent;
        if !(1..=100).contains(&a.compact_at_percent) {
            bail!(
                "agent.compact_at_percent must be between 1 and 100, got {}",
                a.compact_at_percent
            );
        }
        if a.max_session_budget_tokens > 0 && a.session_budget_tokens > a.max_session_budget_tokens
        {
            bail!(
                "agent.session_budget_tokens ({}) is over agent.max_session_budget_tokens ({})",
                a.session_budget_tokens,
                a.max_session_budget_tokens
            );
        }
        for (model, price) in &self.model.prices {
            let valid = |n: f64| n >= 0.0 && n.is_finite();
            if !valid(price.prompt) || !valid(price.completion) {
                bail!("model.prices.{model:?}: prices must be numbers of 0 or more");
            }
        }
        for (tool, settings) in &self.tools {
            for name in settings.capabilities.iter().flatten() {
                if crogia_plugin_contract::Capability::from_name(name).is_none() {
                    let known: Vec<&str> = crogia_plugin_contract::Capability::ALL
                        .iter()
                        .map(|c| c.name())
                        .collect();
                    bail!(
                        "tools.{tool}.capabilities: unknown capability {name:?}; known: {}",
                        known.join(", ")
                    );
                }
            }
        }
        for (tool, settings) in &self.tools {
            for pattern in &settings.auto_approve {
                if let Err(e) = subject_glob(pattern) {
                    bail!("tools.{tool}.auto_approve: {e}");
                }
            }
        }
        let programs = self.mcp.servers.values().filter(|s| !s.command.is_empty());
        if programs.count() > MAX_MCP_PROGRAMS {
            bail!(
                "mcp.servers: at most {MAX_MCP_PROGRAMS} command servers (each session runs all of them in its container)"
            );
        }
        for (name, server) in &self.mcp.servers {
            if !valid_mcp_server_name(name) {
                bail!("mcp.servers.{name}: a server's name must be {MCP_SERVER_NAME_RULE}");
            }
            match (server.url.is_empty(), server.command.is_empty()) {
                (true, true) => bail!(
                    "mcp.servers.{name}: give either url (a remote server) or command (a stdio server run in each session's container)"
                ),
                (false, false) => {
                    bail!("mcp.servers.{name}: url and command exclude each other; give one")
                }
                (false, true) => {
                    let url = reqwest::Url::parse(&server.url);
                    if !url
                        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                    {
                        bail!(
                            "mcp.servers.{name}.url must be an http:// or https:// URL, got {:?}",
                            server.url
                        );
                    }
                    if !server.env.is_empty() || server.cwd.is_some() {
                        bail!("mcp.servers.{name}: env and cwd are for command servers");
                    }
                }
                (true, false) => {
                    if server.command[0].is_empty() {
                        bail!("mcp.servers.{name}.command: the program's name is empty");
                    }
                    if server.command.iter().any(|a| a.contains('\0')) {
                        bail!("mcp.servers.{name}.command: an argument holds a NUL character");
                    }
                    if !server.headers.is_empty() {
                        bail!("mcp.servers.{name}: headers are for url servers");
                    }
                    if let Some(cwd) = &server.cwd
                        && !cwd.starts_with('/')
                    {
                        bail!("mcp.servers.{name}.cwd must be an absolute path, got {cwd:?}");
                    }
                    for (variable, source) in &server.env {
                        let valid = variable
                            .starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                            && variable
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
                        if !valid {
                            bail!("mcp.servers.{name}.env: {variable:?} is not a variable's name");
                        }
                        if source.is_empty() {
                            bail!(
                                "mcp.servers.{name}.env.{variable}: name the environment variable holding its value"
                            );
                        }
                    }
                }
            }
            for (header, var) in &server.headers {
                if header.is_empty()
                    || !header
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
                {
                    bail!("mcp.servers.{name}.headers: {header:?} is not a header name");
                }
                if var.is_empty() {
                    bail!(
                        "mcp.servers.{name}.headers.{header}: name the environment variable holding its value"
                    );
                }
            }
        }
        if self.mcp.connect_timeout_secs == 0 {
            bail!("mcp.connect_timeout_secs must be positive");
        }
        if self.agent.approval_timeout_secs == 0 {
            bail!("agent.approval_timeout_secs must be positive");
        }
        let w = &self.workspace;
        if w.search_max_results == 0 || w.search_max_line_chars == 0 || w.max_read_bytes == 0 {
            bail!(
                "workspace.search_max_results, search_max_line_chars and max_read_bytes must be positive"
            );
        }
        let a = &self.agent;
        if a.max_steps == 0
            || a.context_chars < 1000
            || a.tool_result_chars == 0
            || a.request_timeout_secs == 0
        {
            bail!(
                "agent.max_steps, context_chars (>= 1000), tool_result_chars and request_timeout_secs must be positive"
            );
        }
        let n = &self.network;
        if n.max_connections == 0 || n.connect_timeout_secs == 0 {
            bail!("network.max_connections and network.connect_timeout_secs must be positive");
        }
        if self.plugins.timeout_ms == 0
            || self.plugins.memory_mb == 0
            || self.plugins.max_concurrent == 0
        {
            bail!(
                "plugins.timeout_ms, plugins.memory_mb and plugins.max_concurrent must be positive"
            );
        }
        Ok(self)
    }
}

fn read_table(path: &Path) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    text.parse::<toml::Table>()
        .map_err(|e| anyhow::anyhow!("config file {}: {}", path.display(), e))
}

/// `CROGIA_<SECTION>_<KEY>=value` pairs. Values are read as TOML when they
/// parse as a TOML value (numbers, booleans, arrays) and as plain strings
/// otherwise. A `CROGIA_` variable that is neither a known section's key nor
/// one of [`NON_CONFIG_VARS`] is an error naming it; an unknown key inside a
/// known section is refused later, by the same check as the file's keys.
fn env_overrides(
    env: &[(String, String)],
) -> anyhow::Result<Vec<(String, String, String, toml::Value)>> {
    let mut out = Vec::new();
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix("CROGIA_") else {
            continue;
        };
        if NON_CONFIG_VARS.contains(&var.as_str()) || var.starts_with(TEST_VAR_PREFIX) {
            continue;
        }
        let rest = rest.to_ascii_lowercase();
        let Some((section, key)) = ENV_SECTIONS.iter().find_map(|s| {
            rest.strip_prefix(s)
                .and_then(|k| k.strip_prefix('_'))
                .map(|k| (*s, k))
        }) else {
            let section = rest.split('_').next().unwrap_or_default();
            let why = if section == "tools" {
                "per-tool settings ([tools.<name>]) can only be set in the config file".to_string()
            } else {
                format!(
                    "there is no configuration section [{section}]; the environment can set \
                     CROGIA_<SECTION>_<KEY> for the sections {}, and also reads {}",
                    ENV_SECTIONS.join(", "),
                    NON_CONFIG_VARS.join(", ")
                )
            };
            bail!("environment variable {var}: {why}");
        };
        if key.is_empty() {
            bail!("environment variable {var} names no key");
        }
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        out.push((var.clone(), section.to_string(), key.to_string(), value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let p = dir.path().join("crogia.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn example_file_documents_exactly_the_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crogia.example.toml");
        let parsed = Config::load_with_env(Some(&example), &[]).unwrap();
        let mut expected = Config::default();
        // The example shows one per-tool section; everything else is default.
        expected.tools.insert("shell".into(), ToolConfig::default());
        assert_eq!(parsed, expected);
    }

    #[test]
    fn unknown_key_is_rejected_naming_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "[sandbox]\nimage = \"x\"\nmemroy = \"1g\"\n");
        let err = Config::load_with_env(Some(&p), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("memroy"), "{err}");
        assert!(err.contains(&p.display().to_string()), "{err}");
    }

    #[test]
    fn engines_and_leases_are_checked_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let load = |text: &str| Config::load_with_env(Some(&write(&dir, text)), &[]);
        let two = "[[sandbox.engines]]\nname = \"here\"\n[[sandbox.engines]]\nname = \"far-1\"\ndocker_host = \"tcp://10.0.0.7:2376\"\nmax_sessions = 4\n";
        let ok = load(two).unwrap();
        let engines = ok.sandbox.engines();
        assert_eq!(engines.len(), 2);
        assert_eq!(engines[1].max_sessions, 4);
        let far = ok.sandbox.for_engine(&engines[1]);
        assert_eq!(far.docker_host, "tcp://10.0.0.7:2376");
        assert!(!far.engine_is_local() && far.engines.is_empty());
        // Without the tables: one engine, named, at docker_host.
        let one = load("[sandbox]\ndocker_host = \"unix:///d.sock\"\n").unwrap();
        assert_eq!(one.sandbox.engines()[0].name, DEFAULT_ENGINE);
        assert_eq!(one.sandbox.engines()[0].docker_host, "unix:///d.sock");
        for (text, says) in [
            (
                "[[sandbox.engines]]\nname = \"a\"\n[[sandbox.engines]]\nname = \"a\"\n",
                "two engines are named \"a\"",
            ),
            (
                "[[sandbox.engines]]\nname = \"Big Box\"\n",
                "\"Big Box\" must be",
            ),
            (
                "[sandbox]\ndocker_host = \"unix:///d.sock\"\n[[sandbox.engines]]\nname = \"a\"\n",
                "not both",
            ),
            (
                "[store]\nurl = \"postgres://h/db\"\nlease_secs = 1\n",
                "store.lease_secs must be between 2 and 3600",
            ),
        ] {
            let err = format!("{:#}", load(text).unwrap_err());
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn mcp_servers_are_checked_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let load = |text: &str| Config::load_with_env(Some(&write(&dir, text)), &[]);
        let ok = load(
            "[mcp.servers.git_hub2]\nurl = \"https://example.com/mcp\"\nheaders = { Authorization = \"TOKEN_VAR\" }\n",
        )
        .unwrap();
        assert_eq!(
            ok.mcp.servers["git_hub2"].headers["Authorization"],
            "TOKEN_VAR"
        );
        let stdio = load(
            "[mcp.servers.local]\ncommand = [\"python3\", \"server.py\"]\nenv = { API_KEY = \"HOST_KEY\" }\ncwd = \"/workspace/tools\"\n",
        )
        .unwrap();
        let local = &stdio.mcp.servers["local"];
        assert_eq!(local.command, ["python3", "server.py"]);
        assert_eq!(local.env["API_KEY"], "HOST_KEY");
        assert_eq!(local.describe(), "python3 server.py");
        for (text, says) in [
            ("[mcp.servers.a__b]\nurl = \"http://x\"\n", "name must be"),
            ("[mcp.servers.Big]\nurl = \"http://x\"\n", "name must be"),
            (
                "[mcp.servers.x]\nurl = \"ftp://x\"\n",
                "http:// or https://",
            ),
            (
                "[mcp.servers.x]\nurl = \"not a url\"\n",
                "http:// or https://",
            ),
            (
                "[mcp.servers.x]\nurl = \"http://x\"\nheaders = { \"a b\" = \"V\" }\n",
                "not a header name",
            ),
            (
                "[mcp.servers.x]\nurl = \"http://x\"\ncommand = [\"y\"]\n",
                "exclude each other",
            ),
            ("[mcp.servers.x]\n", "either url"),
            ("[mcp.servers.x]\ncommand = [\"\"]\n", "name is empty"),
            (
                "[mcp.servers.x]\ncommand = [\"y\"]\nheaders = { A = \"V\" }\n",
                "headers are for url",
            ),
            (
                "[mcp.servers.x]\nurl = \"http://x\"\nenv = { A = \"V\" }\n",
                "env and cwd are for command",
            ),
            (
                "[mcp.servers.x]\ncommand = [\"y\"]\nenv = { \"1A\" = \"V\" }\n",
                "not a variable's name",
            ),
            (
                "[mcp.servers.x]\ncommand = [\"y\"]\ncwd = \"rel\"\n",
                "absolute path",
            ),
            (
                &(0..=MAX_MCP_PROGRAMS)
                    .map(|i| format!("[mcp.servers.s{i}]\ncommand = [\"y\"]\n"))
                    .collect::<String>(),
                "at most 16 command servers",
            ),
        ] {
            let err = format!("{:#}", load(text).unwrap_err());
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_section_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "[sever]\nbind = \"127.0.0.1:1\"\n");
        let err = Config::load_with_env(Some(&p), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("sever"), "{err}");
    }

    #[test]
    fn env_overrides_file_values_with_typed_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "[sandbox]\ncpus = 2.0\nmemory = \"1g\"\n");
        let env = vec![
            ("CROGIA_SANDBOX_CPUS".to_string(), "0.5".to_string()),
            ("CROGIA_SANDBOX_MEMORY".to_string(), "256m".to_string()),
            (
                "CROGIA_SERVER_BIND".to_string(),
                "127.0.0.1:9999".to_string(),
            ),
            ("CROGIA_URL".to_string(), "not a config key".to_string()),
        ];
        let c = Config::load_with_env(Some(&p), &env).unwrap();
        assert_eq!(c.sandbox.cpus, 0.5);
        assert_eq!(c.sandbox.memory.bytes(), 256 << 20);
        assert_eq!(c.server.bind.port(), 9999);
    }

    #[test]
    fn env_override_with_unknown_key_names_the_variable() {
        let env = vec![("CROGIA_SANDBOX_MEMROY".to_string(), "1g".to_string())];
        let err = Config::load_with_env(Some(Path::new("/dev/null")), &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("CROGIA_SANDBOX_MEMROY"), "{err}");
        assert!(err.contains("memroy"), "{err}");
    }

    #[test]
    fn every_documented_section_can_be_set_from_the_environment() {
        let env = vec![
            (
                "CROGIA_AUTH_TOKENS".to_string(),
                "first-token-0123456789, second-token-0123456789".to_string(),
            ),
            ("CROGIA_AUTH_PUBLIC_HEALTH".to_string(), "false".to_string()),
            ("CROGIA_AGENT_MAX_STEPS".to_string(), "7".to_string()),
            (
                "CROGIA_WORKSPACE_MAX_READ_BYTES".to_string(),
                "4096".to_string(),
            ),
            ("CROGIA_PLUGINS_TIMEOUT_MS".to_string(), "1234".to_string()),
            ("CROGIA_MODEL_MODEL".to_string(), "m".to_string()),
        ];
        let c = Config::load_with_env(Some(Path::new("/dev/null")), &env).unwrap();
        assert_eq!(
            c.auth.tokens,
            ["first-token-0123456789", "second-token-0123456789"]
        );
        assert!(!c.auth.public_health);
        assert_eq!(c.agent.max_steps, 7);
        assert_eq!(c.workspace.max_read_bytes, 4096);
        assert_eq!(c.plugins.timeout_ms, 1234);
        assert_eq!(c.model.model, "m");
    }

    #[test]
    fn a_store_url_must_be_postgres_and_errors_hide_its_password() {
        let load = |url: &str| {
            let env = vec![("CROGIA_STORE_URL".to_string(), url.to_string())];
            Config::load_with_env(Some(Path::new("/dev/null")), &env)
        };
        let err = load("mysql://root:hunter2@db/crogia")
            .unwrap_err()
            .to_string();
        assert!(err.contains("store.url must be a postgres:// URL"), "{err}");
        assert!(
            err.contains("mysql://root:***@db/crogia") && !err.contains("hunter2"),
            "{err}"
        );
        let c = load("postgres://crogia:hunter2@db:5432/crogia").unwrap();
        assert_eq!(c.store.url, "postgres://crogia:hunter2@db:5432/crogia");
        assert!(!format!("{:?}", c.store).contains("hunter2"));
        assert!(load("").unwrap().store.url.is_empty());
    }

    #[test]
    fn an_unknown_crogia_variable_is_an_error_naming_it() {
        for (var, expect) in [
            ("CROGIA_SEVER_BIND", "no configuration section [sever]"),
            ("CROGIA_AUHT_TOKENS", "no configuration section [auht]"),
            (
                "CROGIA_TOOLS_SHELL_ENABLED",
                "only be set in the config file",
            ),
        ] {
            let env = vec![(var.to_string(), "x".to_string())];
            let err = Config::load_with_env(Some(Path::new("/dev/null")), &env)
                .unwrap_err()
                .to_string();
            assert!(err.contains(var) && err.contains(expect), "{err}");
        }
        // The client's, the build script's and the test suite's variables
        // are not configuration.
        let env: Vec<(String, String)> = [
            "CROGIA_URL",
            "CROGIA_TOKEN",
            "CROGIA_CONFIG",
            "CROGIA_PLUGIN_TOOLCHAIN",
            "CROGIA_TEST_SERVER_LOG",
        ]
        .iter()
        .map(|v| (v.to_string(), "x".to_string()))
        .collect();
        assert_eq!(
            Config::load_with_env(Some(Path::new("/dev/null")), &env).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn memory_sizes_parse_like_docker() {
        assert_eq!("512m".parse::<MemorySize>().unwrap().bytes(), 512 << 20);
        assert_eq!("2g".parse::<MemorySize>().unwrap().bytes(), 2 << 30);
        assert_eq!("2GB".parse::<MemorySize>().unwrap().bytes(), 2 << 30);
        assert_eq!("4096".parse::<MemorySize>().unwrap().bytes(), 4096);
        assert!("lots".parse::<MemorySize>().is_err());
        assert!("0".parse::<MemorySize>().is_err());
        assert_eq!(MemorySize(512 << 20).to_string(), "512m");
    }

    #[test]
    fn invalid_values_are_refused_with_the_key_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "[sandbox]\ncpus = 0\n");
        let err = Config::load_with_env(Some(&p), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("sandbox.cpus"), "{err}");
    }

    #[test]
    fn a_tools_capabilities_must_be_known_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "[tools.grep]\ncapabilities = [\"files-read\", \"network\"]\n",
        );
        let err = Config::load_with_env(Some(&p), &[])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "tools.grep.capabilities: unknown capability \"network\"; known: files-read, files-write, exec, processes"
        );
        let p = write(&dir, "[tools.grep]\ncapabilities = [\"files-read\"]\n");
        let config = Config::load_with_env(Some(&p), &[]).unwrap();
        let limit = config.tools["grep"].capability_limit().unwrap();
        assert_eq!(
            limit.into_iter().collect::<Vec<_>>(),
            [crogia_plugin_contract::Capability::FilesRead]
        );
    }
}
