//! Audit logs: every reader of a log file on untrusted bytes. The file is
//! verified (`verify_file`, which parses each line with the record parser
//! and checks the chain and checkpoints) with and without the pinned host
//! key, followed (`Follower`), exported as JSON Lines and CSV, and opened
//! for appending (`AuditLog::open`: torn-tail recovery, then close).
//!
//! Input: one flags byte, then the file. Bit 0: the file is a template
//! whose hash chain and checkpoint signatures are completed (see
//! `forgeone_fuzz::audit`), so that inputs get past the hash checks. Bit 1:
//! pin the host key. Bit 2: allow an open tail. Bit 3: also open the log
//! for appending.
#![no_main]

use std::sync::LazyLock;

use forgeone::audit::{
    AuditConfig, AuditError, AuditLog, Damage, ExportFilter, ExportFormat, Followed, Follower,
    VerifyOptions, export, verify_file,
};
use forgeone_fuzz::audit::{Mode, build};
use forgeone_fuzz::fixtures::KEYS;
use libfuzzer_sys::fuzz_target;

static DIR: LazyLock<tempfile::TempDir> =
    LazyLock::new(|| tempfile::tempdir().expect("a temporary directory"));

fuzz_target!(
    init: forgeone_fuzz::seeds::write_if_asked("audit"),
    |data: &[u8]| {
        let Some((&flags, input)) = data.split_first() else {
            return;
        };
        let mode = if flags & 1 != 0 { Mode::Chained } else { Mode::Raw };
        let file = build(mode, input);
        let path = DIR.path().join("audit.jsonl");
        std::fs::write(&path, &file).expect("the log file is written");

        let mut options = VerifyOptions::new();
        if flags & 2 != 0 {
            options.key(KEYS.host.public().clone());
        }
        options.allow_open_tail(flags & 4 != 0);
        let verified = verify_file(&path, &options);
        if let Err(e) = &verified {
            let _ = e.to_string();
        }
        // The same key (pinned or read from the log), any tail.
        let mut open_tail = options.clone();
        open_tail.allow_open_tail(true);
        let chain = verify_file(&path, &open_tail);
        forgeone_fuzz::debug(|| format!("strict {:?}; open tail {:?}", verified.as_ref().map(|r| r.records).map_err(|e| e.to_string()), chain.as_ref().map(|r| r.records).map_err(|e| e.to_string())));
        if verified.is_ok() {
            assert!(chain.is_ok(), "a log that verifies strictly verifies with an open tail");
        }

        // The follower and the exporter agree with the verifier on a log
        // whose chain holds.
        let mut follower = Follower::open(&path).expect("the log file opens");
        let followed = follower.poll().expect("the log file is read");
        let records = followed
            .iter()
            .filter(|f| matches!(f, Followed::Record(_)))
            .count() as u64;
        let mut sink = Vec::new();
        let jsonl = export(&path, &mut sink, ExportFormat::Jsonl, &ExportFilter::new());
        sink.clear();
        let csv = export(&path, &mut sink, ExportFormat::Csv, &ExportFilter::new());
        if let Ok(report) = &chain {
            assert_eq!(records, report.records, "the follower reads every record");
            assert!(
                followed.iter().all(|f| matches!(f, Followed::Record(_))),
                "the follower finds a verified log broken"
            );
            let jsonl = jsonl.expect("a verified log exports");
            assert_eq!(jsonl.read, report.records);
            assert_eq!(csv.expect("a verified log exports as CSV").read, report.records);
        }

        if flags & 8 != 0 {
            let mut config = AuditConfig::new();
            config.checkpoint_every(4);
            if let Ok(log) = AuditLog::open(&path, forgeone_fuzz::fixtures::key("host"), &config) {
                let report = log.open_report();
                if let Ok(chain) = &chain {
                    assert_eq!(report.existing_records, chain.records);
                }
                let _ = log.close();
                // A log that chained (or lacked only its last line's end, or
                // was empty) still chains after the writer was there.
                let repairable = match &chain {
                    Ok(_) => true,
                    Err(AuditError::Verify(failure)) => {
                        matches!(failure.damage, Damage::TornTail | Damage::Empty)
                    }
                    Err(_) => false,
                };
                if repairable {
                    let after = verify_file(&path, &open_tail);
                    assert!(after.is_ok(), "the log after open and close: {after:?}");
                }
            }
        }
    }
);
