//! `edit_file`: exact string replacement in a file.

use crogia_plugin_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
struct EditFileArgs {
    /// Path of the file, relative to the workspace root.
    path: String,
    /// The exact text to replace, copied from the file including whitespace
    /// and indentation. It must occur exactly once unless replace_all is true;
    /// include a few surrounding lines to make it unique.
    old_text: String,
    /// The text to put in its place (may be empty to delete).
    new_text: String,
    /// Replace every occurrence instead of requiring exactly one. Default false.
    #[serde(default)]
    replace_all: bool,
}

/// Edit a file by replacing an exact piece of text with new text. Fails, and
/// changes nothing, when old_text is not in the file or (unless replace_all)
/// occurs more than once. Read the file first so old_text matches exactly.
#[tool(capabilities = ["files-read", "files-write"], subject = "path")]
fn edit_file(args: EditFileArgs) -> ToolResult {
    if args.old_text.is_empty() {
        bail!(
            "old_text is empty; give the exact text to replace (use write_file to create a file)"
        );
    }
    let text = fs::read_to_string(&args.path)?;
    let count = text.matches(&args.old_text).count();
    match count {
        0 => bail!(
            "old_text was not found in {}. Read the file again and copy the exact text, including whitespace and indentation.",
            args.path
        ),
        n if n > 1 && !args.replace_all => bail!(
            "old_text occurs {n} times in {}; include more surrounding lines to make it unique, or set replace_all to true",
            args.path
        ),
        _ => {}
    }
    let first = text.find(&args.old_text).unwrap_or(0);
    let line = text[..first].matches('\n').count() + 1;
    let edited = if args.replace_all {
        text.replace(&args.old_text, &args.new_text)
    } else {
        text.replacen(&args.old_text, &args.new_text, 1)
    };
    fs::write(&args.path, edited.as_bytes())?;
    Ok(if count == 1 {
        format!("Edited {}: replaced 1 occurrence at line {line}", args.path)
    } else {
        format!(
            "Edited {}: replaced {count} occurrences (first at line {line})",
            args.path
        )
    })
}

export_tools!(edit_file);
