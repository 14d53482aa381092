//! `forgeone run` as a filter in a pipeline: stdin passed through, stdout
//! byte for byte and in full, the kept copy capped, fuel and deadline
//! defaults.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::text;

/// Copies stdin to stdout (shared with the library tests).
const CAT: &str = include_str!("../../../tests/fixtures/cat.wat");

/// `forgeone run --allow-unsigned ARGS.. cat.wasm` in `dir`, with `input`
/// piped into it and its stdout and stderr captured.
fn run_cat(dir: &Path, args: &[&str], input: &[u8]) -> Output {
    let cat = dir.join("cat.wasm");
    if !cat.exists() {
        std::fs::write(&cat, wat::parse_str(CAT).unwrap()).unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_forgeone"))
        .args(["run", "--allow-unsigned", "--audit-log", "audit.jsonl"])
        .args(args)
        .arg("cat.wasm")
        .current_dir(dir)
        .env_remove("FORGEONE_HOST_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Written on its own thread: the pipe back-pressures both ways.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}

/// The audit log's records of `kind`.
fn records(dir: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == kind)
        .collect()
}

#[test]
fn run_pipes_stdin_to_the_guest_and_its_bytes_out_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Invalid UTF-8, a backslash, a tab, an escape, and no final newline:
    // a pipe gets exactly these bytes.
    for input in [
        &b"caf\xe9\\\t"[..],
        b"hello",
        b"\x1b[31mred\x1b[0m\r\n\xe2\x80\xae",
    ] {
        let out = run_cat(d, &[], input);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(out.stdout, input);
    }
    // The invoking user's stdin is a grant, in the audit log.
    let created = records(d, "container.created");
    assert_eq!(created.len(), 3);
    assert!(
        created
            .iter()
            .all(|r| r["details"]["capabilities"]["stdin"] == "inherit")
    );
}

#[test]
fn run_writes_all_output_and_keeps_a_capped_copy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 3 MiB, distinct lines; 64 KiB kept.
    let input: Vec<u8> = (0..49_152u32)
        .flat_map(|i| format!("{i:063}\n").into_bytes())
        .collect();
    let out = run_cat(d, &["--max-output", "64KiB"], &input);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), input.len());
    assert!(out.stdout == input, "the output differs from the input");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "all 3.0 MiB of output was written; the audit log and the evidence keep \
                         the first 64.0 KiB (--max-output)"
        ),
        "{stderr}"
    );
    // The audited copy stops at 64 KiB, and says so.
    let audited: u64 = records(d, "container.output")
        .iter()
        .map(|r| r["details"]["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(audited, 64 * 1024);
    assert_eq!(records(d, "container.output_truncated").len(), 1);
}

#[test]
fn run_has_no_fuel_cap_unless_asked_and_still_reports_the_fuel() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = run_cat(d, &["--json"], b"counted");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let outcome: serde_json::Value =
        serde_json::from_str(text(&out.stderr).lines().last().unwrap()).unwrap();
    assert!(
        outcome["outcome"]["stats"]["fuel_consumed"]
            .as_u64()
            .unwrap()
            > 0
    );
    let limits = &records(d, "container.created")[0]["details"]["limits"];
    assert!(limits["fuel"].is_null(), "{limits}");
    assert_eq!(limits["timeout"], 60_000);
    // Given, it is a cap, and running out of it is exit code 137.
    let out = run_cat(d, &["--fuel", "5"], b"too much work");
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("out of fuel (budget 5)"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        records(d, "container.created")[1]["details"]["limits"]["fuel"],
        5
    );
}

#[test]
fn run_timeout_none_or_zero_turns_the_deadline_off() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (flag, expect) in [
        ("none", serde_json::Value::Null),
        ("NONE", serde_json::Value::Null),
        ("0", serde_json::Value::Null),
        ("0s", serde_json::Value::Null),
        ("1500ms", serde_json::json!(1500)),
    ] {
        let out = run_cat(d, &["--timeout", flag], b"x");
        assert!(out.status.success(), "{flag}: {}", text(&out.stderr));
        let created = records(d, "container.created");
        assert_eq!(
            created.last().unwrap()["details"]["limits"]["timeout"],
            expect,
            "{flag}"
        );
    }
    let out = run_cat(d, &["--timeout", "soon"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("`soon` is not a duration like 5s, or `none`"),
        "{}",
        text(&out.stderr)
    );
}

/// On a terminal (a pty from `script`, where it is installed), only what
/// could control the terminal is escaped; `--raw-output` passes it too.
#[test]
fn run_escapes_only_terminal_controls_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("cat.wasm"), wat::parse_str(CAT).unwrap()).unwrap();
    let input = "\x1b[31mred\t\\ café \u{202e}done".as_bytes();
    std::fs::write(d.join("input.bin"), input).unwrap();
    let on_a_tty = |extra: &str| {
        let command = format!(
            "'{}' run --allow-unsigned --audit-log audit.jsonl {extra} cat.wasm < input.bin \
             2>/dev/null",
            env!("CARGO_BIN_EXE_forgeone")
        );
        Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .current_dir(d)
            .stdin(Stdio::null())
            .output()
    };
    let out = match on_a_tty("") {
        Ok(out) if out.status.success() => out,
        other => {
            eprintln!("skipped: no `script` to run forgeone on a pty: {other:?}");
            return;
        }
    };
    assert_eq!(
        text(&out.stdout),
        "\\x1b[31mred\t\\ café \\u{202e}done",
        "escaped for the terminal"
    );
    let out = on_a_tty("--raw-output").unwrap();
    assert_eq!(out.stdout, input, "--raw-output passes them");
}
