//! P10: a file-heavy real program. The `fs-grep` sample (a small ripgrep:
//! walk, read every file in 64 KiB chunks, search each line) searches a
//! generated tree of [`FILES`] text files (about 40 MiB in 110 directories,
//! a needle planted in every 97th file), start to exit, warm page cache.
//!
//! It is measured, in the same run, on the same component:
//!
//! - **`wasmtime run`** (the baseline): bare wasmtime and wasmtime-wasi
//!   driven as wasmtime 48's `wasmtime run` drives a command component
//!   (`src/commands/run.rs`, `src/common.rs`): a default `Config`, the
//!   component compiled once (its cache warm), `p2::add_to_linker_async`, a
//!   fresh `Store` and WASI context per run with the directory preopened
//!   read-write and `allow_blocking_current_thread(true)` (what the CLI
//!   sets unless `-W timeout` is given), then `instantiate_async` and
//!   `call_run` under `block_on` of a multi-threaded tokio runtime.
//! - **`wasmtime run -W timeout=60s`**: the same with epoch interruption on
//!   and `allow_blocking_current_thread(false)`, as the CLI does with a
//!   timeout: every filesystem call then goes to tokio's blocking pool.
//! - **bare wasmtime with ForgeOne's metering** (a reference): `wasmtime
//!   run` as above, plus what every ForgeOne container pays for its limits:
//!   fuel metering with an async yield every 1,000,000 units and epoch
//!   interruption with a deadline callback at each 10 ms tick.
//! - **ForgeOne**: the component signed by a release key and verified
//!   against a trust anchor (once, as at boot), run the way `forgeone run`
//!   runs it: `Runtime::launch_container` on a multi-threaded tokio runtime
//!   and `Runtime::wait`, the directory granted read-only, `forgeone run`'s
//!   default limits (10,000,000,000 fuel, 64 MiB, a 60 s deadline), its
//!   output through an `OutputSink` and audited, the audit log on disk.
//!   File calls run on the guest's thread (`FileIo::OnThread`, the
//!   default).
//! - **ForgeOne, fuel yield every 10M**: the same with
//!   `EngineConfig::fuel_yield_interval(Some(10_000_000))`, ten times the
//!   default: what the default's slices cost this program.
//! - **ForgeOne, `FileIo::BlockingPool`**: the same with every file call on
//!   tokio's blocking pool, which is what every container did before
//!   `FileIo` existed.
//!
//! Criterion reports the mean per case. After the group a summary prints
//! each case's median wall time per search, the ratio of medians to
//! `wasmtime run`, and the process CPU time (user and system, from
//! `/proc/self/stat`) per search; then the fuel one search uses under
//! ForgeOne and the fuel it burns per second of wall time, so the time a
//! fuel yield interval is of this program.
//!
//! Builds the samples into `samples/target` on first use. Run with
//! `cargo bench -p forgeone-benches --bench fileio`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use forgeone::SigningKey;
use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::{ComponentStatement, verify_component};
use forgeone::identity::{IdentityContext, TrustLevel, TrustVector};
use forgeone::runtime::{
    ContainerConfig, EngineConfig, FileIo, OutputSink, Runtime, RuntimeConfig, Stream,
};
use forgeone_benches::{Bare, percentile};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx};

/// Files in the generated tree.
const FILES: usize = 5_000;
/// What the guest searches for; planted in every 97th file.
const NEEDLE: &str = "FORGEONE_NEEDLE";
/// The tree's path inside the guest.
const GUEST_DIR: &str = "/tree";

// ---------------------------------------------------------------------------
// The tree.

/// xorshift64*: deterministic, so every run searches the same tree.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Writes the tree under `root`: 10 directories of 10 subdirectories, the
/// files spread over them, most a few KiB of text lines, one in 20 of 64 to
/// 256 KiB. Returns (bytes, files holding the needle).
fn generate(root: &Path) -> (u64, usize) {
    const WORDS: [&str; 16] = [
        "fn",
        "let",
        "match",
        "struct",
        "impl",
        "return",
        "self",
        "async",
        "await",
        "where",
        "container",
        "runtime",
        "audit",
        "kernel",
        "value",
        "result",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut bytes, mut planted) = (0, 0);
    for i in 0..FILES {
        let dir = root.join(format!("d{}/s{}", i % 10, (i / 10) % 10));
        std::fs::create_dir_all(&dir).unwrap();
        let size = if rng.below(20) == 0 {
            64 * 1024 + rng.below(192 * 1024)
        } else {
            1024 + rng.below(12 * 1024)
        } as usize;
        let mut text = String::with_capacity(size + 80);
        let mut needle_at = (i % 97 == 0).then(|| rng.below(size as u64) as usize);
        while text.len() < size {
            if needle_at.is_some_and(|at| text.len() >= at) {
                text.push_str("    // ");
                text.push_str(NEEDLE);
                text.push('\n');
                needle_at = None;
            }
            for _ in 0..1 + rng.below(10) {
                text.push_str(WORDS[rng.below(16) as usize]);
                text.push(' ');
            }
            text.push('\n');
        }
        planted += usize::from(text.contains(NEEDLE));
        bytes += text.len() as u64;
        std::fs::write(dir.join(format!("f{i}.rs")), text).unwrap();
    }
    (bytes, planted)
}

// ---------------------------------------------------------------------------
// `wasmtime run`, as wasmtime 48 drives a command component.

struct WasmtimeRun {
    engine: Engine,
    pre: CommandPre<Bare>,
    tokio: tokio::runtime::Runtime,
    mode: Mode,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// `wasmtime run`.
    Run,
    /// `wasmtime run -W timeout=..`: epoch interruption on, no blocking on
    /// the thread.
    Timeout,
    /// `wasmtime run` with ForgeOne's fuel and epoch metering.
    Metered,
}

impl WasmtimeRun {
    fn new(wasm: &[u8], mode: Mode) -> WasmtimeRun {
        let mut config = Config::new();
        config
            .epoch_interruption(mode != Mode::Run)
            .consume_fuel(mode == Mode::Metered);
        let engine = Engine::new(&config).unwrap();
        if mode == Mode::Metered {
            // ForgeOne's epoch ticker: every 10 ms, while the engine lives.
            let weak = engine.weak();
            std::thread::spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
        }
        let component = Component::new(&engine, wasm).unwrap();
        let mut linker = Linker::<Bare>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        let pre = CommandPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        WasmtimeRun {
            engine,
            pre,
            tokio,
            mode,
        }
    }

    /// One search; its wall time and its output.
    fn run(&self, tree: &Path) -> (Duration, String) {
        let start = Instant::now();
        let stdout = MemoryOutputPipe::new(1 << 20);
        let mut wasi = WasiCtx::builder();
        wasi.args(&["fs-grep.wasm", NEEDLE, GUEST_DIR])
            .stdout(stdout.clone())
            .allow_blocking_current_thread(self.mode != Mode::Timeout)
            .preopened_dir(tree, GUEST_DIR, FsPerms::ReadWrite)
            .unwrap();
        let mut store = Store::new(
            &self.engine,
            Bare {
                wasi: wasi.build(),
                table: ResourceTable::new(),
            },
        );
        if self.mode == Mode::Metered {
            // As `container::new_store` sets a store up.
            store.set_fuel(u64::MAX).unwrap();
            store.fuel_async_yield_interval(Some(1_000_000)).unwrap();
            store.set_epoch_deadline(1);
            let deadline = Instant::now() + Duration::from_secs(60);
            store.epoch_deadline_callback(move |_| {
                assert!(Instant::now() < deadline);
                Ok(wasmtime::UpdateDeadline::Continue(1))
            });
        }
        if self.mode == Mode::Timeout {
            // The CLI's timeout thread bumps the epoch once, at the
            // deadline; a search ends long before.
            store.set_epoch_deadline(1);
        }
        let result = self.tokio.block_on(async {
            let command = self.pre.instantiate_async(&mut store).await?;
            command.wasi_cli_run().call_run(&mut store).await
        });
        let elapsed = start.elapsed();
        match result {
            Ok(Ok(())) => {}
            // `std::process::exit(0)`, as `wasmtime run` reads it.
            Err(e) if e.downcast_ref::<I32Exit>().is_some_and(|exit| exit.0 == 0) => {}
            other => panic!("fs-grep under bare wasmtime: {other:?}"),
        }
        let output = String::from_utf8_lossy(&stdout.contents()).into_owned();
        (elapsed, output)
    }
}

// ---------------------------------------------------------------------------
// ForgeOne, as `forgeone run` runs a container.

struct ForgeOne {
    runtime: Runtime,
    tokio: tokio::runtime::Runtime,
    container: ContainerConfig,
    identity: IdentityContext,
    lines: Arc<AtomicU64>,
    last: Arc<std::sync::Mutex<String>>,
    /// Fuel the last search used.
    fuel: AtomicU64,
    _state: tempfile::TempDir,
}

impl ForgeOne {
    /// With file calls where `file_io` says, and a fuel yield every
    /// `yield_interval` units (`None`: the default).
    fn new(wasm: &[u8], tree: &Path, file_io: FileIo, yield_interval: Option<u64>) -> ForgeOne {
        let (root, release) = (SigningKey::generate(), SigningKey::generate());
        let anchor = forgeone_benches::anchor(&root, &release);
        let signature = ComponentStatement::new("fs-grep", "0.1.0", wasm, None).sign(&[&release]);
        let verified = verify_component(wasm.to_vec(), &signature, &anchor).unwrap();
        let state = tempfile::tempdir().unwrap();
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let audit = AuditLog::open(
            state.path().join("audit.jsonl"),
            SigningKey::generate(),
            &AuditConfig::new(),
        )
        .unwrap();
        let mut config = RuntimeConfig::new();
        config.cache_dir(state.path().join("cache"));
        if let Some(interval) = yield_interval {
            let mut engine = EngineConfig::new();
            engine.fuel_yield_interval(Some(interval));
            config.engine(engine);
        }
        let runtime = tokio.block_on(async { Runtime::new(config, audit).unwrap() });
        let lines = Arc::new(AtomicU64::new(0));
        let last: Arc<std::sync::Mutex<String>> = Arc::default();
        let (sink_lines, sink_last) = (lines.clone(), Arc::clone(&last));
        let sink = OutputSink::new(move |line| {
            if line.stream == Stream::Stdout {
                sink_lines.fetch_add(1, Ordering::Relaxed);
                *sink_last.lock().unwrap() = line.text.clone();
            }
        });
        let mut container = ContainerConfig::new(verified);
        container
            .fuel(Some(10_000_000_000))
            .max_memory(64 << 20)
            .timeout(Some(Duration::from_secs(60)))
            .dir(tree, GUEST_DIR, true)
            .arg(NEEDLE)
            .arg(GUEST_DIR)
            .file_io(file_io)
            .output(sink);
        ForgeOne {
            runtime,
            tokio,
            container,
            identity: IdentityContext::new("bench", "p10", TrustVector::new(TrustLevel::Medium, 0)),
            lines,
            last,
            fuel: AtomicU64::new(0),
            _state: state,
        }
    }

    /// One search; its wall time, output lines and last line.
    fn run(&self) -> (Duration, u64, String) {
        self.lines.store(0, Ordering::Relaxed);
        let start = Instant::now();
        let outcome = self.tokio.block_on(async {
            let id = self
                .runtime
                .launch_container(self.container.clone(), self.identity.clone())
                .unwrap();
            let outcome = self.runtime.wait(id).await.unwrap();
            self.runtime.remove(id).unwrap();
            outcome
        });
        let elapsed = start.elapsed();
        assert!(outcome.is_success(), "fs-grep under ForgeOne: {outcome}");
        self.fuel
            .store(outcome.stats.fuel_consumed, Ordering::Relaxed);
        let last = self.last.lock().unwrap().clone();
        (elapsed, self.lines.load(Ordering::Relaxed), last)
    }
}

// ---------------------------------------------------------------------------
// The cases and the summary.

/// Process CPU time so far (user, system), from `/proc/self/stat`.
fn cpu_times() -> (Duration, Duration) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let field = |i: usize| {
        let t: f64 = fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0.0);
        Duration::from_secs_f64(t / ticks)
    };
    // utime and stime are fields 14 and 15; 11 and 12 after the name.
    (field(11), field(12))
}

struct Case {
    name: &'static str,
    times: Vec<Duration>,
    user: Duration,
    system: Duration,
}

fn summary(cases: &mut [Case], baseline: &str) {
    for case in cases.iter_mut() {
        case.times.sort_unstable();
    }
    let base = cases
        .iter()
        .find(|c| c.name == baseline && !c.times.is_empty())
        .map(|c| percentile(&c.times, 0.5));
    println!();
    println!("P10 summary (per search, start to exit; ratio = median / median of `{baseline}`)");
    println!(
        "{:<34} {:>6} {:>10} {:>10} {:>7} {:>10} {:>10}",
        "case", "runs", "median", "p90", "ratio", "user", "system"
    );
    for case in cases.iter().filter(|c| !c.times.is_empty()) {
        let median = percentile(&case.times, 0.5);
        let runs = case.times.len() as u32;
        let ratio = base.map_or_else(
            || "-".to_string(),
            |base| format!("{:.2}x", median.as_secs_f64() / base.as_secs_f64()),
        );
        println!(
            "{:<34} {:>6} {:>10} {:>10} {:>7} {:>10} {:>10}",
            case.name,
            runs,
            format!("{median:.2?}"),
            format!("{:.2?}", percentile(&case.times, 0.9)),
            ratio,
            format!("{:.2?}", case.user / runs),
            format!("{:.2?}", case.system / runs),
        );
    }
    println!();
}

fn bench(c: &mut Criterion) {
    let wasm = forgeone_benches::sample("fs-grep");
    let tree = tempfile::tempdir().unwrap();
    let (bytes, planted) = generate(tree.path());
    let expected =
        format!("fs-grep: {FILES} files, {bytes} bytes, {planted} matching lines, 0 errors");

    let wasmtime_run = WasmtimeRun::new(&wasm, Mode::Run);
    let wasmtime_timeout = WasmtimeRun::new(&wasm, Mode::Timeout);
    let metered = WasmtimeRun::new(&wasm, Mode::Metered);
    let forgeone = ForgeOne::new(&wasm, tree.path(), FileIo::OnThread, None);
    let forgeone_10m = ForgeOne::new(&wasm, tree.path(), FileIo::OnThread, Some(10_000_000));
    let forgeone_pool = ForgeOne::new(&wasm, tree.path(), FileIo::BlockingPool, None);

    // One untimed run each: compiles, warms the page cache, and checks
    // that every case searched the whole tree and found every needle.
    for bare in [&wasmtime_run, &wasmtime_timeout, &metered] {
        let (_, output) = bare.run(tree.path());
        assert_eq!(output.lines().count(), planted + 1, "{output}");
        assert_eq!(output.lines().last(), Some(expected.as_str()));
    }
    let (first, lines, last) = forgeone.run();
    assert_eq!(
        (lines, last.as_str()),
        (planted as u64 + 1, expected.as_str())
    );
    eprintln!(
        "P10: {FILES} files, {:.1} MiB, {planted} with the needle; ForgeOne's first run {first:.2?}",
        bytes as f64 / (1 << 20) as f64
    );

    let mut group = c.benchmark_group("P10 file-heavy guest");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    let mut cases = Vec::new();
    let mut measure = |name: &'static str, run: &dyn Fn() -> Duration| {
        let mut times = Vec::new();
        let (user0, system0) = cpu_times();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let t = run();
                        times.push(t);
                        t
                    })
                    .sum()
            })
        });
        let (user1, system1) = cpu_times();
        cases.push(Case {
            name,
            times,
            user: user1.saturating_sub(user0),
            system: system1.saturating_sub(system0),
        });
    };
    measure("wasmtime run", &|| wasmtime_run.run(tree.path()).0);
    measure("wasmtime run -W timeout=60s", &|| {
        wasmtime_timeout.run(tree.path()).0
    });
    measure("bare wasmtime + ForgeOne's metering", &|| {
        metered.run(tree.path()).0
    });
    measure("forgeone run", &|| forgeone.run().0);
    measure("forgeone run, fuel yield every 10M", &|| {
        forgeone_10m.run().0
    });
    measure("forgeone run, FileIo::BlockingPool", &|| {
        forgeone_pool.run().0
    });
    group.finish();
    summary(&mut cases, "wasmtime run");
    // How long a slice (a fuel yield interval) of this program is.
    let fuel = forgeone.fuel.load(Ordering::Relaxed);
    if let Some(case) = cases.iter().find(|c| c.name == "forgeone run") {
        let median = percentile(&case.times, 0.5).as_secs_f64();
        println!(
            "fs-grep under forgeone run: {fuel} fuel per search, {:.2e} fuel/s of its median \
             wall time: {} fuel yields per search at the default interval (1,000,000), one \
             every {:.0} µs",
            fuel as f64 / median,
            fuel / 1_000_000,
            median * 1e6 / (fuel as f64 / 1e6),
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
