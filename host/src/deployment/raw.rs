//! The file as serde reads it: every value with its span, unknown keys
//! refused.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::units;

/// A string or a list of strings, with each element's span when it has one.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct List(pub(super) Vec<(Option<Range<usize>>, String)>);

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
pub(super) struct RawDeployment {
    #[serde(default)]
    pub(super) state_dir: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) trust_anchor: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) boot_manifest: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) host_key: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) audit_log: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) boot_policy: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) boot: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) allow_recovery_downgrade: Option<Spanned<bool>>,
    #[serde(default)]
    pub(super) supervision: Option<RawSupervision>,
    #[serde(default)]
    pub(super) node: Option<RawNodeCfg>,
    #[serde(default)]
    pub(super) tenant: Vec<RawTenant>,
    #[serde(default)]
    pub(super) workload: Vec<RawWorkload>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSupervision {
    #[serde(default)]
    pub(super) backoff: Option<Spanned<units::Scalar>>,
    #[serde(default)]
    pub(super) max_backoff: Option<Spanned<units::Scalar>>,
    #[serde(default)]
    pub(super) healthy_after: Option<Spanned<units::Scalar>>,
    #[serde(default)]
    pub(super) quarantine_after: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNodeCfg {
    #[serde(default)]
    pub(super) id: Option<String>,
    #[serde(default)]
    pub(super) region: Option<String>,
    #[serde(default)]
    pub(super) zone: Option<String>,
    #[serde(default)]
    pub(super) trust: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) hardware: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) network: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) labels: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub(super) cpu: Option<Spanned<units::Scalar>>,
    #[serde(default)]
    pub(super) memory: Option<Spanned<units::Scalar>>,
    #[serde(default)]
    pub(super) storage: Option<Spanned<units::Scalar>>,
    #[serde(default)]
    pub(super) containers: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenant {
    pub(super) name: Spanned<String>,
    #[serde(default)]
    pub(super) max_priority: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) max_containers: Option<u32>,
    #[serde(default)]
    pub(super) cpu_share: Option<Spanned<f64>>,
    #[serde(default)]
    pub(super) allowed_locations: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) isolation: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) trust: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) network: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkload {
    pub(super) name: Spanned<String>,
    pub(super) component: Spanned<String>,
    #[serde(default)]
    pub(super) signature: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) priority: Option<Spanned<String>>,
    pub(super) tenant: Spanned<String>,
    #[serde(default)]
    pub(super) principal: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) restart: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) worker: Option<usize>,
    #[serde(default)]
    pub(super) replicas: Option<Spanned<u32>>,
    pub(super) file_io: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) labels: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub(super) resources: Option<RawResources>,
    #[serde(default)]
    pub(super) constraints: Option<RawConstraints>,
    #[serde(default)]
    pub(super) capabilities: Option<RawCaps>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResources {
    #[serde(default)]
    pub(super) fuel: Option<Spanned<units::Scalar>>,
    #[serde(default)]
    pub(super) memory: Option<Spanned<units::Scalar>>,
    #[serde(default)]
    pub(super) cpu: Option<Spanned<units::Scalar>>,
    #[serde(default)]
    pub(super) timeout: Option<Spanned<units::Scalar>>,
    #[serde(default)]
    pub(super) storage: Option<Spanned<units::Scalar>>,
    #[serde(default)]
    pub(super) open_files: Option<Spanned<units::Scalar>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConstraints {
    #[serde(default)]
    pub(super) location: Option<Spanned<List>>,
    #[serde(default)]
    pub(super) hardware: Option<Spanned<List>>,
    #[serde(default)]
    pub(super) network: Option<Spanned<List>>,
    #[serde(default)]
    pub(super) labels: Option<Spanned<List>>,
    #[serde(default)]
    pub(super) affinity: Option<Spanned<List>>,
    #[serde(default)]
    pub(super) anti_affinity: Option<Spanned<List>>,
    #[serde(default)]
    pub(super) preferred: Vec<Spanned<RawPref>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPref {
    #[serde(default)]
    pub(super) location: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) hardware: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) network: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) labels: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) affinity: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) anti_affinity: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) weight: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCaps {
    #[serde(default)]
    pub(super) dirs: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) env: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub(super) args: Vec<String>,
    #[serde(default)]
    pub(super) stdin: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) network: Option<Spanned<bool>>,
}
