//! The WASI test suite, run under the runtime: the 72 programs of
//! `tests/conformance/wasi-testsuite` (vendored; its README gives the
//! origin, licence and format), each with the arguments, environment and
//! preopened directories its `NAME.json` asks for, each directory a fresh
//! copy of its fixture. A test passes when its exit code is the expected
//! one and, where the suite gives one, its stdout is byte for byte the
//! expected text.
//!
//! [`KNOWN_FAILURES`] lists the five that fail under `wasmtime run` 48
//! too, each with the reason. Any other failure fails this test, and so
//! does a known failure that passes (remove it from the list: the list
//! stays honest).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use forgeone::SigningKey;
use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::VerifiedComponent;
use forgeone::identity::{IdentityContext, TrustLevel, TrustVector};
use forgeone::runtime::{ByteSink, ContainerConfig, Runtime, RuntimeConfig};
use serde_json::Value as Json;

/// The vendored suite.
const SUITE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/conformance/wasi-testsuite");

/// The tests that fail under `wasmtime run` 48.0.8 on the same components,
/// and why (see the suite's README).
const KNOWN_FAILURES: &[(&str, &str)] = &[
    (
        "rust/remove_directory_trailing_slashes",
        "EINVAL where the test expects ENOTDIR, on wasmtime's native preview-1 path too",
    ),
    (
        "assemblyscript/args_get-multiple-arguments",
        "an assertion inside the preview-1 component adapter",
    ),
    (
        "assemblyscript/environ_get-multiple-variables",
        "an assertion inside the preview-1 component adapter",
    ),
    (
        "assemblyscript/proc_exit-failure",
        "the adapter turns exit code 33 into 1",
    ),
    (
        "assemblyscript/fd_write-to-invalid-fd",
        "the adapter returns a different errno",
    ),
];

/// One test program and what it expects.
#[derive(Debug)]
struct Case {
    /// `LANG/NAME`.
    name: String,
    wasm: PathBuf,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    dirs: Vec<String>,
    exit_code: i32,
    stdout: Option<String>,
}

/// Every test of the suite, sorted by name.
fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for lang in ["assemblyscript", "c", "rust"] {
        let dir = Path::new(SUITE).join(lang).join("wasm32-wasip1");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let wasm = entry.unwrap().path();
            if wasm.extension().and_then(|e| e.to_str()) != Some("wasm") {
                continue;
            }
            let stem = wasm.file_stem().unwrap().to_str().unwrap().to_string();
            let spec: Json = match std::fs::read_to_string(wasm.with_extension("json")) {
                Ok(text) => serde_json::from_str(&text).unwrap(),
                Err(_) => Json::Null,
            };
            let strings = |key: &str| -> Vec<String> {
                spec[key]
                    .as_array()
                    .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default()
            };
            cases.push(Case {
                name: format!("{lang}/{stem}"),
                args: strings("args"),
                dirs: strings("dirs"),
                env: spec["env"]
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                            .collect()
                    })
                    .unwrap_or_default(),
                exit_code: spec["exit_code"].as_i64().map_or(0, |c| c as i32),
                stdout: spec["stdout"].as_str().map(str::to_string),
                wasm,
            });
        }
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

/// Copies the fixture directory `from` to `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A writer collecting the guest's stdout.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<u8>>>);

impl tokio::io::AsyncWrite for Collect {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Launches `case` with what it asks for; its fixture copies live in
/// `scratch`. The returned writer collects its stdout.
fn launch(runtime: &Runtime, case: &Case, scratch: &Path) -> (uuid::Uuid, Collect) {
    let stem = case.wasm.file_stem().unwrap().to_str().unwrap();
    let bytes = std::fs::read(&case.wasm).unwrap();
    let mut config = ContainerConfig::new(VerifiedComponent::unsigned(stem, bytes));
    let stdout = Collect::default();
    config.name(stem).stdout(ByteSink::new(stdout.clone()));
    for arg in &case.args {
        config.arg(arg);
    }
    for (k, v) in &case.env {
        config.env(k, v);
    }
    // Preopened read-write under the same (relative) name, as
    // `wasmtime run --dir NAME` does.
    for dir in &case.dirs {
        let copy = scratch.join(dir);
        copy_dir(&case.wasm.parent().unwrap().join(dir), &copy);
        config.dir(copy, dir.as_str(), false);
    }
    let identity = IdentityContext::new("wasi", "testsuite", TrustVector::new(TrustLevel::Low, 0));
    (runtime.launch_container(config, identity).unwrap(), stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wasi_testsuite_passes_as_under_wasmtime() {
    let cases = cases();
    assert_eq!(cases.len(), 72, "the suite has 72 programs");
    for (name, _) in KNOWN_FAILURES {
        assert!(
            cases.iter().any(|c| c.name == *name),
            "known failure {name} is not in the suite"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(
        dir.path().join("audit.jsonl"),
        SigningKey::generate(),
        &AuditConfig::new(),
    )
    .unwrap();
    let mut config = RuntimeConfig::new();
    config.allow_unsigned(true);
    // Compiled once per build of the tests, not once per run.
    config.cache_dir(Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance-cache"));
    let runtime = Runtime::new(config, log).unwrap();

    // All at once: the runtime compiles and runs them in parallel.
    let launched: Vec<_> = cases
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let scratch = dir.path().join(i.to_string());
            launch(&runtime, case, &scratch)
        })
        .collect();
    let mut unexpected = Vec::new();
    let mut now_passing = Vec::new();
    for (case, (id, stdout)) in cases.iter().zip(launched) {
        let outcome = runtime.wait(id).await.unwrap();
        let stdout = stdout.0.lock().unwrap().clone();
        let mut problems = Vec::new();
        match outcome.exit_code() {
            Some(code) if code == case.exit_code => {}
            _ => problems.push(format!(
                "expected exit code {}, got {:?}",
                case.exit_code, outcome.end
            )),
        }
        if let Some(expected) = &case.stdout
            && stdout != expected.as_bytes()
        {
            problems.push(format!(
                "stdout {:?}, expected {expected:?}",
                String::from_utf8_lossy(&stdout)
            ));
        }
        let known = KNOWN_FAILURES.iter().any(|(name, _)| *name == case.name);
        match (problems.is_empty(), known) {
            (true, true) => now_passing.push(case.name.clone()),
            (false, false) => unexpected.push(format!("{}: {}", case.name, problems.join("; "))),
            _ => {}
        }
    }
    assert!(
        unexpected.is_empty(),
        "{} WASI tests failed:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    assert!(
        now_passing.is_empty(),
        "known failures that now pass (remove them from KNOWN_FAILURES): {now_passing:?}"
    );
}
