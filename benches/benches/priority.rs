//! P6: priority isolation, on real wasm guests through the public `Kernel`.
//!
//! The *critical workload* is the `cpu-hog` sample run for a bounded
//! number of iterations ([`CRITICAL_ITERATIONS`]) as the container of a
//! `Priority::Critical` workload, submitted to a [`Kernel`] whose only node
//! is the local one (permissive policy, one executor worker per core,
//! default limits: fuel-metered with a preemptive yield every fuel
//! interval, output captured to the audit log). Its latency is the wall
//! time from [`Kernel::submit`] and [`Kernel::schedule`] (placement, its
//! audit events, container preparation, spawn in its executor lane) to the
//! settled [`Outcome`] (`Runtime::wait`); the settled container is removed
//! outside the timing.
//!
//! It is measured, in the same run and on the same kernel:
//!
//! - **alone** (the P6 baseline: idle workers);
//! - with **background hogs** filling every worker: one endless `cpu-hog`
//!   (no argument, no fuel budget, no timeout) per worker, each the
//!   container of a `Priority::Background` workload placed through the same
//!   kernel, stopped with `stop_with_grace(id, 0)` after the case;
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
//! each class got during the case (the kernel's
//! [`ResourceState`](forgeone::scheduler::ResourceState) `cpu.busy`, read
//! before and after).
//!
//! Reading the figures: the critical job is one container, so it occupies
//! one worker at a time, and the CPU share is over all workers. The bound
//! the executor promises is a wait of one slice (one fuel interval of
//! whatever runs there) per slice of the critical job. With hogs at its own
//! class the job shares a worker with a hog, so expect about 2x rather than
//! the 1.5x a global fair share of three tasks on two workers would give.
//! "Alone" leaves the other workers idle; every yield of the lone task then
//! wakes an idle worker, which can make "alone" slightly slower than "with
//! background hogs". The latency includes the kernel's placement and
//! container preparation (a few hundred microseconds at most), which the
//! hogs do not slow down.
//!
//! The executor is crate-private, so this bench no longer counts the
//! critical job's slices and worker migrations (that took a probe around
//! the container's future), and the former `P6 synthetic` group (the
//! executor alone, with Rust futures) is gone. Its essence is a unit test
//! counted in work units instead of timed:
//! `a_critical_task_waits_about_one_slice_in_sixteen_for_background_hogs`
//! in `host/src/scheduler/executor/tests.rs`.
//!
//! The components are loaded with `VerifiedComponent::unsigned` and
//! `RuntimeConfig::allow_unsigned(true)`: signature checking happens at
//! load time, which P1 measures, and has no bearing on scheduling.
//!
//! Builds the samples into `samples/target` on first use. Run with
//! `cargo bench -p forgeone-benches --bench priority`.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use forgeone::Priority;
use forgeone::SigningKey;
use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::VerifiedComponent;
use forgeone::identity::{IdentityContext, TrustLevel, TrustVector};
use forgeone::kernel::{Kernel, KernelConfig, Launched};
use forgeone::policy::PolicySet;
use forgeone::runtime::{ContainerConfig, ContainerStatus, Outcome, RuntimeConfig};
use forgeone::scheduler::{Capacity, Node, Workload};
use forgeone_benches::{Bare, percentile};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p2::bindings::CommandPre;

/// Iterations of the critical job (`cpu-hog N`): about 78M fuel, 79
/// slices at the default fuel yield interval.
const CRITICAL_ITERATIONS: &str = "2000000";

/// `EngineConfig`'s default fuel yield interval, to express a job's fuel
/// in slices.
const FUEL_YIELD_INTERVAL: u64 = 1_000_000;

// ---------------------------------------------------------------------------
// Bare wasmtime reference.

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
        forgeone_benches::stub_kernel(&mut linker);
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
// ForgeOne: the kernel.

struct Stack {
    kernel: Kernel,
    /// Blocks the bench thread on `Runtime::wait`.
    tokio: tokio::runtime::Runtime,
    workers: usize,
    identity: IdentityContext,
    critical: ContainerConfig,
    hog: ContainerConfig,
}

impl Stack {
    fn new(wasm: &[u8], audit: AuditLog) -> Stack {
        // Unsigned components are fine here: see the module docs.
        let mut runtime = RuntimeConfig::new();
        runtime.allow_unsigned(true);
        // Room for every container the bench places: capacity is not what
        // is measured.
        let cap = Capacity {
            cpu_millis: 1_000_000,
            memory: 1 << 40,
            storage: 0,
            containers: 10_000,
        };
        let node = Node::new("local", "bench", "bench-1a", cap);
        let mut config = KernelConfig::new(node, PolicySet::permissive());
        config.runtime(runtime);
        let kernel = Kernel::new(config, audit).unwrap();
        let workers = kernel.resources().cpu.cores as usize;
        let component = VerifiedComponent::unsigned("cpu-hog", wasm.to_vec());
        let mut critical = ContainerConfig::new(component.clone());
        critical.name("critical").arg(CRITICAL_ITERATIONS);
        let mut hog = ContainerConfig::new(component);
        hog.name("hog")
            .fuel(None)
            .timeout(None)
            .stop_grace(Duration::ZERO);
        Stack {
            kernel,
            tokio: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            workers,
            identity: IdentityContext::new("bench", "p6", TrustVector::new(TrustLevel::Medium, 0)),
            critical,
            hog,
        }
    }

    /// Submits `config` as the container of a workload of `class` and
    /// places it, returning its launch. Every workload here, the
    /// critical job and the hogs alike, has the same identity, so only the
    /// priority class differs between them.
    fn launch(&self, name: &str, config: &ContainerConfig, class: Priority) -> Launched {
        let workload = Workload::new(name, class, self.identity.clone());
        self.kernel.submit(workload, config.clone()).unwrap();
        let report = self.kernel.schedule().unwrap();
        assert!(report.refused.is_empty(), "refused: {:?}", report.refused);
        assert!(
            report.preempted.is_empty(),
            "preempted: {:?}",
            report.preempted
        );
        let mut launched = report.launched;
        assert_eq!(launched.len(), 1, "expected one launch: {launched:?}");
        launched.remove(0)
    }

    fn wait(&self, launched: &Launched) -> Outcome {
        self.tokio
            .block_on(self.kernel.wait_for(launched.workload))
            .unwrap()
    }

    /// Runs the critical job once: its latency from submit to settled, and
    /// its outcome.
    fn critical_job(&self) -> (Duration, Outcome) {
        let start = Instant::now();
        let job = self.launch("critical", &self.critical, Priority::Critical);
        let outcome = self.wait(&job);
        let elapsed = start.elapsed();
        assert!(outcome.is_success(), "critical job: {outcome}");
        self.kernel.remove(job.workload).unwrap();
        (elapsed, outcome)
    }

    /// Starts one endless hog per worker at `class` and waits until they
    /// all run.
    fn start_hogs(&self, class: Priority) -> Vec<Launched> {
        let hogs: Vec<Launched> = (0..self.workers)
            .map(|_| self.launch("hog", &self.hog, class))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        let running = |h: &Launched| {
            self.kernel
                .container(h.container)
                .is_some_and(|c| c.status == ContainerStatus::Running)
        };
        while !hogs.iter().all(running) {
            assert!(Instant::now() < deadline, "hogs did not start");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Let them settle into their steady state.
        std::thread::sleep(Duration::from_millis(100));
        hogs
    }

    /// Stops the hogs at once, checks they were still running (not ended
    /// by a limit) when stopped, and forgets them.
    fn stop_hogs(&self, hogs: Vec<Launched>) {
        for hog in &hogs {
            // Their stop grace is zero: stopped at the next yield point.
            self.kernel.stop(hog.workload).unwrap();
        }
        for hog in &hogs {
            let outcome = self.wait(hog);
            assert!(
                outcome.failure().is_none() && !outcome.is_success(),
                "a hog ended by itself: {outcome}"
            );
            self.kernel.remove(hog.workload).unwrap();
        }
    }

    /// The executor's cumulative busy time per class (Critical first).
    fn busy(&self) -> [Duration; 5] {
        self.kernel.resources().cpu.busy
    }
}

/// One case's per-job latencies and the executor's busy time per class
/// during it.
struct Case {
    name: &'static str,
    latencies: Vec<Duration>,
    busy: Option<[Duration; 5]>,
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
    println!("P6 summary (per critical job, submit to settled; ratio = median / median alone)");
    println!(
        "{:<44} {:>6} {:>10} {:>10} {:>7}   executor CPU share Crit/High/Norm/Low/Bg",
        "case", "jobs", "median", "p99", "ratio"
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
        let ratio = base.map_or_else(
            || "-".to_string(),
            |base| format!("{:.2}x", median.as_secs_f64() / base.as_secs_f64()),
        );
        println!(
            "{:<44} {:>6} {:>10} {:>10} {:>7}   {share}",
            case.name,
            case.latencies.len(),
            format!("{:.2?}", median),
            format!("{:.2?}", p99),
            ratio,
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
    let workers = stack.workers;
    let bare = BareJob::new(&wasm);

    // One untimed run compiles the component and tells how much work a
    // critical job is.
    let (first, outcome) = stack.critical_job();
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
        let before = stack.busy();
        let mut latencies = Vec::new();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let (t, _) = stack.critical_job();
                        latencies.push(t);
                        t
                    })
                    .sum()
            })
        });
        let after = stack.busy();
        if let Some(running) = running {
            stack.stop_hogs(running);
        }
        cases.push(Case {
            name,
            latencies,
            busy: Some(std::array::from_fn(|i| after[i] - before[i])),
        });
    }
    group.finish();
    summary(&mut cases, "critical alone (baseline)");
    stack.kernel.shutdown("bench done");
}

criterion_group!(benches, bench_wasm);
criterion_main!(benches);
