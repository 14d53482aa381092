//! P6: priority isolation. The latency of a critical task (20 work units,
//! yielding after each, like a fuel-metered guest at every fuel interval)
//! alone, with background hogs filling every worker, and with the same hogs
//! at the critical task's own priority (what a FIFO pool would give).
//!
//! Until real containers are wired in, the tasks are CPU-bound futures that
//! yield like fuel-metered guests.
//!
//! Run with `cargo bench -p forgeone-benches --bench priority`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use forgeone::scheduler::{Executor, Priority, yield_now};

/// One unit of CPU work (about a fuel interval's worth).
fn unit() {
    let mut x = 1u64;
    for i in 0..20_000u64 {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    black_box(x);
}

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

fn bench(c: &mut Criterion) {
    let ex = Executor::new().unwrap();
    let workers = ex.workers();
    eprintln!("P6: {workers} workers, {} hogs", 4 * workers);
    let mut group = c.benchmark_group("priority");
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

criterion_group!(benches, bench);
criterion_main!(benches);
