//! Plugin runtime overhead, measured side by side in one run:
//!
//! - a trivial tool making one host call (`stat_size` → `files.stat`) through
//!   the runtime, against calling the same host function (`Capabilities::stat`)
//!   directly, alternating A, B, A, B…;
//! - a tool making no host call (`ping`);
//! - loading every standard plugin: cold (empty compile cache) and warm.
//!
//! Run with `just bench` (release build). Prints medians and p99s.

use std::time::{Duration, Instant};

use crogia_host::plugins::PluginRuntime;
use crogia_tests::{TestSandbox, dist_plugin, fixture_plugin};

const ROUNDS: usize = 3000;
const WARMUP: usize = 200;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(name: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!(
        "{name:<44} p50 {:>9.1} µs   p99 {:>9.1} µs",
        us(p50),
        us(p99)
    );
    (p50, p99)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut t = TestSandbox::new();
    let all_standard: Vec<_> = [
        "edit-file",
        "grep",
        "list-files",
        "processes",
        "read-file",
        "search-files",
        "shell",
        "write-file",
    ]
    .iter()
    .map(|c| dist_plugin(c))
    .collect();
    let mut files = all_standard.clone();
    files.push(fixture_plugin("fixture-tools"));
    t.plugin_dir(&files);
    let caps = t.capabilities().await;
    caps.write_file("f.txt", b"hello".to_vec()).await.unwrap();
    let rt = t.plugins().await;
    let args = r#"{"path":"f.txt"}"#;

    for _ in 0..WARMUP {
        caps.stat("f.txt").await.unwrap();
        rt.invoke(caps.clone(), "stat_size", args).await.unwrap();
        rt.invoke(caps.clone(), "ping", "{}").await.unwrap();
    }
    let (mut direct, mut via_plugin, mut ping) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let s = Instant::now();
        caps.stat("f.txt").await.unwrap();
        direct.push(s.elapsed());
        let s = Instant::now();
        assert_eq!(
            rt.invoke(caps.clone(), "stat_size", args).await.unwrap(),
            "5"
        );
        via_plugin.push(s.elapsed());
        let s = Instant::now();
        rt.invoke(caps.clone(), "ping", "{}").await.unwrap();
        ping.push(s.elapsed());
    }
    println!("plugin invocation ({ROUNDS} rounds, alternating)");
    let (d50, d99) = summary("A: host function files.stat, called directly", direct);
    let (p50, p99) = summary("B: stat_size tool (same host call) via runtime", via_plugin);
    summary("ping tool (no host call) via runtime", ping);
    println!(
        "overhead of the runtime (B - A): p50 {:.1} µs, p99 {:.1} µs; ratio B/A p50 {:.2}×",
        us(p50.saturating_sub(d50)),
        us(p99.saturating_sub(d99)),
        p50.as_secs_f64() / d50.as_secs_f64()
    );

    // Start-up: load the standard plugins, cold then from the compile cache.
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for round in 0..5 {
        let mut config = t.config.clone();
        config.server.data_dir = t.tmp.path().join(format!("start-{round}"));
        config.plugins.dir = dist_plugin("read-file").parent().unwrap().to_path_buf();
        let s = Instant::now();
        let rt = PluginRuntime::new(&config).unwrap();
        let report = rt.reload().await;
        cold.push(s.elapsed());
        assert_eq!(report.from_cache, 0);
        drop(rt);
        let s = Instant::now();
        let rt = PluginRuntime::new(&config).unwrap();
        let report = rt.reload().await;
        warm.push(s.elapsed());
        assert_eq!(report.from_cache, all_standard.len());
    }
    println!("plugin start-up ({} plugins, 5 rounds)", all_standard.len());
    cold.sort();
    warm.sort();
    println!(
        "{:<44} median {:>8.1} ms",
        "cold (compile every plugin)",
        cold[2].as_secs_f64() * 1e3
    );
    println!(
        "{:<44} median {:>8.1} ms",
        "with the compile cache",
        warm[2].as_secs_f64() * 1e3
    );
}
