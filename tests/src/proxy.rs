//! A Unix-socket proxy in front of the Docker engine's socket that a test can
//! cut and restore: from the server's side, the engine goes away (existing
//! connections drop, new ones are refused) and comes back — without touching
//! the engine the other tests share.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

pub struct EngineProxy {
    /// The proxy's socket; use `unix://<path>` as `sandbox.docker_host`.
    pub path: PathBuf,
    target: PathBuf,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl EngineProxy {
    pub async fn start(dir: &Path) -> Self {
        let proxy = Self {
            path: dir.join("engine-proxy.sock"),
            target: PathBuf::from("/var/run/docker.sock"),
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        proxy.restore();
        proxy
    }

    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// The engine "goes away": every connection through the proxy is cut and
    /// new ones are refused.
    pub fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }

    /// The engine is back.
    pub fn restore(&self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).expect("binding the proxy socket");
        let target = self.target.clone();
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = target.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut engine) = UnixStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// A TCP proxy on a loopback port in front of another address (say,
/// PostgreSQL's), cut and restored like [`EngineProxy`]: connections
/// through it drop, new ones are refused, then it answers again on the
/// same port.
pub struct TcpProxy {
    pub port: u16,
    target: std::net::SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl TcpProxy {
    pub async fn start(target: std::net::SocketAddr) -> Self {
        let proxy = Self {
            port: crate::process::free_port(),
            target,
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        proxy.restore().await;
        proxy
    }

    pub fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    pub async fn restore(&self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("binding the proxy's port");
        let target = self.target;
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut to) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut to).await;
                    }
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
    }
}
