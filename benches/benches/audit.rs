//! P8 (first half): audit append throughput, beside the same bytes written
//! to a buffered file with no hashing, chaining or signing, in the same run.
//!
//! P11: the cost of opening a log with 1 GiB of older segments (built once
//! per run in a temporary directory, 64 MiB segments), beside the cost of
//! what every open did before segments and checkpoints were used to bound
//! it: one pass over the same bytes that reads, parses, re-hashes and
//! chain-checks every record (`audit::export` of the same bytes, as one
//! file, to a sink). Also the new open of those same bytes as one legacy
//! file (no segments): the checkpoint alone bounds it.
//!
//! Run with `cargo bench -p forgeone-benches --bench audit` (add `-- open`
//! for P11 only; building the 1 GiB takes a few seconds, and 2 GiB of
//! temporary disk).

use std::io::Write as _;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use forgeone::SigningKey;
use forgeone::audit::{
    Actor, AuditConfig, AuditEvent, AuditLog, Entry, ExportFilter, ExportFormat, Untrusted, export,
    list_segments,
};

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

/// Bytes of sealed segments the open bench builds.
const OLDER_BYTES: u64 = 1 << 30;

fn open_bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = SigningKey::generate();
    let copy = || SigningKey::from_pem(&key.to_pem()).unwrap();
    let mut config = AuditConfig::new();
    config.segment_size(64 * 1024 * 1024);
    let built = std::time::Instant::now();
    let log = AuditLog::open(&path, copy(), &config).unwrap();
    let sealed = || -> u64 {
        list_segments(&path)
            .unwrap()
            .iter()
            .map(|s| std::fs::metadata(&s.path).unwrap().len())
            .sum()
    };
    while sealed() < OLDER_BYTES {
        for _ in 0..50_000 {
            log.append(entry()).unwrap();
        }
        log.flush().unwrap();
    }
    // A live tail in the active segment, as a running host has.
    let summary = log.close().unwrap();
    let segments = list_segments(&path).unwrap();
    let older = sealed();
    eprintln!(
        "built {} records: {} sealed segments, {:.2} GiB, plus the active file, in {:.1?}",
        summary.last_seq,
        segments.len(),
        older as f64 / (1u64 << 30) as f64,
        built.elapsed()
    );
    // The same bytes as one file: a log as it was before segments.
    let whole = dir.path().join("whole.jsonl");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&whole).unwrap());
        for file in segments
            .iter()
            .map(|s| s.path.clone())
            .chain([path.clone()])
        {
            std::io::copy(&mut std::fs::File::open(file).unwrap(), &mut out).unwrap();
        }
        out.flush().unwrap();
    }

    let mut group = c.benchmark_group("audit-open");
    group.sample_size(10);
    let timed_open = |log_path: std::path::PathBuf| {
        move |b: &mut criterion::Bencher<'_>| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    let key = copy();
                    let started = std::time::Instant::now();
                    let log = AuditLog::open(&log_path, key, &AuditConfig::new()).unwrap();
                    total += started.elapsed();
                    log.close().unwrap();
                }
                total
            })
        }
    };
    group.bench_function(
        "AuditLog::open, 1 GiB in older segments",
        timed_open(path.clone()),
    );
    group.bench_function(
        "AuditLog::open, the same bytes as one legacy file",
        timed_open(whole.clone()),
    );
    group.bench_function(
        "baseline: read, parse and re-hash every record of the same bytes (every open before)",
        |b| {
            b.iter(|| {
                export(
                    &whole,
                    &mut std::io::sink(),
                    ExportFormat::Jsonl,
                    &ExportFilter::new(),
                )
                .unwrap()
            })
        },
    );
    group.finish();
}

criterion_group!(benches, bench, open_bench);
criterion_main!(benches);
