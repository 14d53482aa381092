//! `audit verify`, `export`, `tail` and `prune` on a log in segments.

use super::*;

#[test]
fn audit_commands_read_across_segments_and_prune_on_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(forgeone(&["keygen", "host.pem"], d).status.success());
    let key = || SigningKey::from_file(d.join("host.pem")).unwrap();
    let mut config = AuditConfig::new();
    config
        .segment_size(0)
        .head_file(forgeone::audit::head_file_for(d.join("audit.jsonl")));
    let log = AuditLog::open(d.join("audit.jsonl"), key(), &config).unwrap();
    for round in 0..4 {
        for _ in 0..5 {
            log.append(Entry::new(&Ping).actor(Actor::host()).container("c1"))
                .unwrap();
        }
        if round < 3 {
            log.rotate().unwrap();
            log.flush().unwrap();
        }
    }
    let summary = log.close().unwrap();
    let segments = forgeone::audit::list_segments(d.join("audit.jsonl")).unwrap();
    assert_eq!(segments.len(), 3);

    let out = forgeone(
        &["audit", "verify", "audit.jsonl", "--key", "host.pub.pem"],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("verified: {} records", summary.last_seq)),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("4 files"),
        "{}",
        text(&out.stderr)
    );
    let out = forgeone(&["audit", "export", "audit.jsonl"], d);
    assert_eq!(text(&out.stdout).lines().count() as u64, summary.last_seq);
    let out = forgeone(&["audit", "tail", "audit.jsonl", "--no-follow"], d);
    assert_eq!(text(&out.stdout).lines().count() as u64, summary.last_seq);

    // Prune the oldest two, moved away; verify still passes, and says
    // where it starts.
    let out = forgeone(
        &[
            "audit",
            "prune",
            "audit.jsonl",
            "--host-key",
            "host.pem",
            "--keep",
            "1",
            "--move-to",
            "archive",
        ],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(
        stdout.starts_with("moved 00000000000000000001.jsonl (seq 1..="),
        "{stdout}"
    );
    assert!(
        text(&out.stderr).contains("audit.pruned"),
        "{}",
        text(&out.stderr)
    );
    assert!(d.join("archive/00000000000000000001.jsonl").is_file());
    let out = forgeone(
        &[
            "audit",
            "verify",
            "audit.jsonl",
            "--key",
            "host.pub.pem",
            "--head",
            "audit.head.json",
            "--json",
        ],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["first_seq"], segments[2].first_seq);

    // The oldest remaining segment removed by hand: caught, exit 1.
    std::fs::remove_file(&segments[2].path).unwrap();
    let out = forgeone(
        &["audit", "verify", "audit.jsonl", "--key", "host.pub.pem"],
        d,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no `audit.pruned` record accounts for them"),
        "{}",
        text(&out.stderr)
    );
    // Nothing left to prune by that rule, and no rule is an error.
    let out = forgeone(
        &["audit", "prune", "audit.jsonl", "--host-key", "host.pem"],
        d,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--keep N"),
        "{}",
        text(&out.stderr)
    );
}
