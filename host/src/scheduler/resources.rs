//! [`ResourceMonitor`]: what this node really has in use, as a
//! [`ResourceState`].
//!
//! CPU comes from the executor's busy-time counters (per class); memory,
//! storage and network from the commitments the runtime makes when it
//! starts a container ([`ResourceMonitor::commit`], released when the
//! returned guard is dropped). The local node's placement load score reads
//! it through [`LocalNode`](super::LocalNode).

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::executor::{CpuStats, Executor};
use super::types::{CpuState, MemoryState, NetworkState, ResourceState, StorageState};

/// What one running container holds on the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Commitment {
    /// Its memory limit in bytes.
    pub memory: u64,
    /// Its CPU reservation in thousandths of a core.
    pub cpu_millis: u64,
    /// Its storage grant in bytes.
    pub storage: u64,
    /// Whether it was granted network access.
    pub network: bool,
}

/// Measures a node's resources. Cheap to clone; clones share the counters.
/// The [`Kernel`](crate::Kernel) attaches its monitor to its executor for
/// CPU; a monitor made elsewhere reports commitments but no CPU.
#[derive(Clone)]
pub struct ResourceMonitor {
    inner: Arc<MonitorInner>,
}

struct MonitorInner {
    memory_total: u64,
    storage_total: u64,
    memory: AtomicU64,
    cpu_millis: AtomicU64,
    storage: AtomicU64,
    network: AtomicU32,
    cpu: Mutex<Option<Arc<CpuStats>>>,
    window: Mutex<(Instant, [u64; 5])>,
}

impl fmt::Debug for ResourceMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceMonitor")
            .field("memory_total", &self.inner.memory_total)
            .field(
                "memory_committed",
                &self.inner.memory.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl ResourceMonitor {
    /// A monitor for a node offering `memory_total` bytes of memory and
    /// `storage_total` bytes of storage to containers.
    pub fn new(memory_total: u64, storage_total: u64) -> ResourceMonitor {
        ResourceMonitor {
            inner: Arc::new(MonitorInner {
                memory_total,
                storage_total,
                memory: AtomicU64::new(0),
                cpu_millis: AtomicU64::new(0),
                storage: AtomicU64::new(0),
                network: AtomicU32::new(0),
                cpu: Mutex::new(None),
                window: Mutex::new((Instant::now(), [0; 5])),
            }),
        }
    }

    /// Reads CPU from `executor` from now on.
    pub(crate) fn attach(&self, executor: &Executor) {
        *self.inner.cpu.lock().unwrap_or_else(|p| p.into_inner()) = Some(executor.stats());
    }

    /// Records that a container now holds `commitment`; the runtime calls
    /// this when it starts one and keeps the guard for the container's
    /// life. Dropping the guard gives the resources back.
    pub fn commit(&self, commitment: Commitment) -> CommitGuard {
        let i = &self.inner;
        i.memory.fetch_add(commitment.memory, Ordering::Relaxed);
        i.cpu_millis
            .fetch_add(commitment.cpu_millis, Ordering::Relaxed);
        i.storage.fetch_add(commitment.storage, Ordering::Relaxed);
        if commitment.network {
            i.network.fetch_add(1, Ordering::Relaxed);
        }
        CommitGuard {
            monitor: self.clone(),
            commitment,
        }
    }

    /// The node's state now. CPU utilisation and class shares cover the time
    /// since the previous snapshot.
    pub fn snapshot(&self) -> ResourceState {
        self.read(true)
    }

    /// Like [`ResourceMonitor::snapshot`], without starting a new window:
    /// for observers (metrics) that must not change what the next snapshot
    /// reports.
    pub fn peek(&self) -> ResourceState {
        self.read(false)
    }

    fn read(&self, new_window: bool) -> ResourceState {
        let i = &self.inner;
        let stats = i.cpu.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut cpu = CpuState {
            committed_millis: i.cpu_millis.load(Ordering::Relaxed),
            ..CpuState::default()
        };
        if let Some(stats) = stats {
            let busy: [u64; 5] = std::array::from_fn(|c| stats.busy_ns[c].load(Ordering::Relaxed));
            let mut window = i.window.lock().unwrap_or_else(|p| p.into_inner());
            let elapsed = window.0.elapsed().as_nanos() as f64;
            let delta: [u64; 5] = std::array::from_fn(|c| busy[c].saturating_sub(window.1[c]));
            let total: u64 = delta.iter().sum();
            cpu.cores = u32::try_from(stats.workers).unwrap_or(u32::MAX);
            if elapsed > 0.0 {
                cpu.utilisation = (total as f64 / (elapsed * stats.workers as f64)).min(1.0);
            }
            if total > 0 {
                cpu.class_share = std::array::from_fn(|c| delta[c] as f64 / total as f64);
            }
            cpu.busy = std::array::from_fn(|c| Duration::from_nanos(busy[c]));
            if new_window {
                *window = (Instant::now(), busy);
            }
        }
        ResourceState {
            cpu,
            memory: MemoryState {
                total: i.memory_total,
                committed: i.memory.load(Ordering::Relaxed),
            },
            storage: StorageState {
                total: i.storage_total,
                granted: i.storage.load(Ordering::Relaxed),
            },
            network: NetworkState {
                granted: i.network.load(Ordering::Relaxed),
            },
        }
    }
}

/// Holds a container's [`Commitment`] on the node; dropping it releases it.
#[derive(Debug)]
#[must_use = "dropping the guard releases the commitment at once"]
pub struct CommitGuard {
    monitor: ResourceMonitor,
    commitment: Commitment,
}

impl Drop for CommitGuard {
    fn drop(&mut self) {
        let i = &self.monitor.inner;
        let c = self.commitment;
        i.memory.fetch_sub(c.memory, Ordering::Relaxed);
        i.cpu_millis.fetch_sub(c.cpu_millis, Ordering::Relaxed);
        i.storage.fetch_sub(c.storage, Ordering::Relaxed);
        if c.network {
            i.network.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::identity::Priority;

    use super::super::executor::Executor;
    use super::super::executor::tests::{unit, yield_now};
    use super::ResourceMonitor;

    #[test]
    fn cpu_accounting_feeds_resource_state() {
        let ex = Executor::builder().workers(2).build().unwrap();
        let monitor = ResourceMonitor::new(1 << 30, 0);
        monitor.attach(&ex);
        let _ = monitor.snapshot();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                ex.spawn(
                    async {
                        for _ in 0..20 {
                            unit();
                            yield_now().await;
                        }
                    },
                    Priority::Critical,
                )
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let state = monitor.snapshot();
        assert_eq!(state.cpu.cores, 2);
        assert!(state.cpu.busy[0] > Duration::ZERO);
        assert_eq!(state.cpu.busy[4], Duration::ZERO);
        assert!(
            state.cpu.class_share[0] > 0.99,
            "{:?}",
            state.cpu.class_share
        );
        assert!(state.cpu.utilisation > 0.0);
        ex.shutdown();
    }
}
