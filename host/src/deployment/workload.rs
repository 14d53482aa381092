//! Reading `[[workload]]` entries: priority, tenant, resources,
//! constraints, capabilities, and the affinity graph.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::parse::{Cx, items, line_col, resolve};
use super::raw::{RawCaps, RawConstraints, RawResources, RawWorkload};
use super::types::{
    BootMode, Capabilities, ConstraintSpec, MAX_REPLICAS, Preference, PreferenceKind, ResourceSpec,
    TenantSpec, WorkloadSpec,
};
use super::units;
use crate::identity::Priority;
use crate::runtime::DirGrant;
use crate::scheduler::{AffinityTerm, LabelSelector, LocationPattern};

pub(super) fn workloads(
    raw: &[RawWorkload],
    base: &Path,
    tenants: &[TenantSpec],
    boot: BootMode,
    cx: &mut Cx<'_>,
) -> Vec<WorkloadSpec> {
    let mut out = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    // Each component file is verified once, against one signature file.
    let mut signature_of: HashMap<PathBuf, (PathBuf, String)> = HashMap::new();
    for w in raw {
        let name = w.name.get_ref().as_str();
        let wn = Some(name);
        check_names(w, &mut seen, cx);
        let priority = w
            .priority
            .as_ref()
            .and_then(|p| cx.parse(p, wn))
            .unwrap_or(Priority::Normal);
        let tenant_name = w.tenant.get_ref();
        let tenant = tenants.iter().find(|t| &t.name == tenant_name);
        match tenant {
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
        let restart = w
            .restart
            .as_ref()
            .and_then(|r| cx.parse(r, wn))
            .unwrap_or_default();
        let file_io = w
            .file_io
            .as_ref()
            .and_then(|f| cx.parse(f, wn))
            .unwrap_or_default();
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
        if let Some(net) = w.capabilities.as_ref().and_then(|c| c.network.as_ref())
            && *net.get_ref()
            && tenant.is_some_and(|t| !t.network)
        {
            cx.push(
                net.span(),
                wn,
                format!(
                    "network access is granted by tenant policy, and tenant `{tenant_name}` does \
                     not grant it (add `network = true` to its [[tenant]])"
                ),
            );
        }
        if boot == BootMode::Manifest
            && let Some(s) = &w.signature
        {
            cx.push(
                s.span(),
                wn,
                "`signature` is read only with `boot = \"signatures\"`; with `boot = \"manifest\"` \
                 the boot manifest signs the component"
                    .into(),
            );
        }
        let component = resolve(base, w.component.get_ref());
        if boot == BootMode::Signatures {
            let signature = w.signature.as_ref().map_or_else(
                || default_signature(&component),
                |s| resolve(base, s.get_ref()),
            );
            match signature_of.get(&component) {
                Some((first, by)) if *first != signature => {
                    let span = w
                        .signature
                        .as_ref()
                        .map_or(w.component.span(), |s| s.span());
                    cx.push(
                        span,
                        wn,
                        format!(
                            "{} is verified once, against {} as workload `{by}` says; this \
                             workload names {} for it",
                            component.display(),
                            first.display(),
                            signature.display()
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    signature_of.insert(component.clone(), (signature, name.to_string()));
                }
            }
        }
        out.push(WorkloadSpec {
            name: name.to_string(),
            component,
            signature: w.signature.as_ref().map(|s| resolve(base, s.get_ref())),
            priority,
            tenant: tenant_name.clone(),
            principal: w
                .principal
                .as_ref()
                .map_or_else(|| name.to_string(), |p| p.get_ref().clone()),
            labels,
            resources,
            constraints,
            capabilities,
            restart,
            worker: w.worker,
            replicas: replicas(w, cx),
            file_io,
        });
    }
    out
}

/// `replicas`, checked to be within 1..=[`MAX_REPLICAS`].
fn replicas(w: &RawWorkload, cx: &mut Cx<'_>) -> u32 {
    match &w.replicas {
        None => 1,
        Some(n) if (1..=MAX_REPLICAS).contains(n.get_ref()) => *n.get_ref(),
        Some(n) => {
            cx.push(
                n.span(),
                Some(w.name.get_ref().as_str()),
                format!(
                    "`replicas` must be within 1..={MAX_REPLICAS}, got {}",
                    n.get_ref()
                ),
            );
            1
        }
    }
}

/// The most handles a workload may ask for (wasmtime's own default cap of
/// a resource table).
const MAX_OPEN_FILES: u64 = 1_000_000;

/// The workload's name (a label, declared once) and its principal (a name
/// free of control characters).
fn check_names<'a>(w: &'a RawWorkload, seen: &mut HashMap<&'a str, usize>, cx: &mut Cx<'_>) {
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
    if let Some(p) = &w.principal
        && let Err(e) = units::check_name(p.get_ref())
    {
        cx.push(p.span(), wn, format!("bad principal: {e}"));
    }
}

pub(super) fn resources(
    raw: Option<&RawResources>,
    wn: Option<&str>,
    cx: &mut Cx<'_>,
) -> ResourceSpec {
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
    spec.open_files = take(&r.open_files, "open_files", |v| {
        units::count(v).and_then(|n| match n {
            1..=MAX_OPEN_FILES => Ok(n),
            _ => Err(format!("{n} is not between 1 and {MAX_OPEN_FILES}")),
        })
    })
    .map(|n| n as u32);
    if let Some(t) = &r.timeout {
        match units::duration(t.get_ref()) {
            Ok(d) => spec.timeout = Some(d),
            Err(e) => cx.push(t.span(), wn, format!("resources.timeout: {e}")),
        }
    }
    spec
}

pub(super) fn constraints(
    raw: Option<&RawConstraints>,
    wn: Option<&str>,
    cx: &mut Cx<'_>,
) -> ConstraintSpec {
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

pub(super) fn capabilities(
    raw: Option<&RawCaps>,
    base: &Path,
    wn: Option<&str>,
    cx: &mut Cx<'_>,
) -> Capabilities {
    let mut caps = Capabilities::default();
    let Some(c) = raw else { return caps };
    for d in &c.dirs {
        // The one grant parser, shared with `forgeone run --dir`.
        match DirGrant::parse(d.get_ref()) {
            Ok(grant) => caps.dirs.push(DirGrant::new(
                base.join(&grant.host),
                grant.guest,
                grant.read_only,
            )),
            Err(e) => cx.push(d.span(), wn, e.to_string()),
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
    if let Some(stdin) = &c.stdin {
        if stdin.get_ref().is_empty() {
            cx.push(
                stdin.span(),
                wn,
                "`stdin` is empty: name a file to read as standard input, or leave `stdin` out \
                 for none"
                    .into(),
            );
        } else {
            caps.stdin = Some(resolve(base, stdin.get_ref()));
        }
    }
    caps.network = c.network.as_ref().is_some_and(|n| *n.get_ref());
    caps
}

/// Rejects affinity terms naming workloads the deployment does not define
/// and affinity cycles (each waits for the other to be placed first).
pub(super) fn check_affinity(raw: &[RawWorkload], specs: &[WorkloadSpec], cx: &mut Cx<'_>) {
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

/// `<component>.sig.json`, where a component's signature is looked for by
/// default.
fn default_signature(component: &Path) -> PathBuf {
    let mut name = component.as_os_str().to_owned();
    name.push(".sig.json");
    PathBuf::from(name)
}
