//! Plugins through the real wasmtime runtime against a real container.

use crogia_tests::TestSandbox;
use serde_json::json;

#[tokio::test]
async fn read_file_plugin_reads_from_the_session_workspace() {
    let t = TestSandbox::new();
    let runtime = t.plugins().await;
    let caps = t.capabilities().await;
    // Written from inside the container, read back by the plugin through the
    // host's files capability.
    caps.exec("printf 'one\\ntwo\\nthree\\n' > notes.txt", None)
        .await
        .unwrap();

    let args = json!({ "path": "notes.txt" }).to_string();
    let out = runtime
        .invoke(caps.clone(), "read_file", &args)
        .await
        .unwrap();
    assert_eq!(out, "one\ntwo\nthree\n");

    let args = json!({ "path": "notes.txt", "start_line": 2, "end_line": 2 }).to_string();
    assert_eq!(
        runtime
            .invoke(caps.clone(), "read_file", &args)
            .await
            .unwrap(),
        "two\n"
    );
}

#[tokio::test]
async fn read_file_reports_missing_files_and_bad_arguments_as_tool_errors() {
    let t = TestSandbox::new();
    let runtime = t.plugins().await;
    let caps = t.capabilities().await;
    let err = runtime
        .invoke(
            caps.clone(),
            "read_file",
            &json!({ "path": "nope.txt" }).to_string(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "failed");
    assert!(err.to_string().contains("nope.txt not found"), "{err}");

    let err = runtime
        .invoke(
            caps.clone(),
            "read_file",
            &json!({ "pth": "x" }).to_string(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_arguments");
    assert!(err.to_string().contains("path"), "{err}");

    let err = runtime
        .invoke(
            caps,
            "read_file",
            &json!({ "path": "../../etc/passwd" }).to_string(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "failed");
    assert!(
        err.to_string().contains("outside the session workspace"),
        "{err}"
    );
}

#[tokio::test]
async fn loaded_tools_carry_description_and_schema() {
    let t = TestSandbox::new();
    let runtime = t.plugins().await;
    let tools = runtime.tools();
    let read = tools
        .iter()
        .find(|t| t.name == "read_file")
        .expect("read_file loaded");
    assert_eq!(read.plugin, "read-file.wasm");
    assert!(read.enabled);
    assert!(
        read.description
            .starts_with("Read a text file from the workspace."),
        "{}",
        read.description
    );
    assert_eq!(read.parameters["type"], "object");
    assert_eq!(read.parameters["required"], json!(["path"]));
    assert!(
        read.parameters["properties"]["path"]["description"]
            .as_str()
            .unwrap()
            .contains("relative to the workspace")
    );
}
