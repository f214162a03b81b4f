//! What the server and the agent say to each other: JSON bodies over
//! HTTP/2. Paths are versioned (`/v1/...`); a field added later must have a
//! default, so an older agent and a newer server still understand each other.

use serde::{Deserialize, Serialize};

use crate::search::{SearchError, SearchLimits, SearchOptions};

/// HTTP/2 settings both ends of the link use. The link is a pipe through
/// the engine, so bytes in flight cost only memory: windows large enough
/// that a bulk transfer (a fork's objects) never waits on window updates,
/// and frames large enough that it is not cut into thousands of pieces.
pub mod link {
    /// Per stream.
    pub const STREAM_WINDOW: u32 = 8 << 20;
    /// Per connection.
    pub const CONNECTION_WINDOW: u32 = 16 << 20;
    /// Largest frame either end accepts.
    pub const MAX_FRAME: u32 = 256 << 10;
}

/// `GET /v1/ping`: the agent answers with who it is.
pub const PING: &str = "/v1/ping";
/// `POST /v1/exec`: runs a command to its end ([`ExecRequest`] → [`ExecResponse`]).
pub const EXEC: &str = "/v1/exec";

/// `POST /v1/exec/stream` ([`ExecRequest`]): runs a command like [`EXEC`],
/// but answers as the output comes: one JSON [`ExecChunk`] per line, the
/// last an `exit`. Output past `output_limit` (per stream) is not sent.
pub const EXEC_STREAM: &str = "/v1/exec/stream";

/// `POST /v1/fs/read` ([`ReadRequest`]): the file's bytes, as the body.
pub const FS_READ: &str = "/v1/fs/read";
/// `POST /v1/fs/write?path=…` ([`WriteQuery`]): the body becomes the file,
/// atomically (written beside it, synced, renamed over it).
pub const FS_WRITE: &str = "/v1/fs/write";
/// `POST /v1/fs/list` ([`PathRequest`] → `[EntryInfo]`).
pub const FS_LIST: &str = "/v1/fs/list";
/// `POST /v1/fs/stat` ([`PathRequest`] → `Metadata`).
pub const FS_STAT: &str = "/v1/fs/stat";
/// `POST /v1/fs/remove` ([`PathRequest`]): a file, or a tree.
pub const FS_REMOVE: &str = "/v1/fs/remove";
/// `POST /v1/fs/tail` ([`TailRequest`] → a JSON string).
pub const FS_TAIL: &str = "/v1/fs/tail";
/// `POST /v1/search/glob` ([`SearchRequest`] → `[String]`).
pub const GLOB: &str = "/v1/search/glob";
/// `POST /v1/search/grep` ([`SearchRequest`] → `[GrepMatch]`).
pub const GREP: &str = "/v1/search/grep";

/// `POST /v1/watch`: an endless answer, one JSON [`crate::watch::Batch`]
/// per line, each a coalesced window of workspace changes.
pub const WATCH: &str = "/v1/watch";

/// `POST /v1/pty?cols=…&rows=…` ([`PtyQuery`]): an interactive shell on a
/// new terminal. The request body, streamed, is what is typed; the answer,
/// streamed, is what the terminal shows, and carries the terminal's id in
/// [`PTY_ID_HEADER`]. The shell and everything it started are killed when
/// the caller goes away; the answer ends when the shell exits.
pub const PTY: &str = "/v1/pty";
/// `POST /v1/pty/resize` ([`PtyResize`]): a terminal's new size.
pub const PTY_RESIZE: &str = "/v1/pty/resize";
/// The answer header naming a new terminal.
pub const PTY_ID_HEADER: &str = "x-crogia-pty";
/// Most terminals one agent keeps open at once.
pub const MAX_PTYS: usize = 16;

/// `POST /v1/stdio?spec=…` ([`StdioQuery`]): a program (no shell) with
/// piped standard streams, for a server that speaks over them (an MCP
/// stdio server). The request body, streamed, is its stdin; the end of the
/// body closes its stdin. The answer, streamed, is its stdout, and ends
/// with the trailers [`STDIO_EXIT_TRAILER`] and [`STDIO_STDERR_TRAILER`]
/// once it has exited. It and everything it started are killed when the
/// caller goes away, and when it exits.
pub const STDIO: &str = "/v1/stdio";
/// The trailer saying how a program ended: `code N` or `signal N`.
pub const STDIO_EXIT_TRAILER: &str = "x-crogia-exit";
/// The trailer with the end of what a program wrote on stderr (at most
/// [`STDIO_STDERR_TAIL`] bytes, escaped as Rust's `escape_default` does,
/// so it is plain ASCII).
pub const STDIO_STDERR_TRAILER: &str = "x-crogia-stderr";
/// Most bytes of a program's stderr kept (its end); the rest is read and
/// dropped.
pub const STDIO_STDERR_TAIL: usize = 2048;
/// Most programs one agent runs through [`STDIO`] at once.
pub const MAX_STDIO: usize = 32;

/// The query of [`STDIO`]: the JSON of a [`StdioSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdioQuery {
    pub spec: String,
}

/// A program to run with piped standard streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdioSpec {
    /// The program (looked up in `PATH`) and its arguments.
    pub argv: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: String,
}

/// `POST /v1/checkpoint/take` ([`CheckpointTake`] → [`crate::checkpoint::Taken`]):
/// records the workspace in the sandbox's checkpoint store.
pub const CHECKPOINT_TAKE: &str = "/v1/checkpoint/take";
/// `POST /v1/checkpoint/diff` ([`CheckpointDiff`] → [`crate::checkpoint::Diff`]).
pub const CHECKPOINT_DIFF: &str = "/v1/checkpoint/diff";
/// `POST /v1/checkpoint/restore` ([`CheckpointRestore`] →
/// [`crate::checkpoint::Restored`]): the workspace put back as a checkpoint
/// recorded it.
pub const CHECKPOINT_RESTORE: &str = "/v1/checkpoint/restore";
/// `POST /v1/checkpoint/export` ([`CheckpointExport`] → a tar stream):
/// every object a checkpoint stands on (its commit and ancestors, their
/// trees and blobs), for [`CHECKPOINT_IMPORT`] into another sandbox's
/// store: one entry `loose/<id>` each, the object as its loose file holds
/// it (compressed) when `compressed` is asked for, else `<kind>/<id>` of
/// its bytes (what agents before `compressed` send).
pub const CHECKPOINT_EXPORT: &str = "/v1/checkpoint/export";
/// `POST /v1/checkpoint/import?checkpoint=…&restore=…` ([`CheckpointImportQuery`];
/// the body: an export's tar stream → [`crate::checkpoint::Imported`]):
/// each object's id is checked against its bytes, and the checkpoint must
/// be whole at the end.
pub const CHECKPOINT_IMPORT: &str = "/v1/checkpoint/import";
/// `POST /v1/checkpoint/layer` ([`CheckpointLayer`] →
/// [`crate::checkpoint::Imported`]), to the agent of a fork layer's
/// builder: its store and workspace (both empty) made a copy of the
/// parent's checkpoint, from the parent's store and workspace mounted
/// read-only ([`crate::LAYER_SOURCE_STORE`], [`crate::LAYER_SOURCE_WORKSPACE`];
/// see [`crate::checkpoint::Store::copy_checkpoint`]).
pub const CHECKPOINT_LAYER: &str = "/v1/checkpoint/layer";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointTake {
    /// The checkpoint the workspace was at (none for the first).
    pub parent: Option<String>,
    /// The commit's message.
    pub message: String,
    /// Larger files are left out (and listed).
    pub max_file_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointDiff {
    pub from: String,
    /// `None`: the workspace as it is now.
    pub to: Option<String>,
    pub max_file_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRestore {
    pub checkpoint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointExport {
    pub checkpoint: String,
    /// Send each object compressed, as its loose file holds it: less to
    /// carry, and nothing to compress again on the other side.
    #[serde(default)]
    pub compressed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointLayer {
    /// The parent's checkpoint the layer is to hold.
    pub checkpoint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointImportQuery {
    /// The checkpoint the import must make whole.
    pub checkpoint: String,
    /// Whether the workspace is then to be as the checkpoint recorded it
    /// (a fork's: see [`crate::checkpoint::Store::import`]); the answer's
    /// `restored` says what that changed.
    #[serde(default)]
    pub restore: bool,
}

/// `POST /v1/egress`: an endless answer, one JSON [`EgressAsk`] per line:
/// each connection a program in the container asked the agent's proxy for.
/// The server answers each with [`EGRESS_OPEN`] or [`EGRESS_REFUSE`]. One
/// caller at a time: a new one takes over (and is told every connection
/// still waiting).
pub const EGRESS: &str = "/v1/egress";
/// `POST /v1/egress/open?id=…` ([`EgressOpenQuery`]): the server dialled
/// the connection `id` asked for. The request body, streamed, is what the
/// remote end sends; the answer, streamed, is what the program sends.
pub const EGRESS_OPEN: &str = "/v1/egress/open";
/// `POST /v1/egress/refuse` ([`EgressRefusal`]): the connection `id` is not
/// made; the program gets `status` and `message`.
pub const EGRESS_REFUSE: &str = "/v1/egress/refuse";
/// The port of the agent's HTTP proxy on the container's loopback.
pub const PROXY_PORT: u16 = 3128;
/// Most connections the proxy holds waiting for the server's answer.
pub const MAX_EGRESS_WAITING: usize = 256;

/// Seconds a program's connection waits for the server's answer (which may
/// include a person's approval) before it is refused.
pub const EGRESS_ANSWER_SECS: u64 = 180;

/// A connection a program asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressAsk {
    pub id: u64,
    /// A name or an IP address, as the program gave it.
    pub host: String,
    pub port: u16,
}

/// Which asked-for connection the server dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressOpenQuery {
    pub id: u64,
}

/// Why an asked-for connection is not made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRefusal {
    pub id: u64,
    /// The HTTP status the program gets (403: policy, 429: a limit, 502:
    /// the remote end cannot be reached).
    pub status: u16,
    /// One line: the HTTP reason phrase.
    pub reason: String,
    /// What the program reads as the answer's body.
    pub message: String,
}

/// A terminal's size, in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtyQuery {
    pub cols: u16,
    pub rows: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtyResize {
    pub id: u64,
    pub cols: u16,
    pub rows: u16,
}

/// Most bytes of a JSON request body the agent reads.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Most bytes of a file the agent is sent to write (the server's own body
/// limit is lower).
pub const MAX_WRITE_BYTES: usize = 1 << 30;

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

/// A piece of a streamed command: output as it came (whole UTF-8
/// characters; invalid bytes become U+FFFD), then how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecChunk {
    Stdout {
        data: String,
    },
    Stderr {
        data: String,
    },
    Exit {
        /// As in a whole answer: `None` when it was killed for its timeout.
        exit_code: Option<i64>,
        timed_out: bool,
        /// Output past the limit was not sent.
        truncated: bool,
    },
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

/// A path in the workspace (relative, or under `/workspace`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRequest {
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadRequest {
    pub path: String,
    /// A larger file is refused (`too_large`).
    pub limit: u64,
}

/// The query of [`FS_WRITE`] (the body is the content).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteQuery {
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailRequest {
    pub path: String,
    pub lines: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchRequest {
    /// A glob for [`GLOB`], a regular expression for [`GREP`].
    pub pattern: String,
    pub options: SearchOptions,
    pub limits: SearchLimits,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// Set when the request was understood and refused for a reason the
    /// caller may show its own client (a missing file, a bad pattern).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<SearchError>,
}
