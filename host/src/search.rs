//! Searching a workspace with ripgrep's crates: `ignore` walks it (honouring
//! `.gitignore`, `.ignore` and hidden files as ripgrep does, even outside a git
//! repository), `globset` matches names, `grep-searcher` reads lines.
//!
//! File contents are read through the workspace's confined handle, so a
//! symlink swapped in during a walk still cannot leak a file from outside.
//! Results are sorted by path and capped.

use std::path::Path;

use globset::{Glob, GlobMatcher, GlobSet, GlobSetBuilder};
use grep_regex::RegexMatcherBuilder;
use grep_searcher::sinks::UTF8;
use grep_searcher::{BinaryDetection, SearcherBuilder};
use ignore::WalkBuilder;

use crate::config::WorkspaceConfig;
use crate::workspace::{EntryKind, Workspace, WorkspaceError};

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("invalid glob {pattern:?}: {reason}")]
    InvalidGlob { pattern: String, reason: String },
    #[error("invalid regular expression {pattern:?}: {reason}")]
    InvalidRegex { pattern: String, reason: String },
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
}

/// Where and what to search.
#[derive(Debug, Clone, Default)]
pub struct SearchOptions {
    /// Directory to search, relative to the workspace.
    pub path: String,
    /// Globs on file names (`*.py`); a file must match one. Empty: any file.
    pub file_types: Vec<String>,
    /// Most results wanted; capped by `workspace.search_max_results`.
    pub max_results: Option<usize>,
}

impl SearchOptions {
    /// Splits the REST API's `"*.py,*.js"` form into globs.
    pub fn parse_file_types(file_types: Option<&str>) -> Vec<String> {
        file_types
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }
}

/// A line that matched.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct GrepMatch {
    pub file: String,
    pub line: u64,
    pub content: String,
}

/// Paths (relative to the workspace) of files under `options.path` that
/// match `pattern`. A pattern with a `/` is matched against the whole
/// relative path; one without, against the file name (like `find -name`).
pub fn glob(
    ws: &Workspace,
    pattern: &str,
    options: &SearchOptions,
    limits: &WorkspaceConfig,
) -> Result<Vec<String>, SearchError> {
    let pattern = pattern.trim();
    let pattern = if pattern.is_empty() { "*" } else { pattern };
    let matcher = compile_glob(pattern)?;
    let on_path = pattern.contains('/');
    let types = file_type_set(&options.file_types)?;
    let max = cap(options.max_results, limits);
    let mut out = Vec::new();
    for rel in walk_files(ws, &options.path)? {
        let name = rel.rsplit('/').next().unwrap_or(&rel);
        let hit = if on_path {
            matcher.is_match(&rel)
        } else {
            matcher.is_match(name)
        };
        if hit && types.as_ref().is_none_or(|t| t.is_match(name)) {
            out.push(rel);
            if out.len() >= max {
                break;
            }
        }
    }
    Ok(out)
}

/// The matcher [`grep`] uses: lines are searched one at a time, so a
/// pattern that can only match a line feed is refused.
fn regex_matcher(pattern: &str) -> Result<grep_regex::RegexMatcher, SearchError> {
    RegexMatcherBuilder::new()
        .line_terminator(Some(b'\n'))
        .build(pattern)
        .map_err(|e| SearchError::InvalidRegex {
            pattern: pattern.to_string(),
            reason: e.to_string(),
        })
}

/// Whether `pattern` is a regular expression [`grep`] takes.
pub fn check_regex(pattern: &str) -> Result<(), SearchError> {
    regex_matcher(pattern).map(|_| ())
}

/// Lines of files under `options.path` matching the regular expression
/// `pattern`. Binary files and files over `search_max_file_bytes` are skipped;
/// long lines are cut to `search_max_line_chars`.
pub fn grep(
    ws: &Workspace,
    pattern: &str,
    options: &SearchOptions,
    limits: &WorkspaceConfig,
) -> Result<Vec<GrepMatch>, SearchError> {
    let matcher = regex_matcher(pattern)?;
    let types = file_type_set(&options.file_types)?;
    let max = cap(options.max_results, limits);
    let mut searcher = SearcherBuilder::new()
        .binary_detection(BinaryDetection::quit(0))
        .line_number(true)
        .build();
    let mut out: Vec<GrepMatch> = Vec::new();
    for rel in walk_files(ws, &options.path)? {
        let name = rel.rsplit('/').next().unwrap_or(&rel);
        if types.as_ref().is_some_and(|t| !t.is_match(name)) {
            continue;
        }
        // Opened through the confined handle: never outside the workspace.
        let Ok(file) = ws.open_file(&rel) else {
            continue;
        };
        if file.metadata().map(|m| m.len()).unwrap_or(u64::MAX) > limits.search_max_file_bytes {
            continue;
        }
        let remaining = max - out.len();
        let mut found = 0;
        let result = searcher.search_reader(
            &matcher,
            file,
            UTF8(|line, text| {
                out.push(GrepMatch {
                    file: rel.clone(),
                    line,
                    content: clip(text, limits.search_max_line_chars),
                });
                found += 1;
                Ok(found < remaining)
            }),
        );
        if let Err(e) = result {
            // A file that is not UTF-8 part-way through: keep what matched.
            tracing::debug!(file = %rel, error = %e, "grep stopped early in file");
        }
        if out.len() >= max {
            break;
        }
    }
    Ok(out)
}

fn cap(requested: Option<usize>, limits: &WorkspaceConfig) -> usize {
    requested
        .unwrap_or(limits.search_max_results)
        .clamp(1, limits.search_max_results)
}

fn clip(text: &str, max_chars: usize) -> String {
    let line = text.trim_end_matches(['\n', '\r']);
    match line.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

/// A glob; one that does not parse (`[abc`, `{a,b`) means its text
/// literally, as an unmatched `[` does in a shell.
fn glob_or_literal(pattern: &str) -> Result<Glob, SearchError> {
    Glob::new(pattern)
        .or_else(|_| {
            // `escape` brackets the metacharacters; a backslash must then
            // stand for itself too (`a\` would otherwise be a dangling escape).
            globset::GlobBuilder::new(&globset::escape(pattern))
                .backslash_escape(false)
                .build()
        })
        .map_err(|e| SearchError::InvalidGlob {
            pattern: pattern.to_string(),
            reason: e.kind().to_string(),
        })
}

fn compile_glob(pattern: &str) -> Result<GlobMatcher, SearchError> {
    glob_or_literal(pattern).map(|g| g.compile_matcher())
}

fn file_type_set(types: &[String]) -> Result<Option<GlobSet>, SearchError> {
    if types.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for t in types {
        // "py" and ".py" mean "*.py".
        let g = if t.contains(['*', '?', '[']) {
            t.clone()
        } else {
            format!("*.{}", t.trim_start_matches('.'))
        };
        b.add(glob_or_literal(&g)?);
    }
    b.build().map(Some).map_err(|e| SearchError::InvalidGlob {
        pattern: types.join(","),
        reason: e.to_string(),
    })
}

/// Workspace-relative paths of the files under `path`, sorted. The start
/// directory is resolved through the confined handle first, so it cannot be a
/// symlink leading out; symlinks met during the walk are not followed.
fn walk_files(ws: &Workspace, path: &str) -> Result<Vec<String>, SearchError> {
    let meta = ws.stat(path)?;
    if meta.kind != EntryKind::Directory {
        return Err(WorkspaceError::NotADirectory(path.to_string()).into());
    }
    let rel = Workspace::relative(path)?;
    let start = ws.root().join(&rel);
    let canonical =
        std::fs::canonicalize(&start).map_err(|_| WorkspaceError::NotFound(path.to_string()))?;
    if !canonical.starts_with(ws.root()) {
        return Err(WorkspaceError::OutsideWorkspace(path.to_string()).into());
    }
    let walker = WalkBuilder::new(&canonical)
        .follow_links(false)
        .require_git(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(|e| e.file_name() != ".git")
        .build();
    let mut files = Vec::new();
    for entry in walker.flatten() {
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        if let Ok(rel) = entry.path().strip_prefix(ws.root())
            && let Some(s) = rel_string(rel)
        {
            files.push(s);
        }
    }
    Ok(files)
}

fn rel_string(p: &Path) -> Option<String> {
    p.to_str().map(|s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Workspace) {
        let t = tempfile::tempdir().unwrap();
        let ws = Workspace::create(t.path().join("w")).unwrap();
        for (p, c) in files {
            ws.write(p, c.as_bytes()).unwrap();
        }
        (t, ws)
    }

    fn opts(path: &str, types: &[&str]) -> SearchOptions {
        SearchOptions {
            path: path.into(),
            file_types: types.iter().map(|s| s.to_string()).collect(),
            max_results: None,
        }
    }

    #[test]
    fn glob_matches_names_at_any_depth_and_paths_with_slashes() {
        let (_t, ws) = ws_with(&[
            ("app.py", ""),
            ("src/models.py", ""),
            ("src/x.js", ""),
            ("README.md", ""),
        ]);
        let limits = WorkspaceConfig::default();
        assert_eq!(
            glob(&ws, "*.py", &opts(".", &[]), &limits).unwrap(),
            vec!["app.py", "src/models.py"]
        );
        assert_eq!(
            glob(&ws, "src/*.js", &opts(".", &[]), &limits).unwrap(),
            vec!["src/x.js"]
        );
        assert_eq!(
            glob(&ws, "*", &opts("src", &["*.js"]), &limits).unwrap(),
            vec!["src/x.js"]
        );
        assert_eq!(
            glob(&ws, "*", &opts(".", &["py", ".md"]), &limits).unwrap(),
            vec!["README.md", "app.py", "src/models.py"]
        );
    }

    #[test]
    fn gitignored_and_git_internal_files_are_skipped() {
        let (_t, ws) = ws_with(&[
            (".gitignore", "build/\n*.log\n"),
            ("build/out.py", "x"),
            ("a.log", "x"),
            ("keep.py", "x"),
            (".git/config", "x"),
        ]);
        let limits = WorkspaceConfig::default();
        assert_eq!(
            glob(&ws, "*", &opts(".", &[]), &limits).unwrap(),
            vec!["keep.py"]
        );
    }

    #[test]
    fn grep_finds_lines_with_numbers_and_respects_types_and_caps() {
        let (_t, ws) = ws_with(&[
            ("app.py", "from flask import Flask\napp = Flask(__name__)\n"),
            ("notes.md", "Flask notes\n"),
            ("x.js", "Flask\n"),
        ]);
        let mut limits = WorkspaceConfig::default();
        let m = grep(&ws, "Flask", &opts(".", &["*.py", "*.md"]), &limits).unwrap();
        assert_eq!(
            m,
            vec![
                GrepMatch {
                    file: "app.py".into(),
                    line: 1,
                    content: "from flask import Flask".into()
                },
                GrepMatch {
                    file: "app.py".into(),
                    line: 2,
                    content: "app = Flask(__name__)".into()
                },
                GrepMatch {
                    file: "notes.md".into(),
                    line: 1,
                    content: "Flask notes".into()
                },
            ]
        );
        limits.search_max_results = 2;
        assert_eq!(
            grep(&ws, "Flask", &opts(".", &[]), &limits).unwrap().len(),
            2
        );
    }

    #[test]
    fn grep_skips_binary_files_and_clips_long_lines() {
        let (_t, ws) = ws_with(&[("long.txt", &format!("needle {}\n", "x".repeat(2000)))]);
        ws.write("bin.dat", b"needle\0\x01\x02").unwrap();
        let limits = WorkspaceConfig::default();
        let m = grep(&ws, "needle", &opts(".", &[]), &limits).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].file, "long.txt");
        assert!(m[0].content.chars().count() <= limits.search_max_line_chars + 1);
    }

    #[test]
    fn bad_regexes_are_reported_and_bad_globs_mean_their_text() {
        let (_t, ws) = ws_with(&[("a", ""), ("[b", ""), ("{c,d", ""), ("e\\", "")]);
        let limits = WorkspaceConfig::default();
        assert!(matches!(
            grep(&ws, "(", &opts(".", &[]), &limits),
            Err(SearchError::InvalidRegex { .. })
        ));
        assert!(matches!(
            check_regex("a\nb"),
            Err(SearchError::InvalidRegex { .. })
        ));
        assert_eq!(glob(&ws, "[b", &opts(".", &[]), &limits).unwrap(), ["[b"]);
        assert_eq!(
            glob(&ws, "{c,d", &opts(".", &[]), &limits).unwrap(),
            ["{c,d"]
        );
        // A dangling escape: the backslash is a character of the name.
        assert_eq!(glob(&ws, "e\\", &opts(".", &[]), &limits).unwrap(), ["e\\"]);
        assert_eq!(
            glob(&ws, "[", &opts(".", &[]), &limits).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn searching_through_a_symlink_out_is_refused() {
        let (t, ws) = ws_with(&[("a", "")]);
        std::fs::write(t.path().join("secret.txt"), "needle").unwrap();
        std::os::unix::fs::symlink(t.path(), ws.root().join("out")).unwrap();
        let limits = WorkspaceConfig::default();
        assert!(grep(&ws, "needle", &opts("out", &[]), &limits).is_err());
        assert!(
            grep(&ws, "needle", &opts(".", &[]), &limits)
                .unwrap()
                .is_empty()
        );
    }
}
