//! Reading the top-level settings, `[supervision]`, `[node]` and
//! `[[tenant]]`, collecting every problem with its line and column.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::error::{DeploymentError, Problem};
use super::raw::{List, RawDeployment, RawNodeCfg, RawSupervision, RawTenant};
use super::types::{BootMode, NodeConfig, Settings, Supervision, TenantSpec};
use super::units;
use crate::audit::escape_untrusted;
use crate::boot::BootPolicy;
use crate::identity::{Priority, TrustLevel};
use crate::policy::Isolation;
use crate::scheduler::LocationPattern;

pub(super) fn items(list: Option<&Spanned<List>>) -> Vec<(Range<usize>, &str)> {
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

pub(super) struct Cx<'a> {
    pub(super) text: &'a str,
    pub(super) problems: Vec<Problem>,
}

impl Cx<'_> {
    /// Records a problem. The message and the workload name quote the
    /// file, so both are escaped ([`escape_untrusted`]): a control
    /// character in the file never reaches a terminal raw.
    pub(super) fn push(&mut self, span: Range<usize>, workload: Option<&str>, message: String) {
        let (line, column) = line_col(self.text, span.start);
        self.problems.push(Problem {
            line,
            column,
            workload: workload.map(escape_untrusted),
            message: escape_untrusted(&message),
        });
    }

    pub(super) fn into_error(mut self, path: &Path) -> DeploymentError {
        self.problems.sort_by_key(|p| (p.line, p.column));
        DeploymentError::Invalid {
            path: path.to_owned(),
            problems: self.problems,
        }
    }

    pub(super) fn parse<T>(&mut self, v: &Spanned<String>, workload: Option<&str>) -> Option<T>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        match v.get_ref().parse() {
            Ok(t) => Some(t),
            Err(e) => {
                self.push(v.span(), workload, e.to_string());
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

pub(super) fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

pub(super) fn settings(raw: &RawDeployment, base: &Path, cx: &mut Cx<'_>) -> Settings {
    let state_dir = resolve(
        base,
        raw.state_dir.as_ref().map_or(".forgeone", |s| s.get_ref()),
    );
    let path_or = |v: &Option<Spanned<String>>, default: &str| match v {
        Some(v) => resolve(base, v.get_ref()),
        None => state_dir.join(default),
    };
    let boot_policy = raw
        .boot_policy
        .as_ref()
        .and_then(|v| cx.parse::<BootPolicy>(v, None))
        .unwrap_or_default();
    let boot = match &raw.boot {
        None => {
            cx.push(
                0..0,
                None,
                "missing `boot`: say how components are verified, `boot = \"manifest\"` (the signed \
                 boot manifest, with rollback protection) or `boot = \"signatures\"` (each \
                 component's own signature)"
                    .into(),
            );
            BootMode::Manifest
        }
        Some(v) => match v.get_ref().as_str() {
            "manifest" => BootMode::Manifest,
            "signatures" => BootMode::Signatures,
            other => {
                cx.push(
                    v.span(),
                    None,
                    format!("unknown boot mode `{other}` (expected manifest or signatures)"),
                );
                BootMode::Manifest
            }
        },
    };
    if boot == BootMode::Signatures
        && let Some(a) = &raw.allow_recovery_downgrade
        && *a.get_ref()
    {
        cx.push(
            a.span(),
            None,
            "allow_recovery_downgrade has no effect with `boot = \"signatures\"` (there is no \
             recovery without a manifest): remove it"
                .into(),
        );
    }
    if boot == BootMode::Signatures
        && let Some(m) = &raw.boot_manifest
    {
        cx.push(
            m.span(),
            None,
            "boot_manifest is set but `boot = \"signatures\"` never reads it: remove it, or boot \
             with `boot = \"manifest\"`"
                .into(),
        );
    }
    Settings {
        trust_anchor: path_or(&raw.trust_anchor, "anchor.json"),
        boot_manifest: path_or(&raw.boot_manifest, "boot-manifest.json"),
        host_key: path_or(&raw.host_key, "host.pem"),
        audit_log: path_or(&raw.audit_log, "audit.jsonl"),
        state_dir,
        boot,
        boot_policy,
        allow_recovery_downgrade: raw
            .allow_recovery_downgrade
            .as_ref()
            .is_some_and(|a| *a.get_ref()),
        supervision: supervision(raw.supervision.as_ref(), cx),
    }
}

pub(super) fn supervision(raw: Option<&RawSupervision>, cx: &mut Cx<'_>) -> Supervision {
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

pub(super) fn node_config(raw: Option<&RawNodeCfg>, cx: &mut Cx<'_>) -> NodeConfig {
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

pub(super) fn tenants(raw: &[RawTenant], cx: &mut Cx<'_>) -> Vec<TenantSpec> {
    let mut out: Vec<TenantSpec> = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for t in raw {
        let name = t.name.get_ref();
        if let Err(e) = units::check_name(name) {
            cx.push(t.name.span(), None, format!("bad tenant name: {e}"));
        }
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
            network: t.network.unwrap_or(false),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters_from_one() {
        assert_eq!(line_col("a\nbc\nd", 4), (2, 3));
        assert_eq!(line_col("é\nx", 3), (2, 1));
        assert_eq!(line_col("ab", 99), (1, 3));
    }
}
