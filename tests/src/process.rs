//! The real `crogia` binary as a child process, for what only a process can
//! show: signals, a crash, a restart from the same data directory.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crogia_host::config::Config;
use tokio::process::{Child, Command};

use crate::repo_root;

/// `target/debug/crogia`, brought up to date (once per test run) so the
/// tests never drive a binary older than the code under test.
///
/// Built the way `cargo test --workspace` builds it (the host's own
/// integration tests need it), so under `just test` this finds it fresh; a
/// narrower `cargo build -p crogia-host` would resolve other features and
/// rebuild most dependencies while the tests wait.
pub fn binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        // What cargo set for this test process is not the caller's
        // environment: some build scripts (ring's) rerun when, say,
        // CARGO_MANIFEST_DIR changes, which would rebuild half the tree.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_BIN_")
                || matches!(
                    name.as_ref(),
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                )
            {
                build.env_remove(name.as_ref());
            }
        }
        let status = build
            .args(["build", "--quiet", "--workspace", "--tests"])
            .current_dir(repo_root())
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building the crogia binary failed");
    });
    repo_root().join("target/debug/crogia")
}

pub struct ServerProcess {
    pub child: Child,
    pub base: String,
    pub config_path: PathBuf,
}

/// A free loopback port (taken, then given back).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl ServerProcess {
    /// Writes `config` next to its data directory and starts `crogia serve`
    /// on a free port, waiting until health answers.
    pub async fn spawn(config: &Config) -> Self {
        Self::spawn_binary(&binary(), config).await
    }

    /// [`ServerProcess::spawn`] with more environment variables.
    pub async fn spawn_with_env(config: &Config, env: &[(&str, &str)]) -> Self {
        Self::start(&binary(), config, env).await
    }

    /// [`ServerProcess::spawn`] with another build of the binary (the
    /// benchmarks use the release one).
    pub async fn spawn_binary(binary: &std::path::Path, config: &Config) -> Self {
        Self::start(binary, config, &[]).await
    }

    async fn start(binary: &std::path::Path, config: &Config, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let config_path = config.server.data_dir.with_extension("toml");
        std::fs::create_dir_all(&config.server.data_dir).unwrap();
        std::fs::write(&config_path, toml::to_string(config).unwrap()).unwrap();
        let child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(&config_path)
            .args(["--bind", &format!("127.0.0.1:{port}")])
            // CROGIA_TEST_SERVER_LOG=debug shows what a server under test did.
            .env(
                "RUST_LOG",
                std::env::var("CROGIA_TEST_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("starting crogia");
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            config_path,
        };
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(resp) = client
                .get(format!("{}/api/health", server.base))
                .send()
                .await
                && resp.status() == 200
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("crogia did not answer on {} within 30 s", server.base);
    }

    /// Sends a signal by name (`TERM`, `KILL`).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("still running");
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to end; panics after `limit`.
    pub async fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("crogia did not exit in time")
            .unwrap()
    }
}
