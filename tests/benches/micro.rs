//! Micro benchmarks (criterion): the pieces every agent step goes through,
//! each beside the baseline it adds to.
//!
//! - `plugin_call`: a trivial tool making one host call (`stat_size` →
//!   `files.stat`) through the wasm runtime, against calling the same host
//!   function directly; a tool making no host call (`ping`); the standard
//!   `read_file` tool against the same capability called directly.
//! - `workspace_read`: reading a file through the confined workspace handle
//!   (cap-std) against `std::fs::read` of the joined path.
//! - `event_log`: one event stored (SQLite) and broadcast, awaited, against
//!   queued behind others (group commit, as streamed text is); both again
//!   with the store in PostgreSQL (`tests/ensure-postgres.sh`'s cluster),
//!   against SQLite.
//!
//! `just bench` runs these first; the suite (`benches/suite.rs`) adds their
//! medians to `bench/RESULTS.md`. Alone: `cargo bench -p crogia-tests --bench micro`.

use std::time::Duration;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use crogia_host::events::{EventKind, EventLog};
use crogia_host::store::scratch::ScratchDatabase;
use crogia_host::store::{SessionRecord, Store};
use crogia_sandbox_agent::fs::Workspace;
use crogia_tests::{TestSandbox, dist_plugin, fixture_plugin};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn plugin_call(c: &mut Criterion) {
    let rt = runtime();
    let mut t = TestSandbox::new();
    t.plugin_dir(&[fixture_plugin("fixture-tools"), dist_plugin("read-file")]);
    let (caps, plugins) = rt.block_on(async {
        let caps = t.capabilities().await;
        caps.write_file("f.txt", b"hello".to_vec()).await.unwrap();
        (caps, t.plugins().await)
    });
    let args = r#"{"path":"f.txt"}"#;
    let mut g = c.benchmark_group("plugin_call");
    g.bench_function("host_function_direct", |b| {
        b.to_async(&rt)
            .iter(|| async { caps.stat("f.txt").await.unwrap() })
    });
    g.bench_function("stat_size_tool", |b| {
        b.to_async(&rt).iter(|| async {
            let out = plugins.invoke(caps.clone(), "stat_size", args).await;
            assert_eq!(out.unwrap(), "5");
        })
    });
    g.bench_function("ping_tool", |b| {
        b.to_async(&rt)
            .iter(|| async { plugins.invoke(caps.clone(), "ping", "{}").await.unwrap() })
    });
    // The standard read_file tool on a small file, against reading it
    // through the same capability directly.
    g.bench_function("read_file_direct", |b| {
        b.to_async(&rt)
            .iter(|| async { caps.read_file("f.txt").await.unwrap() })
    });
    g.bench_function("read_file_tool", |b| {
        b.to_async(&rt).iter(|| async {
            let out = plugins.invoke(caps.clone(), "read_file", args).await;
            assert!(out.unwrap().contains("hello"));
        })
    });
    g.finish();
    // The sandbox's container goes with `t`.
    drop(t);
}

fn workspace_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::create(dir.path().join("w")).unwrap();
    let rel = "src/pkg/module/file.txt";
    ws.write(rel, &[b'x'; 4096]).unwrap();
    let joined = ws.root().join(rel);
    let mut g = c.benchmark_group("workspace_read");
    g.bench_function("std_fs_read", |b| {
        b.iter(|| std::fs::read(&joined).unwrap())
    });
    g.bench_function("confined_read", |b| {
        b.iter(|| ws.read(rel, u64::MAX).unwrap())
    });
    g.finish();
}

/// An event log of one session in `store`.
async fn bench_log(store: Store) -> EventLog {
    store
        .insert_session(&SessionRecord {
            id: "bench001".into(),
            container_id: "none".into(),
            workdir: "/none".into(),
            created: Utc::now(),
            last_task: None,
            error: None,
            network: None,
            approval: "default".into(),
            owner: "local".into(),
            budget_tokens: None,
            server: None,
            engine: None,
        })
        .await
        .unwrap();
    EventLog::open(store, "bench001", 4096).await.unwrap()
}

fn event_log(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let db = rt.block_on(ScratchDatabase::create());
    let logs = rt.block_on(async {
        [
            ("", bench_log(Store::open(dir.path()).await.unwrap()).await),
            (
                "_postgres",
                bench_log(Store::connect(&db.config).await.unwrap()).await,
            ),
        ]
    });
    let text = || EventKind::TextDelta {
        content: "a streamed piece of text ".into(),
    };
    let mut g = c.benchmark_group("event_log");
    for (suffix, log) in &logs {
        g.bench_function(format!("publish_awaited{suffix}"), |b| {
            b.to_async(&rt)
                .iter(|| async { log.publish(text()).await.unwrap() })
        });
        g.bench_function(format!("enqueue_streamed{suffix}"), |b| {
            b.to_async(&rt)
                .iter(|| async { log.enqueue(text()).await.unwrap() })
        });
    }
    g.finish();
}

criterion_group! {
    name = micro;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = plugin_call, workspace_read, event_log
}
criterion_main!(micro);
