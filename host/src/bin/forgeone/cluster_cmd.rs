//! The cluster commands: `host`, `deploy`, `undeploy`, `ps`, `stop`,
//! `pause`, `resume`. Each is a call into `forgeone::cluster`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::TrustAnchor;
use forgeone::cluster::{self, Cluster, ClusterView, Desired, HostAgent, HostConfig};
use forgeone::{SigningKey, deployment};

use crate::signals;
use crate::util::{CmdResult, Failure};

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration like 2s: {e}"))
}

/// The NATS server, for every cluster command.
#[derive(Debug, clap::Args)]
pub struct Nats {
    /// The NATS server (with JetStream), e.g. `nats://127.0.0.1:4222`.
    #[arg(long = "nats", env = "FORGEONE_NATS", value_name = "URL")]
    url: String,
}

impl Nats {
    fn connect(&self, rt: &tokio::runtime::Runtime) -> Result<Cluster, Failure> {
        rt.block_on(Cluster::connect(&self.url, Duration::from_secs(5)))
            .map_err(Failure::input)
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::input(format!("cannot start the async runtime: {e}")))
}

/// `forgeone host`: run this machine as a host of the cluster.
///
/// Keeps the node record (from --node) fresh every --heartbeat, takes part
/// in the scheduler lease, runs what is assigned to this node after
/// verifying each component against this host's own --anchor, and writes
/// each replica's status. Ctrl-C or SIGTERM drains: the node is marked
/// leaving (its work is re-placed at once), containers stop gracefully for
/// --stop-grace, the audit log is sealed. A NATS server that does not
/// answer is retried with backoff, and each retry is logged with the URL.
/// A host that cannot renew its node record for three heartbeats (NATS
/// gone, or the process was stopped) stops its containers on its own.
#[derive(Debug, clap::Args)]
pub struct HostArgs {
    #[command(flatten)]
    nats: Nats,
    /// This node: a `nodes.toml` with exactly one `[[node]]` (id, region,
    /// zone, trust, hardware, network, labels, capacity).
    #[arg(long, value_name = "NODE.toml")]
    node: PathBuf,
    /// This host's state: host key, audit log and compiled cache.
    #[arg(long, value_name = "DIR", default_value = ".forgeone-host")]
    state_dir: PathBuf,
    /// The trust anchor this host verifies every component against
    /// (default: STATE_DIR/anchor.json).
    #[arg(long, value_name = "ANCHOR")]
    anchor: Option<PathBuf>,
    /// The host key that signs the audit log's checkpoints (default:
    /// STATE_DIR/host.pem, generated on first start, mode 0600).
    #[arg(long, value_name = "KEY")]
    host_key: Option<PathBuf>,
    /// How often the node record is written; three missed is lost.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    heartbeat: Duration,
    /// Executor workers per deployment on this host.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// How long containers get to stop on Ctrl-C or SIGTERM.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    stop_grace: Duration,
}

pub fn host(args: HostArgs) -> CmdResult {
    let rt = signals::Runtime::start(None)?;
    let mut nodes = deployment::read_nodes(&args.node).map_err(Failure::input)?;
    if nodes.len() != 1 {
        return Err(Failure::input(format!(
            "{}: describes {} nodes; a host is exactly one `[[node]]` (no `count`)",
            args.node.display(),
            nodes.len()
        )));
    }
    let node = nodes.remove(0);
    if !cluster::valid_name(node.id.as_str()) {
        return Err(Failure::input(format!(
            "node id `{}` is not [A-Za-z0-9_-]{{1,64}}",
            node.id
        )));
    }
    std::fs::create_dir_all(&args.state_dir)
        .map_err(|e| Failure::input(format!("{}: {e}", args.state_dir.display())))?;
    let anchor_path = args
        .anchor
        .unwrap_or_else(|| args.state_dir.join("anchor.json"));
    let anchor = TrustAnchor::from_file(&anchor_path).map_err(Failure::input)?;
    let key_path = args
        .host_key
        .unwrap_or_else(|| args.state_dir.join("host.pem"));
    if !key_path.exists() {
        SigningKey::generate()
            .write_pair(&key_path, &key_path.with_extension("pub.pem"))
            .map_err(Failure::input)?;
        eprintln!(
            "forgeone host: generated a host key at {} (a development key: keep it out of version control)",
            key_path.display()
        );
    }
    let key = SigningKey::from_file(&key_path).map_err(Failure::input)?;
    let audit = AuditLog::open(args.state_dir.join("audit.jsonl"), key, &AuditConfig::new())
        .map_err(|e| Failure::input(format!("audit log: {e}")))?;
    let id = node.id.to_string();
    let mut config = HostConfig::new(node, anchor, audit.clone(), &args.state_dir);
    config
        .heartbeat(args.heartbeat)
        .workers(args.workers)
        .grace(args.stop_grace);
    let url = args.nats.url.clone();
    let mut signals = rt.signals();
    let signal = rt.block_on(async move {
        let agent = HostAgent::start(&url, config);
        eprintln!("forgeone host {id}: joining the cluster at {url} (Ctrl-C drains)");
        let (signal, _) = signals.next().await;
        eprintln!("forgeone host {id}: {}: draining", signal.name());
        agent.drain().await;
        signal
    });
    audit
        .close()
        .map_err(|e| Failure::input(format!("audit log: {e}")))?;
    eprintln!("forgeone host: drained; audit log sealed");
    Ok(ExitCode::from(signal.exit_code()))
}

/// `forgeone deploy`: upload a deployment's components and write it as the
/// cluster's desired state.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The deployment (`forgeone.toml`, with `boot = "signatures"`).
    #[arg(value_name = "DEPLOYMENT")]
    deployment: PathBuf,
    #[command(flatten)]
    nats: Nats,
    /// The deployment's name (default: its directory's name).
    #[arg(long)]
    name: Option<String>,
    /// A deploy private key (PKCS#8 PEM) to sign the deployment with; its
    /// public key must be in the hosts' anchors as a `deploy` key (`anchor
    /// init --deploy-key`). Repeat to reach a threshold.
    #[arg(long = "key", value_name = "KEY.pem", required = true)]
    keys: Vec<PathBuf>,
}

pub fn deploy(args: DeployArgs) -> CmdResult {
    let keys = args
        .keys
        .iter()
        .map(|p| SigningKey::from_file(p).map_err(Failure::input))
        .collect::<Result<Vec<_>, _>>()?;
    let keys: Vec<&SigningKey> = keys.iter().collect();
    let rt = runtime()?;
    let cluster = args.nats.connect(&rt)?;
    let name = args
        .name
        .unwrap_or_else(|| cluster::default_name(&args.deployment));
    let report = rt
        .block_on(cluster::deploy(&cluster, &args.deployment, &name, &keys))
        .map_err(Failure::input)?;
    println!(
        "deployed `{}` to {}, signed by {} deploy key(s)",
        report.name,
        cluster.url(),
        keys.len()
    );
    for (workload, digest) in &report.components {
        println!("  {workload:<20} component blake3:{}", &digest[..16]);
    }
    println!(
        "hosts check the deployment's signature and each component against their own anchor before running it; see `forgeone ps`"
    );
    Ok(ExitCode::SUCCESS)
}

/// `forgeone undeploy`: remove a deployment; its replicas stop.
#[derive(Debug, clap::Args)]
pub struct UndeployArgs {
    /// The deployment's name.
    name: String,
    #[command(flatten)]
    nats: Nats,
}

pub fn undeploy(args: UndeployArgs) -> CmdResult {
    let rt = runtime()?;
    let cluster = args.nats.connect(&rt)?;
    rt.block_on(cluster::undeploy(&cluster, &args.name))
        .map_err(Failure::check)?;
    println!("undeployed `{}`", args.name);
    Ok(ExitCode::SUCCESS)
}

/// `forgeone stop|pause|resume`: change a workload's desired state; the
/// host that runs it carries it out.
#[derive(Debug, clap::Args)]
pub struct WorkloadArgs {
    /// The workload: `DEPLOYMENT/WORKLOAD`, or a name only one deployment has.
    workload: String,
    #[command(flatten)]
    nats: Nats,
}

pub fn desire(args: WorkloadArgs, desired: Desired) -> CmdResult {
    let rt = runtime()?;
    let cluster = args.nats.connect(&rt)?;
    let name = rt
        .block_on(cluster::set_desired(&cluster, &args.workload, desired))
        .map_err(Failure::check)?;
    let verb = match desired {
        Desired::Running => "resume",
        Desired::Stopped => "stop",
        Desired::Paused => "pause",
    };
    println!("asked the host of `{name}` to {verb} it");
    Ok(ExitCode::SUCCESS)
}

/// `forgeone ps`: the cluster's nodes and replicas.
#[derive(Debug, clap::Args)]
pub struct PsArgs {
    #[command(flatten)]
    nats: Nats,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Print again every second until interrupted.
    #[arg(long)]
    watch: bool,
}

pub fn ps(args: PsArgs) -> CmdResult {
    let rt = runtime()?;
    let cluster = args.nats.connect(&rt)?;
    loop {
        let view = rt
            .block_on(ClusterView::read(&cluster))
            .map_err(Failure::input)?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&view).map_err(Failure::input)?
            );
        } else {
            if args.watch {
                print!("\x1b[2J\x1b[H");
            }
            print_view(&view);
        }
        if !args.watch {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn print_view(view: &ClusterView) {
    let now = chrono::Utc::now();
    println!(
        "NODES (scheduler lease: {})",
        view.leader.as_deref().unwrap_or("none")
    );
    println!(
        "  {:<16} {:<12} {:<14} {:<7} {:<9} {:>10} {:>9}  HEARTBEAT",
        "ID", "REGION", "ZONE", "TRUST", "STATE", "CONTAINERS", "MEMORY"
    );
    for n in &view.nodes {
        let beat = n.heartbeat.map_or("-".to_string(), |t| {
            format!("{:.1}s ago", (now - t).num_milliseconds() as f64 / 1000.0)
        });
        println!(
            "  {:<16} {:<12} {:<14} {:<7} {:<9} {:>10} {:>9}  {beat}{}",
            n.id,
            n.region,
            n.zone,
            n.trust.map_or("-".to_string(), |t| t.to_string()),
            n.state,
            n.load.containers,
            bytesize::ByteSize(n.load.memory).to_string(),
            n.reason
                .as_ref()
                .map_or(String::new(), |r| format!("  ({r})"))
        );
    }
    println!("WORKLOADS");
    println!(
        "  {:<28} {:<16} {:<10} {:<11} {:>8}  REASON",
        "DEPLOYMENT/WORKLOAD#REPLICA", "NODE", "PRIORITY", "STATUS", "RESTARTS"
    );
    for r in &view.replicas {
        println!(
            "  {:<28} {:<16} {:<10} {:<11} {:>8}  {}",
            format!("{}/{}#{}", r.deployment, r.workload, r.replica),
            r.node.as_deref().unwrap_or("-"),
            r.priority.to_string(),
            r.status,
            r.restarts,
            r.reason.as_deref().unwrap_or("")
        );
    }
}
