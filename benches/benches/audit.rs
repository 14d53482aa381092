//! P8 (first half): audit append throughput, beside the same bytes written
//! to a buffered file with no hashing, chaining or signing, in the same run.
//!
//! Run with `cargo bench -p forgeone-benches --bench audit`.

use std::io::Write as _;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use forgeone::SigningKey;
use forgeone::audit::{Actor, AuditConfig, AuditEvent, AuditLog, Entry, Untrusted};

#[derive(Clone)]
struct Output(Untrusted);
impl AuditEvent for Output {
    fn kind(&self) -> &'static str {
        "container.output"
    }
    fn details(&self) -> serde_json::Value {
        serde_json::json!({ "stream": "stdout", "line": self.0 })
    }
}

fn entry() -> Entry {
    Entry::new(&Output(Untrusted::new(
        "request served in 4 ms (status 200)",
    )))
    .actor(Actor::host())
    .container("6f1c0e52-8f1b-4d47-9a53-0c2b5c7d9e11")
    .component("af13c4d2e0b94a3f8d1c7e6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f")
}

fn bench(c: &mut Criterion) {
    const BATCH: u64 = 1000;
    let mut group = c.benchmark_group("audit-append");
    group.throughput(Throughput::Elements(BATCH));

    // Baseline: the same-sized line, pre-encoded, into a BufWriter.
    let dir = tempfile::tempdir().unwrap();
    let line = {
        let probe = dir.path().join("probe.jsonl");
        let log = AuditLog::open(&probe, SigningKey::generate(), &AuditConfig::new()).unwrap();
        log.append(entry()).unwrap();
        log.close().unwrap();
        std::fs::read_to_string(&probe)
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .to_string()
            + "\n"
    };
    group.bench_function("baseline: buffered write of the same bytes", |b| {
        let mut file =
            std::io::BufWriter::new(std::fs::File::create(dir.path().join("raw.jsonl")).unwrap());
        b.iter(|| {
            for _ in 0..BATCH {
                file.write_all(line.as_bytes()).unwrap();
            }
        });
        file.flush().unwrap();
    });

    // Criterion calls each routine several times (warm-up, then samples);
    // every call gets a new, empty log, removed afterwards. Reopening one
    // log would measure opening (it checks the whole chain) as it grows.
    let mut runs = 0u32;
    for threads in [1usize, 4] {
        group.bench_with_input(
            BenchmarkId::new("AuditLog::append (every-batch)", threads),
            &threads,
            |b, &threads| {
                runs += 1;
                let path = dir.path().join(format!("a{threads}-{runs}.jsonl"));
                let log =
                    AuditLog::open(&path, SigningKey::generate(), &AuditConfig::new()).unwrap();
                b.iter(|| {
                    std::thread::scope(|s| {
                        for _ in 0..threads {
                            let log = log.clone();
                            s.spawn(move || {
                                for _ in 0..BATCH / threads as u64 {
                                    log.append(entry()).unwrap();
                                }
                            });
                        }
                    });
                });
                log.close().unwrap();
                std::fs::remove_file(&path).unwrap();
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
