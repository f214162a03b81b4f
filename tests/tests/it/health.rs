//! GET /api/health on a real server.

use crogia_tests::TestServer;

#[tokio::test]
async fn health_reports_docker_available_with_contract_fields() {
    let server = TestServer::start().await;
    let resp = reqwest::get(server.url("/api/health")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["docker_available"], true);
    assert_eq!(body["active_sessions"], 0);
    let ts = body["timestamp"].as_str().unwrap();
    assert!(chrono_like(ts), "timestamp {ts}");
    let mut keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    // The contract's fields, plus the additive `engines`.
    assert_eq!(
        keys,
        [
            "active_sessions",
            "docker_available",
            "engines",
            "status",
            "timestamp"
        ]
    );
    assert_eq!(
        body["engines"],
        serde_json::json!([{"name": "default", "available": true, "sessions": 0, "max_sessions": 0}])
    );
}

/// `2024-01-15T10:30:00.000Z`
fn chrono_like(ts: &str) -> bool {
    ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.'
}

#[tokio::test]
async fn tools_endpoint_lists_the_standard_tools_with_schemas() {
    let server = TestServer::start().await;
    let tools: serde_json::Value = reqwest::get(server.url("/api/tools"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tools = tools.as_array().unwrap();
    assert_eq!(tools.len(), 11);
    let shell = tools.iter().find(|t| t["name"] == "shell").unwrap();
    assert_eq!(shell["plugin"], "shell.wasm");
    assert_eq!(shell["enabled"], true);
    assert_eq!(
        shell["parameters"]["required"],
        serde_json::json!(["command"])
    );
    // Doc comments arrive as prose, without the source's line wraps.
    let description = shell["description"].as_str().unwrap();
    assert!(description.starts_with(
        "Run a shell command in the workspace and return its exit code, stdout and stderr."
    ));
    assert!(!description.contains('\n'), "{description}");

    let plugins: serde_json::Value = reqwest::get(server.url("/api/plugins"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(plugins["loaded"].as_array().unwrap().len(), 8);
    assert_eq!(plugins["skipped"], serde_json::json!([]));
}
