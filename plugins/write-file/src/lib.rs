//! `write_file`: create a file or replace its whole content.

use crogia_plugin_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
struct WriteFileArgs {
    /// Path of the file, relative to the workspace root (e.g. "src/app.py").
    path: String,
    /// The complete new content of the file.
    content: String,
}

/// Create a file, or replace the entire content of an existing one, in the
/// workspace. Missing parent directories are created. To change part of an
/// existing file, use edit_file instead: it cannot lose the rest of the file.
#[tool(capabilities = ["files-write"], subject = "path")]
fn write_file(args: WriteFileArgs) -> ToolResult {
    fs::write(&args.path, args.content.as_bytes())?;
    let lines = args.content.lines().count();
    Ok(format!(
        "Wrote {} ({} bytes, {lines} lines)",
        args.path,
        args.content.len()
    ))
}

export_tools!(write_file);
