//! The plugin runtime: limits, bad files, operator config and hot reload,
//! with real components through real wasmtime.

use std::time::{Duration, Instant};

use crogia_host::config::ToolConfig;
use crogia_tests::{TestSandbox, dist_plugin, fixture_plugin};
use serde_json::json;

fn fixture_sandbox(adjust: impl FnOnce(&mut crogia_host::config::Config)) -> TestSandbox {
    let mut t = TestSandbox::with_config(adjust);
    t.plugin_dir(&[fixture_plugin("fixture-tools"), dist_plugin("read-file")]);
    t
}

fn tool(timeout_ms: Option<u64>, memory_mb: Option<u64>) -> ToolConfig {
    ToolConfig {
        timeout_ms,
        memory_mb,
        ..ToolConfig::default()
    }
}

#[tokio::test]
async fn infinite_loop_times_out_and_the_plugin_keeps_working() {
    let t = fixture_sandbox(|c| {
        c.tools.insert("spin".into(), tool(Some(300), None));
    });
    let rt = t.plugins().await;
    let caps = t.capabilities().await;
    let err = rt.invoke(caps.clone(), "spin", "{}").await.unwrap_err();
    assert_eq!(err.code(), "timeout");
    assert_eq!(err.to_string(), "tool \"spin\" timed out after 300 ms");
    // Same plugin, next call: a fresh instance that works.
    assert_eq!(rt.invoke(caps, "ping", "{}").await.unwrap(), "pong");
}

#[tokio::test]
async fn time_limit_covers_time_spent_in_host_calls() {
    let t = fixture_sandbox(|c| {
        c.tools.insert("sleepy_host".into(), tool(Some(500), None));
    });
    let rt = t.plugins().await;
    let caps = t.capabilities().await;
    let started = Instant::now();
    let err = rt.invoke(caps, "sleepy_host", "{}").await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), "timeout");
    assert_eq!(
        err.to_string(),
        "tool \"sleepy_host\" timed out after 500 ms"
    );
    // It ran its 500 ms and was stopped then, inside its 20 s host call
    // (the margin only absorbs scheduling on a busy machine).
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(2500),
        "stopped after {took:?}"
    );
}

#[tokio::test]
async fn plugin_calls_share_no_memory_across_calls_or_sessions() {
    let t = fixture_sandbox(|_| {});
    let rt = t.plugins().await;
    let first = t.capabilities().await;
    let other = t.capabilities().await;
    let secret = format!("CROGIA-SECRET-{:016x}", rand::random::<u64>());
    let seen = rt
        .invoke(
            first.clone(),
            "remember",
            &json!({"secret": secret}).to_string(),
        )
        .await
        .unwrap();
    // The scan finds the secret where the call left it (static and heap)...
    assert!(seen.contains(&secret), "the scan missed the secret: {seen}");
    // ...and no later call finds it, from another session or the same one,
    // although their instances may reuse its memory slot.
    for caps in [other, first] {
        let left = rt.invoke(caps, "recall", "{}").await.unwrap();
        assert_eq!(left, "[] static=\"\"");
    }
}

#[tokio::test]
async fn a_plugin_has_no_files_environment_or_network_of_its_own() {
    let t = fixture_sandbox(|_| {});
    let rt = t.plugins().await;
    let caps = t.capabilities().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let report = rt
        .invoke(caps, "probe_ambient", &json!({"port": port}).to_string())
        .await
        .unwrap();
    assert!(!report.contains("ALLOWED"), "{report}");
    assert_eq!(
        report.lines().filter(|l| l.contains(": refused (")).count(),
        5,
        "{report}"
    );
    assert!(report.contains("env: 0 variables"), "{report}");
    // Nothing reached the listener.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), listener.accept())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn memory_bomb_is_stopped_at_its_limit() {
    let t = fixture_sandbox(|c| {
        c.tools.insert("hog".into(), tool(None, Some(16)));
    });
    let rt = t.plugins().await;
    let caps = t.capabilities().await;
    let err = rt.invoke(caps.clone(), "hog", "{}").await.unwrap_err();
    assert_eq!(err.code(), "out_of_memory");
    assert_eq!(
        err.to_string(),
        "tool \"hog\" ran out of memory (limit 16 MiB)"
    );
    assert_eq!(rt.invoke(caps, "ping", "{}").await.unwrap(), "pong");
}

#[tokio::test]
async fn panic_becomes_a_trap_error_with_its_message() {
    let t = fixture_sandbox(|_| {});
    let rt = t.plugins().await;
    let caps = t.capabilities().await;
    let err = rt.invoke(caps.clone(), "boom", "{}").await.unwrap_err();
    assert_eq!(err.code(), "trap");
    let message = err.to_string();
    assert!(
        message.contains("panicked at") && message.contains("fixture panic: boom"),
        "{message}"
    );
    assert!(!message.contains("backtrace"), "{message}");
    assert_eq!(rt.invoke(caps, "ping", "{}").await.unwrap(), "pong");
}

#[tokio::test]
async fn disabled_tool_is_hidden_from_the_model_and_refused() {
    let t = fixture_sandbox(|c| {
        c.tools.insert(
            "ping".into(),
            ToolConfig {
                enabled: false,
                ..ToolConfig::default()
            },
        );
    });
    let rt = t.plugins().await;
    let caps = t.capabilities().await;
    let all = rt.tools();
    assert!(all.iter().any(|t| t.name == "ping" && !t.enabled));
    assert!(!rt.enabled_tools().iter().any(|t| t.name == "ping"));
    let err = rt.invoke(caps, "ping", "{}").await.unwrap_err();
    assert_eq!(err.code(), "disabled");
}

#[tokio::test]
async fn per_tool_config_reaches_the_plugin() {
    let t = fixture_sandbox(|c| {
        let mut tc = ToolConfig::default();
        tc.config
            .insert("greeting".into(), toml::Value::String("hello".into()));
        tc.config.insert("retries".into(), toml::Value::Integer(3));
        c.tools.insert("echo_config".into(), tc);
    });
    let rt = t.plugins().await;
    let caps = t.capabilities().await;
    let out = rt.invoke(caps.clone(), "echo_config", "{}").await.unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        json!({"greeting": "hello", "retries": 3})
    );
}

#[tokio::test]
async fn unknown_tool_is_reported() {
    let t = fixture_sandbox(|_| {});
    let rt = t.plugins().await;
    let caps = t.capabilities().await;
    assert_eq!(
        rt.invoke(caps, "no_such_tool", "{}")
            .await
            .unwrap_err()
            .code(),
        "unknown_tool"
    );
}

#[tokio::test]
async fn bad_files_are_skipped_with_the_reason_and_good_ones_still_load() {
    let mut t = TestSandbox::new();
    let dir = t.plugin_dir(&[
        dist_plugin("read-file"),
        fixture_plugin("wrong-world"),
        fixture_plugin("future-version"),
    ]);
    // Sorts after read-file.wasm, so read-file owns the name on first load.
    std::fs::copy(
        fixture_plugin("duplicate-tool"),
        dir.join("z-duplicate.wasm"),
    )
    .unwrap();
    std::fs::write(dir.join("garbage.wasm"), b"this is not wasm at all").unwrap();
    // A valid core module (magic + version 1), not a component.
    std::fs::write(dir.join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let rt = crogia_host::plugins::PluginRuntime::new(&t.config).unwrap();
    let report = rt.reload().await;
    assert_eq!(report.loaded, vec!["read-file.wasm"]);
    let reason = |file: &str| {
        report
            .skipped
            .iter()
            .find(|s| s.file == file)
            .map(|s| s.reason.clone())
            .unwrap_or_else(|| panic!("{file} not skipped"))
    };
    assert_eq!(reason("garbage.wasm"), "not a WebAssembly file");
    assert!(reason("core.wasm").contains("core WebAssembly module, not a component"));
    assert!(
        reason("wrong_world.wasm").starts_with("wrong world"),
        "{}",
        reason("wrong_world.wasm")
    );
    assert_eq!(
        reason("future_version.wasm"),
        "incompatible plugin: built against crogia:plugin@0.3.0, but this server speaks crogia:plugin@0.1.0 to 0.2.0; rebuild it with a crogia-plugin-sdk of that range, or upgrade the server"
    );
    assert!(
        reason("z-duplicate.wasm")
            .contains("\"read_file\" is already taken by plugin read-file.wasm")
    );
    // The good one works.
    let caps = t.capabilities().await;
    caps.write_file("f.txt", b"ok".to_vec()).await.unwrap();
    assert_eq!(
        rt.invoke(caps, "read_file", r#"{"path":"f.txt"}"#)
            .await
            .unwrap(),
        "ok"
    );
}

#[tokio::test]
async fn compiled_components_are_cached_on_disk() {
    let mut t = TestSandbox::new();
    t.plugin_dir(&[dist_plugin("read-file"), dist_plugin("shell")]);
    let first = crogia_host::plugins::PluginRuntime::new(&t.config)
        .unwrap()
        .reload()
        .await;
    assert_eq!(first.from_cache, 0);
    let second = crogia_host::plugins::PluginRuntime::new(&t.config)
        .unwrap()
        .reload()
        .await;
    assert_eq!(second.from_cache, 2);
    assert_eq!(second.loaded, first.loaded);
}

/// Polls until `check` holds (hot reload is asynchronous).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn hot_reload_adds_replaces_and_removes_tools() {
    let mut t = TestSandbox::new();
    let dir = t.plugin_dir(&[]);
    let rt = crogia_host::plugins::PluginRuntime::new(&t.config).unwrap();
    rt.reload().await;
    rt.watch().unwrap();
    let names = |rt: &crogia_host::plugins::PluginRuntime| {
        rt.tools().into_iter().map(|t| t.name).collect::<Vec<_>>()
    };
    assert!(names(&rt).is_empty());

    // Add: copy in, then rename into place (how operators should install).
    std::fs::copy(dist_plugin("read-file"), dir.join("tool.wasm.part")).unwrap();
    std::fs::rename(dir.join("tool.wasm.part"), dir.join("tool.wasm")).unwrap();
    eventually("read_file added", || names(&rt) == ["read_file"]).await;

    // Replace the same file with another plugin.
    std::fs::copy(dist_plugin("write-file"), dir.join("tool.wasm.part")).unwrap();
    std::fs::rename(dir.join("tool.wasm.part"), dir.join("tool.wasm")).unwrap();
    eventually("read_file replaced by write_file", || {
        names(&rt) == ["write_file"]
    })
    .await;
    let caps = t.capabilities().await;
    rt.invoke(
        caps.clone(),
        "write_file",
        r#"{"path":"x.txt","content":"hi"}"#,
    )
    .await
    .unwrap();
    assert_eq!(caps.read_file("x.txt").await.unwrap(), b"hi");

    // Remove.
    std::fs::remove_file(dir.join("tool.wasm")).unwrap();
    eventually("tool removed", || names(&rt).is_empty()).await;
    assert_eq!(
        rt.invoke(caps, "write_file", "{}")
            .await
            .unwrap_err()
            .code(),
        "unknown_tool"
    );
}

#[tokio::test]
async fn the_standard_tool_set_loads_with_schemas_and_descriptions() {
    let t = TestSandbox::new();
    let rt = t.plugins().await;
    let tools = rt.tools();
    let names: Vec<_> = tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "edit_file",
            "grep",
            "list_files",
            "list_processes",
            "process_logs",
            "read_file",
            "search_files",
            "shell",
            "start_process",
            "stop_process",
            "write_file"
        ]
    );
    for tool in &tools {
        assert!(
            tool.description.len() > 40,
            "{}: description too thin",
            tool.name
        );
        assert_eq!(tool.parameters["type"], "object", "{}", tool.name);
        assert!(tool.parameters.get("$schema").is_none());
        let properties = tool
            .parameters
            .get("properties")
            .and_then(|p| p.as_object());
        for (arg, schema) in properties.into_iter().flatten() {
            assert!(
                schema.get("description").is_some(),
                "{}.{arg} has no description",
                tool.name
            );
        }
    }
    let read = tools.iter().find(|t| t.name == "read_file").unwrap();
    assert_eq!(read.plugin, "read-file.wasm");
    assert_eq!(read.parameters["required"], json!(["path"]));
}

#[tokio::test]
async fn new_plugin_scaffolds_a_crate_that_builds_into_a_working_tool() {
    // Scaffold into a copy of the plugins workspace (and the SDK it points
    // at), so the repository is untouched.
    let t = TestSandbox::new();
    let root = crogia_tests::repo_root();
    let copy = t.tmp.path().join("plugins");
    copy_tree(&root.join("plugins"), &copy);
    copy_tree(&root.join("plugin-sdk"), &t.tmp.path().join("plugin-sdk"));
    let out = std::process::Command::new("bash")
        .arg(copy.join("new-plugin.sh"))
        .arg("count_lines")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let source = std::fs::read_to_string(copy.join("count-lines/src/lib.rs")).unwrap();
    assert!(
        source.lines().count() <= 25,
        "the scaffold is {} lines",
        source.lines().count()
    );
    let manifest = std::fs::read_to_string(copy.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("\"count-lines\""));
    // Build it with the same toolchain script (its own target directory, kept
    // between runs so only the first is slow), load it, call it.
    let target_dir = root.join("plugins/target/scaffold-check");
    let out = std::process::Command::new("bash")
        .arg(copy.join("build.sh"))
        .args(["--package", "count-lines"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut t = t;
    t.plugin_dir(&[target_dir.join("wasm32-wasip2/release/count_lines.wasm")]);
    let runtime = t.plugins().await;
    let caps = t.capabilities().await;
    caps.write_file("poem.txt", b"a\nb\nc\n".to_vec())
        .await
        .unwrap();
    let out = runtime
        .invoke(caps, "count_lines", r#"{"path": "poem.txt"}"#)
        .await
        .unwrap();
    assert_eq!(out, "poem.txt has 3 lines");
    let tool = runtime.tools().into_iter().next().unwrap();
    assert_eq!(tool.contract, crogia_host::plugins::WIT_VERSION);
    assert_eq!(tool.declared_capabilities, Some(vec!["files-read".into()]));
    assert_eq!(tool.subject.as_deref(), Some("path"));
    // Refuses bad names and existing crates.
    let bad = std::process::Command::new("bash")
        .arg(copy.join("new-plugin.sh"))
        .arg("Bad-Name")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let again = std::process::Command::new("bash")
        .arg(copy.join("new-plugin.sh"))
        .arg("count_lines")
        .output()
        .unwrap();
    assert!(!again.status.success());
}

/// Copies a source tree, leaving out build output.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "target" || name == "dist" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}
