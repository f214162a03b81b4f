//! Host capabilities per tool (plugin contract 0.2): a tool may call only
//! the host functions it declares, an operator can narrow that further, and
//! a plugin built for contract 0.1 keeps loading and working beside 0.2 ones.

use crogia_host::config::ToolConfig;
use crogia_tests::{TestSandbox, dist_plugin, fixture_plugin};
use serde_json::json;

fn narrowed(capabilities: &[&str]) -> ToolConfig {
    ToolConfig {
        capabilities: Some(capabilities.iter().map(|c| c.to_string()).collect()),
        ..ToolConfig::default()
    }
}

#[tokio::test]
async fn a_host_call_outside_the_tools_declaration_is_denied_and_does_nothing() {
    let mut t = TestSandbox::new();
    t.plugin_dir(&[fixture_plugin("fixture-tools")]);
    let rt = t.plugins().await;
    let caps = t.capabilities().await;
    let args = json!({"command": "touch /workspace/sneaked"}).to_string();
    let err = rt
        .invoke(caps.clone(), "sneaky_exec", &args)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "failed");
    assert_eq!(
        err.for_model(),
        "Error (denied): tool sneaky_exec may not use the exec capability (it declares only: files-read)"
    );
    // Nothing ran.
    let gone = caps.stat("sneaked").await.unwrap_err();
    assert!(gone.to_string().contains("not found"), "{gone}");
    // What it declares it may use.
    caps.write_file("seen.txt", b"12345".to_vec())
        .await
        .unwrap();
    assert_eq!(
        rt.invoke(caps, "stat_size", &json!({"path": "seen.txt"}).to_string())
            .await
            .unwrap(),
        "5"
    );
    let tool = rt.tools().into_iter().find(|t| t.name == "sneaky_exec");
    let tool = tool.unwrap();
    assert_eq!(tool.declared_capabilities, Some(vec!["files-read".into()]));
    assert_eq!(tool.capabilities, ["files-read"]);
    assert_eq!(tool.subject.as_deref(), Some("command"));
    assert_eq!(tool.contract, "0.2.0");
}

#[tokio::test]
async fn an_operator_narrows_a_tools_capabilities_and_never_widens_them() {
    let mut t = TestSandbox::with_config(|c| {
        c.tools
            .insert("edit_file".into(), narrowed(&["files-read"]));
        c.tools
            .insert("read_file".into(), narrowed(&["files-read", "exec"]));
    });
    t.plugin_dir(&[dist_plugin("edit-file"), dist_plugin("read-file")]);
    let rt = t.plugins().await;
    let caps = t.capabilities().await;
    caps.write_file("app.py", b"x = 1\n".to_vec())
        .await
        .unwrap();
    let edit = json!({"path": "app.py", "old_text": "x = 1", "new_text": "x = 2"});
    let err = rt
        .invoke(caps.clone(), "edit_file", &edit.to_string())
        .await
        .unwrap_err();
    assert_eq!(
        err.for_model(),
        "Error (denied): tool edit_file may not use the files-write capability (the server's configuration allows it only: files-read)"
    );
    assert_eq!(caps.read_file("app.py").await.unwrap(), b"x = 1\n");

    let tools = rt.tools();
    let info = |name: &str| tools.iter().find(|t| t.name == name).unwrap().clone();
    let edit = info("edit_file");
    assert_eq!(
        edit.declared_capabilities,
        Some(vec!["files-read".into(), "files-write".into()])
    );
    assert_eq!(edit.capabilities, ["files-read"]);
    // Naming exec for read_file gives it nothing it did not declare.
    let read = info("read_file");
    assert_eq!(read.capabilities, ["files-read"]);
    let out = rt
        .invoke(caps, "read_file", &json!({"path": "app.py"}).to_string())
        .await
        .unwrap();
    assert!(out.contains("x = 1"), "{out}");
}

#[tokio::test]
async fn a_contract_0_1_plugin_keeps_loading_and_working_beside_0_2_ones() {
    let mut t = TestSandbox::new();
    t.plugin_dir(&[fixture_plugin("contract-v0-1"), dist_plugin("read-file")]);
    let rt = t.plugins().await;
    let report = rt.last_report();
    assert_eq!(report.loaded, ["contract_v0_1.wasm", "read-file.wasm"]);
    let tools = rt.tools();
    let legacy = tools.iter().find(|t| t.name == "legacy_probe").unwrap();
    assert_eq!(legacy.contract, "0.1.0");
    assert_eq!(legacy.declared_capabilities, None);
    assert_eq!(
        legacy.capabilities,
        ["files-read", "files-write", "exec", "processes"]
    );
    assert_eq!(legacy.subject, None);
    let read = tools.iter().find(|t| t.name == "read_file").unwrap();
    assert_eq!(read.contract, "0.2.0");

    let caps = t.capabilities().await;
    let out = rt
        .invoke(
            caps.clone(),
            "legacy_probe",
            &json!({"command": "echo legacy-ok"}).to_string(),
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        "read back: written by 0.1\nexit: Some(0)\nstdout: legacy-ok\nprocesses: 0"
    );
    // The 0.2 tool reads what the 0.1 tool wrote.
    let read = rt
        .invoke(
            caps,
            "read_file",
            &json!({"path": "legacy.txt"}).to_string(),
        )
        .await
        .unwrap();
    assert!(read.contains("written by 0.1"), "{read}");
}

#[tokio::test]
async fn an_operator_narrows_a_contract_0_1_tool_too() {
    let mut t = TestSandbox::with_config(|c| {
        c.tools.insert(
            "legacy_probe".into(),
            narrowed(&["files-read", "files-write", "processes"]),
        );
    });
    t.plugin_dir(&[fixture_plugin("contract-v0-1")]);
    let rt = t.plugins().await;
    let caps = t.capabilities().await;
    let err = rt
        .invoke(
            caps,
            "legacy_probe",
            &json!({"command": "echo never"}).to_string(),
        )
        .await
        .unwrap_err();
    // Contract 0.1 has no `denied`: the refusal arrives as
    // permission-denied, with the same message.
    assert_eq!(
        err.to_string(),
        "ErrorCode::PermissionDenied: tool legacy_probe may not use the exec capability (the server's configuration allows it only: files-read, files-write, processes)"
    );
}

#[tokio::test]
async fn the_standard_tools_declare_what_they_use_and_what_a_person_approves() {
    let t = TestSandbox::new();
    let rt = t.plugins().await;
    let declared: Vec<(String, Vec<String>, Option<String>)> = rt
        .tools()
        .into_iter()
        .map(|t| {
            assert_eq!(t.contract, "0.2.0", "{}", t.name);
            (t.name, t.declared_capabilities.unwrap(), t.subject)
        })
        .collect();
    let s = |v: &str| v.to_string();
    let expect = [
        (
            "edit_file",
            vec![s("files-read"), s("files-write")],
            Some("path"),
        ),
        ("grep", vec![s("files-read")], Some("pattern")),
        ("list_files", vec![s("files-read")], Some("path")),
        ("list_processes", vec![s("processes")], None),
        ("process_logs", vec![s("processes")], None),
        ("read_file", vec![s("files-read")], Some("path")),
        ("search_files", vec![s("files-read")], Some("pattern")),
        ("shell", vec![s("exec")], Some("command")),
        ("start_process", vec![s("processes")], Some("command")),
        ("stop_process", vec![s("processes")], None),
        ("write_file", vec![s("files-write")], Some("path")),
    ]
    .map(|(n, c, sub)| (n.to_string(), c, sub.map(str::to_string)));
    assert_eq!(declared, expect);
}
