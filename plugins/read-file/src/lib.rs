//! `read_file`: a text file from the workspace, whole or a range of lines.

use crogia_plugin_sdk::prelude::*;

/// Longest result returned to the model, in bytes; the rest is cut with a note.
const MAX_OUTPUT: usize = 100_000;

#[derive(Deserialize, JsonSchema)]
struct ReadFileArgs {
    /// Path of the file, relative to the workspace root (e.g. "src/app.py").
    path: String,
    /// First line to return, counting from 1. Default: the first line.
    start_line: Option<usize>,
    /// Last line to return, inclusive. Default: the last line.
    end_line: Option<usize>,
}

/// Read a text file from the workspace. Returns its content; with start_line
/// and/or end_line, only those lines (1-based, inclusive). Use it before
/// editing a file, to see its exact current text.
#[tool(capabilities = ["files-read"], subject = "path")]
fn read_file(args: ReadFileArgs) -> ToolResult {
    let text = fs::read_to_string(&args.path)?;
    let (start, end) = (args.start_line.unwrap_or(1), args.end_line);
    if start == 0 {
        bail!("start_line counts from 1");
    }
    if let Some(end) = end
        && end < start
    {
        bail!("end_line ({end}) is before start_line ({start})");
    }
    let mut out = if args.start_line.is_none() && end.is_none() {
        text
    } else {
        let total = text.lines().count();
        if start > total.max(1) {
            bail!(
                "start_line {start} is past the end of {} ({total} lines)",
                args.path
            );
        }
        let take = end.map_or(usize::MAX, |e| e + 1 - start);
        text.lines()
            .skip(start - 1)
            .take(take)
            .map(|l| format!("{l}\n"))
            .collect()
    };
    if out.len() > MAX_OUTPUT {
        let mut cut = MAX_OUTPUT;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("\n[... truncated; read a smaller range with start_line/end_line]");
    }
    Ok(out)
}

export_tools!(read_file);
