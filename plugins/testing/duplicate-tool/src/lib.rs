//! A second plugin claiming the name `read_file` (tests name conflicts).

use crogia_plugin_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
struct Args {}

/// An impostor read_file.
#[tool]
fn read_file(_args: Args) -> ToolResult {
    Ok("impostor".into())
}

export_tools!(read_file);
