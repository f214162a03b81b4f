//! The sandbox agent: one resident process in each container that does the
//! sandbox's work from inside it, and the protocol the server speaks to it.
//!
//! The server reaches the agent over one long-lived Docker exec stream: the
//! exec runs `crogia-agent connect`, which bridges its stdin and stdout to
//! the agent's unix socket, and the server speaks HTTP/2 (hyper) over that
//! stream, so many requests share it. The container needs no network.
//!
//! This crate is both sides' source of truth: [`protocol`] holds the
//! request and response types, [`exec`] runs commands, [`fs`] and
//! [`search`] work on the workspace, [`server`] serves them all. The binary (`src/main.rs`) is built static and injected into every
//! container.

pub mod checkpoint;
pub mod egress;
pub mod exec;
pub mod fs;
pub mod output;
pub mod pipe;
pub mod protocol;
pub mod pty;
pub mod search;
pub mod server;
pub mod stdio;
pub mod watch;

/// Where the agent listens inside the container. `/tmp` is a writable tmpfs
/// in every sandbox, even with a read-only root.
pub const SOCKET_PATH: &str = "/tmp/.crogia-agent.sock";

/// A volume of the container's own, outside the workspace, kept as long as
/// the container: it holds the checkpoint store.
pub const CHECKPOINT_VOLUME: &str = "/.crogia-checkpoints";
/// The checkpoint store, in [`CHECKPOINT_VOLUME`]: a directory of its own,
/// so that the server can hand it to the container's user (an upload into
/// a volume can create a directory owned by anyone, even under a read-only
/// root, but cannot change the owner of the volume's root).
pub const CHECKPOINT_STORE: &str = "/.crogia-checkpoints/store";
/// Where a fork's base is mounted read-only, when its workspace is a layer
/// over the checkpoint's files: the store that wrote that layer, holding
/// the checkpoint's objects, which the container's own store reads from
/// ([`checkpoint::Store::with_base`]) instead of holding a copy.
pub const CHECKPOINT_BASE: &str = "/.crogia-base";
/// The store in [`CHECKPOINT_BASE`].
pub const CHECKPOINT_BASE_STORE: &str = "/.crogia-base/store";
/// Where a fork on a layer has the layer's files mounted read-only (the
/// lower directory of its workspace, untouched by its changes): its base
/// store reads the checkpoint's file blobs there
/// ([`checkpoint::Store::with_files`]).
pub const CHECKPOINT_BASE_FILES: &str = "/.crogia-base-files";
/// Where the container that builds a fork layer has the parent's
/// workspace, read-only: the files it copies where they still hold the
/// checkpoint's blobs ([`protocol::CHECKPOINT_LAYER`]).
pub const LAYER_SOURCE_WORKSPACE: &str = "/.crogia-parent/workspace";
/// Where that container has the parent's checkpoint volume, read-only.
pub const LAYER_SOURCE_VOLUME: &str = "/.crogia-parent/checkpoints";
/// The parent's checkpoint store, in [`LAYER_SOURCE_VOLUME`].
pub const LAYER_SOURCE_STORE: &str = "/.crogia-parent/checkpoints/store";
/// Where that container has the parent's own base, read-only, when the
/// parent is itself a fork on a layer ([`CHECKPOINT_BASE`] in the parent).
pub const LAYER_SOURCE_BASE: &str = "/.crogia-parent/base";
/// The store in [`LAYER_SOURCE_BASE`].
pub const LAYER_SOURCE_BASE_STORE: &str = "/.crogia-parent/base/store";
/// Where that container has the parent's base's files, read-only
/// ([`CHECKPOINT_BASE_FILES`] in the parent).
pub const LAYER_SOURCE_BASE_FILES: &str = "/.crogia-parent/base-files";

/// Where the agent's binary is mounted in the container.
pub const CONTAINER_BINARY: &str = "/.crogia/crogia-agent";
