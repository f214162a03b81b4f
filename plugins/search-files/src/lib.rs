//! `search_files`: find files by name with a glob.

use crogia_plugin_sdk::prelude::*;
use crogia_plugin_sdk::search::SearchOptions;

#[derive(Deserialize, JsonSchema)]
struct SearchFilesArgs {
    /// Glob to match, e.g. "*.py", "test_*", or "src/**/*.rs". Without a "/"
    /// it matches file names at any depth; with one, paths from the search
    /// directory's root.
    pattern: String,
    /// Directory to search, relative to the workspace root. Default ".".
    #[serde(default = "dot")]
    path: String,
    /// Only files whose names match one of these globs, e.g. ["*.py", "*.js"].
    #[serde(default)]
    file_types: Vec<String>,
    /// Most paths to return. Default 200.
    max_results: Option<u32>,
}

fn dot() -> String {
    ".".into()
}

/// Find files in the workspace whose names match a glob pattern, searching
/// all subdirectories. Files ignored by .gitignore are skipped. Returns one
/// path per line, relative to the workspace root.
#[tool(capabilities = ["files-read"], subject = "pattern")]
fn search_files(args: SearchFilesArgs) -> ToolResult {
    let max_results = args.max_results.unwrap_or(200);
    let options = SearchOptions::new()
        .path(args.path)
        .file_types(args.file_types)
        .max_results(max_results);
    let found = search::glob(&args.pattern, &options)?;
    if found.is_empty() {
        return Ok(format!("No files match {:?}", args.pattern));
    }
    let mut out = found.join("\n");
    if found.len() as u32 >= max_results {
        out.push_str(&format!(
            "\n[... showing the first {}; narrow the pattern or path]",
            found.len()
        ));
    }
    Ok(out)
}

export_tools!(search_files);
