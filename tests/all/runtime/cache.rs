//! The compiled-component cache: hits, and a tampered artifact rebuilt.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_cache_hits_and_a_tampered_artifact_is_rebuilt() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_owned();
    let run_hello = |h: &Harness| {
        let rt = h.runtime.clone();
        async move {
            let id = rt
                .launch_container(ContainerConfig::new(component(guests::HELLO)), identity())
                .unwrap();
            rt.wait(id).await.unwrap()
        }
    };
    let with_cache = |c: &mut RuntimeConfig| {
        c.cache_dir(&cache_dir);
    };
    // 1. Cold: compiled and written.
    let h1 = Harness::new(with_cache);
    assert!(run_hello(&h1).await.is_success());
    assert!(run_hello(&h1).await.is_success());
    let s = h1.runtime.cache_stats();
    assert_eq!((s.compiled, s.disk_hits, s.memory_hits), (1, 0, 1));
    let artifact = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("a compiled artifact was written");
    let key = cache_dir.join("cache.key");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // 2. Warm: loaded from disk after the integrity check.
    let h2 = Harness::new(with_cache);
    assert!(run_hello(&h2).await.is_success());
    let s = h2.runtime.cache_stats();
    assert_eq!((s.compiled, s.disk_hits, s.rejected), (0, 1, 0));

    // 3. Tampered: one byte of code flipped. Refused before deserializing,
    //    rebuilt from the verified bytes, audited.
    let mut bytes = std::fs::read(&artifact).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&artifact, &bytes).unwrap();
    let h3 = Harness::new(with_cache);
    assert!(run_hello(&h3).await.is_success());
    let s = h3.runtime.cache_stats();
    assert_eq!((s.compiled, s.disk_hits, s.rejected), (1, 0, 1));
    let rejected = h3.records_of("container.cache_rejected");
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0]["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("MAC mismatch")
    );
    assert_ne!(
        std::fs::read(&artifact).unwrap(),
        bytes,
        "artifact rewritten"
    );

    // 4. A secret readable by others is refused outright.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let log = AuditLog::open(
        h3.dir.path().join("other.jsonl"),
        SigningKey::generate(),
        &AuditConfig::new(),
    )
    .unwrap();
    let mut config = RuntimeConfig::new();
    config.cache_dir(&cache_dir);
    let err = Runtime::new(config, log).unwrap_err();
    assert!(matches!(err, RuntimeError::Cache { .. }), "{err}");
    assert!(err.to_string().contains("0600"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_entry_that_is_a_link_a_fifo_or_oversized_is_refused_unread_and_replaced() {
    use std::os::unix::fs::MetadataExt as _;
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_owned();
    let with_cache = |c: &mut RuntimeConfig| {
        c.cache_dir(&cache_dir);
    };
    let run_hello = |h: &Harness| {
        let rt = h.runtime.clone();
        async move {
            let id = rt
                .launch_container(ContainerConfig::new(component(guests::HELLO)), identity())
                .unwrap();
            rt.wait(id).await.unwrap()
        }
    };
    // Cold: the artifact is written; its path is what we replace.
    let h = Harness::new(with_cache);
    assert!(run_hello(&h).await.is_success());
    let artifact = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("a compiled artifact");

    // A planted entry: each is refused without being read (a link to
    // /dev/zero would otherwise be read until memory runs out, a FIFO
    // would hang), rebuilt from the verified bytes, audited, and replaced
    // by a regular file (the link's target untouched).
    let outside = cache.path().join("outside-target");
    std::fs::write(&outside, b"not an artifact").unwrap();
    type Plant<'a> = (&'static str, &'a dyn Fn(&Path));
    let plant: [Plant<'_>; 4] = [
        ("is a symbolic link, not a regular file", &|p| {
            std::os::unix::fs::symlink("/dev/zero", p).unwrap()
        }),
        ("is a symbolic link, not a regular file", &|p| {
            std::os::unix::fs::symlink(&outside, p).unwrap()
        }),
        ("is a FIFO (named pipe), not a regular file", &|p| {
            let made = std::process::Command::new("mkfifo").arg(p).status();
            assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        }),
        (
            "1073741873 bytes, over the limit of 1073741872 bytes",
            &|p| {
                // Sparse: one byte more than the cap (1 GiB) and the largest
                // header (magic, MAC, the compressed layout's length), on no
                // disk.
                let file = std::fs::File::create(p).unwrap();
                file.set_len((1 << 30) + 48 + 1).unwrap();
            },
        ),
    ];
    for (reason, plant) in plant {
        std::fs::remove_file(&artifact).unwrap();
        plant(&artifact);
        let h = Harness::new(with_cache);
        assert!(run_hello(&h).await.is_success(), "{reason}");
        let s = h.runtime.cache_stats();
        assert_eq!((s.compiled, s.disk_hits, s.rejected), (1, 0, 1), "{reason}");
        let rejected = h.records_of("container.cache_rejected");
        assert_eq!(rejected.len(), 1, "{reason}");
        let recorded = rejected[0]["details"]["reason"].as_str().unwrap();
        assert_eq!(recorded, reason);
        let meta = std::fs::symlink_metadata(&artifact).unwrap();
        assert!(
            meta.is_file() && meta.size() < 256 << 20,
            "{reason}: replaced"
        );
    }
    assert_eq!(std::fs::read(&outside).unwrap(), b"not an artifact");

    // The cache secret is read the same way: a link in its place (here to
    // /dev/zero) refuses the cache rather than reading it.
    let key = cache_dir.join("cache.key");
    std::fs::remove_file(&key).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &key).unwrap();
    let log = AuditLog::open(
        h.dir.path().join("other.jsonl"),
        SigningKey::generate(),
        &AuditConfig::new(),
    )
    .unwrap();
    let mut config = RuntimeConfig::new();
    config.cache_dir(&cache_dir);
    let err = Runtime::new(config, log).unwrap_err();
    assert!(matches!(err, RuntimeError::Cache { .. }), "{err}");
    assert!(err.to_string().contains("is a symbolic link"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_is_compressed_and_reads_either_layout() {
    use forgeone::runtime::Compression;
    let run_hello = |h: &Harness| {
        let rt = h.runtime.clone();
        async move {
            let id = rt
                .launch_container(ContainerConfig::new(component(guests::HELLO)), identity())
                .unwrap();
            assert!(rt.wait(id).await.unwrap().is_success());
            rt.cache_stats()
        }
    };
    let artifact = |dir: &Path| {
        let path = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .expect("a compiled artifact was written");
        (path.clone(), std::fs::read(path).unwrap())
    };
    let (raw_dir, zstd_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cached = |dir: &Path, compression: Compression| {
        let dir = dir.to_owned();
        move |c: &mut RuntimeConfig| {
            c.cache_dir(&dir).cache_compression(compression);
        }
    };
    // Written: uncompressed by default, compressed when asked.
    let default_dir = tempfile::tempdir().unwrap();
    let default = Harness::new(|c| {
        c.cache_dir(default_dir.path());
    });
    assert_eq!(run_hello(&default).await.compiled, 1);
    assert_eq!(&artifact(default_dir.path()).1[..8], b"FO1CWASM");
    let raw = Harness::new(cached(raw_dir.path(), Compression::None));
    assert_eq!(run_hello(&raw).await.compiled, 1);
    let zstd = Harness::new(cached(zstd_dir.path(), Compression::Zstd));
    assert_eq!(run_hello(&zstd).await.compiled, 1);
    let (_, raw_bytes) = artifact(raw_dir.path());
    let (zstd_path, zstd_bytes) = artifact(zstd_dir.path());
    assert_eq!(&raw_bytes[..8], b"FO1CWASM");
    assert_eq!(&zstd_bytes[..8], b"FO1CWZST");
    assert!(
        zstd_bytes.len() * 2 < raw_bytes.len(),
        "{} compressed bytes, {} uncompressed",
        zstd_bytes.len(),
        raw_bytes.len()
    );

    // Either layout is read whatever is configured: no recompile.
    let h = Harness::new(cached(raw_dir.path(), Compression::Zstd));
    let s = run_hello(&h).await;
    assert_eq!((s.compiled, s.disk_hits, s.rejected), (0, 1, 0));
    let h = Harness::new(cached(zstd_dir.path(), Compression::None));
    let s = run_hello(&h).await;
    assert_eq!((s.compiled, s.disk_hits, s.rejected), (0, 1, 0));

    // The MAC covers the compressed layout's length field and frame: either
    // edited is refused before anything is decompressed, and rebuilt.
    for offset in [8 + 32, zstd_bytes.len() / 2] {
        let mut bytes = zstd_bytes.clone();
        bytes[offset] ^= 0x01;
        std::fs::write(&zstd_path, &bytes).unwrap();
        let h = Harness::new(|c| {
            c.cache_dir(zstd_dir.path());
        });
        let s = run_hello(&h).await;
        assert_eq!((s.compiled, s.disk_hits, s.rejected), (1, 0, 1), "{offset}");
        let rejected = h.records_of("container.cache_rejected");
        assert!(
            rejected[0]["details"]["reason"]
                .as_str()
                .unwrap()
                .contains("MAC mismatch"),
            "{rejected:#?}"
        );
    }
}
