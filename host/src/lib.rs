//! Crogia: a server for autonomous coding-agent sessions.
//!
//! Layers, each importing only the ones below it (docs/architecture.md; the
//! test at the end of this file holds the code to the same table):
//!
//! - entry points: `main` (the binary) and [`cli`] (the client);
//! - [`server`]: builds the application from a [`config::Config`] and serves it;
//! - [`api`]: REST and WebSocket handlers, translating HTTP only, over [`state`];
//! - [`service`]: the sessions service, owning every multi-step sequence;
//! - [`agent`], [`session`], [`events`]: tasks, sessions, event logs;
//! - [`plugins`]: the wasm tool runtime and its host functions;
//! - [`network`]: each sandbox's network policy, and carrying its connections;
//! - [`capabilities`]: what one session can do, for REST and plugins alike;
//! - [`sandbox`] (Docker, and the agent in each container), [`workspace`]
//!   (the host directory, and the types of the agent's file answers), [`store`] (SQLite);
//! - [`principal`] (who a request comes from, and its limits), [`config`],
//!   [`datadir`], [`metrics`], [`time`].

pub mod agent;
pub mod api;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod datadir;
pub mod events;
pub mod lease;
pub mod mcp;
pub mod metrics;
pub mod network;
pub mod plugins;
pub mod principal;
pub mod sandbox;
pub mod server;
pub mod service;
pub mod session;
pub mod state;
pub mod store;
pub mod time;
pub mod workspace;

#[cfg(test)]
mod layers {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// Which of our modules each module may import.
    const ALLOWED: &[(&str, &[&str])] = &[
        (
            "cli",
            &[
                "api",
                "events",
                "plugins",
                "principal",
                "session",
                "workspace",
            ],
        ),
        (
            "server",
            &[
                "api",
                "state",
                "service",
                "lease",
                "agent",
                "session",
                "network",
                "plugins",
                "principal",
                "sandbox",
                "store",
                "metrics",
                "config",
                "datadir",
            ],
        ),
        (
            "api",
            &[
                "state",
                "service",
                "agent",
                "session",
                "events",
                "network",
                "plugins",
                "principal",
                "capabilities",
                "sandbox",
                "workspace",
                "metrics",
                "config",
                "time",
            ],
        ),
        (
            "state",
            &[
                "service",
                "agent",
                "session",
                "plugins",
                "principal",
                "sandbox",
                "store",
                "metrics",
                "config",
            ],
        ),
        ("service", &["agent", "session", "principal", "config"]),
        ("lease", &["agent", "session", "store"]),
        (
            "agent",
            &[
                "mcp",
                "session",
                "events",
                "plugins",
                "principal",
                "capabilities",
                "store",
                "metrics",
                "config",
            ],
        ),
        (
            "session",
            &[
                "capabilities",
                "events",
                "network",
                "sandbox",
                "store",
                "workspace",
                "config",
                "datadir",
            ],
        ),
        (
            "mcp",
            &[
                "session",
                "events",
                "network",
                "plugins",
                "capabilities",
                "sandbox",
                "config",
            ],
        ),
        ("network", &["events", "sandbox", "config"]),
        ("events", &["store", "workspace", "time"]),
        (
            "plugins",
            &["capabilities", "sandbox", "workspace", "config", "time"],
        ),
        ("capabilities", &["sandbox", "workspace", "config"]),
        ("sandbox", &["workspace", "metrics", "config"]),
        ("store", &["datadir", "config", "time"]),
        ("workspace", &["config"]),
        ("principal", &["config"]),
        ("config", &[]),
        ("datadir", &[]),
        ("metrics", &[]),
        ("time", &[]),
    ];

    /// The `crate::<module>` paths a source file names outside comments.
    fn imports(source: &str) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        for line in source.lines() {
            let code = line.split("//").next().unwrap_or_default();
            let mut rest = code;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                found.insert(name);
            }
        }
        found
    }

    /// A module's source files, test-only files left out.
    fn sources(src: &Path, module: &str) -> Vec<std::path::PathBuf> {
        let file = src.join(format!("{module}.rs"));
        if file.exists() {
            return vec![file];
        }
        let mut files = Vec::new();
        let mut dirs = vec![src.join(module)];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && path.file_name().is_some_and(|n| n != "tests.rs")
                {
                    files.push(path);
                }
            }
        }
        files
    }

    /// A source text's code before its `#[cfg(test)]` module, if any.
    fn non_test(source: &str) -> &str {
        source
            .find("#[cfg(test)]\nmod tests")
            .map_or(source, |i| &source[..i])
    }

    #[test]
    fn layers_import_only_downward() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut wrong = Vec::new();
        for (module, allowed) in ALLOWED {
            let files = sources(&src, module);
            assert!(!files.is_empty(), "no sources for {module}");
            for file in files {
                let text = std::fs::read_to_string(&file).unwrap();
                for used in imports(non_test(&text)) {
                    if used != *module && !allowed.contains(&used.as_str()) {
                        wrong.push(format!("{} imports crate::{used}", file.display()));
                    }
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "imports against the layers:\n{}",
            wrong.join("\n")
        );
    }

    #[test]
    fn every_module_is_in_the_table() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
        for line in lib.lines() {
            if let Some(name) = line.strip_prefix("pub mod ") {
                let name = name.trim_end_matches(';');
                assert!(
                    ALLOWED.iter().any(|(m, _)| *m == name),
                    "module {name} has no row in the layer table"
                );
            }
        }
    }

    #[test]
    fn the_checker_sees_a_wrong_way_import() {
        let source = "use crate::server::AppState; // crate::api in a comment\n";
        assert_eq!(imports(source), BTreeSet::from(["server".to_string()]));
        assert_eq!(
            non_test("use crate::a;\n#[cfg(test)]\nmod tests {\nuse crate::b;\n}"),
            "use crate::a;\n"
        );
    }
}
