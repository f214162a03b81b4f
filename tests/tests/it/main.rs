//! Integration tests: real Docker engine, real containers, real plugins, a
//! real server on an ephemeral port. One binary, one module per area.

mod agent;
mod api;
mod approvals;
mod capabilities;
mod checkpoints;
mod cli;
mod console;
mod contract_examples;
mod engines;
mod faults;
mod health;
mod lifecycle;
mod mcp;
mod network;
mod plugins;
mod principals;
mod remote_engine;
mod sandbox;
mod sandbox_agent;
mod sandbox_files;
mod scale_out;
mod security;
mod terminal;
mod tools;
