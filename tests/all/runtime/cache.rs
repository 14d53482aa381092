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
