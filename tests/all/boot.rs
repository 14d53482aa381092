//! Trust-anchor boot: verified boots, every refusal of the bad-input
//! list (each with its precise reason, an audit record, and nothing handed
//! to the runtime), recovery, degraded and fail-closed boots, try counters,
//! rotation and boot quotes.
//!
//! The fixtures are real: the `hello` sample built for wasm32-wasip2 with a
//! custom section appended (so that flipping a byte in a custom section is
//! tested), real Ed25519 keys, real files in a temporary directory, a real
//! audit log.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{Duration, Utc};
use forgeone::SigningKey;
use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::{
    AnchorDocument, BootBuilder, BootContext, BootError, ComponentCheck, Envelope,
    ManifestDocument, Role, TrustAnchor, VerifiedComponent,
};
use serde_json::Value;

use crate::guests;

mod anchor;
mod downgrade;

mod happy;
mod lookup;
mod policy;
mod refusals;
mod signatures;
mod sources;

/// Appends a custom section `name` holding `payload` (a custom section may
/// follow any section of a component; its bytes are covered by the digest
/// like every other byte). Written by hand: it is five lines of the binary
/// format, and the encoder crates are not test dependencies.
pub fn with_custom_section(mut wasm: Vec<u8>, name: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = leb128(name.len());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    wasm.push(0);
    wasm.extend(leb128(body.len()));
    wasm.extend(body);
    wasm
}

fn leb128(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// The `hello` sample with a 4 KiB custom section `forgeone.test` appended.
pub fn hello_bytes() -> Vec<u8> {
    let hello = std::fs::read(guests::HELLO).expect("the hello guest is built");
    with_custom_section(hello, "forgeone.test", &[0x5a; 4096])
}

/// A second, distinct component of the same size (another custom payload).
pub fn other_bytes() -> Vec<u8> {
    let hello = std::fs::read(guests::HELLO).expect("the hello guest is built");
    with_custom_section(hello, "forgeone.test", &[0xa5; 4096])
}

/// A test world: keys, an anchor, component files and a state directory in
/// a temporary directory.
pub struct World {
    pub dir: tempfile::TempDir,
    pub root: SigningKey,
    pub release: SigningKey,
    pub hello: Vec<u8>,
    counter: AtomicU32,
}

/// The outcome of a boot plus the `boot.*` audit records it wrote.
pub struct Booted {
    pub result: Result<BootContext, BootError>,
    pub records: Vec<Value>,
}

impl Booted {
    pub fn ctx(&self) -> &BootContext {
        match &self.result {
            Ok(ctx) => ctx,
            Err(e) => panic!("boot failed: {e}"),
        }
    }

    pub fn err(&self) -> &BootError {
        match &self.result {
            Ok(ctx) => panic!(
                "boot succeeded ({:?}, {:?}) where a refusal was expected",
                ctx.outcome, ctx.integrity_status
            ),
            Err(e) => e,
        }
    }
}

impl World {
    pub fn new() -> World {
        let world = World {
            dir: tempfile::tempdir().unwrap(),
            root: SigningKey::generate(),
            release: SigningKey::generate(),
            hello: hello_bytes(),
            counter: AtomicU32::new(0),
        };
        world.write("hello.wasm", &world.hello);
        world
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn state(&self) -> PathBuf {
        self.path("state")
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn next(&self) -> u32 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// Root and release key, thresholds 1, valid for a year.
    pub fn anchor_doc(&self) -> AnchorDocument {
        let mut doc = AnchorDocument::new(Utc::now() + Duration::days(365));
        doc.add_key(Role::Root, self.root.public())
            .add_key(Role::Release, self.release.public());
        doc.metadata.insert("owner".into(), "tests".into());
        doc
    }

    /// Writes `doc` signed by `signers` and returns its path.
    pub fn write_anchor(&self, doc: &AnchorDocument, signers: &[&SigningKey]) -> PathBuf {
        let mut envelope = doc.envelope();
        for key in signers {
            envelope.sign(key);
        }
        self.write(&format!("anchor-{}.json", self.next()), &envelope.to_json())
    }

    /// The standard anchor, self-signed by the root key.
    pub fn anchor(&self) -> PathBuf {
        self.write_anchor(&self.anchor_doc(), &[&self.root])
    }

    /// A manifest document of release `2026.1` listing `(name, version,
    /// path)` entries, digests and sizes taken from the files.
    pub fn manifest_doc(&self, version: u64, entries: &[(&str, &str, &str)]) -> ManifestDocument {
        let mut doc = ManifestDocument::new("2026.1", version, Utc::now() + Duration::days(30));
        for (name, component_version, path) in entries {
            let bytes = std::fs::read(self.path(path)).unwrap();
            doc.add_component(*name, *component_version, *path, &bytes);
        }
        doc
    }

    /// Writes `doc` signed by `signers`.
    pub fn write_manifest(&self, doc: &ManifestDocument, signers: &[&SigningKey]) -> PathBuf {
        let envelope = doc.sign(signers);
        self.write(
            &format!("manifest-{}.json", self.next()),
            &envelope.to_json(),
        )
    }

    /// A manifest v`version` with hello 1.0.0, signed by the release key.
    pub fn manifest(&self, version: u64) -> PathBuf {
        let doc = self.manifest_doc(version, &[("hello", "1.0.0", "hello.wasm")]);
        self.write_manifest(&doc, &[&self.release])
    }

    /// Boots from files with an audit log; `configure` sets the rest.
    pub fn boot(
        &self,
        anchor: &Path,
        manifest: &Path,
        configure: impl FnOnce(&mut BootBuilder),
    ) -> Booted {
        let log_path = self.path(&format!("audit-{}.jsonl", self.next()));
        let log = AuditLog::open(&log_path, SigningKey::generate(), &AuditConfig::new()).unwrap();
        let mut builder = BootBuilder::from_files(anchor, manifest);
        builder.audit(log.clone());
        configure(&mut builder);
        let result = builder.run();
        drop(builder);
        log.close().unwrap();
        Booted {
            result,
            records: boot_records(&log_path),
        }
    }

    /// Verifies a per-component signature with an audit log.
    pub fn check(
        &self,
        anchor: &TrustAnchor,
        bytes: Vec<u8>,
        envelope: &Envelope,
        configure: impl FnOnce(&mut ComponentCheck<'_>),
    ) -> (Result<VerifiedComponent, BootError>, Vec<Value>) {
        let log_path = self.path(&format!("audit-{}.jsonl", self.next()));
        let log = AuditLog::open(&log_path, SigningKey::generate(), &AuditConfig::new()).unwrap();
        let mut check = ComponentCheck::new(anchor);
        check.audit(log.clone());
        configure(&mut check);
        let result = check.verify(bytes, envelope);
        drop(check);
        log.close().unwrap();
        (result, boot_records(&log_path))
    }
}

/// The `boot.*` records of an audit log.
pub fn boot_records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|r| r["kind"].as_str().is_some_and(|k| k.starts_with("boot.")))
        .collect()
}

/// The kinds of `records`, in order.
pub fn kinds(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect()
}

/// The first record of `kind`; panics listing the kinds when there is none.
pub fn record<'a>(records: &'a [Value], kind: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} record among {:?}", kinds(records)))
}

/// Asserts a `boot.component.refused` record with `code` exists and
/// returns it.
pub fn refused<'a>(records: &'a [Value], code: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["kind"] == "boot.component.refused" && r["details"]["code"] == code)
        .unwrap_or_else(|| {
            panic!(
                "no boot.component.refused record with code {code}: {:#?}",
                records
            )
        })
}

/// Asserts a compromised boot in which nothing reaches the runtime.
pub fn assert_nothing_runs(ctx: &BootContext) {
    assert_eq!(ctx.outcome, forgeone::boot::BootOutcome::Compromised);
    assert!(
        matches!(
            ctx.integrity_status,
            forgeone::boot::IntegrityStatus::Compromised(_)
        ),
        "{:?}",
        ctx.integrity_status
    );
    assert!(ctx.components.is_empty(), "{:?}", ctx.components);
}

/// Flips one bit of byte `at`.
pub fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at] ^= 0x01;
    out
}
