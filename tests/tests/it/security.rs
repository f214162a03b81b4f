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

/// Runs `cmd` in a session's container; (exit code, stdout, stderr).
async fn run(server: &TestServer, id: &str, cmd: &str, timeout: u64) -> (i64, String, String) {
    let (status, out) = server
        .post(
            &format!("/api/sessions/{id}/shell"),
            json!({"cmd": cmd, "timeout": timeout}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    (
        out["exit_code"].as_i64().unwrap_or(-1),
        out["stdout"].as_str().unwrap().to_string(),
        out["stderr"].as_str().unwrap().to_string(),
    )
}

/// The number after `key` in a `key N` line of `text` (cgroup event files).
fn counter(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {text:?}"))
}

/// The bit of each capability `sandbox.cap_add` keeps by default
/// (linux/capability.h).
const DEFAULT_CAPS: [(&str, u32); 8] = [
    ("CHOWN", 0),
    ("DAC_OVERRIDE", 1),
    ("FOWNER", 3),
    ("FSETID", 4),
    ("KILL", 5),
    ("SETGID", 6),
    ("SETUID", 7),
    ("NET_BIND_SERVICE", 10),
];

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
    let kept: Vec<String> = DEFAULT_CAPS.iter().map(|(c, _)| c.to_string()).collect();
    assert_eq!(hc.cap_add.unwrap(), kept);
    assert!(
        hc.security_opt
            .unwrap()
            .contains(&"no-new-privileges".to_string())
    );
    assert_eq!(hc.network_mode.as_deref(), Some("none"));

    // Inside: exactly those capabilities, effective and bounding, and no
    // way to gain more.
    let (_, status, _) = run(
        &server,
        &id,
        "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status",
        10,
    )
    .await;
    let mask: u64 = DEFAULT_CAPS.iter().map(|(_, bit)| 1u64 << bit).sum();
    let expected = format!("CapEff:\t{mask:016x}\nCapBnd:\t{mask:016x}\nNoNewPrivs:\t1\n");
    assert_eq!(status, expected);
    // No raw sockets (NET_RAW is dropped)...
    let (code, _, stderr) = run(
        &server,
        &id,
        "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)'",
        10,
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("PermissionError: [Errno 1] Operation not permitted"),
        "{stderr}"
    );
    // ...no mounting (SYS_ADMIN is dropped)...
    let (code, _, stderr) = run(&server, &id, "mount -t tmpfs x /mnt", 10).await;
    assert_eq!(code, 32, "{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");
    // ...and no network but loopback.
    let (_, interfaces, _) = run(&server, &id, "ls /sys/class/net", 10).await;
    assert_eq!(interfaces, "lo\n");
    // /tmp is a tmpfs of the configured size (256m), nosuid and noexec.
    let (_, mounts, _) = run(&server, &id, "grep ' /tmp ' /proc/mounts", 10).await;
    assert!(
        mounts.starts_with("tmpfs /tmp tmpfs ") && mounts.contains("size=262144k"),
        "{mounts}"
    );
    for flag in ["nosuid", "nodev"] {
        assert!(mounts.contains(flag), "{mounts}");
    }
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
    // Memory: the allocation is killed by the kernel at the 256 MiB limit.
    let (code, stdout, _) = run(
        &server,
        &bomber,
        "python3 -c 'x = bytearray(1 << 30); print(len(x))'",
        30,
    )
    .await;
    assert_eq!(code, 137, "a 1 GiB allocation was not killed: {stdout}");
    let (_, oom, _) = run(
        &server,
        &bomber,
        "cat /sys/fs/cgroup/memory.events 2>/dev/null || cat /sys/fs/cgroup/memory/memory.oom_control",
        10,
    )
    .await;
    assert!(counter(&oom, "oom_kill") >= 1, "{oom}");

    // Processes: the bomb runs into the pids limit, and the shell says so
    // for every fork refused (then it collapses, or is killed at its
    // timeout).
    let (status, fork) = server
        .post(
            &format!("/api/sessions/{bomber}/shell"),
            json!({"cmd": "bomb() { bomb | bomb & }; bomb; sleep 30", "timeout": 3}),
        )
        .await;
    assert_eq!(status, 200, "{}", fork["detail"]);
    let stderr = fork["stderr"].as_str().unwrap();
    assert!(
        stderr.contains("Cannot fork"),
        "no fork was refused: {:?}",
        &stderr[..stderr.len().min(500)]
    );
    // The other session and the server are fine meanwhile.
    let (code, out, _) = run(&server, &bystander, "echo alive", 10).await;
    assert_eq!((code, out.as_str()), (0, "alive\n"));
    assert_eq!(server.get("/api/health").await.1["docker_available"], true);
    // The bomber's session works again once the bomb is gone (killed with
    // its command, or by a restart of the container when nothing is left to
    // kill it with), under the same limit.
    let mut recovered = false;
    for _ in 0..60 {
        let (status, out) = server
            .post(
                &format!("/api/sessions/{bomber}/shell"),
                json!({"cmd": "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max", "timeout": 5}),
            )
            .await;
        if status == 200 && out["exit_code"] == 0 {
            assert_eq!(out["stdout"], "64\n", "{out}");
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(recovered, "the bomber's session did not recover");
}

// --- Holes found by the security review (issue 14), one test each ---

#[tokio::test]
async fn auth_tokens_from_the_environment_protect_every_route_of_the_real_binary() {
    let t = crogia_tests::TestSandbox::new();
    let mut config = t.config.clone();
    config.server.data_dir = t.tmp.path().join("data");
    let server = crogia_tests::process::ServerProcess::spawn_with_env(
        &config,
        &[(
            "CROGIA_AUTH_TOKENS",
            &format!("other-token-0123456789,{TOKEN}"),
        )],
    )
    .await;
    let client = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut req = client.get(format!("{}{path}", server.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get("/api/sessions", None).await, 401);
    assert_eq!(
        get("/api/sessions", Some("wrong-token-0123456789")).await,
        401
    );
    assert_eq!(get("/api/sessions", Some(TOKEN)).await, 200);
    assert_eq!(get("/metrics", None).await, 401);
    assert_eq!(get("/metrics", Some("any-token-at-all-0123")).await, 401);
    assert_eq!(get("/metrics", Some(TOKEN)).await, 200);
    // The query token counts on the WebSocket only.
    assert_eq!(
        get(&format!("/api/sessions?token={TOKEN}"), None).await,
        401
    );
    assert_eq!(get(&format!("/metrics?token={TOKEN}"), None).await, 401);
}

#[tokio::test]
async fn metrics_are_behind_the_token() {
    let server = authed_server(true).await;
    let status = |token: Option<&str>| {
        let mut req = server.client.get(server.url("/metrics"));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        async move { req.send().await.unwrap() }
    };
    assert_eq!(status(None).await.status(), 401);
    let ok = status(Some(TOKEN)).await;
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains("crogia_sessions"));
}

#[tokio::test]
async fn a_query_token_is_accepted_only_on_the_websocket() {
    let server = authed_server(true).await;
    for path in ["/api/sessions", "/api/tools", "/metrics"] {
        let resp = server
            .client
            .get(server.url(&format!("{path}?token={TOKEN}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path}");
    }
}

/// A request to the test server with a chosen `Host` and `Origin`.
async fn request_as(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    host: Option<&str>,
    origin: Option<&str>,
    body: Option<(&str, String)>,
) -> (u16, serde_json::Value) {
    let mut req = server.client.request(method, server.url(path));
    if let Some(host) = host {
        req = req.header("Host", host);
    }
    if let Some(origin) = origin {
        req = req.header("Origin", origin);
    }
    if let Some((content_type, body)) = body {
        req = req.header("Content-Type", content_type).body(body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

#[tokio::test]
async fn without_tokens_foreign_host_names_are_refused_against_dns_rebinding() {
    let server = TestServer::start().await;
    let port = server.base.rsplit(':').next().unwrap().to_string();
    let list_as = |host: String| {
        let server = &server;
        async move {
            let (status, body) = request_as(
                server,
                reqwest::Method::GET,
                "/api/sessions",
                Some(&host),
                None,
                None,
            )
            .await;
            (host, status, body)
        }
    };
    for host in ["evil.example", "evil.example:", "127.0.0.1.nip.example:"] {
        let host = if host.ends_with(':') {
            format!("{host}{port}")
        } else {
            host.to_string()
        };
        let (host, status, body) = list_as(host).await;
        assert_eq!(status, 403, "{host}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains("is not allowed"),
            "{body}"
        );
    }
    for name in ["localhost", "127.0.0.1", "app.localhost", "[::1]"] {
        let (host, status, _) = list_as(format!("{name}:{port}")).await;
        assert_eq!(status, 200, "{host}");
    }
    // Names the operator adds are served.
    let server =
        TestServer::with_config(|c| c.server.allowed_hosts = vec!["devbox.lan".into()]).await;
    let (status, _) = request_as(
        &server,
        reqwest::Method::GET,
        "/api/sessions",
        Some("devbox.lan:8000"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    // With tokens the Host does not matter (a page cannot present a token).
    let server = authed_server(true).await;
    let resp = server
        .client
        .get(server.url("/api/sessions"))
        .header("Host", "evil.example")
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn without_tokens_cross_origin_writes_are_refused_against_csrf() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let evil = Some("http://evil.example");
    // The attack as found: a cross-origin `text/plain` form post, which a
    // browser sends without asking the server first.
    let (status, body) = request_as(
        &server,
        reqwest::Method::POST,
        "/api/sessions",
        None,
        evil,
        Some(("text/plain", r#"{"task": "pwn"}"#.into())),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = request_as(
        &server,
        reqwest::Method::POST,
        &format!("/api/sessions/{id}/files/content"),
        None,
        evil,
        Some((
            "application/json",
            json!({"path": "pwned", "content": "x"}).to_string(),
        )),
    )
    .await;
    assert_eq!(status, 403);
    // Without an Origin, a body that is not declared JSON is refused too.
    let (status, body) = request_as(
        &server,
        reqwest::Method::POST,
        &format!("/api/sessions/{id}/files/content"),
        None,
        None,
        Some((
            "text/plain",
            json!({"path": "pwned", "content": "x"}).to_string(),
        )),
    )
    .await;
    assert_eq!(status, 415, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("Content-Type must be application/json"),
        "{body}"
    );
    // Nothing happened: one session, no file.
    assert_eq!(
        server
            .get("/api/sessions")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        server
            .get(&format!("/api/sessions/{id}/files/content?path=pwned"))
            .await
            .0,
        404
    );
    // Reads are not refused (a page cannot read the answers anyway), and
    // the server's own pages may write.
    let (status, _) = request_as(
        &server,
        reqwest::Method::GET,
        "/api/sessions",
        None,
        evil,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let own = server.base.clone();
    let (status, _) = request_as(
        &server,
        reqwest::Method::POST,
        &format!("/api/sessions/{id}/files/content"),
        None,
        Some(&own),
        Some((
            "application/json",
            json!({"path": "mine", "content": "x"}).to_string(),
        )),
    )
    .await;
    assert_eq!(status, 200);
    // A cross-site page cannot follow a session's events either.
    let ws_url = format!("{}/ws/{id}", server.base.replacen("http", "ws", 1));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            ws_url.as_str(),
        )
        .unwrap();
    request
        .headers_mut()
        .insert("Origin", "http://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected a 403 handshake, got {other:?}"),
    }
}

#[tokio::test]
async fn configured_cors_origins_may_write_without_tokens() {
    let server =
        TestServer::with_config(|c| c.auth.cors_origins = vec!["https://console.example".into()])
            .await;
    let (status, _) = request_as(
        &server,
        reqwest::Method::POST,
        "/api/sessions",
        None,
        Some("https://console.example"),
        Some(("application/json", "{}".into())),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = request_as(
        &server,
        reqwest::Method::POST,
        "/api/sessions",
        None,
        Some("https://other.example"),
        Some(("application/json", "{}".into())),
    )
    .await;
    assert_eq!(status, 403);
}

/// This process's effective uid, from /proc.
fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn a_setuid_file_made_in_a_sandbox_gives_no_user_of_the_host_root() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let mut fixture = crogia_tests::TestSandbox::new();
    // The data dir's parent is open to everyone, like most places an
    // operator would put it.
    std::fs::set_permissions(fixture.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = fixture.tmp.path().join("data");
    fixture.config.server.data_dir = data.clone();
    let server = TestServer::start_with(fixture).await;
    let id = server.session().await;
    let (_, out) = server
        .post(
            &format!("/api/sessions/{id}/shell"),
            json!({"cmd": "cp /bin/sh /workspace/.x && chmod 4755 /workspace/.x && stat -c %a .x"}),
        )
        .await;
    assert_eq!(out["stdout"], "4755\n", "{out}");
    let workdir = server.get(&format!("/api/sessions/{id}")).await.1["workdir"]
        .as_str()
        .unwrap()
        .to_string();
    let planted = std::path::Path::new(&workdir).join(".x");
    assert!(planted.starts_with(&data), "{}", planted.display());
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("crogia.db")), 0o600);

    // Another user of the host (nobody, when the tests run as root) tries it.
    let mut attempt = std::process::Command::new(&planted);
    attempt.args(["-p", "-c", "id -u"]);
    if effective_uid() == 0 {
        // std drops root's supplementary groups along with the uid.
        attempt.uid(65534).gid(65534);
    }
    match attempt.output() {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}"),
        Ok(out) => panic!(
            "another user ran the sandbox's setuid file: exit {:?}, euid {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim()
        ),
    }
}

#[tokio::test]
async fn an_existing_open_data_dir_and_database_are_made_private_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let server = TestServer::start().await;
    let fixture = server.stop().await;
    let data = fixture.config.server.data_dir.clone();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        data.join("crogia.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let server = TestServer::start_with(fixture).await;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("crogia.db")), 0o600);
    drop(server);
}

#[tokio::test]
async fn file_names_up_to_the_file_system_limit_work_and_longer_ones_are_refused_by_name() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let base = format!("/api/sessions/{id}/files/content");
    // 240 bytes: the review's case (the temporary name once pushed it over).
    for len in [240, 255] {
        let name = "n".repeat(len);
        let (status, body) = server
            .post(&base, json!({"path": format!("d/{name}"), "content": "ok"}))
            .await;
        assert_eq!(status, 200, "{len}: {body}");
        let (status, body) = server.get(&format!("{base}?path=d/{name}")).await;
        assert_eq!((status, &body["content"]), (200, &json!("ok")));
    }
    // Over the limit in characters: refused by the document's own rule.
    let (status, body) = server
        .post(&base, json!({"path": "n".repeat(256), "content": "x"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("at most 255"),
        "{body}"
    );
    // Within 255 characters but over 255 bytes: refused naming the limit.
    let (status, body) = server
        .post(&base, json!({"path": "é".repeat(200), "content": "x"}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("255 bytes"),
        "{body}"
    );
}

#[tokio::test]
async fn a_command_over_the_argument_limit_is_refused_naming_the_limit() {
    let server = TestServer::start().await;
    let id = server.session().await;
    // 200 KB: once a 200 with exit code 1 and no output (E2BIG).
    let huge = format!("echo {}", "x".repeat(200_000));
    for path in ["shell", "processes"] {
        let (status, body) = server
            .post(&format!("/api/sessions/{id}/{path}"), json!({"cmd": huge}))
            .await;
        assert_eq!(status, 422, "{path}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains("at most 32000"),
            "{body}"
        );
    }
    // The longest accepted command, in wide characters, runs.
    let longest = format!("printf %s '{}' | wc -c", "é".repeat(31_980));
    assert!(longest.chars().count() <= 32_000);
    let (status, out) = server
        .post(
            &format!("/api/sessions/{id}/shell"),
            json!({"cmd": longest}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["exit_code"], 0, "{out}");
    assert_eq!(out["stdout"], "63960\n", "{out}");
}

fn ws_url(server: &TestServer, id: &str) -> String {
    format!("{}/ws/{id}", server.base.replacen("http", "ws", 1))
}

/// Whether the server has ended this connection (a close frame, an error,
/// or the end of the stream) within 10 s.
async fn cut_off<S>(ws: &mut S) -> bool
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return false,
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

#[tokio::test]
async fn websocket_clients_sending_large_frames_or_messages_are_cut_off() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let server = TestServer::start().await;
    let id = server.session().await;
    let mut bystander = server.ws(&id, None).await;
    let events = server.state.sessions.get(&id).unwrap().events.clone();

    // One 8 MiB frame: refused at its header, before it is read.
    let (mut big_frame, _) = tokio_tungstenite::connect_async(ws_url(&server, &id))
        .await
        .unwrap();
    let _ = big_frame
        .send(Message::Binary(vec![b'x'; 8 << 20].into()))
        .await;
    assert!(cut_off(&mut big_frame).await, "a huge frame was accepted");

    // A message in many small fragments: refused once it passes the limit.
    let (mut fragments, _) = tokio_tungstenite::connect_async(ws_url(&server, &id))
        .await
        .unwrap();
    let piece = vec![b'y'; 3000];
    let _ = fragments
        .send(Message::Frame(Frame::message(
            piece.clone(),
            OpCode::Data(Data::Text),
            false,
        )))
        .await;
    for _ in 0..2000 {
        if fragments
            .send(Message::Frame(Frame::message(
                piece.clone(),
                OpCode::Data(Data::Continue),
                false,
            )))
            .await
            .is_err()
        {
            break;
        }
    }
    assert!(cut_off(&mut fragments).await, "a huge message was accepted");

    // The session's other client goes on as if nothing happened.
    let mut settled = false;
    for _ in 0..100 {
        if events.subscribers() == 1 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(settled, "{} subscribers left", events.subscribers());
    server
        .post(&format!("/api/sessions/{id}/tasks"), json!({"task": "x"}))
        .await;
    let seen = bystander.until_completed(1).await;
    assert_eq!(seen[0]["type"], "task_started");
}

/// A WebSocket handshake that the server refuses: its status and detail.
async fn refused_handshake(url: &str) -> (u16, String) {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (resp.status().as_u16(), body)
        }
        Ok(_) => panic!("the handshake to {url} was accepted"),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn websocket_connections_are_limited_in_all_and_per_session() {
    let server = TestServer::with_config(|c| {
        c.server.ws_max_clients = 3;
        c.server.ws_max_clients_per_session = 2;
    })
    .await;
    let a = server.session().await;
    let b = server.session().await;
    let a1 = server.ws(&a, None).await;
    let _a2 = server.ws(&a, None).await;
    let (status, detail) = refused_handshake(&ws_url(&server, &a)).await;
    assert_eq!(status, 429);
    assert!(detail.contains("ws_max_clients_per_session"), "{detail}");
    let _b1 = server.ws(&b, None).await;
    let (status, detail) = refused_handshake(&ws_url(&server, &b)).await;
    assert_eq!(status, 429);
    assert!(detail.contains("server.ws_max_clients"), "{detail}");
    // A client that leaves gives its place back.
    drop(a1);
    let mut back = false;
    for _ in 0..100 {
        if tokio_tungstenite::connect_async(ws_url(&server, &b))
            .await
            .is_ok()
        {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the place of a client that left was not given back");
}

#[tokio::test]
async fn a_websocket_client_that_never_answers_pings_is_dropped() {
    let server = TestServer::with_config(|c| {
        c.server.ws_ping_secs = 1;
        c.server.ws_pong_timeout_secs = 1;
    })
    .await;
    let id = server.session().await;
    let events = server.state.sessions.get(&id).unwrap().events.clone();
    // Connected, then never read from again: it never sees a ping, so it
    // never answers one.
    let silent = server.ws(&id, None).await;
    assert_eq!(events.subscribers(), 1);
    let mut dropped = false;
    for _ in 0..150 {
        if events.subscribers() == 0 {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dropped, "a client that never answered was kept");
    // A client that reads (its library answers pings) is kept: four
    // seconds of pings and pongs, and no event or close.
    let mut live = server.ws(&id, None).await;
    let read =
        tokio::time::timeout(Duration::from_secs(4), live.read(Duration::from_secs(60))).await;
    assert!(read.is_err(), "{read:?}");
    assert_eq!(events.subscribers(), 1);
    drop(silent);
}

#[tokio::test]
async fn the_hardened_configuration_works_end_to_end() {
    let server = TestServer::with_config(|c| {
        c.sandbox.user = "1000:1000".into();
        c.sandbox.read_only_root = true;
    })
    .await;
    let id = server.session().await;
    let files = format!("/api/sessions/{id}/files");
    // Commands run as the configured user.
    let (code, ids, _) = run(&server, &id, "id -u; id -g", 10).await;
    assert_eq!((code, ids.as_str()), (0, "1000\n1000\n"));
    // Files written through the API belong to that user, who can change
    // them; what the user writes can be read through the API.
    let (status, _) = server
        .post(
            &format!("{files}/content"),
            json!({"path": "src/app.py", "content": "print(1)\n"}),
        )
        .await;
    assert_eq!(status, 200);
    let (code, owners, stderr) = run(
        &server,
        &id,
        "echo 'print(2)' >> src/app.py && stat -c '%u:%g %n' /workspace src src/app.py",
        10,
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        owners,
        "1000:1000 /workspace\n1000:1000 src\n1000:1000 src/app.py\n"
    );
    assert_eq!(
        server
            .get(&format!("{files}/content?path=src/app.py"))
            .await
            .1["content"],
        "print(1)\nprint(2)\n"
    );
    // Background processes start, log, list and stop.
    let (status, started) = server
        .post(
            &format!("/api/sessions/{id}/processes"),
            json!({"cmd": "while true; do echo tick; sleep 0.2; done"}),
        )
        .await;
    assert_eq!(status, 200, "{started}");
    let pid = started["pid"].as_u64().unwrap();
    let mut logged = false;
    for _ in 0..50 {
        let (_, logs) = server
            .get(&format!("/api/sessions/{id}/processes/{pid}/logs"))
            .await;
        if logs["logs"].as_str().unwrap_or_default().contains("tick") {
            logged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logged, "the process never logged");
    let listed = server.get(&format!("/api/sessions/{id}/processes")).await.1;
    assert_eq!(listed[0]["status"], "running");
    let (status, _) = server
        .post(
            &format!("/api/sessions/{id}/processes/{pid}/stop"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        server.get(&format!("/api/sessions/{id}/processes")).await.1[0]["status"],
        "exited"
    );
    // The image's file system cannot be written, even where the user could
    // (/var/tmp is open to everyone); /tmp and the workspace can.
    let (code, _, stderr) = run(&server, &id, "touch /var/tmp/probe", 10).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    let (code, out, stderr) = run(&server, &id, "touch /tmp/probe && echo ok", 10).await;
    assert_eq!((code, out.as_str()), (0, "ok\n"), "{stderr}");
}
