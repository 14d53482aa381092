//! Two writers of one log take turns: opening waits for the lock, up to a
//! timeout, and says that it waits.

use std::time::Instant;

use super::*;

#[test]
fn a_second_open_waits_for_the_lock_until_the_first_closes_or_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = SigningKey::generate();
    let first = open(&path, &key, &AuditConfig::new());
    first.append(entry(1)).unwrap();

    // Not released: the wait ends at the timeout, and the error names the
    // path and the time waited.
    let mut config = AuditConfig::new();
    config.lock_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = AuditLog::open(&path, SigningKey::generate(), &config).unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        matches!(&err, AuditError::Locked { path: p, waited } if *p == path && *waited == Duration::from_millis(300)),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("300ms"), "{message}");

    // Released while waiting: the second open gets the log, and was told
    // once that it waits.
    let told = Arc::new(Mutex::new(Vec::new()));
    let mut config = AuditConfig::new();
    config.lock_timeout(Duration::from_secs(30)).on_lock_wait({
        let told = told.clone();
        move |p: &Path| told.lock().unwrap().push(p.to_owned())
    });
    let second = std::thread::spawn({
        let path = path.clone();
        let key = SigningKey::from_pem(&key.to_pem()).unwrap();
        move || AuditLog::open(&path, key, &config)
    });
    let mut polls = 0;
    while told.lock().unwrap().is_empty() {
        polls += 1;
        assert!(polls < 1000, "the second open never started to wait");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(!second.is_finished(), "the second open did not wait");
    first.close().unwrap();
    let second = second.join().unwrap().unwrap();
    assert_eq!(*told.lock().unwrap(), vec![path.clone()]);
    second.append(entry(2)).unwrap();
    second.close().unwrap();
    // One chain, both sessions in it.
    let report = audit::verify_file(&path, &pinned(&key)).unwrap();
    assert_eq!(report.records, lines(&path).len() as u64);
    assert_eq!(
        lines(&path)
            .iter()
            .filter(|l| l.contains("\"kind\":\"audit.opened\""))
            .count(),
        2
    );
}
