//! The wasm engine every plugin shares: epoch interruption, the pooling
//! allocator when the machine allows it, the thread that advances the epoch,
//! and the deadline armed in every store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use super::host::PluginState;
use crate::config::PluginsConfig;

/// How often the engine's epoch advances; the granularity of time limits.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Advances the engine's epoch on a thread of its own, so deadlines fire even
/// when every async worker is busy.
pub(super) struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub(super) fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("crogia-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Arms a store's time limit: the epoch callback yields to tokio every tick
/// (so a spinning plugin never holds a worker thread) and traps once the
/// deadline has passed.
pub(crate) fn arm_deadline(store: &mut Store<PluginState>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            Err(Trap::Interrupt.into())
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
}

/// Bytes of each pooled linear memory kept resident between instances.
const KEEP_RESIDENT_MEMORY: usize = 2 << 20;
/// Bytes of each pooled table kept resident between instances.
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

pub(super) fn build_engine(plugins: &PluginsConfig, max_memory: usize) -> anyhow::Result<Engine> {
    let base = || {
        let mut c = wasmtime::Config::new();
        c.wasm_component_model(true);
        c.epoch_interruption(true);
        c
    };
    if plugins.pooling {
        let n = plugins.max_concurrent;
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(n)
            .total_core_instances(n * 8)
            .max_core_instances_per_component(16)
            .total_memories(n * 2)
            .max_memories_per_component(4)
            .total_tables(n * 8)
            .total_stacks(n)
            .max_memory_size(max_memory)
            // A finished instance's slot is reset by zeroing the pages it
            // dirtied (found with PAGEMAP_SCAN on Linux 6.7+) instead of
            // unmapping them: no madvise, no TLB shootdown across cores and
            // no page faults when the slot is used again.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
            .table_keep_resident(KEEP_RESIDENT_TABLE);
        let mut c = base();
        c.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        match Engine::new(&c) {
            Ok(engine) => return Ok(engine),
            Err(e) => {
                tracing::warn!(error = %e, "pooling allocator unavailable; allocating instances on demand")
            }
        }
    }
    Engine::new(&base()).map_err(|e| anyhow::anyhow!("creating the wasm engine: {e}"))
}
