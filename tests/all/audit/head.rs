//! The signed head kept outside the log: cutting the log back to an earlier
//! checkpoint verifies on its own, and is caught against the head.

use super::*;
use forgeone::audit::SignedHead;

/// A log of two sessions (each closed cleanly), its head kept in a head
/// file; returns (dir, log, head file, key, lines after session one).
fn two_sessions() -> (tempfile::TempDir, PathBuf, PathBuf, SigningKey, usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let head_file = audit::head_file_for(&path);
    let key = SigningKey::generate();
    let mut config = AuditConfig::new();
    config.checkpoint_every(10).head_file(&head_file);
    let log = open(&path, &key, &config);
    for n in 0..5 {
        log.append(entry(n)).unwrap();
    }
    log.close().unwrap();
    let first_session = lines(&path).len();
    let log = open(&path, &key, &config);
    for n in 5..40 {
        log.append(entry(n)).unwrap();
    }
    log.close().unwrap();
    (dir, path, head_file, key, first_session)
}

#[test]
fn a_log_cut_back_to_an_earlier_checkpoint_fails_against_its_signed_head() {
    let (_dir, path, head_file, key, first_session) = two_sessions();
    assert_eq!(head_file.file_name().unwrap(), "audit.head.json");
    let all = lines(&path);
    let total = all.len() as u64;
    // The head file holds the closing checkpoint's head: the record before
    // it, signed.
    let head = SignedHead::from_file(&head_file).unwrap();
    assert_eq!(head.checkpoint_seq(), total);
    assert_eq!(head.seq(), total - 1);
    assert_eq!(head.key_id(), key.id());
    let covered: serde_json::Value = serde_json::from_str(&all[total as usize - 2]).unwrap();
    assert_eq!(head.hash(), covered["hash"].as_str().unwrap());
    let with_head = |pin: bool| {
        let mut options = if pin {
            pinned(&key)
        } else {
            VerifyOptions::new()
        };
        options.head(head.clone());
        options
    };

    // Intact: it verifies with the head, and the report hands out the same
    // head for a witness.
    let report = audit::verify_file(&path, &with_head(true)).unwrap();
    assert_eq!(report.signed_head.as_ref(), Some(&head));
    audit::verify_file(&path, &with_head(false)).unwrap();

    // Cut back to the end of the first session (its closing checkpoint):
    // it verifies on its own, so only the head can tell.
    write_lines(&path, &all[..first_session]);
    let cut = audit::verify_file(&path, &pinned(&key)).unwrap();
    assert_eq!(cut.records, first_session as u64);
    let f = failure(&path, &with_head(true));
    assert_eq!(
        f.damage,
        Damage::EndsBeforeHead {
            last_seq: first_session as u64,
            head_seq: head.seq()
        }
    );
    assert_eq!(f.seq, first_session as u64 + 1);
    let message = f.to_string();
    assert!(
        message.contains(&format!("ends at seq {first_session}"))
            && message.contains(&format!("signed head at seq {}", head.seq())),
        "{message}"
    );
    // So does a known minimum length.
    let mut min = pinned(&key);
    min.min_seq(total);
    let f = failure(&path, &min);
    assert_eq!(
        f.damage,
        Damage::EndsBeforeMinSeq {
            last_seq: first_session as u64,
            min_seq: total
        }
    );

    // The host refuses to append to it (which would hide the cut under a
    // new head), and leaves it as it is.
    let before = std::fs::read(&path).unwrap();
    let mut config = AuditConfig::new();
    config.head_file(&head_file);
    let err =
        AuditLog::open(&path, SigningKey::from_pem(&key.to_pem()).unwrap(), &config).unwrap_err();
    assert!(
        matches!(&err, AuditError::Corrupt { reason: Corruption::EndsBeforeHead { last_seq, head_seq, .. }, .. }
            if *last_seq == first_session as u64 && *head_seq == head.seq()),
        "{err}"
    );
    assert!(err.to_string().contains("audit.head.json"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // Intact again: the minimum is met, and the host opens it.
    write_lines(&path, &all);
    audit::verify_file(&path, &min).unwrap();
    let log = AuditLog::open(&path, key, &config).unwrap();
    log.close().unwrap();
}

#[test]
fn another_log_or_another_key_does_not_match_the_head() {
    let (_dir, path, head_file, key, _) = two_sessions();
    let head = SignedHead::from_file(&head_file).unwrap();
    // Another log, as long: the record at the head's number differs.
    let (_other_dir, other, _other_key) = closed_log(100, 10);
    let mut options = VerifyOptions::new();
    options.head(head.clone());
    let f = failure(&other, &options);
    assert_eq!(f.seq, head.seq());
    assert!(
        matches!(&f.damage, Damage::NotTheHead { expected, .. } if *expected == head.hash()),
        "{f}"
    );
    // The head must be signed by the pinned key.
    let mut options = pinned(&SigningKey::generate());
    options.head(head);
    let f = failure(&path, &options);
    assert!(
        matches!(&f.damage, Damage::HeadKey { signed_by, .. } if signed_by == key.id()),
        "{f}"
    );
    // A forged head file is refused when it is read.
    let text = std::fs::read_to_string(&head_file).unwrap();
    let forged = text.replacen("\"seq\": ", "\"seq\": 1", 1);
    std::fs::write(&head_file, forged).unwrap();
    let err = SignedHead::from_file(&head_file).unwrap_err();
    assert!(matches!(err, AuditError::Head { .. }), "{err}");
}

#[test]
fn the_head_file_follows_each_durable_checkpoint_and_failing_to_save_it_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    // The head file's directory does not exist yet: saving fails.
    let head_file = dir.path().join("heads/audit.head.json");
    let key = SigningKey::generate();
    let mut config = AuditConfig::new();
    config
        .checkpoint_every(10)
        .head_file(&head_file)
        .retry_every(Duration::from_millis(20));
    let log = open(&path, &key, &config);
    let mut health = log.health();
    for n in 0..12 {
        log.append(entry(n)).unwrap();
    }
    // The periodic checkpoint is durable, its head cannot be saved: the log
    // is unavailable (fail closed), and says why.
    let err = log.flush().unwrap_err();
    assert!(matches!(err, AuditError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("audit.head.json"), "{err}");
    assert!(health.borrow_and_update().is_failing());
    assert!(log.ensure_writable().is_err());

    std::fs::create_dir(dir.path().join("heads")).unwrap();
    let mut tries = 0;
    while log.ensure_writable().is_err() {
        tries += 1;
        assert!(tries < 500, "the log never recovered");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(*health.borrow_and_update(), AuditHealth::Writable);
    let head = SignedHead::from_file(&head_file).unwrap();
    // audit.opened and 9 events, then the periodic checkpoint at 11.
    assert_eq!((head.seq(), head.checkpoint_seq()), (10, 11));

    log.close().unwrap();
    let report = audit::verify_file(&path, &pinned(&key)).unwrap();
    let head = SignedHead::from_file(&head_file).unwrap();
    assert_eq!(head.checkpoint_seq(), report.records);
    assert_eq!(report.signed_head, Some(head));
    // The outage is on the record.
    assert!(
        lines(&path)
            .iter()
            .any(|l| l.contains("\"kind\":\"audit.resumed\"") && l.contains("audit.head.json"))
    );
}
