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
    assert_eq!(
        keys,
        ["active_sessions", "docker_available", "status", "timestamp"]
    );
}

/// `2024-01-15T10:30:00.000Z`
fn chrono_like(ts: &str) -> bool {
    ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.'
}
