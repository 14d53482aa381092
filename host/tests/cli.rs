//! The `forgeone` binary as a user runs it: arguments, output, exit codes.
//!
//! Library behaviour is tested in `tests/all`; these tests only check that
//! the CLI wires it up and reports it as documented.

use std::path::Path;
use std::process::{Command, Output};

use forgeone::SigningKey;
use forgeone::audit::{Actor, AuditConfig, AuditEvent, AuditLog, Entry};

#[path = "cli/segments.rs"]
mod segments;
#[path = "cli/stdio.rs"]
mod stdio;

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

    // A reader that goes away (`| head`) ends export and tail quietly,
    // with success; the log is not blamed.
    for args in [
        &["audit", "export", "audit.jsonl", "--format", "jsonl"][..],
        &["audit", "export", "audit.jsonl", "--format", "csv"],
        &["audit", "tail", "audit.jsonl", "--no-follow"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_forgeone"))
            .args(args)
            .current_dir(dir.path())
            .stdout(writer)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(
            !text(&out.stderr).contains("error"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }

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

#[test]
fn audit_head_is_kept_by_run_printed_and_catches_a_log_cut_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(forgeone(&["keygen", "host.pem"], d).status.success());
    std::fs::write(d.join("app.wasm"), wat::parse_str(TRIVIAL).unwrap()).unwrap();
    let run = || {
        let args = [
            "run",
            "--allow-unsigned",
            "--host-key",
            "host.pem",
            "--state-dir",
            "state",
            "app.wasm",
        ];
        let out = forgeone(&args, d);
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    // Two runs: the state directory keeps the latest signed head beside
    // the log.
    run();
    let first_run = std::fs::read_to_string(d.join("state/audit.jsonl")).unwrap();
    run();
    let log = std::fs::read_to_string(d.join("state/audit.jsonl")).unwrap();
    let records = log.lines().count();
    assert!(d.join("state/audit.head.json").is_file());

    // `audit head` prints it (checked), as does `--from-log` from the log.
    let out = forgeone(
        &[
            "audit",
            "head",
            "state/audit.head.json",
            "--key",
            "host.pub.pem",
        ],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let head: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(head["type"], "forgeone.audit.head.v1");
    assert_eq!(head["seq"], records as u64 - 1);
    assert!(text(&out.stderr).contains(&format!("seq {}", records - 1)));
    let out = forgeone(
        &[
            "audit",
            "head",
            "--from-log",
            "state/audit.jsonl",
            "-o",
            "witness.json",
        ],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let witness: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("witness.json")).unwrap()).unwrap();
    assert_eq!(witness, head);

    // Intact: verifies against the head.
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "audit",
            "verify",
            "state/audit.jsonl",
            "--key",
            "host.pub.pem",
        ];
        args.extend_from_slice(extra);
        forgeone(&args, d)
    };
    let out = verify(&["--head", "witness.json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Cut back to the end of the first run: sealed, so it verifies alone;
    // against the head (or a minimum) it fails, naming both numbers.
    std::fs::write(d.join("state/audit.jsonl"), &first_run).unwrap();
    let cut = first_run.lines().count();
    assert!(verify(&[]).status.success());
    let out = verify(&["--head", "witness.json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("ends at seq {cut}"))
            && stderr.contains(&format!("signed head at seq {}", records - 1)),
        "{stderr}"
    );
    let out = verify(&["--min-seq", &records.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&format!("before seq {records}")));

    // And the next run refuses to write on: exit non-zero, naming the log.
    let out = forgeone(
        &[
            "run",
            "--allow-unsigned",
            "--state-dir",
            "state",
            "app.wasm",
        ],
        d,
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("audit log") && stderr.contains("audit.head.json"),
        "{stderr}"
    );
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
    // `forgeone verify` says why once, not as a warning and again as the error.
    let out = forgeone(&["verify", "app.wasm", "--anchor", "anchor.json"], d);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.matches("does not match the signed").count(),
        1,
        "{stderr}"
    );
    assert!(!stderr.contains("WARN"), "{stderr}");
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

#[test]
fn run_dir_grants_are_read_only_unless_rw_and_malformed_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("app.wasm"), wat::parse_str(TRIVIAL).unwrap()).unwrap();
    std::fs::create_dir(d.join("data")).unwrap();
    std::fs::create_dir(d.join("scratch")).unwrap();
    let run = |dirs: &[&str]| {
        let mut args = vec!["run", "--allow-unsigned", "--audit-log", "audit.jsonl"];
        for grant in dirs {
            args.extend_from_slice(&["--dir", grant]);
        }
        args.push("app.wasm");
        forgeone(&args, d)
    };

    // Without `:rw` a grant is read-only, as in forgeone.toml.
    let out = run(&["data::/data", "scratch::/scratch:rw"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = std::fs::read_to_string(d.join("audit.jsonl")).unwrap();
    let created: serde_json::Value = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["kind"] == "container.created")
        .expect("a container.created record");
    let dirs = &created["details"]["capabilities"]["dirs"];
    assert_eq!(dirs[0]["guest"], "/data");
    assert_eq!(dirs[0]["read_only"], true);
    assert_eq!(dirs[1]["guest"], "/scratch");
    assert_eq!(dirs[1]["read_only"], false);

    // Malformed grants are refused before anything runs, naming the fault.
    for (grant, fault) in [
        ("data::/data:rw:ro", "more than one mode suffix"),
        ("data::/data/../etc", "contains a `..` component"),
        ("data::data", "is relative; it must start with `/`"),
        ("data", "expected HOST::GUEST[:ro|:rw]"),
    ] {
        let out = run(&[grant]);
        assert_eq!(out.status.code(), Some(2), "{grant}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("directory grant `{grant}`: ")) && stderr.contains(fault),
            "{grant}: {stderr}"
        );
    }

    let help = text(&forgeone(&["run", "--help"], d).stdout);
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(help.contains("`HOST::GUEST` is read-only"), "{help}");
}

/// A command printing 64-byte lines for ever.
const LOUD: &str = r#"
(component
  (import "wasi:io/error@0.2.12" (instance $io-error
    (export "error" (type (sub resource)))))
  (alias export $io-error "error" (type $error))
  (import "wasi:io/streams@0.2.12" (instance $streams
    (alias outer 1 $error (type $e))
    (export "error" (type $err (eq $e)))
    (export "output-stream" (type $os (sub resource)))
    (type $se (variant (case "last-operation-failed" (own $err)) (case "closed")))
    (export "stream-error" (type $stream-error (eq $se)))
    (export "[method]output-stream.blocking-write-and-flush"
      (func (param "self" (borrow $os)) (param "contents" (list u8))
            (result (result (error $stream-error)))))))
  (alias export $streams "output-stream" (type $output-stream))
  (import "wasi:cli/stdout@0.2.12" (instance $stdout
    (alias outer 1 $output-stream (type $os))
    (export "output-stream" (type $ose (eq $os)))
    (export "get-stdout" (func (result (own $ose))))))
  (core module $memory-module (memory (export "memory") 1))
  (core instance $memory-instance (instantiate $memory-module))
  (alias core export $memory-instance "memory" (core memory $memory))
  (alias export $streams "[method]output-stream.blocking-write-and-flush" (func $write))
  (alias export $stdout "get-stdout" (func $get-stdout))
  (core func $write-lowered (canon lower (func $write) (memory $memory)))
  (core func $get-stdout-lowered (canon lower (func $get-stdout)))
  (core instance $host
    (export "memory" (memory $memory))
    (export "write" (func $write-lowered))
    (export "get-stdout" (func $get-stdout-lowered)))
  (core module $m
    (import "host" "memory" (memory 1))
    (import "host" "write" (func $write (param i32 i32 i32 i32)))
    (import "host" "get-stdout" (func $get-stdout (result i32)))
    (func (export "run") (result i32)
      (local $stdout i32)
      (memory.fill (i32.const 1024) (i32.const 0x46) (i32.const 63))
      (i32.store8 (i32.const 1087) (i32.const 10))
      (local.set $stdout (call $get-stdout))
      (loop $for-ever
        (call $write (local.get $stdout) (i32.const 1024) (i32.const 64) (i32.const 16))
        (br $for-ever))
      (i32.const 0)))
  (core instance $i (instantiate $m (with "host" (instance $host))))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $run-instance (export "run" (func $run)))
  (export "wasi:cli/run@0.2.12" (instance $run-instance)))
"#;

/// A tmpfs of 1 MiB at `at`, half taken by a filler file; unmounted when
/// dropped. `None` (with the reason printed) where mounting is not allowed.
struct HalfFull(std::path::PathBuf);

impl HalfFull {
    fn mount(at: &Path) -> Option<HalfFull> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(at)
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs ({})",
                    text(&out.stderr).trim()
                );
                return None;
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount ({e})");
                return None;
            }
        }
        std::fs::write(at.join("filler"), vec![0u8; 512 * 1024]).unwrap();
        Some(HalfFull(at.to_owned()))
    }
}

impl Drop for HalfFull {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn run_and_up_stop_and_name_the_audit_log_when_its_disk_fills() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(_disk) = HalfFull::mount(&d.join("disk")) else {
        return;
    };
    signed_app(d);
    std::fs::write(d.join("loud.wasm"), wat::parse_str(LOUD).unwrap()).unwrap();
    let out = forgeone(&["sign", "loud.wasm", "--key", "keys/release.pem"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // `run`: the guest prints until the log's disk is full; it is stopped,
    // and the exit code and the message say why.
    let out = forgeone(
        &[
            "run",
            "loud.wasm",
            "--anchor",
            "anchor.json",
            "--audit-log",
            "disk/run.jsonl",
            "--max-output",
            "64MiB",
        ],
        d,
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("stopped: the audit log disk/run.jsonl cannot be written"),
        "{stderr}"
    );
    assert!(stderr.contains("No space left"), "{stderr}");
    std::fs::remove_file(d.join("disk/run.jsonl")).unwrap();

    // `up`: the same, for a deployment.
    let deployment = DEPLOYMENT_HEAD
        .replace("audit.jsonl", "disk/up.jsonl")
        .replace("app.wasm", "loud.wasm");
    std::fs::write(d.join("forgeone.toml"), deployment).unwrap();
    let out = forgeone(&["up", "forgeone.toml"], d);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("audit log disk/up.jsonl cannot be written"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("every container was stopped"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("failed: stopped: the audit log disk/up.jsonl cannot be written"),
        "{stdout}"
    );
}

/// Keys, an anchor and a signed TRIVIAL component `app.wasm` in `d`.
fn signed_app(d: &Path) {
    keys_and_anchor(d);
    std::fs::write(d.join("app.wasm"), wat::parse_str(TRIVIAL).unwrap()).unwrap();
    let out = forgeone(&["sign", "app.wasm", "--key", "keys/release.pem"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Root, release and host keys in `d/keys`, and `d/anchor.json` trusting
/// the release key.
fn keys_and_anchor(d: &Path) {
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
            "-o",
            "anchor.json",
        ],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

const DEPLOYMENT_HEAD: &str = r#"
trust_anchor = "anchor.json"
boot = "signatures"
host_key = "keys/host.pem"
audit_log = "audit.jsonl"
state_dir = "state"
boot_policy = "degraded"

[node]
region = "eu-west"
zone = "eu-west-1a"

[[tenant]]
name = "acme"
max_priority = "critical"

[[workload]]
name = "api"
component = "app.wasm"
priority = "critical"
tenant = "acme"
"#;

fn json_events(out: &Output) -> Vec<serde_json::Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn event<'a>(events: &'a [serde_json::Value], kind: &str, workload: &str) -> &'a serde_json::Value {
    events
        .iter()
        .find(|e| e["event"] == kind && e["workload"] == workload)
        .unwrap_or_else(|| panic!("no {kind} event for {workload} in {events:#?}"))
}

#[test]
fn up_boots_schedules_runs_and_verifies_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    signed_app(d);

    // Everything fine: exit 0, a table, a summary, a verified audit log.
    std::fs::write(d.join("forgeone.toml"), DEPLOYMENT_HEAD).unwrap();
    let out = forgeone(&["up", "forgeone.toml"], d);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("WORKLOAD"), "{stdout}");
    assert!(stdout.contains("api"), "{stdout}");
    assert!(stdout.contains("1 completed"), "{stdout}");
    assert!(stdout.contains("audit: verified"), "{stdout}");

    // A tampered copy refused at boot, a workload no node fits: each
    // reported with its reason, the rest runs, exit 1.
    let mut tampered = std::fs::read(d.join("app.wasm")).unwrap();
    tampered.push(0);
    std::fs::write(d.join("tampered.wasm"), tampered).unwrap();
    std::fs::copy(
        d.join("app.wasm.sig.json"),
        d.join("tampered.wasm.sig.json"),
    )
    .unwrap();
    let deployment = format!(
        "{DEPLOYMENT_HEAD}\n[[workload]]\nname = \"billing\"\ncomponent = \"tampered.wasm\"\n\
         tenant = \"acme\"\n\n[[workload]]\nname = \"us\"\ncomponent = \"app.wasm\"\n\
         tenant = \"acme\"\nconstraints.location = \"us-*\"\n\n[[workload]]\nname = \"pinned\"\n\
         component = \"app.wasm\"\ntenant = \"acme\"\nworker = 0\n\n[[workload]]\n\
         name = \"nowhere\"\ncomponent = \"app.wasm\"\ntenant = \"acme\"\nworker = 4096\n"
    );
    std::fs::write(d.join("forgeone.toml"), deployment).unwrap();
    let out = forgeone(&["up", "forgeone.toml", "--json"], d);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let events = json_events(&out);
    assert_eq!(event(&events, "placed", "api")["node"], "local");
    let billing = event(&events, "refused", "billing");
    assert_eq!(billing["stage"], "boot");
    let us = event(&events, "refused", "us");
    assert_eq!(us["stage"], "schedule");
    assert_eq!(us["unschedulable"], true);
    assert!(us["reason"].as_str().unwrap().contains("us-*"), "{us}");
    // Worker affinity: honoured when the worker exists, refused otherwise.
    assert_eq!(event(&events, "placed", "pinned")["node"], "local");
    let nowhere = event(&events, "refused", "nowhere");
    assert!(
        nowhere["reason"].as_str().unwrap().contains("worker 4096"),
        "{nowhere}"
    );
    let audit = events.iter().find(|e| e["event"] == "audit").unwrap();
    assert_eq!(audit["verified"], true);
    let log = std::fs::read_to_string(d.join("audit.jsonl")).unwrap();
    assert!(log.contains("\"kind\":\"boot.component.refused\""));
    assert!(log.contains("\"kind\":\"schedule.unschedulable\""));
    assert!(log.contains("\"kind\":\"container.exited\""));

    // With a boot manifest: it is used instead of per-component signatures.
    let out = forgeone(
        &[
            "manifest",
            "create",
            "--release",
            "r1",
            "--manifest-version",
            "1",
            "--key",
            "keys/release.pem",
            "--output",
            "boot-manifest.json",
            "app@1.0.0=app.wasm",
        ],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let manifest_mode = DEPLOYMENT_HEAD.replace(
        "boot = \"signatures\"",
        "boot = \"manifest\"\nboot_manifest = \"boot-manifest.json\"",
    );
    std::fs::write(d.join("forgeone.toml"), &manifest_mode).unwrap();
    let out = forgeone(&["up", "forgeone.toml", "--json"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events = json_events(&out);
    let boot = events.iter().find(|e| e["event"] == "boot").unwrap();
    assert_eq!(boot["mode"], "manifest");
    assert_eq!(boot["outcome"], "verified");
    assert_eq!(boot["components"][0]["name"], "app");
    // Status events are emitted as the status changes: the last one is
    // where `api` ended (the first may be `creating` or `running`).
    let last_status = events
        .iter()
        .rev()
        .find(|e| e["event"] == "status" && e["workload"] == "api")
        .expect("a status event for api");
    assert_eq!(last_status["status"], "stopped", "{events:#?}");

    // Rollback protection cannot be switched off by deleting the manifest:
    // in manifest mode a missing manifest is an error, and signatures mode
    // is refused now that the state has accepted a manifest.
    std::fs::rename(d.join("boot-manifest.json"), d.join("moved.json")).unwrap();
    let out = forgeone(&["up", "forgeone.toml"], d);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("boot-manifest.json: no such file"),
        "{stderr}"
    );
    std::fs::write(d.join("forgeone.toml"), DEPLOYMENT_HEAD).unwrap();
    let out = forgeone(&["up", "forgeone.toml"], d);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("has accepted boot manifest version 1"),
        "{stderr}"
    );
    std::fs::rename(d.join("moved.json"), d.join("boot-manifest.json")).unwrap();

    // Bad input: the line is named and nothing starts.
    let before = std::fs::read_to_string(d.join("audit.jsonl")).unwrap();
    std::fs::write(
        d.join("forgeone.toml"),
        format!("{DEPLOYMENT_HEAD}resorces = {{ fuel = \"1M\" }}\n"),
    )
    .unwrap();
    let out = forgeone(&["up", "forgeone.toml"], d);
    assert_eq!(out.status.code(), Some(3));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("forgeone.toml:22:"), "{stderr}");
    assert!(stderr.contains("resorces"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(d.join("audit.jsonl")).unwrap(),
        before
    );
}

#[cfg(unix)]
fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every private key and the cache secret get one check, as ssh's: open to
/// group or others is refused, naming the file and the `chmod` that fixes it.
#[cfg(unix)]
#[test]
fn private_keys_readable_by_others_are_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    signed_app(d);
    let run = || {
        forgeone(
            &[
                "run",
                "--host-key",
                "keys/host.pem",
                "--anchor",
                "anchor.json",
                "--state-dir",
                "state",
                "app.wasm",
            ],
            d,
        )
    };
    assert!(run().status.success(), "{}", text(&run().stderr));
    let refused = |out: &Output, file: &str, mode: &str| {
        assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("(mode {mode})"))
                && stderr.contains(&format!("run `chmod 600 {file}`")),
            "{stderr}"
        );
    };

    // The host key, for `run` and for `up`.
    chmod(&d.join("keys/host.pem"), 0o644);
    refused(&run(), "keys/host.pem", "0644");
    std::fs::write(d.join("forgeone.toml"), DEPLOYMENT_HEAD).unwrap();
    let out = forgeone(&["up", "forgeone.toml"], d);
    refused(&out, "keys/host.pem", "0644");
    assert!(
        !text(&out.stderr).contains("keygen"),
        "{}",
        text(&out.stderr)
    );
    chmod(&d.join("keys/host.pem"), 0o600);

    // A release key, for `sign` (and every other command that signs).
    chmod(&d.join("keys/release.pem"), 0o640);
    let out = forgeone(&["sign", "app.wasm", "--key", "keys/release.pem"], d);
    refused(&out, "keys/release.pem", "0640");
    chmod(&d.join("keys/release.pem"), 0o600);

    // The compiled cache's secret: the same check, the same advice.
    chmod(&d.join("state/cache/cache.key"), 0o604);
    refused(&run(), "state/cache/cache.key", "0604");
    chmod(&d.join("state/cache/cache.key"), 0o600);
    assert!(run().status.success(), "{}", text(&run().stderr));
}

/// Input the host would refuse later, or misread, is refused where it is
/// given, with an error that names it.
#[test]
fn bad_input_is_refused_where_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    signed_app(d);

    // A manifest whose component version is the release `up1`: boot
    // refuses it as not semver, so creating it is refused.
    let create = |release: &str, component: &str| {
        forgeone(
            &[
                "manifest",
                "create",
                "--release",
                release,
                "--manifest-version",
                "1",
                "--key",
                "keys/release.pem",
                "--output",
                "boot-manifest.json",
                component,
            ],
            d,
        )
    };
    let out = create("up1", "app.wasm");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("version `up1` is not a semantic version")
            && stderr.contains("NAME@VERSION=PATH"),
        "{stderr}"
    );
    assert!(!d.join("boot-manifest.json").exists());
    let out = create("up1", "app@1.0.0=app.wasm");
    assert!(out.status.success(), "{}", text(&out.stderr));

    // An expiry in the past, for a signature (and an anchor or a manifest).
    for past in ["2020-01-01T00:00:00Z", "0s"] {
        let out = forgeone(
            &[
                "sign",
                "app.wasm",
                "--key",
                "keys/release.pem",
                "--expires",
                past,
            ],
            d,
        );
        assert_eq!(out.status.code(), Some(2), "{past}");
        assert!(
            text(&out.stderr).contains("is not in the future"),
            "{}",
            text(&out.stderr)
        );
    }

    // Sizes that overflow are refused, not saturated.
    for (flag, size) in [
        ("--max-memory", "18446744073709551615TiB"),
        ("--max-output", "16EiB"),
    ] {
        let out = forgeone(&["run", "--allow-unsigned", flag, size, "app.wasm"], d);
        assert_eq!(out.status.code(), Some(2), "{flag} {size}");
        assert!(
            text(&out.stderr).contains("is over the largest size, 16 EiB"),
            "{}",
            text(&out.stderr)
        );
    }
    let out = forgeone(&["boot", "--max-component-size", "17EiB", "--help"], d);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("size `17EiB` is over the largest size"),
        "{}",
        text(&out.stderr)
    );

    // Control characters in names: refused, and escaped in the error.
    let hostile = DEPLOYMENT_HEAD
        .replace("name = \"acme\"", "name = \"acme\\u001b[2J\\nroot\"")
        .replace(
            "tenant = \"acme\"",
            "tenant = \"acme\"\nprincipal = \"svc\\u001b]0;x\\u0007\"",
        );
    std::fs::write(d.join("forgeone.toml"), hostile).unwrap();
    let out = forgeone(&["up", "forgeone.toml"], d);
    assert_eq!(out.status.code(), Some(3));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("bad tenant name: `acme\\x1b[2J\\nroot` contains the control character")
            && stderr.contains("bad principal: `svc\\x1b]0;x\\x07`"),
        "{stderr}"
    );
    assert!(
        !stderr.chars().any(|c| c.is_control() && c != '\n'),
        "{stderr:?}"
    );
}

/// `plan` refuses what `up` refuses: a workload pinned to an executor
/// worker the host will not have (`--workers`, by default one per core).
#[test]
fn plan_and_up_agree_on_worker_affinity() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    signed_app(d);
    let deployment = format!(
        "{DEPLOYMENT_HEAD}\n[[workload]]\nname = \"pinned\"\ncomponent = \"app.wasm\"\n\
         tenant = \"acme\"\nworker = 1\n\n[[workload]]\nname = \"far\"\ncomponent = \"app.wasm\"\n\
         tenant = \"acme\"\nworker = 9999\n"
    );
    std::fs::write(d.join("forgeone.toml"), deployment).unwrap();
    for workers in ["2", "1"] {
        let plan = forgeone(
            &["plan", "forgeone.toml", "--json", "--workers", workers],
            d,
        );
        assert_eq!(plan.status.code(), Some(1), "{}", text(&plan.stderr));
        let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
        let planned = |name: &str| {
            plan["workloads"]
                .as_array()
                .unwrap()
                .iter()
                .find(|w| w["name"] == name)
                .unwrap()
                .clone()
        };
        let up = forgeone(&["up", "forgeone.toml", "--json", "--workers", workers], d);
        assert_eq!(up.status.code(), Some(1), "{}", text(&up.stderr));
        let events = json_events(&up);
        for name in ["api", "pinned", "far"] {
            let placed = events
                .iter()
                .any(|e| e["event"] == "placed" && e["workload"] == name);
            assert_eq!(
                planned(name)["placed"],
                placed,
                "--workers {workers}: `{name}`: plan {} but up {events:#?}",
                planned(name)
            );
        }
        let far = planned("far");
        assert_eq!(
            far["error"],
            format!("no worker 9999: the executor has {workers}")
        );
        let refused = event(&events, "refused", "far");
        assert!(
            refused["reason"]
                .as_str()
                .unwrap()
                .contains("no worker 9999"),
            "{refused}"
        );
    }
}

/// A command component that loops until it runs out of fuel (or is
/// stopped at a fuel yield point).
#[cfg(unix)]
const LOOP: &str = r#"
(component
  (core module $m (func (export "run") (result i32) (loop $l (br $l)) (i32.const 0)))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $run-instance (export "run" (func $run)))
  (export "wasi:cli/run@0.2.12" (instance $run-instance)))
"#;

/// `forgeone` running in the background: its stderr lines as they come,
/// its stdout drained (so a full pipe never blocks it).
#[cfg(unix)]
struct Background {
    child: std::process::Child,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stdout: std::thread::JoinHandle<Vec<u8>>,
}

#[cfg(unix)]
impl Background {
    fn spawn(args: &[&str], dir: &Path) -> Background {
        use std::io::{BufRead as _, Read as _};
        use std::process::Stdio;
        let mut child = Command::new(env!("CARGO_BIN_EXE_forgeone"))
            .args(args)
            .current_dir(dir)
            .env_remove("FORGEONE_HOST_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run forgeone");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut stdout = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stdout.read_to_end(&mut bytes);
            bytes
        });
        Background {
            child,
            stderr: lines,
            stdout,
        }
    }

    /// Polls (with a cap) until `ready` holds.
    fn until(&mut self, what: &str, mut ready: impl FnMut(&Background) -> bool) {
        let start = std::time::Instant::now();
        while !ready(self) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("exited ({status}) before {what}: {}", self.stderr());
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(60),
                "no {what} after 60 s: {}",
                self.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (at most `cap`) for the process to end: its exit code, how
    /// long it took, its stdout and stderr.
    fn finish(mut self, cap: std::time::Duration) -> (Option<i32>, std::time::Duration, String) {
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > cap {
                let _ = self.child.kill();
                panic!("still running {cap:?} after the signal: {}", self.stderr());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let took = start.elapsed();
        let stdout = text(&self.stdout.join().unwrap());
        // The stderr reader ends with the process.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let stderr = self.stderr.lock().unwrap().join("\n");
        (status.code(), took, format!("{stdout}\n{stderr}"))
    }
}

/// A signed `loop.wasm` beside TRIVIAL's keys and anchor.
#[cfg(unix)]
fn signed_loop(d: &Path) {
    signed_app(d);
    std::fs::write(d.join("loop.wasm"), wat::parse_str(LOOP).unwrap()).unwrap();
    let out = forgeone(&["sign", "loop.wasm", "--key", "keys/release.pem"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Strict verification with the host key: every record is sealed.
#[cfg(unix)]
fn assert_sealed(d: &Path, log: &str) {
    let out = forgeone(&["audit", "verify", log, "--key", "keys/host.pub.pem"], d);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[cfg(unix)]
fn audit_has(d: &Path, log: &str, kind: &str) -> bool {
    std::fs::read_to_string(d.join(log)).is_ok_and(|l| l.contains(&format!("\"kind\":\"{kind}\"")))
}

/// SIGTERM is Ctrl-C's twin for `run` and `up`: the containers are
/// stopped, the audit log is sealed (strict verification passes) and the
/// exit code is 143.
#[cfg(unix)]
#[test]
fn sigterm_stops_run_and_up_and_seals_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    signed_loop(d);

    let mut run = Background::spawn(
        &[
            "run",
            "--host-key",
            "keys/host.pem",
            "--anchor",
            "anchor.json",
            "--audit-log",
            "run.jsonl",
            "--fuel",
            "1000000000000000",
            "--timeout",
            "1h",
            "loop.wasm",
        ],
        d,
    );
    run.until("a started container", |_| {
        audit_has(d, "run.jsonl", "container.started")
    });
    run.signal("TERM");
    let (code, _, output) = run.finish(std::time::Duration::from_secs(30));
    assert_eq!(code, Some(143), "{output}");
    assert!(output.contains("forgeone: stopping (SIGTERM)"), "{output}");
    assert_sealed(d, "run.jsonl");

    let deployment = DEPLOYMENT_HEAD.replace(
        "component = \"app.wasm\"",
        "component = \"loop.wasm\"\nresources = { fuel = \"1000T\", timeout = \"1h\" }",
    );
    std::fs::write(d.join("forgeone.toml"), deployment).unwrap();
    let mut up = Background::spawn(&["up", "forgeone.toml"], d);
    up.until("a started container", |_| {
        audit_has(d, "audit.jsonl", "container.started")
    });
    up.signal("TERM");
    let (code, _, output) = up.finish(std::time::Duration::from_secs(30));
    assert_eq!(code, Some(143), "{output}");
    assert!(
        output.contains("stopping every container (SIGTERM)"),
        "{output}"
    );
    assert!(output.contains("audit: verified"), "{output}");
    assert!(audit_has(d, "audit.jsonl", "schedule.drain"));
    assert_sealed(d, "audit.jsonl");

    // The exit codes are documented.
    for command in ["run", "up"] {
        let help = text(&forgeone(&[command, "--help"], d).stdout);
        assert!(help.contains("143  stopped by SIGTERM"), "{help}");
    }
}

/// `up --metrics ADDR` serves Prometheus metrics while the deployment
/// runs (scraped over HTTP), and an address it cannot bind is refused up
/// front, naming it.
#[cfg(unix)]
#[test]
fn up_serves_metrics_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    signed_loop(d);
    let deployment = DEPLOYMENT_HEAD.replace(
        "component = \"app.wasm\"",
        "component = \"loop.wasm\"\nresources = { fuel = \"1000T\", timeout = \"1h\" }",
    );
    std::fs::write(d.join("forgeone.toml"), deployment).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = forgeone(&["up", "forgeone.toml", "--metrics", &addr], d);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("metrics endpoint {addr}")),
        "{}",
        text(&out.stderr)
    );
    drop(taken);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut up = Background::spawn(&["up", "forgeone.toml", "--metrics", &addr], d);
    let scrape = || {
        ureq::get(&format!("http://{addr}/metrics"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default()
    };
    let mut page = String::new();
    up.until("the running container in the metrics", |_| {
        page = scrape();
        page.lines()
            .any(|l| l == "forgeone_containers{status=\"running\"} 1")
    });
    assert!(
        page.contains("forgeone_container_starts_total{workload=\"api\",tenant=\"acme\"} 1"),
        "{page}"
    );
    assert!(page.contains("forgeone_boots_total"), "{page}");
    assert!(page.contains("forgeone_audit_writable 1"), "{page}");
    assert!(
        page.contains("# HELP forgeone_containers Containers by status."),
        "{page}"
    );
    up.signal("TERM");
    let (code, _, output) = up.finish(std::time::Duration::from_secs(30));
    assert_eq!(code, Some(143), "{output}");
    assert!(
        output.contains(&format!("metrics at http://{addr}/metrics")),
        "{output}"
    );
}

/// A signal sent while `up` is still starting (booting, placing hundreds
/// of workloads) or while `run` is still preparing is not lost: it ends the
/// command promptly, with its exit code and a sealed log.
#[cfg(unix)]
#[test]
fn a_signal_during_start_up_is_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    signed_loop(d);
    let mut deployment = DEPLOYMENT_HEAD.replace("name = \"api\"", "name = \"w0\"").replace(
        "component = \"app.wasm\"",
        "component = \"loop.wasm\"\nresources = { fuel = \"1000T\", cpu = \"1m\", timeout = \"1h\" }",
    );
    deployment = deployment.replace(
        "zone = \"eu-west-1a\"",
        "zone = \"eu-west-1a\"\nmemory = \"1TiB\"",
    );
    for i in 1..300 {
        deployment.push_str(&format!(
            "\n[[workload]]\nname = \"w{i}\"\ncomponent = \"loop.wasm\"\ntenant = \"acme\"\n\
             resources = {{ fuel = \"1000T\", cpu = \"1m\", timeout = \"1h\" }}\n"
        ));
    }
    std::fs::write(d.join("forgeone.toml"), deployment).unwrap();

    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        // A fresh log each time (and so no head of the last one).
        let _ = std::fs::remove_file(d.join("audit.jsonl"));
        let _ = std::fs::remove_file(d.join("audit.head.json"));
        let mut up = Background::spawn(&["up", "forgeone.toml"], d);
        // The first line it prints: it has not booted yet.
        up.until("a first line", |up| !up.stderr.lock().unwrap().is_empty());
        up.signal(signal);
        let (exit, took, output) = up.finish(std::time::Duration::from_secs(60));
        assert_eq!(exit, Some(code), "SIG{signal} after {took:?}: {output}");
        assert!(
            took < std::time::Duration::from_secs(30),
            "SIG{signal}: {took:?}"
        );
        assert_sealed(d, "audit.jsonl");
    }

    let mut run = Background::spawn(
        &[
            "run",
            "--host-key",
            "keys/host.pem",
            "--anchor",
            "anchor.json",
            "--audit-log",
            "run.jsonl",
            "--fuel",
            "1000000000000000",
            "--timeout",
            "1h",
            "loop.wasm",
        ],
        d,
    );
    run.until("a first line", |run| !run.stderr.lock().unwrap().is_empty());
    run.signal("TERM");
    let (exit, _, output) = run.finish(std::time::Duration::from_secs(30));
    assert_eq!(exit, Some(143), "{output}");
    assert_sealed(d, "run.jsonl");
}

/// A small deterministic generator for the kill points (printed, so a
/// failing run can be repeated with `FORGEONE_KILL_SEED`).
fn lcg(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

#[test]
fn run_killed_at_random_points_leaves_a_log_the_next_run_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    signed_app(d);
    let run = [
        "run",
        "--anchor",
        "anchor.json",
        "--host-key",
        "keys/host.pem",
        "--state-dir",
        "state",
        "app.wasm",
    ];
    // How long a whole run takes here bounds where the kills land.
    let t0 = std::time::Instant::now();
    let out = forgeone(&run, d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let span = (t0.elapsed().as_micros() as u64).max(1_000);
    let mut seed = std::env::var("FORGEONE_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("kill points from FORGEONE_KILL_SEED={seed} over {span} µs");
    for kill in 0..50 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_forgeone"))
            .args(run)
            .current_dir(d)
            .env_remove("FORGEONE_HOST_KEY")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let at = std::time::Duration::from_micros(lcg(&mut seed) % span);
        std::thread::sleep(at);
        // SIGKILL: no handler runs, the log is left as the write left it.
        let _ = child.kill();
        let _ = child.wait();
        // The next run opens the log (cutting a torn tail), runs, seals it.
        let out = forgeone(&run, d);
        assert!(
            out.status.success(),
            "run after kill {kill} at {at:?}: {}",
            text(&out.stderr)
        );
        let out = forgeone(
            &[
                "audit",
                "verify",
                "state/audit.jsonl",
                "--key",
                "keys/host.pub.pem",
            ],
            d,
        );
        assert!(
            out.status.success(),
            "verify after kill {kill} at {at:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

/// Runs forgeone like [`forgeone`], but kills it after `limit`: a hang
/// becomes a failure that says so.
fn forgeone_within(args: &[&str], dir: &Path, limit: std::time::Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_forgeone"))
        .args(args)
        .current_dir(dir)
        .env_remove("FORGEONE_HOST_PUB")
        .env_remove("FORGEONE_HOST_KEY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run forgeone");
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "forgeone {args:?} still running after {limit:?}: {}",
                text(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn run_allow_unsigned_refuses_a_fifo_and_a_sparse_giant_without_reading_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A FIFO with no writer (reading it hung the host) and a 20 GiB sparse
    // file (reading it drove the host to the OOM killer).
    let made = Command::new("mkfifo").arg(d.join("fifo.wasm")).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    std::fs::File::create(d.join("sparse.wasm"))
        .unwrap()
        .set_len(20 << 30)
        .unwrap();
    for (file, says) in [
        (
            "fifo.wasm",
            "unsigned component fifo.wasm: is a FIFO (named pipe), not a regular file",
        ),
        (
            "sparse.wasm",
            "unsigned component sparse.wasm is 21474836480 bytes, over the limit of 268435456 bytes",
        ),
    ] {
        // Generous: refusing takes milliseconds; this only turns a hang
        // into a failure.
        let out = forgeone_within(
            &[
                "run",
                "--allow-unsigned",
                "--audit-log",
                "audit.jsonl",
                file,
            ],
            d,
            std::time::Duration::from_secs(60),
        );
        assert_eq!(out.status.code(), Some(3), "{file}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(says), "{file}: {stderr}");
    }
}

#[test]
fn run_max_open_files_reaches_the_container_and_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("app.wasm"), wat::parse_str(TRIVIAL).unwrap()).unwrap();
    let run = |n: &str| {
        forgeone(
            &[
                "run",
                "--allow-unsigned",
                "--audit-log",
                "audit.jsonl",
                "--max-open-files",
                n,
                "app.wasm",
            ],
            d,
        )
    };
    let out = run("7");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = std::fs::read_to_string(d.join("audit.jsonl")).unwrap();
    let created: serde_json::Value = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["kind"] == "container.created")
        .expect("a container.created record");
    assert_eq!(created["details"]["limits"]["max_open_files"], 7);

    let out = run("0");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--max-open-files"),
        "{}",
        text(&out.stderr)
    );
    let help = text(&forgeone(&["run", "--help"], d).stdout);
    assert!(help.contains("--max-open-files"), "{help}");
}

#[test]
fn run_file_io_reaches_the_container_and_a_bad_mode_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("app.wasm"), wat::parse_str(TRIVIAL).unwrap()).unwrap();
    let run = |mode: Option<&str>| {
        let mut args = vec!["run", "--allow-unsigned", "--audit-log", "audit.jsonl"];
        if let Some(mode) = mode {
            args.extend(["--file-io", mode]);
        }
        args.push("app.wasm");
        forgeone(&args, d)
    };
    let created_file_io = || {
        let log = std::fs::read_to_string(d.join("audit.jsonl")).unwrap();
        log.lines()
            .rev()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|r| r["kind"] == "container.created")
            .expect("a container.created record")["details"]["file_io"]
            .clone()
    };
    for (mode, recorded) in [
        (None, "on-thread"),
        (Some("pool"), "pool"),
        (Some("on-thread"), "on-thread"),
    ] {
        let out = run(mode);
        assert!(out.status.success(), "{mode:?}: {}", text(&out.stderr));
        assert_eq!(created_file_io(), recorded, "{mode:?}");
    }

    for bad in ["blocking-pool", "Pool", ""] {
        let out = run(Some(bad));
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("--file-io")
                && stderr.contains(&format!(
                    "unknown file I/O mode `{bad}`: expected on-thread | pool"
                )),
            "{bad}: {stderr}"
        );
    }
    let help = text(&forgeone(&["run", "--help"], d).stdout);
    assert!(help.contains("--file-io <MODE>"), "{help}");
}

/// Runs sharing a state directory take turns: each waits for the audit
/// log another holds (saying so once, naming it), up to `--lock-timeout`,
/// and `up` waits for the boot state likewise.
#[cfg(unix)]
#[test]
fn runs_sharing_a_state_directory_wait_their_turn() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    signed_app(d);
    std::fs::create_dir(d.join("state")).unwrap();
    let key = || SigningKey::from_file(d.join("keys/host.pem")).unwrap();
    let run = [
        "run",
        "--host-key",
        "keys/host.pem",
        "--anchor",
        "anchor.json",
        "--state-dir",
        "state",
        "app.wasm",
    ];
    let waiting = "waiting for the audit log state/audit.jsonl: another process is using it";

    // Held by this test: every run waits, then all of them run, in turn.
    let held = AuditLog::open(d.join("state/audit.jsonl"), key(), &AuditConfig::new()).unwrap();
    let mut runs: Vec<Background> = (0..6).map(|_| Background::spawn(&run, d)).collect();
    for r in &mut runs {
        r.until("the waiting line", |r| r.stderr().contains(waiting));
    }
    held.close().unwrap();
    for r in runs {
        let (code, _, output) = r.finish(std::time::Duration::from_secs(60));
        assert_eq!(code, Some(0), "{output}");
        assert_eq!(output.matches(waiting).count(), 1, "{output}");
    }
    assert_sealed(d, "state/audit.jsonl");
    let log = std::fs::read_to_string(d.join("state/audit.jsonl")).unwrap();
    assert_eq!(log.matches("\"kind\":\"container.exited\"").count(), 6);

    // And without a turn within the timeout: refused, naming the log.
    let held = AuditLog::open(d.join("state/audit.jsonl"), key(), &AuditConfig::new()).unwrap();
    // A signal while it waits ends it at once.
    let mut waiter = Background::spawn(&run, d);
    waiter.until("the waiting line", |r| r.stderr().contains(waiting));
    waiter.signal("TERM");
    let (code, took, output) = waiter.finish(std::time::Duration::from_secs(10));
    assert_eq!(code, Some(143), "{output}");
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    let mut short = run.to_vec();
    short.splice(1..1, ["--lock-timeout", "200ms"]);
    let out = forgeone(&short, d);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(waiting)
            && stderr.contains("state/audit.jsonl")
            && stderr.contains("--lock-timeout"),
        "{stderr}"
    );
    held.close().unwrap();

    // `up` waits for the boot state another process holds.
    std::fs::write(d.join("forgeone.toml"), DEPLOYMENT_HEAD).unwrap();
    let held = forgeone::boot::BootState::open(d.join("state/boot")).unwrap();
    let mut up = Background::spawn(&["up", "forgeone.toml"], d);
    up.until("the waiting line", |up| {
        up.stderr()
            .contains("waiting for the boot state state/boot: another process is using it")
    });
    drop(held);
    let (code, _, output) = up.finish(std::time::Duration::from_secs(60));
    assert_eq!(code, Some(0), "{output}");
}

#[test]
fn run_max_code_size_refuses_before_compiling_and_can_be_raised() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let app = wat::parse_str(
        r#"(component
             (core module $m (func (export "run") (result i32) (i32.const 0)))
             (core instance $i (instantiate $m))
             (func $run (result (result)) (canon lift (core func $i "run")))
             (instance $r (export "run" (func $run)))
             (export "wasi:cli/run@0.2.12" (instance $r)))"#,
    )
    .unwrap();
    std::fs::write(d.join("app.wasm"), app).unwrap();
    let out = forgeone(
        &[
            "run",
            "--allow-unsigned",
            "--max-code-size",
            "2",
            "app.wasm",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is refused before compiling")
            && text(&out.stderr).contains("over the limit of 2"),
        "{}",
        text(&out.stderr)
    );
    let out = forgeone(
        &[
            "run",
            "--allow-unsigned",
            "--max-code-size",
            "1KiB",
            "app.wasm",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn call_verifies_a_plugin_calls_it_and_prints_the_value_and_its_cost() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keys_and_anchor(d);
    let plugin = std::fs::read(forgeone_tests::guests::TEXT_PLUGIN).unwrap();
    // Signed by its file stem, which is the name it describes itself by;
    // and a copy signed under another name.
    std::fs::write(d.join("text_plugin.wasm"), &plugin).unwrap();
    std::fs::write(d.join("impostor.wasm"), &plugin).unwrap();
    for file in ["text_plugin.wasm", "impostor.wasm"] {
        let out = forgeone(
            &[
                "sign",
                file,
                "--key",
                "keys/release.pem",
                "--version",
                "1.0.0",
            ],
            d,
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let call = |extra: &[&str]| {
        let mut args = vec![
            "call",
            "--anchor",
            "anchor.json",
            "--host-key",
            "keys/host.pem",
            "--audit-log",
            "audit.jsonl",
        ];
        args.extend_from_slice(extra);
        forgeone(&args, d)
    };

    // Text in, the plugin's JSON out on stdout, the cost on stderr.
    let out = call(&[
        "text_plugin.wasm",
        "word-count",
        "--text",
        "the cat and the hat",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["words"], 5);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("text_plugin word-count ok · fuel "),
        "{stderr}"
    );
    assert!(stderr.contains(" µs"), "{stderr}");

    // --input is JSON (a negative number too); --json gives value and stats.
    let out = call(&[
        "text_plugin.wasm",
        "sum",
        "--input",
        "[1, 2, 3.5]",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["value"],
        serde_json::json!({"type": "float", "value": 6.5})
    );
    assert!(json["stats"]["fuel_consumed"].as_u64().unwrap() > 0);
    assert!(json["stats"]["wall_time_us"].as_u64().is_some());

    // --config reaches the plugin.
    let out = call(&[
        "text_plugin.wasm",
        "slugify",
        "--text",
        "Hello, World!",
        "--config",
        "separator=_",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello_world\n");
    // --list: its name, version and calls.
    let out = call(&["text_plugin.wasm", "--list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("text_plugin 0.1.0\n"));
    assert!(text(&out.stdout).contains("  word-count\n"));

    // The plugin's own error: exit 1, said once, with its cost.
    let out = call(&["text_plugin.wasm", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error: plugin `text_plugin` call `nope`: no call named `nope` · fuel"),
        "{stderr}"
    );
    // A runaway call ends at its fuel budget, with run's exit code for it.
    let out = call(&[
        "text_plugin.wasm",
        "burn",
        "--input",
        "-1",
        "--fuel",
        "1000000",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("out of fuel"));
    // Input that is not JSON is named, with the way to pass text.
    let out = call(&["text_plugin.wasm", "slugify", "--input", "hello world"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--text"),
        "{}",
        text(&out.stderr)
    );
    // Signed as `impostor` but describing itself as `text_plugin`: refused.
    let out = call(&["impostor.wasm", "slugify", "--text", "Hi"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("signed as `impostor` but describes itself as `text_plugin`"),
        "{}",
        text(&out.stderr)
    );
    // Unverified code is not loaded.
    let out = forgeone(&["call", "text_plugin.wasm", "slugify", "--text", "Hi"], d);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not verified"));

    // A plugin with its own WIT world: its functions by name, JSON in and out.
    std::fs::write(
        d.join("word_stats.wasm"),
        std::fs::read(forgeone_tests::guests::WORD_STATS).unwrap(),
    )
    .unwrap();
    let out = forgeone(
        &[
            "sign",
            "word_stats.wasm",
            "--key",
            "keys/release.pem",
            "--version",
            "1.0.0",
        ],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = call(&["word_stats.wasm", "--list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("#count(text: string, top: u32) -> result<"),
        "{}",
        text(&out.stdout)
    );
    let out = call(&["word_stats.wasm", "count", "--input", r#"["a b a", 1]"#]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"ok": {"words": 3, "lines": 1, "top": [["a", 2]]}})
    );
    let out = call(&[
        "word_stats.wasm",
        "spin",
        "--input",
        "0",
        "--fuel",
        "100000",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    let out = call(&["word_stats.wasm", "count", "--input", r#"["x"]"#]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("takes 2 argument(s)"));

    // Every call is on the record, and the log verifies.
    let log = std::fs::read_to_string(d.join("audit.jsonl")).unwrap();
    let calls = log
        .lines()
        .filter(|l| l.contains("\"kind\":\"container.plugin.call\""))
        .filter(|l| !l.contains("\"call\":\"describe\""))
        .count();
    assert_eq!(
        calls, 7,
        "word-count, sum, slugify, nope, burn, count, spin: {log}"
    );
    assert!(log.contains("\"kind\":\"container.plugin.refused\""));
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

#[test]
fn cluster_commands_name_a_server_that_does_not_answer_and_deploy_needs_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    for args in [
        vec!["ps", "--nats", &url],
        vec!["undeploy", "shop", "--nats", &url],
        vec!["stop", "shop/api", "--nats", &url],
    ] {
        let out = forgeone(&args, dir.path());
        assert_eq!(
            out.status.code(),
            Some(3),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(&format!("cannot connect to NATS at {url}")),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // A deployment is always signed: --key is required.
    let out = forgeone(&["deploy", "forgeone.toml", "--nats", &url], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--key"), "{}", text(&out.stderr));
}
