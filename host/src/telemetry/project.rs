//! Counters and histograms as a projection of the audit log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use metrics::{Label, counter, gauge, histogram};
use serde::Deserialize;

use crate::audit::{AuditObserver, Observed};

/// The most call names one plugin keeps as label values; further names are
/// counted under `other` (a service may pass a caller's string as the call
/// name).
pub const MAX_CALL_LABELS: usize = 64;

/// The most containers whose creation time is kept for the start-latency
/// histogram at once (a start that finds none is not timed).
const MAX_PENDING_STARTS: usize = 65_536;

/// The most plugins whose names are kept (by plugin id).
const MAX_PLUGINS: usize = 4_096;

/// Projects audit records onto metrics. Register it on the log with
/// [`AuditConfig::observer`](crate::audit::AuditConfig::observer) before
/// opening it:
///
/// ```no_run
/// # use std::sync::Arc;
/// # use forgeone::audit::{AuditConfig, AuditLog};
/// # fn f(key: forgeone::SigningKey) -> Result<(), forgeone::audit::AuditError> {
/// let mut config = AuditConfig::new();
/// config.observer(Arc::new(forgeone::telemetry::Metrics::new()));
/// let log = AuditLog::open("audit.jsonl", key, &config)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct Metrics {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Container id → when its next run was set up (created, or a restart
    /// scheduled).
    pending_starts: HashMap<String, DateTime<Utc>>,
    /// Plugin id → (name, call names seen).
    plugins: HashMap<String, (String, Vec<String>)>,
}

impl Metrics {
    /// A projection with nothing seen yet. It also describes every metric
    /// to the recorder (help text, units).
    pub fn new() -> Metrics {
        describe();
        Metrics::default()
    }
}

/// Stats of a run or a call, as records carry them.
#[derive(Debug, Default, Deserialize)]
struct Stats {
    #[serde(default)]
    fuel_consumed: u64,
    #[serde(default)]
    peak_memory: u64,
    #[serde(default)]
    wall_time_us: u64,
}

/// What the records that end a run or a call hold (`container.exited`,
/// `.failed`, `.stopped`, `.plugin.call`).
#[derive(Debug, Default, Deserialize)]
struct Ended {
    #[serde(default)]
    code: Option<i32>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    failure: Option<Failure>,
    #[serde(default)]
    stats: Stats,
    #[serde(default)]
    call: Option<String>,
    #[serde(default)]
    result: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Failure {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Loaded {
    #[serde(default)]
    name: String,
}

#[derive(Debug, Default, Deserialize)]
struct Unschedulable {
    #[serde(default)]
    rejected: Vec<Rejection>,
}

#[derive(Debug, Default, Deserialize)]
struct Rejection {
    reason: RejectionReason,
}

#[derive(Debug, Default, Deserialize)]
struct RejectionReason {
    #[serde(default)]
    kind: String,
}

#[derive(Debug, Default, Deserialize)]
struct BootCompleted {
    #[serde(default)]
    outcome: String,
}

impl AuditObserver for Metrics {
    fn observe(&self, record: &Observed<'_>) {
        let category = record.kind.split('.').next().unwrap_or("other");
        counter!("forgeone_audit_records_total", "category" => category.to_owned()).increment(1);
        counter!("forgeone_audit_bytes_total").increment(record.line_bytes);
        histogram!("forgeone_audit_append_seconds").record(record.queued_for.as_secs_f64());
        gauge!("forgeone_audit_last_seq").set(record.seq as f64);
        match category {
            "container" => self.container(record),
            "schedule" => schedule(record),
            "boot" => boot(record),
            "policy" if record.kind.ends_with("_refused") => refused(record.kind),
            _ => {}
        }
    }
}

impl Metrics {
    fn container(&self, record: &Observed<'_>) {
        let who = || run_labels(record);
        match record.kind {
            "container.created" | "container.restart_scheduled" => {
                if record.kind == "container.restart_scheduled" {
                    counter!("forgeone_container_restarts_total", who()).increment(1);
                }
                if let Some(id) = &record.subjects.container {
                    let mut state = self.lock();
                    if state.pending_starts.len() < MAX_PENDING_STARTS
                        || state.pending_starts.contains_key(id)
                    {
                        state.pending_starts.insert(id.clone(), record.ts);
                    }
                }
            }
            "container.started" => {
                counter!("forgeone_container_starts_total", who()).increment(1);
                let since = record
                    .subjects
                    .container
                    .as_ref()
                    .and_then(|id| self.lock().pending_starts.remove(id));
                if let Some(since) = since {
                    let took = (record.ts - since).to_std().unwrap_or(Duration::ZERO);
                    histogram!("forgeone_container_start_seconds").record(took.as_secs_f64());
                }
            }
            "container.exited" | "container.failed" | "container.stopped" => {
                let ended: Ended = parse(record.details);
                let outcome = match record.kind {
                    "container.exited" if ended.code == Some(0) => "exit".to_owned(),
                    "container.exited" => "exit-error".to_owned(),
                    "container.stopped" => "stopped".to_owned(),
                    _ => bounded(ended.reason.as_deref().unwrap_or("unknown")),
                };
                let mut labels = who();
                counter!("forgeone_fuel_consumed_total", labels.clone())
                    .increment(ended.stats.fuel_consumed);
                gauge!("forgeone_container_peak_memory_bytes", labels.clone())
                    .set(ended.stats.peak_memory as f64);
                labels.push(Label::new("outcome", outcome));
                counter!("forgeone_container_exits_total", labels).increment(1);
                if let Some(id) = &record.subjects.container {
                    self.lock().pending_starts.remove(id);
                }
            }
            "container.quarantined" => {
                counter!("forgeone_container_quarantines_total", who()).increment(1);
            }
            "container.compile_failed" | "container.plugin.refused" => refused(record.kind),
            "container.plugin.loaded" => {
                let loaded: Loaded = parse(record.details);
                if let Some(id) = &record.subjects.container {
                    let mut state = self.lock();
                    if state.plugins.len() < MAX_PLUGINS || state.plugins.contains_key(id) {
                        state
                            .plugins
                            .insert(id.clone(), (bounded(&loaded.name), Vec::new()));
                    }
                }
            }
            "container.plugin.call" => self.plugin_call(record),
            _ => {}
        }
    }

    fn plugin_call(&self, record: &Observed<'_>) {
        let ended: Ended = parse(record.details);
        let call = ended.call.unwrap_or_default();
        let (plugin, call) = {
            let mut state = self.lock();
            match record
                .subjects
                .container
                .as_ref()
                .and_then(|id| state.plugins.get_mut(id))
            {
                Some((name, calls)) => {
                    let known = calls.contains(&call);
                    let call = if known || calls.len() < MAX_CALL_LABELS {
                        if !known {
                            calls.push(call.clone());
                        }
                        bounded(&call)
                    } else {
                        "other".to_owned()
                    };
                    (name.clone(), call)
                }
                None => ("unknown".to_owned(), "other".to_owned()),
            }
        };
        let mut result = ended.result.unwrap_or_else(|| "unknown".to_owned());
        if let Some(reason) = ended.failure.and_then(|f| f.reason) {
            result = format!("{result}:{}", bounded(&reason));
        }
        counter!(
            "forgeone_plugin_calls_total",
            "plugin" => plugin.clone(), "call" => call.clone(), "result" => bounded(&result)
        )
        .increment(1);
        histogram!("forgeone_plugin_call_seconds", "plugin" => plugin, "call" => call)
            .record(ended.stats.wall_time_us as f64 / 1e6);
        let tenant = record
            .actor
            .and_then(|a| a.tenant.clone())
            .unwrap_or_default();
        counter!("forgeone_fuel_consumed_total", "workload" => "", "tenant" => tenant)
            .increment(ended.stats.fuel_consumed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `workload` and `tenant` labels of a container record.
fn run_labels(record: &Observed<'_>) -> Vec<Label> {
    let workload = record.subjects.workload.as_deref().unwrap_or("");
    let tenant = record.actor.and_then(|a| a.tenant.as_deref()).unwrap_or("");
    vec![
        Label::new("workload", bounded(workload)),
        Label::new("tenant", bounded(tenant)),
    ]
}

fn schedule(record: &Observed<'_>) {
    let decision = record.kind.trim_start_matches("schedule.");
    if matches!(
        decision,
        "placed" | "unschedulable" | "preempted" | "released"
    ) {
        counter!("forgeone_schedule_decisions_total", "decision" => decision.to_owned())
            .increment(1);
    }
    if decision == "unschedulable" {
        let details: Unschedulable = parse(record.details);
        for rejection in details.rejected {
            counter!("forgeone_unschedulable_total", "reason" => bounded(&rejection.reason.kind))
                .increment(1);
        }
    }
}

fn boot(record: &Observed<'_>) {
    let result = match record.kind {
        "boot.component.verified" => "verified",
        "boot.component.refused" => "refused",
        "boot.component.recovered" => "recovered",
        "boot.component.downgraded" => "downgraded",
        "boot.completed" => {
            let completed: BootCompleted = parse(record.details);
            counter!("forgeone_boots_total", "outcome" => bounded(&completed.outcome)).increment(1);
            return;
        }
        _ => return,
    };
    counter!("forgeone_boot_components_total", "result" => result).increment(1);
}

fn refused(kind: &str) {
    counter!("forgeone_refusals_total", "kind" => kind.to_owned()).increment(1);
}

/// A record's details, or the defaults where they do not parse (the log
/// wrote them, so they do; a projection never fails the writer).
fn parse<T: Default + for<'de> Deserialize<'de>>(details: &str) -> T {
    serde_json::from_str(details).unwrap_or_default()
}

/// A label value: at most 64 bytes of `[A-Za-z0-9_.:/-]` (others become
/// `_`), so no record can make a label long or odd.
fn bounded(value: &str) -> String {
    value
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.:/-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Help text for every metric.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!("forgeone_container_starts_total", "Container runs started.");
    describe_histogram!(
        "forgeone_container_start_seconds",
        Unit::Seconds,
        "From a container's creation (or scheduled restart) to its run starting."
    );
    describe_counter!(
        "forgeone_container_exits_total",
        "Container runs ended, by outcome (exit, exit-error, stopped, out-of-fuel, memory-limit, deadline, trap, ...)."
    );
    describe_counter!("forgeone_container_restarts_total", "Restarts scheduled.");
    describe_counter!(
        "forgeone_container_quarantines_total",
        "Containers quarantined for crash-looping."
    );
    describe_counter!(
        "forgeone_fuel_consumed_total",
        "Fuel consumed by ended runs and plugin calls."
    );
    describe_gauge!(
        "forgeone_container_peak_memory_bytes",
        Unit::Bytes,
        "Peak linear memory of the workload's last run."
    );
    describe_counter!(
        "forgeone_refusals_total",
        "Code refused: unsigned, not compiling, a plugin under another name, network not allowed."
    );
    describe_counter!("forgeone_plugin_calls_total", "Plugin calls, by result.");
    describe_histogram!(
        "forgeone_plugin_call_seconds",
        Unit::Seconds,
        "Wall time of plugin calls."
    );
    describe_counter!(
        "forgeone_schedule_decisions_total",
        "Scheduler decisions: placed, unschedulable, preempted, released."
    );
    describe_counter!(
        "forgeone_unschedulable_total",
        "Node rejections behind unschedulable workloads, by reason."
    );
    describe_counter!(
        "forgeone_boot_components_total",
        "Boot checks of components: verified, refused, recovered, downgraded."
    );
    describe_counter!("forgeone_boots_total", "Boots, by outcome.");
    describe_counter!(
        "forgeone_audit_records_total",
        "Audit records put on the chain, by category."
    );
    describe_counter!(
        "forgeone_audit_bytes_total",
        Unit::Bytes,
        "Bytes of audit records put on the chain."
    );
    describe_histogram!(
        "forgeone_audit_append_seconds",
        Unit::Seconds,
        "From an append to its record being on the chain (queue wait)."
    );
    describe_gauge!("forgeone_audit_last_seq", "The last audit sequence number.");
}

#[cfg(test)]
mod tests {
    use super::bounded;

    #[test]
    fn label_values_are_short_and_plain() {
        assert_eq!(bounded("api"), "api");
        assert_eq!(bounded("a b\"c\n"), "a_b_c_");
        assert_eq!(bounded(&"x".repeat(500)).len(), 64);
    }
}
