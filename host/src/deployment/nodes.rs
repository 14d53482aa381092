//! The node inventory file, `nodes.toml`, for planning a deployment onto
//! many nodes (`forgeone plan --nodes`).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::identity::TrustLevel;
use crate::scheduler::{Capacity, Node, NodeId};

use super::error::{DeploymentError, Problem};
use super::parse::{line_col, read_capped};
use super::units::{self, Scalar};

/// Most nodes one `[[node]]` entry may describe with `count`.
pub const MAX_NODE_COUNT: u32 = 100_000;

/// Largest node inventory file read (16 MiB).
pub const MAX_NODES_BYTES: u64 = 16 << 20;

/// Reads a `nodes.toml` file (at most [`MAX_NODES_BYTES`]); see
/// [`parse_nodes`] for the format.
pub fn read_nodes(path: impl AsRef<Path>) -> Result<Vec<Node>, DeploymentError> {
    let path = path.as_ref();
    let text = read_capped(path, MAX_NODES_BYTES).map_err(|source| DeploymentError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_nodes(&text, path)
}

/// Parses `nodes.toml` text; `path` only names the file in errors. The
/// first problem found is reported, with its line and column.
///
/// ```toml
/// [[node]]
/// id = "fra-1"                 # with `count = 3`: fra-1-1, fra-1-2, fra-1-3
/// region = "eu-central"
/// zone = "eu-central-1a"
/// trust = "high"               # default medium
/// hardware = ["x86_64", "avx2"]
/// network = ["public"]
/// labels = { disk = "ssd" }
/// capacity = { cpu = 16, memory = "64GiB", storage = "1TiB", containers = 110 }
/// used = { cpu = 2, memory = "8GiB" } # committed by other work; default none
/// ```
pub fn parse_nodes(text: &str, path: &Path) -> Result<Vec<Node>, DeploymentError> {
    let invalid = |span: std::ops::Range<usize>, message: String| {
        let (line, column) = line_col(text, span.start);
        DeploymentError::Invalid {
            path: path.to_owned(),
            problems: vec![Problem {
                line,
                column,
                workload: None,
                message,
            }],
        }
    };
    let raw: RawNodes = toml::from_str(text)
        .map_err(|e| invalid(e.span().unwrap_or(0..0), e.message().trim_end().to_string()))?;
    let mut nodes = Vec::new();
    let mut seen = HashSet::new();
    for n in raw.node {
        let count = n.count.as_ref().map(|c| *c.get_ref()).unwrap_or(1);
        if count == 0 || count > MAX_NODE_COUNT {
            let span = n.count.as_ref().map(|c| c.span()).unwrap_or(0..0);
            return Err(invalid(
                span,
                format!("`count` must be within 1..={MAX_NODE_COUNT}, got {count}"),
            ));
        }
        let trust = match &n.trust {
            Some(t) => t.get_ref().parse().map_err(|e| invalid(t.span(), e))?,
            None => TrustLevel::Medium,
        };
        let capacity = n
            .capacity
            .resolve(u32::MAX)
            .map_err(|(span, e)| invalid(span, format!("capacity: {e}")))?;
        let used = match &n.used {
            Some(u) => u
                .resolve(0)
                .map_err(|(span, e)| invalid(span, format!("used: {e}")))?,
            None => Capacity::default(),
        };
        let utilisation = match &n.utilisation {
            Some(u) if !(0.0..=1.0).contains(u.get_ref()) => {
                return Err(invalid(
                    u.span(),
                    "`utilisation` must be within 0..=1".into(),
                ));
            }
            u => u.as_ref().map(|u| *u.get_ref()),
        };
        for label in n.hardware.iter().chain(&n.network) {
            units::check_label(label.get_ref()).map_err(|e| invalid(label.span(), e))?;
        }
        for (k, v) in &n.labels {
            units::check_label(k).map_err(|e| invalid(v.span(), e))?;
            units::check_label(v.get_ref()).map_err(|e| invalid(v.span(), e))?;
        }
        for i in 1..=count {
            let id = if n.count.is_some() {
                format!("{}-{i}", n.id.get_ref())
            } else {
                n.id.get_ref().clone()
            };
            if !seen.insert(id.clone()) {
                return Err(invalid(n.id.span(), format!("duplicate node id `{id}`")));
            }
            nodes.push(Node {
                id: NodeId::new(id),
                region: n.region.clone(),
                zone: n.zone.clone(),
                hardware: n.hardware.iter().map(|s| s.get_ref().clone()).collect(),
                network: n.network.iter().map(|s| s.get_ref().clone()).collect(),
                labels: n
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.get_ref().clone()))
                    .collect(),
                capacity,
                used,
                utilisation,
                trust,
            });
        }
    }
    if nodes.is_empty() {
        return Err(invalid(0..0, "no `[[node]]` entries".into()));
    }
    Ok(nodes)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNodes {
    #[serde(default)]
    node: Vec<RawNode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: Spanned<String>,
    #[serde(default)]
    count: Option<Spanned<u32>>,
    region: String,
    zone: String,
    #[serde(default)]
    trust: Option<Spanned<String>>,
    #[serde(default)]
    hardware: Vec<Spanned<String>>,
    #[serde(default)]
    network: Vec<Spanned<String>>,
    #[serde(default)]
    labels: BTreeMap<String, Spanned<String>>,
    capacity: RawCapacity,
    #[serde(default)]
    used: Option<RawCapacity>,
    #[serde(default)]
    utilisation: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapacity {
    #[serde(default)]
    cpu: Option<Spanned<Scalar>>,
    #[serde(default)]
    memory: Option<Spanned<Scalar>>,
    #[serde(default)]
    storage: Option<Spanned<Scalar>>,
    #[serde(default)]
    containers: Option<Spanned<u32>>,
}

impl RawCapacity {
    fn resolve(
        &self,
        default_containers: u32,
    ) -> Result<Capacity, (std::ops::Range<usize>, String)> {
        let with_span = |s: &Spanned<Scalar>, r: Result<u64, String>| r.map_err(|e| (s.span(), e));
        Ok(Capacity {
            cpu_millis: match &self.cpu {
                Some(c) => with_span(c, units::cpu_millis(c.get_ref()))?,
                None => 0,
            },
            memory: match &self.memory {
                Some(m) => with_span(m, units::size(m.get_ref()))?,
                None => 0,
            },
            storage: match &self.storage {
                Some(s) => with_span(s, units::size(s.get_ref()))?,
                None => 0,
            },
            containers: self
                .containers
                .as_ref()
                .map(|c| *c.get_ref())
                .unwrap_or(default_containers),
        })
    }
}
