//! A log in segments: rotation by size, the chain across segments, damage
//! in or between segments, pruning on the record, a cut-back active
//! segment, crashes mid-rotation, stray files, and opening without reading
//! the sealed segments.

use forgeone::audit::{PruneRule, list_segments, segments_dir_for};

use super::*;

/// Writes `n` events to a log at `path` whose segments rotate at `size`
/// bytes, checkpointing every 20 records, keeping its head file beside it;
/// closes it. It flushes every 10 events, as a host's writer takes records
/// in batches over time (the size is checked after each batch).
fn segmented(path: &Path, key: &SigningKey, n: u64, size: u64) {
    let log = open(path, key, &segmented_config(path, size));
    for i in 0..n {
        log.append(entry(i)).unwrap();
        if i % 10 == 9 {
            log.flush().unwrap();
        }
    }
    log.close().unwrap();
}

fn segmented_config(path: &Path, size: u64) -> AuditConfig {
    let mut config = AuditConfig::new();
    config
        .segment_size(size)
        .checkpoint_every(20)
        .head_file(audit::head_file_for(path));
    config
}

fn new_log() -> (tempfile::TempDir, PathBuf, SigningKey) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    (dir, path, SigningKey::generate())
}

/// Every record of the log, across its files, as JSON.
fn records(path: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = list_segments(path)
        .unwrap()
        .into_iter()
        .map(|s| s.path)
        .collect();
    files.push(path.to_owned());
    for file in files {
        for line in lines(&file) {
            out.push(serde_json::from_str(&line).unwrap());
        }
    }
    out
}

#[test]
fn the_log_rotates_by_size_and_its_chain_runs_across_segments() {
    let (_dir, path, key) = new_log();
    segmented(&path, &key, 600, 16 * 1024);
    let segments = list_segments(&path).unwrap();
    assert!(segments.len() >= 3, "{segments:?}");
    assert_eq!(segments[0].first_seq, 1);
    for segment in &segments {
        // Each file is named for its first record; each after the first
        // begins with the record that signs the head before it, and each
        // sealed one ends with the rotation checkpoint.
        let lines = lines(&segment.path);
        let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(first["seq"], segment.first_seq);
        if segment.first_seq > 1 {
            assert_eq!(first["kind"], "audit.segment");
        }
        let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
        assert_eq!(last["kind"], "audit.checkpoint");
        assert_eq!(last["details"]["reason"], "rotate");
        let bytes = std::fs::metadata(&segment.path).unwrap().len();
        assert!(bytes >= 16 * 1024, "{bytes}");
    }
    let all = records(&path);
    let report = audit::verify_file(&path, &pinned(&key)).unwrap();
    assert_eq!(report.records, all.len() as u64);
    assert_eq!(report.files, segments.len() + 1);
    assert_eq!(report.first_seq, 1);
    let events = all
        .iter()
        .filter(|r| r["kind"] == "container.output")
        .count();
    assert_eq!(events, 600);

    // Export and tail read across the segments, in order.
    let mut out = Vec::new();
    let summary =
        audit::export(&path, &mut out, ExportFormat::Jsonl, &ExportFilter::new()).unwrap();
    assert_eq!(summary.read, all.len() as u64);
    let mut follower = audit::Follower::open(&path).unwrap();
    let followed = follower.poll().unwrap();
    let seqs: Vec<u64> = followed
        .iter()
        .map(|f| match f {
            audit::Followed::Record(r) => r.seq,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>());

    // Reopening continues the chain in the active segment.
    segmented(&path, &key, 10, 16 * 1024);
    audit::verify_file(&path, &pinned(&key)).unwrap();
}

#[test]
fn a_follower_keeps_up_while_the_log_rotates_under_it() {
    let (_dir, path, key) = new_log();
    let log = open(&path, &key, &segmented_config(&path, 1 << 30));
    log.append(entry(0)).unwrap();
    log.flush().unwrap();
    let mut follower = audit::Follower::open(&path).unwrap();
    let mut seen = follower.poll().unwrap().len();
    for round in 0..3 {
        for i in 0..5 {
            log.append(entry(round * 10 + i)).unwrap();
        }
        log.rotate().unwrap();
        log.append(entry(round * 10 + 9)).unwrap();
        log.flush().unwrap();
        for item in follower.poll().unwrap() {
            assert!(matches!(item, audit::Followed::Record(_)), "{item:?}");
            seen += 1;
        }
        assert_eq!(seen as u64, log.last_seq(), "round {round}");
    }
    log.close().unwrap();
    assert_eq!(list_segments(&path).unwrap().len(), 3);
}

#[test]
fn tampering_in_an_older_segment_is_caught_there() {
    let (_dir, path, key) = new_log();
    segmented(&path, &key, 300, 8 * 1024);
    let segments = list_segments(&path).unwrap();
    let target = &segments[1].path;
    let mut edited = lines(target);
    let seq = serde_json::from_str::<serde_json::Value>(&edited[5]).unwrap()["seq"]
        .as_u64()
        .unwrap();
    edited[5] = edited[5].replace("line", "lime");
    write_lines(target, &edited);
    let f = failure(&path, &pinned(&key));
    assert_eq!(f.seq, seq, "{f}");
    assert!(matches!(f.damage, Damage::Edited(_)), "{f}");
    assert_eq!(f.segment.as_deref(), Some(target.as_path()), "{f}");
    assert!(f.to_string().contains("00000000000000"), "{f}");
}

#[test]
fn a_removed_middle_segment_is_caught() {
    let (_dir, path, key) = new_log();
    segmented(&path, &key, 300, 8 * 1024);
    let segments = list_segments(&path).unwrap();
    assert!(segments.len() >= 3);
    std::fs::remove_file(&segments[1].path).unwrap();
    let f = failure(&path, &pinned(&key));
    assert_eq!(f.seq, segments[1].first_seq, "{f}");
    assert_eq!(
        f.damage,
        Damage::Removed {
            through: segments[2].first_seq - 1
        },
        "{f}"
    );
}

#[test]
fn pruning_is_recorded_and_the_rest_still_verifies() {
    let (dir, path, key) = new_log();
    segmented(&path, &key, 400, 8 * 1024);
    let before = list_segments(&path).unwrap();
    assert!(before.len() >= 4, "{before:?}");
    let all = records(&path);

    let archive = dir.path().join("archive");
    let log = open(&path, &key, &segmented_config(&path, 8 * 1024));
    let summary = log
        .prune(&PruneRule::KeepSegments(2), Some(&archive))
        .unwrap();
    log.close().unwrap();
    let kept = &before[before.len() - 2..];
    assert_eq!(summary.removed.len(), before.len() - 2);
    assert_eq!(summary.removed[0].first_seq, 1);
    let last_removed = summary.removed.last().unwrap().last_seq;
    assert_eq!(last_removed, kept[0].first_seq - 1);
    // The head is the hash of the last removed record.
    let removed_last = &all[usize::try_from(last_removed).unwrap() - 1];
    assert_eq!(summary.head, removed_last["hash"].as_str().unwrap());
    // Moved, not deleted; the segments directory holds only what is kept.
    assert_eq!(list_segments(&path).unwrap(), kept.to_vec());
    for removed in &summary.removed {
        assert!(archive.join(&removed.segment).is_file());
    }

    // The prune is on the record, sealed, and verify accepts the gap it
    // accounts for.
    let pruned: Vec<_> = records(&path)
        .into_iter()
        .filter(|r| r["kind"] == "audit.pruned")
        .collect();
    assert_eq!(pruned.len(), 1);
    assert_eq!(pruned[0]["details"]["last_seq"], last_removed);
    assert_eq!(pruned[0]["details"]["first_seq"], 1);
    assert_eq!(pruned[0]["details"]["head"], summary.head.as_str());
    let report = audit::verify_file(&path, &pinned(&key)).unwrap();
    assert_eq!(report.first_seq, last_removed + 1);

    // Export and tail start at the first record kept.
    let mut out = Vec::new();
    audit::export(&path, &mut out, ExportFormat::Jsonl, &ExportFilter::new()).unwrap();
    let first: serde_json::Value =
        serde_json::from_slice(out.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["seq"], last_removed + 1);

    // Removing the oldest remaining segment by hand, with no record of it,
    // is caught.
    std::fs::remove_file(&kept[0].path).unwrap();
    let f = failure(&path, &pinned(&key));
    assert_eq!(
        f.damage,
        Damage::UnprunedGap {
            through: kept[1].first_seq - 1
        },
        "{f}"
    );
    // A range that starts there still verifies.
    let mut range = pinned(&key);
    range.from_seq(kept[1].first_seq);
    audit::verify_file(&path, &range).unwrap();
}

#[test]
fn nothing_to_prune_writes_nothing() {
    let (_dir, path, key) = new_log();
    segmented(&path, &key, 50, 1 << 30);
    let log = open(&path, &key, &AuditConfig::new());
    let before = log.last_seq();
    let summary = log.prune(&PruneRule::Before(10), None).unwrap();
    assert!(summary.removed.is_empty());
    assert_eq!(log.last_seq(), before);
    log.close().unwrap();
}

#[test]
fn a_cut_back_active_segment_is_caught_with_the_head() {
    let (_dir, path, key) = new_log();
    segmented(&path, &key, 300, 8 * 1024);
    // A fresh active segment with periodic checkpoints in it.
    let log = open(&path, &key, &segmented_config(&path, 1 << 30));
    log.rotate().unwrap();
    for i in 0..50 {
        log.append(entry(i)).unwrap();
    }
    log.close().unwrap();
    assert!(!list_segments(&path).unwrap().is_empty());
    // Cut the active segment back to its first checkpoint after the start.
    let active = lines(&path);
    let cut = active
        .iter()
        .position(|l| l.contains("\"kind\":\"audit.checkpoint\""))
        .unwrap();
    write_lines(&path, &active[..=cut]);
    // On its own, the log still verifies (it ends at a checkpoint)...
    let mut options = pinned(&key);
    options.allow_open_tail(true);
    audit::verify_file(&path, &options).unwrap();
    // ...but not against its signed head, and it does not reopen.
    let head = audit::SignedHead::from_file(audit::head_file_for(&path)).unwrap();
    options.head(head);
    let f = failure(&path, &options);
    assert!(matches!(f.damage, Damage::EndsBeforeHead { .. }), "{f}");
    let err = AuditLog::open(
        &path,
        SigningKey::from_pem(&key.to_pem()).unwrap(),
        &segmented_config(&path, 8 * 1024),
    )
    .unwrap_err();
    assert!(
        matches!(
            &err,
            AuditError::Corrupt {
                reason: Corruption::EndsBeforeHead { .. },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_crash_mid_rotation_recovers_without_losing_records() {
    let (_dir, path, key) = new_log();
    let log = open(&path, &key, &segmented_config(&path, 1 << 30));
    for i in 0..30 {
        log.append(entry(i)).unwrap();
    }
    log.rotate().unwrap();
    for i in 30..40 {
        log.append(entry(i)).unwrap();
    }
    log.close().unwrap();
    let all = records(&path);

    // The crash came after the sealed segment was renamed, before the new
    // active file was created: the active file is missing.
    let next_first = all.last().unwrap()["seq"].as_u64().unwrap() + 1;
    let first_of_active = all
        .iter()
        .position(|r| r["kind"] == "audit.segment")
        .unwrap();
    let active_first = all[first_of_active]["seq"].as_u64().unwrap();
    // Seal the active file by hand as a rotation would (it ends with a
    // closing checkpoint, which seals it as well).
    std::fs::rename(
        &path,
        segments_dir_for(&path).join(format!("{active_first:020}.jsonl")),
    )
    .unwrap();
    let log = open(&path, &key, &segmented_config(&path, 1 << 30));
    let report = log.open_report();
    assert!(report.rotation_recovered, "{report:?}");
    assert_eq!(report.existing_records, next_first - 1);
    log.append(entry(99)).unwrap();
    log.close().unwrap();
    let after = records(&path);
    assert_eq!(&after[..all.len()], &all[..]);
    let first: serde_json::Value = serde_json::from_str(&lines(&path)[0]).unwrap();
    assert_eq!(first["kind"], "audit.segment");
    assert_eq!(first["seq"], next_first);
    assert!(
        after
            .iter()
            .any(|r| r["kind"] == "audit.recovered" && r["seq"].as_u64() > Some(next_first))
    );
    audit::verify_file(&path, &pinned(&key)).unwrap();

    // The crash came while the new segment's first record was written: a
    // torn line, and nothing else, in the new active file.
    let before = records(&path);
    let last_first = before.last().unwrap()["seq"].as_u64().unwrap() + 1;
    let log = open(&path, &key, &segmented_config(&path, 1 << 30));
    log.checkpoint().unwrap();
    log.flush().unwrap();
    // The signed head as it stood before the rotation: the crash comes
    // before the head file moves past it.
    let head_file = audit::head_file_for(&path);
    let head = std::fs::read(&head_file).unwrap();
    log.rotate().unwrap();
    log.close().unwrap();
    let active = std::fs::read(&path).unwrap();
    std::fs::write(&path, &active[..40]).unwrap();
    std::fs::write(&head_file, head).unwrap();
    let log = open(&path, &key, &segmented_config(&path, 1 << 30));
    let report = log.open_report();
    assert!(report.rotation_recovered, "{report:?}");
    assert_eq!(report.torn_tail, Some((0, 40)));
    log.close().unwrap();
    let after = records(&path);
    assert!(after.len() > before.len());
    assert_eq!(&after[..before.len()], &before[..]);
    assert!(after.iter().any(|r| r["seq"] == last_first));
    audit::verify_file(&path, &pinned(&key)).unwrap();
}

#[test]
fn opening_reads_neither_sealed_segments_nor_records_before_the_last_checkpoint() {
    let (_dir, path, key) = new_log();
    segmented(&path, &key, 300, 8 * 1024);
    let segments = list_segments(&path).unwrap();
    // Garbage in an older segment: opening does not read it (its cost is
    // the tail since the last checkpoint), verify does.
    let target = &segments[0].path;
    let mut bytes = std::fs::read(target).unwrap();
    bytes[100] ^= 0x20;
    std::fs::write(target, &bytes).unwrap();
    let log = open(&path, &key, &segmented_config(&path, 8 * 1024));
    log.append(entry(1)).unwrap();
    log.close().unwrap();
    let f = failure(&path, &pinned(&key));
    assert_eq!(f.segment.as_deref(), Some(target.as_path()), "{f}");
}

#[test]
fn stray_and_misnamed_segment_files_are_named_in_the_error() {
    let (_dir, path, key) = new_log();
    segmented(&path, &key, 200, 8 * 1024);
    let dir = segments_dir_for(&path);
    std::fs::write(dir.join("notes.txt"), b"hello").unwrap();
    let err = AuditLog::open(&path, SigningKey::generate(), &AuditConfig::new()).unwrap_err();
    assert!(
        matches!(&err, AuditError::Segment { path: p, .. } if p.ends_with("notes.txt")),
        "{err:?}"
    );
    assert!(err.to_string().contains("notes.txt"), "{err}");
    let err = audit::verify_file(&path, &pinned(&key)).unwrap_err();
    assert!(err.to_string().contains("notes.txt"), "{err}");
    std::fs::remove_file(dir.join("notes.txt")).unwrap();

    // A segment renamed to claim other records.
    let segments = list_segments(&path).unwrap();
    let wrong = dir.join(format!("{:020}.jsonl", segments[1].first_seq + 1));
    std::fs::rename(&segments[1].path, &wrong).unwrap();
    let f = failure(&path, &pinned(&key));
    assert!(matches!(f.damage, Damage::BadSegment(_)), "{f}");
    assert!(f.to_string().contains("its name says"), "{f}");
    std::fs::rename(&wrong, &segments[1].path).unwrap();

    // An empty segment.
    std::fs::write(dir.join(format!("{:020}.jsonl", 999_999)), b"").unwrap();
    let f = failure(&path, &pinned(&key));
    assert!(matches!(f.damage, Damage::BadSegment(_)), "{f}");
}
