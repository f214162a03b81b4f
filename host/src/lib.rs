//! Crogia: a server for autonomous coding-agent sessions.
//!
//! Layers, each calling only downward:
//! `api` → `server` (state) → `agent` → `session` / `events` → `plugins` → `capabilities` →
//! `sandbox` (Docker) / `workspace` and `search` (host files) / `store` (SQLite).
//! `datadir` keeps the data directory private and held by one process.

pub mod agent;
pub mod api;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod datadir;
pub mod events;
pub mod metrics;
pub mod plugins;
pub mod sandbox;
pub mod search;
pub mod server;
pub mod service;
pub mod session;
pub mod state;
pub mod store;
pub mod time;
pub mod workspace;
