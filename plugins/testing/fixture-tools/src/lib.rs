//! Misbehaving and probing tools for the test suite (never installed).

use std::time::Duration;

use crogia_plugin_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
struct Empty {}

/// Loops forever (tests the time limit).
#[tool]
fn spin(_args: Empty) -> ToolResult {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

/// Allocates until memory runs out (tests the memory limit).
#[tool]
fn hog(_args: Empty) -> ToolResult {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        blocks.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&blocks);
    }
}

/// Panics with a recognisable message (tests trap reporting).
#[tool]
fn boom(_args: Empty) -> ToolResult {
    panic!("fixture panic: boom");
}

/// Waits in a host call longer than any test timeout (tests that the time
/// limit covers host calls).
#[tool]
fn sleepy_host(_args: Empty) -> ToolResult {
    let out = exec::run("sleep 20", Some(Duration::from_secs(60)))?;
    Ok(format!("slept: {:?}", out.exit_code))
}

/// Returns the operator's config for this tool, as JSON.
#[tool]
fn echo_config(_args: Empty, ctx: &Context) -> ToolResult {
    Ok(ctx.config_json().to_string())
}

/// Returns "pong" (a trivial tool, for overhead measurements).
#[tool]
fn ping(_args: Empty) -> ToolResult {
    Ok("pong".into())
}

/// Reads a workspace file's size through the host (a trivial host call, for
/// overhead measurements).
#[tool]
fn stat_size(args: StatArgs) -> ToolResult {
    Ok(fs::stat(&args.path)?.size.to_string())
}

#[derive(Deserialize, JsonSchema)]
struct StatArgs {
    /// A workspace path.
    path: String,
}

export_tools!(spin, hog, boom, sleepy_host, echo_config, ping, stat_size);
