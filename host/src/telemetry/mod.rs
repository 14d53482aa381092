//! Metrics for operators: what runs, how it ends, what it costs, and how
//! the scheduler, the executor and the audit log are doing.
//!
//! The metrics go through the [`metrics`] facade, so they reach whatever
//! recorder the process installed: the Prometheus endpoint that
//! [`serve_prometheus`] starts (what `forgeone up --metrics ADDR` and
//! `forgeone host --metrics ADDR` use), or an embedding service's own
//! exporter. Without a recorder they cost an atomic load each.
//!
//! They come from two places:
//!
//! - **The audit log.** [`Metrics`] is an [`AuditObserver`]: counters and
//!   histograms are a projection of the records as they go on the chain
//!   (starts, exits by outcome, restarts, quarantines, fuel, plugin calls,
//!   scheduler decisions, boot checks, and the log's own bytes and append
//!   latency). So a metric never counts an event the log does not hold.
//! - **Snapshots.** [`sample`] reads what is a state rather than an event
//!   (containers by status, the executor's CPU per class, queued work, the
//!   log's backlog and writability) from a [`Kernel`]; [`spawn_sampler`] does it every
//!   interval.
//!
//! Labels stay bounded: workload, tenant, plugin and call names, outcome
//! and reason kinds, priority classes; never a container id. A call name
//! comes from the calling service, so each plugin keeps at most
//! [`MAX_CALL_LABELS`] of them and counts the rest as `other`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `forgeone_container_starts_total` | counter | `workload`, `tenant` |
//! | `forgeone_container_start_seconds` | histogram | (created or restart scheduled → started) |
//! | `forgeone_container_exits_total` | counter | `workload`, `tenant`, `outcome` (`exit`, `exit-error`, `stopped`, `out-of-fuel`, `memory-limit`, `deadline`, `trap`, ...) |
//! | `forgeone_container_restarts_total`, `forgeone_container_quarantines_total` | counter | `workload`, `tenant` |
//! | `forgeone_fuel_consumed_total` | counter | `workload`, `tenant` |
//! | `forgeone_container_peak_memory_bytes` | gauge (last run) | `workload`, `tenant` |
//! | `forgeone_refusals_total` | counter | `kind` (the audit kind: `policy.unsigned_refused`, `container.compile_failed`, ...) |
//! | `forgeone_plugin_calls_total` | counter | `plugin`, `call`, `result` |
//! | `forgeone_plugin_call_seconds` | histogram | `plugin`, `call` |
//! | `forgeone_schedule_decisions_total` | counter | `decision` (`placed`, `unschedulable`, `preempted`, `released`) |
//! | `forgeone_unschedulable_total` | counter | `reason` (a rejection kind: `location`, `cpu`, `anti-affinity`, ...) |
//! | `forgeone_boot_components_total` | counter | `result` (`verified`, `refused`, `recovered`, `downgraded`) |
//! | `forgeone_boots_total` | counter | `outcome` (as `boot.completed` states it) |
//! | `forgeone_audit_records_total` | counter | `category` (`container`, `schedule`, `boot`, ...) |
//! | `forgeone_audit_bytes_total` | counter | |
//! | `forgeone_audit_append_seconds` | histogram | (append → on the chain) |
//! | `forgeone_containers` | gauge | `status` |
//! | `forgeone_workloads_not_run` | gauge | `why` (`refused-at-boot`, `unschedulable`, `refused`) |
//! | `forgeone_executor_busy_seconds` | gauge (since start) | `class` (`critical` ... `background`) |
//! | `forgeone_executor_workers` | gauge | |
//! | `forgeone_executor_tasks` | gauge | (container tasks alive) |
//! | `forgeone_scheduler_pending` | gauge | (workloads waiting for a node) |
//! | `forgeone_memory_committed_bytes` | gauge | |
//! | `forgeone_audit_backlog_records`, `forgeone_audit_backlog_bytes` | gauge | (appended, not yet durable / written) |
//! | `forgeone_audit_writable` | gauge | (1 or 0) |
//! | `forgeone_audit_last_seq` | gauge | |

mod project;
#[cfg(feature = "prometheus")]
mod prometheus;
mod sample;

pub use project::{MAX_CALL_LABELS, Metrics};
#[cfg(feature = "prometheus")]
pub use prometheus::{PrometheusError, serve_prometheus};
pub use sample::{sample, spawn_sampler};

#[cfg(doc)]
use crate::{Kernel, audit::AuditObserver};
