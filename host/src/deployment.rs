//! The deployment file, `forgeone.toml`: what to run, as whom, how urgently,
//! with what, and where.
//!
//! Strict TOML in the spirit of `spin.toml`: unknown keys, typos, bad units
//! and contradictions are errors that name the file, line and column (and
//! the workload), and nothing starts. This module holds plain data (paths,
//! sizes, durations, strings); the scheduler and the runtime turn it into
//! their own types.
//!
//! ```toml
//! # Paths are relative to this file. Every top-level key is optional.
//! state_dir     = ".forgeone"                  # default ".forgeone"
//! trust_anchor  = ".forgeone/anchor.json"      # default <state_dir>/anchor.json
//! boot_manifest = ".forgeone/boot.json"        # default <state_dir>/boot-manifest.json
//! host_key      = ".forgeone/host.pem"         # default <state_dir>/host.pem
//! audit_log     = ".forgeone/audit.jsonl"      # default <state_dir>/audit.jsonl
//! boot_policy   = "strict"                     # strict | recover | degraded
//!
//! [supervision]                                # restart backoff and crash-loop detection
//! backoff = "10s"                              # first restart delay; doubles each time
//! max_backoff = "5m"                           # the longest delay
//! healthy_after = "10m"                        # a run this long resets the count
//! quarantine_after = 5                         # failed runs in a row before quarantine
//!
//! [node]                                       # this host, as a placement node
//! id = "local"
//! region = "eu-west"
//! zone = "eu-west-1a"
//! trust = "high"
//! hardware = ["x86_64"]
//! network = ["public"]
//! labels = { disk = "ssd", tier = "standard" }
//! memory = "2GiB"                              # offered to containers
//!
//! [[tenant]]
//! name = "acme"
//! max_priority = "critical"                    # default normal
//! max_containers = 10                          # default unlimited
//! cpu_share = 0.75                             # of the inventory's CPU; default unlimited
//! allowed_locations = ["eu-*"]                 # default anywhere
//! isolation = "shared"                         # shared | tenant | signer
//! trust = "high"                               # trust granted by policy; default medium
//!
//! [[workload]]
//! name = "api"
//! component = "target/wasm32-wasip2/release/hello.wasm"
//! signature = "target/wasm32-wasip2/release/hello.wasm.sig.json"
//! priority = "critical"
//! tenant = "acme"
//! principal = "svc-api"                        # default: the workload name
//! restart = "on-failure"                       # never | on-failure | always
//! worker = 0                                   # pin to executor worker 0; default any
//! labels = { app = "api" }
//! resources = { fuel = "50M", memory = "64MiB", cpu = 0.5, timeout = "5s" }
//! constraints.location = "eu-*"                # or a list of alternatives
//! constraints.labels = ["disk in (ssd, nvme)", "tier notin (spot)"]
//! constraints.anti_affinity = ["app=batch"]
//! constraints.preferred = [{ location = "eu-west-1a", weight = 50 }]
//! capabilities = { dirs = ["data::/data:ro"], env = { RUST_LOG = "info" }, args = ["--port", "8080"] }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::identity::{Priority, TrustLevel};
use crate::policy::{Isolation, PolicySet, TenantPolicy};
use crate::scheduler::{AffinityTerm, LabelSelector, LocationPattern};

/// Largest deployment file accepted (1 MiB).
pub const MAX_DEPLOYMENT_BYTES: u64 = 1 << 20;

/// One problem in a deployment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The workload (or tenant) it concerns, if any.
    pub workload: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.line, self.column)?;
        if let Some(w) = &self.workload {
            write!(f, "workload `{w}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Errors reading a deployment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeploymentError {
    /// The file could not be read (or is larger than the cap).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not valid: TOML syntax, unknown keys, bad values or
    /// contradictions. Each problem names its line and column.
    #[error("{}", render(path, problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
}

fn render(path: &Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}:{p}", path.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

impl DeploymentError {
    /// The problems (empty for I/O errors).
    pub fn problems(&self) -> &[Problem] {
        match self {
            DeploymentError::Invalid { problems, .. } => problems,
            DeploymentError::Io { .. } => &[],
        }
    }
}

/// What boot does when a component fails verification.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BootPolicy {
    /// Any failure stops the boot. The default.
    #[default]
    Strict,
    /// Fall back to the last-known-good copy if it still verifies, else
    /// stop.
    Recover,
    /// Fall back if possible, else boot without the failing component.
    Degraded,
}

/// The top-level settings, paths resolved against the file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// The state directory (keys, last-known-good copies, rollback state).
    pub state_dir: PathBuf,
    /// The trust anchor.
    pub trust_anchor: PathBuf,
    /// The signed boot manifest.
    pub boot_manifest: PathBuf,
    /// The host's signing key (audit checkpoints).
    pub host_key: PathBuf,
    /// The audit log.
    pub audit_log: PathBuf,
    /// What boot does with a failing component.
    pub boot_policy: BootPolicy,
    /// Restart backoff and crash-loop detection (`[supervision]`).
    pub supervision: Supervision,
}

/// Restart backoff and crash-loop detection for every container
/// (`[supervision]`); the defaults are Kubernetes': 10 s doubling to 5 min,
/// reset after 10 min healthy, and quarantine after 5 failed runs in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Supervision {
    /// The first restart delay (`backoff`); it doubles with each failure.
    pub backoff: Duration,
    /// The longest restart delay (`max_backoff`).
    pub max_backoff: Duration,
    /// A run lasting this long resets the backoff (`healthy_after`).
    pub healthy_after: Duration,
    /// Failed runs in a row that quarantine a container (`quarantine_after`).
    pub quarantine_after: u32,
}

impl Default for Supervision {
    fn default() -> Self {
        Supervision {
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(300),
            healthy_after: Duration::from_secs(600),
            quarantine_after: 5,
        }
    }
}

/// The local host as a node (`[node]`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeConfig {
    /// Node id. Default `local`.
    pub id: String,
    /// Region. Default `local`.
    pub region: String,
    /// Zone. Default `local`.
    pub zone: String,
    /// Trust of this node. Default `medium`.
    pub trust: TrustLevel,
    /// Hardware labels.
    pub hardware: Vec<String>,
    /// Network labels.
    pub network: Vec<String>,
    /// Custom labels.
    pub labels: BTreeMap<String, String>,
    /// CPU offered, thousandths of a core. Default: all cores.
    pub cpu_millis: Option<u64>,
    /// Memory offered to containers. Default 1 GiB.
    pub memory: Option<u64>,
    /// Storage offered. Default 0.
    pub storage: Option<u64>,
    /// Container limit. Default unlimited.
    pub containers: Option<u32>,
}

/// A tenant's policy as written (`[[tenant]]`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TenantSpec {
    /// The tenant's name.
    pub name: String,
    /// Priority cap. Default `normal`.
    pub max_priority: Priority,
    /// Concurrent container limit.
    pub max_containers: Option<u32>,
    /// Share of the inventory's CPU (0..=1).
    pub cpu_share: Option<f64>,
    /// Allowed location patterns (empty: anywhere).
    pub allowed_locations: Vec<String>,
    /// Isolation.
    pub isolation: Isolation,
    /// Trust granted by policy. Default `medium`.
    pub trust: TrustLevel,
}

impl TenantSpec {
    /// The tenant's policy.
    pub fn policy(&self) -> TenantPolicy {
        let mut policy = TenantPolicy::new();
        policy
            .max_priority(self.max_priority)
            .isolation(self.isolation)
            .trust(self.trust);
        if let Some(n) = self.max_containers {
            policy.max_containers(n);
        }
        if let Some(share) = self.cpu_share {
            policy.cpu_share(share);
        }
        for l in &self.allowed_locations {
            policy.allow_location(l.clone());
        }
        policy.build()
    }
}

/// Resource requirements as written, in base units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResourceSpec {
    /// Fuel per run.
    pub fuel: Option<u64>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// CPU in thousandths of a core.
    pub cpu_millis: Option<u32>,
    /// Wall-clock deadline.
    pub timeout: Option<Duration>,
    /// Storage grant in bytes.
    pub storage: Option<u64>,
}

/// What a preference constrains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PreferenceKind {
    /// A location pattern.
    Location,
    /// A hardware label.
    Hardware,
    /// A network label.
    Network,
    /// A node-label selector.
    Label,
    /// A workload to be near.
    Affinity,
    /// A workload to stay away from.
    AntiAffinity,
}

/// A soft constraint with its weight (1..=100).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Preference {
    /// What it constrains.
    pub kind: PreferenceKind,
    /// The rule's text.
    pub value: String,
    /// Its weight.
    pub weight: u32,
}

/// Placement constraints as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConstraintSpec {
    /// Location patterns; any one may match.
    pub location: Vec<String>,
    /// Hardware labels; all required.
    pub hardware: Vec<String>,
    /// Network labels; all required.
    pub network: Vec<String>,
    /// Node-label selectors; all required.
    pub labels: Vec<String>,
    /// Affinity terms; all required.
    pub affinity: Vec<String>,
    /// Anti-affinity terms; all required.
    pub anti_affinity: Vec<String>,
    /// Preferences.
    pub preferred: Vec<Preference>,
}

/// A preopened directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DirGrant {
    /// The host directory (resolved against the deployment's directory).
    pub host: PathBuf,
    /// Where the guest sees it.
    pub guest: String,
    /// Read-only (`:ro`, the default) or read-write (`:rw`).
    pub read_only: bool,
}

/// What the workload may touch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Preopened directories.
    pub dirs: Vec<DirGrant>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Arguments (after the program name).
    pub args: Vec<String>,
    /// Network access. Default false.
    pub network: bool,
}

/// What the supervisor does when the workload exits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestartPolicy {
    /// Never restart. The default.
    #[default]
    Never,
    /// Restart after a failure (trap, non-zero exit, timeout).
    OnFailure,
    /// Restart whenever it ends.
    Always,
}

/// One `[[workload]]`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WorkloadSpec {
    /// Unique name.
    pub name: String,
    /// The component file (resolved).
    pub component: PathBuf,
    /// Its detached signature (resolved), if given.
    pub signature: Option<PathBuf>,
    /// Priority. Default `normal`.
    pub priority: Priority,
    /// Tenant (must have a `[[tenant]]`).
    pub tenant: String,
    /// Principal. Default: the workload name.
    pub principal: String,
    /// Workload labels.
    pub labels: BTreeMap<String, String>,
    /// Resources.
    pub resources: ResourceSpec,
    /// Constraints.
    pub constraints: ConstraintSpec,
    /// Capabilities.
    pub capabilities: Capabilities,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Executor worker (0-based) the container is pinned to (`worker`):
    /// it runs only there and is never stolen. Default: any worker.
    pub worker: Option<usize>,
}

/// Labels present on at least one node, for [`Deployment::check_labels`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownLabels {
    /// Hardware labels.
    pub hardware: BTreeSet<String>,
    /// Network labels.
    pub network: BTreeSet<String>,
    /// Custom label keys.
    pub label_keys: BTreeSet<String>,
}

/// A parsed, validated `forgeone.toml`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Deployment {
    /// The file it was read from.
    pub path: PathBuf,
    /// Top-level settings.
    pub settings: Settings,
    /// The local node.
    pub node: NodeConfig,
    /// Tenants.
    pub tenants: Vec<TenantSpec>,
    /// Workloads, in file order.
    pub workloads: Vec<WorkloadSpec>,
    source: Arc<str>,
    raw: Arc<RawDeployment>,
}

impl Deployment {
    /// Reads and validates `path` (at most [`MAX_DEPLOYMENT_BYTES`]).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Deployment, DeploymentError> {
        let path = path.as_ref();
        let text =
            read_capped(path, MAX_DEPLOYMENT_BYTES).map_err(|source| DeploymentError::Io {
                path: path.to_owned(),
                source,
            })?;
        Deployment::parse(&text, path)
    }

    /// Validates `text`; `path` names the file in errors and relative paths
    /// resolve against its directory.
    pub fn parse(text: &str, path: &Path) -> Result<Deployment, DeploymentError> {
        let mut cx = Cx {
            text,
            problems: Vec::new(),
        };
        let raw: RawDeployment = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                cx.push(
                    e.span().unwrap_or(0..0),
                    None,
                    e.message().trim_end().to_string(),
                );
                return Err(cx.into_error(path));
            }
        };
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let settings = settings(&raw, &base, &mut cx);
        let node = node_config(raw.node.as_ref(), &mut cx);
        let tenants = tenants(&raw.tenant, &mut cx);
        let workloads = workloads(&raw.workload, &base, &tenants, &mut cx);
        check_affinity(&raw.workload, &workloads, &mut cx);
        if !cx.problems.is_empty() {
            return Err(cx.into_error(path));
        }
        Ok(Deployment {
            path: path.to_owned(),
            settings,
            node,
            tenants,
            workloads,
            source: Arc::from(text),
            raw: Arc::new(raw),
        })
    }

    /// Checks that every hardware, network and node-label key a constraint
    /// (or preference) names exists on at least one node of `known`; each
    /// miss is a problem naming the line and the workload.
    pub fn check_labels(&self, known: &KnownLabels) -> Result<(), DeploymentError> {
        let mut cx = Cx {
            text: &self.source,
            problems: Vec::new(),
        };
        let list = |set: &BTreeSet<String>| -> String {
            if set.is_empty() {
                "none".into()
            } else {
                set.iter().cloned().collect::<Vec<_>>().join(", ")
            }
        };
        for w in &self.raw.workload {
            let name = Some(w.name.get_ref().as_str());
            let Some(c) = &w.constraints else { continue };
            let mut hw: Vec<(Range<usize>, &str)> = items(c.hardware.as_ref());
            let mut net: Vec<(Range<usize>, &str)> = items(c.network.as_ref());
            let mut labels: Vec<(Range<usize>, &str)> = items(c.labels.as_ref());
            for p in &c.preferred {
                let r = p.get_ref();
                if let Some(v) = &r.hardware {
                    hw.push((v.span(), v.get_ref()));
                }
                if let Some(v) = &r.network {
                    net.push((v.span(), v.get_ref()));
                }
                if let Some(v) = &r.labels {
                    labels.push((v.span(), v.get_ref()));
                }
            }
            for (span, label) in hw {
                if !known.hardware.contains(label.trim()) {
                    cx.push(
                        span,
                        name,
                        format!(
                            "hardware label `{label}` is on no node (known: {})",
                            list(&known.hardware)
                        ),
                    );
                }
            }
            for (span, label) in net {
                if !known.network.contains(label.trim()) {
                    cx.push(
                        span,
                        name,
                        format!(
                            "network label `{label}` is on no node (known: {})",
                            list(&known.network)
                        ),
                    );
                }
            }
            for (span, text) in labels {
                if let Ok(sel) = LabelSelector::parse(text)
                    && !known.label_keys.contains(&sel.key)
                {
                    cx.push(
                        span,
                        name,
                        format!(
                            "label `{}` in selector `{text}` is on no node (known: {})",
                            sel.key,
                            list(&known.label_keys)
                        ),
                    );
                }
            }
        }
        if cx.problems.is_empty() {
            Ok(())
        } else {
            Err(cx.into_error(&self.path))
        }
    }

    /// The workload named `name`.
    pub fn workload(&self, name: &str) -> Option<&WorkloadSpec> {
        self.workloads.iter().find(|w| w.name == name)
    }

    /// The tenant named `name`.
    pub fn tenant(&self, name: &str) -> Option<&TenantSpec> {
        self.tenants.iter().find(|t| t.name == name)
    }

    /// The policies of the `[[tenant]]` entries, with no default policy:
    /// a workload of any other tenant is refused.
    pub fn policies(&self) -> PolicySet {
        let mut set = PolicySet::new();
        for t in &self.tenants {
            set.tenant(t.name.clone(), t.policy());
        }
        set
    }

    /// The 1-based line where workload `name` is declared.
    pub fn line_of(&self, name: &str) -> Option<usize> {
        self.raw
            .workload
            .iter()
            .find(|w| w.name.get_ref() == name)
            .map(|w| line_col(&self.source, w.name.span().start).0)
    }
}

fn items(list: Option<&Spanned<List>>) -> Vec<(Range<usize>, &str)> {
    match list {
        None => Vec::new(),
        Some(l) => l
            .get_ref()
            .0
            .iter()
            .map(|(span, s)| (span.clone().unwrap_or_else(|| l.span()), s.as_str()))
            .collect(),
    }
}

struct Cx<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Cx<'_> {
    fn push(&mut self, span: Range<usize>, workload: Option<&str>, message: String) {
        let (line, column) = line_col(self.text, span.start);
        self.problems.push(Problem {
            line,
            column,
            workload: workload.map(str::to_string),
            message,
        });
    }

    fn into_error(mut self, path: &Path) -> DeploymentError {
        self.problems.sort_by_key(|p| (p.line, p.column));
        DeploymentError::Invalid {
            path: path.to_owned(),
            problems: self.problems,
        }
    }

    fn parse<T: std::str::FromStr<Err = String>>(
        &mut self,
        v: &Spanned<String>,
        workload: Option<&str>,
    ) -> Option<T> {
        match v.get_ref().parse() {
            Ok(t) => Some(t),
            Err(e) => {
                self.push(v.span(), workload, e);
                None
            }
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Reads a UTF-8 file, refusing one larger than `cap` bytes before reading.
pub(crate) fn read_capped(path: &Path, cap: u64) -> std::io::Result<String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("file is {len} bytes, larger than the {cap}-byte limit"),
        ));
    }
    let mut text = String::new();
    file.take(cap + 1).read_to_string(&mut text)?;
    Ok(text)
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

fn settings(raw: &RawDeployment, base: &Path, cx: &mut Cx<'_>) -> Settings {
    let state_dir = resolve(
        base,
        raw.state_dir.as_ref().map_or(".forgeone", |s| s.get_ref()),
    );
    let path_or = |v: &Option<Spanned<String>>, default: &str| match v {
        Some(v) => resolve(base, v.get_ref()),
        None => state_dir.join(default),
    };
    let boot_policy = match &raw.boot_policy {
        None => BootPolicy::Strict,
        Some(v) => match v.get_ref().as_str() {
            "strict" => BootPolicy::Strict,
            "recover" => BootPolicy::Recover,
            "degraded" => BootPolicy::Degraded,
            other => {
                cx.push(
                    v.span(),
                    None,
                    format!("unknown boot_policy `{other}` (expected strict, recover or degraded)"),
                );
                BootPolicy::Strict
            }
        },
    };
    Settings {
        trust_anchor: path_or(&raw.trust_anchor, "anchor.json"),
        boot_manifest: path_or(&raw.boot_manifest, "boot-manifest.json"),
        host_key: path_or(&raw.host_key, "host.pem"),
        audit_log: path_or(&raw.audit_log, "audit.jsonl"),
        state_dir,
        boot_policy,
        supervision: supervision(raw.supervision.as_ref(), cx),
    }
}

fn supervision(raw: Option<&RawSupervision>, cx: &mut Cx<'_>) -> Supervision {
    let mut sup = Supervision::default();
    let Some(raw) = raw else { return sup };
    let mut duration = |v: &Option<Spanned<units::Scalar>>, key: &str, out: &mut Duration| {
        if let Some(v) = v {
            match units::duration(v.get_ref()) {
                Ok(d) if d.is_zero() => cx.push(
                    v.span(),
                    None,
                    format!("supervision.{key}: must be longer than zero"),
                ),
                Ok(d) => *out = d,
                Err(e) => cx.push(v.span(), None, format!("supervision.{key}: {e}")),
            }
        }
    };
    duration(&raw.backoff, "backoff", &mut sup.backoff);
    duration(&raw.max_backoff, "max_backoff", &mut sup.max_backoff);
    duration(&raw.healthy_after, "healthy_after", &mut sup.healthy_after);
    if let Some(n) = &raw.quarantine_after {
        if *n.get_ref() == 0 {
            cx.push(
                n.span(),
                None,
                "supervision.quarantine_after: must be at least 1".into(),
            );
        } else {
            sup.quarantine_after = *n.get_ref();
        }
    }
    if let Some(max) = &raw.max_backoff
        && sup.max_backoff < sup.backoff
    {
        cx.push(
            max.span(),
            None,
            format!(
                "supervision.max_backoff ({}) is shorter than backoff ({})",
                humantime::format_duration(sup.max_backoff),
                humantime::format_duration(sup.backoff)
            ),
        );
    }
    sup
}

fn node_config(raw: Option<&RawNodeCfg>, cx: &mut Cx<'_>) -> NodeConfig {
    let mut node = NodeConfig {
        id: "local".into(),
        region: "local".into(),
        zone: "local".into(),
        trust: TrustLevel::Medium,
        hardware: Vec::new(),
        network: Vec::new(),
        labels: BTreeMap::new(),
        cpu_millis: None,
        memory: None,
        storage: None,
        containers: None,
    };
    let Some(raw) = raw else { return node };
    if let Some(id) = &raw.id {
        node.id = id.clone();
    }
    if let Some(r) = &raw.region {
        node.region = r.clone();
    }
    if let Some(z) = &raw.zone {
        node.zone = z.clone();
    }
    if let Some(t) = &raw.trust {
        node.trust = cx.parse(t, None).unwrap_or_default();
    }
    for (list, out) in [
        (&raw.hardware, &mut node.hardware),
        (&raw.network, &mut node.network),
    ] {
        for l in list {
            match units::check_label(l.get_ref()) {
                Ok(()) => out.push(l.get_ref().clone()),
                Err(e) => cx.push(l.span(), None, e),
            }
        }
    }
    for (k, v) in &raw.labels {
        if let Err(e) = units::check_label(k).and_then(|()| units::check_label(v.get_ref())) {
            cx.push(v.span(), None, e);
        }
        node.labels.insert(k.clone(), v.get_ref().clone());
    }
    let mut size = |v: &Option<Spanned<units::Scalar>>, what: &str| -> Option<u64> {
        let v = v.as_ref()?;
        match units::size(v.get_ref()) {
            Ok(n) => Some(n),
            Err(e) => {
                cx.push(v.span(), None, format!("node {what}: {e}"));
                None
            }
        }
    };
    node.memory = size(&raw.memory, "memory");
    node.storage = size(&raw.storage, "storage");
    if let Some(c) = &raw.cpu {
        match units::cpu_millis(c.get_ref()) {
            Ok(m) => node.cpu_millis = Some(m),
            Err(e) => cx.push(c.span(), None, format!("node cpu: {e}")),
        }
    }
    node.containers = raw.containers;
    node
}

fn tenants(raw: &[RawTenant], cx: &mut Cx<'_>) -> Vec<TenantSpec> {
    let mut out: Vec<TenantSpec> = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for t in raw {
        let name = t.name.get_ref();
        if let Some(first) = seen.get(name.as_str()) {
            cx.push(
                t.name.span(),
                None,
                format!("duplicate tenant `{name}` (first declared at line {first})"),
            );
            continue;
        }
        seen.insert(name, line_col(cx.text, t.name.span().start).0);
        let max_priority = t
            .max_priority
            .as_ref()
            .and_then(|p| cx.parse(p, None))
            .unwrap_or(Priority::Normal);
        let cpu_share = match &t.cpu_share {
            Some(s) if !(0.0..=1.0).contains(s.get_ref()) || *s.get_ref() == 0.0 => {
                cx.push(
                    s.span(),
                    None,
                    format!(
                        "tenant `{name}`: cpu_share must be within (0, 1], got {}",
                        s.get_ref()
                    ),
                );
                None
            }
            s => s.as_ref().map(|s| *s.get_ref()),
        };
        let mut allowed_locations = Vec::new();
        for l in &t.allowed_locations {
            match LocationPattern::parse(l.get_ref()) {
                Ok(_) => allowed_locations.push(l.get_ref().clone()),
                Err(e) => cx.push(l.span(), None, format!("tenant `{name}`: {e}")),
            }
        }
        let isolation = match &t.isolation {
            None => Isolation::Shared,
            Some(v) => match v.get_ref().as_str() {
                "shared" => Isolation::Shared,
                "tenant" => Isolation::Tenant,
                "signer" => Isolation::Signer,
                other => {
                    cx.push(
                        v.span(),
                        None,
                        format!("unknown isolation `{other}` (expected shared, tenant or signer)"),
                    );
                    Isolation::Shared
                }
            },
        };
        let trust = t
            .trust
            .as_ref()
            .and_then(|v| cx.parse(v, None))
            .unwrap_or(TrustLevel::Medium);
        out.push(TenantSpec {
            name: name.clone(),
            max_priority,
            max_containers: t.max_containers,
            cpu_share,
            allowed_locations,
            isolation,
            trust,
        });
    }
    out
}

fn workloads(
    raw: &[RawWorkload],
    base: &Path,
    tenants: &[TenantSpec],
    cx: &mut Cx<'_>,
) -> Vec<WorkloadSpec> {
    let mut out = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for w in raw {
        let name = w.name.get_ref().as_str();
        let wn = Some(name);
        if let Err(e) = units::check_label(name) {
            cx.push(w.name.span(), wn, format!("bad workload name: {e}"));
        }
        if let Some(first) = seen.get(name) {
            cx.push(
                w.name.span(),
                wn,
                format!("duplicate workload name `{name}` (first declared at line {first})"),
            );
        } else {
            seen.insert(name, line_col(cx.text, w.name.span().start).0);
        }
        let priority = w
            .priority
            .as_ref()
            .and_then(|p| cx.parse(p, wn))
            .unwrap_or(Priority::Normal);
        let tenant_name = w.tenant.get_ref();
        match tenants.iter().find(|t| &t.name == tenant_name) {
            None => cx.push(
                w.tenant.span(),
                wn,
                format!(
                    "unknown tenant `{tenant_name}` (declared tenants: {})",
                    if tenants.is_empty() {
                        "none; add a [[tenant]]".to_string()
                    } else {
                        tenants
                            .iter()
                            .map(|t| t.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            ),
            Some(t) if priority > t.max_priority => {
                let span = w.priority.as_ref().map_or(w.name.span(), |p| p.span());
                cx.push(
                    span,
                    wn,
                    format!(
                        "priority `{priority}` is above tenant `{tenant_name}`'s cap `{}`",
                        t.max_priority
                    ),
                );
            }
            Some(_) => {}
        }
        let restart = match &w.restart {
            None => RestartPolicy::Never,
            Some(v) => match v.get_ref().as_str() {
                "never" => RestartPolicy::Never,
                "on-failure" => RestartPolicy::OnFailure,
                "always" => RestartPolicy::Always,
                other => {
                    cx.push(
                        v.span(),
                        wn,
                        format!("unknown restart policy `{other}` (expected never, on-failure or always)"),
                    );
                    RestartPolicy::Never
                }
            },
        };
        let mut labels = BTreeMap::new();
        for (k, v) in &w.labels {
            if let Err(e) = units::check_label(k).and_then(|()| units::check_label(v.get_ref())) {
                cx.push(v.span(), wn, e);
            }
            labels.insert(k.clone(), v.get_ref().clone());
        }
        let resources = resources(w.resources.as_ref(), wn, cx);
        let constraints = constraints(w.constraints.as_ref(), wn, cx);
        let capabilities = capabilities(w.capabilities.as_ref(), base, wn, cx);
        out.push(WorkloadSpec {
            name: name.to_string(),
            component: resolve(base, w.component.get_ref()),
            signature: w.signature.as_ref().map(|s| resolve(base, s.get_ref())),
            priority,
            tenant: tenant_name.clone(),
            principal: w.principal.clone().unwrap_or_else(|| name.to_string()),
            labels,
            resources,
            constraints,
            capabilities,
            restart,
            worker: w.worker,
        });
    }
    out
}

fn resources(raw: Option<&RawResources>, wn: Option<&str>, cx: &mut Cx<'_>) -> ResourceSpec {
    let mut spec = ResourceSpec::default();
    let Some(r) = raw else { return spec };
    let mut take = |v: &Option<Spanned<units::Scalar>>,
                    what: &str,
                    f: fn(&units::Scalar) -> Result<u64, String>|
     -> Option<u64> {
        let v = v.as_ref()?;
        match f(v.get_ref()) {
            Ok(n) => Some(n),
            Err(e) => {
                cx.push(v.span(), wn, format!("resources.{what}: {e}"));
                None
            }
        }
    };
    spec.fuel = take(&r.fuel, "fuel", units::count);
    spec.memory = take(&r.memory, "memory", units::size);
    spec.storage = take(&r.storage, "storage", units::size);
    spec.cpu_millis =
        take(&r.cpu, "cpu", units::cpu_millis).map(|m| u32::try_from(m).unwrap_or(u32::MAX));
    if let Some(t) = &r.timeout {
        match units::duration(t.get_ref()) {
            Ok(d) => spec.timeout = Some(d),
            Err(e) => cx.push(t.span(), wn, format!("resources.timeout: {e}")),
        }
    }
    spec
}

fn constraints(raw: Option<&RawConstraints>, wn: Option<&str>, cx: &mut Cx<'_>) -> ConstraintSpec {
    let mut spec = ConstraintSpec::default();
    let Some(c) = raw else { return spec };
    for (span, v) in items(c.location.as_ref()) {
        match LocationPattern::parse(v) {
            Ok(_) => spec.location.push(v.to_string()),
            Err(e) => cx.push(span, wn, e),
        }
    }
    for (list, out) in [
        (&c.hardware, &mut spec.hardware),
        (&c.network, &mut spec.network),
    ] {
        for (span, v) in items(list.as_ref()) {
            match units::check_label(v) {
                Ok(()) => out.push(v.to_string()),
                Err(e) => cx.push(span, wn, e),
            }
        }
    }
    for (span, v) in items(c.labels.as_ref()) {
        match LabelSelector::parse(v) {
            Ok(_) => spec.labels.push(v.to_string()),
            Err(e) => cx.push(span, wn, e),
        }
    }
    for (list, out) in [
        (&c.affinity, &mut spec.affinity),
        (&c.anti_affinity, &mut spec.anti_affinity),
    ] {
        for (span, v) in items(list.as_ref()) {
            match AffinityTerm::parse(v) {
                Ok(_) => out.push(v.to_string()),
                Err(e) => cx.push(span, wn, e),
            }
        }
    }
    for p in &c.preferred {
        let r = p.get_ref();
        let set: Vec<(PreferenceKind, &Spanned<String>)> = [
            (PreferenceKind::Location, &r.location),
            (PreferenceKind::Hardware, &r.hardware),
            (PreferenceKind::Network, &r.network),
            (PreferenceKind::Label, &r.labels),
            (PreferenceKind::Affinity, &r.affinity),
            (PreferenceKind::AntiAffinity, &r.anti_affinity),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .collect();
        if set.len() != 1 {
            cx.push(
                p.span(),
                wn,
                "a preference names exactly one of location, hardware, network, labels, affinity, anti_affinity (plus weight)".into(),
            );
            continue;
        }
        let (kind, v) = set[0];
        let weight = match &r.weight {
            None => 1,
            Some(wt) if (1..=100).contains(wt.get_ref()) => *wt.get_ref(),
            Some(wt) => {
                cx.push(
                    wt.span(),
                    wn,
                    format!("weight must be within 1..=100, got {}", wt.get_ref()),
                );
                continue;
            }
        };
        let text = v.get_ref();
        let check = match kind {
            PreferenceKind::Location => LocationPattern::parse(text).map(|_| ()),
            PreferenceKind::Hardware | PreferenceKind::Network => units::check_label(text),
            PreferenceKind::Label => LabelSelector::parse(text).map(|_| ()),
            PreferenceKind::Affinity | PreferenceKind::AntiAffinity => {
                AffinityTerm::parse(text).map(|_| ())
            }
        };
        match check {
            Ok(()) => spec.preferred.push(Preference {
                kind,
                value: text.clone(),
                weight,
            }),
            Err(e) => cx.push(v.span(), wn, e),
        }
    }
    spec
}

fn capabilities(
    raw: Option<&RawCaps>,
    base: &Path,
    wn: Option<&str>,
    cx: &mut Cx<'_>,
) -> Capabilities {
    let mut caps = Capabilities::default();
    let Some(c) = raw else { return caps };
    for d in &c.dirs {
        match parse_dir(d.get_ref()) {
            Ok((host, guest, read_only)) => caps.dirs.push(DirGrant {
                host: resolve(base, host),
                guest: guest.to_string(),
                read_only,
            }),
            Err(e) => cx.push(d.span(), wn, e),
        }
    }
    for (k, v) in &c.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.get_ref().contains('\0') {
            cx.push(v.span(), wn, format!("bad environment variable `{k}`"));
        } else {
            caps.env.insert(k.clone(), v.get_ref().clone());
        }
    }
    caps.args = c.args.clone();
    caps.network = c.network.unwrap_or(false);
    caps
}

/// `host::guest[:ro|:rw]`.
fn parse_dir(text: &str) -> Result<(&str, &str, bool), String> {
    let (rest, read_only) = if let Some(r) = text.strip_suffix(":ro") {
        (r, true)
    } else if let Some(r) = text.strip_suffix(":rw") {
        (r, false)
    } else {
        (text, true)
    };
    let Some((host, guest)) = rest.split_once("::") else {
        return Err(format!(
            "directory `{text}`: expected `host::guest`, optionally with `:ro` (default) or `:rw`"
        ));
    };
    if host.is_empty() || guest.is_empty() {
        return Err(format!("directory `{text}`: empty host or guest path"));
    }
    if !guest.starts_with('/') {
        return Err(format!(
            "directory `{text}`: the guest path `{guest}` must be absolute"
        ));
    }
    Ok((host, guest, read_only))
}

/// Rejects affinity terms naming workloads the deployment does not define
/// and affinity cycles (each waits for the other to be placed first).
fn check_affinity(raw: &[RawWorkload], specs: &[WorkloadSpec], cx: &mut Cx<'_>) {
    if raw.len() != specs.len() {
        return;
    }
    let names: HashMap<&str, usize> = specs
        .iter()
        .enumerate()
        .map(|(i, w)| (w.name.as_str(), i))
        .collect();
    let mut edges: Vec<Vec<(usize, Range<usize>)>> = vec![Vec::new(); specs.len()];
    for (i, (r, w)) in raw.iter().zip(specs).enumerate() {
        let Some(c) = &r.constraints else { continue };
        for (list, what) in [
            (&c.affinity, "affinity"),
            (&c.anti_affinity, "anti_affinity"),
        ] {
            for (span, text) in items(list.as_ref()) {
                let Ok(term) = AffinityTerm::parse(text) else {
                    continue;
                };
                if let AffinityTerm::Name(n) = &term
                    && !names.contains_key(n.as_str())
                {
                    cx.push(
                        span.clone(),
                        Some(&w.name),
                        format!(
                            "{what} names workload `{n}`, which this deployment does not define"
                        ),
                    );
                }
                if what == "affinity" {
                    for (j, other) in specs.iter().enumerate() {
                        if j != i && term.matches(&other.name, &other.labels) {
                            edges[i].push((j, span.clone()));
                        }
                    }
                }
            }
        }
    }
    // Depth-first search for a cycle; report each cycle once.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut mark = vec![Mark::New; specs.len()];
    let mut stack: Vec<usize> = Vec::new();
    fn visit(
        i: usize,
        edges: &[Vec<(usize, Range<usize>)>],
        mark: &mut [Mark],
        stack: &mut Vec<usize>,
        found: &mut Vec<(Vec<usize>, Range<usize>)>,
    ) {
        mark[i] = Mark::Active;
        stack.push(i);
        for (j, span) in &edges[i] {
            match mark[*j] {
                Mark::New => visit(*j, edges, mark, stack, found),
                Mark::Active => {
                    let from = stack.iter().position(|&s| s == *j).unwrap_or(0);
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(*j);
                    found.push((cycle, span.clone()));
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        mark[i] = Mark::Done;
    }
    let mut found = Vec::new();
    for i in 0..specs.len() {
        if mark[i] == Mark::New {
            visit(i, &edges, &mut mark, &mut stack, &mut found);
        }
    }
    for (cycle, span) in found {
        let path: Vec<&str> = cycle.iter().map(|&i| specs[i].name.as_str()).collect();
        let last = cycle[cycle.len() - 2];
        cx.push(
            span,
            Some(&specs[last].name),
            format!(
                "affinity cycle: {} (each would wait for the other to be placed first)",
                path.join(" -> ")
            ),
        );
    }
}

/// Units of sizes, counts, CPU and durations, shared with `nodes.toml`.
pub(crate) mod units {
    use std::fmt;
    use std::time::Duration;

    /// A TOML scalar that may carry a unit.
    #[derive(Debug, Clone, PartialEq)]
    pub(crate) enum Scalar {
        Int(i64),
        Float(f64),
        Str(String),
    }

    impl<'de> serde::Deserialize<'de> for Scalar {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Scalar;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a number or a string with a unit")
                }
                fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                    Ok(Scalar::Int(v))
                }
                fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                    i64::try_from(v)
                        .map(Scalar::Int)
                        .map_err(|_| E::custom("number too large"))
                }
                fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                    Ok(Scalar::Float(v))
                }
                fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                    Ok(Scalar::Str(v.to_string()))
                }
            }
            d.deserialize_any(V)
        }
    }

    /// Bytes: an integer, or a string with a unit (`64MiB`, `1.5GB`).
    pub(crate) fn size(v: &Scalar) -> Result<u64, String> {
        match v {
            Scalar::Int(n) if *n >= 0 => Ok(*n as u64),
            Scalar::Int(n) => Err(format!("size {n} is negative")),
            Scalar::Float(f) => Err(format!("size {f} needs a unit, e.g. \"64MiB\"")),
            Scalar::Str(s) => {
                let t = s.trim();
                if !t.chars().any(|c| c.is_ascii_alphabetic()) {
                    return Err(format!("size `{s}` needs a unit, e.g. \"64MiB\""));
                }
                t.parse::<bytesize::ByteSize>()
                    .map(|b| b.as_u64())
                    .map_err(|_| {
                        format!("bad size `{s}` (use a number and a unit: B, KiB, MiB, GiB, KB, MB, GB, ...)")
                    })
            }
        }
    }

    /// A count: an integer, or a string with an SI suffix (`50M`, `2.5G`,
    /// `10_000k`).
    pub(crate) fn count(v: &Scalar) -> Result<u64, String> {
        match v {
            Scalar::Int(n) if *n >= 0 => Ok(*n as u64),
            Scalar::Int(n) => Err(format!("{n} is negative")),
            Scalar::Float(f) => Err(format!("{f} is not a whole number; write e.g. \"1.5M\"")),
            Scalar::Str(s) => {
                let t: String = s.trim().chars().filter(|c| *c != '_').collect();
                let (num, mult) = match t.chars().last() {
                    Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
                    Some('M') => (&t[..t.len() - 1], 1e6),
                    Some('G') => (&t[..t.len() - 1], 1e9),
                    Some('T') => (&t[..t.len() - 1], 1e12),
                    _ => (t.as_str(), 1.0),
                };
                match num.parse::<f64>() {
                    Ok(n) if n >= 0.0 && n.is_finite() && n * mult < u64::MAX as f64 => {
                        Ok((n * mult).round() as u64)
                    }
                    _ => Err(format!(
                        "bad count `{s}` (a number with an optional k, M, G or T suffix, e.g. \"50M\")"
                    )),
                }
            }
        }
    }

    /// Thousandths of a core: cores as a number (`0.5`, `2`) or millicores
    /// as a string (`"500m"`).
    pub(crate) fn cpu_millis(v: &Scalar) -> Result<u64, String> {
        let cores = match v {
            Scalar::Int(n) => *n as f64,
            Scalar::Float(f) => *f,
            Scalar::Str(s) => {
                let t = s.trim();
                if let Some(m) = t.strip_suffix('m') {
                    return m.parse::<u64>().map_err(|_| {
                        format!("bad cpu `{s}` (cores like 0.5, or millicores like \"500m\")")
                    });
                }
                t.parse::<f64>().map_err(|_| {
                    format!("bad cpu `{s}` (cores like 0.5, or millicores like \"500m\")")
                })?
            }
        };
        if !(0.0..=1_000_000.0).contains(&cores) || !cores.is_finite() {
            return Err(format!("cpu {cores} is out of range (0 to 1000000 cores)"));
        }
        Ok((cores * 1000.0).round() as u64)
    }

    /// A duration with a unit (`5s`, `250ms`, `2m`).
    pub(crate) fn duration(v: &Scalar) -> Result<Duration, String> {
        match v {
            Scalar::Str(s) => humantime::parse_duration(s.trim())
                .map_err(|e| format!("bad duration `{s}`: {e} (e.g. \"5s\", \"250ms\")")),
            other => Err(format!(
                "{} needs a unit, e.g. \"5s\"",
                match other {
                    Scalar::Int(n) => n.to_string(),
                    Scalar::Float(f) => f.to_string(),
                    Scalar::Str(s) => s.clone(),
                }
            )),
        }
    }

    /// A label name or value: letters, digits, `.`, `_`, `-`, `/`, 1..=63.
    pub(crate) fn check_label(s: &str) -> Result<(), String> {
        if s.is_empty() || s.len() > 63 {
            return Err(format!("`{s}` must be 1 to 63 characters"));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
        {
            return Err(format!(
                "`{s}` contains `{bad}` (allowed: letters, digits, `.`, `_`, `-`, `/`)"
            ));
        }
        Ok(())
    }
}

/// A string or a list of strings, with each element's span when it has one.
#[derive(Debug, Clone, PartialEq)]
struct List(Vec<(Option<Range<usize>>, String)>);

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = List;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E>(self, v: &str) -> Result<List, E> {
                Ok(List(vec![(None, v.to_string())]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<List, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<Spanned<String>>()? {
                    let span = s.span();
                    out.push((Some(span), s.into_inner()));
                }
                Ok(List(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeployment {
    #[serde(default)]
    state_dir: Option<Spanned<String>>,
    #[serde(default)]
    trust_anchor: Option<Spanned<String>>,
    #[serde(default)]
    boot_manifest: Option<Spanned<String>>,
    #[serde(default)]
    host_key: Option<Spanned<String>>,
    #[serde(default)]
    audit_log: Option<Spanned<String>>,
    #[serde(default)]
    boot_policy: Option<Spanned<String>>,
    #[serde(default)]
    supervision: Option<RawSupervision>,
    #[serde(default)]
    node: Option<RawNodeCfg>,
    #[serde(default)]
    tenant: Vec<RawTenant>,
    #[serde(default)]
    workload: Vec<RawWorkload>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSupervision {
    #[serde(default)]
    backoff: Option<Spanned<units::Scalar>>,
    #[serde(default)]
    max_backoff: Option<Spanned<units::Scalar>>,
    #[serde(default)]
    healthy_after: Option<Spanned<units::Scalar>>,
    #[serde(default)]
    quarantine_after: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNodeCfg {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    trust: Option<Spanned<String>>,
    #[serde(default)]
    hardware: Vec<Spanned<String>>,
    #[serde(default)]
    network: Vec<Spanned<String>>,
    #[serde(default)]
    labels: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    cpu: Option<Spanned<units::Scalar>>,
    #[serde(default)]
    memory: Option<Spanned<units::Scalar>>,
    #[serde(default)]
    storage: Option<Spanned<units::Scalar>>,
    #[serde(default)]
    containers: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    name: Spanned<String>,
    #[serde(default)]
    max_priority: Option<Spanned<String>>,
    #[serde(default)]
    max_containers: Option<u32>,
    #[serde(default)]
    cpu_share: Option<Spanned<f64>>,
    #[serde(default)]
    allowed_locations: Vec<Spanned<String>>,
    #[serde(default)]
    isolation: Option<Spanned<String>>,
    #[serde(default)]
    trust: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    name: Spanned<String>,
    component: Spanned<String>,
    #[serde(default)]
    signature: Option<Spanned<String>>,
    #[serde(default)]
    priority: Option<Spanned<String>>,
    tenant: Spanned<String>,
    #[serde(default)]
    principal: Option<String>,
    #[serde(default)]
    restart: Option<Spanned<String>>,
    #[serde(default)]
    worker: Option<usize>,
    #[serde(default)]
    labels: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    resources: Option<RawResources>,
    #[serde(default)]
    constraints: Option<RawConstraints>,
    #[serde(default)]
    capabilities: Option<RawCaps>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    #[serde(default)]
    fuel: Option<Spanned<units::Scalar>>,
    #[serde(default)]
    memory: Option<Spanned<units::Scalar>>,
    #[serde(default)]
    cpu: Option<Spanned<units::Scalar>>,
    #[serde(default)]
    timeout: Option<Spanned<units::Scalar>>,
    #[serde(default)]
    storage: Option<Spanned<units::Scalar>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConstraints {
    #[serde(default)]
    location: Option<Spanned<List>>,
    #[serde(default)]
    hardware: Option<Spanned<List>>,
    #[serde(default)]
    network: Option<Spanned<List>>,
    #[serde(default)]
    labels: Option<Spanned<List>>,
    #[serde(default)]
    affinity: Option<Spanned<List>>,
    #[serde(default)]
    anti_affinity: Option<Spanned<List>>,
    #[serde(default)]
    preferred: Vec<Spanned<RawPref>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPref {
    #[serde(default)]
    location: Option<Spanned<String>>,
    #[serde(default)]
    hardware: Option<Spanned<String>>,
    #[serde(default)]
    network: Option<Spanned<String>>,
    #[serde(default)]
    labels: Option<Spanned<String>>,
    #[serde(default)]
    affinity: Option<Spanned<String>>,
    #[serde(default)]
    anti_affinity: Option<Spanned<String>>,
    #[serde(default)]
    weight: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaps {
    #[serde(default)]
    dirs: Vec<Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    network: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::units::*;
    use super::*;

    #[test]
    fn unit_parsing() {
        assert_eq!(size(&Scalar::Str("64MiB".into())), Ok(64 << 20));
        assert!(size(&Scalar::Str("64".into())).is_err());
        assert!(size(&Scalar::Str("64MiBs".into())).is_err());
        assert_eq!(count(&Scalar::Str("50M".into())), Ok(50_000_000));
        assert_eq!(count(&Scalar::Int(50_000_000)), Ok(50_000_000));
        assert!(count(&Scalar::Str("50Q".into())).is_err());
        assert_eq!(cpu_millis(&Scalar::Float(0.5)), Ok(500));
        assert_eq!(cpu_millis(&Scalar::Str("250m".into())), Ok(250));
        assert_eq!(
            duration(&Scalar::Str("5s".into())),
            Ok(Duration::from_secs(5))
        );
        assert!(duration(&Scalar::Int(5)).is_err());
        assert_eq!(line_col("a\nbc\nd", 4), (2, 3));
    }

    #[test]
    fn dirs() {
        assert_eq!(parse_dir("data::/data:ro"), Ok(("data", "/data", true)));
        assert_eq!(parse_dir("out::/out:rw"), Ok(("out", "/out", false)));
        assert_eq!(parse_dir("x::/y"), Ok(("x", "/y", true)));
        assert!(parse_dir("x:/y").is_err());
        assert!(parse_dir("x::y").is_err());
    }
}
