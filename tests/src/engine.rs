//! A Docker engine of a test's own: a real `dockerd` with its own socket,
//! data root and exec root, started by the project's script
//! (`sandbox/ensure-second-engine.sh` with its directory moved), that the
//! test can stop and start again without touching the engines the other
//! tests share. Stopped and its directory removed when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct OwnEngine {
    dir: tempfile::TempDir,
}

impl OwnEngine {
    /// Starts it, with the sandbox images loaded (a few seconds).
    pub fn start() -> Self {
        // Short: the socket's path must fit a sockaddr_un.
        let dir = tempfile::Builder::new()
            .prefix("crogia-e")
            .tempdir_in("/tmp")
            .unwrap();
        let engine = Self { dir };
        engine.start_again();
        engine
    }

    /// Its `docker_host`.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    /// Stops the daemon (its containers stop with it, as at any engine
    /// stop without live restore).
    pub fn stop(&self) {
        self.script(&["--stop"]);
    }

    /// Starts the daemon again on the same data root.
    pub fn start_again(&self) {
        self.script(&[]);
    }

    fn script(&self, args: &[&str]) {
        let status = Command::new("bash")
            .arg(script_path())
            .args(args)
            .env("CROGIA_ENGINE2_DIR", self.dir.path())
            .status()
            .expect("running sandbox/ensure-second-engine.sh");
        assert!(status.success(), "the engine script failed: {status}");
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn script_path() -> PathBuf {
    crate::repo_root().join("sandbox/ensure-second-engine.sh")
}

impl Drop for OwnEngine {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script_path())
            .arg("--stop")
            .env("CROGIA_ENGINE2_DIR", self.path())
            .status();
        // What the daemon left mounted under its roots, then the rest.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {0}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l; rm -rf {0}",
                self.path().display()
            ))
            .status();
    }
}
