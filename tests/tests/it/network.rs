//! The sandbox's network: programs reach out only through the agent's
//! proxy, the server decides every connection by the session's policy and
//! dials it itself, and every attempt is an event. Hermetic: the remote
//! hosts are servers on this machine's loopback, which the tests' policies
//! name explicitly; no test depends on a public registry.

use std::time::Duration;

use crogia_tests::TestServer;
use crogia_tests::upstream::{self, Upstream};
use serde_json::{Value, json};

/// Runs `cmd` in the session; (exit code, stdout, stderr).
async fn sh(server: &TestServer, id: &str, cmd: &str) -> (i64, String, String) {
    let (status, out) = server
        .post(&format!("/api/sessions/{id}/shell"), json!({"cmd": cmd}))
        .await;
    assert_eq!(status, 200, "{out}");
    (
        out["exit_code"].as_i64().unwrap_or(-1),
        out["stdout"].as_str().unwrap_or_default().to_string(),
        out["stderr"].as_str().unwrap_or_default().to_string(),
    )
}

/// `curl` through the proxy even for loopback addresses (`--noproxy ''`:
/// the container's own loopback is direct by default). Prints the body,
/// then the status on a line of its own.
fn curl(url: &str) -> String {
    format!("curl -sS --noproxy '' -w '\\n%{{http_code}}' {url}")
}

/// The body and the status a [`curl`] printed.
fn answer(stdout: &str) -> (&str, u16) {
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", stdout));
    (body, status.trim().parse().unwrap_or(0))
}

/// `network_request` events of `id` (replayed from the start) until `done`
/// holds for them, or panics after 20 s.
async fn network_events(
    server: &TestServer,
    id: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut ws = server.ws(id, Some(0)).await;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done(&seen) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.read(left).await {
            crogia_tests::WsRead::Event(e) if e["type"] == "network_request" => seen.push(e),
            crogia_tests::WsRead::Event(_) => {}
            other => panic!("network events so far {seen:?}; then {other:?}"),
        }
    }
    seen
}

/// Waits until the session holds `n` connections open (10 s at most).
async fn open_connections_reach(server: &TestServer, id: &str, n: u64) {
    let mut open = None;
    for _ in 0..100 {
        let (_, info) = server.get(&format!("/api/sessions/{id}/network")).await;
        open = info["open_connections"].as_u64();
        if open == Some(n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the session holds {open:?} connections open, not {n}");
}

fn is_for(event: &Value, host: &str, port: u16, decision: &str) -> bool {
    event["host"] == host && event["port"] == port && event["decision"] == decision
}

#[tokio::test]
async fn pip_installs_from_an_allowed_index_through_the_proxy_and_the_container_has_only_lo() {
    let index = Upstream::start().await;
    let allowed = format!("127.0.0.1:{}", index.port);
    let server = TestServer::with_config(|c| c.network.allow = vec![allowed.clone()]).await;
    let id = server.session().await;

    let (code, interfaces, _) = sh(&server, &id, "ls /sys/class/net").await;
    assert_eq!(code, 0);
    assert_eq!(interfaces.split_whitespace().collect::<Vec<_>>(), ["lo"]);

    let install = format!(
        "NO_PROXY= no_proxy= python3 -m pip install --no-cache-dir --disable-pip-version-check \
         --target /workspace/lib --index-url http://{allowed}/simple/ --trusted-host 127.0.0.1 {} \
         && PYTHONPATH=/workspace/lib python3 -c 'import {}; print({}.GREETING)'",
        upstream::PACKAGE,
        upstream::MODULE,
        upstream::MODULE
    );
    let (code, stdout, stderr) = sh(&server, &id, &install).await;
    assert_eq!(code, 0, "pip failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(upstream::GREETING), "{stdout}");
    assert!(index.hits() >= 2, "the index and the wheel were fetched");

    let events = network_events(&server, &id, |seen| {
        seen.iter()
            .filter(|e| is_for(e, "127.0.0.1", index.port, "allowed"))
            .map(|e| e["connections"].as_u64().unwrap())
            .sum::<u64>()
            >= 1
    })
    .await;
    let allowed_event = events
        .iter()
        .find(|e| is_for(e, "127.0.0.1", index.port, "allowed"))
        .unwrap();
    assert!(
        allowed_event["bytes_down"].as_u64().unwrap() > 0,
        "{allowed_event}"
    );
    assert!(
        allowed_event["bytes_up"].as_u64().unwrap() > 0,
        "{allowed_event}"
    );
    assert!(
        allowed_event["reason"].as_str().unwrap().contains(&allowed),
        "{allowed_event}"
    );
}

#[tokio::test]
async fn a_host_off_the_list_is_refused_with_a_readable_403_an_event_and_a_metric() {
    let server = TestServer::start().await;
    let id = server.session().await;
    let (_, stdout, _) = sh(&server, &id, &curl("http://denied.example.com/")).await;
    let (body, status) = answer(&stdout);
    assert_eq!(status, 403, "{stdout}");
    assert!(
        body.contains("Crogia refused the connection to denied.example.com:80"),
        "{body}"
    );
    assert!(
        body.contains(&format!("PUT /api/sessions/{id}/network")),
        "{body}"
    );
    // HTTPS: the tunnel is refused, and curl says so.
    let (code, _, stderr) = sh(&server, &id, "curl -sS https://denied.example.com/").await;
    assert_ne!(code, 0);
    assert!(stderr.contains("403"), "{stderr}");

    let events = network_events(&server, &id, |seen| {
        [80, 443].iter().all(|&port| {
            seen.iter()
                .any(|e| is_for(e, "denied.example.com", port, "denied"))
        })
    })
    .await;
    let denied = events.iter().find(|e| e["port"] == 80).unwrap();
    assert!(
        denied["reason"]
            .as_str()
            .unwrap()
            .contains("not on the session's allow list"),
        "{denied}"
    );
    assert_eq!(denied["bytes_up"], 0);
    let metrics = server.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("crogia_network_connections_total{decision=\"denied\"}")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_name_that_resolves_to_a_private_address_is_refused() {
    let upstream = Upstream::start().await;
    // The name is allowed; the address it resolves to is not named.
    let server = TestServer::with_config(|c| c.network.allow = vec!["localhost".into()]).await;
    let id = server.session().await;
    let url = format!("http://localhost:{}/", upstream.port);
    let (_, stdout, _) = sh(&server, &id, &curl(&url)).await;
    let (body, status) = answer(&stdout);
    assert_eq!(status, 403, "{stdout}");
    assert!(body.contains("localhost resolves to"), "{body}");
    assert!(body.contains("loopback, private or link-local"), "{body}");
    assert_eq!(upstream.hits(), 0, "the upstream was reached");
    // The address asked for directly is refused too.
    let url = format!("http://127.0.0.1:{}/", upstream.port);
    let (_, stdout, _) = sh(&server, &id, &curl(&url)).await;
    assert_eq!(answer(&stdout).1, 403, "{stdout}");
    assert_eq!(upstream.hits(), 0, "the upstream was reached");
}

#[tokio::test]
async fn a_policy_change_applies_to_new_connections_and_survives_a_restart() {
    let upstream = Upstream::start().await;
    let allowed = format!("127.0.0.1:{}", upstream.port);
    let server = TestServer::with_config(|c| c.network.allow = vec![allowed.clone()]).await;
    // A session may not widen the operator's policy.
    let (status, body) = server
        .post(
            "/api/sessions",
            json!({"network": {"allow": ["example.com"]}}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("example.com"),
        "{body}"
    );
    let (status, _) = server
        .post(
            "/api/sessions",
            json!({"network": {"allow": ["not a host"]}}),
        )
        .await;
    assert_eq!(status, 422);

    let id = server.session().await;
    let url = format!("http://{allowed}/");
    let (_, stdout, _) = sh(&server, &id, &curl(&url)).await;
    assert_eq!(answer(&stdout), (upstream::HELLO, 200));

    let put = |body: Value| {
        let request = server
            .client
            .put(server.url(&format!("/api/sessions/{id}/network")))
            .json(&body);
        async move {
            let resp = request.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let (status, info) = put(json!({"deny": ["127.0.0.0/8"]})).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["deny"], json!(["127.0.0.0/8"]));
    assert_eq!(info["operator_allow"], json!([allowed]));
    let (_, stdout, _) = sh(&server, &id, &curl(&url)).await;
    let (body, status) = answer(&stdout);
    assert_eq!(status, 403, "{stdout}");
    assert!(body.contains("deny pattern 127.0.0.0/8"), "{body}");
    let (status, _) = put(json!({"allow": ["pypi.org"]})).await;
    assert_eq!(status, 403, "widening through PUT");
    let (status, _) = put(json!({"allow": ["x"], "surprise": 1})).await;
    assert_eq!(status, 422, "unknown fields are refused");

    let fixture = server.stop().await;
    let server = TestServer::start_with(fixture).await;
    let (status, info) = server.get(&format!("/api/sessions/{id}/network")).await;
    assert_eq!(status, 200);
    assert_eq!(info["deny"], json!(["127.0.0.0/8"]), "{info}");
    let (_, stdout, _) = sh(&server, &id, &curl(&url)).await;
    assert_eq!(
        answer(&stdout).1,
        403,
        "the restored policy applies: {stdout}"
    );
}

#[tokio::test]
async fn mode_none_refuses_everything() {
    let upstream = Upstream::start().await;
    let server = TestServer::with_config(|c| {
        c.network.mode = crogia_host::config::NetworkMode::None;
        c.network.allow = vec!["*".into(), format!("127.0.0.1:{}", upstream.port)];
    })
    .await;
    let id = server.session().await;
    let (_, stdout, _) = sh(
        &server,
        &id,
        &curl(&format!("http://127.0.0.1:{}/", upstream.port)),
    )
    .await;
    let (body, status) = answer(&stdout);
    assert_eq!(status, 403, "{stdout}");
    assert!(body.contains("mode = \"none\""), "{body}");
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn connection_and_byte_limits_refuse_with_a_clear_error() {
    let upstream = Upstream::start().await;
    let allowed = format!("127.0.0.1:{}", upstream.port);
    let server = TestServer::with_config(|c| {
        c.network.allow = vec![allowed.clone()];
        c.network.max_connections = 1;
        c.network.max_bytes = "1m".parse().unwrap();
    })
    .await;
    let id = server.session().await;
    // One tunnel held open by a background process...
    let hold = format!(
        "python3 -c \"import socket,time; s=socket.create_connection(('127.0.0.1',3128)); \
         s.sendall(b'CONNECT {allowed} HTTP/1.1\\r\\nHost: {allowed}\\r\\n\\r\\n'); \
         print(s.recv(100), flush=True); time.sleep(120)\""
    );
    let (status, body) = server
        .post(
            &format!("/api/sessions/{id}/processes"),
            json!({"cmd": hold}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    open_connections_reach(&server, &id, 1).await;

    // ...so the next connection is over the limit.
    let (_, stdout, _) = sh(&server, &id, &curl(&format!("http://{allowed}/"))).await;
    let (body, status) = answer(&stdout);
    assert_eq!(status, 429, "{stdout}");
    assert!(body.contains("network.max_connections"), "{body}");
    let (status, _) = server
        .post(
            &format!(
                "/api/sessions/{id}/processes/{}/stop",
                server.get(&format!("/api/sessions/{id}/processes")).await.1[0]["pid"]
            ),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    open_connections_reach(&server, &id, 0).await;

    // A download past the byte budget is cut, and nothing more is carried.
    let (_, stdout, _) = sh(
        &server,
        &id,
        &format!(
            "curl -sS --noproxy '' -o /tmp/big http://{allowed}/big; echo \"$? $(wc -c < /tmp/big)\""
        ),
    )
    .await;
    let (curl_code, got) = stdout.trim().split_once(' ').unwrap();
    assert_ne!(curl_code, "0", "curl did not notice the cut: {stdout}");
    let got: usize = got.parse().unwrap();
    assert!(
        got < upstream::BIG,
        "the whole download came through: {got}"
    );
    let (_, stdout, _) = sh(&server, &id, &curl(&format!("http://{allowed}/"))).await;
    let (body, status) = answer(&stdout);
    assert_eq!(status, 429, "{stdout}");
    assert!(body.contains("network.max_bytes"), "{body}");
}

#[tokio::test]
async fn connections_close_together_are_coalesced_into_few_events() {
    let upstream = Upstream::start().await;
    let allowed = format!("127.0.0.1:{}", upstream.port);
    let server = TestServer::with_config(|c| c.network.allow = vec![allowed.clone()]).await;
    let id = server.session().await;
    let (code, _, stderr) = sh(
        &server,
        &id,
        &format!(
            "for i in $(seq 20); do curl -sS --noproxy '' -o /dev/null http://{allowed}/ || exit 1; done"
        ),
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let count = |seen: &[Value]| -> u64 {
        seen.iter()
            .filter(|e| is_for(e, "127.0.0.1", upstream.port, "allowed"))
            .map(|e| e["connections"].as_u64().unwrap())
            .sum()
    };
    let events = network_events(&server, &id, |seen| count(seen) >= 20).await;
    assert_eq!(count(&events), 20);
    assert!(
        events.len() < 20,
        "{} events for 20 connections",
        events.len()
    );
    assert_eq!(upstream.hits(), 20);
}

/// With `[network] ask = true`, a host no allow pattern names asks a person
/// (subject `host:port`) instead of being refused: a denial reaches the
/// program as a 403 with the person's words, "allow for this session" lets
/// it through and spares the next connection the question.
#[tokio::test]
async fn an_unlisted_host_asks_a_person_when_ask_is_on() {
    let upstream = Upstream::start().await;
    let port = upstream.port;
    // The address is opened for the port; the name `localhost` is not
    // listed, so reaching it by name asks.
    let server = TestServer::with_config(|c| {
        c.network.allow = vec![format!("127.0.0.1:{port}")];
        c.network.ask = true;
    })
    .await;
    let id = server.session().await;
    let url = format!("http://localhost:{port}/");
    let cmd = curl(&url);
    let mut ws = server.ws(&id, Some(0)).await;
    let decide = |approval: String, body: Value| {
        let server = &server;
        let id = &id;
        async move {
            let (status, out) = server
                .post(&format!("/api/sessions/{id}/approvals/{approval}"), body)
                .await;
            assert_eq!(status, 200, "{out}");
        }
    };
    let mut next_request = async || loop {
        let e = ws.event().await;
        if e["type"] == "approval_requested" {
            return e;
        }
    };

    // Denied, with a reason the program reads.
    let (shell, ()) = tokio::join!(sh(&server, &id, &cmd), async {
        let asked = next_request().await;
        assert_eq!(asked["tool_name"], "network");
        assert_eq!(asked["subject"], format!("localhost:{port}"));
        assert_eq!(asked["tool_call_id"], Value::Null);
        assert_eq!(
            asked["arguments"],
            json!({"host": "localhost", "port": port})
        );
        let approval = asked["approval_id"].as_str().unwrap().to_string();
        decide(
            approval,
            json!({"decision": "deny", "message": "not that one"}),
        )
        .await;
    });
    let (body, status) = answer(&shell.1);
    assert_eq!(status, 403, "{}", shell.1);
    assert!(body.contains("denied by the user"), "{body}");
    assert!(body.contains("not that one"), "{body}");
    assert_eq!(upstream.hits(), 0);

    // Allowed for the session: through, and the next one does not ask.
    let (shell, ()) = tokio::join!(sh(&server, &id, &cmd), async {
        let asked = next_request().await;
        let approval = asked["approval_id"].as_str().unwrap().to_string();
        decide(approval, json!({"decision": "allow_session"})).await;
    });
    assert_eq!(answer(&shell.1).1, 200, "{}", shell.1);
    assert_eq!(upstream.hits(), 1);
    let (_, again, _) = sh(&server, &id, &curl(&url)).await;
    assert_eq!(answer(&again).1, 200, "{again}");
    assert_eq!(upstream.hits(), 2);
    let (_, listed) = server.get(&format!("/api/sessions/{id}/approvals")).await;
    assert_eq!(
        listed["rules"],
        json!([{"tool_name": "network", "pattern": format!("localhost:{port}")}])
    );
    let events = network_events(&server, &id, |seen| {
        seen.iter().filter(|e| e["decision"] == "allowed").count() >= 1
    })
    .await;
    let allowed = events.iter().find(|e| e["decision"] == "allowed").unwrap();
    assert!(
        allowed["reason"]
            .as_str()
            .unwrap()
            .contains("allowed by the user"),
        "{allowed}"
    );

    // A private address no operator pattern names is refused without
    // asking: a person cannot open what only the operator may.
    let (_, private, _) = sh(&server, &id, &curl(&format!("http://127.0.0.2:{port}/"))).await;
    assert_eq!(answer(&private).1, 403, "{private}");
    let (_, listed) = server.get(&format!("/api/sessions/{id}/approvals")).await;
    assert_eq!(listed["pending"], json!([]));
}
