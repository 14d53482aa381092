//! A full disk stops unaudited work: a run starts only once its records
//! are durable, and a guest filling the log's disk is stopped with what it
//! did audited up to a chunk.

use std::process::Command;

use forgeone::audit::{self, AuditStorage, VerifyOptions};

use super::*;

fn chatty_until_stopped(progress_dir: &Path) -> ContainerConfig {
    let mut config = ContainerConfig::new(component(guests::CHATTY));
    config
        .arg("until-stopped")
        .arg("/progress")
        .dir(progress_dir, "/progress", false)
        .fuel(None)
        .timeout(None)
        // Audit every byte: the log's disk, not the budget, is the limit.
        .max_output(1 << 30)
        .max_audit_bytes(1 << 30);
    config
}

/// The storage seam with a disk that fills up exactly when a run's start
/// is written: every write holding a `container.started` record fails.
struct FullAtStart(std::fs::File);

impl AuditStorage for FullAtStart {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let needle = b"\"kind\":\"container.started\"";
        if bytes.windows(needle.len()).any(|w| w == needle) {
            return Err(std::io::Error::from_raw_os_error(28));
        }
        std::io::Write::write_all(&mut self.0, bytes)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.0.sync_data()
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        AuditStorage::truncate(&mut self.0, len)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_starts_only_once_created_and_started_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open_with(&path, SigningKey::generate(), &AuditConfig::new(), |file| {
        Box::new(FullAtStart(file))
    })
    .unwrap();
    let mut config = RuntimeConfig::new();
    config.allow_unsigned(true);
    let runtime = Runtime::new(config, log.clone()).unwrap();
    let progress = dir.path().join("progress");
    std::fs::create_dir(&progress).unwrap();
    let (sink, lines) = collector();
    let mut container = chatty_until_stopped(&progress);
    container.output(sink);

    // Created, and accepted: the start is what cannot be made durable.
    let id = runtime.launch_container(container, identity()).unwrap();
    let outcome = runtime.wait(id).await.unwrap();
    // So the guest never ran.
    let Failure::AuditUnavailable { log: named, cause } = failure(&outcome.end) else {
        panic!("{outcome}");
    };
    assert_eq!(named, &path);
    assert!(cause.contains("No space left"), "{cause}");
    assert_eq!(outcome.stats.fuel_consumed, 0, "{outcome:?}");
    assert!(lines.lock().unwrap().is_empty(), "the guest printed");
    assert!(
        !progress.join("progress").exists(),
        "the guest wrote to its directory"
    );
    assert!(matches!(
        runtime.status(id).unwrap(),
        ContainerStatus::Failed(Failure::AuditUnavailable { .. })
    ));
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
        }
        Ok(Tmpfs(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The number of the last `line NNNNNNNN` in `text`.
fn last_line(text: &str) -> Option<u64> {
    text.rmatch_indices("line ")
        .find_map(|(at, _)| text.get(at + 5..at + 13)?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_filling_the_logs_real_disk_is_stopped_with_its_work_audited() {
    let dir = tempfile::tempdir().unwrap();
    let tmpfs = match Tmpfs::mount(&dir.path().join("tmpfs"), "1m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            eprintln!("skipped: cannot mount a tmpfs here ({reason})");
            return;
        }
    };
    // Half of the filesystem is taken; the log gets the rest.
    let filler = tmpfs.0.join("filler");
    std::fs::write(&filler, vec![0u8; 512 * 1024]).unwrap();
    let path = tmpfs.0.join("audit.jsonl");
    let key = SigningKey::generate();
    let mut audit_config = AuditConfig::new();
    audit_config.retry_every(Duration::from_millis(20));
    let log = AuditLog::open(
        &path,
        SigningKey::from_pem(&key.to_pem()).unwrap(),
        &audit_config,
    )
    .unwrap();
    let mut config = RuntimeConfig::new();
    config.allow_unsigned(true);
    let runtime = Runtime::new(config, log.clone()).unwrap();
    let progress = dir.path().join("progress");
    std::fs::create_dir(&progress).unwrap();

    // It prints 1 KiB lines, recording each in its directory, until the
    // log's disk is full: then it is stopped.
    let id = runtime
        .launch_container(chatty_until_stopped(&progress), identity())
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(60), runtime.wait(id))
        .await
        .expect("the guest was not stopped")
        .unwrap();
    let Failure::AuditUnavailable { log: named, cause } = failure(&outcome.end) else {
        panic!("{outcome}");
    };
    assert_eq!(named, &path);
    assert!(cause.contains("No space left"), "{cause}");
    assert!(
        runtime
            .launch_container(chatty_until_stopped(&progress), identity())
            .is_err()
    );

    // Space comes back; the log seals and verifies.
    std::fs::remove_file(&filler).unwrap();
    for _ in 0..1_000 {
        if log.ensure_writable().is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    log.close().unwrap();
    let mut options = VerifyOptions::new();
    options.key(key.public().clone());
    audit::verify_file(&path, &options).unwrap();

    // What it did after the failure is at most what one chunk not yet
    // durable and the output not yet cut hold: two 16 KiB chunks of its
    // 1,015-byte lines.
    let records: Vec<Json> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (text, chunks) = audited_output(&records, "stdout");
    let audited = last_line(&text).expect("no line audited");
    let done: u64 = std::fs::read_to_string(progress.join("progress"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        chunks > 10 && audited > 100,
        "{chunks} chunks, {audited} lines"
    );
    assert!(
        done <= audited + 34,
        "the guest got to line {done}; the log holds up to line {audited}"
    );
    drop(tmpfs);
}
