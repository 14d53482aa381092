//! The live view of `forgeone up`: new guest output and status changes as
//! they happen, and on a terminal a table redrawn under them.

use std::collections::HashMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use forgeone::ContainerContext;
use forgeone::kernel::{Kernel, WorkloadView};
use forgeone::runtime::{ContainerStatus, Failure as RunFailure, RunEnd, Stream};
use serde_json::json;

use super::{Out, Pending};
use crate::signals::{Signal, Signals};

/// Shows the table until every container has settled, or until SIGINT
/// (Ctrl-C) or SIGTERM (then drains; a second signal stops them at once).
/// Returns the signal that interrupted it, if one did.
pub(super) async fn watch(
    kernel: &Kernel,
    pending: &Pending,
    grace: Duration,
    out: Out,
    mut signals: Signals,
) -> Option<Signal> {
    let started = Instant::now();
    let mut last: HashMap<String, String> = HashMap::new();
    let mut drawn = 0usize;
    let mut interrupted = None;
    let mut forced = false;
    let mut tick = tokio::time::interval(Duration::from_millis(if out.tty { 200 } else { 100 }));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            (signal, count) = signals.next(), if !forced => {
                let name = signal.name();
                if interrupted.is_some() || count > 1 {
                    forced = true;
                    out.note(format!("stopping every container now (second signal, {name})"));
                    if let Err(e) = kernel.drain(&format!("interrupted again ({name})"), Duration::ZERO) {
                        out.note(format!("could not record the drain: {e}"));
                    }
                }
                if interrupted.is_none() {
                    interrupted = Some(signal);
                    if !forced {
                        out.note(format!(
                            "stopping every container ({name}); they get {} before they are stopped at their next yield; Ctrl-C again to stop them now",
                            humantime::format_duration(grace)
                        ));
                        if let Err(e) = kernel.drain(&format!("interrupted ({name})"), grace) {
                            out.note(format!("could not record the drain: {e}"));
                        }
                    }
                }
            }
        }
        // Work kept queued (the audit log could not be written, or its
        // previous container was still stopping) is placed once it can be.
        if interrupted.is_none() && kernel.pending() > 0 {
            match kernel.schedule() {
                Ok(report) => {
                    for l in &report.launched {
                        out.note(format!("placed {} on {}", l.name, l.allocation.node_id));
                    }
                }
                Err(e) => out.note(format!("scheduling: {e}")),
            }
        }
        drawn = render(kernel, pending, &mut last, drawn, started, out);
        if kernel.settled() {
            break;
        }
    }
    interrupted
}

/// Prints new guest output and status changes; on a terminal, redraws the
/// table under them. Returns the table's height (to erase it next time).
fn render(
    kernel: &Kernel,
    pending: &Pending,
    last: &mut HashMap<String, String>,
    drawn: usize,
    started: Instant,
    out: Out,
) -> usize {
    let views = kernel.workloads();
    let lines = std::mem::take(&mut *pending.lock().unwrap_or_else(|p| p.into_inner()));
    let name_of = |container: uuid::Uuid| {
        views
            .iter()
            .find(|v| v.container.as_ref().is_some_and(|c| c.id == container))
            .map_or("?", |v| v.name.as_str())
    };
    let mut stdout = std::io::stdout().lock();
    if out.tty && drawn > 0 {
        // Move up over the previous table and clear to the end of the screen.
        let _ = write!(stdout, "\x1b[{drawn}A\x1b[J");
    }
    for line in lines {
        let name = name_of(line.container);
        if out.json {
            let event = json!({
                "event": "output", "workload": name, "container": line.container,
                "stream": match line.stream { Stream::Stdout => "stdout", Stream::Stderr => "stderr", _ => "log" },
                "text": line.text,
            });
            let _ = writeln!(stdout, "{event}");
            continue;
        }
        let tag = if matches!(line.stream, Stream::Stderr) {
            "!"
        } else {
            "|"
        };
        let _ = writeln!(stdout, "{name:>14} {tag} {}", line.escaped());
    }
    let at = started.elapsed();
    // Workloads that never ran were reported with the schedule.
    let shown: Vec<WorkloadView> = views
        .iter()
        .filter(|v| v.not_run.is_none())
        .cloned()
        .collect();
    for v in &shown {
        let status = status_text(v);
        if last.get(&v.name) != Some(&status) {
            if !out.tty && !out.json {
                let _ = writeln!(
                    stdout,
                    "[{:>6.2}s] {:<14} {status}",
                    at.as_secs_f64(),
                    v.name
                );
            }
            out.event(view_json(v, &status));
            last.insert(v.name.clone(), status);
        }
    }
    if out.tty {
        let table = table(&shown);
        for line in &table {
            let _ = writeln!(stdout, "{line}");
        }
        let _ = stdout.flush();
        return table.len();
    }
    let _ = stdout.flush();
    0
}

fn view_json(v: &WorkloadView, status: &str) -> serde_json::Value {
    let c = v.container.as_ref();
    json!({
        "event": "status",
        "workload": v.name,
        "node": v.node,
        "priority": v.priority,
        "status": c.map(|c| c.status.name()).unwrap_or("unknown"),
        "detail": status,
        "container": c.map(|c| c.id),
        "fuel": c.map(fuel_used),
        "peak_memory": c.map(|c| c.resources.peak_memory),
        "restarts": c.map(restarts),
    })
}

/// Fuel used by every run, the current one included while it runs.
fn fuel_used(c: &ContainerContext) -> u64 {
    match c.status {
        ContainerStatus::Running | ContainerStatus::Paused | ContainerStatus::Stopping => {
            c.resources.fuel_consumed_total + c.resources.fuel_consumed
        }
        _ => c.resources.fuel_consumed_total,
    }
}

pub(super) fn restarts(c: &ContainerContext) -> u32 {
    c.run.saturating_sub(1)
}

/// The status with what it means, for the log lines and the summary.
pub(super) fn status_text(v: &WorkloadView) -> String {
    status(v, false)
}

/// The status, short enough for a table cell when `brief`.
fn status(v: &WorkloadView, brief: bool) -> String {
    let Some(c) = &v.container else {
        return match &v.not_run {
            Some(n) if brief => n.label().into(),
            Some(n) => n.to_string(),
            None => "queued".into(),
        };
    };
    let failure = |f: &RunFailure| {
        if brief {
            f.kind().replace('-', " ")
        } else {
            short_failure(f)
        }
    };
    let mut s = match &c.status {
        ContainerStatus::Failed(f) => format!("failed: {}", failure(f)),
        ContainerStatus::Quarantined(q) if brief => {
            format!("quarantined ({} failures)", q.failures)
        }
        ContainerStatus::Quarantined(q) => format!(
            "quarantined after {} failed runs in a row (last: {})",
            q.failures,
            short_failure(&q.last_failure)
        ),
        ContainerStatus::Stopped => match c.last_outcome.as_ref().map(|o| &o.end) {
            Some(RunEnd::Success) => "exited 0".into(),
            _ => "stopped".into(),
        },
        other => other.name().to_string(),
    };
    if c.next_restart.is_some() {
        let backoff = c.history.last().map(|h| h.backoff).unwrap_or_default();
        s.push_str(&format!(
            ", restart {} in {}",
            c.run + 1,
            humantime::format_duration(Duration::from_millis(backoff.as_millis() as u64))
        ));
    }
    s
}

fn short_failure(f: &RunFailure) -> String {
    let text = f.to_string();
    // The first line only: traps carry a backtrace.
    let first = text.lines().next().unwrap_or_default();
    if first.chars().count() > 60 {
        format!("{}…", first.chars().take(59).collect::<String>())
    } else {
        first.to_string()
    }
}

pub(super) fn fuel(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}K", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.2}G", n as f64 / 1e9),
    }
}

pub(super) fn table(views: &[WorkloadView]) -> Vec<String> {
    let header = [
        "WORKLOAD", "NODE", "PRIORITY", "STATUS", "FUEL", "MEMORY", "RESTARTS",
    ]
    .map(String::from);
    let rows: Vec<[String; 7]> = views
        .iter()
        .map(|v| {
            let c = v.container.as_ref();
            [
                v.name.clone(),
                v.node.clone().unwrap_or_else(|| "-".into()),
                v.priority.to_string(),
                status(v, true),
                c.map(|c| fuel(fuel_used(c))).unwrap_or_default(),
                c.map(|c| bytesize::ByteSize::b(c.resources.peak_memory).to_string())
                    .unwrap_or_default(),
                c.map(|c| restarts(c).to_string()).unwrap_or_default(),
            ]
        })
        .collect();
    let mut width = header.clone().map(|h| h.chars().count());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    std::iter::once(&header)
        .chain(rows.iter())
        .map(|r| {
            let mut s = String::new();
            for (i, c) in r.iter().enumerate() {
                if i >= 4 {
                    s.push_str(&format!("{c:>w$}  ", w = width[i]));
                } else {
                    s.push_str(&format!("{c:<w$}  ", w = width[i]));
                }
            }
            s.trim_end().to_string()
        })
        .collect()
}
