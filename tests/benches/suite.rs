//! `just bench`: the performance suite. Each row is measured side by side
//! with its baseline in the same run (alternating A, B, A, B…; medians) and
//! reported as a ratio, or as a figure against its target where there is no
//! baseline. End-to-end rows drive the real release binary over HTTP and
//! WebSocket; the plugin row drives the runtime in-process. The table is
//! printed and written to `bench/RESULTS.md` with the machine's description.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crogia_host::config::Config;
use crogia_tests::model::{Reply, ScriptedModel};
use crogia_tests::process::ServerProcess;
use crogia_tests::{TestSandbox, WsClient, dist_plugin, fixture_plugin, repo_root};
use serde_json::{Value, json};

const IMAGE: &str = "crogia-sandbox:latest";

struct Row {
    what: String,
    baseline: String,
    ours: String,
    result: String,
    target: String,
    met: bool,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Awaits `f`, adding how long it took to `times`.
async fn timed<T>(times: &mut Vec<Duration>, f: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = f.await;
    times.push(started.elapsed());
    out
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn ratio_row(what: &str, baseline_name: &str, a: Duration, b: Duration, target: f64) -> Row {
    let r = b.as_secs_f64() / a.as_secs_f64();
    Row {
        what: what.into(),
        baseline: format!("{baseline_name}: {}", ms(a)),
        ours: ms(b),
        result: format!("{r:.2}×"),
        target: format!("≤ {target}×"),
        met: r <= target,
    }
}

/// One command through the Docker Engine API's exec, as directly as it gets:
/// create, start attached, read the output, inspect the exit code.
async fn engine_exec(engine: &bollard::Docker, container: &str, cmd: &str) -> String {
    use bollard::exec::{CreateExecOptions, StartExecResults};
    use futures_util::StreamExt;
    let exec = engine
        .create_exec(
            container,
            CreateExecOptions {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                cmd: Some(vec!["sh", "-c", cmd]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut out = String::new();
    if let StartExecResults::Attached { mut output, .. } =
        engine.start_exec(&exec.id, None).await.unwrap()
    {
        while let Some(Ok(chunk)) = output.next().await {
            out.push_str(&chunk.to_string());
        }
    }
    let info = engine.inspect_exec(&exec.id).await.unwrap();
    assert_eq!(info.exit_code, Some(0));
    out
}

fn sh(cmd: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What `docker run -d` does for a session container, through the Engine
/// API (create, then start) with the limits Crogia sets: the most direct way
/// to get a running container with that workspace.
#[derive(Clone)]
struct EngineRun {
    engine: bollard::Docker,
    body: bollard::models::ContainerCreateBody,
}

impl EngineRun {
    async fn new(config: &Config, label: &str) -> Self {
        Self::on("", config, label).await
    }

    /// [`Self::new`] on the engine at `docker_host` (empty: the local one).
    async fn on(docker_host: &str, config: &Config, label: &str) -> Self {
        use bollard::models::{ContainerCreateBody, HostConfig};
        let s = &config.sandbox;
        let engine = if docker_host.is_empty() {
            bollard::Docker::connect_with_local_defaults()
        } else {
            bollard::Docker::connect_with_host(docker_host)
        };
        let engine = engine.unwrap().negotiate_version().await.unwrap();
        let memory = s.memory.bytes() as i64;
        let body = ContainerCreateBody {
            image: Some(IMAGE.into()),
            cmd: Some(vec!["sleep".into(), "infinity".into()]),
            working_dir: Some("/workspace".into()),
            labels: Some(std::collections::HashMap::from([(
                "crogia.test".to_string(),
                label.to_string(),
            )])),
            host_config: Some(HostConfig {
                memory: Some(memory),
                memory_swap: Some(memory),
                nano_cpus: Some((s.cpus * 1e9) as i64),
                pids_limit: Some(s.pids_limit),
                network_mode: Some(s.network.clone()),
                init: Some(true),
                security_opt: Some(vec!["no-new-privileges".into()]),
                cap_drop: Some(vec!["ALL".into()]),
                cap_add: Some(s.cap_add.clone()),
                tmpfs: Some(std::collections::HashMap::from([(
                    "/tmp".to_string(),
                    format!("rw,nosuid,nodev,size={}", s.tmp_size),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        };
        Self { engine, body }
    }

    /// Creates and starts a container with `workspace` at /workspace.
    async fn run(&self, workspace: &str) -> String {
        let mut body = self.body.clone();
        if let Some(host) = body.host_config.as_mut() {
            host.binds = Some(vec![format!("{workspace}:/workspace")]);
        }
        let created = self
            .engine
            .create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                body,
            )
            .await
            .unwrap();
        self.engine
            .start_container(
                &created.id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .unwrap();
        created.id
    }

    /// Creates a volume, then a container with it at /workspace, and
    /// starts it: what a session on an engine that is not local needs.
    /// Returns the container's id and the volume's name.
    async fn run_on_volume(&self) -> (String, String) {
        let name = format!("crogia-bench-{:016x}", rand::random::<u64>());
        let labels = self.body.labels.clone().unwrap_or_default();
        self.engine
            .create_volume(bollard::models::VolumeCreateRequest {
                name: Some(name.clone()),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .unwrap();
        (self.run(&name).await, name)
    }

    async fn remove_volume(&self, name: &str) {
        self.engine
            .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
            .await
            .unwrap();
    }

    async fn remove(&self, id: &str) {
        let options = bollard::query_parameters::RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        self.engine
            .remove_container(id, Some(options))
            .await
            .unwrap();
    }
}

async fn get(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

async fn post(client: &reqwest::Client, base: &str, path: &str, body: Value) -> Value {
    let resp = client
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

/// `wrk` requests per second.
fn wrk(url: &str) -> f64 {
    let out = std::process::Command::new("wrk")
        .args(["-t2", "-c64", "-d8s", url])
        .output()
        .expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}"))
}

fn release_binary_config(t: &TestSandbox, model: &ScriptedModel, pool: usize) -> Config {
    let mut c = t.config.clone();
    c.server.data_dir = t.tmp.path().join(format!("data-{}", rand::random::<u32>()));
    c.model.base_url = model.base_url.clone();
    c.model.model = "scripted".into();
    c.sandbox.pool_size = pool;
    c.sandbox.pids_limit = 512;
    // As shipped: every session's workspace watched, and its checkpoints'
    // fork layers written ahead (up to the size the default allows).
    c.workspace.file_events = true;
    c.workspace.fork_layers_ahead = crogia_host::config::ForkLayersAhead::default();
    c
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // The release binary, not the debug one the tests use.
    let binary = repo_root().join("target/release/crogia");
    assert!(
        binary.exists(),
        "build it first: cargo build --release -p crogia-host (just bench does)"
    );
    // `just bench fanout grep`: only the rows whose group is named.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |group: &str| only.is_empty() || only.iter().any(|o| group.contains(o.as_str()));
    let mut rows = Vec::new();
    let t = TestSandbox::new();
    let model = ScriptedModel::start(Vec::new()).await;
    let client = reqwest::Client::new();

    // Server start: cold (no compile cache), then with the cache.
    // A remote host for the sandboxes' network, on this machine's loopback.
    let upstream = crogia_tests::upstream::Upstream::start().await;
    let mut config = release_binary_config(&t, &model, 0);
    config
        .network
        .allow
        .push(format!("127.0.0.1:{}", upstream.port));
    if wanted("start") {
        let mut cold = Vec::new();
        let mut warm = Vec::new();
        for round in 0..3 {
            let mut c = config.clone();
            c.server.data_dir = t.tmp.path().join(format!("start-{round}"));
            let mut s = timed(&mut cold, ServerProcess::spawn_binary(&binary, &c)).await;
            s.signal("TERM");
            s.wait(Duration::from_secs(30)).await;
            let mut s = timed(&mut warm, ServerProcess::spawn_binary(&binary, &c)).await;
            s.signal("TERM");
            s.wait(Duration::from_secs(30)).await;
        }
        let (cold, warm) = (median(cold), median(warm));
        rows.push(Row {
            what: "server start with all plugins, cold (compiling them)".into(),
            baseline: "—".into(),
            ours: ms(cold),
            result: ms(cold),
            target: "≤ 3 s".into(),
            met: cold <= Duration::from_secs(3),
        });
        rows.push(Row {
            what: "server start with all plugins, compile cache warm".into(),
            baseline: "—".into(),
            ours: ms(warm),
            result: ms(warm),
            target: "≤ 300 ms".into(),
            met: warm <= Duration::from_millis(300),
        });
    }

    let server = ServerProcess::spawn_binary(&binary, &config).await;
    let base = server.base.clone();
    let pid = server.child.id().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = rss_mb(pid);

    // Session create, until the container runs, against the Engine API.
    let scratch = t.tmp.path().join("scratch-ws");
    std::fs::create_dir_all(&scratch).unwrap();
    let scratch = scratch.to_str().unwrap().to_string();
    let engine_run = EngineRun::new(&config, &t.label).await;
    if wanted("create") {
        let (a, b) =
            create_vs_engine_run(&client, &base, &engine_run, &scratch, Duration::ZERO).await;
        rows.push(ratio_row(
            "session create via API, until the container runs",
            ENGINE_RUN,
            a,
            b,
            1.0,
        ));
    }

    // Shell round trip against the Engine API's own exec (create, start,
    // read, inspect) over one kept-alive connection: what the server did per
    // command before the sandbox agent.
    let session = post(&client, &base, "/api/sessions", json!({})).await;
    let sid = session["session_id"].as_str().unwrap().to_string();
    let container = session["container_id"].as_str().unwrap().to_string();
    if wanted("shell") {
        let engine = bollard::Docker::connect_with_local_defaults()
            .unwrap()
            .negotiate_version()
            .await
            .unwrap();
        let shell_path = format!("/api/sessions/{sid}/shell");
        let shell = || post(&client, &base, &shell_path, json!({"cmd": "echo hi"}));
        // Warm-up: connections, the agent's link, caches.
        for _ in 0..5 {
            engine_exec(&engine, &container, "echo hi").await;
            shell().await;
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..50 {
            let hi = timed(&mut a, engine_exec(&engine, &container, "echo hi")).await;
            assert_eq!(hi, "hi\n");
            let out = timed(&mut b, shell()).await;
            assert_eq!(out["stdout"], "hi\n");
        }
        rows.push(ratio_row(
            "shell `echo hi` round trip via REST (through the sandbox agent)",
            "Engine API exec (create, start, read, inspect; kept-alive socket)",
            median(a),
            median(b),
            0.1,
        ));
        // Background process start, against the same Engine API exec (what
        // starting one cost before: a helper script in its own exec).
        let start_path = format!("/api/sessions/{sid}/processes");
        let start = || post(&client, &base, &start_path, json!({"cmd": "sleep 0.2"}));
        for _ in 0..3 {
            start().await;
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..30 {
            timed(&mut a, engine_exec(&engine, &container, "true")).await;
            let p = timed(&mut b, start()).await;
            assert!(p["pid"].as_u64().is_some(), "{p}");
        }
        rows.push(ratio_row(
            "background process start via REST (through the sandbox agent)",
            "Engine API exec (create, start, read, inspect; kept-alive socket)",
            median(a),
            median(b),
            0.1,
        ));
    }

    // File read and write via REST, through the agent, against the path the
    // server took before it (the same confined read or write done on the
    // bind-mounted directory in-process), rebuilt in this run: a REST round
    // trip that touches no file (GET the session) plus that direct call.
    if wanted("files") {
        let workdir = session["workdir"].as_str().unwrap().to_string();
        let direct = crogia_sandbox_agent::fs::Workspace::open(&workdir).unwrap();
        let content = "x".repeat(4096);
        let file_path = format!("/api/sessions/{sid}/files/content");
        let read_url = format!("{base}{file_path}?path=bench/read.txt");
        let info_url = format!("{base}/api/sessions/{sid}");
        post(
            &client,
            &base,
            &file_path,
            json!({"path": "bench/read.txt", "content": content}),
        )
        .await;
        for (what, write) in [("read", false), ("write", true)] {
            let once = || async {
                if write {
                    post(
                        &client,
                        &base,
                        &file_path,
                        json!({"path": "bench/w.txt", "content": content}),
                    )
                    .await;
                } else {
                    get(&client, &read_url).await;
                }
            };
            for _ in 0..5 {
                once().await;
                get(&client, &info_url).await;
            }
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for _ in 0..30 {
                let started = Instant::now();
                get(&client, &info_url).await;
                if write {
                    direct.write("bench/w.txt", content.as_bytes()).unwrap();
                } else {
                    direct.read("bench/read.txt", u64::MAX).unwrap();
                }
                a.push(started.elapsed());
                timed(&mut b, once()).await;
            }
            rows.push(ratio_row(
                &format!("file {what} (4 KiB) via REST, through the sandbox agent"),
                "the pre-agent host-side path, rebuilt: a REST round trip + the same confined call in-process",
                median(a),
                median(b),
                1.5,
            ));
        }
    }

    // The agent's footprint: its resident memory in an idle container (init,
    // server and the one bridge the server keeps), and its binary.
    if wanted("agent") {
        let out = post(
            &client,
            &base,
            &format!("/api/sessions/{sid}/shell"),
            json!({"cmd": "sleep 1; ps -eo rss=,args="}),
        )
        .await;
        let agent_kib: u64 = out["stdout"]
            .as_str()
            .unwrap()
            .lines()
            .filter(|l| l.contains("/.crogia/crogia-agent"))
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        let agent_mb = agent_kib as f64 / 1024.0;
        rows.push(Row {
            what: "sandbox agent RSS per idle container (all its processes)".into(),
            baseline: "—".into(),
            ours: format!("{agent_mb:.1} MB"),
            result: format!("{agent_mb:.1} MB"),
            target: "≤ 5 MB".into(),
            met: agent_mb <= 5.0,
        });
        // RSS counts the binary's shared pages once per process; PSS
        // shares them out, so it is what the container really costs.
        let out = post(
            &client,
            &base,
            &format!("/api/sessions/{sid}/shell"),
            json!({"cmd": "for p in $(pgrep -f '^/[.]crogia/crogia-agent '); do grep -E '^(Pss|Anonymous):' /proc/$p/smaps_rollup; done"}),
        )
        .await;
        let sum = |field: &str| -> f64 {
            out["stdout"]
                .as_str()
                .unwrap()
                .lines()
                .filter(|l| l.starts_with(field))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                .sum::<f64>()
                / 1024.0
        };
        let (pss, anon) = (sum("Pss:"), sum("Anonymous:"));
        rows.push(Row {
            what: "sandbox agent PSS per idle container (shared pages shared out)".into(),
            baseline: "—".into(),
            ours: format!("{pss:.1} MB, of which {anon:.1} MB anonymous"),
            result: format!("{pss:.1} MB"),
            target: "reported".into(),
            met: true,
        });
        let size = std::fs::metadata(&config.sandbox.agent_binary)
            .map(|m| m.len() as f64 / (1024.0 * 1024.0))
            .unwrap_or(f64::NAN);
        rows.push(Row {
            what: "sandbox agent binary (static)".into(),
            baseline: "—".into(),
            ours: format!("{size:.1} MB"),
            result: format!("{size:.1} MB"),
            target: "reported".into(),
            met: true,
        });
    }

    // The network: bytes through the agent's proxy, the agent's link and
    // the server, against the same download made directly on this host.
    // curl's own clock in the container, so the command's round trip is
    // not counted.
    if wanted("egress") {
        let shell_path = format!("/api/sessions/{sid}/shell");
        let in_sandbox = |url: String| {
            post(
                &client,
                &base,
                &shell_path,
                json!({"cmd": format!("curl -sS --noproxy '' -o /dev/null -w '%{{time_total}}' {url}")}),
            )
        };
        let seconds = |out: Value| -> Duration {
            let text = out["stdout"]
                .as_str()
                .unwrap_or_default()
                .trim()
                .to_string();
            Duration::from_secs_f64(text.parse().unwrap_or_else(|_| panic!("curl said {out}")))
        };
        // A new connection each time, as in the sandbox.
        let fresh = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let on_host = |url: String| {
            let client = fresh.clone();
            async move {
                client
                    .get(url)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
                    .len()
            }
        };
        const BYTES: usize = 64 << 20;
        let big = format!("http://127.0.0.1:{}/size/{BYTES}", upstream.port);
        let small = format!("http://127.0.0.1:{}/", upstream.port);
        for _ in 0..2 {
            on_host(big.clone()).await;
            in_sandbox(big.clone()).await;
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..7 {
            assert_eq!(timed(&mut a, on_host(big.clone())).await, BYTES);
            b.push(seconds(in_sandbox(big.clone()).await));
        }
        let (a, b) = (median(a), median(b));
        let mibs = BYTES as f64 / f64::from(1 << 20) / b.as_secs_f64();
        rows.push(Row {
            what: "64 MiB HTTP download in the sandbox (proxy, agent link, server)".into(),
            baseline: format!("the same download on this host: {}", ms(a)),
            ours: format!("{} ({mibs:.0} MiB/s)", ms(b)),
            result: format!("{mibs:.0} MiB/s"),
            target: "≥ 100 MiB/s".into(),
            met: mibs >= 100.0,
        });
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..30 {
            timed(&mut a, on_host(small.clone())).await;
            b.push(seconds(in_sandbox(small.clone()).await));
        }
        let (a, b) = (median(a), median(b));
        rows.push(Row {
            what: "small HTTP request in the sandbox: a new connection, decided and dialled".into(),
            baseline: format!("the same request on this host: {}", ms(a)),
            ours: ms(b),
            result: format!("+{}", ms(b.saturating_sub(a))),
            target: "reported".into(),
            met: true,
        });
    }

    // Grep over a generated 10,000-file, 100 MB workspace; checkpoints and
    // forks of it.
    if wanted("grep") || wanted("checkpoint") {
        let generate = "python3 - <<'PY'\nimport os, random\nrandom.seed(7)\nwords = [''.join(random.choice('abcdefghij') for _ in range(7)) for _ in range(5000)]\nfor d in range(100):\n    os.makedirs(f'src/d{d}', exist_ok=True)\n    for f in range(100):\n        lines = [' '.join(random.choices(words, k=12)) for _ in range(120)]\n        if (d * 100 + f) % 997 == 0:\n            lines[60] = 'the needle_in_haystack is here'\n        open(f'src/d{d}/f{f}.txt', 'w').write('\\n'.join(lines) + '\\n')\nPY\ndu -sm src | cut -f1";
        let out = post(
            &client,
            &base,
            &format!("/api/sessions/{sid}/shell"),
            json!({"cmd": generate, "timeout": 600}),
        )
        .await;
        let size_mb = out["stdout"].as_str().unwrap().trim().to_string();
        // The same directory as the host sees it (the bind mount): `rg`
        // straight over it is the most direct way to do the same search.
        let workdir = session["workdir"].as_str().unwrap().to_string();
        if wanted("checkpoint") {
            rows.extend(
                checkpoint_rows(&client, &base, &t, &engine_run, &sid, &workdir, &size_mb).await,
            );
        }
        let grep_path = format!("/api/sessions/{sid}/search/grep");
        let grep = || {
            post(
                &client,
                &base,
                &grep_path,
                json!({"pattern": "needle_in_haystack"}),
            )
        };
        let thread_counts = if wanted("grep") {
            vec![None, Some("1")]
        } else {
            Vec::new()
        };
        for threads in thread_counts {
            let rg = |times: &mut Vec<Duration>| {
                let started = Instant::now();
                let mut cmd = std::process::Command::new("rg");
                if let Some(j) = threads {
                    cmd.args(["-j", j]);
                }
                let out = cmd
                    .args(["-n", "needle_in_haystack", &workdir])
                    .output()
                    .expect("bench needs rg on the host (just bench installs it)");
                times.push(started.elapsed());
                String::from_utf8_lossy(&out.stdout).lines().count()
            };
            // Warm-up: the page cache, the agent's link.
            for _ in 0..3 {
                rg(&mut Vec::new());
                grep().await;
            }
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for _ in 0..15 {
                let hits = rg(&mut a);
                let found = timed(&mut b, grep()).await;
                assert_eq!(found["matches"].as_array().unwrap().len(), hits);
            }
            let baseline = match threads {
                None => "`rg` run directly over the workspace's directory".to_string(),
                Some(j) => format!("`rg -j{j}` run directly over the workspace's directory"),
            };
            rows.push(ratio_row(
                &format!("grep over a generated 10,000-file, {size_mb} MB workspace via API"),
                &baseline,
                median(a),
                median(b),
                1.2,
            ));
        }
    }

    // WebSocket fan-out: 1 session, 10,000 events/s, 100 clients.
    if wanted("fanout") {
        let fan = post(&client, &base, "/api/sessions", json!({})).await;
        let fid = fan["session_id"].as_str().unwrap().to_string();
        // FANOUT_CLIENTS / FANOUT_EVENTS / FANOUT_RATE vary the load when
        // looking for where time goes; the row is for the defaults.
        let knob = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let (n_clients, events, rate) = (
            knob("FANOUT_CLIENTS", 100),
            knob("FANOUT_EVENTS", 20_000),
            knob("FANOUT_RATE", 10_000),
        );
        let mut clients = Vec::new();
        for _ in 0..n_clients {
            clients.push(
                WsClient::connect(&format!("{}/ws/{fid}", base.replacen("http", "ws", 1))).await,
            );
        }
        model.push([Reply::Clocked {
            count: events,
            per_second: rate,
        }]);
        let posted = Instant::now();
        post(
            &client,
            &base,
            &format!("/api/sessions/{fid}/tasks"),
            json!({"task": "fan out"}),
        )
        .await;
        // All readers run from now on, not one after another.
        let readers: Vec<_> = clients
            .into_iter()
            .map(|c| tokio::spawn(read_clocked(c, events)))
            .collect();
        let mut all = Vec::new();
        let mut lost = 0usize;
        for r in readers {
            let (lat, gaps) = r.await.unwrap();
            lost += events - lat.len() + gaps;
            all.extend(lat);
        }
        let took = posted.elapsed();
        let p99 = pct(all.clone(), 0.99);
        rows.push(Row {
            what: "WebSocket fan-out: 1 session, 10,000 events/s, 100 clients".into(),
            baseline: "—".into(),
            ours: format!(
                "p50 {}, p99 {}, lost {lost}; {events} events to {n_clients} clients in {}",
                ms(pct(all, 0.5)),
                ms(p99),
                ms(took)
            ),
            result: format!("p99 {}", ms(p99)),
            target: "p99 ≤ 20 ms, no loss".into(),
            met: p99 <= Duration::from_millis(20) && lost == 0,
        });
    }

    if wanted("crossserver") {
        rows.push(cross_server_row(&binary, &t, &model).await);
    }

    if wanted("engines") {
        rows.push(two_engine_create_row(&binary, &t, &model, &scratch).await);
    }

    // Throughput of health and of listing 100 sessions, with wrk; memory.
    if wanted("throughput") {
        let health = wrk(&format!("{base}/api/health"));
        rows.push(Row {
            what: "GET /api/health, wrk on loopback (2 threads, 64 connections)".into(),
            baseline: "—".into(),
            ours: format!("{health:.0} req/s"),
            result: format!("{health:.0} req/s"),
            target: "≥ 30,000 req/s".into(),
            met: health >= 30_000.0,
        });
        let existing = get(&client, &format!("{base}/api/sessions"))
            .await
            .as_array()
            .unwrap()
            .len();
        let creates = (existing..100).map(|_| post(&client, &base, "/api/sessions", json!({})));
        futures_util::future::join_all(creates).await;
        let listed = get(&client, &format!("{base}/api/sessions")).await;
        assert_eq!(listed.as_array().unwrap().len(), 100);
        // Steady state: let the engine finish starting 98 containers first.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let list = wrk(&format!("{base}/api/sessions"));
        rows.push(Row {
            what: "GET /api/sessions with 100 sessions, wrk on loopback".into(),
            baseline: "—".into(),
            ours: format!("{list:.0} req/s"),
            result: format!("{list:.0} req/s"),
            target: "≥ 10,000 req/s".into(),
            met: list >= 10_000.0,
        });
        let busy_rss = rss_mb(pid);
        rows.push(Row {
            what: "server RSS, idle".into(),
            baseline: "—".into(),
            ours: format!("{idle_rss:.0} MB"),
            result: format!("{idle_rss:.0} MB"),
            target: "≤ 60 MB".into(),
            met: idle_rss <= 60.0,
        });
        rows.push(Row {
            what: "server RSS with 100 sessions".into(),
            baseline: "—".into(),
            ours: format!("{busy_rss:.0} MB"),
            result: format!("{busy_rss:.0} MB"),
            target: "≤ 150 MB".into(),
            met: busy_rss <= 150.0,
        });
    }
    drop(server);

    // Session create from the warm pool.
    if wanted("pool") {
        let pooled =
            ServerProcess::spawn_binary(&binary, &release_binary_config(&t, &model, 2)).await;
        let pbase = pooled.base.clone();
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Let the pool refill between creations, as it would between requests.
        let (a, b) = create_vs_engine_run(
            &client,
            &pbase,
            &engine_run,
            &scratch,
            Duration::from_millis(1500),
        )
        .await;
        rows.push(ratio_row(
            "session create with a warm pool (pool_size = 2)",
            ENGINE_RUN,
            a,
            b,
            0.2,
        ));
        drop(pooled);
    }

    // Plugin invocation overhead, in-process.
    if wanted("plugin") {
        rows.push(plugin_overhead_row(&t).await);
    }

    report(&rows, only.is_empty());
}

/// A checkpoint after a one-file change in the generated workspace against
/// `git add -A && git commit` on the same directory (a repository kept
/// outside it); a fork of that workspace against a copy of the directory
/// plus the Engine API's create and start on it.
async fn checkpoint_rows(
    client: &reqwest::Client,
    base: &str,
    t: &TestSandbox,
    engine_run: &EngineRun,
    sid: &str,
    workdir: &str,
    size_mb: &str,
) -> Vec<Row> {
    let git_dir = t.tmp.path().join("bench-git");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg(format!("--git-dir={}", git_dir.display()))
            .arg(format!("--work-tree={workdir}"))
            .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost"])
            .args(args)
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let commit = || {
        git(&["add", "-A"]);
        git(&["commit", "-q", "--allow-empty", "-m", "bench"]);
    };
    let checkpoints = format!("{base}/api/sessions/{sid}/checkpoints");
    let take = || async {
        let resp = client.post(&checkpoints).send().await.unwrap();
        assert_eq!(resp.status(), 201);
        resp.json::<Value>().await.unwrap()
    };
    let touch = |round: usize, who: &str| {
        use std::io::Write as _;
        let path = format!("{workdir}/src/d{}/f{}.txt", round % 100, round % 97);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        writeln!(f, "changed by {who} in round {round}").unwrap();
    };
    std::process::Command::new("git")
        .args(["init", "-q", "--bare"])
        .arg(&git_dir)
        .status()
        .unwrap();
    git(&["config", "core.bare", "false"]);
    // The fork's baseline, first: before the server writes (and removes)
    // any layer. On ext4, creating files within minutes of deleting many
    // is far slower (its inode allocator skips recently deleted inodes),
    // and each layer written ahead removes the one before: measured after
    // them, the copy would pay for the server's removals. Nothing is
    // removed until every round is done, so that no round pays for the
    // one before either.
    let mut fork_baseline = Vec::new();
    let (mut copies, mut containers) = (Vec::new(), Vec::new());
    for round in 0..5 {
        let copy = t.tmp.path().join(format!("fork-copy-{round}"));
        let copy_str = copy.to_str().unwrap().to_string();
        let started = Instant::now();
        let status = std::process::Command::new("cp")
            .args(["-a", workdir, &copy_str])
            .status()
            .unwrap();
        assert!(status.success());
        containers.push(engine_run.run(&copy_str).await);
        fork_baseline.push(started.elapsed());
        copies.push(copy);
    }
    // Warm-up: both read every file once and fill their caches.
    for _ in 0..3 {
        commit();
        take().await;
    }
    ahead_settled(client, base).await;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    // Checkpoints whose layers, written ahead, go when the next one's is
    // written: their first forks write their own. The layer written ahead
    // after each is waited for untimed, so that nothing runs beside the
    // next round's timings.
    let mut older = Vec::new();
    for round in 0..15 {
        touch(round, "git");
        let started = Instant::now();
        commit();
        a.push(started.elapsed());
        touch(round, "crogia");
        let taken = timed(&mut b, take()).await;
        assert_eq!(taken["files_changed"], 1, "{taken}");
        older.push(taken["checkpoint_id"].as_str().unwrap().to_string());
        assert!(
            ahead_settled(client, base).await,
            "round {round}: none written ahead"
        );
    }
    let mut rows = vec![ratio_row(
        &format!(
            "checkpoint after a one-file change in the 10,000-file, {size_mb} MB workspace via API"
        ),
        "`git add -A && git commit` run directly on the workspace's directory",
        median(a),
        median(b),
        1.0,
    )];

    // Fork: a new session with the workspace as a checkpoint has it. Each
    // round takes a new checkpoint (a one-file change, untimed) and waits
    // for what the server writes after it in the background (its layer:
    // `workspace.fork_layers_ahead = "always"`, the default, the workspace
    // being under its size), so that nothing runs beside the timings.
    // Then it forks an older checkpoint, whose first fork writes its
    // layer; the new checkpoint (its first fork, on the layer written
    // ahead); and the new checkpoint again (on its layer). These run
    // after the server's removals of layers written ahead, the baseline
    // before them.
    let fork_path = format!("/api/sessions/{sid}/fork");
    let (a, mut at_fork, mut ahead, mut later) =
        (fork_baseline, Vec::new(), Vec::new(), Vec::new());
    let mut writing = Vec::new();
    let mut forks = Vec::new();
    for round in 0..5 {
        touch(round, "fork");
        take().await;
        let started = Instant::now();
        let written = ahead_settled(client, base).await;
        assert!(written, "round {round}: no layer was written ahead");
        writing.push(started.elapsed());

        // The older checkpoint's fork, the new one's first, its second.
        let of_older = json!({"checkpoint_id": older[round * 3]});
        for (which, body) in [(0, of_older), (1, json!({})), (2, json!({}))] {
            let times = match which {
                0 => &mut at_fork,
                1 => &mut ahead,
                _ => &mut later,
            };
            let forked = timed(times, post(client, base, &fork_path, body)).await;
            assert!(
                forked["workdir"].as_str().unwrap().starts_with("layered:"),
                "{forked}"
            );
            forks.push(forked["session_id"].as_str().unwrap().to_string());
        }
    }
    for id in &containers {
        engine_run.remove(id).await;
    }
    for copy in &copies {
        std::fs::remove_dir_all(copy).unwrap();
    }
    for id in &forks {
        client
            .delete(format!("{base}/api/sessions/{id}"))
            .send()
            .await
            .unwrap();
    }
    let baseline = "`cp -a` of the directory, then the Engine API's create and start on the copy";
    rows.push(ratio_row(
        &format!(
            "fork of the 10,000-file, {size_mb} MB workspace via API after a checkpoint (its \
             first fork, on the layer written ahead: `fork_layers_ahead`'s default), until it runs"
        ),
        baseline,
        median(a.clone()),
        median(ahead),
        1.0,
    ));
    let (copy, forking) = (median(a.clone()), median(at_fork));
    rows.push(Row {
        what: format!(
            "first fork of an older checkpoint of the {size_mb} MB workspace via API, its \
             layer written by the fork (as for a session over the size, or `fork_layers_ahead = \"never\"`), until it runs"
        ),
        baseline: format!("{baseline}: {}", ms(copy)),
        ours: ms(forking),
        result: format!("{:.2}×", forking.as_secs_f64() / copy.as_secs_f64()),
        target: "reported".into(),
        met: true,
    });
    rows.push(ratio_row(
        &format!(
            "later fork of the same checkpoint of the {size_mb} MB workspace via API \
             (on its layer, copy on write), until it runs"
        ),
        baseline,
        median(a.clone()),
        median(later),
        1.0,
    ));
    let writing = median(writing);
    rows.push(Row {
        what: format!(
            "layer written ahead after a checkpoint of the {size_mb} MB workspace \
             (in the background; until written)"
        ),
        baseline: format!("{baseline}: {}", ms(median(a))),
        ours: ms(writing),
        result: ms(writing),
        target: "reported".into(),
        met: true,
    });
    rows
}

/// Waits until the server has no fork layer left to write ahead (at most
/// 120 s); whether it wrote one since the last call.
async fn ahead_settled(client: &reqwest::Client, base: &str) -> bool {
    static WRITTEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let sample = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    for _ in 0..1200 {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if sample(&text, "crogia_fork_layers_ahead_pending") == 0.0 {
            let written = sample(&text, "crogia_fork_layers_built_total{when=\"ahead\"}") as u64;
            let before = WRITTEN.swap(written, std::sync::atomic::Ordering::SeqCst);
            return written > before;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the layers to write ahead did not settle in 120 s");
}

/// What the create rows compare with.
const ENGINE_RUN: &str = "Engine API create + start (what `docker run -d` does)";

/// Medians of the Engine API's create + start (A) and `POST /api/sessions`
/// (B), alternating; what each made is removed untimed, then `pause` passes.
async fn create_vs_engine_run(
    client: &reqwest::Client,
    base: &str,
    engine_run: &EngineRun,
    workspace: &str,
    pause: Duration,
) -> (Duration, Duration) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..8 {
        let id = timed(&mut a, engine_run.run(workspace)).await;
        engine_run.remove(&id).await;
        let session = timed(&mut b, post(client, base, "/api/sessions", json!({}))).await;
        let id = session["session_id"].as_str().unwrap();
        client
            .delete(format!("{base}/api/sessions/{id}"))
            .send()
            .await
            .unwrap();
        tokio::time::sleep(pause).await;
    }
    (median(a), median(b))
}

async fn plugin_overhead_row(t: &TestSandbox) -> Row {
    let mut t2 = TestSandbox::with_config(|c| c.sandbox.labels = t.config.sandbox.labels.clone());
    t2.plugin_dir(&[fixture_plugin("fixture-tools"), dist_plugin("read-file")]);
    let caps = t2.capabilities().await;
    caps.write_file("f.txt", b"hello".to_vec()).await.unwrap();
    let rt = t2.plugins().await;
    let args = r#"{"path":"f.txt"}"#;
    for _ in 0..300 {
        caps.stat("f.txt").await.unwrap();
        rt.invoke(caps.clone(), "stat_size", args).await.unwrap();
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..3000 {
        timed(&mut a, caps.stat("f.txt")).await.unwrap();
        timed(&mut b, rt.invoke(caps.clone(), "stat_size", args))
            .await
            .unwrap();
    }
    let (a50, b50, b99) = (median(a.clone()), median(b.clone()), pct(b, 0.99));
    let overhead = b50.saturating_sub(a50);
    Row {
        what: "trivial plugin tool invocation overhead (one host call)".into(),
        baseline: format!(
            "host function called directly: {:.1} µs",
            a50.as_secs_f64() * 1e6
        ),
        ours: format!(
            "p50 {:.1} µs, p99 {:.1} µs",
            b50.as_secs_f64() * 1e6,
            b99.as_secs_f64() * 1e6
        ),
        result: format!(
            "+{:.1} µs ({:.2}×)",
            overhead.as_secs_f64() * 1e6,
            b50.as_secs_f64() / a50.as_secs_f64()
        ),
        target: "overhead p50 ≤ 50 µs".into(),
        met: overhead <= Duration::from_micros(50),
    }
}

/// Prints the table; the full suite also writes it to `bench/RESULTS.md`.
fn report(rows: &[Row], write: bool) {
    let mut table = String::from(
        "| what | baseline | ours | result | target | met |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} |",
            r.what,
            r.baseline,
            r.ours,
            r.result,
            r.target,
            if r.met { "yes" } else { "**no**" }
        );
    }
    println!("\n{table}");
    if !write {
        return;
    }
    let machine = format!(
        "- CPU: {} ({} cores)\n- memory: {}\n- kernel: {}\n- Docker engine: {}\n- date: {}\n",
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'"),
        sh("nproc"),
        sh("free -h | awk '/Mem:/{print $2}'"),
        sh("uname -r"),
        sh("docker version --format '{{.Server.Version}}'"),
        sh("date -u +%Y-%m-%dT%H:%MZ"),
    );
    let micro = micro_table();
    println!("{micro}");
    let doc = format!(
        "# Benchmark results\n\nProduced by `just bench` (tests/benches/suite.rs). Each ratio is ours ÷ the \
         baseline, both measured in the same run, alternating, medians. End-to-end rows drive the release \
         binary over loopback HTTP and WebSocket; Docker baselines go through the Engine API on its \
         socket (no CLI), the most direct way to do the same work.\n\n## Machine\n\n{machine}\n## Results\n\n{table}\n\
         ## Micro benchmarks (criterion, tests/benches/micro.rs)\n\nMedians of criterion's samples from \
         the same `just bench` run; a row with a baseline (\"against\") shows the difference and the ratio.\n\n{micro}"
    );
    let path = repo_root().join("bench/RESULTS.md");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, doc).unwrap();
    println!("written to {}", path.display());
}

/// Reads a [`Reply::Clocked`] task's events until it completes: how long
/// each text piece took from the model to this client, and how many
/// numbers were skipped. It parses only what it measures, so that 100
/// readers keep up on the same two cores as the server.
async fn read_clocked(mut c: WsClient, events: usize) -> (Vec<Duration>, usize) {
    #[derive(serde::Deserialize)]
    struct Frame<'a> {
        seq: u64,
        #[serde(rename = "type")]
        kind: &'a str,
        #[serde(default)]
        content: Option<&'a str>,
    }
    let mut latencies = Vec::with_capacity(events);
    let mut last_seq = 0u64;
    let mut gaps = 0usize;
    loop {
        let text = c.text().await;
        let e: Frame = serde_json::from_str(text.as_str()).unwrap();
        if last_seq != 0 && e.seq != last_seq + 1 {
            gaps += 1;
        }
        last_seq = e.seq;
        match e.kind {
            "text_delta" => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos();
                if let Some(Ok(sent)) = e.content.map(|c| c.trim().parse::<u128>()) {
                    latencies.push(Duration::from_nanos((now.saturating_sub(sent)) as u64));
                }
            }
            "task_completed" => return (latencies, gaps),
            _ => {}
        }
    }
}

/// Two release servers on one PostgreSQL: a task on A streams clocked
/// events; a WebSocket client on B and one on A (the baseline: the same
/// events without crossing servers) measure how long each took to arrive.
async fn cross_server_row(binary: &std::path::Path, t: &TestSandbox, model: &ScriptedModel) -> Row {
    let client = reqwest::Client::new();
    let db = crogia_host::store::scratch::ScratchDatabase::create().await;
    let config = |model: &ScriptedModel| {
        let mut c = release_binary_config(t, model, 0);
        c.store = db.config.clone();
        c
    };
    let mut a = ServerProcess::spawn_binary(binary, &config(model)).await;
    let session = post(&client, &a.base, "/api/sessions", json!({})).await;
    let sid = session["session_id"].as_str().unwrap().to_string();
    // B loads the session when it starts.
    let mut b = ServerProcess::spawn_binary(binary, &config(model)).await;
    let ws = |base: &str| format!("{}/ws/{sid}", base.replacen("http", "ws", 1));
    let on_a = WsClient::connect(&ws(&a.base)).await;
    let on_b = WsClient::connect(&ws(&b.base)).await;
    let (events, rate) = (10_000, 2_000);
    model.push([Reply::Clocked {
        count: events,
        per_second: rate,
    }]);
    let readers = [on_a, on_b].map(|c| tokio::spawn(read_clocked(c, events)));
    post(
        &client,
        &a.base,
        &format!("/api/sessions/{sid}/tasks"),
        json!({"task": "stream across servers"}),
    )
    .await;
    let mut results = Vec::new();
    for r in readers {
        let (latencies, gaps) = r.await.unwrap();
        results.push((events - latencies.len() + gaps, latencies));
    }
    let _ = client
        .delete(format!("{}/api/sessions/{sid}", a.base))
        .send()
        .await;
    for s in [&mut b, &mut a] {
        s.signal("TERM");
        s.wait(Duration::from_secs(30)).await;
    }
    let (lost_a, on_a) = results.remove(0);
    let (lost_b, on_b) = results.remove(0);
    let p99_b = pct(on_b.clone(), 0.99);
    Row {
        what: format!(
            "live events across two servers on one PostgreSQL: {rate} events/s written on A, a client on B"
        ),
        baseline: format!(
            "a client on A: p50 {}, p99 {}, lost {lost_a}",
            ms(pct(on_a.clone(), 0.5)),
            ms(pct(on_a, 0.99))
        ),
        ours: format!(
            "p50 {}, p99 {}, lost {lost_b}; {events} events",
            ms(pct(on_b, 0.5)),
            ms(p99_b)
        ),
        result: format!("p99 {}", ms(p99_b)),
        target: "p99 ≤ 20 ms, no loss".into(),
        met: p99_b <= Duration::from_millis(20) && lost_b == 0,
    }
}

/// Session create on a server with two engines (this machine's and the
/// second one `just test` starts), each session placed on the less loaded:
/// a pair of creates, one per engine, against the Engine API doing the same
/// on both (create and start with a bind mount here; a volume, then create
/// and start, there), alternating; what each made is removed untimed.
async fn two_engine_create_row(
    binary: &std::path::Path,
    t: &TestSandbox,
    model: &ScriptedModel,
    scratch: &str,
) -> Row {
    use crogia_host::config::EngineConfig;
    let client = reqwest::Client::new();
    let second = crogia_tests::second_engine();
    let mut config = release_binary_config(t, model, 0);
    config.sandbox.engines = [("here", ""), ("second", second.as_str())]
        .map(|(name, host)| EngineConfig {
            name: name.into(),
            docker_host: host.into(),
            local_engine: None,
            max_sessions: 0,
        })
        .to_vec();
    let mut server = ServerProcess::spawn_binary(binary, &config).await;
    let here = EngineRun::new(&config, &t.label).await;
    let there = EngineRun::on(&second, &config, &t.label).await;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..8 {
        let started = Instant::now();
        let on_here = here.run(scratch).await;
        let (on_there, volume) = there.run_on_volume().await;
        a.push(started.elapsed());
        here.remove(&on_here).await;
        there.remove(&on_there).await;
        there.remove_volume(&volume).await;
        let started = Instant::now();
        let made = [
            post(&client, &server.base, "/api/sessions", json!({})).await,
            post(&client, &server.base, "/api/sessions", json!({})).await,
        ];
        b.push(started.elapsed());
        let mut engines: Vec<&str> = made.iter().map(|s| s["engine"].as_str().unwrap()).collect();
        engines.sort();
        assert_eq!(engines, ["here", "second"], "{made:?}");
        for s in &made {
            let id = s["session_id"].as_str().unwrap();
            client
                .delete(format!("{}/api/sessions/{id}", server.base))
                .send()
                .await
                .unwrap();
        }
    }
    server.signal("TERM");
    server.wait(Duration::from_secs(30)).await;
    crogia_tests::sweep_engine(&t.label, &second);
    ratio_row(
        "two session creates placed on two engines (one each, until the containers run)",
        "Engine API on both: create + start here; volume, create + start there",
        median(a),
        median(b),
        1.0,
    )
}

/// The micro benchmarks' medians, read from criterion's output of this run
/// (`just bench` runs them first), each against its baseline.
fn micro_table() -> String {
    // (group, benchmark, its baseline in the same group)
    let rows: [(&str, &str, Option<&str>); 11] = [
        ("plugin_call", "host_function_direct", None),
        (
            "plugin_call",
            "stat_size_tool",
            Some("host_function_direct"),
        ),
        ("plugin_call", "ping_tool", None),
        ("plugin_call", "read_file_direct", None),
        ("plugin_call", "read_file_tool", Some("read_file_direct")),
        ("workspace_read", "std_fs_read", None),
        ("workspace_read", "confined_read", Some("std_fs_read")),
        ("event_log", "publish_awaited", None),
        ("event_log", "enqueue_streamed", Some("publish_awaited")),
        (
            "event_log",
            "publish_awaited_postgres",
            Some("publish_awaited"),
        ),
        (
            "event_log",
            "enqueue_streamed_postgres",
            Some("enqueue_streamed"),
        ),
    ];
    let root = repo_root().join("target/criterion");
    let median_ns = |group: &str, bench: &str| -> Option<f64> {
        let text = std::fs::read_to_string(root.join(group).join(bench).join("new/estimates.json"))
            .ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        v["median"]["point_estimate"].as_f64()
    };
    let mut out = String::from(
        "| group | benchmark | median | against | difference | ratio |\n|---|---|---|---|---|---|\n",
    );
    for (group, bench, baseline) in rows {
        let Some(ns) = median_ns(group, bench) else {
            let _ = writeln!(out, "| {group} | {bench} | not run | | | |");
            continue;
        };
        let (against, diff, ratio) = match baseline.and_then(|b| Some((b, median_ns(group, b)?))) {
            Some((b, base)) => (
                b.to_string(),
                format!("{:+.1} µs", (ns - base) / 1e3),
                format!("{:.2}×", ns / base),
            ),
            None => ("—".into(), "—".into(), "—".into()),
        };
        let _ = writeln!(
            out,
            "| {group} | {bench} | {:.1} µs | {against} | {diff} | {ratio} |",
            ns / 1e3
        );
    }
    out
}
