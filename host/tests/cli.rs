//! The `forgeone` binary as a user runs it: arguments, output, exit codes.
//!
//! Library behaviour is tested in `tests/all`; these tests only check that
//! the CLI wires it up and reports it as documented.

use std::path::Path;
use std::process::{Command, Output};

use forgeone::SigningKey;
use forgeone::audit::{Actor, AuditConfig, AuditEvent, AuditLog, Entry};

fn forgeone(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_forgeone"))
        .args(args)
        .current_dir(dir)
        .env_remove("FORGEONE_HOST_PUB")
        .env_remove("FORGEONE_HOST_KEY")
        .output()
        .expect("run forgeone")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[derive(Clone)]
struct Ping;
impl AuditEvent for Ping {
    fn kind(&self) -> &'static str {
        "container.ping"
    }
    fn details(&self) -> serde_json::Value {
        serde_json::json!({"ok": true})
    }
}

#[test]
fn keygen_writes_a_pair_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = forgeone(&["keygen", "keys/host.pem"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let key = SigningKey::from_file(dir.path().join("keys/host.pem")).unwrap();
    assert!(
        stdout.contains(&format!("key id  {}", key.id())),
        "{stdout}"
    );
    let public = forgeone::PublicKey::from_file(dir.path().join("keys/host.pub.pem")).unwrap();
    assert_eq!(public.id(), key.id());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("keys/host.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = forgeone(&["keygen", "keys/host.pem"], dir.path());
    assert_eq!(again.status.code(), Some(3));
    assert!(text(&again.stderr).contains("already exists"));
}

#[test]
fn audit_verify_export_and_tail() {
    let dir = tempfile::tempdir().unwrap();
    let out = forgeone(&["keygen", "host.pem"], dir.path());
    assert!(out.status.success());
    let log_path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(
        &log_path,
        SigningKey::from_file(dir.path().join("host.pem")).unwrap(),
        &AuditConfig::new(),
    )
    .unwrap();
    for _ in 0..10 {
        log.append(Entry::new(&Ping).actor(Actor::host()).container("c1"))
            .unwrap();
    }
    let summary = log.close().unwrap();

    let out = forgeone(
        &["audit", "verify", "audit.jsonl", "--key", "host.pub.pem"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        format!(
            "verified: {} records, 1 checkpoints, head {}",
            summary.last_seq, summary.head
        )
    );

    let out = forgeone(
        &[
            "audit",
            "export",
            "audit.jsonl",
            "--format",
            "csv",
            "--kind",
            "container.*",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 11, "header + 10 rows");
    assert!(text(&out.stderr).contains("exported 10 of"));

    let out = forgeone(
        &["audit", "tail", "audit.jsonl", "--no-follow", "-n", "2"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tail = text(&out.stdout);
    assert_eq!(tail.lines().count(), 2, "{tail}");
    assert!(
        tail.lines().last().unwrap().contains("audit.checkpoint"),
        "{tail}"
    );

    // Damage: exit 1 and the first bad sequence number.
    let original = std::fs::read_to_string(&log_path).unwrap();
    let mut lines: Vec<&str> = original.lines().collect();
    lines.remove(4);
    std::fs::write(&log_path, lines.join("\n") + "\n").unwrap();
    let out = forgeone(&["audit", "verify", "audit.jsonl"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("FAILED at seq 5: record removed"),
        "{}",
        text(&out.stderr)
    );

    // Missing file: exit 3, naming it.
    let out = forgeone(&["audit", "verify", "nope.jsonl"], dir.path());
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("nope.jsonl"));
}

/// A command component whose `run` succeeds at once.
const TRIVIAL: &str = r#"
(component
  (core module $m (func (export "run") (result i32) (i32.const 0)))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $run-instance (export "run" (func $run)))
  (export "wasi:cli/run@0.2.12" (instance $run-instance)))
"#;

#[test]
fn run_verifies_against_the_anchor_and_refuses_what_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for key in ["root", "release", "host"] {
        assert!(
            forgeone(&["keygen", &format!("keys/{key}.pem")], d)
                .status
                .success()
        );
    }
    let out = forgeone(
        &[
            "anchor",
            "init",
            "--root-key",
            "keys/root.pub.pem",
            "--release-key",
            "keys/release.pub.pem",
            "--sign-key",
            "keys/root.pem",
            "--expires",
            "30days",
            "-o",
            "anchor.json",
        ],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::write(d.join("app.wasm"), wat::parse_str(TRIVIAL).unwrap()).unwrap();
    let out = forgeone(
        &[
            "sign",
            "app.wasm",
            "--key",
            "keys/release.pem",
            "--version",
            "1.0.0",
        ],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--host-key",
            "keys/host.pem",
            "--audit-log",
            "audit.jsonl",
        ];
        args.extend_from_slice(extra);
        forgeone(&args, d)
    };
    let out = run(&["--anchor", "anchor.json", "app.wasm"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("verified app@1.0.0"),
        "{}",
        text(&out.stderr)
    );

    // Not verified and not explicitly allowed: refused before anything runs.
    let out = run(&["app.wasm"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not verified"),
        "{}",
        text(&out.stderr)
    );

    // One flipped byte: refused, exit 1, and the refusal is in the audit log.
    let mut bytes = std::fs::read(d.join("app.wasm")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(d.join("app.wasm"), bytes).unwrap();
    let out = run(&["--anchor", "anchor.json", "app.wasm"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("does not match the signed"),
        "{}",
        text(&out.stderr)
    );
    let log = std::fs::read_to_string(d.join("audit.jsonl")).unwrap();
    assert!(log.contains("\"kind\":\"boot.component.refused\""));
    assert!(
        !log.lines()
            .rev()
            .take(3)
            .any(|l| l.contains("\"kind\":\"container.started\""))
    );
    let out = forgeone(
        &[
            "audit",
            "verify",
            "audit.jsonl",
            "--key",
            "keys/host.pub.pem",
        ],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}
