//! What the server and the agent say to each other: JSON bodies over
//! HTTP/2. Paths are versioned (`/v1/...`); a field added later must have a
//! default, so an older agent and a newer server still understand each other.

use serde::{Deserialize, Serialize};

/// `GET /v1/ping`: the agent answers with who it is.
pub const PING: &str = "/v1/ping";
/// `POST /v1/exec`: runs a command to its end ([`ExecRequest`] → [`ExecResponse`]).
pub const EXEC: &str = "/v1/exec";

/// Most bytes of a request body the agent reads.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// The agent's version (its crate's).
    pub version: String,
    /// Its pid in the container (the server is pid 2 or so; init is 1).
    pub pid: u32,
}

/// A command to run with `sh -c`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub command: String,
    /// Working directory.
    pub cwd: String,
    /// Killed, with its whole process group, after this long.
    pub timeout_ms: u64,
    /// Most bytes of stdout, and of stderr, kept.
    pub output_limit: usize,
    /// Extra environment variables.
    #[serde(default)]
    pub env: Vec<(String, String)>,
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResponse {
    /// Its exit code; 128 + the signal when a signal ended it; `None` when
    /// it was killed for running past its timeout.
    pub exit_code: Option<i64>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    /// Output was dropped (a marker line shows where).
    pub truncated: bool,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
