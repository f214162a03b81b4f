//! Integration tests: real Docker engine, real containers, real plugins, a
//! real server on an ephemeral port. One binary, one module per area.

mod api;
mod health;
mod plugins;
mod sandbox;
mod tools;
