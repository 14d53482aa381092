//! The seed corpora: a few valid and a few near-valid inputs per target,
//! made with the library itself.
//!
//! The committed seeds under `fuzz/corpus/<target>/` are written by
//! `FORGEONE_FUZZ_WRITE_SEEDS=fuzz/corpus cargo +nightly fuzz run <target>`:
//! each target's `init` calls [`write_if_asked`], which writes that target's
//! seeds and exits.

use std::path::Path;
use std::sync::LazyLock;

use chrono::{TimeZone as _, Utc};
use forgeone::boot::{
    BootManifest, ComponentStatement, Envelope, EnvelopeSignature, ManifestDocument,
};

use crate::fixtures::{self, KEYS};

/// The component bytes signatures are made for: a component header.
pub const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

/// The example deployment of `tests/data/plan`.
pub const DEPLOYMENT_TOML: &str = include_str!("../../tests/data/plan/forgeone.toml");
/// The example node inventory of `tests/data/plan`.
pub const NODES_TOML: &str = include_str!("../../tests/data/plan/nodes.toml");

fn statement_for(name: &str, version: &str, bytes: &[u8]) -> ComponentStatement {
    let mut statement = ComponentStatement::new(name, version, bytes, None);
    statement.predicate.issued_at = Utc.with_ymd_and_hms(2029, 6, 1, 0, 0, 0).unwrap();
    statement
}

/// A statement for [`COMPONENT`] as `fuzzed@1.2.3`, signed by two release keys.
pub static STATEMENT: LazyLock<Envelope> = LazyLock::new(|| {
    statement_for("fuzzed", "1.2.3", COMPONENT).sign(&[&KEYS.release[0], &KEYS.release[1]])
});

fn manifest_document() -> ManifestDocument {
    let mut doc =
        ManifestDocument::new("r1", 1, Utc.with_ymd_and_hms(2100, 1, 1, 0, 0, 0).unwrap());
    doc.issued_at = Utc.with_ymd_and_hms(2029, 6, 1, 0, 0, 0).unwrap();
    doc.add_component("app", "1.0.0", "app.wasm", COMPONENT);
    doc.add_component("sidecar", "0.3.1-rc.1", "bin/sidecar.wasm", b"sidecar");
    doc
}

/// A manifest of release `r1` signed by two release keys.
pub static MANIFEST: LazyLock<BootManifest> = LazyLock::new(|| {
    let envelope = manifest_document().sign(&[&KEYS.release[0], &KEYS.release[1]]);
    BootManifest::from_bytes(&envelope.to_json(), "/fuzz/release").expect("the manifest parses")
});

/// `flags` then `body`.
fn with_flags(flags: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(body);
    out
}

/// The flags byte asking a target to sign the payload again with the two
/// first release keys (bit 0, bits 2 and 3, no offset).
const RESIGN_RELEASE: u8 = 0b0000_1101;
/// The flags byte asking a target to sign the payload again with the first
/// root key (bit 0, bit 2, an offset of 3).
const RESIGN_ROOT: u8 = 0b0110_0101;

/// The seeds of `target`, by file name.
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>| out.push((name.to_string(), bytes));
    match target {
        "dsse" => {
            let valid = STATEMENT.to_json();
            add("valid", with_flags(0, &valid));
            add("truncated", with_flags(0, &valid[..valid.len() / 2]));
            let statement = statement_for("fuzzed", "1.2.3", COMPONENT);
            add(
                "one-signer",
                with_flags(0, &statement.sign(&[&KEYS.release[0]]).to_json()),
            );
            add(
                "stranger",
                with_flags(
                    0,
                    &statement
                        .sign(&[&KEYS.stranger, &KEYS.release[2]])
                        .to_json(),
                ),
            );
            add(
                "resign-unsigned",
                with_flags(RESIGN_RELEASE, &statement.sign(&[]).to_json()),
            );
            let mut mislabelled = statement.sign(&[&KEYS.release[1]]);
            let forged = statement.sign(&[&KEYS.release[0]]).signatures()[0]
                .sig
                .clone();
            mislabelled.push_signature(EnvelopeSignature {
                keyid: KEYS.release[2].id().to_string(),
                sig: forged,
            });
            add("mislabelled", with_flags(0, &mislabelled.to_json()));
            let other = statement_for("other", "2.0.0", b"\0asm\x01\0\0\0");
            add(
                "wrong-digest",
                with_flags(
                    0,
                    &other.sign(&[&KEYS.release[0], &KEYS.release[1]]).to_json(),
                ),
            );
            let mut expired = statement.clone();
            expired.predicate.expires_at =
                Some(Utc.with_ymd_and_hms(2029, 12, 1, 0, 0, 0).unwrap());
            add(
                "expired",
                with_flags(RESIGN_RELEASE, &expired.sign(&[]).to_json()),
            );
            add("anchor-type", with_flags(0, &fixtures::anchor_bytes()));
        }
        "anchor" => {
            add("valid", with_flags(0, &fixtures::anchor_bytes()));
            let mut v2 = fixtures::anchor_document(2).envelope();
            v2.sign(&KEYS.root[1]).sign(&KEYS.root[0]);
            add("successor", with_flags(0, &v2.to_json()));
            add(
                "unsigned",
                with_flags(0, &fixtures::anchor_document(1).envelope().to_json()),
            );
            let mut zero = fixtures::anchor_document(1);
            zero.thresholds.root = 0;
            add(
                "threshold-zero",
                with_flags(RESIGN_ROOT, &zero.envelope().to_json()),
            );
            let mut twice = fixtures::anchor_document(1);
            twice.add_key(forgeone::boot::Role::Release, KEYS.root[0].public());
            add(
                "key-twice",
                with_flags(RESIGN_ROOT, &twice.envelope().to_json()),
            );
            let mut weak = fixtures::anchor_document(1);
            weak.keys[4].public_key = "00".repeat(32);
            add(
                "weak-key",
                with_flags(RESIGN_ROOT, &weak.envelope().to_json()),
            );
            let mut expired = fixtures::anchor_document(1);
            expired.expires_at = Utc.with_ymd_and_hms(2029, 6, 1, 0, 0, 0).unwrap();
            add(
                "expired",
                with_flags(RESIGN_ROOT, &expired.envelope().to_json()),
            );
            let mut rotated = fixtures::anchor_document(3);
            rotated.keys.remove(0);
            let mut rotated = rotated.envelope();
            rotated.sign(&KEYS.root[1]);
            add("rotation-new-key-only", with_flags(0, &rotated.to_json()));
        }
        "manifest" => {
            add("valid", with_flags(0, &MANIFEST.envelope().to_json()));
            let doc = manifest_document();
            add(
                "one-signer",
                with_flags(0, &doc.sign(&[&KEYS.release[0]]).to_json()),
            );
            add(
                "resign",
                with_flags(RESIGN_RELEASE, &doc.sign(&[]).to_json()),
            );
            let edits: [(&str, fn(&mut ManifestDocument)); 6] = [
                ("parent-path", |d| {
                    d.components[0].path = "../../etc/passwd".into()
                }),
                ("absolute-path", |d| {
                    d.components[0].path = "/etc/passwd".into()
                }),
                ("mixed-release", |d| d.components[1].release = "r2".into()),
                ("bad-version", |d| d.components[0].version = "up1".into()),
                ("duplicate", |d| d.components[1].name = "app".into()),
                ("version-zero", |d| d.version = 0),
            ];
            for (name, edit) in edits {
                let mut doc = manifest_document();
                edit(&mut doc);
                add(name, with_flags(RESIGN_RELEASE, &doc.sign(&[]).to_json()));
            }
        }
        "deployment" => {
            add("plan-example", DEPLOYMENT_TOML.as_bytes().to_vec());
            add("minimal", MINIMAL_DEPLOYMENT.as_bytes().to_vec());
            add("manifest-mode", MANIFEST_DEPLOYMENT.as_bytes().to_vec());
            add(
                "typo",
                MINIMAL_DEPLOYMENT
                    .replace("priority", "priorty")
                    .into_bytes(),
            );
            add(
                "bad-unit",
                MINIMAL_DEPLOYMENT
                    .replace("64MiB", "64 parsecs")
                    .into_bytes(),
            );
            add(
                "unknown-affinity",
                format!("{MINIMAL_DEPLOYMENT}constraints.affinity = [\"nobody\"]\n").into_bytes(),
            );
        }
        "nodes" => {
            add("plan-example", NODES_TOML.as_bytes().to_vec());
            add("one-node", ONE_NODE.as_bytes().to_vec());
            add("count-zero", format!("{ONE_NODE}count = 0\n").into_bytes());
            add(
                "bad-trust",
                ONE_NODE.replace("\"high\"", "\"ultra\"").into_bytes(),
            );
        }
        "audit" => {
            let log = sample_log();
            let template = crate::audit::template_of(&log);
            add("raw", with_flags(0b0000, &log));
            add("raw-pinned", with_flags(0b0010, &log));
            add("raw-reopened", with_flags(0b1000, &log));
            add("torn-reopened", with_flags(0b1010, &log[..log.len() - 17]));
            let mut edited = log.clone();
            if let Some(i) = edited.iter().position(|&b| b == b'k') {
                edited[i] = b'K';
            }
            add("edited", with_flags(0b0010, &edited));
            add("chained", with_flags(0b0011, &template));
            add("chained-reopened", with_flags(0b1011, &template));
            let text = String::from_utf8_lossy(&template);
            let mut lines: Vec<String> = text.lines().map(|l| format!("{l}\n")).collect();
            lines.pop();
            add(
                "chained-unsealed",
                with_flags(0b0001, lines.concat().as_bytes()),
            );
            lines.swap(1, 2);
            add(
                "chained-reordered",
                with_flags(0b0101, lines.concat().as_bytes()),
            );
        }
        "component" => {
            for (i, len) in [64usize, 256, 1024, 4096].into_iter().enumerate() {
                add(&format!("bytes-{len}"), pseudo_random(i as u64, len));
            }
        }
        "component_bytes" => {
            for (name, wat) in MODULES {
                let module = wat::parse_str(wat).expect("a seed module parses");
                add(name, crate::wasm::wrap(&module));
            }
            for (name, wat) in FIXTURES {
                add(name, wat::parse_str(wat).expect("a fixture parses"));
            }
        }
        other => panic!("no seeds for target {other}"),
    }
    out
}

/// Writes the seeds of `target` into `$FORGEONE_FUZZ_WRITE_SEEDS/<target>/`
/// and exits, when that variable is set; does nothing otherwise.
pub fn write_if_asked(target: &str) {
    let Some(root) = std::env::var_os("FORGEONE_FUZZ_WRITE_SEEDS") else {
        return;
    };
    let dir = Path::new(&root).join(target);
    std::fs::create_dir_all(&dir).expect("the corpus directory is created");
    let seeds = seeds(target);
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("a seed is written");
    }
    eprintln!("wrote {} seeds to {}", seeds.len(), dir.display());
    std::process::exit(0);
}

/// `len` bytes that look random, the same in every run.
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = 0u64;
    while out.len() < len {
        let label = format!("forgeone-fuzz/bytes/{seed}/{block}");
        out.extend_from_slice(forgeone::boot::Digest::of(label.as_bytes()).as_bytes());
        block += 1;
    }
    out.truncate(len);
    out
}

/// A real log: a runtime that ran a few of the seed components, closed.
fn sample_log() -> Vec<u8> {
    let mut harness = crate::wasm::Harness::new();
    for (_, wat) in &MODULES[..3] {
        let module = wat::parse_str(wat).expect("a seed module parses");
        harness
            .run("seed", &crate::wasm::wrap(&module))
            .expect("a seed component runs");
    }
    harness.close_log()
}

const MINIMAL_DEPLOYMENT: &str = r#"boot = "signatures"

[[tenant]]
name = "acme"
max_priority = "high"

[[workload]]
name = "api"
component = "api.wasm"
priority = "high"
tenant = "acme"
resources = { fuel = "5M", memory = "64MiB", timeout = "5s" }
"#;

const MANIFEST_DEPLOYMENT: &str = r#"boot = "manifest"
boot_manifest = "release/boot.json"
boot_policy = "degraded"
allow_recovery_downgrade = true

[supervision]
backoff = "1s"
max_backoff = "1m"
healthy_after = "5m"
quarantine_after = 3

[node]
id = "edge"
region = "eu-west"
zone = "eu-west-1a"
trust = "high"
hardware = ["x86_64"]
network = ["public"]
labels = { disk = "ssd" }
memory = "2GiB"

[[tenant]]
name = "acme"
max_priority = "critical"
max_containers = 4
cpu_share = 0.5
allowed_locations = ["eu-*"]
isolation = "signer"
trust = "high"
network = true

[[workload]]
name = "api"
component = "release/app.wasm"
priority = "critical"
tenant = "acme"
principal = "svc-api"
restart = "on-failure"
worker = 0
labels = { app = "api" }
resources = { fuel = "50M", memory = "64MiB", cpu = 0.5, timeout = "5s" }
constraints.location = ["eu-west-*", "eu-central-*"]
constraints.labels = ["disk in (ssd, nvme)"]
constraints.anti_affinity = ["app=batch"]
constraints.preferred = [{ location = "eu-west-1a", weight = 50 }]
capabilities = { dirs = ["data::/data:rw"], env = { RUST_LOG = "info" }, args = ["--port", "8080"], network = true }
"#;

const ONE_NODE: &str = r#"[[node]]
id = "solo"
region = "eu-west"
zone = "eu-west-1a"
trust = "high"
hardware = ["x86_64", "gpu"]
network = ["public"]
labels = { disk = "ssd" }
capacity = { cpu = 4, memory = "8GiB", storage = "100GiB", containers = 10 }
used = { cpu = 1, memory = "1GiB" }
"#;

/// Hand-written core modules for the component wrapper: a clean exit, a
/// greeting on stdout, an endless loop, a memory bomb, a kernel log line,
/// an exit code, the identity call and an oversized random request.
pub const MODULES: [(&str, &str); 8] = [
    (
        "ok",
        r#"(module (func (export "run") (result i32) i32.const 0))"#,
    ),
    (
        "hello",
        r#"(module
          (import "env" "memory" (memory 1))
          (import "env" "write" (func $write (param i32 i32 i32 i32)))
          (import "env" "get-stdout" (func $stdout (result i32)))
          (data (i32.const 1024) "hello from the fuzzer\n")
          (func (export "run") (result i32)
            (call $write (call $stdout) (i32.const 1024) (i32.const 22) (i32.const 16))
            i32.const 0))"#,
    ),
    (
        "log",
        r#"(module
          (import "env" "memory" (memory 1))
          (import "env" "log" (func $log (param i32 i32 i32 i32 i32)))
          (data (i32.const 1024) "a log line\1b[31m")
          (data (i32.const 2048) "\00\04\00\00\04\00\00\00\00\04\00\00\04\00\00\00")
          (func (export "run") (result i32)
            (call $log (i32.const 2) (i32.const 1024) (i32.const 15) (i32.const 2048) (i32.const 1))
            i32.const 0))"#,
    ),
    (
        "loop",
        r#"(module (func (export "run") (result i32) (loop $l (br $l)) i32.const 0))"#,
    ),
    (
        "grow",
        r#"(module (memory 1)
          (func (export "run") (result i32)
            (drop (memory.grow (i32.const 1000)))
            (memory.size)))"#,
    ),
    (
        "exit",
        r#"(module
          (import "env" "exit" (func $exit (param i32)))
          (func (export "run") (result i32) (call $exit (i32.const 1)) i32.const 0))"#,
    ),
    (
        "identity",
        r#"(module
          (import "env" "identity" (func $id (param i32)))
          (import "env" "args" (func $args (param i32)))
          (import "env" "now" (func $now (result i64)))
          (func (export "run") (result i32)
            (call $id (i32.const 64))
            (call $args (i32.const 512))
            (drop (call $now))
            i32.const 0))"#,
    ),
    (
        "random",
        r#"(module
          (import "env" "random-bytes" (func $bytes (param i64 i32)))
          (import "env" "random-u64" (func $u64 (result i64)))
          (func (export "run") (result i32)
            (drop (call $u64))
            (call $bytes (i64.const 0x7fffffffffff) (i32.const 64))
            i32.const 0))"#,
    ),
];

/// The integration tests' hand-written components (all but the one that
/// blocks in a host call until its deadline: too slow to mutate).
const FIXTURES: [(&str, &str); 5] = [
    (
        "ansi-output",
        include_str!("../../tests/fixtures/ansi-output.wat"),
    ),
    (
        "deep-recursion",
        include_str!("../../tests/fixtures/deep-recursion.wat"),
    ),
    (
        "missing-import",
        include_str!("../../tests/fixtures/missing-import.wat"),
    ),
    (
        "stdout-flood",
        include_str!("../../tests/fixtures/stdout-flood.wat"),
    ),
    (
        "table-bomb",
        include_str!("../../tests/fixtures/table-bomb.wat"),
    ),
];
