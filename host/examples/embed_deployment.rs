//! Runs a deployment file (`forgeone.toml`) from a service of your own, with
//! what `forgeone up` gets: the boot the file asks for, trust derived from
//! the tenants' policies and the verified signatures, placement, the
//! work-stealing executor, supervision, boot assessment and the audit log.
//!
//! Run with `cargo run -p forgeone --example embed_deployment -- .forgeone/demo/forgeone.toml`
//! after `scripts/demo` (which writes that deployment and its keys).

use std::time::Duration;

use anyhow::Context as _;
use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::kernel::Kernel;
use forgeone::{Deployment, SigningKey};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .context("usage: embed_deployment FORGEONE.toml")?;
    let deployment = Deployment::from_file(&path)?;
    let settings = &deployment.settings;

    // The host key signs the audit log's checkpoints and the boot quote.
    let key = || SigningKey::from_file(&settings.host_key);
    let audit = AuditLog::open(&settings.audit_log, key()?, &AuditConfig::new())?;

    // 1. Boot: the manifest or the per-component signatures, as the file
    //    says, with rollback protection and recovery in its state directory.
    let boot = deployment
        .boot_builder()
        .audit(audit.clone())
        .host_key(key()?)
        .run()?;
    println!("boot {} ({})", boot.outcome.as_str(), boot.integrity_status);

    // 2. The kernel: every workload submitted with the component boot
    //    verified from its file, and placed.
    let (kernel, report) = Kernel::from_deployment(&deployment, boot, audit.clone())?;
    println!(
        "{} placed, {} refused",
        report.launched.len(),
        report.refused.len()
    );

    // 3. Wait for the containers, then stop what still waits for an
    //    operator (quarantined containers) and shut down.
    kernel.wait_settled().await;
    for w in kernel.workloads() {
        let status = match (&w.container, &w.not_run) {
            (Some(c), _) => c.status.to_string(),
            (None, Some(why)) => format!("not run: {why}"),
            (None, None) => "queued".to_string(),
        };
        println!("{:<12} {:<10} {:<8} {status}", w.name, w.priority, w.trust);
    }
    kernel.drain("example done", Duration::from_secs(1))?;
    kernel.wait().await;
    kernel.shutdown("example done");
    audit.close()?;
    println!("audit log {}", settings.audit_log.display());
    Ok(())
}
