//! `grep`: search file contents with a regular expression.

use crogia_plugin_sdk::prelude::*;
use crogia_plugin_sdk::search::SearchOptions;

#[derive(Deserialize, JsonSchema)]
struct GrepArgs {
    /// Regular expression (Rust regex syntax), e.g. "def \\w+\\(" or
    /// "TODO|FIXME". Prefix with (?i) for case-insensitive matching.
    pattern: String,
    /// Directory to search, relative to the workspace root. Default ".".
    #[serde(default = "dot")]
    path: String,
    /// Only files whose names match one of these globs, e.g. ["*.py"].
    #[serde(default)]
    file_types: Vec<String>,
    /// Most matching lines to return. Default 100.
    max_results: Option<u32>,
}

fn dot() -> String {
    ".".into()
}

/// Search the contents of workspace files for a regular expression. Returns
/// matching lines as "path:line: text". Binary files and files ignored by
/// .gitignore are skipped.
#[tool(capabilities = ["files-read"], subject = "pattern")]
fn grep(args: GrepArgs) -> ToolResult {
    let max_results = args.max_results.unwrap_or(100);
    let options = SearchOptions::new()
        .path(args.path)
        .file_types(args.file_types)
        .max_results(max_results);
    let found = search::grep(&args.pattern, &options)?;
    if found.is_empty() {
        return Ok(format!("No matches for {:?}", args.pattern));
    }
    let mut out: String = found
        .iter()
        .map(|m| format!("{}:{}: {}\n", m.file, m.line, m.content))
        .collect();
    if found.len() as u32 >= max_results {
        out.push_str(&format!(
            "[... showing the first {} matches; narrow the pattern or path]\n",
            found.len()
        ));
    }
    Ok(out)
}

export_tools!(grep);
