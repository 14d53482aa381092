//! `forgeone plan`

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use forgeone::Deployment;
use forgeone::deployment::{self, Plan, PlannedWorkload};
use forgeone::scheduler::{Explanation, NodeInventory, ScheduleError, StaticInventory};

use crate::util::{CmdResult, Failure};

/// Show where every workload of a deployment would run, and why, without
/// running anything.
///
/// Places each `[[workload]]` of DEPLOYMENT onto the nodes of `--nodes`
/// (or, without it, onto the local node described by the deployment's
/// `[node]`) exactly as `forgeone up` would: priority, then trust, then
/// file order; affinity targets first; preemption of lower priorities.
/// Prints a table (workload, priority, tenant, node, zone, score, fitting
/// nodes) and, for every workload, which nodes each constraint rejected.
/// Signatures are not verified: each workload is planned as signed code at
/// its tenant's trust level, which is what it runs as once it verifies. A
/// workload pinned to an executor worker the host will not have (see
/// `--workers`) is refused, as `up` refuses it.
///
/// Exit codes: 0 every workload placed; 1 some workload unschedulable or
/// refused by policy; 3 bad input (the error names file, line and column).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The deployment (`forgeone.toml`).
    #[arg(value_name = "DEPLOYMENT")]
    deployment: PathBuf,
    /// The node inventory (`nodes.toml`: one `[[node]]` per node).
    #[arg(long, value_name = "NODES")]
    nodes: Option<PathBuf>,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
    /// Executor worker threads `up` will run with (`up --workers`; default:
    /// one per core); `worker = N` must name one of them.
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
}

pub fn run(args: Args) -> CmdResult {
    let deployment = Deployment::from_file(&args.deployment).map_err(Failure::input)?;
    let (inventory, source): (Arc<dyn NodeInventory>, String) = match &args.nodes {
        Some(path) => (
            Arc::new(StaticInventory::new(
                deployment::read_nodes(path).map_err(Failure::input)?,
            )),
            path.display().to_string(),
        ),
        None => {
            let node = deployment.node.node(cores());
            (
                Arc::new(StaticInventory::new(vec![node])),
                "the local [node]".to_string(),
            )
        }
    };
    // Errors here are bad input: a label no node has, an unreadable
    // inventory, an invalid policy.
    // As `up` starts its executor: `--workers`, or one per core.
    let workers = args.workers.unwrap_or_else(cores).max(1);
    let plan = deployment
        .plan(inventory, workers)
        .map_err(Failure::input)?;
    if args.json {
        let text = serde_json::to_string_pretty(&plan).map_err(Failure::input)?;
        println!("{text}");
    } else {
        print_plan(&plan, &args.deployment, &source);
    }
    Ok(if plan.all_placed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn print_plan(plan: &Plan, deployment: &std::path::Path, source: &str) {
    println!(
        "plan: {} onto {} ({} node{})\n",
        deployment.display(),
        source,
        plan.nodes,
        if plan.nodes == 1 { "" } else { "s" }
    );
    let rows: Vec<[String; 7]> = plan
        .workloads
        .iter()
        .map(|w| match &w.result {
            Ok(a) => [
                w.name.clone(),
                w.priority.to_string(),
                w.tenant.clone(),
                a.node_id.to_string(),
                a.zone.clone(),
                a.score.to_string(),
                format!(
                    "{}/{}",
                    a.explanation.feasible(),
                    a.explanation.considered()
                ),
            ],
            Err(e) => [
                w.name.clone(),
                w.priority.to_string(),
                w.tenant.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                match e {
                    ScheduleError::Unschedulable { .. } => "UNSCHEDULABLE".into(),
                    _ => "REFUSED".into(),
                },
            ],
        })
        .collect();
    let header = [
        "WORKLOAD", "PRIORITY", "TENANT", "NODE", "ZONE", "SCORE", "FIT",
    ];
    let mut width = header.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 5 {
                s.push_str(&format!("{c:>w$}  ", w = width[i]));
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(&header.map(String::from));
    for r in &rows {
        line(r);
    }
    println!();
    for w in &plan.workloads {
        explain(w);
    }
    let placed = plan.workloads.iter().filter(|w| w.result.is_ok()).count();
    let failed = plan.workloads.len() - placed;
    println!(
        "{placed} placed, {failed} not placed; {} decisions, {} preemption{}",
        plan.metrics.decisions,
        plan.metrics.preemptions,
        if plan.metrics.preemptions == 1 {
            ""
        } else {
            "s"
        }
    );
}

fn explain(w: &PlannedWorkload) {
    let at = w.line.map(|l| format!(" (line {l})")).unwrap_or_default();
    match &w.result {
        Ok(a) => {
            println!("{}{at} -> {} [{}]", w.name, a.node_id, a.zone);
            groups(&a.explanation);
            for (i, s) in a.explanation.scores().iter().take(3).enumerate() {
                println!(
                    "    {} {} {} (load {}, balance {}, spread {}, preferred {}, trust {})",
                    if i == 0 { "chosen" } else { "   or " },
                    s.node,
                    s.score,
                    s.parts.load,
                    s.parts.balance,
                    s.parts.spread,
                    s.parts.preferred,
                    s.parts.trust
                );
            }
            if let Some(note) = a.explanation.note() {
                println!("    {note}");
            }
            if let Some(by) = &w.preempted_by {
                println!("    moved here after being preempted by `{by}`");
            }
        }
        Err(ScheduleError::Unschedulable { explanation, .. }) => {
            println!(
                "{}{at}: UNSCHEDULABLE, {} of {} nodes fit",
                w.name,
                explanation.feasible(),
                explanation.considered()
            );
            groups(explanation);
            if let Some(note) = explanation.note() {
                println!("    {note}");
            }
            if let Some(by) = &w.preempted_by {
                println!("    preempted by `{by}`");
            }
        }
        Err(e) => println!("{}{at}: REFUSED: {e}", w.name),
    }
    println!();
}

fn groups(e: &Explanation) {
    for (i, g) in e.rejected().iter().enumerate() {
        let nodes: Vec<String> = e.rejected_nodes(i).take(6).map(|n| n.to_string()).collect();
        let more = if g.count as usize > nodes.len() {
            format!(", ... (+{})", g.count as usize - nodes.len())
        } else {
            String::new()
        };
        println!(
            "    {:>4} rejected by {}: {}{more}",
            g.count,
            g.reason,
            nodes.join(", ")
        );
    }
}
