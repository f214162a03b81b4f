//! `list_files`: the entries of one workspace directory.

use crogia_plugin_sdk::fs::EntryKind;
use crogia_plugin_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
struct ListFilesArgs {
    /// Directory to list, relative to the workspace root. Default ".".
    #[serde(default = "dot")]
    path: String,
}

fn dot() -> String {
    ".".into()
}

/// List the files and directories directly inside a workspace directory, with
/// file sizes. Directories end with "/". To find files at any depth, use
/// search_files.
#[tool(capabilities = ["files-read"], subject = "path")]
fn list_files(args: ListFilesArgs) -> ToolResult {
    let entries = fs::list(&args.path)?;
    if entries.is_empty() {
        return Ok(format!("{} is empty", args.path));
    }
    let mut out = String::new();
    for e in entries {
        match e.kind {
            EntryKind::Directory => out.push_str(&format!("{}/\n", e.name)),
            EntryKind::Symlink => out.push_str(&format!("{} (symlink)\n", e.name)),
            _ => out.push_str(&format!("{} ({} bytes)\n", e.name, e.size.unwrap_or(0))),
        }
    }
    Ok(out)
}

export_tools!(list_files);
