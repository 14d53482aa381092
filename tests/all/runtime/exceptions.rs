//! Wasm exceptions (the exception-handling proposal): components that throw
//! and catch them run, with the allocator, fuel, epochs and memory limits
//! of every other container; an uncaught one is a precise failure; the GC
//! proposal itself stays off.

use super::*;

/// Runs `guest` in `h` with `max_memory`, to its outcome.
async fn run(h: &Harness, guest: &str, max_memory: u64) -> Outcome {
    let mut config = ContainerConfig::new(component(guest));
    config.max_memory(max_memory);
    let id = h.runtime.launch_container(config, identity()).unwrap();
    h.runtime.wait(id).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_are_thrown_and_caught() {
    let h = Harness::new(|_| {});
    // 100,000 throws under 1 MiB: each caught exception is collected.
    let outcome = run(&h, guests::EXCEPTIONS, 1024 * 1024).await;
    assert_eq!(outcome.end, RunEnd::Success, "{outcome:?}");
    assert!(outcome.stats.fuel_consumed > 100_000, "{outcome:?}");
    // The module has no linear memory: what it held is the GC heap its
    // exceptions live in, counted like a memory.
    assert!(outcome.stats.peak_memory > 0, "{outcome:?}");
    assert!(outcome.stats.peak_memory <= 1024 * 1024, "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_run_on_the_pooling_allocator() {
    let h = Harness::new(|c| {
        c.engine({
            let mut e = EngineConfig::new();
            e.pooling(8, 16 * 1024 * 1024)
                .fuel_yield_interval(Some(10_000));
            e
        });
    });
    // Twice: the second run reuses the first one's pool slots, its GC heap
    // slot included.
    for _ in 0..2 {
        let outcome = run(&h, guests::EXCEPTIONS, 16 * 1024 * 1024).await;
        assert_eq!(outcome.end, RunEnd::Success, "{outcome:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_are_metered_by_fuel() {
    let h = Harness::new(|_| {});
    let mut config = ContainerConfig::new(component(guests::EXCEPTIONS));
    config.fuel(Some(50_000));
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    assert_eq!(
        failure(&outcome.end),
        &Failure::OutOfFuel { budget: 50_000 },
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncaught_exception_is_a_precise_failure() {
    let h = Harness::new(|_| {});
    let outcome = run(&h, guests::UNCAUGHT_EXCEPTION, 64 * 1024 * 1024).await;
    let Failure::Trap { trap, backtrace } = failure(&outcome.end) else {
        panic!("expected a trap, got {outcome:?}");
    };
    assert_eq!(trap, "uncaught wasm exception", "{outcome:?}");
    // The backtrace starts at the function that threw.
    assert!(
        backtrace.first().is_some_and(|f| f.contains("throw_fatal")),
        "{backtrace:#?}"
    );
    let failed = h.records_of("container.failed");
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["details"]["reason"], "trap", "{failed:#?}");
    assert_eq!(failed[0]["details"]["trap"], "uncaught wasm exception");
    // The runtime goes on: the next container runs.
    let outcome = run(&h, guests::EXCEPTIONS, 64 * 1024 * 1024).await;
    assert_eq!(outcome.end, RunEnd::Success, "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gc_proposal_stays_off() {
    let h = Harness::new(|_| {});
    let gc = wat::parse_str(
        r#"(component
             (core module
               (type $point (struct (field i32) (field i32)))
               (func (export "run") (result i32)
                 (drop (struct.new $point (i32.const 1) (i32.const 2)))
                 (i32.const 0))))"#,
    )
    .unwrap();
    let err = h
        .runtime
        .launch_container(
            ContainerConfig::new(VerifiedComponent::unsigned("gc-struct", gc)),
            identity(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Compile { name, .. } if name == "gc-struct"),
        "{err}"
    );
    assert!(format!("{err}").contains("gc"), "{err}");
}
