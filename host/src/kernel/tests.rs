//! The kernel's own bookkeeping, seen from inside: the executor lane a
//! submitted workload gets, and what a long-running kernel keeps.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::audit::AuditConfig;
use crate::boot::{Digest, Provenance, VerifiedComponent};
use crate::identity::{IdentityContext, Priority, TrustLevel, TrustVector};
use crate::keys::SigningKey;
use crate::policy::TenantPolicy;
use crate::scheduler::Capacity;

/// A `wasi:cli/command` that exits 0 at once.
const TRIVIAL: &str = r#"
(component
  (core module $m (func (export "run") (result i32) (i32.const 0)))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $run-instance (export "run" (func $run)))
  (export "wasi:cli/run@0.2.12" (instance $run-instance)))
"#;

/// The trivial command as if a release key had signed it.
fn signed() -> VerifiedComponent {
    let bytes: Arc<[u8]> = wat::parse_str(TRIVIAL).unwrap().into();
    VerifiedComponent::verified(
        "trivial".into(),
        "1.0.0".into(),
        Digest::of(&bytes),
        bytes,
        vec![SigningKey::generate().id().clone()],
        Provenance::Signature,
    )
}

fn kernel(dir: &std::path::Path, acme: TrustLevel) -> Kernel {
    let audit = AuditLog::open(
        dir.join("audit.jsonl"),
        SigningKey::generate(),
        &AuditConfig::new(),
    )
    .unwrap();
    let mut policies = PolicySet::new();
    policies.tenant(
        "acme",
        TenantPolicy::new()
            .max_priority(Priority::Critical)
            .trust(acme)
            .build(),
    );
    let cap = Capacity {
        cpu_millis: 2000,
        memory: 1 << 30,
        storage: 0,
        containers: 100,
    };
    let mut config = KernelConfig::new(Node::new("local", "r", "z", cap), policies);
    config.workers(1);
    Kernel::new(config, audit).unwrap()
}

#[test]
fn kernel_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Kernel>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_claimed_trust_never_reaches_the_executor_lane() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = kernel(dir.path(), TrustLevel::Medium);
    let mut claimed = TrustVector::new(TrustLevel::System, 9);
    claimed.incidents = 0;
    let identity = IdentityContext::new("acme", "p", claimed);
    let mut w = Workload::new("api", Priority::Critical, identity);
    w.signers = vec!["forged".into()];
    let id = kernel.submit(w, ContainerConfig::new(signed())).unwrap();
    let book = lock(&kernel.book);
    let slot = &book.entries[&id];
    // The lane is the tenant's level, not the claim.
    assert_eq!(slot.spawn.trust_level(), TrustLevel::Medium);
    assert_eq!(slot.workload.identity.trust.level, TrustLevel::Medium);
    assert_eq!(slot.workload.identity.trust.signers, 1);
    assert_ne!(slot.workload.signers, ["forged"]);
    drop(book);
    kernel.shutdown("test over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_long_running_kernel_keeps_nothing_of_removed_workloads() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = kernel(dir.path(), TrustLevel::High);
    let component = signed();
    for n in 0..30 {
        let identity = IdentityContext::new("acme", "p", TrustVector::default());
        let id = kernel
            .submit(
                Workload::new(format!("job-{n}"), Priority::Normal, identity),
                ContainerConfig::new(component.clone()),
            )
            .unwrap();
        let report = kernel.schedule().unwrap();
        assert_eq!(report.launched.len(), 1, "{:?}", report.refused);
        tokio::time::timeout(Duration::from_secs(30), kernel.wait_for(id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kernel.live_tasks(), 0);
        kernel.remove(id).unwrap();
    }
    let book = lock(&kernel.book);
    assert!(book.entries.is_empty() && book.order.is_empty());
    drop(book);
    assert!(kernel.runtime.list().is_empty());
    assert_eq!(lock(&kernel.scheduler).workloads().count(), 0);
    kernel.shutdown("test over");
}
