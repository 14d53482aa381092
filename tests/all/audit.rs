//! The audit log: chain, checkpoints, crash recovery, concurrency, failure.
//! Bounds (line limit, back-pressure), async appends and health, signed
//! heads and lock waits are in the submodules.

mod bounded;
mod head;
mod lock;
mod nonblocking;
mod segments;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forgeone::SigningKey;
use forgeone::audit::{
    self, Actor, AuditConfig, AuditError, AuditEvent, AuditHealth, AuditLog, AuditStorage,
    Corruption, Damage, Entry, ExportFilter, ExportFormat, FailMode, FsyncPolicy, LineError,
    Untrusted, VerifyOptions,
};

/// A test event: a container printed a line.
#[derive(Clone)]
struct Output {
    n: u64,
    text: Untrusted,
}

impl AuditEvent for Output {
    fn kind(&self) -> &'static str {
        "container.output"
    }
    fn details(&self) -> serde_json::Value {
        serde_json::json!({ "n": self.n, "line": self.text })
    }
}

fn entry(n: u64) -> Entry {
    Entry::new(&Output {
        n,
        text: Untrusted::new(&format!("line {n}")),
    })
    .actor(Actor::host())
    .container(format!("c-{}", n % 7))
}

fn open(path: &Path, key: &SigningKey, config: &AuditConfig) -> AuditLog {
    AuditLog::open(path, SigningKey::from_pem(&key.to_pem()).unwrap(), config).unwrap()
}

/// Writes a closed log with `n` appended events; returns (dir, path, key).
fn closed_log(n: u64, checkpoint_every: u64) -> (tempfile::TempDir, PathBuf, SigningKey) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = SigningKey::generate();
    let mut config = AuditConfig::new();
    config.checkpoint_every(checkpoint_every);
    let log = open(&path, &key, &config);
    for i in 0..n {
        log.append(entry(i)).unwrap();
    }
    log.close().unwrap();
    (dir, path, key)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

fn pinned(key: &SigningKey) -> VerifyOptions {
    let mut options = VerifyOptions::new();
    options.key(key.public().clone());
    options
}

fn failure(path: &Path, options: &VerifyOptions) -> audit::VerifyFailure {
    match audit::verify_file(path, options) {
        Err(AuditError::Verify(f)) => f,
        other => panic!("expected a verification failure, got {other:?}"),
    }
}

#[test]
fn thousands_of_records_verify() {
    let (_dir, path, key) = closed_log(5000, 500);
    let report = audit::verify_file(&path, &pinned(&key)).unwrap();
    // 1 opened + 5000 events + periodic checkpoints + closing checkpoint.
    let all = lines(&path);
    assert_eq!(report.records, all.len() as u64);
    assert!(report.checkpoints >= 10, "{report:?}");
    assert_eq!(report.unsealed, 0);
    assert!(report.key_pinned);
    let last: serde_json::Value = serde_json::from_str(all.last().unwrap()).unwrap();
    assert_eq!(last["kind"], "audit.checkpoint");
    assert_eq!(last["details"]["reason"], "shutdown");
    assert_eq!(report.head, last["hash"].as_str().unwrap());
}

#[test]
fn editing_any_byte_is_detected_at_that_record() {
    let (_dir, path, key) = closed_log(300, 100);
    let original = lines(&path);
    // Every record, several positions in each (start, kind, details, hash).
    for (index, line) in original.iter().enumerate() {
        for pos in [1, 10, line.len() / 2, line.len() - 5] {
            let mut edited = original.clone();
            let mut bytes = edited[index].clone().into_bytes();
            bytes[pos] = if bytes[pos] == b'0' { b'1' } else { b'0' };
            edited[index] = String::from_utf8(bytes).unwrap();
            write_lines(&path, &edited);
            let f = failure(&path, &pinned(&key));
            assert_eq!(
                f.seq,
                index as u64 + 1,
                "edit at record {} byte {pos}: {f}",
                index + 1
            );
            assert!(
                matches!(
                    f.damage,
                    Damage::Edited(_) | Damage::Inserted(_) | Damage::Reordered { .. }
                ),
                "{f}"
            );
        }
    }
}

#[test]
fn removing_a_record_is_detected() {
    let (_dir, path, key) = closed_log(200, 50);
    let mut edited = lines(&path);
    edited.remove(41); // seq 42
    write_lines(&path, &edited);
    let f = failure(&path, &pinned(&key));
    assert_eq!(f.seq, 42, "{f}");
    assert_eq!(f.damage, Damage::Removed { through: 42 });
    assert!(f.to_string().contains("removed"));

    let mut edited = lines(&path);
    edited.drain(99..102); // after the first removal the file is shorter; just check a range
    write_lines(&path, &edited);
    assert!(matches!(
        failure(&path, &pinned(&key)).damage,
        Damage::Removed { .. }
    ));
}

#[test]
fn swapping_two_records_is_detected() {
    let (_dir, path, key) = closed_log(200, 50);
    let mut edited = lines(&path);
    edited.swap(10, 11); // seq 11 and 12
    write_lines(&path, &edited);
    let f = failure(&path, &pinned(&key));
    assert_eq!(f.seq, 11, "{f}");
    assert_eq!(f.damage, Damage::Reordered { found: 12 });
}

#[test]
fn inserting_a_forged_record_is_detected() {
    let (_dir, path, key) = closed_log(200, 50);
    let original = lines(&path);
    // The strongest forger: a record correctly hashed onto the chain after
    // seq 20, claiming seq 21. (Forge it by writing a second log whose
    // chain is then spliced: easier to build by hand.)
    let prev: serde_json::Value = serde_json::from_str(&original[19]).unwrap();
    let body = format!(
        "{{\"seq\":21,\"ts\":\"2026-11-28T00:00:00.000000Z\",\"kind\":\"container.output\",\"actor\":null,\"subjects\":{{}},\"details\":{{\"line\":\"forged\"}},\"prev\":\"{}\"",
        prev["hash"].as_str().unwrap()
    );
    let mut prev_raw = [0u8; 32];
    hex_decode(prev["hash"].as_str().unwrap(), &mut prev_raw);
    let mut hasher = blake3::Hasher::new();
    hasher.update(&prev_raw);
    hasher.update(format!("{body}}}").as_bytes());
    let forged = format!("{body},\"hash\":\"{}\"}}", hasher.finalize().to_hex());
    let mut edited = original.clone();
    edited.insert(20, forged);
    write_lines(&path, &edited);
    let f = failure(&path, &pinned(&key));
    assert_eq!(f.seq, 21, "{f}");
    assert!(matches!(f.damage, Damage::Inserted(_)), "{f}");

    // A foreign record with a made-up number is an insertion too.
    let mut edited = original;
    let foreign = edited[5].replacen("{\"seq\":6,", "{\"seq\":9999,", 1);
    edited.insert(30, foreign);
    write_lines(&path, &edited);
    let f = failure(&path, &pinned(&key));
    assert_eq!(f.seq, 31, "{f}");
}

fn hex_decode(text: &str, out: &mut [u8; 32]) {
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap();
    }
}

#[test]
fn cutting_the_tail_after_a_checkpoint_is_detected() {
    let (_dir, path, key) = closed_log(250, 100);
    let original = lines(&path);
    // Find the last periodic checkpoint, then cut a few records after it.
    let last_cp = original
        .iter()
        .rposition(|l| l.contains("\"reason\":\"periodic\""))
        .unwrap();
    let cut: Vec<String> = original[..last_cp + 3].to_vec();
    write_lines(&path, &cut);
    let f = failure(&path, &pinned(&key));
    assert_eq!(f.seq, last_cp as u64 + 2, "{f}");
    assert!(matches!(f.damage, Damage::UnsealedTail { .. }), "{f}");
    assert!(f.to_string().contains("truncated"), "{f}");

    // Cutting exactly at a periodic checkpoint still misses the closing one.
    write_lines(&path, &original[..=last_cp]);
    assert!(matches!(
        failure(&path, &pinned(&key)).damage,
        Damage::UnsealedTail { .. }
    ));
    // A live log may be checked with an open tail.
    let mut open_tail = pinned(&key);
    open_tail.allow_open_tail(true);
    audit::verify_file(&path, &open_tail).unwrap();
}

#[test]
fn checkpoint_signatures_are_checked() {
    let (_dir, path, key) = closed_log(120, 50);
    // Another key pinned: every checkpoint fails.
    let other = SigningKey::generate();
    let f = failure(&path, &pinned(&other));
    assert!(matches!(f.damage, Damage::BadCheckpoint(_)), "{f}");

    // A forger who rewrites the whole log from some point with recomputed
    // hashes cannot re-sign the checkpoint: edit a record and re-chain
    // everything after it.
    let original = lines(&path);
    let mut rechained = Vec::new();
    let mut prev = [0u8; 32];
    for (i, line) in original.iter().enumerate() {
        let mut body = line[..line.len() - 75].to_string();
        if i == 10 {
            body = body.replace("line 9", "line X");
        }
        // Re-point prev at the forged chain, and make each checkpoint name
        // the forged head, so only its signature can give the forgery away.
        let prev_hex: String = prev.iter().map(|b| format!("{b:02x}")).collect();
        let original: serde_json::Value = serde_json::from_str(line).unwrap();
        let old_prev = original["prev"].as_str().unwrap();
        body = body.replace(
            &format!("\"head\":\"{old_prev}\""),
            &format!("\"head\":\"{prev_hex}\""),
        );
        let at = body.rfind(",\"prev\":\"").unwrap();
        body = format!("{}\"prev\":\"{}\"", &body[..at + 1], prev_hex);
        let mut hasher = blake3::Hasher::new();
        hasher.update(&prev);
        hasher.update(format!("{body}}}").as_bytes());
        let hash = hasher.finalize();
        prev = *hash.as_bytes();
        rechained.push(format!("{body},\"hash\":\"{}\"}}", hash.to_hex()));
    }
    write_lines(&path, &rechained);
    let f = failure(&path, &pinned(&key));
    assert!(
        matches!(&f.damage, Damage::BadCheckpoint(why) if why.contains("does not verify")),
        "{f}"
    );
    // Without a pinned key the key named in the log is used: same result.
    let f2 = failure(&path, &VerifyOptions::new());
    assert_eq!(f2.seq, f.seq);
    // The first checkpoint after the edit is where it shows.
    let first_cp_after = original
        .iter()
        .enumerate()
        .skip(10)
        .find(|(_, l)| l.contains("\"kind\":\"audit.checkpoint\""))
        .unwrap()
        .0;
    assert_eq!(f.seq, first_cp_after as u64 + 1, "{f}");
}

#[test]
fn torn_last_line_is_cut_reported_and_everything_before_kept() {
    let (_dir, path, key) = closed_log(40, 1000);
    let full = std::fs::read(&path).unwrap();
    // The start offset of the last line, and of the one before.
    let last_start = full[..full.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    let complete_records = full[..last_start].iter().filter(|&&b| b == b'\n').count() as u64;
    // Truncate at many offsets inside the last line.
    for cut in (last_start + 1..full.len() - 1).step_by(7) {
        std::fs::write(&path, &full[..cut]).unwrap();
        let log = open(&path, &key, &AuditConfig::new());
        let report = log.open_report();
        assert_eq!(report.existing_records, complete_records, "cut at {cut}");
        assert_eq!(
            report.torn_tail,
            Some((last_start as u64, (cut - last_start) as u64))
        );
        log.close().unwrap();
        // The complete records are byte-identical, and a recovery record follows.
        let now = std::fs::read(&path).unwrap();
        assert_eq!(&now[..last_start], &full[..last_start]);
        let after: Vec<serde_json::Value> = now[last_start..]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert!(
            after.iter().any(|r| r["kind"] == "audit.recovered"
                && r["details"]["torn_offset"] == last_start as u64),
            "cut at {cut}: {after:?}"
        );
        let verified = audit::verify_file(&path, &pinned(&key)).unwrap();
        assert_eq!(verified.recoveries.len(), 1);
    }
}

#[test]
fn truncation_anywhere_reopens_without_losing_complete_records() {
    let (_dir, path, key) = closed_log(30, 10);
    let full = std::fs::read(&path).unwrap();
    for cut in (1..full.len()).step_by(97) {
        std::fs::write(&path, &full[..cut]).unwrap();
        let complete = full[..cut].iter().filter(|&&b| b == b'\n').count() as u64;
        let log = open(&path, &key, &AuditConfig::new());
        assert_eq!(log.open_report().existing_records, complete, "cut at {cut}");
        log.close().unwrap();
        audit::verify_file(&path, &pinned(&key)).unwrap();
    }
}

/// Opening reads only the tail since the last checkpoint: damage there
/// refuses the open; damage before it is sealed by the checkpoint's
/// signature and left to `verify`, which names it (opening a large log
/// must not re-read it all).
#[test]
fn corruption_in_the_unsealed_tail_refuses_to_open_and_verify_finds_the_rest() {
    let (_dir, path, key) = closed_log(30, 10);
    let mut edited = lines(&path);
    // As if the writer crashed before its closing checkpoint...
    edited.pop();
    // ...and a record after the last checkpoint was edited.
    let at = edited.len() - 1;
    let seq = serde_json::from_str::<serde_json::Value>(&edited[at]).unwrap()["seq"]
        .as_u64()
        .unwrap();
    edited[at] = edited[at].replace("line", "lime");
    write_lines(&path, &edited);
    let err = AuditLog::open(
        &path,
        SigningKey::from_pem(&key.to_pem()).unwrap(),
        &AuditConfig::new(),
    )
    .unwrap_err();
    let AuditError::Corrupt {
        seq: found, reason, ..
    } = &err
    else {
        panic!("expected corruption at seq {seq}, got {err:?}");
    };
    assert_eq!(*found, seq);
    // The typed reason is the error's source; the message still names it.
    assert!(
        matches!(reason, Corruption::Line(LineError::HashMismatch)),
        "{reason:?}"
    );
    assert!(std::error::Error::source(&err).is_some());
    assert!(err.to_string().contains("does not match its hash"), "{err}");

    // Damage before the last checkpoint: the log opens (and goes on), and
    // verify names the record.
    let (_dir, path, key) = closed_log(30, 10);
    let mut edited = lines(&path);
    edited[4] = edited[4].replace("line", "lime");
    write_lines(&path, &edited);
    open(&path, &key, &AuditConfig::new()).close().unwrap();
    let f = failure(&path, &pinned(&key));
    assert_eq!(f.seq, 5, "{f}");
    assert!(matches!(f.damage, Damage::Edited(_)), "{f}");
}

#[test]
fn concurrent_appends_are_gap_free_and_verify() {
    for fsync in [
        FsyncPolicy::EveryBatch,
        FsyncPolicy::EveryRecord,
        FsyncPolicy::Interval(Duration::from_millis(5)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let key = SigningKey::generate();
        let mut config = AuditConfig::new();
        config.fsync(fsync).checkpoint_every(97);
        let log = open(&path, &key, &config);
        let threads = 12;
        let per_thread = if fsync == FsyncPolicy::EveryRecord {
            100
        } else {
            800
        };
        let seqs = Arc::new(Mutex::new(Vec::new()));
        std::thread::scope(|s| {
            for t in 0..threads {
                let log = log.clone();
                let seqs = seqs.clone();
                s.spawn(move || {
                    let mut mine = Vec::with_capacity(per_thread);
                    for i in 0..per_thread {
                        mine.push(log.append(entry((t * 10_000 + i) as u64)).unwrap());
                    }
                    seqs.lock().unwrap().extend(mine);
                });
            }
        });
        log.close().unwrap();
        let mut seqs = seqs.lock().unwrap().clone();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(
            seqs.len(),
            threads * per_thread,
            "{fsync:?}: duplicate sequence numbers"
        );
        let report = audit::verify_file(&path, &pinned(&key)).unwrap();
        // Every line is a record with the next number (verify checks that);
        // the appended events are all there.
        let events = lines(&path)
            .iter()
            .filter(|l| l.contains("\"kind\":\"container.output\""))
            .count();
        assert_eq!(events, threads * per_thread, "{fsync:?}");
        assert_eq!(report.records, lines(&path).len() as u64);
    }
}

/// A file that fails with "no space left on device" while `full` is set.
pub(crate) struct FullDisk {
    pub(crate) file: std::fs::File,
    pub(crate) full: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) partial_written: Arc<std::sync::atomic::AtomicBool>,
}

impl AuditStorage for FullDisk {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.full.load(std::sync::atomic::Ordering::SeqCst) {
            // Like a real full disk: part of the batch lands, then ENOSPC.
            let half = bytes.len() / 2;
            std::io::Write::write_all(&mut self.file, &bytes[..half])?;
            self.partial_written
                .store(true, std::sync::atomic::Ordering::SeqCst);
            return Err(std::io::Error::from_raw_os_error(28));
        }
        std::io::Write::write_all(&mut self.file, bytes)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        AuditStorage::truncate(&mut self.file, len)
    }
}

#[test]
fn a_write_failure_is_reported_and_new_work_refused_until_it_recovers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = SigningKey::generate();
    let full = Arc::new(AtomicBool::new(false));
    let partial = Arc::new(AtomicBool::new(false));
    let mut config = AuditConfig::new();
    config.retry_every(Duration::from_millis(20));
    let log = {
        let full = full.clone();
        let partial = partial.clone();
        AuditLog::open_with(
            &path,
            SigningKey::from_pem(&key.to_pem()).unwrap(),
            &config,
            move |file| {
                Box::new(FullDisk {
                    file,
                    full: full.clone(),
                    partial_written: partial.clone(),
                })
            },
        )
        .unwrap()
    };
    log.append(entry(1)).unwrap();
    log.flush().unwrap();
    log.ensure_writable().unwrap();

    full.store(true, Ordering::SeqCst);
    // The record is accepted into the chain, then the write fails.
    let accepted = log.append(entry(2)).unwrap();
    let err = log.flush().unwrap_err();
    assert!(matches!(err, AuditError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("No space left"), "{err}");
    // The write error itself is the source, not only its text.
    let source = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<std::io::Error>());
    assert_eq!(
        source.and_then(std::io::Error::raw_os_error),
        Some(28),
        "{err}"
    );
    assert!(partial.load(Ordering::SeqCst));
    // Fail closed: the kernel's admission check refuses, appends are refused.
    assert!(matches!(
        log.ensure_writable(),
        Err(AuditError::Unavailable { .. })
    ));
    assert!(matches!(
        log.append(entry(3)),
        Err(AuditError::Unavailable { .. })
    ));

    // Space comes back: the kept batch is written, the outage recorded.
    full.store(false, Ordering::SeqCst);
    let mut tries = 0;
    while log.ensure_writable().is_err() {
        tries += 1;
        assert!(tries < 500, "the log never recovered");
        std::thread::sleep(Duration::from_millis(10));
    }
    log.append(entry(4)).unwrap();
    log.close().unwrap();
    let report = audit::verify_file(&path, &pinned(&key)).unwrap();
    let all = lines(&path);
    assert_eq!(report.records, all.len() as u64);
    // Nothing acknowledged was lost, the partial write left no debris, and
    // the refused record is counted in the resume record.
    assert!(
        all.iter()
            .any(|l| l.contains(&format!("{{\"seq\":{accepted},")) && l.contains("line 2"))
    );
    let resumed: serde_json::Value = serde_json::from_str(
        all.iter()
            .find(|l| l.contains("\"kind\":\"audit.resumed\""))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(resumed["details"]["refused_records"], 1);
    assert!(!all.iter().any(|l| l.contains("line 3")));
}

#[test]
fn fail_open_is_recorded_and_keeps_admitting_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = SigningKey::generate();
    let mut config = AuditConfig::new();
    config.fail_mode(FailMode::Open);
    let log = open(&path, &key, &config);
    log.close().unwrap();
    let first: serde_json::Value = serde_json::from_str(&lines(&path)[0]).unwrap();
    assert_eq!(first["kind"], "audit.opened");
    assert_eq!(first["details"]["fail_mode"], "open");
    assert_eq!(first["details"]["host_key_id"], key.id().as_str());
}

#[test]
fn a_hostile_string_cannot_forge_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = SigningKey::generate();
    let log = open(&path, &key, &AuditConfig::new());
    let hostile =
        "ok\"}\n{\"seq\":3,\"kind\":\"boot.completed\"}\r\n\x1b[2J\x1b]0;pwned\x07\u{202e}";
    log.append(
        Entry::new(&Output {
            n: 1,
            text: Untrusted::new(hostile),
        })
        .actor(Actor::host()),
    )
    .unwrap();
    log.close().unwrap();
    let all = lines(&path);
    assert_eq!(
        all.len(),
        3,
        "opened, the event, the closing checkpoint: {all:#?}"
    );
    assert!(
        !all.iter()
            .any(|l| l.contains('\x1b') || l.contains('\u{202e}') || l.contains('\r'))
    );
    let event: serde_json::Value = serde_json::from_str(&all[1]).unwrap();
    let stored = event["details"]["line"].as_str().unwrap();
    assert!(stored.starts_with("ok\"}\\n{\"seq\":3"), "{stored}");
    assert!(!stored.chars().any(char::is_control), "{stored:?}");
    audit::verify_file(&path, &pinned(&key)).unwrap();
}

#[test]
fn a_second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = SigningKey::generate();
    let log = open(&path, &key, &AuditConfig::new());
    // By default opening does not wait.
    match AuditLog::open(&path, SigningKey::generate(), &AuditConfig::new()) {
        Err(err @ AuditError::Locked { waited, .. }) => {
            assert!(waited.is_zero());
            assert!(
                err.to_string().ends_with("is in use by another process"),
                "{err}"
            );
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    log.close().unwrap();
}

#[test]
fn reopening_continues_the_chain_and_records_an_unclean_stop() {
    let (_dir, path, key) = closed_log(10, 100);
    // Clean close, reopen: no recovery record.
    let log = open(&path, &key, &AuditConfig::new());
    assert!(!log.open_report().unclean_shutdown);
    log.append(entry(11)).unwrap();
    // Simulate a crash after a flushed write: the closing checkpoint is cut.
    log.flush().unwrap();
    log.close().unwrap();
    let mut all = lines(&path);
    all.pop();
    write_lines(&path, &all);
    let log = open(&path, &key, &AuditConfig::new());
    assert!(log.open_report().unclean_shutdown);
    log.close().unwrap();
    let report = audit::verify_file(&path, &pinned(&key)).unwrap();
    assert_eq!(report.recoveries.len(), 1);
}

#[test]
fn export_filters_and_formats() {
    let (_dir, path, _key) = closed_log(50, 20);
    let mut out = Vec::new();
    let mut filter = ExportFilter::new();
    filter.kind("container.*");
    let summary = audit::export(&path, &mut out, ExportFormat::Jsonl, &filter).unwrap();
    assert_eq!(summary.exported, 50);
    let exported = String::from_utf8(out).unwrap();
    // JSON Lines export is the records' exact bytes.
    let originals = lines(&path);
    for line in exported.lines() {
        assert!(originals.iter().any(|o| o == line));
    }

    let mut out = Vec::new();
    let mut filter = ExportFilter::new();
    filter.kind("audit.checkpoint");
    audit::export(&path, &mut out, ExportFormat::Csv, &filter).unwrap();
    let mut reader = csv::Reader::from_reader(out.as_slice());
    let headers = reader.headers().unwrap().clone();
    assert_eq!(&headers[0], "seq");
    assert_eq!(&headers[10], "details");
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(
        rows.len(),
        3,
        "two periodic checkpoints and the closing one"
    );
    let details: serde_json::Value = serde_json::from_str(&rows[2][10]).unwrap();
    assert_eq!(details["reason"], "shutdown");

    // Time window: nothing before the epoch, nothing after now.
    let mut out = Vec::new();
    let mut filter = ExportFilter::new();
    filter.until(chrono::DateTime::UNIX_EPOCH);
    assert_eq!(
        audit::export(&path, &mut out, ExportFormat::Jsonl, &filter)
            .unwrap()
            .exported,
        0
    );

    // A damaged log is not exported silently.
    let mut edited = lines(&path);
    edited[7] = edited[7].replace("line", "lime");
    write_lines(&path, &edited);
    let mut out = Vec::new();
    assert!(matches!(
        audit::export(&path, &mut out, ExportFormat::Jsonl, &ExportFilter::new()),
        Err(AuditError::Verify(_))
    ));
}

#[test]
fn follower_reads_new_records_as_they_land() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = SigningKey::generate();
    let log = open(&path, &key, &AuditConfig::new());
    log.flush().unwrap();
    let mut follower = audit::Follower::open(&path).unwrap();
    let first = follower.poll().unwrap();
    assert_eq!(first.len(), 1, "the audit.opened record");
    for i in 0..5 {
        log.append(entry(i)).unwrap();
    }
    log.flush().unwrap();
    let next = follower.poll().unwrap();
    assert_eq!(
        next.iter()
            .filter(|f| matches!(f, audit::Followed::Record(_)))
            .count(),
        5
    );
    log.close().unwrap();
}

#[test]
fn every_event_is_also_a_tracing_event() {
    use std::io::Write;
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let capture = capture.clone();
            move || capture.clone()
        })
        .with_ansi(false)
        .finish();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    tracing::subscriber::with_default(subscriber, || {
        let log = open(&path, &SigningKey::generate(), &AuditConfig::new());
        let seq = log.append(entry(42).workload("billing")).unwrap();
        log.close().unwrap();
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains("container.output"))
            .unwrap_or_else(|| panic!("no tracing event for the append: {text}"));
        assert!(line.contains("forgeone::audit"), "{line}");
        assert!(line.contains(&format!("seq={seq}")), "{line}");
        assert!(line.contains("workload=\"billing\""), "{line}");
    });
}
