//! The executor: weighted sharing by class and trust, no starvation,
//! affinity, panics, tokio context, shutdown. Fairness is measured in fixed
//! work units counted per class; nothing here asserts on wall-clock time.
//! (Moved from the integration tests when the executor became
//! crate-private; `unit` and `yield_now` also serve the resource monitor's
//! tests.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use crate::identity::{Priority, TrustLevel};
use crate::scheduler::ScheduleError;

use super::handle::JoinError;
use super::queues::current_worker;
use super::{Executor, SpawnOptions};

/// One unit of CPU work, the stand-in for a guest's fuel interval.
pub(crate) fn unit() {
    let mut x = 1u64;
    for i in 0..20_000u64 {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    std::hint::black_box(x);
}

/// Yields once to the executor: wakes itself and returns `Pending`, so
/// the worker can serve a more urgent lane before polling it again (what a
/// fuel-metered guest does at every fuel interval).
pub(crate) async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// A task doing units and yielding after each until `stop`.
async fn hog(count: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        unit();
        count.fetch_add(1, Ordering::Relaxed);
        yield_now().await;
    }
}

fn executor(workers: usize) -> Executor {
    Executor::builder().workers(workers).build().unwrap()
}

/// Waits (sleeping, not asserting on time) until `count` reaches `n`.
fn wait_for(count: &AtomicU64, n: u64) {
    while count.load(Ordering::Relaxed) < n {
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn contended_cpu_is_shared_by_class_weight_and_nothing_starves() {
    let ex = executor(2);
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Vec<Arc<AtomicU64>> = (0..5).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut handles = Vec::new();
    for (class, p) in Priority::ALL.into_iter().enumerate() {
        for _ in 0..4 {
            handles.push(ex.spawn(hog(counts[class].clone(), stop.clone()), p));
        }
    }
    wait_for(&counts[0], 3200);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let c: Vec<f64> = counts
        .iter()
        .map(|c| c.load(Ordering::Relaxed) as f64)
        .collect();
    eprintln!("units per class (critical..background): {c:?}");
    // Weights 16:8:4:2:1, so each class gets about twice the next one's
    // units; the bounds are generous for a shared, noisy machine.
    for k in 0..4 {
        let ratio = c[k] / c[k + 1].max(1.0);
        assert!(
            (1.3..=3.5).contains(&ratio),
            "class {k} vs {}: ratio {ratio:.2} (counts {c:?})",
            k + 1
        );
    }
    let overall = c[0] / c[4].max(1.0);
    assert!(
        (6.0..=40.0).contains(&overall),
        "critical/background {overall:.1}"
    );
    assert!(c.iter().all(|&n| n > 0.0), "every class progressed: {c:?}");
    let busy = ex.busy();
    assert!(busy[0] > busy[4], "busy time follows the weights: {busy:?}");
    ex.shutdown();
}

#[test]
fn background_work_finishes_under_critical_load() {
    let ex = executor(2);
    let stop = Arc::new(AtomicBool::new(false));
    let critical = Arc::new(AtomicU64::new(0));
    let hogs: Vec<_> = (0..6)
        .map(|_| ex.spawn(hog(critical.clone(), stop.clone()), Priority::Critical))
        .collect();
    // A background job of 40 units completes although critical hogs never
    // stop on their own: the scheduler serves it at least once every 17
    // slices of each worker.
    let background = ex.spawn(
        async {
            for _ in 0..40 {
                unit();
                yield_now().await;
            }
            current_worker()
        },
        Priority::Background,
    );
    let worker = background.join().unwrap();
    assert!(worker.is_some(), "ran on an executor worker");
    assert!(critical.load(Ordering::Relaxed) > 0);
    stop.store(true, Ordering::Relaxed);
    for h in hogs {
        h.join().unwrap();
    }
    ex.shutdown();
}

#[test]
fn within_a_class_trust_earns_a_larger_share() {
    let ex = executor(2);
    let stop = Arc::new(AtomicBool::new(false));
    let high = Arc::new(AtomicU64::new(0));
    let low = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..4 {
        for (level, count) in [(TrustLevel::High, &high), (TrustLevel::Low, &low)] {
            let opts = SpawnOptions::new(Priority::Normal).trust(level).clone();
            handles.push(
                ex.spawn_with(hog(count.clone(), stop.clone()), &opts)
                    .unwrap(),
            );
        }
    }
    wait_for(&high, 1500);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let (h, l) = (
        high.load(Ordering::Relaxed) as f64,
        low.load(Ordering::Relaxed) as f64,
    );
    // Weights High 6 : Low 2.
    assert!(l > 0.0, "low trust still progresses");
    assert!((1.8..=6.0).contains(&(h / l)), "high {h} low {l}");
    ex.shutdown();
}

#[test]
fn pinned_tasks_run_only_on_their_worker() {
    let ex = executor(2);
    let stop = Arc::new(AtomicBool::new(false));
    let sink = Arc::new(AtomicU64::new(0));
    // Unpinned hogs keep both workers busy and stealing.
    let hogs: Vec<_> = (0..4)
        .map(|_| ex.spawn(hog(sink.clone(), stop.clone()), Priority::Normal))
        .collect();
    let mut pinned = Vec::new();
    for w in [0usize, 1, 1, 0, 1] {
        let opts = SpawnOptions::new(Priority::Normal).worker(w).clone();
        pinned.push((
            w,
            ex.spawn_with(
                async {
                    let mut seen = Vec::new();
                    for _ in 0..30 {
                        seen.push(current_worker());
                        unit();
                        yield_now().await;
                    }
                    seen
                },
                &opts,
            )
            .unwrap(),
        ));
    }
    for (w, h) in pinned {
        let seen = h.join().unwrap();
        assert_eq!(seen.len(), 30);
        assert!(
            seen.iter().all(|s| *s == Some(w)),
            "pinned to {w}, saw {seen:?}"
        );
    }
    // Unpinned tasks do run on both workers.
    let spread: Vec<_> = (0..40)
        .map(|_| {
            ex.spawn(
                async {
                    unit();
                    yield_now().await;
                    current_worker()
                },
                Priority::High,
            )
        })
        .collect();
    let mut workers: Vec<_> = spread.into_iter().map(|h| h.join().unwrap()).collect();
    workers.sort();
    workers.dedup();
    assert!(workers.iter().all(Option::is_some));
    stop.store(true, Ordering::Relaxed);
    for h in hogs {
        h.join().unwrap();
    }
    let err = ex
        .spawn_with(async {}, SpawnOptions::new(Priority::Low).worker(2))
        .unwrap_err();
    assert!(matches!(
        err,
        ScheduleError::NoSuchWorker {
            worker: 2,
            workers: 2
        }
    ));
    ex.shutdown();
}

#[test]
fn shutdown_cancels_endless_tasks_without_deadlock() {
    let ex = executor(2);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for (i, p) in Priority::ALL.into_iter().enumerate() {
        handles.push(ex.spawn(hog(count.clone(), stop.clone()), p));
        let opts = SpawnOptions::new(p).worker(i % 2).clone();
        handles.push(
            ex.spawn_with(hog(count.clone(), stop.clone()), &opts)
                .unwrap(),
        );
    }
    // A task that waits forever on something that never comes.
    let forever = ex.spawn(std::future::pending::<()>(), Priority::Normal);
    wait_for(&count, 50);
    ex.shutdown();
    ex.shutdown(); // idempotent
    for h in handles {
        assert_eq!(h.join(), Err(JoinError::Cancelled));
    }
    assert_eq!(forever.join(), Err(JoinError::Cancelled));
    // Spawning after shutdown yields a cancelled handle, not a hang.
    assert_eq!(
        ex.spawn(async { 1 }, Priority::Critical).join(),
        Err(JoinError::Cancelled)
    );
}

#[test]
fn panics_are_reported_and_the_worker_survives() {
    let ex = executor(1);
    let bad = ex.spawn(async { panic!("boom") }, Priority::High);
    assert_eq!(bad.join(), Err(JoinError::Panicked("boom".into())));
    let good = ex.spawn(async { 41 + 1 }, Priority::High);
    assert_eq!(good.join(), Ok(42));
    ex.shutdown();
}

#[test]
fn workers_run_inside_a_tokio_context() {
    // With the runtime given explicitly...
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let ex = Executor::builder()
        .workers(2)
        .tokio_handle(rt.handle().clone())
        .build()
        .unwrap();
    let h = ex.spawn(
        async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            tokio::task::spawn_blocking(|| 7).await.unwrap()
        },
        Priority::Normal,
    );
    assert_eq!(h.join(), Ok(7));
    ex.shutdown();
    // ...and with none: the executor brings its own.
    let ex = executor(1);
    let h = ex.spawn(
        async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            "slept"
        },
        Priority::Low,
    );
    assert_eq!(h.join(), Ok("slept"));
    // Join handles are futures too.
    let outer = ex.clone();
    let nested = ex.spawn(
        async move { outer.spawn(async { 5 }, Priority::High).await },
        Priority::Normal,
    );
    assert_eq!(nested.join(), Ok(Ok(5)));
    ex.shutdown();
}

#[test]
fn newcomers_are_not_starved_by_yielding_tasks_of_their_lane() {
    // Tasks that keep yielding go back to their worker's local queue; a
    // task spawned from outside waits in the shared injector of the same
    // lane and must still be served (a worker checks the shared queues
    // first every 16th pick).
    for workers in [1, 2] {
        let ex = executor(workers);
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let hogs: Vec<_> = (0..4 * workers)
            .map(|_| ex.spawn(hog(count.clone(), stop.clone()), Priority::Critical))
            .collect();
        wait_for(&count, 100);
        for _ in 0..5 {
            let newcomer = ex.spawn(
                async {
                    for _ in 0..10 {
                        unit();
                        yield_now().await;
                    }
                    true
                },
                Priority::Critical,
            );
            assert_eq!(newcomer.join(), Ok(true));
        }
        stop.store(true, Ordering::Relaxed);
        for h in hogs {
            h.join().unwrap();
        }
        ex.shutdown();
    }
}

#[test]
fn a_critical_task_waits_about_one_slice_in_sixteen_for_background_hogs() {
    // The essence of the former `P6 synthetic` bench, counted in work units
    // instead of timed: on one worker, with background hogs running, a
    // critical task that arrives runs about sixteen slices for each one a
    // hog gets (class weights 16 : 1), so its latency is its own work plus
    // about a sixteenth, however many hogs there are.
    let ex = executor(1);
    let stop = Arc::new(AtomicBool::new(false));
    let background = Arc::new(AtomicU64::new(0));
    let hogs: Vec<_> = (0..4)
        .map(|_| ex.spawn(hog(background.clone(), stop.clone()), Priority::Background))
        .collect();
    wait_for(&background, 50);
    let seen = background.clone();
    let during = ex
        .spawn(
            async move {
                let before = seen.load(Ordering::Relaxed);
                for _ in 0..48 {
                    unit();
                    yield_now().await;
                }
                seen.load(Ordering::Relaxed) - before
            },
            Priority::Critical,
        )
        .join()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    for h in hogs {
        h.join().unwrap();
    }
    // About 3 background units during 48 critical ones; the bound is
    // generous for a shared, noisy machine.
    assert!(
        during <= 12,
        "background ran {during} units during 48 critical ones"
    );
    ex.shutdown();
}

#[test]
fn a_failed_start_keeps_the_os_error_as_its_source() {
    let err = ScheduleError::Executor {
        what: "cannot start worker thread 3".into(),
        source: std::io::Error::other("resource temporarily unavailable"),
    };
    assert_eq!(
        err.to_string(),
        "executor: cannot start worker thread 3: resource temporarily unavailable"
    );
    let source = std::error::Error::source(&err).expect("a source");
    assert!(source.downcast_ref::<std::io::Error>().is_some());
}
