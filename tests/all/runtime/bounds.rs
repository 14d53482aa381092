//! Bounded inputs and compile cost: every component path reads through one
//! capped reader, structural limits refuse a component before it is
//! compiled, and a compile counts against the container's deadline.

use std::time::Instant;

use forgeone::boot::{BootError, DEFAULT_MAX_COMPONENT_SIZE};

use super::*;

/// A `wasi:cli/command` component whose core module also defines
/// `functions` functions (one local each) of `ops` arithmetic steps each:
/// valid, quick to build here, and as slow to compile as asked.
fn many_functions(functions: usize, ops: usize) -> Vec<u8> {
    let mut wat = String::with_capacity(functions * (ops * 24 + 64));
    wat.push_str("(component (core module $m\n");
    wat.push_str("  (func (export \"run\") (result i32) (i32.const 0))\n");
    for f in 0..functions {
        wat.push_str("  (func (param i32) (result i32) (local i32) (local.get 0)");
        for op in 0..ops {
            let k = f * 7 + op;
            let instr = ["i32.add", "i32.mul", "i32.xor"][op % 3];
            wat.push_str(&format!(" (i32.const {k}) ({instr})"));
        }
        wat.push_str(")\n");
    }
    wat.push_str(
        ")
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i \"run\")))
  (instance $run-instance (export \"run\" (func $run)))
  (export \"wasi:cli/run@0.2.12\" (instance $run-instance)))",
    );
    wat::parse_str(&wat).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reported_200k_function_component_is_refused_before_compiling() {
    // The component: 200,000 functions, 42 s and 1.2 GB to
    // compile. With the default limits it never reaches the compiler.
    let h = Harness::new(|_| {});
    let bytes = many_functions(200_000, 0);
    let started = Instant::now();
    let err = h
        .runtime
        .launch_container(
            ContainerConfig::new(VerifiedComponent::unsigned("wide", bytes)),
            identity(),
        )
        .unwrap_err();
    let RuntimeError::TooComplex {
        name,
        what,
        count,
        limit,
        setting,
        ..
    } = &err
    else {
        panic!("expected TooComplex, got {err}");
    };
    assert_eq!(
        (name.as_str(), *what, *count, *limit, *setting),
        ("wide", "functions", 200_001, 100_000, "max_functions")
    );
    let message = err.to_string();
    assert!(
        message.contains("refused before compiling: it has 200001 functions, over the limit of 100000 (EngineConfig::max_functions)"),
        "{message}"
    );
    assert_eq!(h.runtime.cache_stats().compiled, 0, "nothing was compiled");
    // A hang guard, not a timing check: the parse takes milliseconds.
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_structural_limit_is_configurable_and_names_its_number() {
    let bytes = many_functions(20, 4);
    type Case = (fn(&mut EngineConfig), &'static str, &'static str);
    let cases: [Case; 5] = [
        (
            |e| {
                e.max_functions(20);
            },
            "functions",
            "max_functions",
        ),
        (
            |e| {
                e.max_code_size(100);
            },
            "bytes of code",
            "max_code_size",
        ),
        (
            |e| {
                e.max_function_size(8);
            },
            "bytes in one function body",
            "max_function_size",
        ),
        (
            |e| {
                e.max_locals(0);
            },
            "locals",
            "max_locals",
        ),
        (
            |e| {
                e.max_modules(0);
            },
            "core modules",
            "max_modules",
        ),
    ];
    for (set, expected_what, expected_setting) in cases {
        let h = Harness::new(|c| {
            let mut engine = EngineConfig::new();
            set(&mut engine);
            c.engine(engine);
        });
        let component = VerifiedComponent::unsigned("c", bytes.clone());
        let err = h
            .runtime
            .launch_container(ContainerConfig::new(component), identity())
            .unwrap_err();
        match &err {
            RuntimeError::TooComplex {
                what,
                count,
                limit,
                setting,
                ..
            } => {
                assert_eq!((*what, *setting), (expected_what, expected_setting));
                assert!(count > limit, "{err}");
            }
            other => panic!("{expected_what}: expected TooComplex, got {other}"),
        }
        assert_eq!(h.runtime.cache_stats().compiled, 0);
    }
    // Under the limits it compiles and runs.
    let h = Harness::new(|_| {});
    let id = h
        .runtime
        .launch_container(
            ContainerConfig::new(VerifiedComponent::unsigned("c", bytes)),
            identity(),
        )
        .unwrap();
    assert!(h.runtime.wait(id).await.unwrap().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_compile_fails_the_container_at_its_deadline_and_finishes_in_the_background() {
    // One compile thread, and a component that takes it seconds.
    let h = Harness::new(|c| {
        let mut engine = EngineConfig::new();
        engine.compile_threads(1);
        c.engine(engine);
    });
    let slow = VerifiedComponent::unsigned("slow", many_functions(8_000, 30));
    let mut config = ContainerConfig::new(slow.clone());
    config.timeout(Some(Duration::from_millis(200)));
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    assert_eq!(
        outcome.end,
        RunEnd::Failed(Failure::Deadline { timeout_ms: 200 }),
        "{outcome:?}"
    );
    // The container ended while its compile was still running: it did
    // not wait for the compiler.
    assert_eq!(h.runtime.cache_stats().compiled, 0);
    let failed = h.records_of("container.failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["details"]["reason"], "deadline");

    // The compile finishes in the background and is kept: the next launch
    // (with time to run) finds it done.
    eventually("the background compile", || {
        h.runtime.cache_stats().compiled == 1
    })
    .await;
    let id = h
        .runtime
        .launch_container(ContainerConfig::new(slow), identity())
        .unwrap();
    assert!(h.runtime.wait(id).await.unwrap().is_success());
    let stats = h.runtime.cache_stats();
    assert_eq!((stats.compiled, stats.memory_hits), (1, 1));
}

#[test]
fn the_unsigned_path_reads_through_the_capped_reader() {
    let dir = tempfile::tempdir().unwrap();
    // A FIFO with no writer: reading it would hang.
    let fifo = dir.path().join("fifo.wasm");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let err = VerifiedComponent::unsigned_file(&fifo, DEFAULT_MAX_COMPONENT_SIZE).unwrap_err();
    assert!(
        matches!(
            err,
            BootError::NotAFile {
                found: "a FIFO (named pipe)",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("is a FIFO (named pipe), not a regular file")
    );

    // 20 GiB that occupy no disk: refused on its size before a read.
    let sparse = dir.path().join("sparse.wasm");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(20 << 30)
        .unwrap();
    let err = VerifiedComponent::unsigned_file(&sparse, DEFAULT_MAX_COMPONENT_SIZE).unwrap_err();
    assert!(
        matches!(err, BootError::TooLarge { size, limit, .. } if size == 20 << 30 && limit == 256 << 20),
        "{err}"
    );

    // A directory, and a real component (named after the file, hashed).
    let err = VerifiedComponent::unsigned_file(dir.path(), DEFAULT_MAX_COMPONENT_SIZE).unwrap_err();
    assert!(
        matches!(
            err,
            BootError::NotAFile {
                found: "a directory",
                ..
            }
        ),
        "{err}"
    );
    let component =
        VerifiedComponent::unsigned_file(guests::HELLO, DEFAULT_MAX_COMPONENT_SIZE).unwrap();
    let bytes = std::fs::read(guests::HELLO).unwrap();
    assert_eq!(component.name(), "hello");
    assert_eq!(component.digest(), forgeone::boot::Digest::of(&bytes));
    assert!(!component.is_signed());
    let err = VerifiedComponent::unsigned_file(guests::HELLO, 1024).unwrap_err();
    assert!(
        matches!(err, BootError::TooLarge { limit: 1024, .. }),
        "{err}"
    );
}
