//! The end of `forgeone up`: what happened to every workload, and the
//! audit log checked with the host key.

use std::collections::BTreeMap;
use std::path::Path;

use forgeone::audit::{self, VerifyOptions};
use forgeone::kernel::{NotRun, WorkloadView};
use forgeone::runtime::{ContainerStatus, RunEnd};
use serde_json::json;

use super::live::{fuel, restarts, status_text, table};
use super::{Out, plural};

/// Seals are checked with the host key from the deployment, so the result
/// says who wrote the log, not only that it is intact.
pub(super) fn verify_audit(path: &Path, key: forgeone::PublicKey, out: Out) -> bool {
    let key_id = key.id().to_string();
    let mut options = VerifyOptions::new();
    options.key(key);
    match audit::verify_file(path, &options) {
        Ok(report) => {
            out.line(format!(
                "\naudit: verified {} records, {} checkpoint{}, head {} (signed by host key {key_id})",
                report.records,
                report.checkpoints,
                plural(report.checkpoints as usize),
                report.head
            ));
            out.line(format!(
                "       check it yourself: forgeone audit verify {} --key <host public key>",
                path.display()
            ));
            out.event(json!({
                "event": "audit",
                "verified": true,
                "log": path,
                "records": report.records,
                "checkpoints": report.checkpoints,
                "head": report.head,
                "host_key": key_id,
            }));
            true
        }
        Err(e) => {
            out.line(format!("\naudit: VERIFICATION FAILED: {e}"));
            out.event(
                json!({ "event": "audit", "verified": false, "log": path, "error": e.to_string() }),
            );
            false
        }
    }
}

/// Prints the final table and what happened to every workload; true when
/// every workload ran and ended well.
pub(super) fn summary(views: &[WorkloadView], out: Out) -> bool {
    let ran: Vec<WorkloadView> = views
        .iter()
        .filter(|v| v.not_run.is_none())
        .cloned()
        .collect();
    if !out.tty {
        out.line("");
        for line in table(&ran) {
            out.line(line);
        }
    }
    let mut ok = true;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    out.line("\nsummary");
    for v in views {
        let name = &v.name;
        let priority = v.priority.as_str();
        let what = if v.not_run.is_none() {
            let c = v.container.as_ref();
            let good = c.is_some_and(|c| matches!(c.status, ContainerStatus::Stopped));
            ok &= good;
            let key = match c.map(|c| (&c.status, c.last_outcome.as_ref().map(|o| &o.end))) {
                Some((ContainerStatus::Stopped, Some(RunEnd::Success))) => "completed",
                Some((status, _)) => status.name(),
                None => "queued",
            };
            *counts.entry(key.to_string()).or_default() += 1;
            let mut text = status_text(v);
            if let Some(c) = c {
                text.push_str(&format!(
                    " · fuel {} · peak memory {} · {} restart{}",
                    fuel(c.resources.fuel_consumed_total),
                    bytesize::ByteSize::b(c.resources.peak_memory),
                    restarts(c),
                    plural(restarts(c) as usize)
                ));
                if let ContainerStatus::Quarantined(q) = &c.status {
                    let evidence: Vec<&String> = q
                        .last_output
                        .iter()
                        .filter(|l| !l.trim().is_empty() && !l.contains("RUST_BACKTRACE"))
                        .collect();
                    text.push_str(&format!(
                        "\n  {:<25} evidence kept for the operator; last output:",
                        ""
                    ));
                    for line in &evidence[evidence.len().saturating_sub(3)..] {
                        text.push_str(&format!("\n  {:<25}   {line}", ""));
                    }
                }
            }
            text
        } else {
            ok = false;
            let key = match &v.not_run {
                Some(NotRun::Boot { .. }) => "refused at boot",
                Some(NotRun::Unschedulable { .. }) => "unschedulable",
                _ => "refused by policy",
            };
            *counts.entry(key.into()).or_default() += 1;
            match &v.not_run {
                Some(NotRun::Boot { reason }) => format!("not run: refused at boot: {reason}"),
                Some(n @ NotRun::Unschedulable { .. }) => format!("not placed: {n}"),
                Some(n) => format!("refused: {n}"),
                None => "not run".into(),
            }
        };
        out.line(format!("  {name:<14} {priority:<10} {what}"));
    }
    let counted: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    out.line(format!(
        "{} workload{}: {}",
        views.len(),
        plural(views.len()),
        counted.join(", ")
    ));
    out.event(json!({
        "event": "summary",
        "workloads": views.len(),
        "counts": counts,
        "ok": ok,
    }));
    ok
}
