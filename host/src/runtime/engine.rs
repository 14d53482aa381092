//! [`EngineConfig`]: the wasmtime engine knobs ForgeOne supports, and the
//! epoch ticker that drives deadlines.

use std::hash::Hasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Collector, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::RuntimeError;
use super::compile::{self, CompileLimits};

/// How the runtime's wasmtime engine is set up: only the knobs ForgeOne
/// supports, each with a documented default. Async execution, fuel metering
/// and epoch interruption are always on (the runtime depends on them).
///
/// The WebAssembly proposals are wasmtime 48's defaults (WebAssembly 3.0:
/// SIMD, relaxed SIMD, tail calls, multi-memory, memory64, threads'
/// atomics, function references, exception handling), less the GC
/// proposal: components that throw and catch wasm exceptions (`try_table`,
/// `throw`, `throw_ref`, `exnref`: CPython for WASI, C++ built with
/// `-fwasm-exceptions`) run; components with GC structs or arrays are
/// refused at compile time. Thrown exceptions live in a per-container GC
/// heap, allocated on the first throw (a container that never throws has
/// none) and counted against the container's memory limit like a linear
/// memory; wasmtime's deferred reference-counting collector frees them.
/// An exception that no wasm handler catches ends the run as a
/// [`Failure::Trap`](super::Failure::Trap) (`uncaught wasm exception`)
/// with the thrower's backtrace.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EngineConfig {
    pub(crate) pooling: Option<PoolingLimits>,
    pub(crate) fuel_yield_interval: Option<u64>,
    pub(crate) epoch_tick: Duration,
    pub(crate) max_wasm_stack: usize,
    pub(crate) parallel_compilation: bool,
    pub(crate) stack_cache: usize,
    pub(crate) compile_limits: CompileLimits,
    pub(crate) compile_threads: usize,
}

/// Sizing of the pooling instance allocator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolingLimits {
    pub(crate) total_instances: u32,
    /// Linear memories per instance (each instance also gets a GC heap
    /// slot, for wasm exceptions).
    pub(crate) memories_per_instance: u32,
    pub(crate) max_memory_bytes: u64,
    /// When the pool cannot be set up, allocate on demand (with a warning
    /// and [`Allocation::OnDemand`] naming why) instead of failing.
    pub(crate) fallback: bool,
}

/// Bytes of address space one memory slot of the pool reserves: wasmtime's
/// default static reservation on 64-bit hosts (4 GiB, which lets compiled
/// code skip bounds checks) plus its default 32 MiB guard.
const SLOT_RESERVATION: u64 = (4 << 30) + (32 << 20);

/// The most address space a pool may reserve: a quarter of the 128 TiB a
/// 64-bit Linux process can map, so the host's own mappings (and a second
/// runtime in the same process) keep room.
const POOL_BUDGET: u64 = 32 << 40;

/// The largest linear memory a pool slot holds (its static reservation).
const SLOT_MEMORY: u64 = 4 << 30;

/// The instance allocator a runtime's engine uses
/// ([`Runtime::allocation`](super::Runtime::allocation)).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Allocation {
    /// wasmtime's pooling allocator with copy-on-write memory images: a
    /// start takes a prepared slot instead of mapping memory.
    Pooling {
        /// Component instances (containers and plugin calls) that can be
        /// alive at once; one more fails to instantiate.
        instances: u32,
        /// Linear-memory slots (GC heaps included).
        memories: u32,
        /// The largest linear memory, in bytes.
        max_memory: u64,
    },
    /// Memory and stacks mapped for each instance.
    OnDemand {
        /// Why the pool that was asked for is not used (the deployment does
        /// not fit it); `None` when none was asked for.
        fallback: Option<String>,
    },
}

impl std::fmt::Display for Allocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Allocation::Pooling {
                instances,
                memories,
                max_memory,
            } => write!(
                f,
                "pooling: {instances} instances, {memories} memory slots of up to {}",
                bytesize::ByteSize(*max_memory).display().iec()
            ),
            Allocation::OnDemand { fallback: None } => f.write_str("on demand"),
            Allocation::OnDemand {
                fallback: Some(why),
            } => write!(f, "on demand, not pooling: {why}"),
        }
    }
}

impl PoolingLimits {
    /// Memory slots: the linear memories and a GC heap per instance.
    fn slots(&self) -> u64 {
        u64::from(self.total_instances) * (u64::from(self.memories_per_instance) + 1)
    }

    /// Why this pool cannot be set up on this host, if it cannot.
    fn misfit(&self) -> Option<String> {
        if self.max_memory_bytes > SLOT_MEMORY {
            return Some(format!(
                "a memory limit of {} is over the pool's {} slots",
                bytesize::ByteSize(self.max_memory_bytes).display().iec(),
                bytesize::ByteSize(SLOT_MEMORY).display().iec()
            ));
        }
        let reserved = self.slots().saturating_mul(SLOT_RESERVATION);
        (reserved > POOL_BUDGET).then(|| {
            format!(
                "{} instances need {} memory slots, {} of address space, over the pool's budget of {}",
                self.total_instances,
                self.slots(),
                bytesize::ByteSize(reserved).display().iec(),
                bytesize::ByteSize(POOL_BUDGET).display().iec()
            )
        })
    }

    fn allocation(&self) -> Allocation {
        Allocation::Pooling {
            instances: self.total_instances,
            memories: u32::try_from(self.slots()).unwrap_or(u32::MAX),
            max_memory: self.max_memory_bytes,
        }
    }

    fn config(&self) -> PoolingAllocationConfig {
        let instances = self.total_instances;
        let slots = u32::try_from(self.slots()).unwrap_or(u32::MAX);
        let mut pooling = PoolingAllocationConfig::new();
        pooling
            .total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(8))
            // The linear memories of each instance, and a GC heap (it is a
            // memory slot too) per store that throws exceptions.
            .total_memories(slots)
            .total_gc_heaps(instances)
            .total_tables(instances.saturating_mul(2))
            .total_stacks(instances)
            .max_memory_size(usize::try_from(self.max_memory_bytes).unwrap_or(usize::MAX));
        pooling
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig::new()
    }
}

impl EngineConfig {
    /// The defaults: on-demand allocation with up to 16 idle fiber stacks
    /// kept for reuse, a fuel yield every 1,000,000 units, a 10 ms epoch
    /// tick, a 512 KiB wasm stack, parallel compilation on a pool of half
    /// the cores, and the structural limits below (100,000 functions,
    /// 64 MiB of code, 1 MiB per function, 10,000,000 locals, 100 core
    /// modules).
    pub fn new() -> Self {
        EngineConfig {
            pooling: None,
            fuel_yield_interval: Some(1_000_000),
            epoch_tick: Duration::from_millis(10),
            max_wasm_stack: 512 * 1024,
            parallel_compilation: true,
            stack_cache: 16,
            compile_limits: CompileLimits::default(),
            compile_threads: compile::default_threads(),
        }
    }

    /// Uses wasmtime's pooling instance allocator with copy-on-write memory
    /// images, sized for `total_instances` concurrent component instances,
    /// each with at most `max_memory_bytes` of linear memory per memory
    /// (and per GC heap: a container that throws wasm exceptions takes one
    /// more memory slot for them).
    /// Instantiation becomes a few microseconds; the pool reserves virtual
    /// address space up front. By default, this is disabled (memory is
    /// allocated on demand, still with copy-on-write images).
    pub fn pooling(&mut self, total_instances: u32, max_memory_bytes: u64) -> &mut Self {
        self.pooling = Some(PoolingLimits {
            total_instances,
            memories_per_instance: 2,
            max_memory_bytes,
            fallback: false,
        });
        self
    }

    /// Uses the pooling allocator, as [`pooling`](Self::pooling) does, sized
    /// for `total_instances` instances of up to `memories_per_instance`
    /// linear memories of at most `max_memory_bytes` each (plus a GC heap
    /// slot per instance), when that pool fits this host; otherwise
    /// allocates on demand and says why
    /// ([`Allocation::OnDemand`], and a warning in the log). A pool does
    /// not fit when a memory limit is over 4 GiB (the size of a slot), when
    /// its slots would reserve more than 32 TiB of address space (each
    /// slot reserves 4 GiB and a guard, so that compiled code needs no
    /// bounds checks), or when wasmtime cannot set it up. This is how
    /// [`KernelConfig::from_deployment`](crate::kernel::KernelConfig::from_deployment)
    /// sizes the pool of `forgeone up` and of a cluster host.
    pub fn pooling_or_on_demand(
        &mut self,
        total_instances: u32,
        memories_per_instance: u32,
        max_memory_bytes: u64,
    ) -> &mut Self {
        self.pooling = Some(PoolingLimits {
            total_instances,
            memories_per_instance: memories_per_instance.max(1),
            max_memory_bytes,
            fallback: true,
        });
        self
    }

    /// How much fuel a guest burns between yields to the async executor:
    /// the preemption granularity for pause, stop and the scheduler's
    /// priority lanes. `None` disables fuel yields (epoch ticks still yield
    /// a paused or stopping guest). By default, 1,000,000: about 43 µs of
    /// a tight loop on the benches' 2-core Xeon VM, which burns 2.31e10
    /// fuel a second under ForgeOne (`cargo bench -p forgeone-benches
    /// --bench fuel`, its last line); real programs burn less fuel a
    /// second (host calls burn none), so their slices last longer.
    pub fn fuel_yield_interval(&mut self, interval: Option<u64>) -> &mut Self {
        self.fuel_yield_interval = interval.filter(|i| *i > 0);
        self
    }

    /// The epoch tick: how often a background thread advances the engine
    /// epoch, i.e. the resolution of deadlines enforced inside wasm code. By
    /// default, 10 ms.
    pub fn epoch_tick(&mut self, tick: Duration) -> &mut Self {
        self.epoch_tick = tick.max(Duration::from_millis(1));
        self
    }

    /// The maximum wasm stack per container; deeper recursion traps with a
    /// stack overflow. By default, 512 KiB.
    pub fn max_wasm_stack(&mut self, bytes: usize) -> &mut Self {
        self.max_wasm_stack = bytes;
        self
    }

    /// With on-demand allocation, how many idle fiber stacks (each container
    /// runs on one) stay mapped for the next container instead of being
    /// unmapped and mapped again; 0 disables the cache. Each costs
    /// [`max_wasm_stack`](Self::max_wasm_stack) + 1 MiB of address space,
    /// resident only as deep as a guest ever used it. The pooling allocator
    /// keeps its own stacks. By default, 16.
    pub fn stack_cache(&mut self, stacks: usize) -> &mut Self {
        self.stack_cache = stacks;
        self
    }

    /// Compiles the functions of one component in parallel, on the
    /// compile pool's threads (see [`compile_threads`](Self::compile_threads)).
    /// By default, enabled.
    pub fn parallel_compilation(&mut self, enable: bool) -> &mut Self {
        self.parallel_compilation = enable;
        self
    }

    /// How many threads compile components: compiles (and the parallelism
    /// within one) never use more, and never run on the threads that run
    /// containers; a compile waiting for a thread waits in a queue. At
    /// least 1. By default, half the cores (at least 1).
    pub fn compile_threads(&mut self, threads: usize) -> &mut Self {
        self.compile_threads = threads.max(1);
        self
    }

    /// The most function bodies a component may hold, all its core modules
    /// together; a component with more is refused before it is compiled
    /// ([`RuntimeError::TooComplex`]). By default, 100,000.
    pub fn max_functions(&mut self, functions: u64) -> &mut Self {
        self.compile_limits.functions = functions;
        self
    }

    /// The most bytes of code (code sections) a component may hold, all its
    /// core modules together; checked before compiling. By default, 64 MiB.
    pub fn max_code_size(&mut self, bytes: u64) -> &mut Self {
        self.compile_limits.code_size = bytes;
        self
    }

    /// The largest function body, in bytes; checked before compiling. By
    /// default, 1 MiB.
    pub fn max_function_size(&mut self, bytes: u64) -> &mut Self {
        self.compile_limits.function_size = bytes;
        self
    }

    /// The most locals a component's functions may declare, all together
    /// (a few bytes can declare 50,000 locals, each of which costs the
    /// compiler); checked before compiling. By default, 10,000,000.
    pub fn max_locals(&mut self, locals: u64) -> &mut Self {
        self.compile_limits.locals = locals;
        self
    }

    /// The most core modules a component may hold; checked before
    /// compiling. By default, 100.
    pub fn max_modules(&mut self, modules: u64) -> &mut Self {
        self.compile_limits.modules = modules;
        self
    }

    /// Builds the wasmtime engine, and says which allocator it uses.
    pub(crate) fn build(&self) -> Result<(Engine, Allocation), RuntimeError> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            // Exceptions need wasmtime's GC support (`gc_support`, on with
            // the `gc` cargo feature) for their exnref objects; the GC
            // proposal's own types (structs, arrays, i31) are not needed
            // and stay off.
            .wasm_exceptions(true)
            .wasm_gc(false)
            .collector(Collector::DeferredReferenceCounting)
            .consume_fuel(true)
            .epoch_interruption(true)
            .memory_init_cow(true)
            .parallel_compilation(self.parallel_compilation)
            .max_wasm_stack(self.max_wasm_stack)
            // The async stack must hold the wasm stack plus host frames.
            .async_stack_size(self.max_wasm_stack + 1024 * 1024);
        let build = |config: &Config| {
            Engine::new(config).map_err(|e| RuntimeError::engine("building the engine", e))
        };
        let mut fallback = None;
        if let Some(pool) = self.pooling {
            let why = match pool.misfit().filter(|_| pool.fallback) {
                Some(why) => why,
                None => {
                    let mut pooled = config.clone();
                    pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pool.config()));
                    match build(&pooled) {
                        Ok(engine) => return Ok((engine, pool.allocation())),
                        Err(e) if pool.fallback => format!(
                            "the pool for {} instances cannot be set up: {e}",
                            pool.total_instances
                        ),
                        Err(e) => return Err(e),
                    }
                }
            };
            tracing::warn!(
                target: "forgeone::runtime",
                "the deployment does not fit the pooling allocator ({why}); \
                 containers are allocated on demand"
            );
            fallback = Some(why);
        }
        if self.stack_cache > 0 {
            #[cfg(unix)]
            config.with_host_stack(Arc::new(super::stacks::StackCache::new(self.stack_cache)));
        }
        Ok((build(&config)?, Allocation::OnDemand { fallback }))
    }
}

/// A blake3-backed `Hasher`, so the engine's compatibility hash becomes a
/// stable 32-byte fingerprint (std's `DefaultHasher` is 64 bits and its
/// algorithm is unspecified).
struct FingerprintHasher(blake3::Hasher);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        let hash = self.0.finalize();
        u64::from_le_bytes(hash.as_bytes()[..8].try_into().unwrap_or([0; 8]))
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// A fingerprint of everything that makes compiled code compatible with
/// `engine` (wasmtime version, target, compiler flags, features).
pub(crate) fn engine_fingerprint(engine: &Engine) -> [u8; 32] {
    use std::hash::Hash;
    let mut hasher = FingerprintHasher(blake3::Hasher::new());
    hasher.0.update(b"forgeone.engine.v1\0");
    engine.precompile_compatibility_hash().hash(&mut hasher);
    *hasher.0.finalize().as_bytes()
}

/// Advances the engine epoch every tick until dropped.
#[derive(Debug)]
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: &Engine, tick: Duration) -> Result<EpochTicker, RuntimeError> {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("forgeone-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::park_timeout(tick);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| RuntimeError::engine("starting the epoch thread", e))?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
