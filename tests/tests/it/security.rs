//! Authentication, CORS and sandbox hardening on a real server.

use std::time::Duration;

use crogia_tests::{TestServer, WsRead};
use serde_json::json;

const TOKEN: &str = "test-token-0123456789abcdef";

async fn authed_server(public_health: bool) -> TestServer {
    TestServer::with_config(move |c| {
        c.auth.tokens = vec![TOKEN.into()];
        c.auth.public_health = public_health;
    })
    .await
}

#[tokio::test]
async fn requests_without_a_valid_token_get_401_that_reveals_nothing() {
    let server = authed_server(true).await;
    let client = &server.client;
    let resp = client
        .post(server.url("/api/sessions"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        json!({"detail": "Not authenticated"})
    );
    // Existing or not, a session looks the same without a token.
    let created = client
        .post(server.url("/api/sessions"))
        .bearer_auth(TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let id = created.json::<serde_json::Value>().await.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    for path in [
        format!("/api/sessions/{id}"),
        "/api/sessions/ffffffff".to_string(),
    ] {
        let resp = client.get(server.url(&path)).send().await.unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.json::<serde_json::Value>().await.unwrap(),
            json!({"detail": "Not authenticated"})
        );
        let resp = client
            .get(server.url(&path))
            .bearer_auth("wrong-token-0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.json::<serde_json::Value>().await.unwrap(),
            json!({"detail": "Invalid token"})
        );
    }
    let ok = client
        .get(server.url(&format!("/api/sessions/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // Health and the docs stay public.
    assert_eq!(
        client
            .get(server.url("/api/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(server.url("/openapi.json"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn health_can_be_made_private() {
    let server = authed_server(false).await;
    assert_eq!(
        server
            .client
            .get(server.url("/api/health"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let ok = server
        .client
        .get(server.url("/api/health"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn websocket_takes_the_token_as_a_query_parameter() {
    let server = authed_server(true).await;
    let created = server
        .client
        .post(server.url("/api/sessions"))
        .bearer_auth(TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let id = created.json::<serde_json::Value>().await.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let ws_base = server.base.replacen("http", "ws", 1);
    let refused = tokio_tungstenite::connect_async(format!("{ws_base}/ws/{id}")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected a 401 handshake, got {other:?}"),
    }
    let (stream, _) = tokio_tungstenite::connect_async(format!("{ws_base}/ws/{id}?token={TOKEN}"))
        .await
        .unwrap();
    drop(stream);
    // A session unknown to an authenticated client closes with 4004.
    let mut ws =
        crogia_tests::WsClient::connect(&format!("{ws_base}/ws/00000000?token={TOKEN}")).await;
    assert!(matches!(
        ws.read(Duration::from_secs(10)).await,
        WsRead::Closed(Some(4004), _)
    ));
}

#[tokio::test]
async fn cors_is_off_by_default_and_follows_the_configured_origins() {
    let server = TestServer::start().await;
    let resp = server
        .client
        .get(server.url("/api/health"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());

    let server =
        TestServer::with_config(|c| c.auth.cors_origins = vec!["https://console.example".into()])
            .await;
    let preflight = server
        .client
        .request(reqwest::Method::OPTIONS, server.url("/api/sessions"))
        .header("Origin", "https://console.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://console.example"
    );
    let other = server
        .client
        .get(server.url("/api/health"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn containers_are_hardened_by_default() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let container = server.get(&format!("/api/sessions/{id}")).await.1["container_id"]
        .as_str()
        .unwrap()
        .to_string();
    let docker = server.fixture.sandbox.engine().client().await.unwrap();
    let hc = docker
        .inspect_container(&container, None)
        .await
        .unwrap()
        .host_config
        .unwrap();
    assert_eq!(hc.cap_drop.unwrap(), ["ALL"]);
    assert!(
        !hc.cap_add
            .unwrap()
            .iter()
            .any(|c| c.contains("SYS_ADMIN") || c.contains("NET_RAW"))
    );
    assert!(hc.tmpfs.unwrap().contains_key("/tmp"));
    assert!(
        hc.security_opt
            .unwrap()
            .contains(&"no-new-privileges".to_string())
    );
    // Inside: no raw sockets, no mounting, no privilege gain.
    let out = server
        .post(
            &format!("/api/sessions/{id}/shell"),
            json!({"cmd": "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status"}),
        )
        .await
        .1;
    let status = out["stdout"].as_str().unwrap();
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    let mount = server
        .post(
            &format!("/api/sessions/{id}/shell"),
            json!({"cmd": "mount -t tmpfs x /mnt"}),
        )
        .await
        .1;
    assert_ne!(mount["exit_code"], 0);
}

#[tokio::test]
async fn a_fork_bomb_or_memory_bomb_in_one_session_leaves_the_others_working() {
    let server = TestServer::with_config(|c| {
        c.sandbox.pids_limit = 64;
        c.sandbox.memory = "256m".parse().unwrap();
    })
    .await;
    let bomber = server.session().await;
    let bystander = server.session().await;
    let (status, memory) = server
        .post(
            &format!("/api/sessions/{bomber}/shell"),
            json!({"cmd": "python3 -c 'x = bytearray(1 << 30); print(len(x))'", "timeout": 30}),
        )
        .await;
    assert_eq!(status, 200);
    assert_ne!(
        memory["exit_code"], 0,
        "a 1 GiB allocation succeeded under a 256 MiB limit"
    );
    let (status, fork) = server
        .post(
            &format!("/api/sessions/{bomber}/shell"),
            json!({"cmd": "bomb() { bomb | bomb & }; bomb; sleep 30", "timeout": 3}),
        )
        .await;
    // It either ran into the pids limit and collapsed, or timed out and was
    // killed; either way the request itself was answered.
    assert_eq!(status, 200, "{fork}");
    // The other session and the server are fine.
    let (status, out) = server
        .post(
            &format!("/api/sessions/{bystander}/shell"),
            json!({"cmd": "echo alive"}),
        )
        .await;
    assert_eq!((status, out["stdout"].as_str()), (200, Some("alive\n")));
    assert_eq!(server.get("/api/health").await.1["docker_available"], true);
    // The bomber's session works again once the bomb is gone (it collapses
    // at the pids limit, or the container is restarted when nothing is left
    // to kill it with).
    let mut recovered = false;
    for _ in 0..30 {
        let (status, out) = server
            .post(
                &format!("/api/sessions/{bomber}/shell"),
                json!({"cmd": "echo back", "timeout": 5}),
            )
            .await;
        if status == 200 && out["stdout"] == "back\n" {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(recovered, "the bomber's session did not recover");
}
