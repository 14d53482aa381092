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
//! # Paths are relative to this file. Every top-level key but `boot` is optional.
//! boot          = "signatures"                 # required: manifest | signatures
//! state_dir     = ".forgeone"                  # default ".forgeone"
//! trust_anchor  = ".forgeone/anchor.json"      # default <state_dir>/anchor.json
//! boot_manifest = ".forgeone/boot.json"        # manifest mode only; default <state_dir>/boot-manifest.json
//! host_key      = ".forgeone/host.pem"         # default <state_dir>/host.pem
//! audit_log     = ".forgeone/audit.jsonl"      # default <state_dir>/audit.jsonl
//! boot_policy   = "fail-closed"                # fail-closed (alias strict) | recover | degraded
//! allow_recovery_downgrade = false             # may recovery run an older copy? default false
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
//! network = true                               # its workloads may be granted the network; default false
//!
//! [[workload]]
//! name = "api"
//! component = "target/wasm32-wasip2/release/hello.wasm"
//! signature = "target/wasm32-wasip2/release/hello.wasm.sig.json"  # signatures mode only
//! priority = "critical"
//! tenant = "acme"
//! principal = "svc-api"                        # default: the workload name
//! restart = "on-failure"                       # never | on-failure | always
//! worker = 0                                   # pin to executor worker 0; default any
//! replicas = 3                                 # copies in a cluster, spread across zones; default 1
//! file_io = "on-thread"                        # on-thread | pool: where file calls run; default on-thread
//! labels = { app = "api" }
//! resources = { fuel = "50M", memory = "64MiB", cpu = 0.5, timeout = "5s", open_files = 256 }
//! constraints.location = "eu-*"                # or a list of alternatives
//! constraints.labels = ["disk in (ssd, nvme)", "tier notin (spot)"]
//! constraints.anti_affinity = ["app=batch"]
//! constraints.preferred = [{ location = "eu-west-1a", weight = 50 }]
//! capabilities = { dirs = ["data::/data"], env = { RUST_LOG = "info" }, args = ["--port", "8080"], network = true, stdin = "requests.jsonl" }
//! ```
//!
//! The boot mode is explicit so that deleting the manifest can never switch
//! rollback protection off: in manifest mode a missing manifest is an error,
//! and signatures mode is refused once the state directory has accepted a
//! manifest. In manifest mode each workload's `component` must be a file the
//! manifest lists (it is matched by its path, never by a similar name).
//!
//! A directory grant is `HOST::GUEST`, read-only unless it ends in `:rw`
//! ([`DirGrant::parse`](crate::runtime::DirGrant::parse), the parser
//! `forgeone run --dir` uses too). `stdin` names a regular file (relative to
//! the deployment file) that every run of the workload reads as its standard
//! input from the start; without it stdin is empty. It is recorded with the
//! other grants in `container.created`. `file_io = "pool"` runs every file
//! call of the workload on a pool thread instead of the thread that runs it
//! (for directories on filesystems that can stall: see
//! [`FileIo`](crate::runtime::FileIo)). Network access is granted by the tenant's
//! policy (`network = true` on the `[[tenant]]`), never by the workload alone;
//! trust likewise comes from the tenant's `trust` and the verified signers.

mod boot;
mod convert;
mod error;
mod nodes;
mod parse;
mod plan;
mod raw;
mod types;
pub(crate) mod units;
mod workload;

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::policy::PolicySet;
use crate::scheduler::LabelSelector;

pub use error::{DeploymentError, MAX_DEPLOYMENT_BYTES, Problem};
pub use nodes::{MAX_NODE_COUNT, MAX_NODES_BYTES, parse_nodes, read_nodes};
pub use plan::{Plan, PlanError, PlannedWorkload};
pub use types::{
    BootMode, Capabilities, ConstraintSpec, KnownLabels, MAX_REPLICAS, NodeConfig, Preference,
    PreferenceKind, ResourceSpec, Settings, Supervision, TenantSpec, WorkloadSpec,
};
pub use units::parse_size;

use parse::{Cx, items, node_config, settings, tenants};
pub(crate) use parse::{line_col, read_capped};
use raw::RawDeployment;
use workload::{check_affinity, workloads};

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
        let workloads = workloads(&raw.workload, &base, &tenants, settings.boot, &mut cx);
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
