//! P6: priority isolation, on real wasm guests on the real stack.
//!
//! The *critical workload* is the `cpu-hog` sample run for a bounded
//! number of iterations ([`CRITICAL_ITERATIONS`]) as a ForgeOne container
//! (`Runtime::prepare_container`, default limits, fuel-metered with a
//! preemptive yield every fuel interval, output captured to the audit log)
//! spawned on the work-stealing [`Executor`] at `Priority::Critical` — the
//! same two calls `Kernel` makes for a placed workload, without placement.
//! Its latency is the wall time from `spawn_with` to the settled
//! [`Outcome`] (the container is prepared and removed outside the timing).
//!
//! It is measured, in the same run and on the same executor:
//!
//! - **alone** (the P6 baseline: idle workers);
//! - with **background hogs** filling every worker: one endless `cpu-hog`
//!   (no argument, no fuel budget, no timeout) per worker at
//!   `Priority::Background`, stopped with `stop_with_grace(id, 0)` after the
//!   case;
//! - with the same hogs at `Priority::Normal` (class weight 4 against
//!   Critical's 16) and at `Priority::Critical` (the critical job's own
//!   class: the share a FIFO pool without priority classes would give);
//! - and, as a reference, the same component run to completion on **bare
//!   wasmtime** (no metering, minimal WASI context, the kernel imports
//!   stubbed) on the bench thread, alone.
//!
//! Criterion reports the mean per case. After the group, a summary prints
//! each case's median and p99 per-job latency (every job criterion ran,
//! its warm-up included: all of them are steady state) with the ratio of
//! medians to the critical job alone, and the share of executor CPU time
//! each class got during the case ([`Executor::busy`]), and how the job
//! was polled (a probe wrapping its future counts slices, and migrations:
//! slices run on another worker than the one before).
//!
//! Reading the figures: the critical job is one task, so it occupies one
//! worker at a time, and the CPU share is over all workers. The bound the
//! executor promises is a wait of one slice (one fuel interval of whatever
//! runs there) per slice of the critical job. With hogs at its own class
//! the job stays in the local deque of the worker it started on and shares
//! that worker with its hog, so expect about 2x rather than the 1.5x a
//! global fair share of three tasks on two workers would give. "Alone"
//! leaves the other workers idle; every yield of the lone task then wakes
//! an idle worker, which can make "alone" slightly slower than "with
//! background hogs".
//!
//! The components are loaded with `VerifiedComponent::unsigned` and
//! `RuntimeConfig::allow_unsigned(true)`: signature checking happens at
//! load time, which P1 measures, and has no bearing on scheduling.
//!
//! A second group, `P6 synthetic`, keeps the earlier executor-only
//! measurement: CPU-bound Rust futures that yield like fuel-metered guests,
//! with four hogs per worker. It isolates the executor's policy from the
//! wasm stack (instantiation, WASI, audit, fuel), which helps tell where a
//! difference in the wasm figures comes from.
//!
//! Builds the samples into `samples/target` on first use. Run with
//! `cargo bench -p forgeone-benches --bench priority`.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use forgeone::Priority;
use forgeone::SigningKey;
use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::VerifiedComponent;
use forgeone::identity::{IdentityContext, TrustLevel, TrustVector};
use forgeone::runtime::{
    ContainerConfig, ContainerContext, ContainerStatus, Outcome, Runtime, RuntimeConfig,
};
use forgeone::scheduler::{Executor, JoinHandle, SpawnOptions, current_worker, yield_now};
use wasmtime::component::{Component, Linker, ResourceTable, Val};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Iterations of the critical job (`cpu-hog N`): about 78M fuel, 79
/// slices at the default fuel yield interval.
const CRITICAL_ITERATIONS: &str = "2000000";

/// `EngineConfig`'s default fuel yield interval, to express a job's fuel
/// in slices.
const FUEL_YIELD_INTERVAL: u64 = 1_000_000;

// ---------------------------------------------------------------------------
// Bare wasmtime reference.

struct Bare {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The kernel imports `cpu-hog` links against (through the guest SDK),
/// answered with constants, as in the `fuel` bench.
fn stub_kernel(linker: &mut Linker<Bare>) {
    let mut identity = linker.instance("forgeone:kernel/identity@0.1.0").unwrap();
    identity
        .func_new("current", |_, _, _, results| {
            results[0] = Val::Record(vec![
                ("container-id".into(), Val::String("bare".into())),
                ("workload".into(), Val::Option(None)),
                ("tenant".into(), Val::String("bench".into())),
                ("principal".into(), Val::String("p6".into())),
                ("trust".into(), Val::Enum("medium".into())),
                ("component-digest".into(), Val::String("-".into())),
                ("signers".into(), Val::List(Vec::new())),
            ]);
            Ok(())
        })
        .unwrap();
    let mut log = linker.instance("forgeone:kernel/log@0.1.0").unwrap();
    log.func_new("write", |_, _, _, _| Ok(())).unwrap();
}

struct BareJob {
    engine: Engine,
    pre: CommandPre<Bare>,
    tokio: tokio::runtime::Runtime,
}

impl BareJob {
    fn new(wasm: &[u8]) -> BareJob {
        let engine = Engine::new(&Config::new()).unwrap();
        let component = Component::new(&engine, wasm).unwrap();
        let mut linker = Linker::<Bare>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        stub_kernel(&mut linker);
        let pre = CommandPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        BareJob { engine, pre, tokio }
    }

    /// Instantiates and runs the critical job to completion.
    fn run(&self) -> Duration {
        let start = Instant::now();
        self.tokio.block_on(async {
            let mut store = Store::new(
                &self.engine,
                Bare {
                    wasi: WasiCtx::builder()
                        .args(&["cpu-hog", CRITICAL_ITERATIONS])
                        .build(),
                    table: ResourceTable::new(),
                },
            );
            let command = self.pre.instantiate_async(&mut store).await.unwrap();
            command
                .wasi_cli_run()
                .call_run(&mut store)
                .await
                .unwrap()
                .unwrap()
        });
        start.elapsed()
    }
}

// ---------------------------------------------------------------------------
// ForgeOne: runtime + executor.

/// How a task was polled: slices run, and how often consecutive slices ran
/// on different workers.
#[derive(Debug, Default, Clone, Copy)]
struct Polls {
    slices: u32,
    migrations: u32,
    last_worker: Option<usize>,
}

/// Wraps a container's future to count its slices and worker migrations
/// (one thread-local read per poll, nothing else).
struct Probe<F> {
    inner: F,
    polls: Polls,
}

impl<F: Future + Unpin> Future for Probe<F> {
    type Output = (F::Output, Polls);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let worker = current_worker();
        this.polls.slices += 1;
        if this.polls.last_worker.is_some() && this.polls.last_worker != worker {
            this.polls.migrations += 1;
        }
        this.polls.last_worker = worker;
        Pin::new(&mut this.inner)
            .poll(cx)
            .map(|out| (out, this.polls))
    }
}

struct Stack {
    runtime: Runtime,
    executor: Executor,
    identity: IdentityContext,
    critical: ContainerConfig,
    hog: ContainerConfig,
}

impl Stack {
    fn new(wasm: &[u8], audit: AuditLog) -> Stack {
        // Unsigned components are fine here: see the module docs.
        let mut config = RuntimeConfig::new();
        config.allow_unsigned(true);
        let runtime = Runtime::new(config, audit).unwrap();
        let executor = Executor::new().unwrap();
        let component = VerifiedComponent::unsigned("cpu-hog", wasm.to_vec());
        let mut critical = ContainerConfig::new(component.clone());
        critical.name("critical").arg(CRITICAL_ITERATIONS);
        let mut hog = ContainerConfig::new(component);
        hog.name("hog").fuel(None).timeout(None);
        Stack {
            runtime,
            executor,
            identity: IdentityContext::new("bench", "p6", TrustVector::new(TrustLevel::Medium, 0)),
            critical,
            hog,
        }
    }

    /// Prepares `config` and spawns it at `class`. Every task here, the
    /// critical job and the hogs alike, runs at the same trust level within
    /// its class, so only the priority class differs between them.
    fn spawn(&self, config: &ContainerConfig, class: Priority) -> JoinHandle<Outcome> {
        let prepared = self
            .runtime
            .prepare_container(config.clone(), self.identity.clone())
            .unwrap();
        let mut options = SpawnOptions::new(class);
        options.trust(self.identity.trust.level);
        self.executor
            .spawn_with(prepared.into_future(), &options)
            .unwrap()
    }

    /// Runs the critical job once: its latency from spawn to settled, its
    /// outcome, and how it was polled.
    fn critical_job(&self) -> (Duration, Outcome, Polls) {
        let prepared = self
            .runtime
            .prepare_container(self.critical.clone(), self.identity.clone())
            .unwrap();
        let id = prepared.id();
        let mut options = SpawnOptions::new(Priority::Critical);
        options.trust(self.identity.trust.level);
        let probe = Probe {
            inner: prepared.into_future(),
            polls: Polls::default(),
        };
        let start = Instant::now();
        let (outcome, polls) = self
            .executor
            .spawn_with(probe, &options)
            .unwrap()
            .join()
            .unwrap();
        let elapsed = start.elapsed();
        assert!(outcome.is_success(), "critical job: {outcome}");
        self.runtime.remove(id).unwrap();
        (elapsed, outcome, polls)
    }

    /// The hog containers the runtime knows of.
    fn hogs(&self) -> Vec<ContainerContext> {
        self.runtime
            .list()
            .into_iter()
            .filter(|c| c.name == "hog")
            .collect()
    }

    /// Starts one endless hog per worker at `class` and waits until they
    /// all run.
    fn start_hogs(&self, class: Priority) -> Vec<JoinHandle<Outcome>> {
        let workers = self.executor.workers();
        let handles = (0..workers).map(|_| self.spawn(&self.hog, class)).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let hogs = self.hogs();
            let running = hogs
                .iter()
                .filter(|c| matches!(c.status, ContainerStatus::Running))
                .count();
            if hogs.len() == workers && running == workers {
                break;
            }
            assert!(Instant::now() < deadline, "hogs did not start: {hogs:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Let them settle into their steady state.
        std::thread::sleep(Duration::from_millis(100));
        handles
    }

    /// Stops the hogs at once, checks they were still running (not ended
    /// by a limit) when stopped, and forgets them.
    fn stop_hogs(&self, handles: Vec<JoinHandle<Outcome>>) {
        for hog in self.hogs() {
            self.runtime
                .stop_with_grace(hog.id, Duration::ZERO)
                .unwrap();
        }
        for handle in handles {
            let outcome = handle.join().unwrap();
            assert!(
                outcome.failure().is_none() && !outcome.is_success(),
                "a hog ended by itself: {outcome}"
            );
        }
        for hog in self.hogs() {
            self.runtime.remove(hog.id).unwrap();
        }
    }
}

/// One case's per-job latencies and the executor's busy time per class
/// during it.
struct Case {
    name: &'static str,
    latencies: Vec<Duration>,
    /// Per ForgeOne job: slices and worker migrations.
    polls: Vec<Polls>,
    busy: Option<[Duration; 5]>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank]
}

fn summary(cases: &mut [Case], baseline: &str) {
    for case in cases.iter_mut() {
        case.latencies.sort_unstable();
    }
    // A criterion filter may have skipped cases, the baseline included.
    let base = cases
        .iter()
        .find(|c| c.name == baseline && !c.latencies.is_empty())
        .map(|c| percentile(&c.latencies, 0.5));
    println!();
    println!(
        "P6 summary (per critical job, spawn to settled; ratio = median / median alone; \
         slices and migrations: mean polls per job and mean polls on a different worker than \
         the previous one)"
    );
    println!(
        "{:<44} {:>6} {:>10} {:>10} {:>7} {:>8} {:>11}   executor CPU share Crit/High/Norm/Low/Bg",
        "case", "jobs", "median", "p99", "ratio", "slices", "migrations"
    );
    for case in cases.iter().filter(|c| !c.latencies.is_empty()) {
        let median = percentile(&case.latencies, 0.5);
        let p99 = percentile(&case.latencies, 0.99);
        let share = case.busy.map_or_else(String::new, |busy| {
            let total: f64 = busy.iter().map(Duration::as_secs_f64).sum();
            busy.iter()
                .map(|b| format!("{:.1}%", 100.0 * b.as_secs_f64() / total.max(1e-9)))
                .collect::<Vec<_>>()
                .join(" / ")
        });
        // Mean slices per job and mean worker migrations per job.
        let mean = |f: fn(&Polls) -> u32| {
            if case.polls.is_empty() {
                "-".to_string()
            } else {
                let sum: u64 = case.polls.iter().map(|p| u64::from(f(p))).sum();
                format!("{:.1}", sum as f64 / case.polls.len() as f64)
            }
        };
        let ratio = base.map_or_else(
            || "-".to_string(),
            |base| format!("{:.2}x", median.as_secs_f64() / base.as_secs_f64()),
        );
        println!(
            "{:<44} {:>6} {:>10} {:>10} {:>7} {:>8} {:>11}   {share}",
            case.name,
            case.latencies.len(),
            format!("{:.2?}", median),
            format!("{:.2?}", p99),
            ratio,
            mean(|p| p.slices),
            mean(|p| p.migrations),
        );
    }
    println!();
}

fn bench_wasm(c: &mut Criterion) {
    let wasm = forgeone_benches::sample("cpu-hog");
    let dir = tempfile::tempdir().unwrap();
    let audit = AuditLog::open(
        dir.path().join("audit.jsonl"),
        SigningKey::generate(),
        &AuditConfig::new(),
    )
    .unwrap();
    let stack = Stack::new(&wasm, audit);
    let workers = stack.executor.workers();
    let bare = BareJob::new(&wasm);

    // One untimed run compiles the component and tells how much work a
    // critical job is.
    let (first, outcome, _) = stack.critical_job();
    eprintln!(
        "P6 wasm: {workers} workers, {workers} hogs per case; critical job = cpu-hog \
         {CRITICAL_ITERATIONS} = {} fuel (~{} fuel-interval slices), first run {first:.2?}",
        outcome.stats.fuel_consumed,
        outcome.stats.fuel_consumed.div_ceil(FUEL_YIELD_INTERVAL),
    );
    bare.run();

    let mut group = c.benchmark_group("P6 priority isolation (wasm)");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    let mut cases = Vec::new();

    let mut latencies = Vec::new();
    group.bench_function("bare wasmtime, alone (reference)", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let t = bare.run();
                    latencies.push(t);
                    t
                })
                .sum()
        })
    });
    cases.push(Case {
        name: "bare wasmtime, alone (reference)",
        latencies,
        polls: Vec::new(),
        busy: None,
    });

    let contenders: [(&'static str, Option<Priority>); 4] = [
        ("critical alone (baseline)", None),
        (
            "critical + 1 Background hog/worker",
            Some(Priority::Background),
        ),
        ("critical + 1 Normal hog/worker", Some(Priority::Normal)),
        (
            "critical + 1 Critical hog/worker (same)",
            Some(Priority::Critical),
        ),
    ];
    for (name, hogs) in contenders {
        let running = hogs.map(|class| stack.start_hogs(class));
        let before = stack.executor.busy();
        let mut latencies = Vec::new();
        let mut polls = Vec::new();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let (t, _, p) = stack.critical_job();
                        latencies.push(t);
                        polls.push(p);
                        t
                    })
                    .sum()
            })
        });
        let after = stack.executor.busy();
        if let Some(running) = running {
            stack.stop_hogs(running);
        }
        cases.push(Case {
            name,
            latencies,
            polls,
            busy: Some(std::array::from_fn(|i| after[i] - before[i])),
        });
    }
    group.finish();
    summary(&mut cases, "critical alone (baseline)");
    stack.executor.shutdown();
}

// ---------------------------------------------------------------------------
// Synthetic: the executor alone, with CPU-bound futures.

/// One unit of CPU work (about a fuel interval's worth).
fn unit() {
    let mut x = 1u64;
    for i in 0..20_000u64 {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    black_box(x);
}

/// 20 work units, yielding after each, like a fuel-metered guest at every
/// fuel interval.
async fn critical_task() {
    for _ in 0..20 {
        unit();
        yield_now().await;
    }
}

/// Starts `n` hogs at `class`; they run until the returned flag is set.
fn hogs(ex: &Executor, n: usize, class: Priority) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..n {
        let stop = stop.clone();
        drop(ex.spawn(
            async move {
                while !stop.load(Ordering::Relaxed) {
                    unit();
                    yield_now().await;
                }
            },
            class,
        ));
    }
    stop
}

fn bench_synthetic(c: &mut Criterion) {
    let ex = Executor::new().unwrap();
    let workers = ex.workers();
    eprintln!("P6 synthetic: {workers} workers, {} hogs", 4 * workers);
    let mut group = c.benchmark_group("P6 synthetic (executor only)");
    group.sample_size(30);
    group.bench_function("critical_alone", |b| {
        b.iter(|| {
            ex.spawn(critical_task(), Priority::Critical)
                .join()
                .unwrap()
        })
    });
    let stop = hogs(&ex, 4 * workers, Priority::Background);
    group.bench_function("critical_with_background_hogs", |b| {
        b.iter(|| {
            ex.spawn(critical_task(), Priority::Critical)
                .join()
                .unwrap()
        })
    });
    stop.store(true, Ordering::Relaxed);
    let stop = hogs(&ex, 4 * workers, Priority::Critical);
    group.bench_function("critical_with_same_priority_hogs", |b| {
        b.iter(|| {
            ex.spawn(critical_task(), Priority::Critical)
                .join()
                .unwrap()
        })
    });
    stop.store(true, Ordering::Relaxed);
    group.finish();
    ex.shutdown();
}

criterion_group!(benches, bench_wasm, bench_synthetic);
criterion_main!(benches);
