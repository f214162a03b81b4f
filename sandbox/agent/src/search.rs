//! Searching the workspace with ripgrep's crates, from inside the
//! container: `globset` matches names, `grep-searcher` reads lines, and
//! `ignore`'s gitignore matcher honours `.gitignore`, `.ignore` and
//! `.git/info/exclude` as ripgrep does (hidden files are skipped too).
//!
//! The walk is ours, not `ignore`'s walker, because everything in the
//! workspace is attacker input. Each directory is opened through its
//! parent's handle with `O_NOFOLLOW`, so a directory swapped for a symlink
//! mid-walk is skipped, never followed; a name is reported only if it was
//! found in a real directory of the workspace; and ignore files are read
//! only when they are small regular files (a `.ignore` that is a FIFO or a
//! link to `/dev/zero` is passed over). File contents are opened through the
//! workspace's confined handle, refusing special files. Results are sorted
//! by path and capped; grep reads files on several threads.

use std::ffi::OsString;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use globset::{Glob, GlobMatcher, GlobSet, GlobSetBuilder};
use grep_regex::RegexMatcherBuilder;
use grep_searcher::sinks::UTF8;
use grep_searcher::{BinaryDetection, SearcherBuilder};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde::{Deserialize, Serialize};

use crate::fs::{EntryKind, Workspace, WorkspaceError};

/// Deepest directory a walk enters, below its start.
pub const MAX_DEPTH: usize = 256;
/// Largest ignore file read; a bigger one is passed over.
const MAX_IGNORE_FILE_BYTES: u64 = 1 << 20;
/// Most threads one grep reads files on.
const MAX_GREP_THREADS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum SearchError {
    #[error("invalid glob {pattern:?}: {reason}")]
    InvalidGlob { pattern: String, reason: String },
    #[error("invalid regular expression {pattern:?}: {reason}")]
    InvalidRegex { pattern: String, reason: String },
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
}

/// Where and what to search.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchOptions {
    /// Directory to search, relative to the workspace.
    pub path: String,
    /// Globs on file names (`*.py`); a file must match one. Empty: any file.
    pub file_types: Vec<String>,
    /// Most results wanted; capped by [`SearchLimits::max_results`].
    pub max_results: Option<usize>,
}

/// The operator's bounds on one search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchLimits {
    /// Most results one search returns.
    pub max_results: usize,
    /// Longest matched line returned, in characters.
    pub max_line_chars: usize,
    /// Files larger than this are skipped by grep, in bytes.
    pub max_file_bytes: u64,
}

impl Default for SearchLimits {
    fn default() -> Self {
        Self {
            max_results: 1000,
            max_line_chars: 500,
            max_file_bytes: 50 * 1024 * 1024,
        }
    }
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
    limits: &SearchLimits,
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
    limits: &SearchLimits,
) -> Result<Vec<GrepMatch>, SearchError> {
    let matcher = regex_matcher(pattern)?;
    let types = file_type_set(&options.file_types)?;
    let max = cap(options.max_results, limits);
    let files: Vec<String> = walk_files(ws, &options.path)?
        .into_iter()
        .filter(|rel| {
            let name = rel.rsplit('/').next().unwrap_or(rel);
            types.as_ref().is_none_or(|t| t.is_match(name))
        })
        .collect();
    // Workers take files in order; one that has taken a file searches it
    // to the end. Taking stops once enough lines are found, so the files
    // taken are a prefix of the list, all searched: their matches, in
    // order, are exactly the first ones.
    let next = AtomicUsize::new(0);
    let found = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_GREP_THREADS)
        .min(files.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut searcher = SearcherBuilder::new()
                    .binary_detection(BinaryDetection::quit(0))
                    .line_number(true)
                    .build();
                let mut mine = Vec::new();
                while found.load(Ordering::Relaxed) < max {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(rel) = files.get(i) else { break };
                    let hits = grep_file(ws, rel, &matcher, &mut searcher, max, limits);
                    if !hits.is_empty() {
                        found.fetch_add(hits.len(), Ordering::Relaxed);
                        mine.push((i, hits));
                    }
                }
                results
                    .lock()
                    .expect("no worker panics holding it")
                    .extend(mine);
            });
        }
    });
    let mut results = results.into_inner().expect("no worker panicked");
    results.sort_by_key(|(i, _)| *i);
    let mut out: Vec<GrepMatch> = results.into_iter().flat_map(|(_, hits)| hits).collect();
    out.truncate(max);
    Ok(out)
}

/// Up to `max` matching lines of one file, read through the confined
/// handle (never outside the workspace, never a special file).
fn grep_file(
    ws: &Workspace,
    rel: &str,
    matcher: &grep_regex::RegexMatcher,
    searcher: &mut grep_searcher::Searcher,
    max: usize,
    limits: &SearchLimits,
) -> Vec<GrepMatch> {
    let mut out = Vec::new();
    let Ok(file) = ws.open_file(rel) else {
        return out;
    };
    if file.metadata().map(|m| m.len()).unwrap_or(u64::MAX) > limits.max_file_bytes {
        return out;
    }
    let result = searcher.search_reader(
        matcher,
        file,
        UTF8(|line, text| {
            out.push(GrepMatch {
                file: rel.to_string(),
                line,
                content: clip(text, limits.max_line_chars),
            });
            Ok(out.len() < max)
        }),
    );
    // An error (a file that is not UTF-8 part-way through) keeps what
    // matched before it.
    let _ = result;
    out
}

fn cap(requested: Option<usize>, limits: &SearchLimits) -> usize {
    requested
        .unwrap_or(limits.max_results)
        .clamp(1, limits.max_results.max(1))
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

/// Workspace-relative paths of the files under `path`, sorted, skipping
/// hidden and ignored ones. The start directory is opened through the
/// confined handle, so it cannot be a symlink leading out; below it, no
/// symlink is followed (see the module's documentation).
fn walk_files(ws: &Workspace, path: &str) -> Result<Vec<String>, SearchError> {
    let meta = ws.stat(path)?;
    if meta.kind != EntryKind::Directory {
        return Err(WorkspaceError::NotADirectory(path.to_string()).into());
    }
    let rel = Workspace::relative(path)?;
    let err = |e| WorkspaceError::from_io(path, e);
    // The ignore files of the directories above the start apply too.
    let mut rules = Vec::new();
    let mut prefix = String::new();
    let mut dir = ws.dir().try_clone().map_err(err)?;
    for component in rel.components() {
        let name = component.as_os_str();
        if name == "." {
            continue;
        }
        rules.extend(ignore_rules(&dir, ws.root(), &prefix));
        dir = open_subdir(&dir, name).map_err(err)?;
        let Some(name) = name.to_str() else {
            return Err(WorkspaceError::NotFound(path.to_string()).into());
        };
        prefix = join(&prefix, name);
    }
    let mut files = Vec::new();
    walk_dir(&dir, ws.root(), &prefix, 0, &mut rules, &mut files);
    Ok(files)
}

/// Adds the files under `dir` (at `rel` in the workspace) to `out`, in
/// name order, with `rules` holding the ignore rules of the directories
/// above, innermost last.
fn walk_dir(
    dir: &Dir,
    root: &Path,
    rel: &str,
    depth: usize,
    rules: &mut Vec<Gitignore>,
    out: &mut Vec<String>,
) {
    let pushed = match ignore_rules(dir, root, rel) {
        Some(g) => {
            rules.push(g);
            true
        }
        None => false,
    };
    let mut entries: Vec<(OsString, cap_std::fs::FileType)> = match dir.entries() {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| Some((e.file_name(), e.file_type().ok()?)))
            .collect(),
        Err(_) => Vec::new(),
    };
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, kind) in entries {
        // Hidden names are skipped, as ripgrep does; a name that is not
        // UTF-8 cannot be reported.
        let Some(name_str) = name.to_str() else {
            continue;
        };
        if name_str.starts_with('.') {
            continue;
        }
        let child = join(rel, name_str);
        let is_dir = kind.is_dir();
        if ignored(rules, &root.join(&child), is_dir) {
            continue;
        }
        if is_dir {
            if depth < MAX_DEPTH
                && let Ok(sub) = open_subdir(dir, &name)
            {
                walk_dir(&sub, root, &child, depth + 1, rules, out);
            }
        } else if kind.is_file() {
            out.push(child);
        }
    }
    if pushed {
        rules.pop();
    }
}

/// Opens the directory `name` in `dir`, refusing a symlink (one swapped in
/// since the listing included).
fn open_subdir(dir: &Dir, name: &std::ffi::OsStr) -> std::io::Result<Dir> {
    let mut opts = OpenOptions::new();
    opts.read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_NONBLOCK);
    let file = dir.open_with(name, &opts)?;
    Ok(Dir::from_std_file(file.into_std()))
}

/// Whether the innermost rule that has a say ignores `path`.
fn ignored(rules: &[Gitignore], path: &Path, is_dir: bool) -> bool {
    for g in rules.iter().rev() {
        let m = g.matched(path, is_dir);
        if m.is_ignore() {
            return true;
        }
        if m.is_whitelist() {
            return false;
        }
    }
    false
}

/// The rules of the ignore files in `dir` (at `rel`): `.git/info/exclude`,
/// then `.gitignore`, then `.ignore`, so that a later file's rule wins, as
/// in ripgrep. Only small regular files are read.
fn ignore_rules(dir: &Dir, root: &Path, rel: &str) -> Option<Gitignore> {
    let mut builder = GitignoreBuilder::new(root.join(rel));
    let mut any = false;
    for name in [".git/info/exclude", ".gitignore", ".ignore"] {
        let Some(text) = read_small_regular(dir, name) else {
            continue;
        };
        for line in text.lines() {
            let _ = builder.add_line(None, line);
        }
        any = true;
    }
    if !any {
        return None;
    }
    builder.build().ok()
}

/// The text of `name` in `dir` if it is a regular file of at most
/// [`MAX_IGNORE_FILE_BYTES`]; otherwise nothing, and nothing waited for.
fn read_small_regular(dir: &Dir, name: &str) -> Option<String> {
    let mut opts = OpenOptions::new();
    opts.read(true);
    let file = crate::fs::open_regular(dir, Path::new(name), &opts, name).ok()?;
    if file.metadata().ok()?.len() > MAX_IGNORE_FILE_BYTES {
        return None;
    }
    let mut text = String::new();
    file.take(MAX_IGNORE_FILE_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
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
        let limits = SearchLimits::default();
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
        let limits = SearchLimits::default();
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
        let mut limits = SearchLimits::default();
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
        limits.max_results = 2;
        assert_eq!(
            grep(&ws, "Flask", &opts(".", &[]), &limits).unwrap().len(),
            2
        );
    }

    #[test]
    fn grep_skips_binary_files_and_clips_long_lines() {
        let (_t, ws) = ws_with(&[("long.txt", &format!("needle {}\n", "x".repeat(2000)))]);
        ws.write("bin.dat", b"needle\0\x01\x02").unwrap();
        let limits = SearchLimits::default();
        let m = grep(&ws, "needle", &opts(".", &[]), &limits).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].file, "long.txt");
        assert!(m[0].content.chars().count() <= limits.max_line_chars + 1);
    }

    #[test]
    fn bad_regexes_are_reported_and_bad_globs_mean_their_text() {
        let (_t, ws) = ws_with(&[("a", ""), ("[b", ""), ("{c,d", ""), ("e\\", "")]);
        let limits = SearchLimits::default();
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
        let limits = SearchLimits::default();
        assert!(grep(&ws, "needle", &opts("out", &[]), &limits).is_err());
        assert!(
            grep(&ws, "needle", &opts(".", &[]), &limits)
                .unwrap()
                .is_empty()
        );
    }

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(
            unsafe { libc::mkfifo(c.as_ptr(), 0o644) },
            0,
            "mkfifo {path:?}"
        );
    }

    /// Runs `f` on a thread and fails the test if it has not returned
    /// within ten seconds (what a blocked open would do).
    fn within_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the search blocked")
    }

    #[test]
    fn ignore_files_that_are_fifos_or_links_to_devices_are_passed_over() {
        let (t, ws) = ws_with(&[
            ("a/.gitignore", "*.tmp\n"),
            ("a/x.tmp", "needle"),
            ("a/keep.py", "needle"),
            ("b/keep.py", "needle"),
            ("c/keep.py", "needle"),
        ]);
        mkfifo(&ws.root().join(".ignore"));
        mkfifo(&ws.root().join("a/.ignore"));
        std::os::unix::fs::symlink("/dev/zero", ws.root().join("b/.ignore")).unwrap();
        std::os::unix::fs::symlink(
            "../../../../../../../../dev/zero",
            ws.root().join("c/.gitignore"),
        )
        .unwrap();
        let root = ws.root().to_path_buf();
        let (files, lines) = within_seconds(move || {
            let ws = Workspace::open(root).unwrap();
            let limits = SearchLimits::default();
            (
                glob(&ws, "*", &opts(".", &[]), &limits).unwrap(),
                grep(&ws, "needle", &opts(".", &[]), &limits).unwrap(),
            )
        });
        assert_eq!(files, vec!["a/keep.py", "b/keep.py", "c/keep.py"]);
        assert_eq!(lines.len(), 3);
        drop(t);
    }

    #[test]
    fn special_files_matching_a_search_are_skipped_without_blocking() {
        let (_t, ws) = ws_with(&[("real.txt", "needle\n")]);
        mkfifo(&ws.root().join("pipe.txt"));
        let root = ws.root().to_path_buf();
        let (files, lines) = within_seconds(move || {
            let ws = Workspace::open(root).unwrap();
            let limits = SearchLimits::default();
            (
                glob(&ws, "*.txt", &opts(".", &[]), &limits).unwrap(),
                grep(&ws, "needle", &opts(".", &[]), &limits).unwrap(),
            )
        });
        // A FIFO is not a file: globs list regular files only.
        assert_eq!(files, vec!["real.txt"]);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].file, "real.txt");
    }

    #[test]
    fn ignore_rules_nest_and_the_ignore_file_wins_over_gitignore() {
        let (_t, ws) = ws_with(&[
            (".gitignore", "*.log\n"),
            (".ignore", "!keep.log\n"),
            ("keep.log", ""),
            ("drop.log", ""),
            ("src/.gitignore", "gen/\n"),
            ("src/gen/a.py", ""),
            ("src/b.py", ""),
            ("src/c.log", ""),
            ("gen/top.py", ""),
        ]);
        let limits = SearchLimits::default();
        assert_eq!(
            glob(&ws, "*", &opts(".", &[]), &limits).unwrap(),
            vec!["gen/top.py", "keep.log", "src/b.py"]
        );
        // Starting below the root, the root's rules still apply.
        assert_eq!(
            glob(&ws, "*", &opts("src", &[]), &limits).unwrap(),
            vec!["src/b.py"]
        );
    }

    #[test]
    fn a_capped_grep_returns_the_first_matches_in_path_order() {
        let files: Vec<(String, String)> = (0..60)
            .map(|i| (format!("f{i:02}.txt"), "hit\nmiss\nhit\nhit\n".to_string()))
            .collect();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let (_t, ws) = ws_with(&refs);
        let limits = SearchLimits::default();
        let mut o = opts(".", &[]);
        o.max_results = Some(10);
        let got: Vec<(String, u64)> = grep(&ws, "hit", &o, &limits)
            .unwrap()
            .into_iter()
            .map(|m| (m.file, m.line))
            .collect();
        let want: Vec<(String, u64)> = (0..4)
            .flat_map(|i| [1, 3, 4].map(|l| (format!("f{i:02}.txt"), l)))
            .take(10)
            .collect();
        assert_eq!(got, want);
    }
}
