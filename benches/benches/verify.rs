//! What verifying a signed component costs beside hashing it: `blake3` of
//! the bytes in memory (the floor), and in the same run our two verify
//! paths: in memory (blake3 + DSSE/Ed25519 + statement checks) and from a
//! file (read once into the buffer handed to the runtime, hashed while read,
//! then the same checks). Two sizes: 64 KiB (a component header and a custom
//! section) and ~20 MiB (the `hello` sample with a 20 MiB custom section).
//! Beside them: one Ed25519 `verify_strict` (the fixed cost of a
//! signature), and a naive `std::fs::read` + `blake3` of the same file.
//!
//! Run with `cargo bench -p forgeone-benches --bench verify`.

use std::path::PathBuf;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use forgeone::SigningKey;
use forgeone::boot::{ComponentCheck, ComponentStatement, verify_component};

/// Appends a custom section (id 0) `name` with `len` bytes of payload.
fn with_custom_section(mut wasm: Vec<u8>, name: &str, len: usize) -> Vec<u8> {
    let body_len = leb128(name.len()).len() + name.len() + len;
    wasm.push(0);
    wasm.extend(leb128(body_len));
    wasm.extend(leb128(name.len()));
    wasm.extend_from_slice(name.as_bytes());
    wasm.extend((0..len).map(|i| (i * 31 % 251) as u8));
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

struct Case {
    label: &'static str,
    bytes: Arc<[u8]>,
    path: PathBuf,
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let root = SigningKey::generate();
    let release = SigningKey::generate();
    let anchor = forgeone_benches::anchor(&root, &release);

    let small = {
        let header = b"\0asm\x0d\0\x01\0".to_vec();
        // 8 header bytes + 1 id + 3 size bytes + 1 name length + 5 name bytes.
        with_custom_section(header, "bench", 64 * 1024 - 18)
    };
    assert_eq!(small.len(), 64 * 1024);
    let large = with_custom_section(forgeone_benches::sample("hello"), "bench", 20 * 1024 * 1024);
    let cases: Vec<Case> = [("64KiB", small), ("20MiB", large)]
        .into_iter()
        .map(|(label, bytes)| {
            let path = dir.path().join(format!("{label}.wasm"));
            std::fs::write(&path, &bytes).unwrap();
            let statement = ComponentStatement::new(label, "1.0.0", &bytes, None);
            let mut sig = path.clone().into_os_string();
            sig.push(".sig.json");
            std::fs::write(sig, statement.sign(&[&release]).to_json()).unwrap();
            Case {
                label,
                bytes: bytes.into(),
                path,
            }
        })
        .collect();

    let mut group = c.benchmark_group("verify");
    // The fixed cost: one Ed25519 `verify_strict` over a statement's PAE.
    {
        let statement = ComponentStatement::new("x", "1.0.0", b"\0asm\x0d\0\x01\0", None);
        let envelope = statement.sign(&[&release]);
        let pae = envelope.pae();
        let sig = envelope.signatures()[0].sig.clone();
        group.bench_function("ed25519_verify_strict", |b| {
            b.iter(|| release.public().verify(&pae, &sig).unwrap())
        });
    }
    for case in &cases {
        group.throughput(Throughput::Bytes(case.bytes.len() as u64));
        if case.bytes.len() > 1024 * 1024 {
            group.sample_size(30);
        } else {
            group.sample_size(100);
        }
        let envelope = forgeone::boot::Envelope::from_file(
            format!("{}.sig.json", case.path.display()),
            1 << 16,
        )
        .unwrap();
        group.bench_with_input(
            BenchmarkId::new("blake3", case.label),
            &case.bytes,
            |b, bytes| b.iter(|| blake3::hash(bytes)),
        );
        group.bench_with_input(
            BenchmarkId::new("verify_memory", case.label),
            &case.bytes,
            |b, bytes| b.iter(|| verify_component(bytes.clone(), &envelope, &anchor).unwrap()),
        );
        group.bench_with_input(
            BenchmarkId::new("verify_file", case.label),
            &case.path,
            |b, path| b.iter(|| ComponentCheck::new(&anchor).verify_file(path).unwrap()),
        );
        group.bench_with_input(
            BenchmarkId::new("read_then_blake3", case.label),
            &case.path,
            |b, path| b.iter(|| blake3::hash(&std::fs::read(path).unwrap())),
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
