//! Appending from async code never blocks the executor's thread, and the
//! log's health can be watched.

use super::bounded::{Gate, chunk};
use super::*;

/// On a single-threaded runtime, a task appending to a log whose disk is
/// stuck waits without blocking the thread: another task on the same thread
/// runs to completion meanwhile. Then the stuck task finishes, and
/// `flush_async` resolves once everything is durable.
#[test]
fn append_async_waits_without_blocking_the_worker_thread() {
    for fsync in [FsyncPolicy::EveryBatch, FsyncPolicy::EveryRecord] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let key = SigningKey::generate();
        let gate = Gate::shut();
        let mut config = AuditConfig::new();
        config.fsync(fsync).max_pending_bytes(64 * 1024);
        // Open (with EveryRecord, opening waits for its first record), then
        // the disk gets stuck.
        Gate::set(&gate, true);
        let log = Gate::log(&path, &key, &config, &gate);
        log.flush().unwrap();
        Gate::set(&gate, false);
        // A watchdog: if the thread is blocked, nothing else opens the
        // gate, and the test fails instead of hanging.
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let watchdog = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                let _ = finished.recv_timeout(Duration::from_secs(10));
                Gate::set(&gate, true);
            })
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let chatty = tokio::spawn({
                let log = log.clone();
                async move {
                    for n in 0..50 {
                        log.append_async(chunk(n)).await.unwrap();
                    }
                }
            });
            let other = tokio::spawn({
                let gate = gate.clone();
                async move {
                    for _ in 0..100 {
                        tokio::task::yield_now().await;
                    }
                    Gate::is_open(&gate)
                }
            });
            let gate_was_open = other.await.unwrap();
            assert!(
                !gate_was_open,
                "{fsync:?}: the other task only ran once the disk came back"
            );
            assert!(!chatty.is_finished(), "{fsync:?}");
            Gate::set(&gate, true);
            chatty.await.unwrap();
            log.flush_async().await.unwrap();
        });
        // Everything appended is on disk once flush_async resolved.
        let on_disk = lines(&path)
            .iter()
            .filter(|l| l.contains("\"kind\":\"container.output\""))
            .count();
        assert_eq!(on_disk, 50, "{fsync:?}");
        log.close().unwrap();
        audit::verify_file(&path, &pinned(&key)).unwrap();
        drop(done);
        watchdog.join().unwrap();
    }
}

#[test]
fn health_turns_failing_on_a_write_error_and_writable_when_it_recovers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = SigningKey::generate();
    let full = Arc::new(AtomicBool::new(false));
    let mut config = AuditConfig::new();
    config.retry_every(Duration::from_millis(20));
    let log = {
        let full = full.clone();
        AuditLog::open_with(&path, key, &config, move |file| {
            Box::new(FullDisk {
                file,
                full: full.clone(),
                partial_written: Default::default(),
            })
        })
        .unwrap()
    };
    let mut health = log.health();
    assert_eq!(*health.borrow_and_update(), AuditHealth::Writable);
    full.store(true, Ordering::SeqCst);
    log.append(entry(1)).unwrap();
    assert!(log.flush().is_err());
    assert!(health.has_changed().unwrap());
    match &*health.borrow_and_update() {
        AuditHealth::Failing { cause } => {
            assert!(cause.contains("No space left"), "{cause}");
            assert!(cause.contains("audit.jsonl"), "{cause}");
        }
        other => panic!("expected failing, got {other:?}"),
    }
    // The async flush fails too, rather than wait for ever.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(matches!(
        runtime.block_on(log.flush_async()),
        Err(AuditError::Unavailable { .. })
    ));
    assert!(matches!(
        runtime.block_on(log.append_async(entry(2))),
        Err(AuditError::Unavailable { .. })
    ));

    full.store(false, Ordering::SeqCst);
    // A watcher is woken when it recovers.
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), health.changed())
            .await
            .expect("the log recovers within 10 s")
            .unwrap();
    });
    assert_eq!(*health.borrow_and_update(), AuditHealth::Writable);
    log.close().unwrap();
    assert_eq!(*health.borrow(), AuditHealth::Closed);
}
