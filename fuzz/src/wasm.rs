//! Components from fuzz input: a `wasm-smith` core module wrapped in a
//! command component, and the runtime they run in.
//!
//! `wasm-smith` does not generate usable components (its component support
//! is unfinished, and a random component would not export `wasi:cli/run`),
//! so the input drives a core module that must export `run: () -> i32` and
//! may import, from `env`, a shared memory and a few host functions lowered
//! by the wrapper: the kernel's `log.write` and `identity.current`, WASI's
//! `exit`, `get-random-bytes`, `get-random-u64`, `get-arguments`, the
//! monotonic clock's `now`, and `get-stdout` with the output stream's
//! `blocking-write-and-flush` (resources: handles the guest picks). The wrapper ([`WRAPPER_WAT`]) lifts `run` as
//! `wasi:cli/run.run: func() -> result`, the export the host runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::VerifiedComponent;
use forgeone::runtime::{EngineConfig, Limits, OutputSink};
use forgeone::{
    ContainerConfig, IdentityContext, Outcome, Runtime, RuntimeConfig, TrustLevel, TrustVector,
};

/// The command component around the generated module. `(core module
/// $main)` is a placeholder: [`wrap`] replaces its section with the
/// generated module's bytes.
pub const WRAPPER_WAT: &str = r#"
(component
  (import "forgeone:kernel/log@0.1.0" (instance $log
    (type $level (enum "trace" "debug" "info" "warn" "error"))
    (export "level" (type $level-e (eq $level)))
    (type $field (record (field "key" string) (field "value" string)))
    (export "field" (type $field-e (eq $field)))
    (type $fields (list $field-e))
    (export "write" (func (param "level" $level-e) (param "message" string) (param "fields" $fields)))
  ))
  (import "forgeone:kernel/identity@0.1.0" (instance $identity
    (type $tl (enum "untrusted" "low" "medium" "high" "system"))
    (export "trust-level" (type $tl-e (eq $tl)))
    (type $ci (record
      (field "container-id" string)
      (field "workload" (option string))
      (field "tenant" string)
      (field "principal" string)
      (field "trust" $tl-e)
      (field "component-digest" string)
      (field "signers" (list string))))
    (export "container-identity" (type $ci-e (eq $ci)))
    (export "current" (func (result $ci-e)))
  ))
  (import "wasi:cli/exit@0.2.0" (instance $exit
    (export "exit" (func (param "status" (result))))
  ))
  (import "wasi:random/random@0.2.0" (instance $random
    (export "get-random-bytes" (func (param "len" u64) (result (list u8))))
    (export "get-random-u64" (func (result u64)))
  ))
  (import "wasi:cli/environment@0.2.0" (instance $environment
    (export "get-arguments" (func (result (list string))))
  ))
  (import "wasi:clocks/monotonic-clock@0.2.0" (instance $clock
    (export "now" (func (result u64)))
  ))
  (import "wasi:io/error@0.2.12" (instance $io-error
    (export "error" (type (sub resource)))))
  (alias export $io-error "error" (type $error))
  (import "wasi:io/streams@0.2.12" (instance $streams
    (alias outer 1 $error (type $e))
    (export "error" (type $err (eq $e)))
    (export "output-stream" (type $os (sub resource)))
    (type $se (variant (case "last-operation-failed" (own $err)) (case "closed")))
    (export "stream-error" (type $stream-error (eq $se)))
    (export "[method]output-stream.blocking-write-and-flush"
      (func (param "self" (borrow $os)) (param "contents" (list u8))
            (result (result (error $stream-error)))))))
  (alias export $streams "output-stream" (type $output-stream))
  (import "wasi:cli/stdout@0.2.12" (instance $stdout
    (alias outer 1 $output-stream (type $os))
    (export "output-stream" (type $ose (eq $os)))
    (export "get-stdout" (func (result (own $ose))))))

  ;; The memory host calls read and write, with a bump allocator.
  (core module $mem
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 8))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $ptr i32) (local $end i32)
      (local.set $ptr
        (i32.and
          (i32.add (global.get $next) (i32.sub (local.get 2) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get 2))))
      (local.set $end (i32.add (local.get $ptr) (local.get 3)))
      (if (i32.lt_u (local.get $end) (local.get $ptr)) (then unreachable))
      (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
        (then
          (if (i32.eq
                (memory.grow
                  (i32.sub
                    (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16))
                    (memory.size)))
                (i32.const -1))
            (then unreachable))))
      (global.set $next (local.get $end))
      (local.get $ptr)))
  (core instance $m (instantiate $mem))
  (alias core export $m "memory" (core memory $memory))
  (alias core export $m "realloc" (core func $realloc))

  (alias export $log "write" (func $log-write))
  (core func $log-write-c (canon lower (func $log-write) (memory $memory)))
  (alias export $identity "current" (func $current))
  (core func $current-c (canon lower (func $current) (memory $memory) (realloc $realloc)))
  (alias export $exit "exit" (func $exit-f))
  (core func $exit-c (canon lower (func $exit-f)))
  (alias export $random "get-random-bytes" (func $random-bytes))
  (core func $random-bytes-c (canon lower (func $random-bytes) (memory $memory) (realloc $realloc)))
  (alias export $random "get-random-u64" (func $random-u64))
  (core func $random-u64-c (canon lower (func $random-u64)))
  (alias export $environment "get-arguments" (func $args))
  (core func $args-c (canon lower (func $args) (memory $memory) (realloc $realloc)))
  (alias export $clock "now" (func $now))
  (core func $now-c (canon lower (func $now)))
  (alias export $streams "[method]output-stream.blocking-write-and-flush" (func $write))
  (core func $write-c (canon lower (func $write) (memory $memory)))
  (alias export $stdout "get-stdout" (func $get-stdout))
  (core func $get-stdout-c (canon lower (func $get-stdout)))
  (core instance $env
    (export "memory" (memory $memory))
    (export "log" (func $log-write-c))
    (export "identity" (func $current-c))
    (export "exit" (func $exit-c))
    (export "random-bytes" (func $random-bytes-c))
    (export "random-u64" (func $random-u64-c))
    (export "args" (func $args-c))
    (export "now" (func $now-c))
    (export "write" (func $write-c))
    (export "get-stdout" (func $get-stdout-c)))

  (core module $main)
  (core instance $i (instantiate $main (with "env" (instance $env))))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $run-instance (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $run-instance))
)
"#;

/// What the generated module may import (wasm-smith picks a subset).
const AVAILABLE_IMPORTS: &str = r#"
(module
  (import "env" "memory" (memory 1))
  (import "env" "log" (func (param i32 i32 i32 i32 i32)))
  (import "env" "identity" (func (param i32)))
  (import "env" "exit" (func (param i32)))
  (import "env" "random-bytes" (func (param i64 i32)))
  (import "env" "random-u64" (func (result i64)))
  (import "env" "args" (func (param i32)))
  (import "env" "now" (func (result i64)))
  (import "env" "write" (func (param i32 i32 i32 i32)))
  (import "env" "get-stdout" (func (result i32)))
)
"#;

/// What the generated module must export.
const REQUIRED_EXPORTS: &str = r#"(module (func (export "run") (result i32) unreachable))"#;

/// The wrapper's bytes, split around the placeholder module's section.
struct Wrapper {
    before: Vec<u8>,
    after: Vec<u8>,
}

static WRAPPER: std::sync::LazyLock<Wrapper> = std::sync::LazyLock::new(|| {
    let bytes = wat::parse_str(WRAPPER_WAT).expect("the wrapper WAT parses");
    // The second core module section at the top level is `$main`.
    let mut ranges = Vec::new();
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        match payload.expect("the wrapper is well-formed") {
            wasmparser::Payload::ModuleSection {
                unchecked_range, ..
            } => {
                if depth == 0 {
                    ranges.push(unchecked_range);
                }
                depth += 1;
            }
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    let main = ranges[1].start as usize..ranges[1].end as usize;
    // The section's header: id 1 (core module), then its size as LEB128.
    let size = leb128(main.len() as u64);
    let header = main.start - 1 - size.len();
    assert_eq!(bytes[header], 0x01);
    assert_eq!(&bytes[header + 1..main.start], &size[..]);
    Wrapper {
        before: bytes[..header].to_vec(),
        after: bytes[main.end..].to_vec(),
    }
});

/// The command component running `module` as its `wasi:cli/run`.
pub fn wrap(module: &[u8]) -> Vec<u8> {
    let w = &*WRAPPER;
    let mut out = Vec::with_capacity(w.before.len() + module.len() + w.after.len() + 6);
    out.extend_from_slice(&w.before);
    out.push(0x01);
    out.extend_from_slice(&leb128(module.len() as u64));
    out.extend_from_slice(module);
    out.extend_from_slice(&w.after);
    out
}

fn leb128(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// The wasm-smith configuration: the core features the host's engine
/// accepts, small modules, memories and tables a little over the
/// container's limits so that both sides of each limit are reached.
pub fn smith_config() -> wasm_smith::Config {
    wasm_smith::Config {
        available_imports: Some(wat::parse_str(AVAILABLE_IMPORTS).expect("imports parse")),
        exports: Some(wat::parse_str(REQUIRED_EXPORTS).expect("exports parse")),
        max_funcs: 30,
        max_instructions: 200,
        max_memories: 1,
        max_memory32_bytes: 2 * MAX_MEMORY,
        max_table_elements: 2 * MAX_TABLE_ELEMENTS,
        max_tables: 2,
        gc_enabled: false,
        exceptions_enabled: false,
        threads_enabled: false,
        memory64_enabled: false,
        custom_page_sizes_enabled: false,
        wide_arithmetic_enabled: false,
        compact_imports_enabled: false,
        // externref needs wasmtime's GC support, which the host leaves out.
        reference_types_enabled: false,
        ..wasm_smith::Config::default()
    }
}

/// The generated module for `data` (`None` when the input runs out first).
pub fn smith_module(data: &[u8]) -> Option<Vec<u8>> {
    let mut u = arbitrary::Unstructured::new(data);
    let module = wasm_smith::Module::new(smith_config(), &mut u).ok()?;
    Some(module.to_bytes())
}

/// Fuel per run: enough for a few thousand instructions and host calls.
pub const FUEL: u64 = 200_000;
/// Linear memory per container.
pub const MAX_MEMORY: u64 = 2 << 20;
/// Table elements per table.
pub const MAX_TABLE_ELEMENTS: u64 = 10_000;
/// Containers run by one runtime before it is replaced by a fresh one (the
/// runtime keeps every compiled component, and its audit log grows).
const RUNS_PER_RUNTIME: u32 = 500;

/// A runtime with unsigned code allowed, its audit log in a temporary
/// directory, replaced every [`RUNS_PER_RUNTIME`] runs.
pub struct Harness {
    tokio: tokio::runtime::Runtime,
    current: Option<(Runtime, AuditLog)>,
    runs: u32,
    dir: tempfile::TempDir,
    generation: u64,
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

impl Harness {
    /// A harness with no runtime yet.
    pub fn new() -> Harness {
        Harness {
            tokio: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime"),
            current: None,
            runs: 0,
            dir: tempfile::tempdir().expect("a temporary directory"),
            generation: 0,
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("audit-{}.jsonl", self.generation))
    }

    fn runtime(&mut self) -> Runtime {
        if self.runs >= RUNS_PER_RUNTIME {
            self.retire();
        }
        self.runs += 1;
        if let Some((runtime, _)) = &self.current {
            return runtime.clone();
        }
        let log = AuditLog::open(
            self.log_path(),
            crate::fixtures::key("host"),
            &AuditConfig::new(),
        )
        .expect("the fuzz audit log opens");
        let mut engine = EngineConfig::new();
        // One compile thread: the fuzzer shares its machine.
        engine.parallel_compilation(false);
        let mut config = RuntimeConfig::new();
        config.allow_unsigned(true).engine(engine);
        let runtime = Runtime::new(config, log.clone()).expect("the runtime starts");
        self.current = Some((runtime.clone(), log));
        runtime
    }

    fn retire(&mut self) {
        self.close_log();
    }

    /// Shuts the current runtime down, closes its audit log and returns
    /// the log's bytes (empty when no runtime ran); the next run starts a
    /// fresh runtime.
    pub fn close_log(&mut self) -> Vec<u8> {
        let path = self.log_path();
        let mut bytes = Vec::new();
        if let Some((runtime, log)) = self.current.take() {
            self.tokio.block_on(runtime.shutdown());
            drop(runtime);
            let _ = log.close();
            bytes = std::fs::read(&path).unwrap_or_default();
            let _ = std::fs::remove_file(&path);
        }
        self.generation += 1;
        self.runs = 0;
        bytes
    }

    /// Runs `bytes` as an unsigned component under tiny limits, as
    /// `forgeone run --allow-unsigned` does, and returns its outcome (or
    /// the error that refused it before it ran).
    pub fn run(&mut self, name: &str, bytes: &[u8]) -> Result<Outcome, forgeone::RuntimeError> {
        let runtime = self.runtime();
        let component = VerifiedComponent::unsigned(name, Arc::<[u8]>::from(bytes));
        let mut limits = Limits::default();
        limits.fuel = Some(FUEL);
        limits.max_memory = MAX_MEMORY;
        limits.max_table_elements = MAX_TABLE_ELEMENTS;
        limits.max_instances = 10;
        limits.timeout = Some(Duration::from_secs(2));
        limits.max_output = 4096;
        limits.max_line = 256;
        limits.max_log_lines = 16;
        let mut container = ContainerConfig::new(component);
        container
            .limits(limits)
            .arg("fuzz")
            .output(OutputSink::new(|_line| {}));
        let identity =
            IdentityContext::new("fuzz", "fuzzer", TrustVector::new(TrustLevel::Medium, 0));
        let prepared = runtime.prepare_container(container, identity)?;
        let id = prepared.id();
        let outcome = self.tokio.block_on(prepared.into_future());
        let removed = runtime.remove(id);
        assert!(
            removed.is_ok(),
            "a settled container is removable: {removed:?}"
        );
        assert!(
            outcome.stats.peak_memory <= MAX_MEMORY,
            "peak memory {} over the limit {MAX_MEMORY}",
            outcome.stats.peak_memory
        );
        Ok(outcome)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.retire();
    }
}
