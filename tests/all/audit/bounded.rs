//! What bounds the log: no record longer than a reader accepts, and
//! back-pressure in bytes as well as records.

use super::*;

/// A guest log line of any size (the runtime caps these at their source;
/// the writer's backstop must hold even when a cap is missed).
#[derive(Clone)]
struct Big {
    message: Untrusted,
}

impl AuditEvent for Big {
    fn kind(&self) -> &'static str {
        "container.log"
    }
    fn details(&self) -> serde_json::Value {
        serde_json::json!({ "message": self.message })
    }
}

#[test]
fn a_2mib_record_is_replaced_by_its_size_and_digest_and_the_log_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = SigningKey::generate();
    let log = open(&path, &key, &AuditConfig::new());
    log.append(entry(1)).unwrap();
    let message = Untrusted::new(&"A".repeat(2 * 1024 * 1024));
    let details = serde_json::to_vec(&serde_json::json!({ "message": message })).unwrap();
    let seq = log
        .append(
            Entry::new(&Big { message })
                .actor(Actor::host())
                .container("c-big"),
        )
        .unwrap();
    log.append(entry(2)).unwrap();
    log.close().unwrap();

    // Every line is within what a reader accepts, so the log verifies and
    // reopens (before the backstop, this open failed: line too long).
    assert!(lines(&path).iter().all(|l| l.len() <= audit::MAX_LINE));
    audit::verify_file(&path, &pinned(&key)).unwrap();
    let log = open(&path, &key, &AuditConfig::new());
    log.close().unwrap();
    audit::verify_file(&path, &pinned(&key)).unwrap();

    // The record keeps its number, kind and subjects, and says what it
    // replaced: the size and blake3 of the original details.
    let record: serde_json::Value = serde_json::from_str(
        lines(&path)
            .iter()
            .find(|l| l.starts_with(&format!("{{\"seq\":{seq},")))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record["kind"], "container.log");
    assert_eq!(record["subjects"]["container"], "c-big");
    let replaced = &record["details"]["replaced"];
    assert_eq!(replaced["reason"], "too_long", "{record}");
    assert_eq!(replaced["limit"], audit::MAX_LINE);
    assert_eq!(replaced["details_bytes"], details.len());
    assert!(replaced["line_bytes"].as_u64().unwrap() > details.len() as u64);
    assert_eq!(
        replaced["details_blake3"],
        blake3::hash(&details).to_hex().as_str()
    );
    // Export reads it too.
    let mut out = Vec::new();
    let summary =
        audit::export(&path, &mut out, ExportFormat::Jsonl, &ExportFilter::new()).unwrap();
    assert_eq!(summary.read, lines(&path).len() as u64);
}

#[test]
fn readers_skip_a_line_longer_than_the_limit_without_holding_it() {
    let (_dir, path, key) = closed_log(10, 100);
    let mut edited = lines(&path);
    // Without its closing checkpoint (a crashed writer), the whole file is
    // the unsealed tail opening reads.
    edited.pop();
    edited.insert(5, "x".repeat(3 * audit::MAX_LINE));
    write_lines(&path, &edited);

    // verify and export name the line (and go no further); open, which
    // reads the tail backwards, refuses it too, naming the record before
    // the next intact one.
    let f = failure(&path, &pinned(&key));
    assert_eq!((f.seq, f.line), (6, 6), "{f}");
    assert!(f.to_string().contains("longer than"), "{f}");
    let mut out = Vec::new();
    assert!(matches!(
        audit::export(&path, &mut out, ExportFormat::Jsonl, &ExportFilter::new()),
        Err(AuditError::Verify(f)) if f.line == 6
    ));
    let err = AuditLog::open(&path, SigningKey::generate(), &AuditConfig::new()).unwrap_err();
    assert!(
        matches!(
            &err,
            AuditError::Corrupt {
                seq: 5,
                reason: Corruption::Line(LineError::TooLong),
                ..
            }
        ),
        "{err}"
    );

    // tail reports it once and goes on with the lines after it.
    let mut follower = audit::Follower::open(&path).unwrap();
    let mut items = Vec::new();
    for _ in 0..8 {
        items.extend(follower.poll().unwrap());
    }
    let too_long: Vec<_> = items
        .iter()
        .filter(|f| matches!(f, audit::Followed::Broken { reason, .. } if reason.contains("longer than")))
        .collect();
    assert_eq!(too_long.len(), 1, "{items:?}");
    let records = items
        .iter()
        .filter(|f| matches!(f, audit::Followed::Record(_)))
        .count();
    assert_eq!(records, edited.len() - 1);
}

/// A file whose writes wait while the gate is shut: a slow disk.
pub(super) struct Gate {
    pub(super) file: std::fs::File,
    pub(super) open: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl Gate {
    /// A shut gate.
    pub(super) fn shut() -> Arc<(Mutex<bool>, std::sync::Condvar)> {
        Arc::new((Mutex::new(false), std::sync::Condvar::new()))
    }

    pub(super) fn set(gate: &(Mutex<bool>, std::sync::Condvar), open: bool) {
        *gate.0.lock().unwrap() = open;
        gate.1.notify_all();
    }

    pub(super) fn is_open(gate: &(Mutex<bool>, std::sync::Condvar)) -> bool {
        *gate.0.lock().unwrap()
    }

    /// Opens a log at `path` whose writes wait at `gate`.
    pub(super) fn log(
        path: &Path,
        key: &SigningKey,
        config: &AuditConfig,
        gate: &Arc<(Mutex<bool>, std::sync::Condvar)>,
    ) -> AuditLog {
        let open = gate.clone();
        AuditLog::open_with(
            path,
            SigningKey::from_pem(&key.to_pem()).unwrap(),
            config,
            move |file| {
                Box::new(Gate {
                    file,
                    open: open.clone(),
                })
            },
        )
        .unwrap()
    }
}

impl AuditStorage for Gate {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let (lock, cvar) = &*self.open;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = cvar.wait(open).unwrap();
        }
        drop(open);
        std::io::Write::write_all(&mut self.file, bytes)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        AuditStorage::truncate(&mut self.file, len)
    }
}

/// A guest output chunk of 16 KiB that says how big it is.
#[derive(Clone)]
pub(super) struct Chunk(pub(super) String);

impl AuditEvent for Chunk {
    fn kind(&self) -> &'static str {
        "container.output"
    }
    fn details(&self) -> serde_json::Value {
        serde_json::json!({ "chunk": self.0 })
    }
    fn size_hint(&self) -> usize {
        self.0.len()
    }
}

pub(super) fn chunk(n: usize) -> Entry {
    Entry::owned(Chunk(format!("{n:05}{}", "z".repeat(16 * 1024 - 5)))).actor(Actor::host())
}

#[test]
fn back_pressure_counts_bytes_not_only_records() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = SigningKey::generate();
    let gate = Gate::shut();
    let mut config = AuditConfig::new();
    // Room for ~4 chunks of 16 KiB; the record limit alone would take 65,536.
    config.max_pending_bytes(64 * 1024);
    let log = Gate::log(&path, &key, &config, &gate);
    let appended = Arc::new(AtomicUsize::new(0));
    let total = 100;
    let appender = {
        let log = log.clone();
        let appended = appended.clone();
        std::thread::spawn(move || {
            for n in 0..total {
                log.append(chunk(n)).unwrap();
                appended.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // The disk is stuck: the appender is held back after about 64 KiB.
    std::thread::sleep(Duration::from_millis(300));
    let held = appended.load(Ordering::SeqCst);
    assert!(
        (2..=6).contains(&held),
        "{held} chunks of 16 KiB were queued"
    );
    Gate::set(&gate, true);
    appender.join().unwrap();
    assert_eq!(appended.load(Ordering::SeqCst), total);
    log.close().unwrap();
    let report = audit::verify_file(&path, &pinned(&key)).unwrap();
    assert_eq!(report.records, lines(&path).len() as u64);
}
